/**
 * Hostile input for the user-space data path, from a seeded PRNG so a failure can be replayed:
 *   - AudioEventMutator: raw struct audio_event records (kernel -> addon) whose every header
 *     field may contradict the bytes that follow (captured_len beyond the record, records shorter
 *     than their header, any flags, protocol, family, encoding, sequence number, timestamp), and
 *     TCP streams built to reach the framing parsers (HTTP heads with absurd Content-Lengths,
 *     chunked bodies with absurd sizes, WebSocket frames with 64-bit lengths, base64/hex runs).
 *   - ReferenceEngine: SignatureEngine::ingest() (native/signature/engine.cc) in TypeScript over
 *     such records, on the reference signer (src/signature/): the same stream table (LRU
 *     eviction, idle restart, end of stream), so its records must equal the engine's.
 *   - SigRecordMutator: batches of struct sig_record (addon -> JS), valid ones written by
 *     writeSigRecord() and then corrupted: random bytes, impossible families, zero, huge and
 *     backward timestamps, absurd cgroup IDs, one observation point for all, endless new flows.
 */
import {
  AEV_HEADER_SIZE,
  AEV_MAX_CAPTURE,
  AudioEventLayout,
  EventFlag,
  SIG_RECORD_SIZE,
  SigRecordLayout,
} from '../../src/abi.js';
import type { Encoding } from '../../src/abi.js';
import { IPPROTO_TCP, StreamSigner } from '../../src/signature/index.js';
import type { SignerConfig, SignerStats } from '../../src/signature/index.js';
import { writeSigRecord } from '../../src/signature-batch.js';
import type { SigRecordFields } from '../../src/signature-batch.js';
import type { FuzzRng } from './fuzz-random.js';
import { type AudioEventHeader, writeAudioEvent } from './audio-event.js';
import { chunkedBody, concat, mediaStream, sseStream, te, wsFrame } from './tcp-streams.js';

const U64_MAX = (1n << 64n) - 1n;

export interface AudioEventMutatorOptions {
  /** Distinct (flow, observation point) keys of the scenarios (default 6). */
  flows?: number;
  /** Largest timestamp drawn (default 2^64 - 1). A parity check against the engine keeps it
   *  below 2^53, where the reference's number timestamps are exact. */
  maxTimestampNs?: bigint;
}

interface MutatorFlow {
  header: AudioEventHeader;
  nextSeq: number;
}

const SEGMENT_SIZES = [1448, 1448, 1, 7, 536, 1984, 1985, 3000];
const SEQ_JUMPS = [1, 2, 100, 65536, 0x7fffffff, 0x80000000, 0xffffffff];
const HTTP_STARTS = [
  'GET /media HTTP/1.1',
  'POST /stream HTTP/1.1',
  'HTTP/1.1 200 OK',
  'HTTP/1.1 101 Switching Protocols',
  'HTTP/1.0 204 No Content',
  'HTTP/1.1 100 Continue',
  'HTTP/1.1 abc Weird',
  'DELETE /x HTTP/1.1',
];
const HTTP_HEADERS = [
  'Transfer-Encoding: chunked',
  'Upgrade: websocket',
  'Connection: Upgrade',
  'Content-Type: audio/L16;rate=8000',
  'Content-Type: application/octet-stream',
  'Content-Type: application/json',
  'Content-Length: -5',
  'Content-Length: 18446744073709551616',
  'Content-Length: 999999999999999999999999',
];

/**
 * Raw audio_event records in scenarios: a TCP stream of one flow cut into segments with every
 * kind of trouble, UDP packets with mangled headers, or one record of random header bytes.
 */
export class AudioEventMutator {
  private readonly flows: MutatorFlow[] = [];
  private readonly maxTs: bigint;
  private clock: bigint;

  constructor(
    private readonly rng: FuzzRng,
    options: AudioEventMutatorOptions = {},
  ) {
    this.maxTs = options.maxTimestampNs ?? U64_MAX;
    this.clock = BigInt(rng.int(1e9)) * 1000n;
    const n = options.flows ?? 6;
    for (let i = 0; i < n; i++) this.flows.push(this.newFlow(i));
  }

  /** The records of one scenario, in order. */
  scenario(): Uint8Array[] {
    const r = this.rng.float();
    if (r < 0.5) return this.tcpScenario();
    if (r < 0.75) return this.udpScenario();
    return [this.randomEvent()];
  }

