// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
#include "poller.h"

#include <bpf/libbpf.h>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <pthread.h>
#include <sys/epoll.h>
#include <system_error>
#include <sys/eventfd.h>
#include <unistd.h>

#include "errors.h"

namespace alt {

namespace {

/* Bounds how long stop() and drain() wait for the thread to notice. */
constexpr int kPollTimeoutMs = 50;
constexpr uint64_t kExpireIntervalNs = 1000000000ULL;
/* Batches in flight between the thread and JavaScript. */
constexpr size_t kPoolSize = 4;
/* A batch is handed over when full, else after each poll round. */
constexpr size_t kBatchRecords = 1024;
constexpr size_t kBatchRawBytes = 256 * 1024;
/* One event appends at most this many records (16 open windows per stream). */
constexpr size_t kRecordsPerEventMax = 16;

uint64_t monotonic_ns()
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return static_cast<uint64_t>(ts.tv_sec) * 1000000000ULL + ts.tv_nsec;
}

} // namespace

struct RingPoller::Batch {
	std::vector<struct sig_record> sigs;
	std::vector<uint8_t> raw; /* [u32 LE length][event], each padded to 8 */
	uint32_t raw_count = 0;
	uint64_t flush_seq = 0; /* drain requests this batch completes */

	explicit Batch(bool raw_tap)
	{
		sigs.reserve(kBatchRecords + kRecordsPerEventMax);
		if (raw_tap)
			raw.reserve(kBatchRawBytes + sizeof(struct audio_event) + 16);
	}
	bool empty() const { return sigs.empty() && raw_count == 0; }
	void clear()
	{
		sigs.clear();
		raw.clear();
		raw_count = 0;
		flush_seq = 0;
	}
};

RingPoller::RingPoller(const EngineConfig &cfg, bool raw_tap) : engine_(cfg), raw_tap_(raw_tap)
{
	for (size_t i = 0; i < kPoolSize; i++) {
		pool_.push_back(std::make_unique<Batch>(raw_tap));
		free_.push_back(pool_.back().get());
	}
}

RingPoller::~RingPoller()
{
	/* Normally stop() ran already; this is the backstop (no JS calls here). */
	stop_ = true;
	wake();
	if (thread_.joinable())
		thread_.join();
	if (rb_)
		ring_buffer__free(rb_);
	if (epoll_fd_ >= 0)
		close(epoll_fd_);
	if (wake_fd_ >= 0)
		close(wake_fd_);
}

std::shared_ptr<RingPoller> RingPoller::start(Napi::Env env, int ring_fd, const EngineConfig &cfg,
					      Napi::Function on_sigs, Napi::Function on_raw)
{
	std::shared_ptr<RingPoller> self(new RingPoller(cfg, !on_raw.IsEmpty()));

	self->open_ring(ring_fd);
	self->on_sigs_ = Napi::Persistent(on_sigs);
	if (!on_raw.IsEmpty())
		self->on_raw_ = Napi::Persistent(on_raw);
	/* The thread-safe function keeps the poller alive until Node has run
	 * or dropped every queued batch, whoever lets go of it first. */
	auto keep = std::make_unique<std::shared_ptr<RingPoller>>(self);
	self->tsfn_ = Tsfn::New(
		env, "alt-ring-buffer", 0, 1, self.get(),
		[](Napi::Env, std::shared_ptr<RingPoller> *k, RingPoller *) { delete k; }, keep.get());
	keep.release();
	/* An agent has other reasons to stay up; only a pending drain() holds
	 * the event loop open. */
	self->tsfn_.Unref(env);
	try {
		self->thread_ = std::thread(&RingPoller::run, self.get());
	} catch (const std::system_error &e) {
		self->stopped_ = true;
		self->tsfn_.Release();
		throw_sys("start ring buffer thread", e.code().value());
	}
	return self;
}

void RingPoller::open_ring(int ring_fd)
{
	struct epoll_event ev = {};

	rb_ = ring_buffer__new(ring_fd, &RingPoller::on_event, this, nullptr);
	if (!rb_)
		throw_sys("ring_buffer__new", errno);
	wake_fd_ = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (wake_fd_ < 0)
		throw_sys("eventfd", errno);
	epoll_fd_ = epoll_create1(EPOLL_CLOEXEC);
	if (epoll_fd_ < 0)
		throw_sys("epoll_create1", errno);
	/* Our own epoll over libbpf's (nested) and a wake-up eventfd, so drain()
	 * and stop() need not wait for the poll timeout. */
	ev.events = EPOLLIN;
	ev.data.fd = ring_buffer__epoll_fd(rb_);
	if (epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, ev.data.fd, &ev))
		throw_sys("epoll_ctl ring buffer", errno);
	ev.data.fd = wake_fd_;
	if (epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, wake_fd_, &ev))
		throw_sys("epoll_ctl eventfd", errno);
}

