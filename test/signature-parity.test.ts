/**
 * The production signer (C++, in the addon's ring-buffer thread) against the TypeScript
 * reference: crafted packets go through the real kernel classifier (BPF_PROG_TEST_RUN), the
 * ring buffer and the engine, and every signature record must equal what StreamSigner computes
 * over the same payloads (as the classifier's per-flow RTP rule reads them): same values, count,
 * order, encodings and completion timestamps.
 * Needs root and BPF (skips loudly otherwise, fails under CI).
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';

import {
  AEV_MAX_CAPTURE,
  AudioEventLayout,
  Encoding,
  EventFlag,
  SigRecordLayout,
} from '../src/abi.js';
import { Classifier, splitRawEvents } from '../src/native.js';
import type { EngineStats, SignatureAlgorithm } from '../src/native.js';
import { StreamSigner } from '../src/signature/index.js';
import type { SignerConfig, SignerStats } from '../src/signature/index.js';
import {
  chunk,
  chunkRandom,
  createRng,
  encodeL16Be,
  encodePcmu,
  encodeRawLe16,
  speechLike,
} from './support/audio-fixtures.js';
import { buildTcpPacket, buildUdpPacketLayout, RtpFlowRule } from './support/packets.js';
import type { BuiltPacket, PayloadVerdict, RtpOptions } from './support/packets.js';
import { rootUnavailable, requireRoot } from './support/root.js';
import {
  chunkedBody,
  concat,
  cutRandom,
  mediaStream,
  sseStream,
  tcpEvents,
  te,
  uuid,
  WS_UPGRADE_REQUEST,
  WS_UPGRADE_RESPONSE,
  wsBinaryStream,
  wsFrame,
} from './support/tcp-streams.js';
import type { TcpEvent } from './support/tcp-streams.js';

const DPORT = 5004;
const SRC = '10.0.0.1';
const DST = '10.0.0.2';
const DRAIN_EVERY = 200; // packets between drains: keeps the ring buffer from overflowing

/** One crafted flow: its payloads in order and how to wrap each in a packet. */
interface Sequence {
  name: string;
  sport: number;
  encoding: Encoding;
  payloads: Uint8Array[];
  rtp: (index: number) => RtpOptions | undefined;
}

/** What the kernel hands the engine for one packet, by the classifier's RTP rule. */
interface ExpectedEvent {
  packet: number;
  kind: PayloadVerdict['kind'];
  encoding: Encoding;
  audio: Uint8Array;
}

interface SigRecord {
  sig: bigint;
  tsNs: number;
  encoding: number;
  sport: number;
  dport: number;
  saddr: string;
  daddr: string;
  direction: number;
  family: number;
  protocol: number;
}

interface RawEvent {
  tsNs: number;
  sport: number;
  encoding: number;
  audio: Uint8Array;
}

function ipv4(bytes: Uint8Array, at: number): string {
  return [...bytes.subarray(at, at + 4)].join('.');
}

function decodeRecords(records: Uint8Array, count: number, into: SigRecord[]): void {
  const L = SigRecordLayout;
  const view = new DataView(records.buffer, records.byteOffset, records.byteLength);
  for (let i = 0; i < count; i++) {
    const at = i * L.size;
    into.push({
      sig:
        (BigInt(view.getUint32(at + L.sigHi, true)) << 32n) |
        BigInt(view.getUint32(at + L.sigLo, true)),
      tsNs: Number(view.getBigUint64(at + L.tsNs, true)),
      encoding: records[at + L.encoding],
      sport: view.getUint16(at + L.sport, true),
      dport: view.getUint16(at + L.dport, true),
      saddr: ipv4(records, at + L.saddr),
      daddr: ipv4(records, at + L.daddr),
      direction: records[at + L.direction],
      family: records[at + L.family],
      protocol: records[at + L.protocol],
    });
  }
}

function decodeRawEvent(ev: Uint8Array): RawEvent {
  const L = AudioEventLayout;
  const view = new DataView(ev.buffer, ev.byteOffset, ev.byteLength);
  const captured = view.getUint16(L.capturedLen, true);
  return {
    tsNs: Number(view.getBigUint64(L.tsNs, true)),
    sport: view.getUint16(L.sport, true),
    encoding: ev[L.encoding],
    audio: ev.slice(L.data, L.data + captured),
  };
}

function packetOf(seq: Sequence, i: number): BuiltPacket {
  const rtp = seq.rtp(i);
  return buildUdpPacketLayout({
    src: SRC,
    dst: DST,
    sport: seq.sport,
    dport: DPORT,
    payload: seq.payloads[i],
    ...(rtp ? { rtp } : {}),
  });
}

/**
 * The events the kernel must hand over for a flow, decided by the tests' mirror of the per-flow
 * RTP rule (test/support/packets.ts RtpFlowRule; test/classifier.test.ts checks it against the
 * kernel). Raw PCM is raw from its second packet on whatever its bytes; the first packet of a flow
 * may be taken as RTP (stripped) or dropped (an RTP header that reads as comfort noise), and the
 * reference must see exactly that too.
 */