  private newFlow(i: number): MutatorFlow {
    const rng = this.rng;
    const saddr = new Uint8Array(16);
    const daddr = new Uint8Array(16);
    saddr.set([10, 0, 0, 1 + (i % 4)]);
    daddr.set([10, 0, 0, 9]);
    return {
      header: {
        tsNs: 0n,
        ifindex: rng.chance(0.9) ? 10 + (i % 3) : rng.u32(),
        direction: rng.int(3),
        family: rng.pick([4, 4, 6, 0, 255]),
        protocol: rng.pick([IPPROTO_TCP, IPPROTO_TCP, IPPROTO_TCP, 17, 17, 0]),
        encoding: rng.int(6),
        saddr,
        daddr,
        sport: 40000 + (i % 4), // some flows share a tuple: different observation points
        dport: 5004,
        payloadOff: 42,
        payloadLen: 0,
        capturedLen: 0,
        flags: 0,
        seq: 0,
        cgroupId: rng.chance(0.8) ? 0n : rng.u64(),
      },
      nextSeq: rng.u32(),
    };
  }

  /** Mostly a clock moving forward; sometimes backwards, zero, the maximum, a jump, random. */
  private timestamp(): bigint {
    const rng = this.rng;
    const r = rng.float();
    let ts: bigint;
    if (r < 0.8) {
      this.clock += BigInt(rng.int(256)) * (r < 0.6 ? 20_000n : 50_000_000n);
      ts = this.clock;
    } else if (r < 0.86) {
      ts = this.clock - BigInt(rng.int(1e9)) * 1000n;
      if (ts < 0n) ts = 0n;
    } else if (r < 0.9) {
      ts = 0n;
    } else if (r < 0.94) {
      ts = this.maxTs;
    } else if (r < 0.97) {
      this.clock += rng.u64() >> BigInt(8 + rng.int(56));
      ts = this.clock;
    } else {
      ts = rng.u64();
    }
    return ts > this.maxTs ? this.maxTs : ts;
  }

  private tcpScenario(): Uint8Array[] {
    const rng = this.rng;
    const flow = rng.pick(this.flows);
    const stream = this.tcpStream();
    const out: Uint8Array[] = [];
    let first = rng.chance(0.8);
    for (let at = 0; at < stream.length; ) {
      const seg = Math.max(
        1,
        Math.min(rng.chance(0.8) ? rng.pick(SEGMENT_SIZES) : rng.int(4000), stream.length - at),
      );
      const captured = Math.min(seg, AEV_MAX_CAPTURE);
      const h: AudioEventHeader = {
        ...flow.header,
        tsNs: this.timestamp(),
        seq: flow.nextSeq,
        payloadLen: seg,
        capturedLen: captured,
        flags: (first ? EventFlag.StreamStart : 0) | (seg > captured ? EventFlag.Truncated : 0),
      };
      first = false;
      const trouble = rng.float();
      if (trouble < 0.06) {
        h.seq = (h.seq + rng.pick(SEQ_JUMPS)) >>> 0; // bytes lost, flagged or not
        if (rng.chance(0.5)) h.flags |= EventFlag.Gap;
      } else if (trouble < 0.09) h.flags |= EventFlag.Gap;
      else if (trouble < 0.12) h.flags |= EventFlag.Chunk;
      else if (trouble < 0.14) {
        h.flags |= EventFlag.StreamEnd;
        first = rng.chance(0.5);
      } else if (trouble < 0.16) h.flags = rng.u16();
      else if (trouble < 0.19) {
        h.capturedLen = rng.u16(); // beyond the record, or short of it
        h.payloadLen = rng.u16();
      } else if (trouble < 0.2) h.encoding = rng.u8();
      else if (trouble < 0.21) h.protocol = rng.u8();
      let length = AEV_HEADER_SIZE + captured;
      const cut = rng.float();
      if (cut < 0.03) length = rng.int(AEV_HEADER_SIZE + 1);
      else if (cut < 0.06) length = AEV_HEADER_SIZE + rng.int(captured + 1);
      out.push(writeAudioEvent(h, stream.subarray(at, at + captured), length));
      flow.nextSeq = (h.seq + seg) >>> 0;
      at += seg;
      if (rng.chance(0.02)) at += rng.int(3000); // lost without a word from seq
    }
    return out;
  }

