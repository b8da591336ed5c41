// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * Fuzz harness of the signature engine: SignatureEngine::ingest() and
 * expire() fed event records whose every header field comes from the
 * input, including ones that contradict the bytes that follow (captured_len
 * beyond the record, lengths below the header, any flags, direction,
 * protocol, family, encoding, sequence number and timestamp), and TCP byte
 * streams built to reach the framing parsers: HTTP heads with absurd
 * Content-Lengths, chunked bodies with absurd sizes, WebSocket frames with
 * 64-bit lengths, base64 and hex runs, all cut into segments, with gaps,
 * retransmissions and flipped bits. Small max_streams, so eviction and
 * idle expiry run all the time.
 *
 * After every call it checks (and abort()s on) what must hold whatever the
 * input: streams_active <= max_streams, the stream counters balance, bytes
 * counts exactly what the record carried, no more signatures than audio
 * bytes, every record names the event's flow, and the heap the engine holds
 * (measured around each call) stays within a bound fixed by max_streams and
 * the window: per-stream state may not grow with the traffic.
 *
 * The addon's binding.gyp compiles every .cc file in signature/: without
 * ALT_FUZZ_ENGINE this file is empty. Built and run by test/fuzz-native-engine.test.ts:
 *
 *   g++ -std=c++17 -O1 -g -fsanitize=address,undefined -fno-sanitize-recover=all \
 *       -DALT_FUZZ_ENGINE native/signature/fuzz_engine.cc native/signature/engine.cc \
 *       -o /tmp/fuzz_engine
 *   /tmp/fuzz_engine ITERATIONS SEED        # random inputs from a seeded PRNG
 *   /tmp/fuzz_engine replay EVENTS OUT ALG WINDOW THRESHOLD MAX_STREAMS TIMEOUT_NS
 *                                           # one run over recorded events (parity checks)
 *
 * Coverage-guided on demand (clang's libFuzzer; -DALT_LIBFUZZER drops main()):
 *
 *   clang++ -std=c++17 -O1 -g -fsanitize=fuzzer,address,undefined -DALT_FUZZ_ENGINE \
 *       -DALT_LIBFUZZER native/signature/fuzz_engine.cc native/signature/engine.cc \
 *       -o /tmp/fuzz_engine_lf
 *   mkdir -p /tmp/corpus && /tmp/fuzz_engine_lf -max_total_time=600 -max_len=65536 /tmp/corpus
 */
#ifdef ALT_FUZZ_ENGINE

#include <malloc.h>

#include <algorithm>
#include <chrono>
#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <vector>

#include "engine.h"
#include "stream_framing.h"
#include "text_decoder.h"

extern "C" {
/* Heap in use per the sanitizer runtime, when one is linked in (weak: absent otherwise). */
__attribute__((weak)) size_t __sanitizer_get_current_allocated_bytes(void);
__attribute__((weak)) void __sanitizer_set_death_callback(void (*callback)(void));
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
}

using namespace alt;

namespace {

constexpr size_t kHeader = AEV_HEADER_SIZE;
constexpr size_t kFlows = 6;
constexpr size_t kMaxEventsPerInput = 2048;
constexpr size_t kMaxStreamBytes = 48 * 1024;
/* Audio bytes one event can release beyond its own: bytes held for sniffing and a text run's
 * first characters, both from earlier events. */
constexpr size_t kMaxHeldBytes = kSniffBytes + kMinTextRun;
constexpr uint8_t kTcp = 6;
constexpr uint8_t kUdp = 17;

/* Where a failure happened, for the message (main() mode). */
uint64_t g_seed;
uint64_t g_iteration;
bool g_main_mode;

void report_where(void)
{
	if (g_main_mode)
		fprintf(stderr,
			"fuzz_engine: FAILED at seed %llu iteration %llu "
			"(reproduce: fuzz_engine %llu %llu)\n",
			(unsigned long long)g_seed, (unsigned long long)g_iteration,
			(unsigned long long)g_iteration + 1, (unsigned long long)g_seed);
}

[[noreturn]] __attribute__((format(printf, 1, 2))) void fail(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	fputs("fuzz_engine: invariant violated: ", stderr);
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
	va_end(ap);
	report_where();
	abort();
}

#define CHECK(cond, ...)                 \
	do {                             \
		if (!(cond))             \
			fail(__VA_ARGS__); \
	} while (0)

size_t heap_in_use(void)
{
	if (__sanitizer_get_current_allocated_bytes)
		return __sanitizer_get_current_allocated_bytes();
	return mallinfo2().uordblks;
}

/* splitmix64: filler bytes and main()'s inputs. */
struct Prng {
	uint64_t s;

	uint64_t next()
	{
		uint64_t z = (s += 0x9e3779b97f4a7c15ULL);

		z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
		z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
		return z ^ (z >> 31);
	}
};

/* The fuzz input read as a tape of choices; past its end every read is 0. */
class Input {
public:
	Input(const uint8_t *d, size_t n) : d_(d), n_(n) {}

	bool empty() const { return at_ >= n_; }
	size_t left() const { return n_ - at_; }
	uint8_t u8() { return at_ < n_ ? d_[at_++] : 0; }
	uint16_t u16()
	{
		uint16_t lo = u8();
		return (uint16_t)(lo | (u8() << 8));
	}
	uint32_t u32()
	{
		uint32_t lo = u16();
		return lo | ((uint32_t)u16() << 16);
	}
	uint64_t u64()
	{
		uint64_t lo = u32();
		return lo | ((uint64_t)u32() << 32);
	}
	bool chance(uint8_t in256) { return u8() < in256; }
	template <typename T, size_t N> T pick(const T (&v)[N]) { return v[u8() % N]; }

	/* Appends up to want input bytes (fewer when the input runs out). */
	void bytes(std::vector<uint8_t> &out, size_t want)
	{
		size_t k = std::min(want, left());

		out.insert(out.end(), d_ + at_, d_ + at_ + k);
		at_ += k;
	}

private:
	const uint8_t *d_;
	size_t n_;
	size_t at_ = 0;
};

void put(std::vector<uint8_t> &s, const char *text)
{
	s.insert(s.end(), text, text + strlen(text));
}

void put_noise(std::vector<uint8_t> &s, Prng &noise, size_t n)
{
	for (size_t i = 0; i < n; i++)
		s.push_back((uint8_t)noise.next());
}

void put_eol(Input &in, std::vector<uint8_t> &s)
{
	put(s, in.chance(220) ? "\r\n" : "\n");
}

/* An HTTP/1.x head: any start line, the headers the framing reads, absurd values, and
 * sometimes no blank line at all. */
void http_head(Input &in, Prng &noise, std::vector<uint8_t> &s)
{
	static const char *const starts[] = {
		"GET /media HTTP/1.1",	 "POST /stream HTTP/1.1", "HTTP/1.1 200 OK",
		"HTTP/1.1 101 Switching Protocols", "HTTP/1.0 204 No Content",
		"HTTP/1.1 304 Not Modified", "HTTP/1.1 100 Continue", "HTTP/1.1 9",
		"PUT ",			 "OPTIONS * HTTP/1.1",	 "HTTP/1.1 abc Weird",
		"HEAD / HTTP/1.1",	 "DELETE /x HTTP/1.1",	 "PATCH  HTTP/1.1",
	};
	static const char *const fixed[] = {
		"Transfer-Encoding: chunked",
		"Transfer-Encoding: gzip, chunked",
		"Upgrade: websocket",
		"upgrade:WebSocket",
		"Connection: Upgrade",
		"Content-Type: audio/L16;rate=8000",
		"Content-Type: application/octet-stream",
		"Content-Type: application/json",
		"Content-Type:text/event-stream",
		"Content-Length:",
		"Content-Length: -5",
		"Content-Length: 18446744073709551616",
	};

	put(s, in.pick(starts));
	put_eol(in, s);
	for (unsigned h = in.u8() % 8; h; h--) {
		switch (in.u8() % 5) {
		case 0: { /* 1..40 digits (beyond 15 the parser stops counting), mostly few */
			put(s, in.chance(128) ? "Content-Length: " : "content-length:\t ");
			for (unsigned n = 1 + (in.chance(192) ? in.u8() % 4 : in.u8() % 40); n; n--)
				s.push_back((uint8_t)('0' + in.u8() % 10));
			break;
		}
		case 1: /* longer than a head may be (16 KB) */
			put(s, "X-Pad: ");
			s.insert(s.end(), in.u16() % 20000, (uint8_t)'a');
			break;
		case 2:
			put_noise(s, noise, in.u8() % 100);
			break;
		default:
			put(s, in.pick(fixed));
		}
		put_eol(in, s);
	}
	if (in.chance(230))
		put_eol(in, s);
}

/* A chunked body: size lines of 1..16 hex digits (sizes up to 2^64 - 1), extensions,
 * missing CRLFs, data shorter than announced, trailers. */
void chunked_body(Input &in, Prng &noise, std::vector<uint8_t> &s)
{
	static const char hex[] = "0123456789abcdefABCDEF";

	for (unsigned c = 1 + in.u8() % 6; c; c--) {
		uint64_t size = 0;
		unsigned digits = 1 + in.u8() % 16;

		for (unsigned d = 0; d < digits; d++) {
			char ch = hex[in.u8() % 22];
			s.push_back((uint8_t)ch);
			if (d < 8)
				size = size * 16 + (uint64_t)(ch <= '9' ? ch - '0' : (ch | 0x20) - 'a' + 10);
		}
		if (in.chance(40))
			put(s, ";ext=\"x\"");
		if (in.chance(240))
			put_eol(in, s);
		put_noise(s, noise, std::min<uint64_t>(size, in.u16() % 4096));
		if (in.chance(220))
			put_eol(in, s);
	}
	if (in.chance(128)) {
		put(s, "0\r\n");
		if (in.chance(64))
			put(s, "X-Trailer: done\r\n");
		put(s, "\r\n");
	}
}

/* Characters of a text run: base64 (with JSON's "\/" escapes and '=' padding) or hex. */
void text_run(Input &in, Prng &noise, std::vector<uint8_t> &s)
{
	static const char *const before[] = { "data: {\"audio\":\"", "{\"media\":{\"payload\":\"",
					      "\"", "", "id: 1\ndata: " };
	static const char *const after[] = { "\"}\n\n", "=", "==\"}", "", "\\", "\\u0041" };
	static const char b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
	static const char hexd[] = "0123456789abcdefABCDEF";
	unsigned kind = in.u8() % 3;
	size_t n = in.u16() % 4000;

	put(s, in.pick(before));
	for (size_t i = 0; i < n; i++) {
		uint64_t r = noise.next();
		if (kind == 0) {
			s.push_back((uint8_t)hexd[r % 22]);
		} else if (kind == 1 && r % 97 == 0) {
			put(s, "\\/");
		} else {
			s.push_back((uint8_t)b64[r % 64]);
		}
	}
	put(s, in.pick(after));
}

/* One WebSocket frame: valid or broken first byte, 7-, 16- or 64-bit length (up to 2^64 - 1,
 * shortest form or not), masked or not, payload shorter than announced. */
void ws_frame(Input &in, Prng &noise, std::vector<uint8_t> &s)
{
	static const uint8_t ops[] = { 0, 1, 2, 8, 9, 10, 3, 11 };
	static const uint64_t huge[] = { 65536, 1ULL << 32, (1ULL << 53) - 1, 1ULL << 53,
					 1ULL << 63, UINT64_MAX };
	static const unsigned forms[] = { 0, 2, 8 };
	uint8_t b0 = in.chance(200) ? (uint8_t)(0x80 | in.pick(ops) | (in.chance(20) ? 0x40 : 0))
				   : in.u8();
	bool mask = in.u8() & 1;
	uint64_t len;
	unsigned form = in.u8() % 8;

	if (form < 4)
		len = in.u8() % 126;
	else if (form < 6)
		len = in.u16();
	else if (form == 6)
		len = in.pick(huge);
	else
		len = in.u64();
	unsigned size = len < 126 ? 0 : len < 65536 ? 2 : 8;
	if (in.chance(16))
		size = in.pick(forms); /* not the shortest form */

	s.push_back(b0);
	s.push_back((uint8_t)((mask ? 0x80 : 0) | (size == 0 ? (len & 0x7f) : size == 2 ? 126 : 127)));
	for (unsigned i = size; i; i--)
		s.push_back((uint8_t)(len >> (8 * (i - 1))));
	uint8_t key[4] = { 0, 0, 0, 0 };
	if (mask)
		for (uint8_t &k : key) {
			k = in.u8();
			s.push_back(k);
		}
	size_t from = s.size();
	if (in.chance(64))
		text_run(in, noise, s);
	else
		put_noise(s, noise, std::min<uint64_t>(len, in.u16() % 3000));
	for (size_t i = from; i < s.size(); i++)
		s[i] ^= key[(i - from) & 3];
}

/* One flow and observation point, as the classifier would name it. */
struct Flow {
	struct audio_event hdr; /* the header fields; data unused */
	uint32_t next_seq;
};

struct Tracked {
	EngineConfig cfg{};
	std::unique_ptr<SignatureEngine> eng;
	std::vector<struct sig_record> out;
	EngineStats last{};
	uint32_t max_streams = 0;
	int64_t heap = 0; /* net bytes the engine allocated, measured around its calls */
	int64_t bound = 0;
	int64_t heap_peak = 0;
};

uint32_t effective_streams(uint32_t max_streams)
{
	return std::min(std::max(max_streams, 1u), 1u << 22);
}

/*
 * What the engine may hold, generously: its fixed buffers (a window of scratch, the TCP
 * framing output, the index table) and per stream its ring (the window rounded up to a power
 * of two), its TCP framing state and its slot (the slot vector may double past what it uses).
 * A leak per event or a buffer growing with the traffic soon crosses it.
 */
int64_t engine_bound(const EngineConfig &cfg)
{
	uint32_t w = std::min(std::max(cfg.window_size, 32u), 4096u);
	uint32_t ring = 1;
	uint64_t index = 16;
	uint64_t m = effective_streams(cfg.max_streams);

	while (ring < w)
		ring <<= 1;
	while (index < 2 * m)
		index <<= 1;
	return (int64_t)(32 * 1024 + index * 4 + m * (ring + 4096));
}

void track_start(Tracked &t, const EngineConfig &cfg)
{
	t.cfg = cfg;
	t.max_streams = effective_streams(cfg.max_streams);
	t.bound = engine_bound(cfg);
	t.out.reserve(256);
	size_t before = heap_in_use();
	t.eng.reset(new SignatureEngine(cfg));
	t.heap = (int64_t)(heap_in_use() - before);
	t.heap_peak = t.heap;
	t.last = t.eng->stats();
	CHECK(t.heap <= t.bound, "engine construction holds %lld bytes > bound %lld",
	      (long long)t.heap, (long long)t.bound);
}

void check_stats(Tracked &t, const EngineStats &s, uint64_t bytes, const char *op)
{
	CHECK(s.streams_active <= t.max_streams, "%s: streams_active %llu > max_streams %u", op,
	      (unsigned long long)s.streams_active, t.max_streams);
	CHECK(s.streams_active ==
		      s.streams_created - s.streams_evicted - s.streams_expired - s.streams_ended,
	      "%s: streams_active %llu != created %llu - evicted %llu - expired %llu - ended %llu",
	      op, (unsigned long long)s.streams_active, (unsigned long long)s.streams_created,
	      (unsigned long long)s.streams_evicted, (unsigned long long)s.streams_expired,
	      (unsigned long long)s.streams_ended);
	CHECK(s.bytes == t.last.bytes + bytes, "%s: bytes grew by %llu, the record carried %llu",
	      op, (unsigned long long)(s.bytes - t.last.bytes), (unsigned long long)bytes);
	CHECK(s.windows == s.windows_silent + s.signatures,
	      "%s: windows %llu != silent %llu + signatures %llu", op,
	      (unsigned long long)s.windows, (unsigned long long)s.windows_silent,
	      (unsigned long long)s.signatures);
	CHECK(s.signatures - t.last.signatures == t.out.size(),
	      "%s: %zu records for %llu new signatures", op, t.out.size(),
	      (unsigned long long)(s.signatures - t.last.signatures));
	CHECK(t.heap <= t.bound, "%s: engine holds %lld heap bytes > bound %lld (max_streams %u)",
	      op, (long long)t.heap, (long long)t.bound, t.max_streams);
	t.heap_peak = std::max(t.heap_peak, t.heap);
	t.last = s;
}

void check_records(const Tracked &t, const struct audio_event *ev, size_t audio)
{
	CHECK(t.out.size() <= audio + kMaxHeldBytes, "%zu signatures from an event of %zu bytes",
	      t.out.size(), audio);
	for (const struct sig_record &r : t.out) {
		bool same = r.ts_ns == ev->ts_ns && !memcmp(r.saddr, ev->saddr, 16) &&
			    !memcmp(r.daddr, ev->daddr, 16) && r.sport == ev->sport &&
			    r.dport == ev->dport && r.ifindex == ev->ifindex &&
			    r.direction == ev->direction && r.family == ev->family &&
			    r.protocol == ev->protocol && r.cgroup_id == ev->cgroup_id && r._pad == 0;
		CHECK(same, "a record does not name the event that completed it");
	}
}

/* Bytes the engine must count for a record of len bytes: what is there, at most captured_len. */
size_t expected_audio(const struct audio_event *ev, size_t len)
{
	if (!ev || len < kHeader)
		return 0;
	return std::min<size_t>({ ev->captured_len, len - kHeader, AEV_MAX_CAPTURE });
}

void tracked_ingest(Tracked &t, const struct audio_event *ev, size_t len)
{
	size_t cap = t.out.capacity();
	t.out.clear();
	size_t before = heap_in_use();
	t.eng->ingest(ev, len, t.out);
	int64_t grown = (int64_t)(heap_in_use() - before);
	/* The caller's vector is not the engine's: take its growth out. */
	t.heap += grown - (int64_t)((t.out.capacity() - cap) * sizeof(struct sig_record));
	size_t audio = expected_audio(ev, len);
	check_stats(t, t.eng->stats(), audio, "ingest");
	if (ev && len >= kHeader)
		check_records(t, ev, audio);
}

void tracked_expire(Tracked &t, uint64_t now)
{
	size_t before = heap_in_use();
	t.eng->expire(now);
	t.heap += (int64_t)(heap_in_use() - before);
	t.out.clear();
	check_stats(t, t.eng->stats(), 0, "expire");
}

/* Totals over the run, printed by main(). */
struct Totals {
	uint64_t inputs, events, bytes, signatures, evicted, expired, ended, restarts;
	double heap_peak_share; /* the largest heap peak, as a share of its engine's bound */
} g_totals;

void add_totals(const Tracked &t)
{
	EngineStats s = t.eng->stats();

	g_totals.bytes += s.bytes;
	g_totals.signatures += s.signatures;
	g_totals.evicted += s.streams_evicted;
	g_totals.expired += s.streams_expired;
	g_totals.ended += s.streams_ended;
	g_totals.restarts += s.stream_restarts;
	g_totals.heap_peak_share =
		std::max(g_totals.heap_peak_share, (double)t.heap_peak / (double)t.bound);
}

EngineConfig config_from(Input &in)
{
	static const uint32_t windows[] = { 0, 1, 31, 32, 33, 64, 100, 255, 256, 1000, 4095, 4096, 4097, UINT32_MAX };
	static const uint32_t thresholds[] = { 0, 1, 100, 256, 65535, 65536, UINT32_MAX };
	static const uint32_t streams[] = { 0, 1, 2, 3, 4, 8 };
	static const uint64_t timeouts[] = { 0, 1, 1000, 1000000, 1000000000, 30000000000ULL, UINT64_MAX };
	EngineConfig cfg;

	cfg.algorithm = (Algorithm)(in.u8() % 3);
	cfg.window_size = in.pick(windows);
	cfg.silence_threshold = in.pick(thresholds);
	cfg.max_streams = in.pick(streams);
	cfg.stream_timeout_ns = in.pick(timeouts);
	return cfg;
}

/* The state of one input's run: two engines see every event. */
struct Run {
	Input in;
	Prng noise;
	Tracked fresh;	     /* configured by this input */
	Tracked *longlived; /* one engine for the whole process: state across inputs */
	Flow flows[kFlows];
	uint64_t clock;
	size_t events = 0;
	std::vector<uint8_t> stream;

	Run(const uint8_t *d, size_t n, Tracked *ll) : in(d, n), noise{ 0 }, longlived(ll), clock(0) {}
};

void init_flows(Run &r)
{
	static const uint8_t families[] = { 4, 4, 6, 6, 0, 255 };
	static const uint8_t protocols[] = { kTcp, kTcp, kTcp, kUdp, kUdp, 0, 255 };

	for (size_t i = 0; i < kFlows; i++) {
		struct audio_event &h = r.flows[i].hdr;
		memset(&h, 0, kHeader);
		h.family = r.in.pick(families);
		h.protocol = r.in.pick(protocols);
		h.direction = r.in.u8() % 3;
		h.encoding = r.in.u8() % 6;
		h.ifindex = r.in.chance(230) ? 10 + (uint32_t)i % 3 : r.in.u32();
		h.saddr[0] = 10;
		h.saddr[3] = (uint8_t)(1 + i % 4); /* some flows share a tuple: different points */
		h.daddr[0] = 10;
		h.daddr[3] = 9;
		h.sport = (uint16_t)(40000 + i % 4);
		h.dport = 5004;
		h.cgroup_id = r.in.chance(200) ? 0 : r.in.u64();
		r.flows[i].next_seq = r.in.u32();
	}
}

/* A timestamp: mostly a clock moving forward, and every kind of impossible value. */
uint64_t next_ts(Run &r)
{
	uint8_t mode = r.in.u8();

	if (mode < 200) {
		r.clock += (uint64_t)r.in.u8() * (mode < 150 ? 20000 : 50000000);
		return r.clock;
	}
	if (mode < 215)
		return r.clock - std::min<uint64_t>(r.clock, (uint64_t)r.in.u32() * 1000);
	if (mode < 225)
		return 0;
	if (mode < 235)
		return UINT64_MAX;
	if (mode < 245) {
		r.clock += r.in.u64() >> (r.in.u8() % 64);
		return r.clock;
	}
	return r.in.u64();
}

void deliver(Run &r, const struct audio_event *ev, size_t len)
{
	tracked_ingest(r.fresh, ev, len);
	tracked_ingest(*r.longlived, ev, len);
	r.events++;
	g_totals.events++;
}

/*
 * One record: hdr then up to avail bytes of data, in a buffer of exactly len bytes so the
 * sanitizer sees any read past what the ring buffer would have handed over.
 */
void emit(Run &r, const struct audio_event &hdr, const uint8_t *data, size_t avail, size_t len)
{
	std::unique_ptr<uint8_t[]> buf(new uint8_t[len ? len : 1]());

	memcpy(buf.get(), &hdr, std::min(len, kHeader));
	if (len > kHeader && avail)
		memcpy(buf.get() + kHeader, data, std::min(avail, len - kHeader));
	deliver(r, reinterpret_cast<const struct audio_event *>(buf.get()), len);
}

/* A record with every header byte from the input. */
void random_event(Run &r)
{
	struct audio_event hdr;
	std::vector<uint8_t> &d = r.stream;

	d.clear();
	r.in.bytes(d, kHeader);
	d.resize(kHeader, 0);
	memcpy(&hdr, d.data(), kHeader);
	if (r.in.chance(128))
		hdr.ts_ns = next_ts(r);
	size_t avail = r.in.u16() % (AEV_MAX_CAPTURE + 64);
	d.clear();
	put_noise(d, r.noise, avail);
	size_t len;
	switch (r.in.u8() % 4) {
	case 0:
		len = r.in.u8() % (kHeader + 1); /* shorter than the header */
		break;
	case 1:
		len = kHeader + std::min<size_t>(avail, hdr.captured_len);
		break;
	default:
		len = kHeader + avail;
	}
	emit(r, hdr, d.data(), avail, len);
	if (r.in.chance(8))
		deliver(r, nullptr, len);
}

/* A byte stream of pieces in any order: the framing's state machines see every transition. */
void build_stream(Run &r)
{
	std::vector<uint8_t> &s = r.stream;

	s.clear();
	for (unsigned p = 1 + r.in.u8() % 8; p && s.size() < kMaxStreamBytes; p--) {
		switch (r.in.u8() % 9) {
		case 0:
			if (r.in.chance(192))
				put_noise(s, r.noise, r.in.u16() % 3000);
			else /* some byte values make every position an anchor */
				s.insert(s.end(), r.in.u16() % 3000, r.in.u8());
			break;
		case 1:
			http_head(r.in, r.noise, s);
			break;
		case 2:
			chunked_body(r.in, r.noise, s);
			break;
		case 3:
		case 4:
			for (unsigned f = 1 + r.in.u8() % 6; f; f--)
				ws_frame(r.in, r.noise, s);
			break;
		case 5:
			text_run(r.in, r.noise, s);
			break;
		case 6: /* a client's upgrade, then its masked frames */
			put(s, "GET /ws HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n");
			for (unsigned f = 1 + r.in.u8() % 6; f; f--)
				ws_frame(r.in, r.noise, s);
			break;
		case 7:
			put(s, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n");
			chunked_body(r.in, r.noise, s);
			break;
		default:
			r.in.bytes(s, r.in.u16() % 2000);
		}
	}
	for (unsigned flips = r.in.chance(64) ? r.in.u8() % 16 : 0; flips && !s.empty(); flips--)
		s[r.in.u16() % s.size()] ^= (uint8_t)(1u << (r.in.u8() % 8));
}

/* The stream cut into segments of one flow, with every kind of header trouble. */
void tcp_scenario(Run &r)
{
	static const size_t sizes[] = { 1448, 1, 2, 7, 64, 536, 1984, 1985, 3000 };
	static const uint32_t jumps[] = { 1, 2, 100, 65536, 0x7fffffff, 0x80000000, 0xffffffff };
	Flow &fl = r.flows[r.in.u8() % kFlows];
	const std::vector<uint8_t> &s = r.stream;
	bool first = r.in.chance(200);

	build_stream(r);
	for (size_t at = 0; at < s.size() && r.events < kMaxEventsPerInput;) {
		size_t seg = r.in.chance(200) ? r.in.pick(sizes) : r.in.u16() % 4000;
		seg = std::max<size_t>(1, std::min(seg, s.size() - at));
		struct audio_event h = fl.hdr;
		size_t captured = std::min<size_t>(seg, AEV_MAX_CAPTURE);

		h.ts_ns = next_ts(r);
		h.seq = fl.next_seq;
		h.payload_len = (uint16_t)seg;
		h.captured_len = (uint16_t)captured;
		h.flags = first ? AEV_F_STREAM_START : 0;
		if (seg > AEV_MAX_CAPTURE)
			h.flags |= AEV_F_TRUNCATED;
		first = false;
		uint8_t trouble = r.in.u8();
		if (trouble < 16) { /* bytes lost before this segment, seq says so or not */
			h.seq += r.in.pick(jumps);
			if (r.in.chance(128))
				h.flags |= AEV_F_GAP;
		} else if (trouble < 24) {
			h.flags |= AEV_F_GAP;
		} else if (trouble < 32) {
			h.flags |= AEV_F_CHUNK;
		} else if (trouble < 36) {
			h.flags |= AEV_F_STREAM_END;
			first = r.in.chance(128);
		} else if (trouble < 40) {
			h.flags = r.in.u16();
		} else if (trouble < 48) {
			h.captured_len = r.in.u16(); /* beyond the record, or short of it */
			h.payload_len = r.in.u16();
		} else if (trouble < 52) {
			h.encoding = r.in.u8();
		} else if (trouble < 54) {
			h.protocol = r.in.chance(128) ? kUdp : r.in.u8();
		}
		size_t len = kHeader + captured;
		uint8_t cut = r.in.u8();
		if (cut < 8)
			len = r.in.u8() % (kHeader + 1);
		else if (cut < 16)
			len = kHeader + r.in.u16() % (captured + 1);
		emit(r, h, s.data() + at, captured, len);
		fl.next_seq = h.seq + (uint32_t)seg;
		at += seg;
		if (r.in.chance(6))
			at += std::min<size_t>(s.size() - at, r.in.u16() % 3000); /* lost, seq unflagged */
	}
}

/* Audio-ish UDP packets on one flow: the same bytes with headers mangled now and then. */
void udp_scenario(Run &r)
{
	Flow &fl = r.flows[r.in.u8() % kFlows];
	unsigned packets = 1 + r.in.u8() % 32;
	size_t size = 1 + r.in.u16() % 2100;
	std::vector<uint8_t> &d = r.stream;

	for (; packets && r.events < kMaxEventsPerInput; packets--) {
		struct audio_event h = fl.hdr;
		d.clear();
		if (r.in.chance(240))
			put_noise(d, r.noise, size);
		else
			d.assign(size, r.in.u8());
		h.protocol = r.in.chance(240) ? kUdp : r.in.u8();
		h.ts_ns = next_ts(r);
		h.payload_len = (uint16_t)size;
		h.captured_len = (uint16_t)std::min<size_t>(size, AEV_MAX_CAPTURE);
		if (r.in.chance(24))
			h.captured_len = r.in.u16();
		if (r.in.chance(24))
			h.encoding = r.in.u8();
		emit(r, h, d.data(), d.size(), kHeader + std::min<size_t>(size, h.captured_len));
	}
}

void expire_op(Run &r)
{
	uint64_t now;

	switch (r.in.u8() % 4) {
	case 0:
		now = 0;
		break;
	case 1:
		now = UINT64_MAX;
		break;
	case 2:
		now = r.in.u64();
		break;
	default:
		now = r.clock;
	}
	tracked_expire(r.fresh, now);
	tracked_expire(*r.longlived, now);
}

Tracked *longlived_engine(void)
{
	static Tracked *t;

	if (!t) {
		EngineConfig cfg{ Algorithm::XxHash, 256, 256, 4, 1000000000ULL };
		t = new Tracked();
		track_start(*t, cfg);
	}
	return t;
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	Run r(data, size, longlived_engine());

	g_totals.inputs++;
	track_start(r.fresh, config_from(r.in));
	r.noise.s = r.in.u64();
	r.clock = r.in.chance(200) ? r.in.u64() >> 8 : r.in.u64();
	init_flows(r);
	while (!r.in.empty() && r.events < kMaxEventsPerInput) {
		uint8_t op = r.in.u8();
		if (op < 100)
			tcp_scenario(r);
		else if (op < 150)
			udp_scenario(r);
		else if (op < 230)
			random_event(r);
		else
			expire_op(r);
	}
	add_totals(r.fresh);
	/* The engine is gone: everything it held went with it (LeakSanitizer checks the rest). */
	size_t before = heap_in_use();
	int64_t held = r.fresh.heap;
	r.fresh.eng.reset();
	int64_t freed = (int64_t)(before - heap_in_use());
	/* Exact only with the sanitizer's counter (mallinfo2 counts chunk overheads). */
	CHECK(freed == held || !__sanitizer_get_current_allocated_bytes,
	      "destroying the engine freed %lld bytes, it held %lld", (long long)freed,
	      (long long)held);
	return 0;
}

#ifndef ALT_LIBFUZZER

namespace {

void on_death(void)
{
	report_where();
}

/* [u32 length][u32 0][event], each entry padded to 8 bytes: test/signature-parity.test.ts's format. */
int replay(int argc, char **argv)
{
	if (argc < 9) {
		fprintf(stderr, "usage: fuzz_engine replay EVENTS OUT ALG WINDOW THRESHOLD "
				"MAX_STREAMS TIMEOUT_NS\n");
		return 2;
	}
	FILE *f = fopen(argv[2], "rb");
	if (!f) {
		perror(argv[2]);
		return 3;
	}
	std::vector<uint8_t> file;
	uint8_t chunk[65536];
	for (size_t n; (n = fread(chunk, 1, sizeof(chunk), f)) > 0;)
		file.insert(file.end(), chunk, chunk + n);
	fclose(f);

	EngineConfig cfg{ (Algorithm)atoi(argv[4]), (uint32_t)strtoul(argv[5], nullptr, 0),
			  (uint32_t)strtoul(argv[6], nullptr, 0), (uint32_t)strtoul(argv[7], nullptr, 0),
			  strtoull(argv[8], nullptr, 0) };
	Tracked t;
	std::vector<struct sig_record> all;
	track_start(t, cfg);
	for (size_t at = 0; at + 8 <= file.size();) {
		uint32_t len;
		memcpy(&len, file.data() + at, 4);
		if (len > file.size() - at - 8) {
			fprintf(stderr, "replay: entry at %zu claims %u bytes past the end\n", at, len);
			return 4;
		}
		/* Exactly len bytes, as the ring buffer hands them over. */
		std::unique_ptr<uint8_t[]> ev(new uint8_t[len ? len : 1]);
		memcpy(ev.get(), file.data() + at + 8, len);
		tracked_ingest(t, reinterpret_cast<const struct audio_event *>(ev.get()), len);
		all.insert(all.end(), t.out.begin(), t.out.end());
		at += 8 + ((len + 7) & ~7u);
	}
	FILE *o = fopen(argv[3], "wb");
	if (!o || fwrite(all.data(), sizeof(struct sig_record), all.size(), o) != all.size()) {
		perror(argv[3]);
		return 5;
	}
	fclose(o);
	EngineStats s = t.eng->stats();
	printf("{\"records\":%zu,\"bytes\":%llu,\"windows\":%llu,\"signatures\":%llu,"
	       "\"restarts\":%llu,\"streamsEnded\":%llu,\"streamsActive\":%llu,"
	       "\"heapPeak\":%lld,\"heapBound\":%lld}\n",
	       all.size(), (unsigned long long)s.bytes, (unsigned long long)s.windows,
	       (unsigned long long)s.signatures, (unsigned long long)s.stream_restarts,
	       (unsigned long long)s.streams_ended, (unsigned long long)s.streams_active,
	       (long long)t.heap_peak, (long long)t.bound);
	return 0;
}

} // namespace

int main(int argc, char **argv)
{
	if (argc > 1 && !strcmp(argv[1], "replay"))
		return replay(argc, argv);

	unsigned long long iterations = argc > 1 ? strtoull(argv[1], nullptr, 0) : 1000;
	g_seed = argc > 2 ? strtoull(argv[2], nullptr, 0)
			  : (uint64_t)std::chrono::system_clock::now().time_since_epoch().count();
	g_main_mode = true;
	if (__sanitizer_set_death_callback)
		__sanitizer_set_death_callback(on_death);
	printf("fuzz_engine: seed %llu, %llu iterations\n", (unsigned long long)g_seed, iterations);
	fflush(stdout);

	auto t0 = std::chrono::steady_clock::now();
	std::vector<uint8_t> input;
	for (g_iteration = 0; g_iteration < iterations; g_iteration++) {
		/* Each iteration's input from (seed, iteration) alone. */
		Prng rng{ g_seed * 0x2545f4914f6cdd1dULL ^ g_iteration };
		size_t size = rng.next() % 4 == 0 ? rng.next() % 32768 : rng.next() % 4096;
		input.resize(size);
		for (uint8_t &b : input)
			b = (uint8_t)(rng.next() >> 56);
		LLVMFuzzerTestOneInput(input.data(), input.size());
	}
	double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
	Tracked *ll = longlived_engine();
	EngineStats l = ll->eng->stats();
	printf("{\"seed\":%llu,\"iterations\":%llu,\"seconds\":%.2f,\"events\":%llu,\"bytes\":%llu,"
	       "\"signatures\":%llu,\"streamsEvicted\":%llu,\"streamsExpired\":%llu,"
	       "\"streamsEnded\":%llu,\"restarts\":%llu,\"heapPeakShare\":%.3f,"
	       "\"longLived\":{\"bytes\":%llu,\"signatures\":%llu,\"streamsActive\":%llu,"
	       "\"streamsEvicted\":%llu,\"heapPeak\":%lld,\"heapBound\":%lld}}\n",
	       (unsigned long long)g_seed, iterations, secs, (unsigned long long)g_totals.events,
	       (unsigned long long)g_totals.bytes, (unsigned long long)g_totals.signatures,
	       (unsigned long long)g_totals.evicted, (unsigned long long)g_totals.expired,
	       (unsigned long long)g_totals.ended, (unsigned long long)g_totals.restarts,
	       g_totals.heap_peak_share,
	       (unsigned long long)l.bytes, (unsigned long long)l.signatures,
	       (unsigned long long)l.streams_active, (unsigned long long)l.streams_evicted,
	       (long long)ll->heap_peak, (long long)ll->bound);
	delete ll;
	return 0;
}

#endif /* ALT_LIBFUZZER */

#endif /* ALT_FUZZ_ENGINE */