function expectedEvents(seq: Sequence): ExpectedEvent[] {
  const rule = new RtpFlowRule();
  const out: ExpectedEvent[] = [];
  seq.payloads.forEach((_, packet) => {
    const built = packetOf(seq, packet);
    const udp = built.bytes.subarray(built.udpPayloadOffset);
    const v = rule.classify(udp);
    if (v.kind === 'rtp' || v.kind === 'raw') {
      const audio = udp.slice(v.audioOffset, v.audioOffset + v.audioLength);
      out.push({ packet, kind: v.kind, encoding: v.encoding as Encoding, audio });
    }
  });
  return out;
}

/** Cut a byte stream into packets of the given sizes, cycling through them. */
function chunkSizes(bytes: Uint8Array, sizes: number[]): Uint8Array[] {
  const out: Uint8Array[] = [];
  for (let at = 0, i = 0; at < bytes.length; i++) {
    const size = sizes[i % sizes.length];
    out.push(bytes.subarray(at, at + size));
    at += size;
  }
  return out;
}

/** A byte that reads as RTP version 2 when it starts a payload. */
function looksLikeRtp(b: number): boolean {
  return b >> 6 === 2;
}

/**
 * Raw PCM re-framed so that packets start like RTP as often as the audio allows: each cut moves
 * forward by whole samples (up to 32 bytes) to a 0b10xxxxxx byte. The flow starts in voiced audio,
 * at the first sample whose packet a flow with no state would take as RTP: its first packet loses
 * its "header" to the rule, and the reference must lose it too.
 */
function rtpLookingPcmPackets(bytes: Uint8Array, sizes: number[]): Uint8Array[] {
  let start = bytes.findIndex((b) => b !== 0) & ~1;
  while (new RtpFlowRule().classify(bytes.subarray(start, start + sizes[0])).kind !== 'rtp')
    start += 2;
  const out: Uint8Array[] = [];
  for (let at = start, i = 0; at < bytes.length; i++) {
    let size = sizes[i % sizes.length];
    for (let shift = 0; shift < 32 && at + size < bytes.length; shift += 2, size += 2)
      if (looksLikeRtp(bytes[at + size])) break;
    out.push(bytes.subarray(at, at + size));
    at += size;
  }
  return out;
}

function sequences(): Sequence[] {
  const speech = speechLike({ seconds: 12, seed: 21 });
  const pcmu = encodePcmu(speech.samples);
  const l16 = encodeL16Be(speech.samples);
  const raw = encodeRawLe16(speech.samples);
  const rng = createRng(5);
  const randomSizes = (n: number, min: number, max: number, unit: number): number[] =>
    Array.from({ length: n }, () => {
      const v = min + Math.floor(rng() * (max - min + 1));
      return v - (v % unit);
    });
  const plainRtp =
    (payloadType: number) =>
    (i: number): RtpOptions => ({ payloadType, seq: i & 0xffff, timestamp: i * 160 });
  // Every fifth packet carries CSRCs, an extension and padding: the payload is unchanged.
  const busyRtp =
    (payloadType: number) =>
    (i: number): RtpOptions =>
      i % 5 === 2
        ? {
            payloadType,
            seq: i & 0xffff,
            csrcs: [0x01020304, 0x05060708],
            extension: { profile: 0xbede, words: [0x10ff0000, 0x22222222] },
            padding: 4,
          }
        : plainRtp(payloadType)(i);
  return [
    {
      name: 'RTP PCMU 160',
      sport: 41000,
      encoding: Encoding.Pcmu,
      payloads: chunk(pcmu, 160),
      rtp: plainRtp(0),
    },
    {
      name: 'RTP PCMU re-framed, CSRC/extension/padding',
      sport: 41001,
      encoding: Encoding.Pcmu,
      payloads: chunkRandom(pcmu, 8, 1, 700),
      rtp: busyRtp(0),
    },
    {
      name: 'RTP L16 320',
      sport: 41002,
      encoding: Encoding.L16Be,
      payloads: chunk(l16, 320),
      rtp: plainRtp(11),
    },
    {
      name: 'RTP L16 re-framed',
      sport: 41003,
      encoding: Encoding.L16Be,
      payloads: chunkRandom(l16, 9, 2, 1400, 2),
      rtp: busyRtp(10),
    },
    {
      name: 'raw LE16 320',
      sport: 41004,
      encoding: Encoding.RawLe16,
      payloads: chunk(raw, 320),
      rtp: () => undefined,
    },
    {
      name: 'raw LE16 re-framed',
      sport: 41005,
      encoding: Encoding.RawLe16,
      payloads: chunkSizes(raw, randomSizes(97, 14, 1200, 2)),
      rtp: () => undefined,
    },
    {
      name: 'raw LE16 re-framed, packets starting like RTP',
      sport: 41006,
      encoding: Encoding.RawLe16,
      payloads: rtpLookingPcmPackets(raw, randomSizes(61, 14, 1200, 2)),
      rtp: () => undefined,
    },
  ];
}

interface RunResult {
  records: SigRecord[];
  raw: RawEvent[];
  engine: EngineStats;
  lost: number;
}