  /** Pieces in any order, a few bits flipped: the framing sees every transition. */
  private tcpStream(): Uint8Array {
    const rng = this.rng;
    const parts: Uint8Array[] = [];
    for (let p = 1 + rng.int(6); p > 0; p--) parts.push(this.piece());
    const stream = concat(parts);
    if (rng.chance(0.25)) {
      for (let f = rng.int(16); f > 0 && stream.length > 0; f--)
        stream[rng.int(stream.length)] ^= 1 << rng.int(8);
    }
    return stream;
  }

  private piece(): Uint8Array {
    const rng = this.rng;
    const audio = (n: number): Uint8Array => rng.bytes(n);
    switch (rng.int(9)) {
      case 0:
        return rng.chance(0.8)
          ? audio(rng.int(3000))
          : new Uint8Array(rng.int(3000)).fill(rng.u8()); // some values anchor everywhere
      case 1:
        return te(this.httpHead());
      case 2:
        return concat([
          te('HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n'),
          rng.chance(0.5)
            ? chunkedBody(audio(rng.int(5000)), rng.u16(), 1, 1500)
            : te(`${'F'.repeat(1 + rng.int(16))}\r\n`),
        ]);
      case 3:
        return concat([
          te('GET /ws HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n'),
          ...Array.from({ length: 1 + rng.int(5) }, () => this.wsFrame()),
        ]);
      case 4:
        return concat(Array.from({ length: 1 + rng.int(5) }, () => this.wsFrame()));
      case 5:
        return mediaStream(audio(160 * (1 + rng.int(20))), 160, rng.u16(), rng.chance(0.5));
      case 6:
        return sseStream(audio(320 * (1 + rng.int(10))), [320, 3200], rng.u16(), rng.chance(0.5));
      case 7:
        return te(`data: {"audio":"${'A'.repeat(rng.int(200))}${'/'.repeat(rng.int(3))}=="}\n\n`);
      default:
        return te(`HTTP/1.1 200 OK\r\nContent-Length: ${rng.int(4000)}\r\n\r\n`);
    }
  }

  private httpHead(): string {
    const rng = this.rng;
    let head = `${rng.pick(HTTP_STARTS)}\r\n`;
    for (let h = rng.int(6); h > 0; h--) {
      const r = rng.float();
      if (r < 0.3) head += `Content-Length: ${rng.u32() * rng.int(1000)}\r\n`;
      else if (r < 0.35) head += `X-Pad: ${'a'.repeat(rng.int(20000))}\r\n`;
      else head += `${rng.pick(HTTP_HEADERS)}\r\n`;
    }
    return rng.chance(0.9) ? `${head}\r\n` : head;
  }

  /** A valid frame, or a header announcing up to 2^64 - 1 bytes that never come. */
  private wsFrame(): Uint8Array {
    const rng = this.rng;
    const key = rng.chance(0.7) ? rng.bytes(4) : undefined;
    if (rng.chance(0.7)) {
      const opcode = rng.pick([0, 1, 2, 2, 2, 9, 10, 8]);
      const payload = opcode >= 8 ? rng.bytes(rng.int(126)) : rng.bytes(rng.int(3000));
      return wsFrame(payload, opcode, { key, fin: opcode >= 8 || rng.chance(0.8) });
    }
    const h = new Uint8Array(14);
    h[0] = rng.chance(0.8) ? 0x82 : rng.u8();
    h[1] = (key ? 0x80 : 0) | 127;
    const len = rng.pick([1n << 53n, (1n << 53n) - 1n, 1n << 63n, U64_MAX, rng.u64(), 65536n]);
    new DataView(h.buffer).setBigUint64(2, len);
    if (key) h.set(key, 10);
    return concat([h.subarray(0, key ? 14 : 10), rng.bytes(rng.int(2000))]);
  }

