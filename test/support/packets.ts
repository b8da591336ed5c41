/**
 * Crafted packets for the classifier's tests and benchmarks: pure TypeScript, no sockets.
 *
 *   buildUdpPacket(opts): Uint8Array            the frame, from the Ethernet header
 *   buildUdpPacketLayout(opts): BuiltPacket     the frame plus where each layer and the audio start
 *   buildTcpPacket(opts): BuiltTcpPacket        a TCP segment (flags, seq, ack, options, payload)
 *   rtpHeader(opts): Uint8Array                 an RTP header (12 bytes + CSRCs + extension)
 *   rtcpPayload(opts): Uint8Array               an RTCP packet, as rtcp-mux puts it on the RTP port
 *   new RtpFlowRule().classify(udpPayload)      what the classifier makes of each payload of a flow
 *
 * Options cover what the classifier must parse: up to any number of VLAN tags (802.1Q/802.1ad),
 * IPv4 with options and fragment fields, IPv6 with an extension header chain (hop-by-hop, routing,
 * destination options, fragment), UDP, and an optional RTP header with CSRCs, an extension and
 * padding. Lengths and checksums are computed; `ipv4Ihl`, `ipTotalLength` and `udpLength` override
 * them to build malformed packets on purpose.
 */
import { isIPv4, isIPv6 } from 'node:net';
import { Encoding } from '../../src/abi.js';

export interface VlanTag {
  tpid?: 0x8100 | 0x88a8; // default 0x8100 (802.1Q); 0x88a8 is 802.1ad (QinQ outer tag)
  vid: number;
  pcp?: number;
}

export type Ipv6ExtType = 'hop' | 'routing' | 'dest' | 'fragment';

export interface Ipv6ExtHeader {
  type: Ipv6ExtType;
  /** Total bytes, a multiple of 8, at least 8 (fragment headers are always 8). */
  length?: number;
  /** Fragment header only: offset in 8-byte units, and the M (more fragments) flag. */
  fragmentOffset?: number;
  moreFragments?: boolean;
}

export interface RtpExtension {
  profile?: number; // 16-bit "defined by profile" field
  words: number[]; // 32-bit words after the extension header
}

export interface RtpOptions {
  version?: number; // default 2
  payloadType: number;
  marker?: boolean;
  seq?: number;
  timestamp?: number;
  ssrc?: number;
  csrcs?: number[]; // CC = csrcs.length (at most 15)
  ccOverride?: number; // CC field value regardless of csrcs (malformed packets)
  extension?: RtpExtension;
  /** Padding bytes appended after the payload (the last one holds the count); sets P. */
  padding?: number;
  /** Value written into the last padding byte instead of `padding` (malformed packets). */
  paddingCountOverride?: number;
}

export interface UdpPacketOptions {
  family?: 4 | 6; // default 4
  src?: string; // default 10.0.0.1 / fd00::1
  dst?: string; // default 10.0.0.2 / fd00::2
  srcMac?: Uint8Array;
  dstMac?: Uint8Array;
  vlans?: VlanTag[];
  sport?: number; // default 40000
  dport?: number; // default 5004
  ttl?: number;
  /** IPv4 options: raw bytes, padded with zeros (end of list) to a multiple of 4. */
  ipv4Options?: Uint8Array;
  ipv4Ihl?: number; // overrides the computed IHL
  /** IPv4 fragment fields: offset in 8-byte units, MF flag. */
  fragmentOffset?: number;
  moreFragments?: boolean;
  ipv6Ext?: Ipv6ExtHeader[];
  ipTotalLength?: number; // overrides IPv4 total length / IPv6 payload length
  udpLength?: number; // overrides the UDP length field
  rtp?: RtpOptions;
  payload?: Uint8Array; // audio bytes (after the RTP header if any); default empty
}

