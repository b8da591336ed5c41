/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * TCP byte streams (docs/tcp-streams.md): per observation point, the next
 * expected sequence number, so that each interface hands user space every
 * byte of a stream once, in order, whatever the segmentation. Retransmitted
 * bytes are dropped here, before they cost anything downstream; a hole is
 * not waited for: the stream jumps over it and says so (AEV_F_GAP), and
 * user space restarts its audio state there.
 *
 * All sequence comparisons are modulo 2^32: (s32)(a - b).
 */
#ifndef TCP_BPF_H
#define TCP_BPF_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include "audio_event.h"
#include "parse.bpf.h"

/* Idle time after which a stream's state is stale (FLOW_TIMEOUT_MS, set by
 * the loader): the next segment starts a new stream. */
const volatile __u64 flow_timeout_ns = 60ULL * 1000 * 1000 * 1000;

/* Sized by the loader (MAX_FLOWS); this default lets the object load as
 * it is. LRU: a stream pushed out simply starts again (AEV_F_STREAM_START). */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 1024);
	__type(key, struct aev_tcp_key);
	__type(value, struct aev_tcp_flow);
} tcp_flows SEC(".maps");

/* Most bytes one packet can yield: AEV_MAX_CHUNKS events (a 64 KB GSO/GRO
 * super-packet fits). */
#define TCP_MAX_TAKE (AEV_MAX_CHUNKS * AEV_MAX_CAPTURE)

/* Longest TLS record (RFC 8446 5.2: 2^14 + 256, TLS 1.2 allows 2^14 + 2048). */
#define TLS_MAX_RECORD (16384 + 2048)

/* The new bytes of one segment, what the events of it carry. */
struct tcp_take {
	__u32 off;   /* first new byte, from the L2 header */
	__u32 len;   /* new bytes; 0: no event */
	__u32 seq;   /* sequence number of the first new byte */
	__u16 flags; /* AEV_F_STREAM_START, AEV_F_GAP, AEV_F_STREAM_END */
};

/*
 * A TLS record header (handshake 0x16 or application data 0x17, version
 * 3.0..3.4, a plausible length) or an SSH banner at the start of a stream:
 * ciphertext, which can never match, so the stream is skipped from here.
 */
static __always_inline int encrypted_start(struct __sk_buff *skb, __u32 off, __u32 len)
{
	__u8 h[5];
	__u16 rec;

	if (len < 4)
		return 0;
	if (read_bytes(skb, off, h, 4))
		return 0;
	if (h[0] == 'S' && h[1] == 'S' && h[2] == 'H' && h[3] == '-')
		return 1;
	if ((h[0] != 0x16 && h[0] != 0x17) || h[1] != 0x03 || h[2] > 0x04 || len < 5)
		return 0;
	if (read_bytes(skb, off + 4, &h[4], 1))
		return 0;
	rec = ((__u16)h[3] << 8) | h[4];
	return rec > 0 && rec <= TLS_MAX_RECORD;
}

/*
 * Applies one segment to its stream state f (a map value, or a new state
 * on the stack): which of its bytes are new, and the flags their events
 * carry. Returns 1 when the stream is now known to be encrypted.
 */
static __always_inline int tcp_advance(struct __sk_buff *skb, struct aev_tcp_flow *f,
				       const struct tcp_seg *seg, struct tcp_take *t,
				       struct aev_stats *s)
{
	/* A SYN occupies one sequence number: data (TCP Fast Open) follows it. */
	__u32 seq = seg->seq + ((seg->flags & TCP_F_SYN) ? 1 : 0);
	__u32 len = seg->data_len;
	__u32 off = seg->data_off;
	__s32 ahead;

	t->len = 0;
	t->flags = 0;
	if (!len)
		return 0;
	if ((__s32)(seq + len - f->next_seq) <= 0) {
		/* Every byte seen already: a retransmission, or a segment that
		 * fills a hole the stream has jumped over. */
		s->count[AEV_STAT_TCP_RETRANS_BYTES] += len;
		return 0;
	}
	ahead = (__s32)(seq - f->next_seq);
	if (ahead < 0) {
		/* Overlap: only the bytes past next_seq are new. */
		s->count[AEV_STAT_TCP_RETRANS_BYTES] += (__u32)-ahead;
		off += (__u32)-ahead;
		len -= (__u32)-ahead;
		seq = f->next_seq;
	} else if (ahead > 0) {
		t->flags |= AEV_F_GAP;
		s->count[AEV_STAT_TCP_OUT_OF_ORDER]++;
		s->count[AEV_STAT_TCP_RESYNC]++;
	}
	if (f->flags & AEV_TCP_START_PENDING) {
		f->flags &= ~AEV_TCP_START_PENDING;
		t->flags |= AEV_F_STREAM_START;
		if (encrypted_start(skb, off, len)) {
			f->flags |= AEV_TCP_ENCRYPTED;
			f->next_seq = seq + len;
			s->count[AEV_STAT_ENCRYPTED_FLOWS]++;
			s->count[AEV_STAT_ENCRYPTED_SEGMENTS]++;
			return 1;
		}
	}
	if (len > TCP_MAX_TAKE) {
		/* Beyond 64 KB (BIG TCP): the rest is a hole before the next segment. */
		len = TCP_MAX_TAKE;
		s->count[AEV_STAT_GSO_TRUNCATED]++;
	}
	f->next_seq = seq + len;
	t->off = off;
	t->len = len;
	t->seq = seq;
	if (seg->flags & (TCP_F_FIN | TCP_F_RST))
		t->flags |= AEV_F_STREAM_END;
	return 0;
}

