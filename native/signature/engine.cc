// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * The signature engine: docs/signatures.md is the specification, and
 * src/signature/stream-signer.ts the reference this must match bit for bit.
 *
 * Per event: find the stream, run the Gear hash over the new bytes in a
 * tight loop that stops only at an anchor candidate or where the oldest
 * open window completes, then append the bytes to the stream's ring so a
 * window that straddles packets can be gathered when it completes.
 */
#include "engine.h"

#include <algorithm>
#include <cstring>

#include "crc32.h"
#include "gear.h"
#include "rolling_hash.h"
#include "silence.h"
#include "stream_framing.h"
#include "stream_table.h"
#include "xxh64.h"

namespace alt {

namespace {

constexpr uint32_t kMinWindow = 32;
constexpr uint32_t kMaxWindow = 4096;
constexpr uint32_t kMaxOpenWindows = 16;
/* Bounds the index table (8 bytes per stream) against a nonsense MAX_FLOWS. */
constexpr uint32_t kMaxStreams = 1u << 22;
/* Framing output gathered before anchoring (a flush when full changes nothing). */
constexpr size_t kTcpOutBuf = 4096;
constexpr uint8_t kIpprotoTcp = 6;

/* TCP only (docs/tcp-streams.md): the framing layer and sequence tracking. */
struct TcpState {
	StreamFraming framing;
	bool fresh = true; /* no event since the stream (re)started: sniff from scratch */
	bool seq_known = false;
	uint8_t align_base = 0; /* parity of the audio offset of position 0 after a restart */
	uint32_t next_seq = 0;
};

struct OpenWindow {
	uint64_t anchor; /* stream position of the anchor byte; window is anchor+1..anchor+W */
	uint8_t encoding;
	uint8_t align;
};

struct StreamState {
	uint64_t h;
	uint64_t pos; /* bytes consumed so far = position of the next byte */
	uint32_t win_head;
	uint32_t win_count;
	OpenWindow win[kMaxOpenWindows];
	/* Last ring_cap bytes before pos; allocated once per slot, kept across reuse. */
	std::unique_ptr<uint8_t[]> ring;
	/* Allocated on the slot's first TCP event, kept across reuse. */
	std::unique_ptr<TcpState> tcp;

	/* The audio stream starts over: Gear warm-up from zero, open windows dropped. */
	void restart()
	{
		h = 0;
		pos = 0;
		win_head = 0;
		win_count = 0;
	}

	void reset()
	{
		restart();
		if (tcp) {
			tcp->fresh = true;
			tcp->seq_known = false;
		}
	}
};

uint32_t clamp_window(uint32_t w)
{
	return std::min(std::max(w, kMinWindow), kMaxWindow);
}

uint32_t pow2_at_least(uint32_t v)
{
	uint32_t p = 1;

	while (p < v)
		p <<= 1;
	return p;
}

StreamKey key_of(const struct audio_event *ev)
{
	StreamKey k;

	memset(&k, 0, sizeof(k));
	memcpy(k.saddr, ev->saddr, sizeof(k.saddr));
	memcpy(k.daddr, ev->daddr, sizeof(k.daddr));
	k.sport = ev->sport;
	k.dport = ev->dport;
	k.ifindex = ev->ifindex;
	k.direction = ev->direction;
	k.family = ev->family;
	k.protocol = ev->protocol;
	return k;
}

} // namespace

struct SignatureEngine::Impl {
	EngineConfig cfg;
	uint32_t window;
	uint64_t mask;
	uint32_t ring_cap;
	StreamTable<StreamState> table;
	std::vector<uint8_t> scratch; /* a straddling window, made contiguous */
	std::vector<uint8_t> tcp_out; /* framing output of one event */
	EngineStats st{};

	explicit Impl(const EngineConfig &c)
		: cfg(c), window(clamp_window(c.window_size)), mask(anchor_mask(window)),
		  ring_cap(pow2_at_least(window)),
		  table(std::min(std::max(c.max_streams, 1u), kMaxStreams)), scratch(window),
		  tcp_out(kTcpOutBuf)
	{
		cfg.window_size = window;
	}

	uint64_t sign(const uint8_t *w) const
	{
		switch (cfg.algorithm) {
		case Algorithm::Crc32:
			return crc32(w, window);
		case Algorithm::RollingHash:
			return rolling_hash(w, window);
		case Algorithm::XxHash:
		default:
			return xxh64(w, window, 0);
		}
	}