export interface BuiltPacket {
  bytes: Uint8Array;
  l3Offset: number;
  l4Offset: number;
  udpPayloadOffset: number;
  /** Where the audio bytes start and how many there are, as the classifier should report. */
  audioOffset: number;
  audioLength: number;
}

const ETH_P_IP = 0x0800;
const ETH_P_IPV6 = 0x86dd;
const IPPROTO_UDP = 17;
const IPPROTO_TCP = 6;
const EXT_PROTO: Readonly<Record<Ipv6ExtType, number>> = {
  hop: 0,
  routing: 43,
  dest: 60,
  fragment: 44,
};
const DEFAULT_SRC_MAC = Uint8Array.of(0x02, 0, 0, 0, 0, 0x01);
const DEFAULT_DST_MAC = Uint8Array.of(0x02, 0, 0, 0, 0, 0x02);

/** A byte sink with big-endian writers (network order). */
class Writer {
  private readonly parts: Uint8Array[] = [];
  length = 0;

  bytes(b: Uint8Array): this {
    this.parts.push(b);
    this.length += b.length;
    return this;
  }
  u8(v: number): this {
    return this.bytes(Uint8Array.of(v & 0xff));
  }
  u16(v: number): this {
    return this.bytes(Uint8Array.of((v >>> 8) & 0xff, v & 0xff));
  }
  u32(v: number): this {
    return this.bytes(
      Uint8Array.of((v >>> 24) & 0xff, (v >>> 16) & 0xff, (v >>> 8) & 0xff, v & 0xff),
    );
  }
  zeros(n: number): this {
    return this.bytes(new Uint8Array(n));
  }
  done(): Uint8Array {
    const out = new Uint8Array(this.length);
    let at = 0;
    for (const p of this.parts) {
      out.set(p, at);
      at += p.length;
    }
    return out;
  }
}

export function ipv4Bytes(addr: string): Uint8Array {
  if (!isIPv4(addr)) throw new Error(`not an IPv4 address: ${addr}`);
  return Uint8Array.from(addr.split('.').map(Number));
}

export function ipv6Bytes(addr: string): Uint8Array {
  if (!isIPv6(addr)) throw new Error(`not an IPv6 address: ${addr}`);
  const [head, tail] = addr.includes('::') ? addr.split('::') : [addr, undefined];
  const groups = (s: string | undefined): string[] => (s ? s.split(':') : []);
  const h = groups(head);
  const t = groups(tail);
  const all =
    tail === undefined ? h : [...h, ...Array<string>(8 - h.length - t.length).fill('0'), ...t];
  const out = new Uint8Array(16);
  all.forEach((g, i) => {
    const v = parseInt(g, 16);
    out[2 * i] = v >>> 8;
    out[2 * i + 1] = v & 0xff;
  });
  return out;
}

/** The Internet checksum (RFC 1071) over the concatenation of `parts`. */
function checksum(...parts: Uint8Array[]): number {
  let sum = 0;
  let odd = -1;
  for (const p of parts) {
    for (const b of p) {
      if (odd < 0) odd = b;
      else {
        sum += (odd << 8) | b;
        odd = -1;
      }
    }
  }
  if (odd >= 0) sum += odd << 8;
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16);
  return ~sum & 0xffff;
}

export function rtpHeader(o: RtpOptions): Uint8Array {
  const csrcs = o.csrcs ?? [];
  if (csrcs.length > 15) throw new Error('RTP: at most 15 CSRCs');
  const cc = o.ccOverride ?? csrcs.length;
  const w = new Writer()
    .u8(((o.version ?? 2) << 6) | (o.padding ? 0x20 : 0) | (o.extension ? 0x10 : 0) | (cc & 0x0f))
    .u8((o.marker ? 0x80 : 0) | (o.payloadType & 0x7f))
    .u16(o.seq ?? 1)
    .u32(o.timestamp ?? 160)
    .u32(o.ssrc ?? 0x11223344);
  for (const c of csrcs) w.u32(c);
  if (o.extension) {
    w.u16(o.extension.profile ?? 0xbede).u16(o.extension.words.length);
    for (const x of o.extension.words) w.u32(x);
  }
  return w.done();
}