async function runThroughAddon(cfg: SignerConfig, seqs: Sequence[]): Promise<RunResult> {
  const records: SigRecord[] = [];
  const raw: RawEvent[] = [];
  const classifier = Classifier.open({
    ringBufferPages: 1024,
    audioPorts: [{ from: DPORT, to: DPORT }],
    algorithm: cfg.algorithm as SignatureAlgorithm,
    windowSize: cfg.windowSize,
    silenceThreshold: cfg.silenceThreshold,
    maxFlows: 64,
    flowTimeoutMs: 600_000,
    onSignatures: (buf, count) => decodeRecords(buf, count, records),
    onRawEvents: (buf, count) => {
      for (const ev of splitRawEvents(buf, count)) raw.push(decodeRawEvent(ev));
    },
    runStats: false,
  });
  try {
    let sent = 0;
    for (const seq of seqs) {
      for (let i = 0; i < seq.payloads.length; i++) {
        classifier.testRun('ingress', packetOf(seq, i).bytes);
        if (++sent % DRAIN_EVERY === 0) await classifier.drain();
      }
    }
    await classifier.drain();
    const stats = classifier.stats();
    return { records, raw, engine: stats.engine, lost: stats.kernel[5] };
  } finally {
    classifier.close();
  }
}

/** The reference over the expected events, stamped with the kernel's timestamps. */
function reference(
  cfg: SignerConfig,
  events: ExpectedEvent[],
  tsNs: number[],
): { sigs: string[]; sigEvents: number[]; signer: StreamSigner } {
  const signer = new StreamSigner(cfg);
  const sigs: string[] = [];
  const sigEvents: number[] = []; // index of the event that completed each signature
  events.forEach((e, i) => {
    for (const s of signer.push(e.encoding, e.audio, tsNs[i])) {
      sigs.push(`${s.sig.toString(16)} enc=${s.encoding} ts=${s.tsNs}`);
      sigEvents.push(i);
    }
  });
  return { sigs, sigEvents, signer };
}

/** The signature and encoding, without the timestamp: what two framings of one audio share. */
function framingFreeOf(sigs: string[]): string[] {
  return sigs.map((s) => s.split(' ').slice(0, 2).join(' '));
}

/**
 * A flow that starts mid-stream, with a first packet the rule took as RTP, still signs what the
 * whole-stream flow signs once the first packet is out of reach: a signature depends on its W
 * bytes, the 64 before its anchor, and (the open-window limit) the W before that.
 */
function assertSameBeyondFirstPacket(
  cfg: SignerConfig,
  events: ExpectedEvent[],
  ref: ReturnType<typeof reference>,
  whole: string[],
): void {
  assert.equal(events[0].packet, 0);
  assert.equal(events[0].kind, 'rtp', 'the first packet is one the rule takes as RTP');
  const reach = events[0].audio.length + 64 + 2 * cfg.windowSize;
  const startOf: number[] = [];
  events.reduce((at, e) => (startOf.push(at), at + e.audio.length), 0);
  const late = framingFreeOf(ref.sigs.filter((_, i) => startOf[ref.sigEvents[i]] >= reach));
  assert.ok(late.length >= 10, `only ${late.length} signatures beyond the first packet's reach`);
  assert.deepEqual(late, whole.slice(whole.length - late.length), 'beyond the first packet');
}

const CONFIGS: SignerConfig[] = [
  { algorithm: 'xxhash', windowSize: 256, silenceThreshold: 256 },
  { algorithm: 'crc32', windowSize: 256, silenceThreshold: 256 },
  { algorithm: 'rolling_hash', windowSize: 256, silenceThreshold: 256 },
  { algorithm: 'xxhash', windowSize: 1000, silenceThreshold: 100 },
  { algorithm: 'rolling_hash', windowSize: 32, silenceThreshold: 300 },
];

