/**
 * A TypeScript reference of what the TC classifier (bpf/audio_tc.bpf.c, parse.bpf.h, rtp.bpf.h,
 * tcp.bpf.h) may do with one packet, for the fuzzer (test/fuzz-classifier.test.ts):
 *
 *   classifyPacket(frame, config): Reference          'no event' with its reason and exact counters,
 *                                                     or the events (and counters) it may yield
 *   checkObservation(frame, reference, observed): string[]   what the kernel did that the
 *                                                     reference does not allow (empty: all allowed)
 *
 * Written from the documented rules (the headers' comments, docs/signatures.md,
 * docs/tcp-streams.md), not transcribed from the C: a reference the kernel is checked against.
 * Frames are taken as BPF_PROG_TEST_RUN builds them: one linear skb, so "beyond the linear area"
 * and "truncated" are the same thing, and no VLAN tag was stripped into the skb.
 *
 * Stateless parts are exact. The stateful ones are one-sided: the rule enforced is "the kernel
 * never yields an event the reference would not allow", and every event's bytes are the frame's
 * bytes at an allowed offset.
 *  - UDP on an audio port: an RTP-looking payload is either read as RTP (the header's own checks
 *    decide audio / not audio / malformed) or taken raw, whole: which one depends on the flow's
 *    SSRC history (map rtp_flows). Both are allowed here; the fuzzer narrows to one with
 *    RtpFlowRule (test/support/packets.ts) when it knows the flow's whole history.
 *  - TCP on an audio port: the events carry a suffix of the segment's payload (the prefix may
 *    have been seen already: map tcp_flows), cut in AEV_MAX_CAPTURE chunks, or nothing at all
 *    (retransmission, TLS/SSH or bulk stream). STREAM_START and GAP may be on the first chunk,
 *    never GAP after a trimmed prefix, never START on bytes that open like TLS or SSH.
 */
import {
  AEV_HEADER_SIZE,
  AEV_MAX_CAPTURE,
  AEV_MAX_CHUNKS,
  Direction,
  Encoding,
  EventFlag,
  KERNEL_STAT_COUNT,
  KernelStat,
} from '../../src/abi.js';
import type { AudioEventRecord } from './audio-event.js';

/** 802.1Q/802.1ad tags parsed before giving up (parse.bpf.h MAX_VLAN_TAGS). */
export const MAX_VLAN_TAGS = 2;
/** IPv6 extension headers walked before giving up (parse.bpf.h MAX_IPV6_EXT_HDRS). */
export const MAX_IPV6_EXT_HDRS = 6;
/** Most bytes one TCP segment yields (tcp.bpf.h TCP_MAX_TAKE). */
export const TCP_MAX_TAKE = AEV_MAX_CHUNKS * AEV_MAX_CAPTURE;
const TLS_MAX_RECORD = 16384 + 2048;
const ETH_HLEN = 14;
const ETH_P_IP = 0x0800;
const ETH_P_IPV6 = 0x86dd;
const VLAN_TPIDS: ReadonlySet<number> = new Set([0x8100, 0x88a8]);
const IPPROTO_TCP = 6;
const IPPROTO_UDP = 17;
const IPV6_HOPOPTS = 0;
const IPV6_ROUTING = 43;
const IPV6_FRAGMENT = 44;
const IPV6_DSTOPTS = 60;
const IPV6_WALKED: ReadonlySet<number> = new Set([IPV6_HOPOPTS, IPV6_ROUTING, IPV6_DSTOPTS]);
const TCP_FIN = 0x01;
const TCP_SYN = 0x02;
const TCP_RST = 0x04;

export type StatName = keyof typeof KernelStat;
/** A counter delta, sparse: absent names are zero. */
export type Counters = Partial<Record<StatName, number>>;

export interface ModelConfig {
  /** AUDIO_PORTS: UDP and TCP alike. */
  isAudioPort: (port: number) => boolean;
}

export type NoEventReason =
  | 'not-ip' // neither IPv4 nor IPv6 after at most MAX_VLAN_TAGS tags
  | 'not-udp-tcp' // IP, another transport (or an IPv6 header the walk does not know)
  | 'malformed' // inconsistent or truncated headers
  | 'fragment' // non-first IP fragment (or TCP in a first one)
  | 'port-miss'
  | 'empty' // UDP on an audio port with no payload
  | 'tcp-no-data'; // a pure ACK on an audio port: no state is read