function rtpPadding(o: RtpOptions): Uint8Array {
  if (!o.padding) return new Uint8Array(0);
  const pad = new Uint8Array(o.padding);
  pad[pad.length - 1] = o.paddingCountOverride ?? o.padding;
  return pad;
}

function ethernet(o: UdpPacketOptions, ethertype: number): Uint8Array {
  const w = new Writer().bytes(o.dstMac ?? DEFAULT_DST_MAC).bytes(o.srcMac ?? DEFAULT_SRC_MAC);
  for (const tag of o.vlans ?? []) {
    w.u16(tag.tpid ?? 0x8100).u16(((tag.pcp ?? 0) << 13) | (tag.vid & 0x0fff));
  }
  return w.u16(ethertype).done();
}

function ipv4Header(o: UdpPacketOptions, l4Length: number, protocol = IPPROTO_UDP): Uint8Array {
  const opts = o.ipv4Options ?? new Uint8Array(0);
  const optLen = Math.ceil(opts.length / 4) * 4;
  const hlen = 20 + optLen;
  const frag = ((o.moreFragments ? 1 : 0) << 13) | ((o.fragmentOffset ?? 0) & 0x1fff);
  const w = new Writer()
    .u8(0x40 | ((o.ipv4Ihl ?? hlen / 4) & 0x0f))
    .u8(0)
    .u16(o.ipTotalLength ?? hlen + l4Length)
    .u16(0x1234)
    .u16(frag)
    .u8(o.ttl ?? 64)
    .u8(protocol)
    .u16(0)
    .bytes(ipv4Bytes(o.src ?? '10.0.0.1'))
    .bytes(ipv4Bytes(o.dst ?? '10.0.0.2'))
    .bytes(opts)
    .zeros(optLen - opts.length);
  const h = w.done();
  const sum = checksum(h);
  h[10] = sum >>> 8;
  h[11] = sum & 0xff;
  return h;
}

function ipv6ExtChain(
  exts: readonly Ipv6ExtHeader[],
  protocol = IPPROTO_UDP,
): { bytes: Uint8Array; first: number } {
  const w = new Writer();
  exts.forEach((e, i) => {
    const next = i + 1 < exts.length ? EXT_PROTO[exts[i + 1].type] : protocol;
    if (e.type === 'fragment') {
      const off = ((e.fragmentOffset ?? 0) << 3) | (e.moreFragments ? 1 : 0);
      w.u8(next).u8(0).u16(off).u32(0xa17a17);
      return;
    }
    const len = e.length ?? 8;
    if (len < 8 || len % 8 !== 0) throw new Error(`IPv6 ${e.type} header: length ${len}`);
    w.u8(next).u8(len / 8 - 1);
    if (e.type === 'routing') {
      // Type 0 with no segments left: walked over, never acted on.
      w.u8(0)
        .u8(0)
        .zeros(len - 4);
    } else {
      // One PadN option filling the rest of the header.
      w.u8(1)
        .u8(len - 4)
        .zeros(len - 4);
    }
  });
  return { bytes: w.done(), first: exts.length ? EXT_PROTO[exts[0].type] : protocol };
}