/* A new stream state: its first data byte is seq (after the SYN, if any). */
static __always_inline void tcp_restart(struct aev_tcp_flow *f, const struct tcp_seg *seg,
					__u64 now)
{
	f->last_seen_ns = now;
	f->next_seq = seg->seq + ((seg->flags & TCP_F_SYN) ? 1 : 0);
	f->flags = AEV_TCP_START_PENDING;
	f->window_ns = now;
	f->window_bytes = 0;
	f->_pad = 0;
}

/*
 * Counts the bytes a segment added against the one-second rate window;
 * a stream past AEV_BULK_BYTES_PER_SEC is marked bulk once (this segment
 * is still emitted: the mark only stops the ones after it).
 */
static __always_inline void tcp_rate(struct aev_tcp_flow *f, __u32 taken, __u64 now,
				     struct aev_stats *s)
{
	if (now - f->window_ns > 1000000000ULL) {
		f->window_ns = now;
		f->window_bytes = 0;
	}
	f->window_bytes += taken;
	if (f->window_bytes > AEV_BULK_BYTES_PER_SEC) {
		f->flags |= AEV_TCP_BULK;
		s->count[AEV_STAT_BULK_FLOWS]++;
	}
}

/*
 * One segment on an audio port, with payload or SYN/FIN/RST: updates the
 * stream state of key and fills t with the bytes to emit (t->len 0: none).
 * Pure ACKs never get here: they read no state.
 */
static __always_inline void tcp_track(struct __sk_buff *skb, const struct aev_tcp_key *key,
				      const struct tcp_seg *seg, struct tcp_take *t,
				      struct aev_stats *s)
{
	struct aev_tcp_flow *f = bpf_map_lookup_elem(&tcp_flows, key);
	int end = seg->flags & (TCP_F_FIN | TCP_F_RST);
	/* Coarse (the last tick): a timeout in milliseconds needs no more,
	 * and a clock read is a good part of the cost of a retransmission. */
	__u64 now = bpf_ktime_get_coarse_ns();

	t->len = 0;
	if (!f) {
		struct aev_tcp_flow n;

		/* An end with nothing to say about a stream we do not know. */
		if (end && !seg->data_len)
			return;
		tcp_restart(&n, seg, now);
		tcp_advance(skb, &n, seg, t, s);
		tcp_rate(&n, t->len, now, s);
		if (end)
			n.flags |= AEV_TCP_ENDED;
		bpf_map_update_elem(&tcp_flows, key, &n, BPF_NOEXIST);
		return;
	}
	if (seg->flags & TCP_F_SYN) {
		tcp_restart(f, seg, now);
	} else if ((__s64)(now - f->last_seen_ns) > (__s64)flow_timeout_ns) {
		/* Signed: another CPU may have stamped a time later than ours. */
		s->count[AEV_STAT_TCP_FLOWS_EXPIRED]++;
		tcp_restart(f, seg, now);
	} else if (f->flags & (AEV_TCP_ENCRYPTED | AEV_TCP_BULK)) {
		/* Before any payload byte is read. */
		s->count[(f->flags & AEV_TCP_ENCRYPTED) ? AEV_STAT_ENCRYPTED_SEGMENTS :
							   AEV_STAT_BULK_SEGMENTS]++;
		if (end)
			f->flags |= AEV_TCP_ENDED;
		f->last_seen_ns = now;
		return;
	} else if ((f->flags & AEV_TCP_ENDED) &&
		   (__s32)(seg->seq + seg->data_len - f->next_seq) > 0) {
		/* New bytes after the end without a SYN we saw: a new stream. */
		tcp_restart(f, seg, now);
	}
	f->last_seen_ns = now;
	tcp_advance(skb, f, seg, t, s);
	tcp_rate(f, t->len, now, s);
	if (end)
		f->flags |= AEV_TCP_ENDED;
}

#endif /* TCP_BPF_H */