/** The flow fields every event of the packet carries. */
export interface Flow {
  family: 4 | 6;
  protocol: typeof IPPROTO_TCP | typeof IPPROTO_UDP;
  saddr: Uint8Array; // 16 bytes, IPv4 in the first 4
  daddr: Uint8Array;
  sport: number;
  dport: number;
}

/** One event exactly as the kernel must emit it (UDP). */
export interface EventSpec {
  payloadOff: number;
  payloadLen: number;
  capturedLen: number;
  encoding: number;
  flags: number;
}

/** One verdict the classifier may give a UDP payload on an audio port. */
export interface UdpAlternative {
  kind: 'rtp' | 'raw' | 'not-audio' | 'malformed';
  event?: EventSpec;
  counters: Counters; // exact; an event's Events may be Lost instead (ring buffer full)
}

/** The TCP fields the stream tracker works from. */
export interface TcpSegment {
  seq: number; // of the first payload byte, after the SYN's one (u32)
  dataOff: number; // from the L2 header
  dataLen: number;
  end: boolean; // FIN or RST
}

export type Reference =
  | { kind: 'none'; reason: NoEventReason; detail: string; counters: Counters }
  | {
      kind: 'udp';
      flow: Flow;
      vlan: boolean;
      payloadOff: number;
      payloadLen: number;
      /** First IP fragment: the payload continues elsewhere, RTP padding is not trimmed. */
      firstFragment: boolean;
      alternatives: UdpAlternative[];
    }
  | { kind: 'tcp'; flow: Flow; vlan: boolean; segment: TcpSegment };

export interface Observation {
  direction: Direction;
  events: readonly AudioEventRecord[];
  /** Kernel counter deltas of this one run, indexed by KernelStat. */
  delta: readonly number[];
}

// ---------------------------------------------------------------------------------------------
// The verdict on one frame.

function u16(p: Uint8Array, at: number): number {
  return (p[at] << 8) | p[at + 1];
}

function u32(p: Uint8Array, at: number): number {
  return ((p[at] << 24) | (p[at + 1] << 16) | (p[at + 2] << 8) | p[at + 3]) >>> 0;
}

function none(reason: NoEventReason, detail: string, extra: Counters = {}): Reference {
  const counters: Counters = { Packets: 1, ...extra };
  if (reason === 'malformed') counters.Malformed = 1;
  if (reason === 'fragment') counters.Fragments = 1;
  return { kind: 'none', reason, detail, counters };
}

/** Where the IP header starts and its ethertype, or why there is none. */
type L2 = { l3: number; ethertype: number; vlan: boolean } | Reference;

function parseL2(p: Uint8Array): L2 {
  let ethertype = u16(p, 12);
  let at = ETH_HLEN;
  let vlan = false;
  for (let tags = 0; tags < MAX_VLAN_TAGS && VLAN_TPIDS.has(ethertype); tags++) {
    if (at + 4 > p.length) return none('malformed', `VLAN tag ${tags + 1} truncated`);
    ethertype = u16(p, at + 2);
    at += 4;
    vlan = true;
  }
  return { l3: at, ethertype, vlan };
}

/** The transport header's place and the IP packet's end, or why there is none. */
type L3 =
  | {
      family: 4 | 6;
      protocol: number;
      l4: number;
      l3End: number;
      firstFragment: boolean;
      saddr: Uint8Array;
      daddr: Uint8Array;
    }
  | Reference;

function addr(p: Uint8Array, at: number, len: 4 | 16): Uint8Array {
  const out = new Uint8Array(16);
  out.set(p.subarray(at, at + len));
  return out;
}

function parseIpv4(p: Uint8Array, l3: number): L3 {
  if (l3 + 20 > p.length) return none('malformed', 'IPv4 header truncated');
  const version = p[l3] >> 4;
  const ihl = p[l3] & 0x0f;
  if (version !== 4 || ihl < 5) return none('malformed', `IPv4 version ${version} IHL ${ihl}`);
  const frag = u16(p, l3 + 6);
  // A later fragment has no transport header, whatever the protocol.
  if (frag & 0x1fff) return none('fragment', `IPv4 fragment offset ${frag & 0x1fff}`);
  const protocol = p[l3 + 9];
  if (protocol !== IPPROTO_UDP && protocol !== IPPROTO_TCP) {
    return none('not-udp-tcp', `IPv4 protocol ${protocol}`);
  }
  const totLen = u16(p, l3 + 2);
  if (totLen < ihl * 4 + 8) return none('malformed', `IPv4 total length ${totLen}, IHL ${ihl}`);
  return {
    family: 4,
    protocol,
    l4: l3 + ihl * 4,
    l3End: l3 + totLen,
    firstFragment: (frag & 0x2000) !== 0,
    saddr: addr(p, l3 + 12, 4),
    daddr: addr(p, l3 + 16, 4),
  };
}