void RingPoller::wake()
{
	uint64_t one = 1;

	if (wake_fd_ >= 0 && write(wake_fd_, &one, sizeof(one)) < 0) {
		/* EAGAIN: the counter is already non-zero, the thread will wake. */
	}
}

void RingPoller::run()
{
	uint64_t next_expire = monotonic_ns() + kExpireIntervalNs;
	struct epoll_event evs[2];

	pthread_setname_np(pthread_self(), "alt-ringbuf");
	cur_ = acquire();
	while (cur_ && !stop_.load(std::memory_order_acquire)) {
		int n = epoll_wait(epoll_fd_, evs, 2, kPollTimeoutMs);
		uint64_t counter;

		if (n < 0 && errno != EINTR) {
			fprintf(stderr, "alt: ring buffer epoll_wait: %s\n", strerror(errno));
			break;
		}
		if (read(wake_fd_, &counter, sizeof(counter)) < 0) {
			/* EAGAIN: woken by the ring buffer or the timeout */
		}
		/* Read before consuming: every event submitted before these drain()
		 * calls is in the ring now, and is consumed below. */
		uint64_t want = drain_requested_.load(std::memory_order_acquire);
		int err = ring_buffer__consume(rb_);

		if (err < 0 && err != -EINTR && cur_) {
			fprintf(stderr, "alt: ring_buffer__consume: %s\n", strerror(-err));
			break;
		}
		if (!cur_)
			break;
		uint64_t now = monotonic_ns();
		if (now >= next_expire) {
			engine_.expire(now);
			next_expire = now + kExpireIntervalNs;
		}
		{
			std::lock_guard<std::mutex> lk(stats_mu_);
			engine_stats_ = engine_.stats();
		}
		if (!cur_->empty() || want > flushed_seq_) {
			cur_->flush_seq = want;
			flushed_seq_ = want;
			if (!hand_off(cur_)) {
				cur_ = nullptr; /* released by hand_off */
				break;
			}
			cur_ = acquire();
		}
	}
	if (cur_)
		release(cur_);
	cur_ = nullptr;
	tsfn_.Release();
}

int RingPoller::on_event(void *ctx, void *data, size_t size)
{
	return static_cast<RingPoller *>(ctx)->ingest(data, size);
}

int RingPoller::ingest(const void *data, size_t size)
{
	Batch *b = cur_;

	if (!b)
		return -ECANCELED;
	engine_.ingest(static_cast<const struct audio_event *>(data), size, b->sigs);
	if (raw_tap_) {
		uint32_t len = static_cast<uint32_t>(size);
		size_t at = b->raw.size();
		size_t entry = (sizeof(len) + size + 7) & ~static_cast<size_t>(7);

		/* Zero-fills the padding; within the reserved capacity. */
		b->raw.resize(at + entry);
		memcpy(&b->raw[at], &len, sizeof(len)); /* little-endian hosts only */
		memcpy(&b->raw[at + sizeof(len)], data, size);
		b->raw_count++;
	}
	records_.fetch_add(1, std::memory_order_relaxed);
	if (b->sigs.size() >= kBatchRecords || b->raw.size() >= kBatchRawBytes) {
		/* The flush marker stays with the end-of-round batch. */
		if (!hand_off(b)) {
			cur_ = nullptr;
			return -ECANCELED;
		}
		cur_ = acquire();
		if (!cur_)
			return -ECANCELED;
	}
	return 0;
}

bool RingPoller::hand_off(Batch *b)
{
	if (tsfn_.BlockingCall(b) != napi_ok) {
		/* Node is tearing the environment down: nobody will take it. */
		release(b);
		stop_ = true;
		return false;
	}
	batches_.fetch_add(1, std::memory_order_relaxed);
	return true;
}

RingPoller::Batch *RingPoller::acquire()
{
	std::unique_lock<std::mutex> lk(pool_mu_);

	pool_cv_.wait(lk, [this] { return !free_.empty() || stop_.load(); });
	if (stop_.load())
		return nullptr;
	Batch *b = free_.back();
	free_.pop_back();
	b->clear();
	return b;
}