describe('signature parity: addon engine vs TypeScript reference', () => {
  const seqs = sequences();
  const expected = seqs.map(expectedEvents);
  const results = new Map<SignerConfig, RunResult>();
  const unavailable = rootUnavailable();

  before(async () => {
    if (unavailable !== undefined) return;
    for (const cfg of CONFIGS) results.set(cfg, await runThroughAddon(cfg, seqs));
  });

  after(() => results.clear());

  function resultOf(cfg: SignerConfig): RunResult {
    const run = results.get(cfg);
    if (!run) throw new Error('the addon run did not happen (see before())');
    return run;
  }

  for (const cfg of CONFIGS) {
    const label = `${cfg.algorithm} W=${cfg.windowSize} threshold=${cfg.silenceThreshold}`;

    it(`${label}: the kernel hands the engine the crafted payloads, as the RTP rule reads them`, (t) => {
      if (!requireRoot(t)) return;
      const run = resultOf(cfg);
      assert.equal(run.lost, 0, 'ring buffer overflowed');
      for (const [k, seq] of seqs.entries()) {
        const events = run.raw.filter((e) => e.sport === seq.sport);
        const want = expected[k];
        assert.equal(events.length, want.length, seq.name);
        events.forEach((e, i) => {
          const what = `${seq.name} packet ${want[i].packet}`;
          assert.equal(e.encoding, want[i].encoding, what);
          assert.deepEqual(e.audio, want[i].audio, what);
        });
        if (seq.encoding !== Encoding.RawLe16) continue;
        // Raw PCM: from its second packet on, every packet is raw, all of its bytes.
        const later = want.filter((e) => e.packet > 0);
        assert.equal(later.length, seq.payloads.length - 1, `${seq.name}: a packet went missing`);
        for (const e of later) {
          assert.equal(e.kind, 'raw', `${seq.name} packet ${e.packet}`);
          assert.deepEqual(e.audio, Uint8Array.from(seq.payloads[e.packet]));
        }
      }
      // The RTP-looking flow is one: its packets start with 0x80-0xBF wherever the audio is not
      // silence (about half of them; plain 320-byte cuts: one in eight).
      const looking = seqs[6].payloads.filter((p) => looksLikeRtp(p[0])).length;
      assert.ok(
        5 * looking >= 2 * seqs[6].payloads.length,
        `${looking} of ${seqs[6].payloads.length} start like RTP`,
      );
    });

    it(`${label}: every record equals the reference, in order`, (t) => {
      if (!requireRoot(t)) return;
      const run = resultOf(cfg);
      const total = { windows: 0, windowsSilent: 0, signatures: 0, anchorsDropped: 0, bytes: 0 };
      const framingFree: string[][] = [];
      const refs: ReturnType<typeof reference>[] = [];
      for (const [k, seq] of seqs.entries()) {
        const ts = run.raw.filter((e) => e.sport === seq.sport).map((e) => e.tsNs);
        const want = reference(cfg, expected[k], ts);
        refs.push(want);
        const got = run.records.filter((r) => r.sport === seq.sport);
        for (const r of got) {
          assert.deepEqual(
            [r.saddr, r.daddr, r.dport, r.direction, r.family, r.protocol],
            [SRC, DST, DPORT, 0, 4, 17],
            `${seq.name}: flow fields`,
          );
        }
        assert.deepEqual(
          got.map((r) => `${r.sig.toString(16)} enc=${r.encoding} ts=${r.tsNs}`),
          want.sigs,
          seq.name,
        );
        assert.ok(want.sigs.length >= 10, `${seq.name}: only ${want.sigs.length} signatures`);
        framingFree.push(framingFreeOf(want.sigs));
        for (const k of Object.keys(total) as Array<keyof typeof total>)
          total[k] += want.signer.stats[k];
      }
      // The engine's counters agree with the reference's over all the flows.
      assert.equal(run.records.length, total.signatures);
      assert.equal(run.engine.signatures, total.signatures);
      assert.equal(run.engine.windows, total.windows);
      assert.equal(run.engine.windowsSilent, total.windowsSilent);
      assert.equal(run.engine.anchorsDropped, total.anchorsDropped);
      assert.equal(run.engine.bytes, total.bytes);
      assert.equal(run.engine.streamsCreated, seqs.length);
      // Re-framing (and RTP header variety) changed nothing: pairs of flows carry the same audio.
      assert.deepEqual(framingFree[1], framingFree[0], 'PCMU re-framed');
      assert.deepEqual(framingFree[3], framingFree[2], 'L16 re-framed');
      assert.deepEqual(framingFree[5], framingFree[4], 'raw LE16 re-framed');
      assertSameBeyondFirstPacket(cfg, expected[6], refs[6], framingFree[4]);
      console.log(
        `parity ${label}: ${total.signatures} signatures, ${total.windowsSilent} silent windows, identical`,
      );
    });
  }
});

/* ------------------------------------------------------------------------------------------ */
/* TCP (docs/tcp-streams.md): the engine's framing layer against the reference's.              */
/* ------------------------------------------------------------------------------------------ */

/** One TCP (or UDP) stream as events: what the classifier hands the engine. */
interface EventStream {
  name: string;
  sport: number;
  protocol: number;
  events: TcpEvent[];
}

const TCP_AUDIO = encodeRawLe16(speechLike({ seconds: 4, sampleRate: 16000, seed: 81 }).samples);
const TCP_PCMU = encodePcmu(speechLike({ seconds: 4, seed: 82 }).samples);

function withHoleAt(evs: TcpEvent[], hole: number, flag: number = EventFlag.Gap): TcpEvent[] {
  return evs
    .filter((_, i) => i !== hole)
    .map((e, i) => (i === hole ? { ...e, flags: e.flags | flag } : e));
}

/** Some events continue a super-packet (AEV_F_CHUNK): only hunting for a frame reads it. */
function markChunks(evs: TcpEvent[], seed: number): TcpEvent[] {
  const rng = createRng(seed);
  return evs.map((e, i) => (i > 0 && rng() < 0.3 ? { ...e, flags: e.flags | EventFlag.Chunk } : e));
}