export function buildUdpPacketLayout(o: UdpPacketOptions): BuiltPacket {
  const family = o.family ?? 4;
  const rtp = o.rtp ? rtpHeader(o.rtp) : new Uint8Array(0);
  const payload = o.payload ?? new Uint8Array(0);
  const padding = o.rtp ? rtpPadding(o.rtp) : new Uint8Array(0);
  const udpPayload = new Writer().bytes(rtp).bytes(payload).bytes(padding).done();
  const udpLen = 8 + udpPayload.length;
  const src = family === 4 ? ipv4Bytes(o.src ?? '10.0.0.1') : ipv6Bytes(o.src ?? 'fd00::1');
  const dst = family === 4 ? ipv4Bytes(o.dst ?? '10.0.0.2') : ipv6Bytes(o.dst ?? 'fd00::2');

  const udp = new Writer()
    .u16(o.sport ?? 40000)
    .u16(o.dport ?? 5004)
    .u16(o.udpLength ?? udpLen)
    .u16(0)
    .bytes(udpPayload)
    .done();
  let l3: Uint8Array;
  if (family === 4) {
    l3 = ipv4Header(o, udp.length);
  } else {
    const chain = ipv6ExtChain(o.ipv6Ext ?? []);
    const fixed = new Writer()
      .u32(0x60000000)
      .u16(o.ipTotalLength ?? chain.bytes.length + udp.length)
      .u8(chain.first)
      .u8(o.ttl ?? 64)
      .bytes(src)
      .bytes(dst)
      .done();
    l3 = new Writer().bytes(fixed).bytes(chain.bytes).done();
  }
  // UDP checksum over the pseudo-header (mandatory for IPv6, computed for both).
  const pseudo =
    family === 4
      ? new Writer().bytes(src).bytes(dst).u8(0).u8(IPPROTO_UDP).u16(udp.length).done()
      : new Writer().bytes(src).bytes(dst).u32(udp.length).zeros(3).u8(IPPROTO_UDP).done();
  const sum = checksum(pseudo, udp) || 0xffff;
  udp[6] = sum >>> 8;
  udp[7] = sum & 0xff;

  const eth = ethernet(o, family === 4 ? ETH_P_IP : ETH_P_IPV6);
  const bytes = new Writer().bytes(eth).bytes(l3).bytes(udp).done();
  const l3Offset = eth.length;
  const l4Offset = l3Offset + l3.length;
  const udpPayloadOffset = l4Offset + 8;
  return {
    bytes,
    l3Offset,
    l4Offset,
    udpPayloadOffset,
    audioOffset: udpPayloadOffset + rtp.length,
    audioLength: payload.length,
  };
}

export function buildUdpPacket(o: UdpPacketOptions): Uint8Array {
  return buildUdpPacketLayout(o).bytes;
}

/** Deterministic non-silent test audio: a byte pattern with many distinct values. */
export function audioBytes(length: number, seed = 1): Uint8Array {
  const out = new Uint8Array(length);
  let x = (seed * 0x9e3779b1) >>> 0 || 1;
  for (let i = 0; i < length; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    out[i] = x & 0xff;
  }
  return out;
}

export interface RtcpOptions {
  packetType: number; // 200 SR, 201 RR, 202 SDES, 203 BYE, 204 APP
  ssrc: number; // the sender's SSRC, bytes 4..7
  words?: number[]; // the rest of the packet, 32-bit words
  count?: number; // RC/SC field
}

/** An RTCP packet (RFC 3550 6.4) as a UDP payload: what rtcp-mux (RFC 5761) puts on the RTP port. */
export function rtcpPayload(o: RtcpOptions): Uint8Array {
  const words = o.words ?? [];
  const w = new Writer()
    .u8((2 << 6) | ((o.count ?? 0) & 0x1f))
    .u8(o.packetType)
    .u16(words.length + 1)
    .u32(o.ssrc);
  for (const x of words) w.u32(x);
  return w.done();
}

/** What the classifier makes of one UDP payload; offsets are within the payload. */
export interface PayloadVerdict {
  kind: 'rtp' | 'raw' | 'not-audio' | 'malformed';
  encoding: number; // enum aev_encoding, for 'rtp' and 'raw'
  audioOffset: number;
  audioLength: number;
}

const RTP_HEADER_LEN = 12;

