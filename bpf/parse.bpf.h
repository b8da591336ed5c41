/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * Header parsing for the audio classifier: Ethernet (+ up to two VLAN
 * tags), IPv4 (+ options) or IPv6 (+ extension headers), UDP or TCP
 * (+ options). One
 * function per layer, each bounds-checked against data_end with an early
 * return. Only reads: the packet is never modified.
 */
#ifndef PARSE_BPF_H
#define PARSE_BPF_H

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/udp.h>
#include <linux/tcp.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

/* Not in the uapi headers. */
#define IPV4_MF 0x2000
#define IPV4_OFFSET 0x1fff
#define IPV6_FRAG_OFFSET 0xfff8
#define IPV6_FRAG_MF 0x0001

#define MAX_VLAN_TAGS 2
/* Extension headers walked before giving up (hop-by-hop, routing,
 * destination options and fragment rarely come more than 2-3 deep). */
#define MAX_IPV6_EXT_HDRS 6

struct vlan_tag {
	__be16 tci;
	__be16 encap_proto;
};

struct ipv6_ext {
	__u8 nexthdr;
	__u8 hdrlen; /* 8-octet units, not counting the first 8 */
};

struct ipv6_frag {
	__u8 nexthdr;
	__u8 reserved;
	__be16 frag_off; /* offset in 8-octet units << 3 | M */
	__be32 identification;
};

enum parse_status {
	PARSE_L4 = 0,	     /* a whole UDP datagram (or first fragment) or TCP segment */
	PARSE_OTHER = 1,     /* not IP/UDP/TCP: nothing to count */
	PARSE_MALFORMED = 2, /* inconsistent or truncated headers */
	PARSE_FRAGMENT = 3,  /* non-first IP fragment: no UDP header here */
	PARSE_NEED_PULL = 4, /* headers beyond the linear area of the skb */
};

#define PS_F_VLAN (1 << 0)
#define PS_F_FIRST_FRAG (1 << 1) /* UDP datagram continues in later fragments */

/* Offsets from the start of the L2 header; stays on the stack. */
struct parse_state {
	__u32 l3_off;
	__u32 l4_off;  /* UDP header */
	__u32 l3_end;  /* end of the IP packet (tot_len / payload_len) */
	__u16 sport;   /* host order */
	__u16 dport;
	__u8 family;   /* 4 or 6 */
	__u8 flags;    /* PS_F_* */
	__u8 protocol; /* IPPROTO_UDP or IPPROTO_TCP */
	__u8 _pad;
};

/* The TCP fields the stream tracker needs, read only once the segment is
 * on an audio port (the port-miss path never fills it). */
struct tcp_seg {
	__u32 seq;	   /* host order: sequence number of the first byte */
	__u32 data_off;	   /* payload, from the L2 header */
	__u32 data_len;
	__u8 flags;	   /* TCP_F_* */
};

#define TCP_F_FIN 0x01
#define TCP_F_SYN 0x02
#define TCP_F_RST 0x04

/* Largest offset read directly: bounds the variable offsets for the verifier
 * (an IPv6 chain of six 2 KiB extension headers stays below it). */
#define DIRECT_OFF_MAX 0x3fff

/*
 * Copies len (a constant) bytes at off into to: straight from the linear
 * area when they are there, else through bpf_skb_load_bytes (paged data).
 * Helper calls cost as much as the whole header parse, so the common
 * case avoids them.
 */
static __always_inline int read_bytes(struct __sk_buff *skb, __u32 off, void *to, __u32 len)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;

	if (off <= DIRECT_OFF_MAX && data + off + len <= data_end) {
		__builtin_memcpy(to, data + off, len);
		return 0;
	}
	return bpf_skb_load_bytes(skb, off, to, len);
}

/* A header not inside [data, data_end) is either truncated or sits in the
 * paged part of a non-linear skb; only the second is worth a pull. */
static __always_inline int parse_short(struct __sk_buff *skb, __u32 needed)
{
	return skb->len >= needed ? PARSE_NEED_PULL : PARSE_MALFORMED;
}

/* Ethernet and 802.1Q/802.1ad tags. Returns the L3 ethertype (network
 * order) in *proto, or 0 with *status set. */