function tcpStreams(): EventStream[] {
  const a = TCP_AUDIO;
  const ws = (client: boolean, seed: number): Uint8Array =>
    concat([client ? WS_UPGRADE_REQUEST : WS_UPGRADE_RESPONSE, wsBinaryStream(a, seed, client)]);
  const sse = concat([
    te('HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n'),
    chunkedBody(sseStream(a, [3200], 83, false), 84, 100, 9000),
  ]);
  const sseRelay = concat([
    te('HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n\r\n'),
    sseStream(a, [1000, 5400, 2222], 85, true),
  ]);
  const post = concat([
    te(
      'POST /stt HTTP/1.1\r\nContent-Type: application/octet-stream\r\nTransfer-Encoding: chunked\r\n\r\n',
    ),
    chunkedBody(a, 86, 1, 3000),
  ]);
  const key = Uint8Array.of(0xde, 0xad, 0xbe, 0xef);
  const frames = chunkRandom(a, 87, 600, 1400, 2).map((p) => wsFrame(p, 2, { key }));
  const perSegment = tcpEvents([WS_UPGRADE_REQUEST, ...frames], 0xfffff000); // wraps around
  const raw = tcpEvents(cutRandom(a, 88, 1, 1448));
  const json = te(
    Array.from(
      { length: 2000 },
      (_, n) => `{"seq":${n},"id":"${uuid(createRng(n))}","v":${n * 7}}\n`,
    ).join(''),
  );
  // The stream ends with event 58 (FIN); the tuple's next bytes are a new stream, without a flag.
  const ended = raw
    .slice(0, 59)
    .map((e, i) => (i === 58 ? { ...e, flags: EventFlag.StreamEnd as number } : e));
  const afterEnd = tcpEvents(cutRandom(a.subarray(50000), 89, 1, 1448), 5).map((e) => ({
    ...e,
    flags: 0,
  }));
  return [
    { name: 'raw L16, odd cuts', sport: 42000, protocol: 6, events: raw },
    {
      name: 'WebSocket client, masked',
      sport: 42001,
      protocol: 6,
      events: markChunks(tcpEvents(cutRandom(ws(true, 90), 91, 1, 1448)), 92),
    },
    {
      name: 'WebSocket server',
      sport: 42002,
      protocol: 6,
      events: tcpEvents(cutRandom(ws(false, 93), 94, 1, AEV_MAX_CAPTURE)),
    },
    {
      name: 'SSE hex, chunked',
      sport: 42003,
      protocol: 6,
      events: tcpEvents(cutRandom(sse, 95, 1, 1448)),
    },
    {
      name: 'SSE hex, relay',
      sport: 42004,
      protocol: 6,
      events: tcpEvents(cutRandom(sseRelay, 96, 1, 1448)),
    },
    {
      name: 'WebSocket base64 mu-law',
      sport: 42005,
      protocol: 6,
      events: tcpEvents(
        cutRandom(concat([WS_UPGRADE_REQUEST, mediaStream(TCP_PCMU, 160, 97, true)]), 98, 1, 1448),
      ),
    },
    {
      name: 'WebSocket base64 mu-law, relay',
      sport: 42006,
      protocol: 6,
      events: tcpEvents(
        cutRandom(
          concat([WS_UPGRADE_RESPONSE, mediaStream(TCP_PCMU, 480, 99, false)]),
          100,
          1,
          700,
        ),
      ),
    },
    {
      name: 'POST chunked octet-stream',
      sport: 42007,
      protocol: 6,
      events: tcpEvents(cutRandom(post, 101, 1, 1448)),
    },
    { name: 'raw, odd gap', sport: 42008, protocol: 6, events: withHoleAt(raw, 40) },
    {
      name: 'raw, lost event (no flag)',
      sport: 42009,
      protocol: 6,
      events: raw.filter((_, i) => i !== 50),
    },
    {
      name: 'WebSocket, gap in a payload',
      sport: 42010,
      protocol: 6,
      events: withHoleAt(
        tcpEvents(
          cutRandom(
            concat([
              WS_UPGRADE_REQUEST,
              ...cutRandom(a, 102, 6000, 9000).map((p) => wsFrame(p, 2, { key })),
            ]),
            103,
            1000,
            1448,
          ),
        ),
        20,
      ),
    },
    {
      name: 'WebSocket, gap hiding a header, seq wrap',
      sport: 42011,
      protocol: 6,
      events: withHoleAt(perSegment, 30),
    },
    {
      name: 'chunked, gap',
      sport: 42012,
      protocol: 6,
      events: withHoleAt(tcpEvents(cutRandom(post, 104, 500, 1448)), 100),
    },
    {
      name: 'SSE, gaps',
      sport: 42013,
      protocol: 6,
      events: withHoleAt(withHoleAt(tcpEvents(cutRandom(sse, 105, 1, 1448)), 100), 300),
    },
    {
      name: 'JSON without audio',
      sport: 42014,
      protocol: 6,
      events: tcpEvents(cutRandom(json, 106, 1, 1448)),
    },
    {
      name: 'stream end, then a new stream',
      sport: 42015,
      protocol: 6,
      events: [...ended, ...afterEnd],
    },
    {
      name: 'UDP raw',
      sport: 42016,
      protocol: 17,
      events: chunk(a, 320).map((audio) => ({ audio, flags: 0, seq: 0 })),
    },
  ];
}