function parseIpv6(p: Uint8Array, l3: number): L3 {
  if (l3 + 40 > p.length) return none('malformed', 'IPv6 header truncated');
  if (p[l3] >> 4 !== 6) return none('malformed', `IPv6 version ${p[l3] >> 4}`);
  const payloadLen = u16(p, l3 + 4);
  let next = p[l3 + 6];
  let at = l3 + 40;
  let firstFragment = false;
  for (let walked = 0; walked < MAX_IPV6_EXT_HDRS; walked++) {
    if (IPV6_WALKED.has(next)) {
      if (at + 2 > p.length) return none('malformed', `IPv6 extension ${walked + 1} truncated`);
      next = p[at];
      at += (p[at + 1] + 1) * 8;
    } else if (next === IPV6_FRAGMENT) {
      if (at + 8 > p.length) return none('malformed', `IPv6 fragment header truncated`);
      const frag = u16(p, at + 2);
      if (frag & 0xfff8) return none('fragment', `IPv6 fragment offset ${frag >> 3}`);
      if (frag & 1) firstFragment = true;
      next = p[at];
      at += 8;
    } else {
      break;
    }
  }
  if (next !== IPPROTO_UDP && next !== IPPROTO_TCP) {
    if (IPV6_WALKED.has(next) || next === IPV6_FRAGMENT) {
      return none('malformed', `IPv6 chain deeper than ${MAX_IPV6_EXT_HDRS} extension headers`);
    }
    return none('not-udp-tcp', `IPv6 next header ${next}`);
  }
  // Payload length 0 (a jumbogram) leaves no room: malformed.
  if (at + 8 > l3 + 40 + payloadLen) {
    return none('malformed', `IPv6 payload length ${payloadLen} below its headers`);
  }
  return {
    family: 6,
    protocol: next,
    l4: at,
    l3End: l3 + 40 + payloadLen,
    firstFragment,
    saddr: addr(p, l3 + 8, 16),
    daddr: addr(p, l3 + 24, 16),
  };
}

/** RTP payload types with no samples: comfort noise, and RTCP read with the marker bit masked. */
function rtpEncoding(pt: number): number | undefined {
  if (pt === 0) return Encoding.Pcmu;
  if (pt === 8) return Encoding.Pcma;
  if (pt === 10 || pt === 11) return Encoding.L16Be;
  if (pt === 13 || pt === 19 || (pt >= 72 && pt <= 76)) return undefined;
  return Encoding.Opaque;
}

const UDP_BASE: Counters = { Packets: 1, Udp: 1 };

/** The payload read as RTP (RFC 3550 5.1): audio after header, CSRCs, extension, padding. */
function rtpAlternative(
  p: Uint8Array,
  off: number,
  len: number,
  trimPadding: boolean,
  vlan: boolean,
): UdpAlternative {
  const b0 = p[off];
  const notAudio: UdpAlternative = { kind: 'not-audio', counters: { ...UDP_BASE, NotAudio: 1 } };
  const malformed: UdpAlternative = { kind: 'malformed', counters: { ...UDP_BASE, Malformed: 1 } };
  const encoding = rtpEncoding(p[off + 1] & 0x7f);
  if (encoding === undefined) return notAudio;
  let hlen = 12 + (b0 & 0x0f) * 4;
  if (b0 & 0x10) {
    if (hlen + 4 > len) return malformed;
    hlen += 4 + u16(p, off + hlen + 2) * 4;
  }
  if (hlen > len) return malformed;
  let audio = len - hlen;
  if (b0 & 0x20 && trimPadding) {
    const pad = p[off + len - 1];
    if (pad === 0 || pad > audio) return malformed;
    audio -= pad;
  }
  if (audio === 0) return notAudio;
  return audioAlternative('rtp', off + hlen, audio, encoding, vlan);
}

