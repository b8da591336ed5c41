// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * TC classifier: finds audio in UDP packets (RTP or raw PCM on configured
 * ports) and TCP streams (in order, de-duplicated bytes on the same ports:
 * docs/tcp-streams.md) and hands a copy of the audio bytes to user space
 * through a ring buffer. Observes only: every path returns TC_ACT_UNSPEC (TCX_NEXT), so
 * whatever else is attached decides the packet's fate, and no byte of the
 * packet is written.
 */
#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>
#include "audio_event.h"
#include "parse.bpf.h"
#include "rtp.bpf.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

/*
 * The consumer is woken only when unconsumed data crosses this many bytes
 * (the loader sets a quarter of the ring), not per event: a wake-up is an
 * IPI, a VM exit under virtualisation, and cost more than the rest of the
 * event in our measurements. Below it the poller's 50 ms timeout collects
 * events; timestamps are taken here, so late delivery changes nothing
 * that is measured.
 */
const volatile __u64 wakeup_bytes = 64 * 1024;

/* Headers pulled into the linear area when they are not there already:
 * Ethernet + 2 tags + IPv6 + a few extension headers + UDP or TCP. */
#define PULL_MAX 512

/* Size set by the loader (PERF_BUFFER_SIZE); this default lets the object
 * load as it is (bpftool, tests). */
struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 256 * 1024);
} events SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct aev_config);
} config SEC(".maps");

/* One bit per port, UDP and TCP alike (AUDIO_PORTS names both): bit
 * (port & 63) of word (port >> 6). */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, PORT_MAP_WORDS);
	__type(key, __u32);
	__type(value, __u64);
} ports SEC(".maps");

/* One entry holding all counters: a packet costs one per-CPU lookup,
 * however many counters it touches. Indexed by enum aev_stat. */
struct aev_stats {
	__u64 count[AEV_STAT_MAX];
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct aev_stats);
} stats SEC(".maps");

/* After struct aev_stats: the stream tracker counts into it. */
#include "tcp.bpf.h"

/* An event is up to 2 KiB: too big for the 512-byte stack, and its size
 * varies, so it is built here and copied with bpf_ringbuf_output. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct audio_event);
} scratch SEC(".maps");

static __always_inline int parse_headers(struct __sk_buff *skb, struct parse_state *st)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	__be16 proto = 0;
	int status;

	st->l3_off = parse_eth(skb, data, data_end, st, &proto, &status);
	if (status != PARSE_L4)
		return status;
	if (proto == bpf_htons(ETH_P_IP))
		status = parse_ipv4(skb, data, data_end, st);
	else if (proto == bpf_htons(ETH_P_IPV6))
		status = parse_ipv6(skb, data, data_end, st);
	else
		return PARSE_OTHER;
	if (status != PARSE_L4)
		return status;
	if (st->protocol == IPPROTO_TCP)
		return parse_tcp(skb, data, data_end, st);
	return parse_udp(skb, data, data_end, st);
}

/*
 * The rare path for headers outside the linear area: pull them in (this
 * linearises, it does not change a byte) and parse again. A global
 * function so the verifier checks this second copy of the parser once,
 * not once per path through the caller; the common path stays inline
 * because a BPF-to-BPF call costs about as much as the whole parse.
 */
__noinline int parse_pulled(struct __sk_buff *skb, struct parse_state *st)
{
	__u32 len;

	if (!st)
		return PARSE_MALFORMED;
	len = skb->len < PULL_MAX ? skb->len : PULL_MAX;
	if (bpf_skb_pull_data(skb, len))
		return PARSE_MALFORMED;
	st->flags = 0;
	return parse_headers(skb, st);
}

static __always_inline int is_audio_port(__u16 sport, __u16 dport)
{
	__u32 key = 0;
	struct aev_config *cfg = bpf_map_lookup_elem(&config, &key);
	__u64 *word;

	if (cfg && cfg->all_ports)
		return 1;
	key = sport >> 6;
	word = bpf_map_lookup_elem(&ports, &key);
	if (word && (*word & (1ULL << (sport & 63))))
		return 1;
	key = dport >> 6;
	word = bpf_map_lookup_elem(&ports, &key);
	return word && (*word & (1ULL << (dport & 63)));
}