/** struct audio_event for one event, as the ring buffer holds it. */
function eventRecord(s: EventStream, e: TcpEvent, tsNs: number): Uint8Array {
  const L = AudioEventLayout;
  const rec = new Uint8Array(L.data + e.audio.length);
  const v = new DataView(rec.buffer);
  v.setBigUint64(L.tsNs, BigInt(tsNs), true);
  v.setUint32(L.ifindex, 7, true);
  rec[L.family] = 4;
  rec[L.protocol] = s.protocol;
  rec[L.encoding] = Encoding.RawLe16;
  rec.set([10, 0, 0, 1], L.saddr);
  rec.set([10, 0, 0, 2], L.daddr);
  v.setUint16(L.sport, s.sport, true);
  v.setUint16(L.dport, DPORT, true);
  v.setUint16(L.payloadLen, e.audio.length, true);
  v.setUint16(L.capturedLen, e.audio.length, true);
  v.setUint16(L.flags, e.flags, true);
  v.setUint32(L.seq, e.seq >>> 0, true);
  rec.set(e.audio, L.data);
  return rec;
}

/** Harness input: [u32 length][u32 0][event], each padded to 8 bytes (events stay aligned). */
function harnessInput(streams: EventStream[]): { file: Uint8Array; bytes: number } {
  const parts: Uint8Array[] = [];
  let ts = 1000;
  let bytes = 0;
  for (const s of streams) {
    for (const e of s.events) {
      const rec = eventRecord(s, e, ts++);
      const entry = new Uint8Array(8 + ((rec.length + 7) & ~7));
      new DataView(entry.buffer).setUint32(0, rec.length, true);
      entry.set(rec, 8);
      parts.push(entry);
      bytes += e.audio.length;
    }
  }
  return { file: concat(parts), bytes };
}

function referenceOf(
  cfg: SignerConfig,
  streams: EventStream[],
): { sigs: string[]; stats: SignerStats } {
  const sigs: string[] = [];
  const stats: SignerStats = {
    bytes: 0,
    windows: 0,
    windowsSilent: 0,
    signatures: 0,
    anchorsDropped: 0,
    restarts: 0,
  };
  let ts = 1000;
  for (const s of streams) {
    const signer = new StreamSigner(cfg);
    for (const e of s.events) {
      const opts = { protocol: s.protocol, flags: e.flags, seq: e.seq };
      for (const r of signer.push(Encoding.RawLe16, e.audio, ts++, opts))
        sigs.push(`${s.sport} ${r.sig.toString(16)} enc=${r.encoding} ts=${r.tsNs}`);
    }
    for (const k of Object.keys(stats) as Array<keyof SignerStats>) stats[k] += signer.stats[k];
  }
  return { sigs, stats };
}

const HARNESS_SRC = `
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <vector>
#include "engine.h"
using namespace alt;
int main(int argc, char **argv)
{
	if (argc < 7)
		return 2;
	FILE *f = fopen(argv[1], "rb");
	if (!f)
		return 3;
	fseek(f, 0, SEEK_END);
	long size = ftell(f);
	fseek(f, 0, SEEK_SET);
	std::vector<uint64_t> buf((size + 7) / 8);
	if (fread(buf.data(), 1, size, f) != (size_t)size)
		return 4;
	fclose(f);
	const uint8_t *base = (const uint8_t *)buf.data();
	std::vector<std::pair<size_t, size_t>> evs;
	for (size_t at = 0; at < (size_t)size;) {
		uint32_t len = *(const uint32_t *)(base + at);
		evs.push_back({ at + 8, len });
		at += 8 + ((len + 7) & ~7u);
	}
	EngineConfig cfg{ (Algorithm)atoi(argv[3]), (uint32_t)atoi(argv[4]), (uint32_t)atoi(argv[5]), 64, 0 };
	int reps = atoi(argv[6]);
	SignatureEngine eng(cfg);
	std::vector<struct sig_record> out, all;
	out.reserve(1024);
	auto t0 = std::chrono::steady_clock::now();
	for (int r = 0; r < reps; r++)
		for (auto &e : evs) {
			out.clear();
			eng.ingest((const struct audio_event *)(base + e.first), e.second, out);
			if (reps == 1)
				all.insert(all.end(), out.begin(), out.end());
		}
	double ns = std::chrono::duration<double, std::nano>(std::chrono::steady_clock::now() - t0).count();
	FILE *o = fopen(argv[2], "wb");
	fwrite(all.data(), sizeof(struct sig_record), all.size(), o);
	fclose(o);
	EngineStats s = eng.stats();
	printf("{\\"ns\\":%.0f,\\"bytes\\":%llu,\\"windows\\":%llu,\\"windowsSilent\\":%llu,\\"signatures\\":%llu,"
	       "\\"anchorsDropped\\":%llu,\\"restarts\\":%llu,\\"streamsEnded\\":%llu}\\n",
	       ns, (unsigned long long)s.bytes, (unsigned long long)s.windows,
	       (unsigned long long)s.windows_silent, (unsigned long long)s.signatures,
	       (unsigned long long)s.anchors_dropped, (unsigned long long)s.stream_restarts,
	       (unsigned long long)s.streams_ended);
	return 0;
}
`;

interface HarnessResult {
  records: SigRecord[];
  stats: SignerStats & { ns: number; streamsEnded: number };
}

const ALGORITHM_ID: Record<SignatureAlgorithm, number> = { xxhash: 0, crc32: 1, rolling_hash: 2 };

/** The engine (native/signature/) compiled on its own, fed event records from a file. */
class EngineHarness {
  private readonly dir = mkdtempSync(join(tmpdir(), 'alt-engine-'));
  private readonly bin = join(this.dir, 'harness');