static __always_inline __u32 parse_eth(struct __sk_buff *skb, void *data, void *data_end,
				       struct parse_state *st, __be16 *proto, int *status)
{
	struct ethhdr *eth = data;
	__u32 off = sizeof(*eth);

	if ((void *)(eth + 1) > data_end) {
		*status = parse_short(skb, off);
		return 0;
	}
	*proto = eth->h_proto;
#pragma unroll
	for (int i = 0; i < MAX_VLAN_TAGS; i++) {
		struct vlan_tag *tag = data + off;

		if (*proto != bpf_htons(ETH_P_8021Q) && *proto != bpf_htons(ETH_P_8021AD))
			break;
		if ((void *)(tag + 1) > data_end) {
			*status = parse_short(skb, off + sizeof(*tag));
			return 0;
		}
		*proto = tag->encap_proto;
		off += sizeof(*tag);
		st->flags |= PS_F_VLAN;
	}
	*status = PARSE_L4;
	return off;
}

/* IPv4 with options: fills l4_off/l3_end for UDP. */
static __always_inline int parse_ipv4(struct __sk_buff *skb, void *data, void *data_end,
				      struct parse_state *st)
{
	struct iphdr *ip = data + st->l3_off;
	__u32 hlen, tot_len;
	__u16 frag;

	if ((void *)(ip + 1) > data_end)
		return parse_short(skb, st->l3_off + sizeof(*ip));
	if (ip->version != 4 || ip->ihl < 5)
		return PARSE_MALFORMED;
	frag = bpf_ntohs(ip->frag_off);
	/* Counted whatever the protocol: the transport header is not here. */
	if (frag & IPV4_OFFSET)
		return PARSE_FRAGMENT;
	if (ip->protocol != IPPROTO_UDP && ip->protocol != IPPROTO_TCP)
		return PARSE_OTHER;
	if (frag & IPV4_MF)
		st->flags |= PS_F_FIRST_FRAG;
	hlen = ip->ihl * 4;
	tot_len = bpf_ntohs(ip->tot_len);
	/* The shorter header: parse_tcp checks its own, longer one. */
	if (tot_len < hlen + sizeof(struct udphdr))
		return PARSE_MALFORMED;
	st->family = 4;
	st->protocol = ip->protocol;
	st->l4_off = st->l3_off + hlen;
	st->l3_end = st->l3_off + tot_len;
	return PARSE_L4;
}

/* IPv6 and its extension header chain, up to MAX_IPV6_EXT_HDRS deep. */
static __always_inline int parse_ipv6(struct __sk_buff *skb, void *data, void *data_end,
				      struct parse_state *st)
{
	struct ipv6hdr *ip6 = data + st->l3_off;
	__u32 off = st->l3_off + sizeof(*ip6);
	__u32 payload_len;
	__u8 nexthdr;

	if ((void *)(ip6 + 1) > data_end)
		return parse_short(skb, off);
	if (ip6->version != 6)
		return PARSE_MALFORMED;
	nexthdr = ip6->nexthdr;
	payload_len = bpf_ntohs(ip6->payload_len);

#pragma unroll
	for (int i = 0; i < MAX_IPV6_EXT_HDRS; i++) {
		if (nexthdr == IPPROTO_HOPOPTS || nexthdr == IPPROTO_ROUTING ||
		    nexthdr == IPPROTO_DSTOPTS) {
			struct ipv6_ext *ext = data + off;

			if ((void *)(ext + 1) > data_end)
				return parse_short(skb, off + sizeof(*ext));
			nexthdr = ext->nexthdr;
			off += (ext->hdrlen + 1) * 8;
		} else if (nexthdr == IPPROTO_FRAGMENT) {
			struct ipv6_frag *fh = data + off;
			__u16 frag;

			if ((void *)(fh + 1) > data_end)
				return parse_short(skb, off + sizeof(*fh));
			frag = bpf_ntohs(fh->frag_off);
			if (frag & IPV6_FRAG_OFFSET)
				return PARSE_FRAGMENT;
			if (frag & IPV6_FRAG_MF)
				st->flags |= PS_F_FIRST_FRAG;
			nexthdr = fh->nexthdr;
			off += sizeof(*fh);
		} else {
			break;
		}
	}
	if (nexthdr != IPPROTO_UDP && nexthdr != IPPROTO_TCP) {
		/* Still an extension header: deeper than we walk. */
		if (nexthdr == IPPROTO_HOPOPTS || nexthdr == IPPROTO_ROUTING ||
		    nexthdr == IPPROTO_DSTOPTS || nexthdr == IPPROTO_FRAGMENT)
			return PARSE_MALFORMED;
		return PARSE_OTHER;
	}
	/* payload_len 0 is a jumbogram (BIG TCP beyond 64 KB included): not
	 * parsed, so malformed. */
	if (off + sizeof(struct udphdr) > st->l3_off + sizeof(*ip6) + payload_len)
		return PARSE_MALFORMED;
	st->family = 6;
	st->protocol = nexthdr;
	st->l4_off = off;
	st->l3_end = st->l3_off + sizeof(*ip6) + payload_len;
	return PARSE_L4;
}