function audioAlternative(
  kind: 'rtp' | 'raw',
  off: number,
  len: number,
  encoding: number,
  vlan: boolean,
): UdpAlternative {
  const truncated = len > AEV_MAX_CAPTURE;
  const flags =
    (kind === 'rtp' ? EventFlag.Rtp : 0) |
    (truncated ? EventFlag.Truncated : 0) |
    (vlan ? EventFlag.Vlan : 0);
  return {
    kind,
    event: {
      payloadOff: off,
      payloadLen: len,
      capturedLen: Math.min(len, AEV_MAX_CAPTURE),
      encoding,
      flags,
    },
    counters: { ...UDP_BASE, Audio: 1, Events: 1, ...(truncated ? { Truncated: 1 } : {}) },
  };
}

function udpReference(
  p: Uint8Array,
  ip: Exclude<L3, Reference>,
  vlan: boolean,
  cfg: ModelConfig,
): Reference {
  if (ip.l4 + 8 > p.length) return none('malformed', 'UDP header truncated');
  if (ip.l3End > p.length) {
    return none('malformed', `IP length ends at ${ip.l3End}, frame at ${p.length}`);
  }
  const udpLen = u16(p, ip.l4 + 4);
  const ipBytes = ip.l3End - ip.l4;
  // A first fragment holds the start of a datagram the UDP length covers in full.
  if (udpLen < 8 || (ip.firstFragment ? udpLen < ipBytes : udpLen !== ipBytes)) {
    return none('malformed', `UDP length ${udpLen}, IP carries ${ipBytes}`);
  }
  const sport = u16(p, ip.l4);
  const dport = u16(p, ip.l4 + 2);
  if (!cfg.isAudioPort(sport) && !cfg.isAudioPort(dport)) {
    return none('port-miss', `UDP ${sport} -> ${dport}`, { Udp: 1, PortMiss: 1 });
  }
  const off = ip.l4 + 8;
  const len = ip.l3End - off;
  if (len === 0) return none('empty', 'UDP without payload', { Udp: 1, NotAudio: 1 });
  const raw = audioAlternative('raw', off, len, Encoding.RawLe16, vlan);
  // Whether an RTP-looking payload is RTP is the flow's call (rtp_flows): both are allowed.
  const rtpLooking = len >= 12 && p[off] >> 6 === 2;
  const alternatives = rtpLooking
    ? [rtpAlternative(p, off, len, !ip.firstFragment, vlan), raw]
    : [raw];
  return {
    kind: 'udp',
    flow: {
      family: ip.family,
      protocol: IPPROTO_UDP,
      saddr: ip.saddr,
      daddr: ip.daddr,
      sport,
      dport,
    },
    vlan,
    payloadOff: off,
    payloadLen: len,
    firstFragment: ip.firstFragment,
    alternatives,
  };
}

function tcpReference(
  p: Uint8Array,
  ip: Exclude<L3, Reference>,
  vlan: boolean,
  cfg: ModelConfig,
): Reference {
  // Not a whole segment: its payload cannot be placed in the stream.
  if (ip.firstFragment) return none('fragment', 'TCP in a first IP fragment');
  if (ip.l4 + 20 > p.length) return none('malformed', 'TCP header truncated');
  if (ip.l3End > p.length) {
    return none('malformed', `IP length ends at ${ip.l3End}, frame at ${p.length}`);
  }
  const hlen = (p[ip.l4 + 12] >> 4) * 4;
  if (hlen < 20 || ip.l4 + hlen > ip.l3End) {
    return none('malformed', `TCP data offset ${hlen} bytes, IP carries ${ip.l3End - ip.l4}`);
  }
  const sport = u16(p, ip.l4);
  const dport = u16(p, ip.l4 + 2);
  if (!cfg.isAudioPort(sport) && !cfg.isAudioPort(dport)) {
    return none('port-miss', `TCP ${sport} -> ${dport}`, { PortMiss: 1 });
  }
  const flags = p[ip.l4 + 13];
  const dataOff = ip.l4 + hlen;
  const dataLen = ip.l3End - dataOff;
  if (dataLen === 0 && !(flags & (TCP_SYN | TCP_FIN | TCP_RST))) {
    return none('tcp-no-data', 'pure ACK', { TcpSegments: 1 });
  }
  const syn = flags & TCP_SYN ? 1 : 0;
  return {
    kind: 'tcp',
    flow: {
      family: ip.family,
      protocol: IPPROTO_TCP,
      saddr: ip.saddr,
      daddr: ip.daddr,
      sport,
      dport,
    },
    vlan,
    segment: {
      seq: (u32(p, ip.l4 + 4) + syn) >>> 0,
      dataOff,
      dataLen,
      end: (flags & (TCP_FIN | TCP_RST)) !== 0,
    },
  };
}