  constructor() {
    const sig = new URL('../../native/signature/', import.meta.url).pathname;
    const src = join(this.dir, 'harness.cc');
    writeFileSync(src, HARNESS_SRC);
    execFileSync(
      'c++',
      [
        '-std=c++17',
        '-O2',
        '-Wall',
        '-Wextra',
        '-Werror',
        '-I',
        sig,
        src,
        join(sig, 'engine.cc'),
        '-o',
        this.bin,
      ],
      {
        stdio: ['ignore', 'inherit', 'inherit'],
      },
    );
  }

  run(cfg: SignerConfig, input: Uint8Array, reps = 1): HarnessResult {
    const inFile = join(this.dir, 'events.bin');
    const outFile = join(this.dir, 'sigs.bin');
    writeFileSync(inFile, input);
    const args = [
      inFile,
      outFile,
      ALGORITHM_ID[cfg.algorithm],
      cfg.windowSize,
      cfg.silenceThreshold,
      reps,
    ].map(String);
    const stats = JSON.parse(
      execFileSync(this.bin, args, { encoding: 'utf8' }),
    ) as HarnessResult['stats'];
    const buf = new Uint8Array(readFileSync(outFile));
    const records: SigRecord[] = [];
    decodeRecords(buf, buf.length / SigRecordLayout.size, records);
    return { records, stats };
  }

  close(): void {
    rmSync(this.dir, { recursive: true, force: true });
  }
}

describe('signature parity, TCP framing: engine (compiled harness) vs TypeScript reference', () => {
  const streams = tcpStreams();
  let harness: EngineHarness | undefined;

  before(() => {
    harness = new EngineHarness();
  });
  after(() => harness?.close());

  for (const cfg of CONFIGS) {
    const label = `${cfg.algorithm} W=${cfg.windowSize} threshold=${cfg.silenceThreshold}`;
    it(`${label}: every record of every stream equals the reference`, () => {
      const h = harness as EngineHarness;
      const { file } = harnessInput(streams);
      const run = h.run(cfg, file);
      const want = referenceOf(cfg, streams);
      for (const s of streams) {
        const got = run.records
          .filter((r) => r.sport === s.sport)
          .map((r) => `${r.sport} ${r.sig.toString(16)} enc=${r.encoding} ts=${r.tsNs}`);
        assert.deepEqual(
          got,
          want.sigs.filter((x) => x.startsWith(`${s.sport} `)),
          s.name,
        );
        for (const r of run.records)
          assert.equal(r.protocol, streams.find((x) => x.sport === r.sport)?.protocol);
      }
      for (const k of [
        'bytes',
        'windows',
        'windowsSilent',
        'signatures',
        'anchorsDropped',
        'restarts',
      ] as const)
        assert.equal(run.stats[k], want.stats[k], k);
      assert.equal(run.stats.streamsEnded, 1);
      // Real work was compared: the carriers gave signatures, and gaps restarted streams.
      const count = (sport: number): number =>
        want.sigs.filter((x) => x.startsWith(`${sport} `)).length;
      for (const s of streams.filter((x) => x.name !== 'JSON without audio'))
        assert.ok(count(s.sport) >= 10, `${s.name}: ${count(s.sport)} signatures`);
      assert.equal(count(42014), 0, 'JSON without audio');
      assert.ok(want.stats.restarts >= 7);
      console.log(
        `tcp parity ${label}: ${want.stats.signatures} signatures over ${streams.length} streams, identical`,
      );
    });
  }

  it('costs: ns per byte for raw TCP, WebSocket and text-decoded audio', () => {
    const h = harness as EngineHarness;
    const cfg = CONFIGS[0];
    const long = encodeRawLe16(speechLike({ seconds: 30, sampleRate: 16000, seed: 120 }).samples);
    const pcmu = encodePcmu(speechLike({ seconds: 60, seed: 121 }).samples);
    const key = Uint8Array.of(1, 2, 3, 4);
    const carriers: Array<[string, Uint8Array]> = [
      ['raw TCP L16', long],
      [
        'WebSocket masked binary',
        concat([WS_UPGRADE_REQUEST, ...chunk(long, 640).map((p) => wsFrame(p, 2, { key }))]),
      ],
      [
        'SSE hex (text-decoded)',
        concat([
          te('HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n\r\n'),
          sseStream(long, [3200], 122, false),
        ]),
      ],
      [
        'WebSocket JSON base64 (text-decoded)',
        concat([WS_UPGRADE_REQUEST, mediaStream(pcmu, 160, 123, true)]),
      ],
    ];
    const lines: string[] = [];
    for (const [name, bytes] of carriers) {
      const s: EventStream = {
        name,
        sport: 43000,
        protocol: 6,
        events: tcpEvents(chunk(bytes, 1448)),
      };
      const { file, bytes: n } = harnessInput([s]);
      const reps = 20;
      h.run(cfg, file, 2); // warm
      const { stats } = h.run(cfg, file, reps);
      const nsPerByte = stats.ns / (n * reps);
      lines.push(
        `${name}: ${nsPerByte.toFixed(2)} ns/byte (${(((n * reps) / stats.ns) * 1000).toFixed(0)} MB/s)`,
      );
      assert.ok(nsPerByte < 50, `${name}: ${nsPerByte} ns/byte`);
    }
    console.log(
      `engine cost per wire byte (xxhash W=256, 1448-byte segments):\n  ${lines.join('\n  ')}`,
    );
  });
});