  private udpScenario(): Uint8Array[] {
    const rng = this.rng;
    const flow = rng.pick(this.flows);
    const size = 1 + rng.int(2100);
    const out: Uint8Array[] = [];
    for (let p = 1 + rng.int(24); p > 0; p--) {
      const data = rng.chance(0.95) ? rng.bytes(size) : new Uint8Array(size).fill(rng.u8());
      const h: AudioEventHeader = {
        ...flow.header,
        protocol: rng.chance(0.95) ? 17 : rng.u8(),
        tsNs: this.timestamp(),
        payloadLen: size,
        capturedLen: Math.min(size, AEV_MAX_CAPTURE),
        flags: 0,
        seq: 0,
      };
      if (rng.chance(0.1)) h.capturedLen = rng.u16();
      if (rng.chance(0.1)) h.encoding = rng.u8();
      out.push(writeAudioEvent(h, data, AEV_HEADER_SIZE + Math.min(size, h.capturedLen)));
    }
    return out;
  }

  /** Every header byte random; the record shorter than its header now and then. */
  private randomEvent(): Uint8Array {
    const rng = this.rng;
    const avail = rng.int(AEV_MAX_CAPTURE + 64);
    const record = rng.bytes(AEV_HEADER_SIZE + avail);
    const v = new DataView(record.buffer);
    const ts = rng.chance(0.5) ? this.timestamp() : v.getBigUint64(AudioEventLayout.tsNs, true);
    v.setBigUint64(AudioEventLayout.tsNs, ts > this.maxTs ? this.maxTs : ts, true);
    if (rng.chance(0.1)) return record.slice(0, rng.int(AEV_HEADER_SIZE + 1));
    return record;
  }
}

export interface ReferenceEngineConfig extends SignerConfig {
  /** MAX_FLOWS of the engine: streams held at most, the least recently used evicted. */
  maxStreams: number;
  /** FLOW_TIMEOUT_MS in ns (0: none): a stream idle longer starts over. */
  streamTimeoutNs: bigint;
}

/** One signature of ReferenceEngine, with the stream key it came from (hex). */
export interface ReferenceRecord {
  key: string;
  sig: bigint;
  tsNs: number;
  encoding: number;
  /** Position of the window's first byte in its stream (since its last restart). */
  windowStart: number;
}

interface ReferenceStream {
  signer: StreamSigner;
  lastNs: bigint;
}

export interface ReferenceEngineStats extends SignerStats {
  streamsCreated: number;
  streamsEvicted: number;
  streamsExpired: number;
  streamsEnded: number;
}

/**
 * SignatureEngine::ingest() over raw records, on the reference signer: what the engine must
 * produce for them. Allocates per record: a test model, not a data path.
 */
export class ReferenceEngine {
  private readonly streams = new Map<string, ReferenceStream>();
  private readonly retired: SignerStats = {
    bytes: 0,
    windows: 0,
    windowsSilent: 0,
    signatures: 0,
    anchorsDropped: 0,
    restarts: 0,
  };
  private created = 0;
  private evicted = 0;
  private expired = 0;
  private ended = 0;

  constructor(private readonly cfg: ReferenceEngineConfig) {
    if (!Number.isInteger(cfg.maxStreams) || cfg.maxStreams < 1)
      throw new RangeError(`ReferenceEngine: maxStreams ${cfg.maxStreams}`);
  }

  get streamsActive(): number {
    return this.streams.size;
  }

  get stats(): ReferenceEngineStats {
    const total = { ...this.retired };
    for (const s of this.streams.values()) this.addStats(total, s.signer.stats);
    return {
      ...total,
      streamsCreated: this.created,
      streamsEvicted: this.evicted,
      streamsExpired: this.expired,
      streamsEnded: this.ended,
    };
  }

  /** One record of ev.length bytes, as the ring buffer hands it over. */
  ingest(ev: Uint8Array): ReferenceRecord[] {
    if (ev.length < AEV_HEADER_SIZE) return [];
    const L = AudioEventLayout;
    const v = new DataView(ev.buffer, ev.byteOffset, ev.byteLength);
    const captured = Math.min(
      v.getUint16(L.capturedLen, true),
      ev.length - AEV_HEADER_SIZE,
      AEV_MAX_CAPTURE,
    );
    const tsNs = v.getBigUint64(L.tsNs, true);
    const key = streamKeyOf(ev);
    const stream = this.streamFor(key, tsNs);
    const protocol = ev[L.protocol];
    const flags = v.getUint16(L.flags, true);
    const sigs = stream.signer.push(
      ev[L.encoding] as Encoding,
      ev.subarray(L.data, L.data + captured),
      Number(tsNs),
      protocol === IPPROTO_TCP ? { protocol, flags, seq: v.getUint32(L.seq, true) } : undefined,
    );
    if (protocol === IPPROTO_TCP && flags & EventFlag.StreamEnd) {
      this.retire(key, stream);
      this.ended++;
    }
    return sigs.map((s) => ({
      key,
      sig: s.sig,
      tsNs: s.tsNs,
      encoding: s.encoding,
      windowStart: s.windowStart,
    }));
  }