/** bpf/rtp.bpf.h rtp_encoding(): -1 for comfort noise and RTCP packet types. */
function rtpEncoding(pt: number): number {
  if (pt === 0) return Encoding.Pcmu;
  if (pt === 8) return Encoding.Pcma;
  if (pt === 10 || pt === 11) return Encoding.L16Be;
  if (pt === 13 || pt === 19 || (pt >= 72 && pt <= 76)) return -1;
  return Encoding.Opaque;
}

/** bpf/rtp.bpf.h rtp_span(): the payload read as RTP, byte for byte the kernel's checks. */
function rtpSpan(p: Uint8Array, trimPadding: boolean): PayloadVerdict {
  const b0 = p[0];
  const encoding = rtpEncoding(p[1] & 0x7f);
  const none = (kind: PayloadVerdict['kind']): PayloadVerdict => ({
    kind,
    encoding: -1,
    audioOffset: 0,
    audioLength: 0,
  });
  let hlen = RTP_HEADER_LEN + (b0 & 0x0f) * 4;
  let len = p.length;
  if (encoding < 0) return none('not-audio');
  if (b0 & 0x10) {
    if (hlen + 4 > len) return none('malformed');
    hlen += 4 + ((p[hlen + 2] << 8) | p[hlen + 3]) * 4;
  }
  if (hlen > len) return none('malformed');
  len -= hlen;
  if (b0 & 0x20 && trimPadding) {
    const pad = p[hlen + len - 1];
    if (pad === 0 || pad > len) return none('malformed');
    len -= pad;
  }
  if (len === 0) return none('not-audio');
  return { kind: 'rtp', encoding, audioOffset: hlen, audioLength: len };
}

type FlowState =
  | { state: 'none' }
  | { state: 'raw' | 'rtp'; ssrc: number; id0: number; id1: number };

/**
 * The classifier's per-flow RTP rule (bpf/rtp.bpf.h, docs/signatures.md "What counts as RTP"),
 * mirrored for tests: feed one flow's UDP payloads in order, once per packet (as one observation
 * point sees them), and get what the kernel reports for each.
 */
export class RtpFlowRule {
  private flow: FlowState | undefined;

  classify(payload: Uint8Array, trimPadding = true): PayloadVerdict {
    if (payload.length === 0)
      return { kind: 'not-audio', encoding: -1, audioOffset: 0, audioLength: 0 };
    if (payload.length >= RTP_HEADER_LEN && payload[0] >> 6 === 2) {
      const span = rtpSpan(payload, trimPadding);
      if (this.verdict(payload, span.kind !== 'malformed')) return span;
    } else {
      this.flow ??= { state: 'none' };
    }
    return { kind: 'raw', encoding: Encoding.RawLe16, audioOffset: 0, audioLength: payload.length };
  }

  private verdict(p: Uint8Array, consistent: boolean): boolean {
    const v = new DataView(p.buffer, p.byteOffset, p.byteLength);
    const rtcp = (p[1] & 0x7f) >= 72 && (p[1] & 0x7f) <= 76;
    const ssrc = v.getUint32(rtcp ? 4 : 8);
    const id0 = v.getUint32(0);
    const id1 = v.getUint32(rtcp ? 8 : 4);
    const f = this.flow;
    let rtp: boolean;
    if (f === undefined) {
      rtp = consistent;
    } else if (f.state !== 'none' && f.ssrc === ssrc && f.id0 === id0 && f.id1 === id1) {
      return f.state === 'rtp'; // the same packet again
    } else {
      rtp = f.state !== 'none' && f.ssrc === ssrc;
    }
    this.flow = { state: rtp ? 'rtp' : 'raw', ssrc, id0, id1 };
    return rtp;
  }
}

export const TcpFlag = {
  Fin: 0x01,
  Syn: 0x02,
  Rst: 0x04,
  Psh: 0x08,
  Ack: 0x10,
} as const;