/** What the classifier may do with `frame` (at least an Ethernet header, all of it linear). */
export function classifyPacket(frame: Uint8Array, cfg: ModelConfig): Reference {
  if (frame.length < ETH_HLEN) throw new RangeError(`frame of ${frame.length} bytes`);
  const l2 = parseL2(frame);
  if ('kind' in l2) return l2;
  let ip: L3;
  if (l2.ethertype === ETH_P_IP) ip = parseIpv4(frame, l2.l3);
  else if (l2.ethertype === ETH_P_IPV6) ip = parseIpv6(frame, l2.l3);
  else return none('not-ip', `ethertype 0x${l2.ethertype.toString(16)}`);
  if ('kind' in ip) return ip;
  return ip.protocol === IPPROTO_TCP
    ? tcpReference(frame, ip, l2.vlan, cfg)
    : udpReference(frame, ip, l2.vlan, cfg);
}

/** A TLS record header or an SSH banner opening a stream (tcp.bpf.h encrypted_start). */
export function looksEncrypted(b: Uint8Array): boolean {
  if (b.length < 4) return false;
  if (b[0] === 0x53 && b[1] === 0x53 && b[2] === 0x48 && b[3] === 0x2d) return true; // "SSH-"
  if ((b[0] !== 0x16 && b[0] !== 0x17) || b[1] !== 0x03 || b[2] > 0x04 || b.length < 5) {
    return false;
  }
  const record = (b[3] << 8) | b[4];
  return record > 0 && record <= TLS_MAX_RECORD;
}

// ---------------------------------------------------------------------------------------------
// Checking what the kernel did against the reference.

function hex(b: Uint8Array): string {
  return Buffer.from(b).toString('hex');
}

function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && a.every((v, i) => v === b[i]);
}

/** Differences between a full delta and an expected sparse one, as text. */
export function counterDiff(delta: readonly number[], expected: Counters): string[] {
  const out: string[] = [];
  for (const [name, index] of Object.entries(KernelStat) as [StatName, number][]) {
    const want = expected[name] ?? 0;
    if (delta[index] !== want) out.push(`${name} ${delta[index]} (expected ${want})`);
  }
  return out;
}

/** A delta as a sparse record, for messages. */
export function sparse(delta: readonly number[]): Counters {
  const out: Counters = {};
  for (const [name, index] of Object.entries(KernelStat) as [StatName, number][]) {
    if (delta[index] !== 0) out[name] = delta[index];
  }
  return out;
}

function flowProblems(ev: AudioEventRecord, flow: Flow, direction: number, what: string): string[] {
  const out: string[] = [];
  const want: [string, number, number][] = [
    ['family', ev.family, flow.family],
    ['protocol', ev.protocol, flow.protocol],
    ['sport', ev.sport, flow.sport],
    ['dport', ev.dport, flow.dport],
    ['direction', ev.direction, direction],
  ];
  for (const [name, got, expected] of want) {
    if (got !== expected) out.push(`${what}: ${name} ${got}, expected ${expected}`);
  }
  if (!sameBytes(ev.saddr, flow.saddr)) out.push(`${what}: saddr ${hex(ev.saddr)}`);
  if (!sameBytes(ev.daddr, flow.daddr)) out.push(`${what}: daddr ${hex(ev.daddr)}`);
  if (ev.byteLength !== AEV_HEADER_SIZE + ev.capturedLen) {
    out.push(`${what}: record of ${ev.byteLength} bytes for ${ev.capturedLen} captured`);
  }
  return out;
}

/** The event's bytes are the frame's, at the offset it reports (placed by `at`, unsaturated). */
function bytesProblems(
  frame: Uint8Array,
  ev: AudioEventRecord,
  at: number,
  what: string,
): string[] {
  const expected = frame.subarray(at, at + ev.capturedLen);
  if (at + ev.capturedLen > frame.length) {
    return [`${what}: ${ev.capturedLen} bytes at ${at} run past the ${frame.length}-byte frame`];
  }
  return sameBytes(ev.data, expected) ? [] : [`${what}: data differs from the frame at ${at}`];
}

