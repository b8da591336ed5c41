/**
 * The production signer (C++, in the addon's ring-buffer thread) against the TypeScript
 * reference: crafted packets go through the real kernel classifier (BPF_PROG_TEST_RUN), the
 * ring buffer and the engine, and every signature record must equal what StreamSigner computes
 * over the same payloads (as the classifier's per-flow RTP rule reads them): same values, count,
 * order, encodings and completion timestamps.
 * Needs root and BPF (skips loudly otherwise, fails under CI).
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';

import { AudioEventLayout, Encoding, SigRecordLayout } from '../src/abi.js';
import { Classifier, splitRawEvents } from '../src/native.js';
import type { EngineStats, SignatureAlgorithm } from '../src/native.js';
import { StreamSigner } from '../src/signature/index.js';
import type { SignerConfig } from '../src/signature/index.js';
import {
  chunk,
  chunkRandom,
  createRng,
  encodeL16Be,
  encodePcmu,
  encodeRawLe16,
  speechLike,
} from './support/audio-fixtures.js';
import { buildUdpPacketLayout, RtpFlowRule } from './support/packets.js';
import type { BuiltPacket, PayloadVerdict, RtpOptions } from './support/packets.js';
import { rootUnavailable, requireRoot } from './support/root.js';

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