/* The flow of a packet on an audio port: keys the RTP or TCP state, and
 * the event takes its addresses from here. */
static __always_inline int load_flow(struct __sk_buff *skb, const struct parse_state *st,
				     struct aev_flow_key *key)
{
	__u32 v4[2];

	/* Here, not at the declaration: the port-miss path pays nothing. */
	__builtin_memset(key, 0, sizeof(*key));
	key->sport = st->sport;
	key->dport = st->dport;
	key->family = st->family;
	key->protocol = st->protocol;
	if (st->family == 6)
		/* saddr and daddr are adjacent in both headers. */
		return read_bytes(skb, st->l3_off + offsetof(struct ipv6hdr, saddr), key->saddr, 32);
	if (read_bytes(skb, st->l3_off + offsetof(struct iphdr, saddr), v4, sizeof(v4)))
		return -1;
	__builtin_memcpy(key->saddr, &v4[0], 4);
	__builtin_memcpy(key->daddr, &v4[1], 4);
	return 0;
}

/*
 * The sending socket's cgroup v2 ID, on egress only: at TC ingress no
 * socket is attached yet. dir is a constant in each program, so ingress
 * pays nothing. 0 when the skb has no socket (forwarded, or orphaned by a
 * veth crossing).
 */
static __always_inline __u64 sender_cgroup(struct __sk_buff *skb, __u8 dir)
{
	return dir == AEV_DIR_EGRESS ? bpf_skb_cgroup_id(skb) : 0;
}

/* Copies the span into the per-CPU event and submits it. */
static __always_inline void emit_event(struct __sk_buff *skb, const struct parse_state *st,
				       const struct aev_flow_key *flow,
				       const struct audio_span *span, __u8 dir,
				       struct aev_stats *s)
{
	/* 64-bit: no zero-extended copy for the bounds checks to land on. */
	__u64 cap = span->len;
	__u32 key = 0;
	struct audio_event *ev = bpf_map_lookup_elem(&scratch, &key);
	__u16 flags = span->rtp ? AEV_F_RTP : 0;
	__u64 avail, wakeup;

	if (!ev)
		return;
	if ((st->flags & PS_F_VLAN) || skb->vlan_present)
		flags |= AEV_F_VLAN;
	if (cap > AEV_MAX_CAPTURE) {
		cap = AEV_MAX_CAPTURE;
		flags |= AEV_F_TRUNCATED;
		s->count[AEV_STAT_TRUNCATED]++;
	}
	/* span->len >= 1 already; the checks below give the verifier bounds on
	 * the very register that sizes the copies (clang may otherwise test a
	 * different copy of the value). */
	barrier_var(cap);
	if (cap < 1 || cap > AEV_MAX_CAPTURE) {
		s->count[AEV_STAT_MALFORMED]++;
		return;
	}
	/* saddr and daddr are adjacent in both structs. */
	__builtin_memcpy(ev->saddr, flow->saddr, 32);
	ev->ts_ns = bpf_ktime_get_ns();
	ev->ifindex = skb->ifindex;
	ev->direction = dir;
	ev->family = st->family;
	ev->protocol = IPPROTO_UDP;
	ev->encoding = span->encoding;
	ev->sport = st->sport;
	ev->dport = st->dport;
	ev->payload_off = span->off;
	ev->payload_len = span->len;
	ev->captured_len = cap;
	ev->flags = flags;
	ev->seq = 0;
	ev->cgroup_id = sender_cgroup(skb, dir);
	s->count[AEV_STAT_AUDIO]++;
	/* Once per crossing: while the consumer catches up, more wake-ups
	 * would only cost. */
	avail = bpf_ringbuf_query(&events, BPF_RB_AVAIL_DATA);
	wakeup = avail < wakeup_bytes && avail + AEV_HEADER_SIZE + cap >= wakeup_bytes ?
			 BPF_RB_FORCE_WAKEUP :
			 BPF_RB_NO_WAKEUP;
	if (bpf_skb_load_bytes(skb, span->off, ev->data, cap) ||
	    bpf_ringbuf_output(&events, ev, AEV_HEADER_SIZE + cap, wakeup))
		s->count[AEV_STAT_LOST]++;
	else
		s->count[AEV_STAT_EVENTS]++;
}