function checkUdp(
  frame: Uint8Array,
  ref: Extract<Reference, { kind: 'udp' }>,
  obs: Observation,
): string[] {
  const tried: string[] = [];
  for (const alt of ref.alternatives) {
    const problems: string[] = [];
    const expected = { ...alt.counters };
    // A full ring buffer loses the event, counted: the one outcome the kernel may add.
    const lost = obs.delta[KernelStat.Lost];
    if (alt.event && lost === 1 && obs.events.length === 0) {
      delete expected.Events;
      expected.Lost = 1;
    }
    problems.push(...counterDiff(obs.delta, expected));
    const wantEvents = alt.event && !expected.Lost ? 1 : 0;
    if (obs.events.length !== wantEvents) {
      problems.push(`${obs.events.length} events, expected ${wantEvents}`);
    } else if (alt.event && wantEvents) {
      const ev = obs.events[0];
      const e = alt.event;
      problems.push(...flowProblems(ev, ref.flow, obs.direction, 'event'));
      const fields: [string, number, number][] = [
        ['payloadOff', ev.payloadOff, e.payloadOff],
        ['payloadLen', ev.payloadLen, e.payloadLen],
        ['capturedLen', ev.capturedLen, e.capturedLen],
        ['encoding', ev.encoding, e.encoding],
        ['flags', ev.flags, e.flags],
        ['seq', ev.seq, 0],
      ];
      for (const [name, got, want] of fields) {
        if (got !== want) problems.push(`${name} ${got}, expected ${want}`);
      }
      problems.push(...bytesProblems(frame, ev, e.payloadOff, 'event'));
    }
    if (problems.length === 0) return [];
    tried.push(`as ${alt.kind}: ${problems.join('; ')}`);
  }
  return [`no allowed UDP verdict matches (${tried.join(' | ')})`];
}

/**
 * TCP, one-sided: each event is a chunk of a suffix of the payload; the chunks of one segment
 * follow each other; the counters agree with the events seen.
 */
