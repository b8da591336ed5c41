/**
 * Packets for fuzzing the classifier: valid base packets of every shape the
 * classifier parses, and mutations that break them the ways a hostile or broken peer would.
 *
 *   new BaseFactory(rng, opts).catalogue()      one base packet of each kind (small frames)
 *   new BaseFactory(rng, opts).random()         a random valid base packet
 *   mutate(rng, base, opts): Mutated            1..4 mutations of a base packet
 *
 * Base packets: raw UDP audio, RTP (CSRCs, extension, padding, every payload type class), RTCP,
 * IPv4 options, IPv6 extension chains, 0-3 VLAN tags, IP fragments, TCP segments (in-order
 * streams, retransmissions, SYN/FIN/RST, WebSocket frames with 16- and 64-bit lengths, HTTP
 * heads, TLS records, SSH banners) and oversize payloads up to the largest frame
 * BPF_PROG_TEST_RUN takes. Each carries the offsets of its header fields, so mutations can aim
 * at lengths, header counts and flags rather than only at random bytes.
 *
 * Everything is drawn from one FuzzRng (./fuzz-random.ts): a seed replays the same packets.
 */
import type { FuzzRng } from './fuzz-random.js';
import {
  audioBytes,
  buildTcpPacket,
  buildUdpPacketLayout,
  rtcpPayload,
  tcpTimestampOption,
  TcpFlag,
  type Ipv6ExtHeader,
  type RtpOptions,
  type VlanTag,
} from './packets.js';

/** The largest frame BPF_PROG_TEST_RUN builds an skb for on x86-64 (one page, less head/tail). */
export const TEST_RUN_MAX_FRAME = 3712;
/** The kernel refuses frames shorter than an Ethernet header. */
export const MIN_FRAME = 14;

/**
 * Frames BPF_PROG_TEST_RUN refuses (EINVAL) before the program runs: shorter than an Ethernet
 * header, longer than one page allows, or (kernel 6.18, measured) untagged IPv4 / IPv6 shorter
 * than its fixed IP header. Truncated IP headers reach the classifier behind a VLAN tag only.
 */
export function testRunRefuses(frame: Uint8Array): boolean {
  if (frame.length < MIN_FRAME || frame.length > TEST_RUN_MAX_FRAME) return true;
  const ethertype = (frame[12] << 8) | frame[13];
  if (ethertype === 0x0800) return frame.length < MIN_FRAME + 20;
  if (ethertype === 0x86dd) return frame.length < MIN_FRAME + 40;
  return false;
}

/** A header field of a base packet, for aimed mutations. */
export interface FieldRef {
  name: string;
  offset: number; // from the frame start
  size: 1 | 2 | 4;
}

export interface BasePacket {
  name: string;
  bytes: Uint8Array;
  fields: FieldRef[];
}

export interface FuzzPacketOptions {
  /** Ports the classifier under test takes as audio: mutated ports land on them often. */
  audioPorts: readonly number[];
  maxFrame?: number; // default TEST_RUN_MAX_FRAME
}

const RTP_PAYLOAD_TYPES = [0, 8, 10, 11, 13, 19, 96, 101, 111, 127] as const;
const ETHERTYPES = [
  0x0800, 0x0800, 0x86dd, 0x86dd, 0x8100, 0x88a8, 0x0806, 0x88cc, 0x0000, 0xffff,
] as const;
const EXT_TYPES = ['hop', 'routing', 'dest', 'fragment'] as const;
/** Source ports of the fuzzed flows: few, so RTP flows see their SSRC twice and TCP streams grow. */
const FLOW_SPORTS = 16;
const SPORT_BASE = 40000;

function u16be(v: number): Uint8Array {
  return Uint8Array.of((v >>> 8) & 0xff, v & 0xff);
}

