/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * WebSocket frames (RFC 6455) in one direction of a TCP stream: headers
 * (2-14 bytes) stripped, payloads unmasked with the frame's key,
 * continuing across segments; binary messages are audio, text messages go
 * to the text decoder, control frames and compressed (RSV1) messages are
 * dropped. A few bytes of state whatever the frame length. Twin of
 * src/signature/websocket.ts.
 */
#ifndef ALT_SIGNATURE_WEBSOCKET_H
#define ALT_SIGNATURE_WEBSOCKET_H

#include <cstddef>
#include <cstdint>

#include "audio_sink.h"
#include "text_decoder.h"

namespace alt {

constexpr uint32_t kWsMaxHeader = 14;
/* Payload lengths at or beyond 2^53 are garbage (and the reference's numbers stay exact). */
constexpr uint32_t kWsMaxLengthHi = 0x1fffff;

static inline uint32_t ws_header_size(uint8_t b1)
{
	uint32_t len7 = b1 & 0x7f;

	return 2 + (len7 == 126 ? 2 : len7 == 127 ? 8 : 0) + ((b1 & 0x80) ? 4 : 0);
}

/* Payload length of a complete header, or -1 if it breaks RFC 6455's rules. */
static inline int64_t ws_payload_length(const uint8_t *h)
{
	uint8_t b0 = h[0];
	uint32_t op = b0 & 0x0f;
	uint32_t len7 = h[1] & 0x7f;

	if (b0 & 0x30)
		return -1; /* RSV2/RSV3 */
	if (op >= 8) {
		/* close, ping, pong: never fragmented, at most 125 bytes */
		if (op > 10 || !(b0 & 0x80) || (b0 & 0x40) || len7 > 125)
			return -1;
		return len7;
	}
	if (op > 2 || (op == 0 && (b0 & 0x40)))
		return -1;
	if (len7 < 126)
		return len7;
	if (len7 == 126) {
		uint32_t len = ((uint32_t)h[2] << 8) | h[3];
		return len >= 126 ? (int64_t)len : -1; /* the shortest form only */
	}
	uint32_t hi = ((uint32_t)h[2] << 24) | ((uint32_t)h[3] << 16) | ((uint32_t)h[4] << 8) | h[5];
	uint32_t lo = ((uint32_t)h[6] << 24) | ((uint32_t)h[7] << 16) | ((uint32_t)h[8] << 8) | h[9];
	if (hi > kWsMaxLengthHi || (hi == 0 && lo < 65536))
		return -1;
	return ((int64_t)hi << 32) | lo;
}

class WebSocketFrames {
public:
	bool hunting = false; /* frame boundaries lost: waiting for a header at an event start */

	void reset(bool client)
	{
		client_ = client;
		hunting = false;
		state_ = kHeader;
		hdr_len_ = 0;
		hdr_need_ = 2;
		remaining_ = 0;
		frame_kind_ = kDrop;
		msg_kind_ = kDrop;
	}

	/* While hunting, at an event start: a plausible header (this direction's mask bit)? */
	bool resync_at(const uint8_t *d, size_t n)
	{
		if (n < 2 || (bool)(d[1] & 0x80) != client_)
			return false;
		if (n < ws_header_size(d[1]) || ws_payload_length(d) < 0)
			return false;
		/* A continuation frame continues the message in progress before the gap. */
		hunting = false;
		state_ = kHeader;
		hdr_len_ = 0;
		hdr_need_ = 2;
		return true;
	}

	/* missing bytes (-1: unknown) are gone. Returns audio bytes skipped exactly, or -1. */
	int64_t gap(int64_t missing)
	{
		if (!hunting && state_ == kPayload && missing > 0 && (uint64_t)missing <= remaining_) {
			remaining_ -= (uint64_t)missing;
			phase_ = (uint32_t)((phase_ + (uint64_t)missing) & 3);
			if (!remaining_)
				state_ = kHeader;
			return frame_kind_ == kBinary ? missing : -1;
		}
		hunting = true;
		return -1;
	}

	/* Consumes d[0..n): audio to out (raw bytes with encoding enc), text through text. */
	void push(const uint8_t *d, size_t n, uint8_t enc, TextAudioDecoder &text, AudioSink &out)
	{
		size_t i = 0;

		while (i < n && !hunting) {
			if (state_ == kHeader) {
				hdr_[hdr_len_++] = d[i++];
				if (hdr_len_ == 2)
					hdr_need_ = ws_header_size(hdr_[1]);
				if (hdr_len_ == hdr_need_)
					start_frame();
				continue;
			}
			size_t k = n - i;
			if (k > remaining_)
				k = (size_t)remaining_;
			payload(d + i, k, enc, text, out);
			i += k;
			remaining_ -= k;
			if (!remaining_)
				state_ = kHeader;
		}
	}

private:
	enum : uint8_t { kDrop, kBinary, kText };
	enum : uint8_t { kHeader, kPayload };

	void payload(const uint8_t *d, size_t k, uint8_t enc, TextAudioDecoder &text,
		     AudioSink &out)
	{
		if (frame_kind_ == kBinary) {
			if (!masked_) {
				out.put_span(enc, d, k);
				return;
			}
			for (size_t done = 0; done < k;) {
				size_t got;
				uint8_t *w = out.reserve(enc, k - done, &got);
				for (size_t j = 0; j < got; j++)
					w[j] = d[done + j] ^ key_[(phase_ + j) & 3];
				phase_ = (uint32_t)((phase_ + got) & 3);
				out.commit(got);
				done += got;
			}
			return;
		}
		if (frame_kind_ == kText) {
			for (size_t j = 0; j < k; j++) {
				uint8_t b = masked_ ? d[j] ^ key_[phase_] : d[j];
				phase_ = (phase_ + 1) & 3;
				text.push(b, out);
			}
			return;
		}
		phase_ = (uint32_t)((phase_ + k) & 3);
	}

	void start_frame()
	{
		int64_t len = ws_payload_length(hdr_);
		uint32_t size = hdr_need_;

		hdr_len_ = 0;
		hdr_need_ = 2;
		if (len < 0) {
			hunting = true;
			return;
		}
		uint32_t op = hdr_[0] & 0x0f;
		bool compressed = hdr_[0] & 0x40;
		if (op == 1 || op == 2)
			msg_kind_ = (uint8_t)(compressed ? kDrop : op == 1 ? kText : kBinary);
		frame_kind_ = op >= 8 ? (uint8_t)kDrop : msg_kind_;
		masked_ = hdr_[1] & 0x80;
		if (masked_)
			for (int j = 0; j < 4; j++)
				key_[j] = hdr_[size - 4 + j];
		phase_ = 0;
		remaining_ = (uint64_t)len;
		state_ = len > 0 ? kPayload : kHeader;
	}

	bool client_ = true;
	bool masked_ = false;
	uint8_t state_ = kHeader;
	uint8_t frame_kind_ = kDrop;
	uint8_t msg_kind_ = kDrop;
	uint32_t hdr_len_ = 0;
	uint32_t hdr_need_ = 2;
	uint32_t phase_ = 0;
	uint64_t remaining_ = 0;
	uint8_t key_[4] = { 0, 0, 0, 0 };
	uint8_t hdr_[kWsMaxHeader];
};

} // namespace alt

#endif /* ALT_SIGNATURE_WEBSOCKET_H */