function checkTcp(
  frame: Uint8Array,
  ref: Extract<Reference, { kind: 'tcp' }>,
  obs: Observation,
): string[] {
  const { segment: seg } = ref;
  const d = (name: StatName): number => obs.delta[KernelStat[name]];
  const out: string[] = [];
  // Exact whatever the state.
  const fixed: StatName[] = ['Udp', 'PortMiss', 'Malformed', 'Fragments', 'NotAudio', 'Truncated'];
  for (const name of fixed) if (d(name) !== 0) out.push(`${name} ${d(name)} on a TCP segment`);
  if (d('Packets') !== 1 || d('TcpSegments') !== 1) {
    out.push(`Packets ${d('Packets')} TcpSegments ${d('TcpSegments')}, expected 1 and 1`);
  }
  if (d('Events') + d('Lost') !== d('Audio')) out.push('Events + Lost != Audio');
  if (d('Events') !== obs.events.length)
    out.push(`Events ${d('Events')}, ${obs.events.length} seen`);
  if (d('GsoChunks') !== Math.max(0, d('Audio') - 1)) out.push(`GsoChunks ${d('GsoChunks')}`);
  // Only a segment beyond 64 KB (BIG TCP) has more new bytes than one packet's events carry.
  if (d('GsoTruncated') > (seg.dataLen > TCP_MAX_TAKE ? 1 : 0)) {
    out.push(`GsoTruncated ${d('GsoTruncated')}`);
  }
  if (d('TcpOutOfOrder') !== d('TcpResync') || d('TcpOutOfOrder') > 1) {
    out.push(`TcpOutOfOrder ${d('TcpOutOfOrder')} TcpResync ${d('TcpResync')}`);
  }
  if (d('TcpRetransBytes') > seg.dataLen) out.push(`TcpRetransBytes ${d('TcpRetransBytes')}`);
  for (const name of [
    'TcpFlowsExpired',
    'EncryptedFlows',
    'EncryptedSegments',
    'BulkFlows',
    'BulkSegments',
  ] as const) {
    if (d(name) > 1) out.push(`${name} ${d(name)}`);
  }
  const skipped = d('EncryptedSegments') + d('BulkSegments');
  if (skipped > 0 && d('Audio') > 0) out.push('a skipped (encrypted/bulk) segment gave events');
  if (d('EncryptedFlows') > d('EncryptedSegments')) out.push('EncryptedFlows without its segment');

  const first = obs.events[0];
  if (!first) return out;
  // k: the bytes of the payload already seen (trimmed), derived from the first event's seq.
  const k = (first.seq - seg.seq) >>> 0;
  const take = Math.min(seg.dataLen - k, TCP_MAX_TAKE);
  const chunks = Math.ceil(take / AEV_MAX_CAPTURE);
  if (k >= seg.dataLen) {
    out.push(`first event seq ${first.seq}: outside the payload [${seg.seq}, +${seg.dataLen})`);
    return out;
  }
  if (first.flags & EventFlag.Chunk) out.push('the first event of the segment has CHUNK');
  if (d('Audio') !== chunks) out.push(`Audio ${d('Audio')}, expected ${chunks} chunks`);
  if (d('Lost') === 0 && d('TcpRetransBytes') !== k) {
    out.push(`TcpRetransBytes ${d('TcpRetransBytes')}, ${k} bytes trimmed`);
  }
  if (((first.flags & EventFlag.Gap) !== 0) !== (d('TcpOutOfOrder') === 1)) {
    out.push(`GAP flag ${first.flags & EventFlag.Gap} vs TcpOutOfOrder ${d('TcpOutOfOrder')}`);
  }
  if (first.flags & EventFlag.Gap && k !== 0) out.push(`GAP after ${k} trimmed bytes`);
  if (
    first.flags & EventFlag.StreamStart &&
    looksEncrypted(frame.subarray(seg.dataOff + k, seg.dataOff + seg.dataLen))
  ) {
    out.push('STREAM_START on bytes that open like TLS or SSH (the stream should be skipped)');
  }
  obs.events.forEach((ev, i) => {
    const what = `event ${i}`;
    const at = k + i * AEV_MAX_CAPTURE;
    const cap = Math.min(AEV_MAX_CAPTURE, take - (at - k));
    out.push(...flowProblems(ev, ref.flow, obs.direction, what));
    const last = at + cap === k + take;
    let flags = (ref.vlan ? EventFlag.Vlan : 0) | (i > 0 ? EventFlag.Chunk : 0);
    if (last && seg.end) flags |= EventFlag.StreamEnd;
    if (i === 0) flags |= first.flags & (EventFlag.StreamStart | EventFlag.Gap);
    const fields: [string, number, number][] = [
      ['seq', ev.seq, (seg.seq + at) >>> 0],
      ['payloadOff', ev.payloadOff, Math.min(seg.dataOff + at, 0xffff)],
      ['payloadLen', ev.payloadLen, cap],
      ['capturedLen', ev.capturedLen, cap],
      ['encoding', ev.encoding, Encoding.RawLe16],
      ['flags', ev.flags, flags],
    ];
    for (const [name, got, want] of fields) {
      if (got !== want) out.push(`${what}: ${name} ${got}, expected ${want}`);
    }
    if (cap > 0) out.push(...bytesProblems(frame, ev, seg.dataOff + at, what));
    else out.push(`${what}: beyond the ${chunks} chunks of the take`);
  });
  return out;
}

/** What the kernel did that `ref` does not allow; empty when all of it is allowed. */
export function checkObservation(frame: Uint8Array, ref: Reference, obs: Observation): string[] {
  if (obs.delta.length !== KERNEL_STAT_COUNT) return [`delta of ${obs.delta.length} counters`];
  switch (ref.kind) {
    case 'none': {
      const out = counterDiff(obs.delta, ref.counters);
      if (obs.events.length) out.push(`${obs.events.length} events for a packet with none`);
      return out;
    }
    case 'udp':
      return checkUdp(frame, ref, obs);
    case 'tcp':
      return checkTcp(frame, ref, obs);
  }
}

/** One line about a reference, for failure messages. */
export function describeReference(ref: Reference): string {
  if (ref.kind === 'none') return `no event (${ref.reason}: ${ref.detail})`;
  const f = ref.flow;
  const flow = `IPv${f.family} ${f.protocol === IPPROTO_TCP ? 'TCP' : 'UDP'} ${f.sport} -> ${f.dport}`;
  if (ref.kind === 'udp') {
    const alts = ref.alternatives
      .map((a) => (a.event ? `${a.kind} @${a.event.payloadOff}+${a.event.payloadLen}` : a.kind))
      .join(' or ');
    return `${flow}, payload @${ref.payloadOff}+${ref.payloadLen}: ${alts}`;
  }
  const s = ref.segment;
  return `${flow}, seq ${s.seq}, payload @${s.dataOff}+${s.dataLen}${s.end ? ', FIN/RST' : ''}`;
}
