/**
 * TypeScript mirror of bpf/audio_event.h: the one place user space knows
 * the byte layout of kernel events and addon signature records.
 * test/abi.test.ts compiles the header and checks every size and offset.
 */

export const AEV_MAX_CAPTURE = 1984;
export const AEV_HEADER_SIZE = 72;
export const PORT_MAP_WORDS = 1024;

export const Direction = { Ingress: 0, Egress: 1 } as const;
export type Direction = (typeof Direction)[keyof typeof Direction];

export const Encoding = {
  RawLe16: 0,
  Pcmu: 1,
  Pcma: 2,
  L16Be: 3,
  Opaque: 4,
} as const;
export type Encoding = (typeof Encoding)[keyof typeof Encoding];

export const EventFlag = {
  Rtp: 1,
  Truncated: 2,
  Vlan: 4,
  StreamStart: 8,
  Gap: 16,
  StreamEnd: 32,
  Chunk: 64,
} as const;
export const AEV_MAX_CHUNKS = 34;

/** Byte offsets in struct audio_event. */
export const AudioEventLayout = {
  tsNs: 0,
  ifindex: 8,
  direction: 12,
  family: 13,
  protocol: 14,
  encoding: 15,
  saddr: 16,
  daddr: 32,
  sport: 48,
  dport: 50,
  payloadOff: 52,
  payloadLen: 54,
  capturedLen: 56,
  flags: 58,
  seq: 60,
  /** Egress: cgroup v2 ID of the sending socket; 0 on ingress or without a socket. */
  cgroupId: 64,
  data: 72,
  size: AEV_HEADER_SIZE + AEV_MAX_CAPTURE,
} as const;

/** Indices of the classifier's per-CPU statistics array (enum aev_stat). */
export const KernelStat = {
  Packets: 0,
  Udp: 1,
  PortMiss: 2,
  Audio: 3,
  Events: 4,
  Lost: 5,
  Truncated: 6,
  Malformed: 7,
  Fragments: 8,
  NotAudio: 9,
  TcpSegments: 10,
  TcpRetransBytes: 11,
  TcpOutOfOrder: 12,
  TcpResync: 13,
  TcpFlowsExpired: 14,
  EncryptedFlows: 15,
  EncryptedSegments: 16,
  GsoChunks: 17,
  GsoTruncated: 18,
  BulkFlows: 19,
  BulkSegments: 20,
} as const;
export const KERNEL_STAT_COUNT = 21;

/**
 * The kernel's per-flow RTP state (map "rtp_flows", docs/signatures.md "What counts as RTP"):
 * struct aev_flow_key and struct aev_rtp_flow. Only the kernel reads and writes them; the layouts
 * are here so a tool (or a test) can read the map.
 */
export const FlowKeyLayout = {
  saddr: 0,
  daddr: 16,
  sport: 32,
  dport: 34,
  family: 36,
  protocol: 37,
  size: 40,
} as const;

export const RtpFlowLayout = { ssrc: 0, id: 4, state: 12, size: 16 } as const;

/** enum aev_rtp_state: the verdict given to the flow's last RTP-looking payload. */
export const RtpFlowState = { None: 0, Raw: 1, Rtp: 2 } as const;
export type RtpFlowState = (typeof RtpFlowState)[keyof typeof RtpFlowState];

/**
 * The kernel's per observation point TCP stream state (map "tcp_flows", docs/tcp-streams.md):
 * struct aev_tcp_key (the flow key, then where it was seen) and struct aev_tcp_flow.
 */
export const TcpKeyLayout = { flow: 0, ifindex: 40, direction: 44, size: 48 } as const;

export const TcpFlowLayout = {
  lastSeenNs: 0,
  nextSeq: 8,
  flags: 12,
  windowNs: 16,
  windowBytes: 24,
  size: 32,
} as const;
/** AEV_BULK_BYTES_PER_SEC: a TCP stream faster than this is bulk, not audio. */
export const AEV_BULK_BYTES_PER_SEC = 4 * 1024 * 1024;

/** enum aev_tcp_state_flags. */
export const TcpStateFlag = { Encrypted: 1, StartPending: 2, Bulk: 4, Ended: 8 } as const;

/** Byte offsets in struct sig_record (addon -> JavaScript batches). */
export const SigRecordLayout = {
  tsNs: 0,
  sigLo: 8,
  sigHi: 12,
  saddr: 16,
  daddr: 32,
  sport: 48,
  dport: 50,
  ifindex: 52,
  direction: 56,
  family: 57,
  protocol: 58,
  encoding: 59,
  /** u64: the cgroup ID of the event that completed the window (0: none). */
  cgroupId: 64,
  size: 72,
} as const;
export const SIG_RECORD_SIZE = SigRecordLayout.size;
