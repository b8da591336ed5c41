/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * Where the audio bytes of a UDP payload are: behind an RTP header
 * (RFC 3550: CSRC list, header extension, padding) or, without one, the
 * whole payload as raw 16-bit little-endian PCM. The payload may sit in
 * skb fragments, hence read_bytes rather than direct access only.
 */
#ifndef RTP_BPF_H
#define RTP_BPF_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "audio_event.h"
#include "parse.bpf.h"

#define RTP_HEADER_LEN 12
#define RTP_VERSION 2

enum span_status {
	SPAN_AUDIO = 0,
	SPAN_NOT_AUDIO = 1, /* RTCP, comfort noise, nothing left after headers */
	SPAN_MALFORMED = 2, /* RTP lengths that do not fit the datagram */
};

/* The audio bytes of one packet, offsets from the L2 header. */
struct audio_span {
	__u32 off;
	__u32 len;
	__u8 encoding; /* enum aev_encoding */
	__u8 rtp;
};

/* Payload types that carry no audio samples: CN (13, and the old 19) and
 * RTCP multiplexed on the RTP port (packet types 200..204 read as 72..76
 * once the marker bit is masked off). Returns -1 for those. */
static __always_inline int rtp_encoding(__u8 pt)
{
	switch (pt) {
	case 0:
		return AEV_ENC_PCMU;
	case 8:
		return AEV_ENC_PCMA;
	case 10:
	case 11:
		return AEV_ENC_L16_BE;
	case 13:
	case 19:
	case 72 ... 76:
		return -1;
	default:
		return AEV_ENC_OPAQUE;
	}
}

/* b0: first RTP byte (V P X CC), already known to be version 2. */
static __always_inline int rtp_span(struct __sk_buff *skb, __u32 off, __u32 len, __u8 b0,
				    __u8 b1, int trim_padding, struct audio_span *span)
{
	int enc = rtp_encoding(b1 & 0x7f);
	__u32 hlen = RTP_HEADER_LEN + (b0 & 0x0f) * 4;

	if (enc < 0)
		return SPAN_NOT_AUDIO;
	if (b0 & 0x10) {
		__be16 ext[2]; /* profile-defined id, length in 32-bit words */

		if (hlen + sizeof(ext) > len)
			return SPAN_MALFORMED;
		if (read_bytes(skb, off + hlen, ext, sizeof(ext)))
			return SPAN_MALFORMED;
		hlen += sizeof(ext) + bpf_ntohs(ext[1]) * 4;
	}
	if (hlen > len)
		return SPAN_MALFORMED;
	len -= hlen;
	/* The padding count is the datagram's last byte; a first fragment does
	 * not hold it, so its (partial) payload is taken as it is. */
	if ((b0 & 0x20) && trim_padding) {
		__u8 pad;

		if (read_bytes(skb, off + hlen + len - 1, &pad, 1))
			return SPAN_MALFORMED;
		if (pad == 0 || pad > len)
			return SPAN_MALFORMED;
		len -= pad;
	}
	if (len == 0)
		return SPAN_NOT_AUDIO;
	span->off = off + hlen;
	span->len = len;
	span->encoding = enc;
	span->rtp = 1;
	return SPAN_AUDIO;
}

/* off/len: the UDP payload. A payload that does not start like RTP
 * version 2 is taken as raw PCM. */
static __always_inline int audio_span(struct __sk_buff *skb, __u32 off, __u32 len,
				      int trim_padding, struct audio_span *span)
{
	__u8 hdr[2];

	if (len >= RTP_HEADER_LEN) {
		if (read_bytes(skb, off, hdr, sizeof(hdr)))
			return SPAN_MALFORMED;
		if ((hdr[0] >> 6) == RTP_VERSION)
			return rtp_span(skb, off, len, hdr[0], hdr[1], trim_padding, span);
	}
	if (len == 0)
		return SPAN_NOT_AUDIO;
	span->off = off;
	span->len = len;
	span->encoding = AEV_ENC_RAW_LE16;
	span->rtp = 0;
	return SPAN_AUDIO;
}

#endif /* RTP_BPF_H */