function concat(...parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

const text = (s: string): Uint8Array => new TextEncoder().encode(s);

/**
 * A WebSocket frame (RFC 6455 5.2) as it opens a TCP payload: FIN + binary, the 7-bit length or
 * its 16- or 64-bit extension (the 64-bit one claims up to 2^64 - 1 bytes), an optional mask.
 */
export function webSocketFrame(rng: FuzzRng, payload: Uint8Array, claimed?: bigint): Uint8Array {
  const len = claimed ?? BigInt(payload.length);
  const masked = rng.chance(0.5);
  const head: number[] = [0x82];
  const m = masked ? 0x80 : 0;
  if (len < 126n) {
    head.push(m | Number(len));
  } else if (len < 0x10000n) {
    head.push(m | 126, Number(len >> 8n) & 0xff, Number(len) & 0xff);
  } else {
    head.push(m | 127);
    for (let i = 7; i >= 0; i--) head.push(Number((len >> BigInt(i * 8)) & 0xffn));
  }
  const key = masked ? rng.bytes(4) : new Uint8Array(0);
  const body = Uint8Array.from(payload, (b, i) => (masked ? b ^ key[i & 3] : b));
  return concat(Uint8Array.from(head), key, body);
}

const HTTP_HEADS = [
  'GET /audio HTTP/1.1\r\nHost: pod\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n' +
    'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n',
  'HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n',
  'POST /stream HTTP/1.1\r\nHost: pod\r\nContent-Type: audio/L16;rate=16000\r\n' +
    'Transfer-Encoding: chunked\r\n\r\nffffffffffffffff\r\n',
  'HTTP/1.1 200 OK\r\nContent-Type: audio/wav\r\nContent-Length: 18446744073709551615\r\n\r\n',
];

/**
 * Valid base packets. Flows repeat (a few source ports, one SSRC each) so the kernel's per-flow
 * state is exercised: RTP confirmed by a second packet of one SSRC, TCP streams that continue.
 */
export class BaseFactory {
  private readonly maxFrame: number;
  /** Next sequence number of each TCP flow (by source port), for in-order segments. */
  private readonly tcpNext = new Map<number, number>();

  constructor(
    private readonly rng: FuzzRng,
    private readonly opts: FuzzPacketOptions,
  ) {
    this.maxFrame = opts.maxFrame ?? TEST_RUN_MAX_FRAME;
  }

  /** One packet of each kind, small enough to truncate at every offset. */
  catalogue(): BasePacket[] {
    const r = this.rng;
    return [
      this.udp('raw UDP', { payload: this.rawPcm(160) }),
      this.udp('raw UDP, 7 bytes', { payload: this.rawPcm(7) }),
      this.udp('RTP PCMU', { rtp: this.rtp({ payloadType: 0 }), payload: audioBytes(160, 1) }),
      this.udp('RTP CSRCs, extension, padding', {
        rtp: this.rtp({
          payloadType: 8,
          csrcs: [1, 2, 3, 4],
          extension: { words: [0xdeadbeef, 7] },
          padding: 6,
        }),
        payload: audioBytes(80, 2),
      }),
      this.udp('RTP 15 CSRCs', {
        rtp: this.rtp({ payloadType: 11, csrcs: Array.from({ length: 15 }, (_, i) => i) }),
        payload: audioBytes(40, 3),
      }),
      this.udp('RTCP SR', { payload: rtcpPayload({ packetType: 200, ssrc: 1, words: [1, 2, 3] }) }),
      this.udp('comfort noise', { rtp: this.rtp({ payloadType: 13 }), payload: Uint8Array.of(40) }),
      this.udp('IPv4 options', {
        ipv4Options: new Uint8Array(r.range(1, 10) * 4).fill(1),
        payload: this.rawPcm(64),
      }),
      this.udp('IPv6 RTP', {
        family: 6,
        rtp: this.rtp({ payloadType: 96 }),
        payload: audioBytes(64, 4),
      }),
      this.udp('IPv6 six extension headers', {
        family: 6,
        ipv6Ext: [
          { type: 'hop' },
          { type: 'routing', length: 24 },
          { type: 'dest' },
          { type: 'fragment' },
          { type: 'dest', length: 16 },
          { type: 'dest' },
        ],
        rtp: this.rtp({ payloadType: 0 }),
        payload: audioBytes(48, 5),
      }),
      this.udp('IPv6 seven extension headers', {
        family: 6,
        ipv6Ext: Array.from({ length: 7 }, () => ({ type: 'dest' as const })),
        payload: this.rawPcm(32),
      }),
      this.udp('one VLAN tag', { vlans: [{ vid: 10 }], payload: this.rawPcm(64) }),
      this.udp('802.1ad + 802.1Q', {
        family: 6,
        vlans: [{ tpid: 0x88a8, vid: 1 }, { vid: 2 }],
        rtp: this.rtp({ payloadType: 10 }),
        payload: audioBytes(64, 6),
      }),
      this.udp('three VLAN tags', {
        vlans: [{ tpid: 0x88a8, vid: 1 }, { vid: 2 }, { vid: 3 }],
        payload: this.rawPcm(32),
      }),
      this.udp('IPv4 first fragment', {
        moreFragments: true,
        udpLength: 8 + 12 + 1400,
        rtp: this.rtp({ payloadType: 0, padding: 4 }),
        payload: audioBytes(64, 7),
      }),
      this.udp('IPv4 later fragment', { fragmentOffset: 185, payload: this.rawPcm(64) }),
      this.udp('IPv6 first fragment', {
        family: 6,
        ipv6Ext: [{ type: 'fragment', moreFragments: true }],
        udpLength: 8 + 1400,
        payload: this.rawPcm(64),
      }),
      this.tcp('TCP segment', { payload: this.rawPcm(200) }),
      this.tcp('TCP SYN', { flags: TcpFlag.Syn, payload: new Uint8Array(0) }),
      this.tcp('TCP FIN with data', { flags: TcpFlag.Fin | TcpFlag.Ack, payload: this.rawPcm(40) }),
      this.tcp('TCP RST', { flags: TcpFlag.Rst, payload: new Uint8Array(0) }),
      this.tcp('TCP pure ACK', { flags: TcpFlag.Ack, payload: new Uint8Array(0) }),
      this.tcp('TCP IPv6 with options', {
        family: 6,
        ipv6Ext: [{ type: 'hop' }],
        tcpOptions: tcpTimestampOption(1, 2),
        payload: this.rawPcm(120),
      }),
      this.tcp('WebSocket, 64-bit length', {
        payload: webSocketFrame(r, this.rawPcm(100), 0xffffffffffffffffn),
      }),
      this.tcp('WebSocket, 16-bit length', { payload: webSocketFrame(r, this.rawPcm(200)) }),
      this.tcp('HTTP head', { payload: text(HTTP_HEADS[0]) }),
      this.tcp('TLS record', { payload: concat(Uint8Array.of(0x16, 3, 1, 0, 100), r.bytes(100)) }),
      this.tcp('SSH banner', { payload: text('SSH-2.0-OpenSSH_9.2\r\n') }),
    ];
  }

  /** A random valid base packet, any kind, any size up to the largest frame. */
  random(): BasePacket {
    const r = this.rng;
    const kind = r.int(10);
    const l2l3 = this.randomL2L3();
    if (kind < 6) {
      const payloadRoom = this.room(l2l3, 8);
      const rtp = kind < 4 ? this.randomRtp() : undefined;
      const rtpBytes = rtp ? 12 + (rtp.csrcs?.length ?? 0) * 4 + this.extBytes(rtp) : 0;
      const max = Math.max(0, payloadRoom - rtpBytes - (rtp?.padding ?? 0));
      const len = this.payloadLength(max);
      const payload = rtp ? audioBytes(len, r.u32()) : this.rawPcm(len, r.chance(0.3));
      const frag = r.chance(0.1)
        ? { moreFragments: true, udpLength: 8 + rtpBytes + len + r.range(0, 2000) }
        : {};
      return this.udp(`random UDP${rtp ? ' RTP' : ''}`, { ...l2l3, ...frag, rtp, payload });
    }
    if (kind === 6) {
      const ssrc = r.chance(0.7) ? this.ssrcOf(SPORT_BASE) : r.u32();
      return this.udp('random RTCP', {
        ...l2l3,
        payload: rtcpPayload({ packetType: r.range(200, 204), ssrc, words: [r.u32(), r.u32()] }),
      });
    }
    const room = this.room(l2l3, 20 + 12); // header and the timestamp option
    return this.tcp(
      'random TCP',
      { ...l2l3, payload: this.tcpPayload(room).subarray(0, room) },
      true,
    );
  }

  private rawPcm(length: number, rtpLooking = false): Uint8Array {
    const b = audioBytes(length, this.rng.u32());
    // Raw PCM starting 0b10xxxxxx is RTP-looking: a quarter of real raw packets are.
    if (length > 0) b[0] = rtpLooking ? 0x80 | (b[0] & 0x3f) : b[0] & 0x3f;
    return b;
  }

  private sport(): number {
    return SPORT_BASE + this.rng.int(FLOW_SPORTS);
  }

  private dport(): number {
    return this.rng.chance(0.9) ? this.rng.pick(this.opts.audioPorts) : this.rng.range(1, 65535);
  }

  /** One SSRC per flow, so a flow's second RTP packet confirms it. */
  private ssrcOf(sport: number): number {
    return (0x5eed0000 + sport) >>> 0;
  }

  private rtp(o: RtpOptions, sport = SPORT_BASE): RtpOptions {
    return { ssrc: this.ssrcOf(sport), seq: this.rng.int(65536), ...o };
  }

  private extBytes(rtp: RtpOptions): number {
    return rtp.extension ? 4 + rtp.extension.words.length * 4 : 0;
  }

  private randomRtp(): RtpOptions {
    const r = this.rng;
    return {
      payloadType: r.pick(RTP_PAYLOAD_TYPES),
      marker: r.chance(0.1),
      seq: r.int(65536),
      timestamp: r.u32(),
      ssrc: r.chance(0.8) ? this.ssrcOf(SPORT_BASE) : r.u32(),
      csrcs: r.chance(0.3) ? Array.from({ length: r.range(1, 15) }, () => r.u32()) : [],
      extension: r.chance(0.3)
        ? { profile: 0xbede, words: Array.from({ length: r.range(0, 6) }, () => r.u32()) }
        : undefined,
      padding: r.chance(0.2) ? r.range(1, 32) : undefined,
    };
  }

  /** Ethernet, VLAN, IP options and IPv6 extension chains: the shared part of UDP and TCP. */
  private randomL2L3(): {
    family: 4 | 6;
    vlans: VlanTag[];
    ipv4Options?: Uint8Array;
    ipv6Ext?: Ipv6ExtHeader[];
    sport: number;
    dport: number;
  } {
    const r = this.rng;
    const family = r.chance(0.5) ? 4 : 6;
    // Three tags (one more than parsed) end the parse: rare, or they would crowd out the rest.
    const vlanCount = r.chance(0.7) ? 0 : r.pick([1, 1, 1, 1, 2, 2, 2, 2, 3]);
    const vlans = Array.from({ length: vlanCount }, (_, i) => ({
      tpid: (i === 0 && vlanCount > 1 ? 0x88a8 : 0x8100) as 0x8100 | 0x88a8,
      vid: r.int(4096),
    }));
    const base = { family, vlans, sport: this.sport(), dport: this.dport() } as const;
    if (family === 4) {
      return r.chance(0.3)
        ? { ...base, ipv4Options: new Uint8Array(r.range(1, 10) * 4).fill(1) }
        : base;
    }
    const depth = r.chance(0.5) ? 0 : r.range(1, 7);
    const ipv6Ext: Ipv6ExtHeader[] = Array.from({ length: depth }, () => {
      const type = r.pick(EXT_TYPES);
      return type === 'fragment'
        ? { type, moreFragments: r.chance(0.2) }
        : { type, length: r.pick([8, 8, 16, 24, 64]) };
    });
    return { ...base, ipv6Ext };
  }

  /** Bytes left for the L4 payload in the largest frame. */
  private room(o: ReturnType<BaseFactory['randomL2L3']>, l4Header: number): number {
    const l2 = 14 + o.vlans.length * 4;
    const l3 =
      o.family === 4
        ? 20 + (o.ipv4Options?.length ?? 0)
        : 40 +
          (o.ipv6Ext ?? []).reduce((n, e) => n + (e.type === 'fragment' ? 8 : (e.length ?? 8)), 0);
    return Math.max(0, this.maxFrame - l2 - l3 - l4Header);
  }

  /** Mostly small (real audio packets), sometimes up to the largest frame (truncation, chunks). */
  private payloadLength(max: number): number {
    const r = this.rng;
    if (r.chance(0.15)) return max - r.int(Math.min(max + 1, 64));
    return Math.min(max, r.pick([0, 1, 11, 12, 13, 160, 320, 1400, 1984, 1985, r.int(4000)]));
  }

  private tcpPayload(room: number): Uint8Array {
    const r = this.rng;
    switch (r.int(6)) {
      case 0: {
        const len = Math.min(room, r.pick([1, 20, 100, 1000]));
        return webSocketFrame(
          r,
          this.rawPcm(Math.max(0, len - 14)),
          r.chance(0.5) ? (BigInt(r.u32()) << 32n) | BigInt(r.u32()) : undefined,
        );
      }
      case 1:
        return text(r.pick(HTTP_HEADS)).subarray(0, room);
      case 2:
        return concat(
          Uint8Array.of(r.pick([0x16, 0x17]), 3, r.int(5), r.int(256), r.int(256)),
          r.bytes(Math.min(room, 64)),
        );
      case 3:
        return text('SSH-2.0-x\r\n').subarray(0, room);
      default:
        return this.rawPcm(this.payloadLength(room));
    }
  }

  private udp(name: string, o: Parameters<typeof buildUdpPacketLayout>[0]): BasePacket {
    const sport = o.sport ?? this.sport();
    const opts = { sport, dport: this.dport(), ...o };
    if (opts.rtp && opts.rtp.ssrc === this.ssrcOf(SPORT_BASE)) {
      opts.rtp = { ...opts.rtp, ssrc: this.ssrcOf(sport) };
    }
    const b = buildUdpPacketLayout(opts);
    const fields = [...this.l2l3Fields(b.bytes, b.l3Offset, opts.family ?? 4)];
    fields.push(
      { name: 'udp.sport', offset: b.l4Offset, size: 2 },
      { name: 'udp.dport', offset: b.l4Offset + 2, size: 2 },
      { name: 'udp.len', offset: b.l4Offset + 4, size: 2 },
    );
    const p = b.udpPayloadOffset;
    if (b.bytes.length >= p + 12) {
      fields.push(
        { name: 'rtp.b0', offset: p, size: 1 },
        { name: 'rtp.pt', offset: p + 1, size: 1 },
        { name: 'rtp.ssrc', offset: p + 8, size: 4 },
        { name: 'payload.last', offset: b.bytes.length - 1, size: 1 },
      );
      const ext = p + 12 + (b.bytes[p] & 0x0f) * 4;
      if (b.bytes[p] & 0x10 && ext + 4 <= b.bytes.length) {
        fields.push({ name: 'rtp.extlen', offset: ext + 2, size: 2 });
      }
    }
    return { name, bytes: b.bytes, fields };
  }

  /**
   * A TCP segment. `streamed`: a flow's next segment in order most of the time, else a
   * retransmission, an overlap or a jump ahead.
   */
  private tcp(name: string, o: Parameters<typeof buildTcpPacket>[0], streamed = false): BasePacket {
    const r = this.rng;
    const sport = o.sport ?? this.sport();
    const len = o.payload?.length ?? 0;
    let seq = o.seq ?? r.u32();
    let flags = o.flags;
    if (streamed) {
      const next = this.tcpNext.get(sport);
      if (next === undefined || r.chance(0.05)) {
        flags = TcpFlag.Syn | (r.chance(0.5) ? TcpFlag.Ack : 0);
        seq = r.u32();
        this.tcpNext.set(sport, (seq + 1 + len) >>> 0);
      } else {
        const shift = r.pick([0, 0, 0, 0, -len, -1, 1, 1000, -(2 ** 31)]);
        seq = (next + shift) >>> 0;
        flags = r.pick([
          TcpFlag.Ack | TcpFlag.Psh,
          TcpFlag.Ack,
          TcpFlag.Fin | TcpFlag.Ack,
          TcpFlag.Rst,
        ]);
        this.tcpNext.set(sport, (seq + len) >>> 0);
      }
    }
    const opts = {
      sport,
      dport: this.dport(),
      tcpOptions: tcpTimestampOption(r.u32(), r.u32()),
      ...o,
      seq,
      flags,
    };
    const b = buildTcpPacket(opts);
    const fields = [...this.l2l3Fields(b.bytes, b.l3Offset, opts.family ?? 4)];
    fields.push(
      { name: 'tcp.sport', offset: b.l4Offset, size: 2 },
      { name: 'tcp.dport', offset: b.l4Offset + 2, size: 2 },
      { name: 'tcp.seq', offset: b.l4Offset + 4, size: 4 },
      { name: 'tcp.doff', offset: b.l4Offset + 12, size: 1 },
      { name: 'tcp.flags', offset: b.l4Offset + 13, size: 1 },
    );
    if (b.payloadLength >= 10) {
      // A WebSocket frame's length byte and extension, or a TLS record's length.
      fields.push(
        { name: 'payload[0]', offset: b.payloadOffset, size: 1 },
        { name: 'payload[1]', offset: b.payloadOffset + 1, size: 1 },
        { name: 'payload[2..3]', offset: b.payloadOffset + 2, size: 2 },
        { name: 'payload[3..4]', offset: b.payloadOffset + 3, size: 2 },
      );
    }
    return { name, bytes: b.bytes, fields };
  }

  /** Ethertype, tags, and the IP header fields: lengths, header counts, next headers. */
  private l2l3Fields(bytes: Uint8Array, l3: number, family: 4 | 6): FieldRef[] {
    const fields: FieldRef[] = [{ name: 'eth.type', offset: l3 - 2, size: 2 }];
    for (let at = 12; at < l3 - 2; at += 4) {
      fields.push({ name: 'vlan.tpid', offset: at, size: 2 });
    }
    if (family === 4) {
      fields.push(
        { name: 'ip.vihl', offset: l3, size: 1 },
        { name: 'ip.totlen', offset: l3 + 2, size: 2 },
        { name: 'ip.frag', offset: l3 + 6, size: 2 },
        { name: 'ip.proto', offset: l3 + 9, size: 1 },
        { name: 'ip.saddr', offset: l3 + 12, size: 4 },
      );
      return fields;
    }
    fields.push(
      { name: 'ip6.version', offset: l3, size: 1 },
      { name: 'ip6.plen', offset: l3 + 4, size: 2 },
      { name: 'ip6.next', offset: l3 + 6, size: 1 },
      { name: 'ip6.saddr', offset: l3 + 8, size: 4 },
    );
    // Walk the chain as built: each header's next-header and length (or fragment field).
    let next = bytes[l3 + 6];
    let at = l3 + 40;
    while ((next === 0 || next === 43 || next === 60 || next === 44) && at + 8 <= bytes.length) {
      fields.push({ name: 'ext.next', offset: at, size: 1 });
      if (next === 44) {
        fields.push({ name: 'frag.off', offset: at + 2, size: 2 });
        next = bytes[at];
        at += 8;
      } else {
        fields.push({ name: 'ext.len', offset: at + 1, size: 1 });
        next = bytes[at];
        at += (bytes[at + 1] + 1) * 8;
      }
    }
    return fields;
  }
}

// ---------------------------------------------------------------------------------------------
// Mutations.

export interface Mutated {
  bytes: Uint8Array;
  base: string;
  mutations: string[];
}

type Mutation = (
  rng: FuzzRng,
  p: Uint8Array,
  base: BasePacket,
  opts: FuzzPacketOptions,
) => [Uint8Array, string];

/** Values that sit on the edges of a field's checks. */
function interesting(rng: FuzzRng, size: 1 | 2 | 4, old: number, frameLen: number): number {
  const max = size === 4 ? 0xffffffff : (1 << (size * 8)) - 1;
  const common = [0, 1, max, max - 1, old + 1, old - 1, old ^ (1 << rng.int(size * 8)), rng.u32()];
  const bySize: Record<1 | 2 | 4, number[]> = {
    1: [0x0f, 0x10, 0x20, 0x3f, 0x40, 0x45, 0x4f, 0x5f, 0x60, 0x7f, 0x80, 0x8f, 0x9f, 0xbf, 0xf0],
    2: [
      7,
      8,
      9,
      20,
      40,
      frameLen,
      frameLen - 14,
      frameLen - 13,
      0x7fff,
      0x8000,
      0x2000,
      0x1fff,
      old + 4,
      old - 4,
    ],
    4: [0x7fffffff, 0x80000000, old + 0x7fffffff, old - 1448],
  };
  return rng.pick([...common, ...bySize[size]]) & max;
}

function write(p: Uint8Array, at: number, size: 1 | 2 | 4, v: number): void {
  for (let i = 0; i < size; i++) p[at + i] = (v >>> (8 * (size - 1 - i))) & 0xff;
}

function read(p: Uint8Array, at: number, size: 1 | 2 | 4): number {
  let v = 0;
  for (let i = 0; i < size; i++) v = v * 256 + p[at + i];
  return v;
}

/** A header field: lengths, IHL, header counts, next headers, CSRC count, data offset, flags. */
const fieldMutation: Mutation = (rng, p, base) => {
  const fields = base.fields.filter((f) => f.offset + f.size <= p.length);
  if (fields.length === 0) return [p, 'field: none'];
  const f = rng.pick(fields);
  // Ethertypes: the ones that lead somewhere (IP, tags) more often than a random value would.
  const v =
    f.name === 'eth.type' || f.name === 'vlan.tpid'
      ? rng.pick(ETHERTYPES)
      : interesting(rng, f.size, read(p, f.offset, f.size), p.length);
  write(p, f.offset, f.size, v);
  return [p, `${f.name}=0x${v.toString(16)}`];
};

/** A port onto (or off) the audio ports. */
const portMutation: Mutation = (rng, p, base, opts) => {
  const ports = base.fields.filter((f) => f.name.endsWith('port') && f.offset + 2 <= p.length);
  if (ports.length === 0) return [p, 'port: none'];
  const f = rng.pick(ports);
  const v = rng.chance(0.7) ? rng.pick(opts.audioPorts) : rng.int(65536);
  write(p, f.offset, 2, v);
  return [p, `${f.name}=${v}`];
};

const bitFlip: Mutation = (rng, p) => {
  const at = rng.range(12, p.length - 1);
  const bit = rng.int(8);
  p[at] ^= 1 << bit;
  return [p, `bitflip@${at}.${bit}`];
};

const byteOverwrite: Mutation = (rng, p) => {
  const at = rng.range(12, p.length - 1);
  const v = rng.pick([0, 0xff, 0x7f, 0x80, 0x01, rng.int(256)]);
  p[at] = v;
  return [p, `byte@${at}=0x${v.toString(16)}`];
};

/** Absurd RTP: 15 CSRCs, an extension whose length runs to 256 KiB, padding of 255 or 0. */
const absurdRtp: Mutation = (rng, p, base) => {
  const b0 = base.fields.find((f) => f.name === 'rtp.b0');
  if (!b0 || b0.offset >= p.length) return [p, 'rtp-absurd: none'];
  const v = rng.pick([0xbf, 0x9f, 0xaf, 0x8f, 0xb0, 0xa0]);
  p[b0.offset] = v;
  const ext = b0.offset + 12 + (v & 0x0f) * 4;
  if (v & 0x10 && ext + 4 <= p.length) write(p, ext + 2, 2, rng.pick([0xffff, 0x8000, 1]));
  if (v & 0x20) p[p.length - 1] = rng.pick([0xff, 0, 1]);
  return [p, `rtp-absurd b0=0x${v.toString(16)}`];
};

const ethertype: Mutation = (rng, p) => {
  const v = rng.pick(ETHERTYPES);
  write(p, 12, 2, v);
  return [p, `ethertype=0x${v.toString(16)}`];
};

/**
 * Mutations in place, weighted: aimed at header fields most of the time (a random byte rarely
 * lands on a length), the ethertype seldom (most of its values end the parse at once).
 */
const FIELD_MUTATIONS: readonly Mutation[] = [
  ...Array<Mutation>(8).fill(fieldMutation),
  ...Array<Mutation>(3).fill(portMutation),
  ...Array<Mutation>(4).fill(bitFlip),
  ...Array<Mutation>(3).fill(byteOverwrite),
  ...Array<Mutation>(2).fill(absurdRtp),
  ethertype,
];

/** Changes of length: applied after the field mutations, whose offsets they would shift. */
const SHAPE_MUTATIONS: Mutation[] = [
  // Nested VLAN tags in front of whatever the frame carried.
  (rng, p, _base, opts) => {
    const n = rng.pick([1, 1, 1, 2, 3]);
    const tags = Array.from({ length: n }, () =>
      concat(u16be(rng.pick([0x8100, 0x88a8])), u16be(rng.int(0x10000))),
    );
    const out = concat(p.subarray(0, 12), ...tags, p.subarray(12));
    return [out.subarray(0, opts.maxFrame ?? TEST_RUN_MAX_FRAME), `vlan+${n}`];
  },
  // Oversize: trailing bytes the IP length does not cover, up to the largest frame.
  (rng, p, _base, opts) => {
    const max = opts.maxFrame ?? TEST_RUN_MAX_FRAME;
    const add = rng.chance(0.3) ? max - p.length : rng.int(Math.min(64, max - p.length + 1));
    return [concat(p, rng.bytes(Math.max(0, add))), `extend+${add}`];
  },
];

function truncate(rng: FuzzRng, p: Uint8Array): [Uint8Array, string] {
  const at = rng.range(MIN_FRAME, p.length);
  return [p.subarray(0, at), `truncate@${at}`];
}

/** Random bytes, often behind an IP ethertype (and version nibble) so parsing goes deeper. */
export function garbage(rng: FuzzRng, opts: FuzzPacketOptions): Uint8Array {
  const max = opts.maxFrame ?? TEST_RUN_MAX_FRAME;
  const p = rng.bytes(rng.chance(0.8) ? rng.range(MIN_FRAME, 200) : rng.range(MIN_FRAME, max));
  if (rng.chance(0.7) && p.length >= 15) {
    const v6 = rng.chance(0.5);
    write(p, 12, 2, v6 ? 0x86dd : 0x0800);
    p[14] = v6 ? 0x60 | (p[14] & 0x0f) : 0x40 | (p[14] & 0x0f);
  }
  return p;
}

/** 1..4 mutations of `base`: fields first, then shape, then (sometimes) a truncation. */
export function mutate(rng: FuzzRng, base: BasePacket, opts: FuzzPacketOptions): Mutated {
  let p: Uint8Array = base.bytes.slice();
  const mutations: string[] = [];
  const apply = ([out, what]: [Uint8Array, string]): void => {
    p = out;
    mutations.push(what);
  };
  const count = rng.range(1, 4);
  for (let i = 0; i < count; i++) apply(rng.pick(FIELD_MUTATIONS)(rng, p, base, opts));
  if (rng.chance(0.15)) apply(rng.pick(SHAPE_MUTATIONS)(rng, p, base, opts));
  if (rng.chance(0.2)) apply(truncate(rng, p));
  return { bytes: p.slice(), base: base.name, mutations };
}
