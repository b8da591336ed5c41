/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * The kernel/user ABI of the audio classifier: the one definition of the
 * event record, the config and statistics map layouts. Mirrored in
 * TypeScript by src/abi.ts only; test/abi.test.ts checks both agree.
 * Fixed-width fields and explicit padding: this struct crosses the
 * ring buffer byte for byte.
 */
#ifndef AUDIO_EVENT_H
#define AUDIO_EVENT_H

/* Largest audio payload copied into one event. Longer payloads (jumbo
 * frames, UDP GSO) are truncated to this and flagged AEV_F_TRUNCATED. */
#define AEV_MAX_CAPTURE 1984

/* Bits in the ports map: one bit per port, 65536 bits. One map for UDP and
 * TCP: AUDIO_PORTS names the ports of both. */
#define PORT_MAP_WORDS 1024 /* __u64 words */

enum aev_direction {
	AEV_DIR_INGRESS = 0,
	AEV_DIR_EGRESS = 1,
};

/* How the audio bytes are encoded, decided by the classifier from the RTP
 * header (or its absence). The signature step decodes samples by it. */
enum aev_encoding {
	AEV_ENC_RAW_LE16 = 0, /* raw UDP: 16-bit little-endian PCM */
	AEV_ENC_PCMU = 1,     /* RTP payload type 0 */
	AEV_ENC_PCMA = 2,     /* RTP payload type 8 */
	AEV_ENC_L16_BE = 3,   /* RTP payload types 10/11, network order */
	AEV_ENC_OPAQUE = 4,   /* other RTP audio payloads: bytes only */
};

enum aev_flags {
	AEV_F_RTP = 1 << 0,       /* an RTP header was recognised and skipped */
	AEV_F_TRUNCATED = 1 << 1, /* payload longer than AEV_MAX_CAPTURE */
	AEV_F_VLAN = 1 << 2,      /* at least one 802.1Q/802.1ad tag */
	/* TCP (docs/tcp-streams.md) */
	AEV_F_STREAM_START = 1 << 3, /* first bytes of a (re)started stream */
	AEV_F_GAP = 1 << 4,          /* bytes are missing before data[0] */
	AEV_F_STREAM_END = 1 << 5,   /* FIN or RST: the stream ends here */
	AEV_F_CHUNK = 1 << 6,        /* continues the previous event's packet */
};

/* At most this many events per packet (GSO/GRO super-packets up to 64 KB). */
#define AEV_MAX_CHUNKS 34

struct audio_event {
	__u64 ts_ns;        /* bpf_ktime_get_ns() (CLOCK_MONOTONIC) */
	__u32 ifindex;      /* interface the packet was seen on */
	__u8 direction;     /* enum aev_direction */
	__u8 family;        /* 4 or 6 */
	__u8 protocol;      /* IPPROTO_UDP (17) or IPPROTO_TCP (6) */
	__u8 encoding;      /* enum aev_encoding */
	__u8 saddr[16];     /* IPv4 in the first 4 bytes, rest zero */
	__u8 daddr[16];
	__u16 sport;        /* host byte order */
	__u16 dport;
	__u16 payload_off;  /* offset of the audio bytes from the L2 header */
	__u16 payload_len;  /* audio bytes in the packet */
	__u16 captured_len; /* audio bytes copied into data[] */
	__u16 flags;        /* enum aev_flags */
	__u32 seq;          /* TCP: sequence number of data[0]; UDP: 0 */
	/* Egress: cgroup v2 ID of the sending socket (bpf_skb_cgroup_id), the
	 * key of hostNetwork attribution (docs/kubernetes.md). 0 on ingress, and
	 * on egress when the skb has no socket (forwarded, or it crossed a veth). */
	__u64 cgroup_id;
	__u8 data[AEV_MAX_CAPTURE];
};

#define AEV_HEADER_SIZE 72 /* offsetof(struct audio_event, data) */

/* Indices of the per-CPU statistics array. */
enum aev_stat {
	AEV_STAT_PACKETS = 0,      /* packets the classifier ran on */
	AEV_STAT_UDP = 1,          /* parsed UDP packets */
	AEV_STAT_PORT_MISS = 2,    /* UDP packets and TCP segments on no audio port */
	AEV_STAT_AUDIO = 3,        /* events attempted (audio packets; TCP: chunks) */
	AEV_STAT_EVENTS = 4,       /* events submitted to the ring buffer */
	AEV_STAT_LOST = 5,         /* events dropped: ring buffer full */
	AEV_STAT_TRUNCATED = 6,    /* events whose payload was truncated */
	AEV_STAT_MALFORMED = 7,    /* packets with unparseable headers (UDP, TCP) */
	AEV_STAT_FRAGMENTS = 8,    /* non-first IP fragments passed (and TCP in a first one) */
	AEV_STAT_NOT_AUDIO = 9,    /* RTP control, comfort noise, empty */
	AEV_STAT_TCP_SEGMENTS = 10,      /* TCP segments on audio ports */
	AEV_STAT_TCP_RETRANS_BYTES = 11, /* already-seen bytes dropped */
	AEV_STAT_TCP_OUT_OF_ORDER = 12,  /* segments starting past a hole */
	AEV_STAT_TCP_RESYNC = 13,        /* streams restarted after a hole */
	AEV_STAT_TCP_FLOWS_EXPIRED = 14, /* states reset after FLOW_TIMEOUT_MS */
	AEV_STAT_ENCRYPTED_FLOWS = 15,   /* streams marked TLS/SSH */
	AEV_STAT_ENCRYPTED_SEGMENTS = 16,/* segments skipped as encrypted */
	AEV_STAT_GSO_CHUNKS = 17,        /* extra events from super-packets */
	AEV_STAT_GSO_TRUNCATED = 18,     /* super-packets beyond AEV_MAX_CHUNKS */
	AEV_STAT_BULK_FLOWS = 19,        /* streams marked bulk (faster than audio) */
	AEV_STAT_BULK_SEGMENTS = 20,     /* segments of bulk streams skipped */
	AEV_STAT_MAX = 21,
};