/* Submits the first cap bytes at off in ev (header filled), counted. */
static __always_inline void submit_event(struct __sk_buff *skb, struct audio_event *ev, __u32 off,
					 __u64 cap, struct aev_stats *s)
{
	__u64 avail, wakeup;

	barrier_var(cap);
	if (cap < 1 || cap > AEV_MAX_CAPTURE) {
		s->count[AEV_STAT_MALFORMED]++;
		return;
	}
	s->count[AEV_STAT_AUDIO]++;
	avail = bpf_ringbuf_query(&events, BPF_RB_AVAIL_DATA);
	wakeup = avail < wakeup_bytes && avail + AEV_HEADER_SIZE + cap >= wakeup_bytes ?
			 BPF_RB_FORCE_WAKEUP :
			 BPF_RB_NO_WAKEUP;
	if (bpf_skb_load_bytes(skb, off, ev->data, cap) ||
	    bpf_ringbuf_output(&events, ev, AEV_HEADER_SIZE + cap, wakeup))
		s->count[AEV_STAT_LOST]++;
	else
		s->count[AEV_STAT_EVENTS]++;
}

/* What each chunk of a TCP take needs; on the stack, read by the bpf_loop
 * callback. */
struct chunk_ctx {
	struct __sk_buff *skb;
	struct audio_event *ev;
	struct aev_stats *s;
	__u32 off;
	__u32 len;
	__u32 seq;
	__u16 flags; /* of the whole take: START/GAP go on the first chunk, END on the last */
	__u16 vlan;  /* AEV_F_VLAN or 0, on every chunk */
};

/* Chunk i of a take: AEV_MAX_CAPTURE bytes at most, its own event. */
static long emit_chunk(__u32 i, void *arg)
{
	struct chunk_ctx *c = arg;
	struct audio_event *ev = c->ev;
	__u32 done = i * AEV_MAX_CAPTURE;
	__u32 off = c->off + done;
	__u64 cap;
	__u16 flags = c->vlan;

	if (i >= AEV_MAX_CHUNKS || done >= c->len)
		return 1;
	cap = c->len - done;
	if (cap > AEV_MAX_CAPTURE)
		cap = AEV_MAX_CAPTURE;
	if (i == 0)
		flags |= c->flags & (AEV_F_STREAM_START | AEV_F_GAP);
	else
		flags |= AEV_F_CHUNK;
	if (done + cap == c->len)
		flags |= c->flags & AEV_F_STREAM_END;
	ev->ts_ns = bpf_ktime_get_ns();
	ev->seq = c->seq + done;
	/* An offset past 64 KB (the tail of a super-packet) saturates: seq is
	 * what places the bytes. */
	ev->payload_off = off > 0xffff ? 0xffff : off;
	ev->payload_len = cap;
	ev->captured_len = cap;
	ev->flags = flags;
	if (i)
		c->s->count[AEV_STAT_GSO_CHUNKS]++;
	submit_event(c->skb, ev, off, cap, c->s);
	return 0;
}

/* The new bytes of a TCP segment as events of up to AEV_MAX_CAPTURE bytes:
 * RAW_LE16 (user space decides what the stream carries), seq of data[0]. */
static __always_inline void emit_tcp(struct __sk_buff *skb, const struct parse_state *st,
				     const struct aev_flow_key *flow, const struct tcp_take *t,
				     __u8 dir, struct aev_stats *s)
{
	__u32 key = 0;
	struct audio_event *ev = bpf_map_lookup_elem(&scratch, &key);
	struct chunk_ctx c;

	if (!ev)
		return;
	__builtin_memcpy(ev->saddr, flow->saddr, 32);
	ev->ifindex = skb->ifindex;
	ev->direction = dir;
	ev->family = st->family;
	ev->protocol = IPPROTO_TCP;
	ev->encoding = AEV_ENC_RAW_LE16;
	ev->sport = st->sport;
	ev->dport = st->dport;
	ev->cgroup_id = sender_cgroup(skb, dir);
	c.skb = skb;
	c.ev = ev;
	c.s = s;
	c.off = t->off;
	c.len = t->len;
	c.seq = t->seq;
	c.flags = t->flags;
	c.vlan = ((st->flags & PS_F_VLAN) || skb->vlan_present) ? AEV_F_VLAN : 0;
	/* One chunk is the common case: no loop for it. */
	if (t->len <= AEV_MAX_CAPTURE)
		emit_chunk(0, &c);
	else
		bpf_loop((t->len + AEV_MAX_CAPTURE - 1) / AEV_MAX_CAPTURE, emit_chunk, &c, 0);
}