export type TcpPacketOptions = Omit<UdpPacketOptions, 'udpLength' | 'rtp'> & {
  seq?: number; // default 1000, taken modulo 2^32
  ack?: number; // default 1
  flags?: number; // TcpFlag bits; default ACK | PSH
  window?: number;
  /** TCP options: raw bytes, padded with zeros (end of list) to a multiple of 4. */
  tcpOptions?: Uint8Array;
  dataOffset?: number; // overrides the computed data offset (32-bit words)
};

export interface BuiltTcpPacket {
  bytes: Uint8Array;
  l3Offset: number;
  l4Offset: number;
  /** Where the segment's payload starts and how long it is. */
  payloadOffset: number;
  payloadLength: number;
}

/**
 * A TCP segment in a frame (IPv4 or IPv6, with the same L2/L3 options as UDP). The IP length
 * fields may exceed what a real MTU allows: a GSO/GRO super-packet of up to 64 KB is one frame.
 */
export function buildTcpPacket(o: TcpPacketOptions): BuiltTcpPacket {
  const family = o.family ?? 4;
  const payload = o.payload ?? new Uint8Array(0);
  const opts = o.tcpOptions ?? new Uint8Array(0);
  const optLen = Math.ceil(opts.length / 4) * 4;
  const hlen = 20 + optLen;
  const src = family === 4 ? ipv4Bytes(o.src ?? '10.0.0.1') : ipv6Bytes(o.src ?? 'fd00::1');
  const dst = family === 4 ? ipv4Bytes(o.dst ?? '10.0.0.2') : ipv6Bytes(o.dst ?? 'fd00::2');
  const tcp = new Writer()
    .u16(o.sport ?? 40000)
    .u16(o.dport ?? 5004)
    .u32((o.seq ?? 1000) >>> 0)
    .u32((o.ack ?? 1) >>> 0)
    .u8(((o.dataOffset ?? hlen / 4) & 0x0f) << 4)
    .u8(o.flags ?? TcpFlag.Ack | TcpFlag.Psh)
    .u16(o.window ?? 65535)
    .u16(0) // checksum, below
    .u16(0) // urgent pointer
    .bytes(opts)
    .zeros(optLen - opts.length)
    .bytes(payload)
    .done();
  const pseudo =
    family === 4
      ? new Writer().bytes(src).bytes(dst).u8(0).u8(IPPROTO_TCP).u16(tcp.length).done()
      : new Writer().bytes(src).bytes(dst).u32(tcp.length).zeros(3).u8(IPPROTO_TCP).done();
  const sum = checksum(pseudo, tcp);
  tcp[16] = sum >>> 8;
  tcp[17] = sum & 0xff;
  let l3: Uint8Array;
  if (family === 4) {
    l3 = ipv4Header(o, tcp.length, IPPROTO_TCP);
  } else {
    const chain = ipv6ExtChain(o.ipv6Ext ?? [], IPPROTO_TCP);
    const fixed = new Writer()
      .u32(0x60000000)
      .u16(o.ipTotalLength ?? chain.bytes.length + tcp.length)
      .u8(chain.first)
      .u8(o.ttl ?? 64)
      .bytes(src)
      .bytes(dst)
      .done();
    l3 = new Writer().bytes(fixed).bytes(chain.bytes).done();
  }
  const eth = ethernet(o, family === 4 ? ETH_P_IP : ETH_P_IPV6);
  const bytes = new Writer().bytes(eth).bytes(l3).bytes(tcp).done();
  const l3Offset = eth.length;
  const l4Offset = l3Offset + l3.length;
  return {
    bytes,
    l3Offset,
    l4Offset,
    payloadOffset: l4Offset + hlen,
    payloadLength: payload.length,
  };
}

/** Typical options of a data segment: NOP, NOP, timestamps (12 bytes). */
export function tcpTimestampOption(tsval: number, tsecr: number): Uint8Array {
  return new Writer().u8(1).u8(1).u8(8).u8(10).u32(tsval).u32(tsecr).done();
}
