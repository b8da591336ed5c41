/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * From a TCP stream's bytes to its audio bytes (docs/tcp-streams.md,
 * "User space"): sniff what the stream carries, then strip HTTP heads,
 * de-chunk bodies, unmask WebSocket frames and decode audio carried as
 * base64 or hex text. Fixed-size state (about 400 bytes) per stream.
 * Twin of src/signature/stream-framing.ts: every rule there is here.
 */
#ifndef ALT_SIGNATURE_STREAM_FRAMING_H
#define ALT_SIGNATURE_STREAM_FRAMING_H

#include <cstddef>
#include <cstdint>

#include "../../bpf/audio_event.h"
#include "audio_sink.h"
#include "http.h"
#include "text_decoder.h"
#include "websocket.h"

namespace alt {

constexpr uint32_t kSniffBytes = 256;
constexpr uint32_t kSniffMinOnGap = 16;

static inline bool mostly_printable(const uint8_t *d, size_t n)
{
	size_t printable = 0;

	for (size_t i = 0; i < n; i++) {
		uint8_t c = d[i];
		printable += (c >= 0x20 && c <= 0x7e) || c == '\t' || c == '\n' || c == '\r';
	}
	return printable * 10 >= n * 9;
}

class StreamFraming {
public:
	enum Mode : uint8_t { kSniff, kRaw, kText, kHttpHead, kHttpBody, kWebSocket };

	Mode mode = kSniff;

	void reset()
	{
		mode = kSniff;
		held_len_ = 0;
		not_http_ = false;
		head_.reset();
		chunked_.reset();
		text_.reset();
	}

	/* One event's bytes; chunk: the event continues a packet (not a segment start). */
	void push(const uint8_t *d, size_t n, uint8_t enc, bool chunk, AudioSink &out)
	{
		if (mode == kWebSocket && ws_.hunting && !chunk)
			ws_.resync_at(d, n);
		bytes(d, n, enc, out);
	}

	void end(uint8_t enc, AudioSink &out)
	{
		if (mode == kSniff && held_len_)
			decide(true, enc, out);
		text_.end(out);
	}

	/* missing bytes (-1: unknown) are gone. Returns audio bytes known skipped, or -1. */
	int64_t gap(int64_t missing)
	{
		switch (mode) {
		case kSniff:
			if (held_len_ >= kSniffMinOnGap)
				decide_mode();
			held_len_ = 0;
			return -1;
		case kRaw:
			return missing > 0 ? missing : -1;
		case kText:
			text_.gap();
			return -1;
		case kHttpHead:
			head_.gap();
			return -1;
		case kHttpBody:
			text_.gap();
			return body_gap(missing);
		default:
			text_.gap();
			return ws_.gap(missing);
		}
	}

private:
	enum : uint8_t { kChunked, kLength, kToEnd };

	int64_t body_gap(int64_t missing)
	{
		int64_t audio = body_raw_ ? missing : -1;

		if (body_framing_ == kChunked)
			return chunked_.gap(missing) ? audio : -1;
		if (body_framing_ == kToEnd)
			return missing > 0 ? audio : -1;
		if (missing > 0 && (uint64_t)missing <= body_remaining_) {
			body_remaining_ -= (uint64_t)missing;
			if (!body_remaining_)
				next_message();
			return audio;
		}
		body_framing_ = kToEnd; /* the next head is lost: the rest is this body's kind */
		return -1;
	}

	void bytes(const uint8_t *d, size_t n, uint8_t enc, AudioSink &out)
	{
		size_t i = 0;

		while (i < n) {
			switch (mode) {
			case kSniff:
				sniff(d[i++], enc, out);
				break;
			case kRaw:
				out.put_span(enc, d + i, n - i);
				return;
			case kText:
				for (; i < n; i++)
					text_.push(d[i], out);
				return;
			case kHttpHead: {
				int r = head_.push(d[i++]);
				if (r > 0)
					head_done();
				else if (r < 0)
					mode = kText; /* no blank line in 16 KB: not an HTTP head */
				break;
			}
			case kHttpBody:
				i += body(d + i, n - i, enc, out);
				break;
			default:
				ws_.push(d + i, n - i, enc, text_, out);
				return;
			}
		}
	}