void RingPoller::release(Batch *b)
{
	{
		std::lock_guard<std::mutex> lk(pool_mu_);
		free_.push_back(b);
	}
	pool_cv_.notify_one();
}

void RingPoller::stop()
{
	if (stopped_)
		return;
	stopped_ = true;
	{
		std::lock_guard<std::mutex> lk(pool_mu_);
		stop_ = true;
	}
	pool_cv_.notify_all();
	wake();
	if (thread_.joinable())
		thread_.join();
	ring_buffer__free(rb_);
	rb_ = nullptr;
	/* Nothing more will be delivered: whoever waits, waits for nothing. */
	if (!drains_.empty()) {
		Napi::Env env = drains_.front().second.Env();

		resolve_drains(env, UINT64_MAX);
	}
	on_sigs_.Reset();
	on_raw_.Reset();
	sig_ab_.Reset();
	raw_ab_.Reset();
}

Napi::Promise RingPoller::drain(Napi::Env env)
{
	Napi::Promise::Deferred d = Napi::Promise::Deferred::New(env);

	if (stopped_) {
		d.Resolve(env.Undefined());
		return d.Promise();
	}
	if (drains_.empty())
		tsfn_.Ref(env);
	drains_.emplace_back(++drain_seq_, d);
	drain_requested_.store(drain_seq_, std::memory_order_release);
	wake();
	return d.Promise();
}

PollerStats RingPoller::stats() const
{
	PollerStats s;

	{
		std::lock_guard<std::mutex> lk(stats_mu_);
		s.engine = engine_stats_;
	}
	s.batches = batches_.load(std::memory_order_relaxed);
	s.records = records_.load(std::memory_order_relaxed);
	return s;
}

void RingPoller::call_js(Napi::Env env, Napi::Function, RingPoller *self, Batch *b)
{
	if (static_cast<napi_env>(env) == nullptr || self->stopped_) {
		self->release(b);
		return;
	}
	self->deliver(env, b);
}

void RingPoller::deliver(Napi::Env env, Batch *b)
{
	uint64_t flush_seq = b->flush_seq;

	try {
		if (!b->sigs.empty())
			on_sigs_.Call({view(env, sig_ab_, b->sigs.data(),
					    b->sigs.size() * sizeof(struct sig_record)),
				       Napi::Number::New(env, static_cast<double>(b->sigs.size()))});
		if (b->raw_count && !on_raw_.IsEmpty())
			on_raw_.Call({view(env, raw_ab_, b->raw.data(), b->raw.size()),
				      Napi::Number::New(env, b->raw_count)});
	} catch (const Napi::Error &e) {
		/* A throwing consumer still frees the batch and ends the drains;
		 * its exception becomes the process's 'uncaughtException' (an
		 * exception thrown back into Node from here would be dropped). */
		release(b);
		if (!stopped_)
			resolve_drains(env, flush_seq);
		napi_fatal_exception(env, e.Value());
		return;
	}
	release(b);
	/* The callbacks may have called close(). */
	if (!stopped_)
		resolve_drains(env, flush_seq);
}

void RingPoller::resolve_drains(Napi::Env env, uint64_t upto)
{
	bool had = !drains_.empty();

	while (!drains_.empty() && drains_.front().first <= upto) {
		drains_.front().second.Resolve(env.Undefined());
		drains_.pop_front();
	}
	if (had && drains_.empty() && !stopped_)
		tsfn_.Unref(env);
}

/* A view of `len` bytes copied into a JavaScript buffer that is reused from
 * batch to batch (so the view is valid only during the call). */
Napi::Uint8Array RingPoller::view(Napi::Env env, Napi::Reference<Napi::ArrayBuffer> &ab,
				  const void *data, size_t len)
{
	if (ab.IsEmpty() || ab.Value().ByteLength() < len) {
		size_t cap = ab.IsEmpty() ? 64 * 1024 : ab.Value().ByteLength();

		while (cap < len)
			cap *= 2;
		ab = Napi::Persistent(Napi::ArrayBuffer::New(env, cap));
	}
	Napi::ArrayBuffer buf = ab.Value();

	memcpy(buf.Data(), data, len);
	return Napi::Uint8Array::New(env, len, buf, 0);
}

} // namespace alt