	uint32_t stream_for(const struct audio_event *ev);
	void consume(StreamState &s, const struct audio_event *ev, const uint8_t *d, size_t n,
		     uint8_t enc, uint32_t align_base, std::vector<struct sig_record> &out);
	void ingest_tcp(uint32_t id, const struct audio_event *ev, size_t n,
			std::vector<struct sig_record> &out);
	void complete(StreamState &s, const struct audio_event *ev, const uint8_t *d, uint64_t base,
		      std::vector<struct sig_record> &out);
	void append_ring(StreamState &s, const uint8_t *d, size_t n);
};

/* Find or create the stream; an idle one is restarted exactly as if
 * expire() had dropped it, so results do not depend on when expire() runs. */
uint32_t SignatureEngine::Impl::stream_for(const struct audio_event *ev)
{
	StreamKey k = key_of(ev);
	uint64_t h = StreamTable<StreamState>::hash_key(k);
	uint32_t id = table.find(k, h);

	if (id != kNoSlot) {
		auto &slot = table.slot(id);
		uint64_t idle = ev->ts_ns > slot.last_ns ? ev->ts_ns - slot.last_ns : 0;

		if (cfg.stream_timeout_ns && idle > cfg.stream_timeout_ns) {
			slot.value.reset();
			st.streams_expired++;
			st.streams_created++;
		}
		table.touch(id, std::max<uint64_t>(ev->ts_ns, slot.last_ns));
		return id;
	}

	if (table.size() >= table.capacity()) {
		table.erase(table.oldest());
		st.streams_evicted++;
	}
	id = table.insert(k, h, ev->ts_ns);
	auto &slot = table.slot(id);
	if (!slot.value.ring)
		slot.value.ring.reset(new uint8_t[ring_cap]);
	st.streams_created++;
	return id;
}

void SignatureEngine::Impl::complete(StreamState &s, const struct audio_event *ev,
				     const uint8_t *d, uint64_t base,
				     std::vector<struct sig_record> &out)
{
	const OpenWindow w = s.win[s.win_head];
	uint64_t first = w.anchor + 1;
	const uint8_t *bytes;

	s.win_head = (s.win_head + 1) % kMaxOpenWindows;
	s.win_count--;

	if (first >= base) {
		bytes = d + (first - base);
	} else {
		/* Head of the window is in the ring (possibly wrapped), tail in this packet. */
		uint32_t from_ring = (uint32_t)(base - first);
		uint32_t at = (uint32_t)(first & (ring_cap - 1));
		uint32_t part = std::min(from_ring, ring_cap - at);

		memcpy(scratch.data(), s.ring.get() + at, part);
		memcpy(scratch.data() + part, s.ring.get(), from_ring - part);
		memcpy(scratch.data() + from_ring, d, window - from_ring);
		bytes = scratch.data();
	}

	st.windows++;
	if (window_is_silent(bytes, window, w.encoding, w.align, cfg.silence_threshold)) {
		st.windows_silent++;
		return;
	}

	uint64_t sig = sign(bytes);
	struct sig_record r;

	r.ts_ns = ev->ts_ns;
	r.sig_lo = (uint32_t)sig;
	r.sig_hi = (uint32_t)(sig >> 32);
	memcpy(r.saddr, ev->saddr, sizeof(r.saddr));
	memcpy(r.daddr, ev->daddr, sizeof(r.daddr));
	r.sport = ev->sport;
	r.dport = ev->dport;
	r.ifindex = ev->ifindex;
	r.direction = ev->direction;
	r.family = ev->family;
	r.protocol = ev->protocol;
	r.encoding = w.encoding;
	r._pad = 0;
	r.cgroup_id = ev->cgroup_id;
	out.push_back(r);
	st.signatures++;
}

/* Anchor and sign audio bytes. An anchor at stream position q gets the sample
 * alignment (q + 1 + align_base) & 1: for UDP align_base is the packet's start
 * position (the alignment counts from the packet), for TCP the parity of the
 * stream's audio offset. */
void SignatureEngine::Impl::consume(StreamState &s, const struct audio_event *ev,
				    const uint8_t *d, size_t n, uint8_t enc, uint32_t align_base,
				    std::vector<struct sig_record> &out)
{
	const uint64_t base = s.pos;
	const uint64_t m = mask;
	const uint64_t *gear = kGear.data();
	uint64_t h = s.h;
	size_t i = 0;

	while (i < n) {
		/* Run up to and including the byte that completes the oldest window. */
		size_t stop = n;
		if (s.win_count) {
			uint64_t end = s.win[s.win_head].anchor + window;
			if (end < base + n)
				stop = (size_t)(end - base) + 1;
		}

		bool candidate = false;
		do {
			h = (h << 1) + gear[d[i++]];
			if (!(h & m)) {
				candidate = true;
				break;
			}
		} while (i < stop);

		/* Byte q is consumed: its completion comes before its anchor test. */
		uint64_t q = base + i - 1;
		if (s.win_count && s.win[s.win_head].anchor + window == q)
			complete(s, ev, d, base, out);

		if (candidate && q + 1 >= kGearSpan) {
			if (s.win_count == kMaxOpenWindows) {
				st.anchors_dropped++;
			} else {
				OpenWindow &w = s.win[(s.win_head + s.win_count) % kMaxOpenWindows];
				w.anchor = q;
				w.encoding = enc;
				w.align = (uint8_t)((q + 1 + align_base) & 1);
				s.win_count++;
			}
		}
	}

	s.h = h;
	s.pos = base + n;
	append_ring(s, d, n);
}

void SignatureEngine::Impl::append_ring(StreamState &s, const uint8_t *d, size_t n)
{
	uint64_t start = s.pos - n;

	if (n > ring_cap) {
		d += n - ring_cap;
		start += n - ring_cap;
		n = ring_cap;
	}
	uint32_t at = (uint32_t)(start & (ring_cap - 1));
	uint32_t part = std::min((uint32_t)n, ring_cap - at);

	memcpy(s.ring.get() + at, d, part);
	memcpy(s.ring.get(), d + part, n - part);
}

SignatureEngine::SignatureEngine(const EngineConfig &cfg) : impl_(new Impl(cfg)) {}

SignatureEngine::~SignatureEngine() = default;

void SignatureEngine::ingest(const struct audio_event *ev, size_t len,
			     std::vector<struct sig_record> &out)
{
	if (!ev || len < AEV_HEADER_SIZE)
		return;

	size_t n = std::min<size_t>({ ev->captured_len, len - AEV_HEADER_SIZE, AEV_MAX_CAPTURE });
	uint32_t id = impl_->stream_for(ev);

	impl_->st.bytes += n;
	if (ev->protocol == kIpprotoTcp) {
		impl_->ingest_tcp(id, ev, n, out);
		return;
	}
	StreamState &s = impl_->table.slot(id).value;
	if (n)
		impl_->consume(s, ev, ev->data, n, ev->encoding, (uint32_t)(s.pos & 1), out);
}

namespace {

struct FlushCtx {
	SignatureEngine::Impl *im;
	StreamState *s;
	const struct audio_event *ev;
	std::vector<struct sig_record> *out;
};

} // namespace

/* docs/tcp-streams.md: flags restart or end the stream, the framing turns its
 * bytes into audio bytes, and those are anchored as any stream's. */
void SignatureEngine::Impl::ingest_tcp(uint32_t id, const struct audio_event *ev, size_t n,
				       std::vector<struct sig_record> &out)
{
	StreamState &s = table.slot(id).value;

	if (!s.tcp) {
		s.tcp.reset(new TcpState());
		s.tcp->framing.reset();
	}
	TcpState &t = *s.tcp;

	if ((ev->flags & AEV_F_STREAM_START) || t.fresh) {
		t.framing.reset();
		s.restart();
		t.align_base = 0;
		t.fresh = false;
	} else {
		bool gap = ev->flags & AEV_F_GAP;
		int64_t missing = -1;

		if (t.seq_known) {
			int32_t d = (int32_t)(ev->seq - t.next_seq);
			if (d)
				gap = true; /* also a lost ring-buffer event */
			if (d > 0)
				missing = d;
		}
		if (gap) {
			int64_t skipped = t.framing.gap(missing);
			uint64_t pos = s.pos;

			s.restart();
			t.align_base = skipped >= 0 ? (uint8_t)((t.align_base + pos + (uint64_t)skipped) & 1)
						    : 0;
			st.stream_restarts++;
		}
	}
	t.seq_known = true;
	t.next_seq = ev->seq + (uint32_t)n;

	FlushCtx ctx{ this, &s, ev, &out };
	AudioSink sink{ tcp_out.data(), tcp_out.size(), 0, ev->encoding,
			[](void *c, const uint8_t *d, size_t len, uint8_t enc) {
				FlushCtx *x = static_cast<FlushCtx *>(c);
				x->im->consume(*x->s, x->ev, d, len, enc, x->s->tcp->align_base,
					       *x->out);
			},
			&ctx };

	t.framing.push(ev->data, n, ev->encoding, ev->flags & AEV_F_CHUNK, sink);
	if (ev->flags & AEV_F_STREAM_END) {
		t.framing.end(ev->encoding, sink);
		sink.flush();
		/* The stream is over: its state goes, a later stream on the tuple is new. */
		table.erase(id);
		st.streams_ended++;
		return;
	}
	sink.flush();
}

void SignatureEngine::expire(uint64_t now_ns)
{
	Impl &im = *impl_;

	if (!im.cfg.stream_timeout_ns)
		return;
	for (uint32_t id = im.table.oldest(); id != kNoSlot; id = im.table.oldest()) {
		uint64_t last = im.table.slot(id).last_ns;

		if (now_ns <= last || now_ns - last <= im.cfg.stream_timeout_ns)
			break;
		im.table.erase(id);
		im.st.streams_expired++;
	}
}

EngineStats SignatureEngine::stats() const
{
	EngineStats s = impl_->st;

	s.streams_active = impl_->table.size();
	return s;
}

} // namespace alt