	void sniff(uint8_t c, uint8_t enc, AudioSink &out)
	{
		held_[held_len_++] = c;
		if (!not_http_) {
			int m = http_start_match(held_, held_len_);
			if (m > 0) {
				mode = kHttpHead;
				head_.reset();
				replay(enc, out);
				return;
			}
			if (m < 0)
				not_http_ = true;
		}
		if (held_len_ == kSniffBytes)
			decide(true, enc, out);
	}

	void decide_mode() { mode = mostly_printable(held_, held_len_) ? kText : kRaw; }

	void decide(bool replay_held, uint8_t enc, AudioSink &out)
	{
		decide_mode();
		if (replay_held)
			replay(enc, out);
	}

	void replay(uint8_t enc, AudioSink &out)
	{
		uint32_t n = held_len_;

		held_len_ = 0;
		bytes(held_, n, enc, out);
	}

	void head_done()
	{
		const HttpHead &h = head_;

		if (h.upgrade_websocket && (h.request || h.status == 101)) {
			ws_.reset(h.request);
			mode = kWebSocket;
			return;
		}
		if (!h.request && h.status == 101) {
			mode = kRaw; /* switched to some other protocol: bytes are bytes */
			return;
		}
		body_raw_ = h.body_raw;
		text_.reset();
		if (h.chunked) {
			body_framing_ = kChunked;
			chunked_.reset();
			mode = kHttpBody;
			return;
		}
		int64_t len = h.body_length();
		if (len == 0) {
			next_message();
			return;
		}
		body_framing_ = len > 0 ? kLength : kToEnd;
		body_remaining_ = len > 0 ? (uint64_t)len : 0;
		mode = kHttpBody;
	}

	/* Body bytes from d[0..n): returns how many were consumed (stops at the body's end). */
	size_t body(const uint8_t *d, size_t n, uint8_t enc, AudioSink &out)
	{
		if (body_framing_ == kChunked) {
			if (chunked_.in_data()) {
				size_t k = chunked_.take_data(n);
				body_out(d, k, enc, out);
				return k;
			}
			int r = chunked_.push(d[0]);
			if (r == ChunkedDecoder::kEnd)
				body_end(out);
			return 1;
		}
		size_t k = n;
		if (body_framing_ == kLength && k > body_remaining_)
			k = (size_t)body_remaining_;
		body_out(d, k, enc, out);
		if (body_framing_ == kLength) {
			body_remaining_ -= k;
			if (!body_remaining_)
				body_end(out);
		}
		return k;
	}

	void body_out(const uint8_t *d, size_t k, uint8_t enc, AudioSink &out)
	{
		if (body_raw_) {
			out.put_span(enc, d, k);
			return;
		}
		for (size_t j = 0; j < k; j++)
			text_.push(d[j], out);
	}

	/* The body ended: a run in progress ends with it (the next head must not extend it). */
	void body_end(AudioSink &out)
	{
		text_.end(out);
		next_message();
	}

	void next_message()
	{
		text_.reset();
		head_.reset();
		mode = kHttpHead;
	}

	bool not_http_ = false;
	bool body_raw_ = false;
	uint8_t body_framing_ = kToEnd;
	uint32_t held_len_ = 0;
	uint64_t body_remaining_ = 0;
	HttpHead head_;
	ChunkedDecoder chunked_;
	TextAudioDecoder text_;
	WebSocketFrames ws_;
	uint8_t held_[kSniffBytes];
};

} // namespace alt

#endif /* ALT_SIGNATURE_STREAM_FRAMING_H */
