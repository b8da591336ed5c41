// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * The JavaScript face of the addon: one class, Classifier, whose methods
 * check their arguments and call into the loader, the attacher and the
 * ring-buffer poller. Failures become Error objects carrying op, errno
 * (negative, as Node does) and detail (libbpf's log); src/native.ts gives
 * them their final wording.
 */
#include <napi.h>

#include <cerrno>
#include <cstring>
#include <memory>
#include <string>

#include "attach.h"
#include "errors.h"
#include "loader.h"
#include "poller.h"

namespace alt {

namespace {

struct StatsSnapshot {
	uint64_t kernel[AEV_STAT_MAX];
	PollerStats poller;
	ProgRunStats progs;
};

[[noreturn]] void throw_js(Napi::Env env, const SysError &e)
{
	Napi::Error err = Napi::Error::New(env, e.what());

	err.Set("op", Napi::String::New(env, e.op()));
	err.Set("errno", Napi::Number::New(env, -e.err()));
	err.Set("detail", Napi::String::New(env, e.detail()));
	throw err;
}

/* Runs fn, turning native failures into JavaScript exceptions. */
template <typename Fn> auto guarded(Napi::Env env, Fn &&fn) -> decltype(fn())
{
	try {
		return fn();
	} catch (const SysError &e) {
		throw_js(env, e);
	} catch (const std::bad_alloc &) {
		throw_js(env, SysError("allocate", ENOMEM));
	}
}

uint32_t u32_prop(const Napi::Object &o, const char *name)
{
	Napi::Value v = o.Get(name);

	if (!v.IsNumber() || v.As<Napi::Number>().DoubleValue() < 0 ||
	    v.As<Napi::Number>().DoubleValue() > 4294967295.0)
		throw Napi::TypeError::New(o.Env(), std::string(name) + ": expected a u32");
	return v.As<Napi::Number>().Uint32Value();
}

Napi::Function fn_prop(const Napi::Object &o, const char *name, bool optional)
{
	Napi::Value v = o.Get(name);

	if (optional && (v.IsUndefined() || v.IsNull()))
		return Napi::Function();
	if (!v.IsFunction())
		throw Napi::TypeError::New(o.Env(), std::string(name) + ": expected a function");
	return v.As<Napi::Function>();
}

std::string string_arg(const Napi::CallbackInfo &info, size_t i, const char *what)
{
	if (info.Length() <= i || !info[i].IsString())
		throw Napi::TypeError::New(info.Env(), std::string(what) + ": expected a string");
	return info[i].As<Napi::String>().Utf8Value();
}

Napi::Object attachment_to_js(Napi::Env env, const Attachment &a)
{
	Napi::Object o = Napi::Object::New(env);

	o.Set("ifindex", a.ifindex);
	o.Set("name", a.name);
	o.Set("mode", a.tcx ? "tcx" : "tc");
	return o;
}

} // namespace

class ClassifierWrap : public Napi::ObjectWrap<ClassifierWrap> {
public:
	static Napi::Function Define(Napi::Env env)
	{
		return DefineClass(env, "Classifier",
				   {
					   InstanceMethod<&ClassifierWrap::Attach>("attach"),
					   InstanceMethod<&ClassifierWrap::Detach>("detach"),
					   InstanceMethod<&ClassifierWrap::Attached>("attached"),
					   InstanceMethod<&ClassifierWrap::RemoveStale>("removeStale"),
					   InstanceMethod<&ClassifierWrap::Stats>("stats"),
					   InstanceMethod<&ClassifierWrap::TestRun>("testRun"),
					   InstanceMethod<&ClassifierWrap::TcpFlows>("tcpFlows"),
					   InstanceMethod<&ClassifierWrap::Drain>("drain"),
					   InstanceMethod<&ClassifierWrap::Close>("close"),
				   });
	}

	// new Classifier({ objectPath, ringPages, allPorts, portWords: BigUint64Array,
	//   runStats, algorithm, windowSize, silenceThreshold, maxFlows, flowTimeoutMs,
	//   onSignatures, onRawEvents? })
	explicit ClassifierWrap(const Napi::CallbackInfo &info) : Napi::ObjectWrap<ClassifierWrap>(info)
	{
		Napi::Env env = info.Env();

		if (info.Length() < 1 || !info[0].IsObject())
			throw Napi::TypeError::New(env, "options: expected an object");
		Napi::Object o = info[0].As<Napi::Object>();
		Napi::Value words = o.Get("portWords");

		if (!words.IsTypedArray() ||
		    words.As<Napi::TypedArray>().TypedArrayType() != napi_biguint64_array ||
		    words.As<Napi::TypedArray>().ElementLength() != PORT_MAP_WORDS)
			throw Napi::TypeError::New(env, "portWords: expected a BigUint64Array(1024)");
		Napi::Value path = o.Get("objectPath");
		if (!path.IsString())
			throw Napi::TypeError::New(env, "objectPath: expected a string");

		LoadOptions lo;
		lo.object_path = path.As<Napi::String>().Utf8Value();
		lo.ring_pages = u32_prop(o, "ringPages");
		lo.all_ports = o.Get("allPorts").ToBoolean();
		lo.port_words = words.As<Napi::BigUint64Array>().Data();
		lo.run_stats = o.Get("runStats").ToBoolean();

		EngineConfig ec;
		uint32_t algorithm = u32_prop(o, "algorithm");
		if (algorithm > static_cast<uint32_t>(Algorithm::RollingHash))
			throw Napi::TypeError::New(env, "algorithm: expected 0..2");
		ec.algorithm = static_cast<Algorithm>(algorithm);
		ec.window_size = u32_prop(o, "windowSize");
		ec.silence_threshold = u32_prop(o, "silenceThreshold");
		ec.max_streams = u32_prop(o, "maxFlows");
		lo.max_flows = ec.max_streams; /* the kernel's RTP and TCP states: one entry per flow */
		lo.flow_timeout_ms = u32_prop(o, "flowTimeoutMs");
		ec.stream_timeout_ns = static_cast<uint64_t>(lo.flow_timeout_ms) * 1000000ULL;
		Napi::Function on_sigs = fn_prop(o, "onSignatures", false);
		Napi::Function on_raw = fn_prop(o, "onRawEvents", true);

		guarded(env, [&] {
			bpf_ = std::make_unique<BpfClassifier>(lo);
			const int fds[2] = {bpf_->prog_fd(Prog::Ingress), bpf_->prog_fd(Prog::Egress)};
			const uint32_t ids[2] = {bpf_->prog_id(Prog::Ingress),
						 bpf_->prog_id(Prog::Egress)};
			attacher_ = std::make_unique<Attacher>(fds, ids);
			poller_ = RingPoller::start(env, bpf_->events_fd(), ec, on_sigs, on_raw);
		});
		env_ = env;
		napi_add_env_cleanup_hook(env, &ClassifierWrap::OnEnvCleanup, this);
		hook_ = true;
	}

	~ClassifierWrap() override { CloseNative(); }

private:
	static void OnEnvCleanup(void *arg)
	{
		auto *self = static_cast<ClassifierWrap *>(arg);

		self->hook_ = false; /* Node drops the hook itself after running it */
		self->CloseNative();
	}

	/* Detach first (no new events), then stop the thread, then free the maps
	 * and programs the thread and the links used. */
	void CloseNative() noexcept
	{
		if (closed_)
			return;
		closed_ = true;
		try {
			final_ = Snapshot();
		} catch (...) {
		}
		attacher_.reset();
		if (poller_) {
			poller_->stop();
			poller_.reset();
		}
		bpf_.reset();
		if (hook_) {
			napi_remove_env_cleanup_hook(env_, &ClassifierWrap::OnEnvCleanup, this);
			hook_ = false;
		}
	}

	void RequireOpen(Napi::Env env, const char *op) const
	{
		if (closed_)
			throw_js(env, SysError(std::string(op) + " after close", EBADF));
	}

	StatsSnapshot Snapshot() const
	{
		StatsSnapshot s;

		/* The consumer's counts first: read after the kernel's, events
		 * delivered in between would make delivered + lost exceed audio. */
		s.poller = poller_->stats();
		bpf_->kernel_stats(s.kernel);
		s.progs = bpf_->run_stats();
		return s;
	}

	Napi::Value Attach(const Napi::CallbackInfo &info)
	{
		Napi::Env env = info.Env();
		std::string name = string_arg(info, 0, "name");
		std::string mode = info.Length() > 1 && info[1].IsString() ?
					   info[1].As<Napi::String>().Utf8Value() :
					   "auto";
		AttachMode m = mode == "tcx" ? AttachMode::Tcx :
			       mode == "tc"  ? AttachMode::Tc :
					       AttachMode::Auto;

		if (mode != "auto" && mode != "tcx" && mode != "tc")
			throw Napi::TypeError::New(env, "mode: expected 'auto', 'tcx' or 'tc'");
		RequireOpen(env, "attach");
		return guarded(env, [&] { return attachment_to_js(env, attacher_->attach(name, m)); });
	}

	Napi::Value Detach(const Napi::CallbackInfo &info)
	{
		std::string name = string_arg(info, 0, "name");

		if (!closed_)
			attacher_->detach(name);
		return info.Env().Undefined();
	}

	Napi::Value Attached(const Napi::CallbackInfo &info)
	{
		Napi::Env env = info.Env();
		Napi::Array out = Napi::Array::New(env);

		if (closed_)
			return out;
		uint32_t i = 0;
		for (const Attachment &a : attacher_->list())
			out.Set(i++, attachment_to_js(env, a));
		return out;
	}

	Napi::Value RemoveStale(const Napi::CallbackInfo &info)
	{
		Napi::Env env = info.Env();
		std::string name = string_arg(info, 0, "name");

		RequireOpen(env, "removeStale");
		return guarded(env, [&] { return Napi::Number::New(env, attacher_->remove_stale(name)); });
	}

	Napi::Value Stats(const Napi::CallbackInfo &info)
	{
		Napi::Env env = info.Env();
		StatsSnapshot s = closed_ ? final_ : guarded(env, [&] { return Snapshot(); });
		Napi::Array kernel = Napi::Array::New(env, AEV_STAT_MAX);
		Napi::Object engine = Napi::Object::New(env);
		Napi::Object ringbuf = Napi::Object::New(env);
		Napi::Object progs = Napi::Object::New(env);
		Napi::Object out = Napi::Object::New(env);
		const EngineStats &e = s.poller.engine;

		for (uint32_t i = 0; i < AEV_STAT_MAX; i++)
			kernel.Set(i, static_cast<double>(s.kernel[i]));
		engine.Set("streamsActive", static_cast<double>(e.streams_active));
		engine.Set("streamsCreated", static_cast<double>(e.streams_created));
		engine.Set("streamsEvicted", static_cast<double>(e.streams_evicted));
		engine.Set("streamsExpired", static_cast<double>(e.streams_expired));
		engine.Set("bytes", static_cast<double>(e.bytes));
		engine.Set("windows", static_cast<double>(e.windows));
		engine.Set("windowsSilent", static_cast<double>(e.windows_silent));
		engine.Set("signatures", static_cast<double>(e.signatures));
		engine.Set("anchorsDropped", static_cast<double>(e.anchors_dropped));
		ringbuf.Set("batches", static_cast<double>(s.poller.batches));
		ringbuf.Set("records", static_cast<double>(s.poller.records));
		progs.Set("runTimeNs", static_cast<double>(s.progs.run_time_ns));
		progs.Set("runCount", static_cast<double>(s.progs.run_cnt));
		out.Set("kernel", kernel);
		out.Set("engine", engine);
		out.Set("ringbuf", ringbuf);
		out.Set("progs", progs);
		return out;
	}

	// testRun(prog: 0 ingress | 1 egress | 2 empty, packet: Uint8Array, repeat: number)
	Napi::Value TestRun(const Napi::CallbackInfo &info)
	{
		Napi::Env env = info.Env();

		if (info.Length() < 3 || !info[0].IsNumber() || !info[1].IsTypedArray() ||
		    !info[2].IsNumber())
			throw Napi::TypeError::New(env, "testRun(prog, packet, repeat)");
		uint32_t prog = info[0].As<Napi::Number>().Uint32Value();
		Napi::TypedArray pkt = info[1].As<Napi::TypedArray>();
		uint32_t repeat = info[2].As<Napi::Number>().Uint32Value();

		if (prog >= static_cast<uint32_t>(kProgCount) || pkt.TypedArrayType() != napi_uint8_array)
			throw Napi::TypeError::New(env, "testRun: prog 0..2 and a Uint8Array packet");
		RequireOpen(env, "testRun");
		Napi::Uint8Array bytes = pkt.As<Napi::Uint8Array>();
		TestRunResult r = guarded(env, [&] {
			return bpf_->test_run(static_cast<Prog>(prog), bytes.Data(), bytes.ByteLength(),
					      repeat);
		});
		Napi::Object out = Napi::Object::New(env);

		out.Set("retval", r.retval);
		out.Set("durationNs", r.duration_ns);
		return out;
	}

	// tcpFlows(): [{ key: Uint8Array(struct aev_tcp_key), value: Uint8Array(struct aev_tcp_flow) }]
	Napi::Value TcpFlows(const Napi::CallbackInfo &info)
	{
		Napi::Env env = info.Env();

		RequireOpen(env, "tcpFlows");
		std::vector<TcpFlowEntry> entries = guarded(env, [&] { return bpf_->tcp_flows(); });
		Napi::Array out = Napi::Array::New(env, entries.size());

		for (uint32_t i = 0; i < entries.size(); i++) {
			Napi::Object o = Napi::Object::New(env);
			const TcpFlowEntry &e = entries[i];

			o.Set("key", Napi::Uint8Array::New(env, sizeof(e.key)));
			o.Set("value", Napi::Uint8Array::New(env, sizeof(e.value)));
			memcpy(o.Get("key").As<Napi::Uint8Array>().Data(), &e.key, sizeof(e.key));
			memcpy(o.Get("value").As<Napi::Uint8Array>().Data(), &e.value, sizeof(e.value));
			out.Set(i, o);
		}
		return out;
	}

	Napi::Value Drain(const Napi::CallbackInfo &info)
	{
		Napi::Env env = info.Env();

		if (closed_) {
			Napi::Promise::Deferred d = Napi::Promise::Deferred::New(env);
			d.Resolve(env.Undefined());
			return d.Promise();
		}
		return poller_->drain(env);
	}

	Napi::Value Close(const Napi::CallbackInfo &info)
	{
		CloseNative();
		return info.Env().Undefined();
	}

	std::unique_ptr<BpfClassifier> bpf_;
	std::unique_ptr<Attacher> attacher_;
	std::shared_ptr<RingPoller> poller_;
	StatsSnapshot final_ = {};
	napi_env env_ = nullptr;
	bool hook_ = false;
	bool closed_ = false;
};

} // namespace alt

static Napi::Object Init(Napi::Env env, Napi::Object exports)
{
	alt::install_libbpf_print();
	exports.Set("Classifier", alt::ClassifierWrap::Define(env));
	exports.Set("tcHandle", alt::kTcHandle);
	exports.Set("tcPriority", alt::kTcPriority);
	return exports;
}

NODE_API_MODULE(alt_native, Init)