/*
 * A TCP segment on an audio port (handle() checked, before any TCP state is
 * read). Its own subprogram: inlined, it cost the UDP path registers and
 * time (measured: +25 ns per UDP event); the call is paid by TCP audio
 * segments only.
 */
static __noinline void handle_tcp(struct __sk_buff *skb, const struct parse_state *st,
				  __u8 dir, struct aev_stats *s)
{
	struct aev_tcp_key key;
	struct tcp_seg seg;
	struct tcp_take take;

	s->count[AEV_STAT_TCP_SEGMENTS]++;
	if (tcp_segment(skb, st, &seg)) {
		s->count[AEV_STAT_MALFORMED]++;
		return;
	}
	/* Pure ACKs (the receiving side of every stream): no state to read. */
	if (!seg.data_len && !(seg.flags & (TCP_F_SYN | TCP_F_FIN | TCP_F_RST)))
		return;
	if (load_flow(skb, st, &key.flow)) {
		s->count[AEV_STAT_MALFORMED]++;
		return;
	}
	key.ifindex = skb->ifindex;
	key.direction = dir;
	key._pad[0] = key._pad[1] = key._pad[2] = 0;
	tcp_track(skb, &key, &seg, &take, s);
	if (take.len)
		emit_tcp(skb, st, &key.flow, &take, dir, s);
}

static __always_inline int handle(struct __sk_buff *skb, __u8 dir)
{
	struct parse_state st = {};
	struct aev_flow_key flow;
	struct audio_span span;
	struct aev_stats *s;
	__u32 key = 0;
	int status;

	s = bpf_map_lookup_elem(&stats, &key);
	if (!s)
		return TC_ACT_UNSPEC;
	s->count[AEV_STAT_PACKETS]++;

	status = parse_headers(skb, &st);
	if (status == PARSE_NEED_PULL) {
		status = parse_pulled(skb, &st);
		if (status == PARSE_NEED_PULL)
			status = PARSE_MALFORMED;
	}
	switch (status) {
	case PARSE_L4:
		break;
	case PARSE_MALFORMED:
		s->count[AEV_STAT_MALFORMED]++;
		return TC_ACT_UNSPEC;
	case PARSE_FRAGMENT:
		s->count[AEV_STAT_FRAGMENTS]++;
		return TC_ACT_UNSPEC;
	default:
		return TC_ACT_UNSPEC;
	}
	if (st.protocol == IPPROTO_UDP)
		s->count[AEV_STAT_UDP]++;
	/* AUDIO_PORTS: UDP and TCP alike. */
	if (!is_audio_port(st.sport, st.dport)) {
		s->count[AEV_STAT_PORT_MISS]++;
		return TC_ACT_UNSPEC;
	}
	if (st.protocol == IPPROTO_TCP) {
		handle_tcp(skb, &st, dir, s);
		return TC_ACT_UNSPEC;
	}

	if (load_flow(skb, &st, &flow)) {
		s->count[AEV_STAT_MALFORMED]++;
		return TC_ACT_UNSPEC;
	}
	status = audio_span(skb, st.l4_off + sizeof(struct udphdr),
			    st.l3_end - st.l4_off - sizeof(struct udphdr),
			    !(st.flags & PS_F_FIRST_FRAG), &flow, &span);
	if (status == SPAN_AUDIO)
		emit_event(skb, &st, &flow, &span, dir, s);
	else if (status == SPAN_NOT_AUDIO)
		s->count[AEV_STAT_NOT_AUDIO]++;
	else
		s->count[AEV_STAT_MALFORMED]++;
	return TC_ACT_UNSPEC;
}

SEC("tc")
int tc_ingress(struct __sk_buff *skb)
{
	return handle(skb, AEV_DIR_INGRESS);
}

SEC("tc")
int tc_egress(struct __sk_buff *skb)
{
	return handle(skb, AEV_DIR_EGRESS);
}

/* Benchmark baseline: the cost of running any TC program at all. */
SEC("tc")
int tc_empty(struct __sk_buff *skb)
{
	return TC_ACT_UNSPEC;
}