/* Single-entry array "config", written before attach. */
struct aev_config {
	__u32 all_ports; /* 1: every UDP port is an audio port */
	__u32 _pad;
};

/*
 * Per-flow state of RTP recognition: the classifier's LRU hash map
 * "rtp_flows", MAX_FLOWS entries (set by the loader). A payload is RTP
 * only when its flow says so (docs/signatures.md, "What counts as RTP").
 * Keyed by the flow alone, not by where it was seen: every interface
 * that sees one packet must reach the same verdict on it.
 */
struct aev_flow_key {
	__u8 saddr[16];	/* as in struct audio_event */
	__u8 daddr[16];
	__u16 sport;	/* host byte order */
	__u16 dport;
	__u8 family;
	__u8 protocol;
	__u16 _pad;	/* zero: hashed with the rest */
};

enum aev_rtp_state {
	AEV_RTP_NONE = 0, /* the flow's first payload did not look like RTP */
	AEV_RTP_RAW = 1,  /* its last RTP-looking payload was taken as raw */
	AEV_RTP_YES = 2,  /* ... was taken as RTP */
};

struct aev_rtp_flow {
	__u32 ssrc;  /* SSRC of the flow's last RTP-looking payload (RTCP: the
		      * sender's, bytes 4..7), as on the wire */
	__u32 id[2]; /* the rest of that payload's first 12 bytes: a second
		      * observation of the same packet has the same ones */
	__u8 state;  /* enum aev_rtp_state: the verdict given to it */
	__u8 _pad[3];
};

/*
 * Per observation point TCP state: LRU hash map "tcp_flows", MAX_FLOWS
 * entries. Keyed by flow AND observation point: a segment crosses two
 * interfaces, and each must see the whole stream once.
 */
struct aev_tcp_key {
	struct aev_flow_key flow;
	__u32 ifindex;
	__u8 direction;
	__u8 _pad[3]; /* zero */
};

enum aev_tcp_state_flags {
	AEV_TCP_ENCRYPTED = 1 << 0,     /* TLS or SSH: skipped early */
	AEV_TCP_START_PENDING = 1 << 1, /* no data yet (SYN only): the next
					 * event carries AEV_F_STREAM_START */
	AEV_TCP_BULK = 1 << 2, /* faster than any audio: skipped early */
	AEV_TCP_ENDED = 1 << 3, /* FIN or RST seen: kept (not deleted) so that
				 * retransmissions of the end are dropped, not
				 * taken again as a new stream */
};

/* A TCP stream that carries more new bytes than this within one second is
 * no audio stream (48 kHz, 8 channels, 24 bits is 1.15 MB/s): a bulk
 * transfer that happens to use an audio port (or AUDIO_PORTS=all). It is
 * marked once and its later segments leave before any payload is read. */
#define AEV_BULK_BYTES_PER_SEC (4U << 20)

struct aev_tcp_flow {
	__u64 last_seen_ns; /* for FLOW_TIMEOUT_MS: bpf_ktime_get_coarse_ns() */
	__u32 next_seq;     /* next expected sequence number */
	__u32 flags;        /* enum aev_tcp_state_flags */
	__u64 window_ns;    /* start of the current one-second rate window */
	__u32 window_bytes; /* new bytes taken in that window */
	__u32 _pad;
};

/*
 * One signature, as the addon hands it to JavaScript: packed records in
 * one buffer per batch. Not a kernel structure, but it carries the same
 * flow fields, so it lives beside the event it is derived from.
 */
struct sig_record {
	__u64 ts_ns;       /* time of the packet that completed the window */
	__u32 sig_lo;      /* 64-bit signature, low half */
	__u32 sig_hi;      /* high half */
	__u8 saddr[16];
	__u8 daddr[16];
	__u16 sport;
	__u16 dport;
	__u32 ifindex;
	__u8 direction;
	__u8 family;
	__u8 protocol;
	__u8 encoding;     /* encoding of the packet holding the anchor byte */
	__u32 _pad;
	__u64 cgroup_id;   /* of the event that completed the window (0: none) */
};

#define SIG_RECORD_SIZE 72

#endif /* AUDIO_EVENT_H */