/* UDP header: its length must match the IP packet (or exceed the bytes of
 * a first fragment), and every byte it claims must be in the skb. */
static __always_inline int parse_udp(struct __sk_buff *skb, void *data, void *data_end,
				     struct parse_state *st)
{
	struct udphdr *udp;
	__u32 udp_len, ip_bytes;

	if (st->l4_off > DIRECT_OFF_MAX)
		return PARSE_MALFORMED;
	udp = data + st->l4_off;
	if ((void *)(udp + 1) > data_end)
		return parse_short(skb, st->l4_off + sizeof(*udp));
	if (st->l3_end > skb->len)
		return PARSE_MALFORMED;
	udp_len = bpf_ntohs(udp->len);
	ip_bytes = st->l3_end - st->l4_off;
	if (udp_len < sizeof(*udp))
		return PARSE_MALFORMED;
	if (st->flags & PS_F_FIRST_FRAG) {
		if (udp_len < ip_bytes)
			return PARSE_MALFORMED;
	} else if (udp_len != ip_bytes) {
		return PARSE_MALFORMED;
	}
	st->sport = bpf_ntohs(udp->source);
	st->dport = bpf_ntohs(udp->dest);
	return PARSE_L4;
}

/*
 * TCP header: data offset 5..15 words, all of it inside the IP packet,
 * the IP packet inside the skb. Only the ports are kept here: the rest is
 * read (tcp_segment) once the segment is known to be on an audio port.
 * A first IP fragment is not a whole segment: it is passed as a fragment.
 */
static __always_inline int parse_tcp(struct __sk_buff *skb, void *data, void *data_end,
				     struct parse_state *st)
{
	struct tcphdr *th;
	__u32 hlen;

	if (st->flags & PS_F_FIRST_FRAG)
		return PARSE_FRAGMENT;
	if (st->l4_off > DIRECT_OFF_MAX)
		return PARSE_MALFORMED;
	th = data + st->l4_off;
	if ((void *)(th + 1) > data_end)
		return parse_short(skb, st->l4_off + sizeof(*th));
	if (st->l3_end > skb->len)
		return PARSE_MALFORMED;
	hlen = th->doff * 4;
	if (hlen < sizeof(*th) || st->l4_off + hlen > st->l3_end)
		return PARSE_MALFORMED;
	st->sport = bpf_ntohs(th->source);
	st->dport = bpf_ntohs(th->dest);
	return PARSE_L4;
}

/* The rest of a TCP header parse_tcp accepted: still in the linear area. */
static __always_inline int tcp_segment(struct __sk_buff *skb, const struct parse_state *st,
				       struct tcp_seg *seg)
{
	struct tcphdr th;

	if (read_bytes(skb, st->l4_off, &th, sizeof(th)))
		return -1;
	seg->seq = bpf_ntohl(th.seq);
	seg->data_off = st->l4_off + th.doff * 4;
	seg->data_len = st->l3_end - seg->data_off;
	/* Byte 13: CWR ECE URG ACK PSH RST SYN FIN. */
	seg->flags = ((__u8 *)&th)[13] & (TCP_F_FIN | TCP_F_SYN | TCP_F_RST);
	return 0;
}

#endif /* PARSE_BPF_H */