interface TcpRawEvent {
  tsNs: number;
  sport: number;
  flags: number;
  seq: number;
  protocol: number;
  audio: Uint8Array;
}

function decodeTcpRawEvent(ev: Uint8Array): TcpRawEvent {
  const L = AudioEventLayout;
  const view = new DataView(ev.buffer, ev.byteOffset, ev.byteLength);
  return {
    tsNs: Number(view.getBigUint64(L.tsNs, true)),
    sport: view.getUint16(L.sport, true),
    flags: view.getUint16(L.flags, true),
    seq: view.getUint32(L.seq, true),
    protocol: ev[L.protocol],
    audio: ev.slice(L.data, L.data + view.getUint16(L.capturedLen, true)),
  };
}

/** Segments as sent: a retransmission of segment 10 after segment 12, segment `hole` never sent. */
function sentSegments(s: EventStream, hole: number): TcpEvent[] {
  const out: TcpEvent[] = [];
  s.events.forEach((e, i) => {
    if (i !== hole) out.push(e);
    if (i === 12) out.push(s.events[10]);
  });
  return out;
}

describe('signature parity, TCP through the kernel: addon engine vs TypeScript reference', () => {
  const all = tcpStreams();
  const pick = [0, 1, 3, 5, 7].map((i) => all[i]);
  const HOLE = 70;
  const records: SigRecord[] = [];
  const raw: TcpRawEvent[] = [];
  const cfg = CONFIGS[0];
  const unavailable = rootUnavailable();
  let lost = 0;

  before(async () => {
    if (unavailable !== undefined) return;
    const classifier = Classifier.open({
      ringBufferPages: 1024,
      audioPorts: [{ from: DPORT, to: DPORT }],
      algorithm: cfg.algorithm as SignatureAlgorithm,
      windowSize: cfg.windowSize,
      silenceThreshold: cfg.silenceThreshold,
      maxFlows: 64,
      flowTimeoutMs: 600_000,
      onSignatures: (buf, count) => decodeRecords(buf, count, records),
      onRawEvents: (buf, count) => {
        for (const ev of splitRawEvents(buf, count)) raw.push(decodeTcpRawEvent(ev));
      },
      runStats: false,
    });
    try {
      let sent = 0;
      for (const s of pick) {
        for (const e of sentSegments(s, HOLE)) {
          const p = buildTcpPacket({
            src: SRC,
            dst: DST,
            sport: s.sport,
            dport: DPORT,
            seq: e.seq,
            payload: e.audio,
          });
          classifier.testRun('ingress', p.bytes);
          if (++sent % DRAIN_EVERY === 0) await classifier.drain();
        }
      }
      await classifier.drain();
      lost = classifier.stats().kernel[5];
    } finally {
      classifier.close();
    }
  });

  it('the kernel hands over each stream once, in order, the hole flagged', (t) => {
    if (!requireRoot(t)) return;
    assert.equal(lost, 0, 'ring buffer overflowed');
    for (const s of pick) {
      const evs = raw.filter((e) => e.sport === s.sport);
      const want = s.events.filter((_, i) => i !== HOLE);
      assert.deepEqual(concat(evs.map((e) => e.audio)), concat(want.map((e) => e.audio)), s.name);
      assert.ok(evs.every((e) => e.protocol === 6));
      assert.ok(evs[0].flags & EventFlag.StreamStart, `${s.name}: starts`);
      assert.equal(evs.filter((e) => e.flags & EventFlag.Gap).length, 1, `${s.name}: one gap`);
    }
  });

  it("every record equals the reference over the kernel events, which is the ideal stream's", (t) => {
    if (!requireRoot(t)) return;
    for (const s of pick) {
      const evs = raw.filter((e) => e.sport === s.sport);
      const signer = new StreamSigner(cfg);
      const want: string[] = [];
      for (const e of evs) {
        for (const r of signer.push(Encoding.RawLe16, e.audio, e.tsNs, {
          protocol: 6,
          flags: e.flags,
          seq: e.seq,
        }))
          want.push(`${r.sig.toString(16)} enc=${r.encoding} ts=${r.tsNs}`);
      }
      const got = records.filter((r) => r.sport === s.sport);
      assert.deepEqual(
        got.map((r) => `${r.sig.toString(16)} enc=${r.encoding} ts=${r.tsNs}`),
        want,
        s.name,
      );
      assert.ok(got.every((r) => r.protocol === 6));
      assert.ok(want.length >= 10, `${s.name}: ${want.length} signatures`);
      // The kernel's events sign as the crafted stream with its hole does (timestamps aside).
      const ideal = referenceOf(cfg, [{ ...s, events: withHoleAt(s.events, HOLE) }]).sigs;
      assert.deepEqual(
        want.map((x) => x.split(' ').slice(0, 2).join(' ')),
        ideal.map((x) => x.split(' ').slice(1, 3).join(' ')),
        `${s.name}: ideal`,
      );
    }
  });
});