  /** As the engine's stream_for(): find (most recently used now), restart when idle, or create. */
  private streamFor(key: string, tsNs: bigint): ReferenceStream {
    let s = this.streams.get(key);
    if (s !== undefined) {
      const idle = tsNs > s.lastNs ? tsNs - s.lastNs : 0n;
      if (this.cfg.streamTimeoutNs > 0n && idle > this.cfg.streamTimeoutNs) {
        this.addStats(this.retired, s.signer.stats);
        s.signer = new StreamSigner(this.cfg);
        this.expired++;
        this.created++;
      }
      if (tsNs > s.lastNs) s.lastNs = tsNs;
      this.streams.delete(key);
      this.streams.set(key, s);
      return s;
    }
    if (this.streams.size >= this.cfg.maxStreams) {
      const [oldestKey, oldest] = this.streams.entries().next().value as [string, ReferenceStream];
      this.retire(oldestKey, oldest);
      this.evicted++;
    }
    s = { signer: new StreamSigner(this.cfg), lastNs: tsNs };
    this.streams.set(key, s);
    this.created++;
    return s;
  }

  private retire(key: string, s: ReferenceStream): void {
    this.addStats(this.retired, s.signer.stats);
    this.streams.delete(key);
  }

  private addStats(into: SignerStats, from: SignerStats): void {
    for (const k of Object.keys(into) as Array<keyof SignerStats>) into[k] += from[k];
  }
}

/** The engine's StreamKey: addresses, ports, ifindex, direction, family, protocol (hex). */
export function streamKeyOf(ev: Uint8Array): string {
  const L = AudioEventLayout;
  return (
    Buffer.from(ev.subarray(L.saddr, L.dport + 2)).toString('hex') +
    Buffer.from(ev.subarray(L.ifindex, L.protocol + 1)).toString('hex')
  );
}

export interface SigRecordMutatorOptions {
  /** Pod IPs the valid records flow between (IPv4 or IPv6). */
  pods: readonly string[];
  /** Cgroup IDs the resolver names as hostNetwork pods: some records carry them. */
  hostPodCgroups: readonly bigint[];
  /** Share of records corrupted (default 0.5). */
  corruptShare?: number;
}

/** What a corruption did to a record (for the failure message). */
const CORRUPTIONS = [
  'random-bytes',
  'family',
  'ipv4-junk',
  'timestamp',
  'same-signature',
  'point',
  'protocol',
  'cgroup',
  'new-flow',
] as const;
export type Corruption = (typeof CORRUPTIONS)[number];

/**
 * Batches of struct sig_record: valid records between the pods at the current simulated time,
 * then a share of them corrupted. Every so often the whole batch comes from one observation
 * point, or the buffer starts at an odd offset (the decoder copies such batches).
 */
export class SigRecordMutator {
  readonly applied = new Map<Corruption, number>();
  private readonly corruptShare: number;

  constructor(
    private readonly rng: FuzzRng,
    private readonly options: SigRecordMutatorOptions,
  ) {
    this.corruptShare = options.corruptShare ?? 0.5;
  }

  /** `count` records at around `nowNs`; returns the bytes (possibly at an odd offset). */
  batch(count: number, nowNs: number): Uint8Array {
    const rng = this.rng;
    const offset = rng.chance(0.2) ? 1 + rng.int(7) : 0;
    const buf = new Uint8Array(offset + count * SIG_RECORD_SIZE + (rng.chance(0.1) ? 13 : 0));
    const records = buf.subarray(offset);
    const onePoint = rng.chance(0.1) ? { ifindex: rng.u32() >>> 1, direction: rng.int(2) } : null;
    for (let i = 0; i < count; i++) {
      const fields = this.validFields(nowNs);
      if (onePoint !== null) Object.assign(fields, onePoint);
      writeSigRecord(records, i, fields);
      if (rng.chance(this.corruptShare)) this.corrupt(records, i, nowNs);
    }
    return records;
  }

