/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * Where the audio bytes of a UDP payload are: behind an RTP header
 * (RFC 3550: CSRC list, header extension, padding) or, without one, the
 * whole payload as raw 16-bit little-endian PCM. The payload may sit in
 * skb fragments, hence read_bytes rather than direct access only.
 *
 * A first byte of 0b10xxxxxx is not enough to call a payload RTP: a
 * quarter of raw PCM packets start that way. The flow decides, through
 * the SSRC its RTP-looking payloads carry (docs/signatures.md, "What
 * counts as RTP"): real RTP keeps one, in raw PCM the "SSRC" is two
 * samples and changes every packet.
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

/* Sized by the loader (MAX_FLOWS); this default lets the object load as
 * it is. LRU: a flow pushed out is simply new again. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 1024);
	__type(key, struct aev_flow_key);
	__type(value, struct aev_rtp_flow);
} rtp_flows SEC(".maps");

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

/* RTCP packet types 200..204 read as marker + PT 72..76: their SSRC (the
 * sender's) is at bytes 4..7, where RTP has its timestamp. */
static __always_inline int rtcp_shaped(__u8 b1)
{
	__u8 pt = b1 & 0x7f;

	return pt >= 72 && pt <= 76;
}

/*
 * The flow's verdict on an RTP-looking payload (head: its first 12 bytes):
 * RTP when the flow's previous RTP-looking payload had the same SSRC, or
 * when this is the flow's first payload and its header is consistent.
 * Records this payload for the next one. A second observation of the same
 * packet (another interface of this node) gets the verdict of the first,
 * not a fresh one against the SSRC the first has just stored.
 */
static __always_inline int rtp_verdict(const struct aev_flow_key *key, const __u32 *head,
				       int consistent)
{
	struct aev_rtp_flow *f = bpf_map_lookup_elem(&rtp_flows, key);
	int rtcp = rtcp_shaped(((const __u8 *)head)[1]);
	__u32 ssrc = rtcp ? head[1] : head[2];
	__u32 id1 = rtcp ? head[2] : head[1];
	int rtp;

	if (!f) {
		struct aev_rtp_flow n = {
			.ssrc = ssrc,
			.id = {head[0], id1},
			.state = consistent ? AEV_RTP_YES : AEV_RTP_RAW,
		};

		bpf_map_update_elem(&rtp_flows, key, &n, BPF_NOEXIST);
		return consistent;
	}
	if (f->state != AEV_RTP_NONE && f->ssrc == ssrc && f->id[0] == head[0] && f->id[1] == id1)
		return f->state == AEV_RTP_YES;
	/* Written in place: concurrent packets of one flow are 20 ms apart, a
	 * torn update could cost one verdict at worst. */
	rtp = f->state != AEV_RTP_NONE && f->ssrc == ssrc;
	f->ssrc = ssrc;
	f->id[0] = head[0];
	f->id[1] = id1;
	f->state = rtp ? AEV_RTP_YES : AEV_RTP_RAW;
	return rtp;
}

/* A payload that does not look like RTP: a flow that starts with one is not
 * RTP from its first packet on. Lookup first: an LRU update allocates (and
 * may evict) before it finds the key exists. */
static __always_inline void note_not_rtp(const struct aev_flow_key *key)
{
	struct aev_rtp_flow n = {};

	if (!bpf_map_lookup_elem(&rtp_flows, key))
		bpf_map_update_elem(&rtp_flows, key, &n, BPF_NOEXIST);
}

/* off/len: the UDP payload; key: its flow. The RTP header's own checks
 * (rtp_span) decide between audio, not audio and malformed only once the
 * flow has called the payload RTP; otherwise it is raw PCM, all of it. */
static __always_inline int audio_span(struct __sk_buff *skb, __u32 off, __u32 len,
				      int trim_padding, const struct aev_flow_key *key,
				      struct audio_span *span)
{
	__u32 head[3];
	__u8 b0, b1;
	int status;

	if (len == 0)
		return SPAN_NOT_AUDIO;
	if (len < RTP_HEADER_LEN) {
		note_not_rtp(key);
		goto raw;
	}
	if (read_bytes(skb, off, head, sizeof(head)))
		return SPAN_MALFORMED;
	b0 = ((__u8 *)head)[0];
	b1 = ((__u8 *)head)[1];
	if ((b0 >> 6) != RTP_VERSION) {
		note_not_rtp(key);
		goto raw;
	}
	status = rtp_span(skb, off, len, b0, b1, trim_padding, span);
	if (rtp_verdict(key, head, status != SPAN_MALFORMED))
		return status;
raw:
	span->off = off;
	span->len = len;
	span->encoding = AEV_ENC_RAW_LE16;
	span->rtp = 0;
	return SPAN_AUDIO;
}

#endif /* RTP_BPF_H */