  /** One valid record's fields at about nowNs (a few microseconds of CPU skew either way). */
  validFields(nowNs: number): SigRecordFields {
    const rng = this.rng;
    const pods = this.options.pods;
    const from = rng.int(pods.length);
    let to = rng.int(pods.length - 1);
    if (to >= from) to++;
    const cgroups = this.options.hostPodCgroups;
    return {
      tsNs: Math.max(0, Math.round(nowNs + rng.int(20_000) - 10_000)),
      sigLo: rng.u32(),
      sigHi: rng.u32(),
      saddr: pods[from],
      daddr: pods[to],
      sport: 40000 + rng.int(8),
      dport: 5004,
      ifindex: 10 + rng.int(pods.length),
      direction: rng.int(2),
      protocol: rng.chance(0.8) ? 17 : 6,
      encoding: rng.int(5),
      cgroupId: rng.chance(0.1) && cgroups.length > 0 ? rng.pick(cgroups) : 0n,
    };
  }

  private corrupt(records: Uint8Array, i: number, nowNs: number): void {
    const rng = this.rng;
    const at = i * SIG_RECORD_SIZE;
    const L = SigRecordLayout;
    const v = new DataView(records.buffer, records.byteOffset + at, SIG_RECORD_SIZE);
    const kind = rng.pick(CORRUPTIONS);
    this.applied.set(kind, (this.applied.get(kind) ?? 0) + 1);
    switch (kind) {
      case 'random-bytes':
        records.set(rng.bytes(SIG_RECORD_SIZE), at);
        break;
      case 'family':
        records[at + L.family] = rng.pick([0, 1, 2, 5, 10, 128, 255, rng.u8()]);
        break;
      case 'ipv4-junk': // family 4 with bytes past the first four
        records[at + L.family] = 4;
        records.set(rng.bytes(12), at + L.saddr + 4);
        break;
      case 'timestamp':
        v.setBigUint64(L.tsNs, this.badTimestamp(nowNs), true);
        break;
      case 'same-signature':
        v.setUint32(L.sigLo, 0x5a5a5a5a, true);
        v.setUint32(L.sigHi, rng.chance(0.5) ? 0 : 0x5a5a5a5a, true);
        break;
      case 'point':
        v.setUint32(L.ifindex, rng.pick([0, 0xffffffff, 0x80000000, rng.u32()]), true);
        records[at + L.direction] = rng.u8();
        break;
      case 'protocol':
        records[at + L.protocol] = rng.u8();
        break;
      case 'cgroup':
        v.setBigUint64(
          L.cgroupId,
          rng.pick([U64_MAX, 1n, 1n << 63n, rng.u64(), ...this.options.hostPodCgroups]),
          true,
        );
        break;
      case 'new-flow': // an endpoint never seen before: the table must churn, not grow
        if (rng.chance(0.5)) {
          records[at + L.family] = 6;
          records.set(rng.bytes(16), at + L.saddr);
          records.set(rng.bytes(16), at + L.daddr);
        } else {
          records[at + L.family] = 4;
          records.fill(0, at + L.saddr, at + L.daddr + 16);
          records.set(rng.bytes(4), at + L.saddr);
          records.set(rng.bytes(4), at + L.daddr);
        }
        v.setUint16(L.sport, rng.u16(), true);
        v.setUint16(L.dport, rng.u16(), true);
        break;
    }
  }

  /** Zero, one, the maximum, past 2^53, backwards, hours ahead, or anything. */
  private badTimestamp(nowNs: number): bigint {
    const rng = this.rng;
    const now = BigInt(Math.round(nowNs));
    switch (rng.int(7)) {
      case 0:
        return 0n;
      case 1:
        return U64_MAX;
      case 2:
        return (1n << 53n) + BigInt(rng.int(1000));
      case 3:
        return now > 10n ** 10n ? now - BigInt(rng.int(1e9)) * 10n : 0n;
      case 4:
        return now + BigInt(1 + rng.int(10)) * 3_600_000_000_000n;
      case 5:
        return now + BigInt(rng.int(1e6));
      default:
        return rng.u64();
    }
  }
}
