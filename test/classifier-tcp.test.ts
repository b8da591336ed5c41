/**
 * TCP streams in the TC classifier (docs/tcp-streams.md, kernel part): crafted segment sequences
 * go in with BPF_PROG_TEST_RUN, events come out of the real ring buffer, counters out of the stats
 * map, stream states out of the tcp_flows map. Each test uses flows (source ports) of its own: the
 * kernel's state outlives a test.
 *
 * BPF_PROG_TEST_RUN builds its skb in one page (frames up to 3712 bytes on x86-64): the 64 KB
 * super-packet case runs on the real path instead, a TCP connection over a veth pair whose sender
 * builds GSO packets.
 */
import assert from 'node:assert/strict';
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { connect } from 'node:net';
import { after, test, type TestContext } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import {
  AEV_BULK_BYTES_PER_SEC,
  AEV_MAX_CAPTURE,
  AudioEventLayout as L,
  Direction,
  Encoding,
  EventFlag,
  KernelStat,
  TcpFlowLayout,
  TcpKeyLayout,
  TcpStateFlag,
  FlowKeyLayout,
} from '../src/abi.js';
import {
  Classifier,
  splitRawEvents,
  type ClassifierOptions,
  type TestProgram,
} from '../src/native.js';
import {
  audioBytes,
  buildTcpPacket,
  tcpTimestampOption,
  TcpFlag,
  type BuiltTcpPacket,
  type TcpPacketOptions,
} from './support/packets.js';
import { requireRoot } from './support/root.js';
import { decodeAudioEvent, type AudioEventRecord } from './support/audio-event.js';

const TC_ACT_UNSPEC = -1;
const AUDIO_PORT = 5004;
const OTHER_PORT = 6000;
const IPPROTO_TCP = 6;
const MSS = 1448;
/** The largest frame BPF_PROG_TEST_RUN takes for a TC program on x86-64 (one page of skb). */
const TEST_RUN_MAX_FRAME = 3712;

/** A record, checked to be exactly header + captured bytes. */
function decodeEvent(b: Uint8Array): AudioEventRecord {
  const ev = decodeAudioEvent(b);
  assert.equal(b.byteLength, L.data + ev.capturedLen, 'record is header + captured bytes');
  return ev;
}

interface RunResult {
  retval: number;
  events: AudioEventRecord[];
  delta: Partial<Record<keyof typeof KernelStat, number>>;
}

interface FlowState {
  sport: number;
  dport: number;
  family: number;
  protocol: number;
  ifindex: number;
  direction: number;
  nextSeq: number;
  flags: number;
}

class Harness {
  readonly events: Uint8Array[] = [];
  readonly classifier: Classifier;

  constructor(overrides: Partial<ClassifierOptions> = {}) {
    this.classifier = Classifier.open({
      ringBufferPages: 256,
      audioPorts: [{ from: AUDIO_PORT, to: AUDIO_PORT }],
      algorithm: 'xxhash',
      windowSize: 256,
      silenceThreshold: 10,
      maxFlows: 1024,
      flowTimeoutMs: 60_000,
      runStats: false,
      onSignatures: () => {},
      onRawEvents: (buf, count) => this.events.push(...splitRawEvents(buf, count)),
      ...overrides,
    });
  }

  async run(packet: Uint8Array, prog: TestProgram = 'ingress'): Promise<RunResult> {
    await this.classifier.drain();
    this.events.length = 0;
    const before = this.classifier.stats().kernel;
    const { retval } = this.classifier.testRun(prog, packet, 1);
    await this.classifier.drain();
    const now = this.classifier.stats().kernel;
    return {
      retval,
      events: this.events.splice(0).map(decodeEvent),
      delta: counters(now.map((v, i) => v - before[i])),
    };
  }

  flows(): FlowState[] {
    return this.classifier.tcpFlows().map(({ key, value }) => {
      const k = new DataView(key.buffer, key.byteOffset, key.byteLength);
      const v = new DataView(value.buffer, value.byteOffset, value.byteLength);
      assert.equal(key.byteLength, TcpKeyLayout.size);
      assert.equal(value.byteLength, TcpFlowLayout.size);
      return {
        sport: k.getUint16(TcpKeyLayout.flow + FlowKeyLayout.sport, true),
        dport: k.getUint16(TcpKeyLayout.flow + FlowKeyLayout.dport, true),
        family: key[TcpKeyLayout.flow + FlowKeyLayout.family],
        protocol: key[TcpKeyLayout.flow + FlowKeyLayout.protocol],
        ifindex: k.getUint32(TcpKeyLayout.ifindex, true),
        direction: key[TcpKeyLayout.direction],
        nextSeq: v.getUint32(TcpFlowLayout.nextSeq, true),
        flags: v.getUint32(TcpFlowLayout.flags, true),
      };
    });
  }

  /** The states of one source port (one flow, in the tests below), at either observation point. */
  flowsOf(sport: number): FlowState[] {
    return this.flows().filter((f) => f.sport === sport);
  }
}

function counters(delta: number[]): Partial<Record<keyof typeof KernelStat, number>> {
  const out: Partial<Record<keyof typeof KernelStat, number>> = {};
  for (const [name, index] of Object.entries(KernelStat) as [keyof typeof KernelStat, number][]) {
    if (delta[index] !== 0) out[name] = delta[index];
  }
  return out;
}

const harnesses: Harness[] = [];
let shared: Harness | undefined;

function harness(t: TestContext): Harness | undefined {
  if (!requireRoot(t)) return undefined;
  if (!shared) {
    shared = new Harness();
    harnesses.push(shared);
  }
  return shared;
}

after(() => {
  for (const h of harnesses) h.classifier.close();
});

/** Stream bytes that cannot be taken for a TLS record or an SSH banner. */
function streamBytes(length: number, seed: number): Uint8Array {
  const b = audioBytes(length, seed);
  if (length > 0) b[0] = 0x11;
  return b;
}

/** One flow's segments: slices of `stream`, the sequence number of stream[0] being isn. */
class Flow {
  constructor(
    readonly base: TcpPacketOptions,
    readonly stream: Uint8Array,
    readonly isn: number,
  ) {}

  /** The segment carrying stream bytes [from, to). */
  segment(from: number, to: number, extra: TcpPacketOptions = {}): BuiltTcpPacket {
    return buildTcpPacket({
      tcpOptions: tcpTimestampOption(from + 1, 7),
      ...this.base,
      ...extra,
      seq: (this.isn + from) >>> 0,
      payload: this.stream.subarray(from, to),
    });
  }
}

const ONE_EVENT = { Packets: 1, TcpSegments: 1, Audio: 1, Events: 1 };

/** The run gave exactly one event: bytes [from, to) of the flow's stream, with these flags. */
function assertTook(
  r: RunResult,
  f: Flow,
  b: BuiltTcpPacket,
  from: number,
  to: number,
  flags: number,
  what: string,
): AudioEventRecord {
  assert.equal(r.retval, TC_ACT_UNSPEC, what);
  assert.equal(r.events.length, 1, `${what}: one event`);
  const ev = r.events[0];
  assert.equal(ev.protocol, IPPROTO_TCP, what);
  assert.equal(ev.encoding, Encoding.RawLe16, what);
  assert.equal(ev.family, f.base.family ?? 4, what);
  assert.equal(ev.sport, f.base.sport, what);
  assert.equal(ev.dport, f.base.dport ?? AUDIO_PORT, what);
  assert.equal(ev.flags, flags, `${what}: flags`);
  assert.equal(ev.seq, (f.isn + from) >>> 0, `${what}: seq of data[0]`);
  assert.equal(ev.payloadLen, to - from, `${what}: length`);
  assert.equal(ev.capturedLen, to - from, `${what}: captured`);
  assert.deepEqual(ev.data, f.stream.slice(from, to), `${what}: data`);
  // payload_off points at data[0] in the packet.
  assert.deepEqual(b.bytes.slice(ev.payloadOff, ev.payloadOff + ev.capturedLen), ev.data, what);
  return ev;
}

function assertNothing(r: RunResult, expected: RunResult['delta'], what: string): void {
  assert.equal(r.retval, TC_ACT_UNSPEC, what);
  assert.equal(r.events.length, 0, `${what}: no event`);
  assert.deepEqual(r.delta, expected, what);
}

test('in-order segments: one event each, seq of data[0], STREAM_START on the first', async (t) => {
  const h = harness(t);
  if (!h) return;
  for (const family of [4, 6] as const) {
    const sport = family === 4 ? 43001 : 43002;
    const f = new Flow(
      family === 4
        ? { sport, src: '10.9.0.1', dst: '10.9.0.2' }
        : { sport, family, ipv6Ext: [{ type: 'hop' }, { type: 'dest', length: 16 }] },
      streamBytes(4 * MSS, sport),
      123_456_789,
    );
    for (let i = 0; i < 4; i++) {
      const b = f.segment(i * MSS, (i + 1) * MSS);
      const r = await h.run(b.bytes);
      assert.deepEqual(r.delta, ONE_EVENT, `segment ${i}`);
      const ev = assertTook(
        r,
        f,
        b,
        i * MSS,
        (i + 1) * MSS,
        i === 0 ? EventFlag.StreamStart : 0,
        `IPv${family} segment ${i}`,
      );
      assert.equal(ev.payloadOff, b.payloadOffset);
      assert.equal(ev.direction, Direction.Ingress);
    }
    const [state] = h.flowsOf(sport);
    assert.equal(h.flowsOf(sport).length, 1, 'one state for the flow at one observation point');
    assert.equal(state.nextSeq, f.isn + 4 * MSS);
    assert.equal(state.flags, 0);
    assert.equal(state.family, family);
    assert.equal(state.protocol, IPPROTO_TCP);
    assert.equal(state.direction, Direction.Ingress);
  }
});

test('an exact retransmission: no event, its bytes counted', async (t) => {
  const h = harness(t);
  if (!h) return;
  const f = new Flow({ sport: 43003 }, streamBytes(3 * MSS, 3), 1_000_000);
  await h.run(f.segment(0, MSS).bytes);
  const second = f.segment(MSS, 2 * MSS);
  assert.equal((await h.run(second.bytes)).events.length, 1);
  assertNothing(
    await h.run(second.bytes),
    { Packets: 1, TcpSegments: 1, TcpRetransBytes: MSS },
    'retransmitted segment',
  );
  // The stream goes on where it was.
  const third = f.segment(2 * MSS, 3 * MSS);
  assertTook(await h.run(third.bytes), f, third, 2 * MSS, 3 * MSS, 0, 'next segment');
});

test('a partial overlap is trimmed: the event starts at the first new byte', async (t) => {
  const h = harness(t);
  if (!h) return;
  const f = new Flow({ sport: 43004 }, streamBytes(3000, 4), 77);
  await h.run(f.segment(0, 1000).bytes);
  // Re-segmented retransmission: bytes 900..1500, of which 900..1000 are old.
  const b = f.segment(900, 1500);
  const r = await h.run(b.bytes);
  assert.deepEqual(r.delta, { ...ONE_EVENT, TcpRetransBytes: 100 });
  const ev = assertTook(r, f, b, 1000, 1500, 0, 'overlap');
  assert.equal(ev.payloadOff, b.payloadOffset + 100);
});

test('a hole: the next segment is taken with GAP, the late filler dropped as retransmitted', async (t) => {
  const h = harness(t);
  if (!h) return;
  const f = new Flow({ sport: 43005 }, streamBytes(5000, 5), 9_999);
  await h.run(f.segment(0, 1000).bytes);
  const ahead = f.segment(2000, 3000);
  const r = await h.run(ahead.bytes);
  assert.deepEqual(r.delta, { ...ONE_EVENT, TcpOutOfOrder: 1, TcpResync: 1 });
  assertTook(r, f, ahead, 2000, 3000, EventFlag.Gap, 'past the hole');
  // The missing bytes arrive late: older than next, dropped (the stream skips, never corrupts).
  assertNothing(
    await h.run(f.segment(1000, 2000).bytes),
    { Packets: 1, TcpSegments: 1, TcpRetransBytes: 1000 },
    'late filler',
  );
  const next = f.segment(3000, 4000);
  assertTook(await h.run(next.bytes), f, next, 3000, 4000, 0, 'in order again');
});

test('sequence numbers wrap around 2^32', async (t) => {
  const h = harness(t);
  if (!h) return;
  const isn = 2 ** 32 - 1500;
  const f = new Flow({ sport: 43006 }, streamBytes(4000, 6), isn);
  const b0 = f.segment(0, 1000);
  assertTook(await h.run(b0.bytes), f, b0, 0, 1000, EventFlag.StreamStart, 'before the wrap');
  // Bytes 1000..2000 have sequence numbers 2^32-500 .. 499: the wrap falls inside.
  const b1 = f.segment(1000, 2000);
  const r1 = await h.run(b1.bytes);
  assert.deepEqual(r1.delta, ONE_EVENT);
  assertTook(r1, f, b1, 1000, 2000, 0, 'across the wrap');
  const b2 = f.segment(2000, 3000);
  assertTook(await h.run(b2.bytes), f, b2, 2000, 3000, 0, 'after the wrap');
  assert.equal(h.flowsOf(43006)[0].nextSeq, 1500);
  // Retransmissions from before the wrap are still old: seq > next as unsigned, not as s32.
  assertNothing(
    await h.run(b0.bytes),
    { Packets: 1, TcpSegments: 1, TcpRetransBytes: 1000 },
    'pre-wrap retransmission',
  );
  const overlap = f.segment(1400, 3500);
  assertTook(await h.run(overlap.bytes), f, overlap, 3000, 3500, 0, 'overlap across the wrap');
});

test('SYN starts a stream at seq + 1; RST mid-stream ends it; the next segment starts anew', async (t) => {
  const h = harness(t);
  if (!h) return;
  const sport = 43007;
  const isn = 5000;
  const f = new Flow({ sport }, streamBytes(4000, 7), isn + 1);
  const syn = buildTcpPacket({
    sport,
    seq: isn,
    flags: TcpFlag.Syn,
    tcpOptions: Uint8Array.of(2, 4, 5, 0xb4),
  });
  assertNothing(await h.run(syn.bytes), { Packets: 1, TcpSegments: 1 }, 'SYN');
  assert.deepEqual(
    h.flowsOf(sport).map((s) => [s.nextSeq, s.flags]),
    [[isn + 1, TcpStateFlag.StartPending]],
    'the SYN made a state waiting for its first byte',
  );
  const b0 = f.segment(0, 1000);
  assertTook(await h.run(b0.bytes), f, b0, 0, 1000, EventFlag.StreamStart, 'first data');
  const b1 = f.segment(1000, 2000);
  assertTook(await h.run(b1.bytes), f, b1, 1000, 2000, 0, 'second');
  const rst = buildTcpPacket({ sport, seq: isn + 1 + 2000, flags: TcpFlag.Rst | TcpFlag.Ack });
  assertNothing(await h.run(rst.bytes), { Packets: 1, TcpSegments: 1 }, 'RST');
  assert.deepEqual(
    h.flowsOf(sport).map((s) => [s.nextSeq, s.flags]),
    [[isn + 1 + 2000, TcpStateFlag.Ended]],
    'RST marked the state ended (kept, so that retransmissions stay dropped)',
  );
  // A retransmission after the end is dropped, not taken as a new stream.
  assertNothing(
    await h.run(b1.bytes),
    { Packets: 1, TcpSegments: 1, TcpRetransBytes: 1000 },
    'retransmitted after RST',
  );
  // New bytes are a new stream (here: bytes that continue the old one).
  const b2 = f.segment(2000, 3000);
  assertTook(await h.run(b2.bytes), f, b2, 2000, 3000, EventFlag.StreamStart, 'after RST');
  // FIN with data: the last event says the stream ends; its retransmission says nothing.
  const fin = f.segment(3000, 4000, { flags: TcpFlag.Fin | TcpFlag.Ack | TcpFlag.Psh });
  assertTook(await h.run(fin.bytes), f, fin, 3000, 4000, EventFlag.StreamEnd, 'FIN');
  assert.deepEqual(
    h.flowsOf(sport).map((s) => [s.nextSeq, s.flags]),
    [[isn + 1 + 4000, TcpStateFlag.Ended]],
    'FIN marked the state ended',
  );
  assertNothing(
    await h.run(fin.bytes),
    { Packets: 1, TcpSegments: 1, TcpRetransBytes: 1000 },
    'retransmitted FIN',
  );
});

test('a SYN with data (TCP Fast Open): the data starts at seq + 1', async (t) => {
  const h = harness(t);
  if (!h) return;
  const sport = 43008;
  const f = new Flow({ sport }, streamBytes(2000, 8), 700 + 1);
  const syn = buildTcpPacket({
    sport,
    seq: 700,
    flags: TcpFlag.Syn,
    payload: f.stream.subarray(0, 500),
  });
  const r = await h.run(syn.bytes);
  assertTook(r, f, syn, 0, 500, EventFlag.StreamStart, 'SYN data');
  const b = f.segment(500, 2000);
  assertTook(await h.run(b.bytes), f, b, 500, 2000, 0, 'following data');
});

test('RST with payload: the event carries STREAM_END; a FIN alone just marks the state ended', async (t) => {
  const h = harness(t);
  if (!h) return;
  const f = new Flow({ sport: 43009 }, streamBytes(3000, 9), 1);
  await h.run(f.segment(0, 1000).bytes);
  const rst = f.segment(1000, 1100, { flags: TcpFlag.Rst | TcpFlag.Ack });
  assertTook(await h.run(rst.bytes), f, rst, 1000, 1100, EventFlag.StreamEnd, 'RST data');
  assert.deepEqual(
    h.flowsOf(43009).map((s) => s.flags),
    [TcpStateFlag.Ended],
  );
  const g = new Flow({ sport: 43010 }, streamBytes(2000, 10), 1);
  await h.run(g.segment(0, 1000).bytes);
  const fin = buildTcpPacket({ sport: 43010, seq: 1001, flags: TcpFlag.Fin | TcpFlag.Ack });
  assertNothing(await h.run(fin.bytes), { Packets: 1, TcpSegments: 1 }, 'bare FIN');
  assert.deepEqual(
    h.flowsOf(43010).map((s) => s.flags),
    [TcpStateFlag.Ended],
  );
});

test('the largest frame BPF_PROG_TEST_RUN takes: chunks of AEV_MAX_CAPTURE, seq consecutive', async (t) => {
  const h = harness(t);
  if (!h) return;
  const len = TEST_RUN_MAX_FRAME - 14 - 20 - 20;
  const f = new Flow({ sport: 43011 }, streamBytes(len + 1000, 11), 42);
  const b = buildTcpPacket({ sport: 43011, seq: 42, payload: f.stream.subarray(0, len) });
  assert.equal(b.bytes.length, TEST_RUN_MAX_FRAME);
  assert.throws(() => h.classifier.testRun('ingress', new Uint8Array(TEST_RUN_MAX_FRAME + 1)));
  const r = await h.run(b.bytes);
  const n = Math.ceil(len / AEV_MAX_CAPTURE);
  assert.equal(r.events.length, n);
  assert.deepEqual(r.delta, {
    Packets: 1,
    TcpSegments: 1,
    Audio: n,
    Events: n,
    GsoChunks: n - 1,
  });
  checkChunks(r.events, f.stream.subarray(0, len), 42, EventFlag.StreamStart);
  const next = f.segment(len, len + 1000);
  assertTook(await h.run(next.bytes), f, next, len, len + 1000, 0, 'after the chunks');
});

/** Events of one packet: chunk flags, consecutive seq, data concatenating to `payload`. */
function checkChunks(
  events: AudioEventRecord[],
  payload: Uint8Array,
  seq: number,
  firstFlags: number,
): void {
  let at = 0;
  events.forEach((ev, i) => {
    assert.equal(ev.seq, (seq + at) >>> 0, `chunk ${i} seq`);
    assert.equal(ev.flags, i === 0 ? firstFlags : EventFlag.Chunk, `chunk ${i} flags`);
    assert.ok(ev.capturedLen <= AEV_MAX_CAPTURE);
    if (i + 1 < events.length) assert.equal(ev.capturedLen, AEV_MAX_CAPTURE);
    at += ev.capturedLen;
  });
  assert.equal(at, payload.length);
  assert.deepEqual(Buffer.concat(events.map((e) => e.data)), Buffer.from(payload));
}

test('TLS and SSH at stream start: the flow is skipped from then on, counted', async (t) => {
  const h = harness(t);
  if (!h) return;
  // A ClientHello record header: handshake, TLS 1.0 record version, 512-byte record.
  const hello = audioBytes(517, 12);
  hello.set([0x16, 0x03, 0x01, 0x02, 0x00]);
  const ssh = new TextEncoder().encode('SSH-2.0-OpenSSH_9.2p1 Debian-2\r\n');
  for (const [sport, first] of [
    [43012, hello],
    [43013, ssh],
  ] as const) {
    const stream = new Uint8Array(first.length + 3 * MSS);
    stream.set(first);
    stream.set(streamBytes(3 * MSS, sport), first.length);
    const f = new Flow({ sport }, stream, 10);
    assertNothing(
      await h.run(f.segment(0, first.length).bytes),
      { Packets: 1, TcpSegments: 1, EncryptedFlows: 1, EncryptedSegments: 1 },
      'the marking segment',
    );
    assert.equal(h.flowsOf(sport)[0].flags, TcpStateFlag.Encrypted);
    for (let i = 0; i < 3; i++) {
      const at = first.length + i * MSS;
      assertNothing(
        await h.run(f.segment(at, at + MSS).bytes),
        { Packets: 1, TcpSegments: 1, EncryptedSegments: 1 },
        `later segment ${i}`,
      );
    }
  }
  // Mid-stream TLS-looking bytes are audio: only a stream's first bytes decide.
  const f = new Flow({ sport: 43014 }, streamBytes(2000, 14), 10);
  await h.run(f.segment(0, 1000).bytes);
  f.stream.set([0x17, 0x03, 0x03, 0x01, 0x00], 1000);
  const b = f.segment(1000, 2000);
  assertTook(await h.run(b.bytes), f, b, 1000, 2000, 0, 'TLS-like bytes mid-stream');
});

test('a stream faster than any audio is marked bulk once and skipped from then on', async (t) => {
  const h = harness(t);
  if (!h) return;
  const sport = 43090;
  // The first segment that takes the window past the limit is still emitted, then marks.
  const segments = Math.floor(AEV_BULK_BYTES_PER_SEC / MSS) + 1;
  const f = new Flow({ sport }, streamBytes((segments + 1) * MSS, 15), 10);
  const before = h.classifier.stats().kernel;
  // Straight through BPF_PROG_TEST_RUN, well inside one second: the ring buffer may overflow
  // meanwhile (counted as lost); the rate state is what this test is about.
  for (let i = 0; i < segments; i++) {
    h.classifier.testRun('ingress', f.segment(i * MSS, (i + 1) * MSS).bytes, 1);
  }
  await h.classifier.drain();
  const after = h.classifier.stats().kernel;
  assert.equal(after[KernelStat.BulkFlows] - before[KernelStat.BulkFlows], 1, 'marked once');
  assert.equal(after[KernelStat.BulkSegments] - before[KernelStat.BulkSegments], 0);
  assert.equal(h.flowsOf(sport)[0].flags & TcpStateFlag.Bulk, TcpStateFlag.Bulk);
  assertNothing(
    await h.run(f.segment(segments * MSS, (segments + 1) * MSS).bytes),
    { Packets: 1, TcpSegments: 1, BulkSegments: 1 },
    'a segment after the mark',
  );
});

test('one segment seen at two observation points: the same events at both', async (t) => {
  const h = harness(t);
  if (!h) return;
  const f = new Flow({ sport: 43015 }, streamBytes(6000, 15), 2 ** 32 - 2000);
  // In order, a retransmission, an overlap, a hole, the late filler, in order again.
  const plan: [number, number][] = [
    [0, 1448],
    [1448, 2896],
    [1448, 2896],
    [2500, 3500],
    [4000, 5000],
    [3500, 4000],
    [5000, 6000],
  ];
  for (const [i, [from, to]] of plan.entries()) {
    const b = f.segment(from, to);
    // Out of one pod's veth (egress), into another's (ingress): one packet, twice.
    const out = await h.run(b.bytes, 'egress');
    const into = await h.run(b.bytes, 'ingress');
    assert.deepEqual(out.delta, into.delta, `segment ${i}: counters`);
    assert.equal(out.events.length, into.events.length, `segment ${i}`);
    out.events.forEach((e, j) => {
      const g = into.events[j];
      assert.equal(e.direction, Direction.Egress);
      assert.equal(g.direction, Direction.Ingress);
      // Everything is the same but the direction, the moment (two runs, two clock reads) and
      // the sender's cgroup id (egress only).
      const same = (ev: AudioEventRecord): object => ({
        ...ev,
        direction: 0,
        tsNs: 0n,
        cgroupId: 0n,
      });
      assert.deepEqual(same(e), same(g), `segment ${i}`);
    });
  }
  const states = h.flowsOf(43015);
  assert.equal(states.length, 2, 'one state per observation point');
  assert.deepEqual(
    states.map((s) => s.direction).sort(),
    [Direction.Ingress, Direction.Egress].sort(),
  );
  for (const s of states) assert.equal(s.nextSeq, (f.isn + 6000) >>> 0);
});

test('non-audio-port TCP: PORT_MISS, no state created', async (t) => {
  const h = harness(t);
  if (!h) return;
  const before = h.flows().length;
  for (const family of [4, 6] as const) {
    for (const flags of [TcpFlag.Syn, TcpFlag.Ack | TcpFlag.Psh, TcpFlag.Fin | TcpFlag.Ack]) {
      const b = buildTcpPacket({
        family,
        sport: OTHER_PORT,
        dport: OTHER_PORT + 1,
        flags,
        payload: streamBytes(500, 16),
      });
      assertNothing(await h.run(b.bytes), { Packets: 1, PortMiss: 1 }, `IPv${family} ${flags}`);
    }
  }
  assert.equal(h.flows().length, before, 'the map did not grow');
  assert.deepEqual(h.flowsOf(OTHER_PORT), []);
});

test('pure ACKs on an audio port read no state and create none', async (t) => {
  const h = harness(t);
  if (!h) return;
  const ack = buildTcpPacket({ sport: AUDIO_PORT, dport: 43017, flags: TcpFlag.Ack });
  assertNothing(await h.run(ack.bytes), { Packets: 1, TcpSegments: 1 }, 'pure ACK');
  assert.deepEqual(h.flowsOf(AUDIO_PORT), []);
});

test('malformed TCP headers: MALFORMED, no event, no state', async (t) => {
  const h = harness(t);
  if (!h) return;
  const payload = streamBytes(10, 18);
  const cases: [string, Uint8Array][] = [
    ['data offset 4', buildTcpPacket({ sport: 43018, dataOffset: 4, payload }).bytes],
    ['data offset 0', buildTcpPacket({ sport: 43018, dataOffset: 0, payload }).bytes],
    [
      'data offset beyond the packet',
      buildTcpPacket({ sport: 43018, dataOffset: 15, payload }).bytes,
    ],
    [
      'IPv6 data offset beyond the packet',
      buildTcpPacket({ sport: 43018, family: 6, dataOffset: 8, payload }).bytes,
    ],
    [
      'IP length shorter than the TCP header',
      buildTcpPacket({ sport: 43018, ipTotalLength: 20 + 12, payload }).bytes,
    ],
    [
      'IP length beyond the frame',
      buildTcpPacket({ sport: 43018, ipTotalLength: 20 + 20 + 10 + 50, payload }).bytes,
    ],
  ];
  const full = buildTcpPacket({ sport: 43018, payload }).bytes;
  for (const [what, pkt] of cases) {
    assertNothing(await h.run(pkt), { Packets: 1, Malformed: 1 }, what);
  }
  // Truncated inside the TCP header (the kernel needs at least an Ethernet header).
  for (let len = 14 + 20 + 8; len < 14 + 20 + 20; len++) {
    assertNothing(await h.run(full.slice(0, len)), { Packets: 1, Malformed: 1 }, `cut at ${len}`);
  }
  assert.deepEqual(h.flowsOf(43018), []);
});

test('a stream idle longer than FLOW_TIMEOUT_MS starts again, counted', async (t) => {
  if (!requireRoot(t)) return;
  const h = new Harness({ flowTimeoutMs: 100 });
  harnesses.push(h);
  const f = new Flow({ sport: 43019 }, streamBytes(3000, 19), 5);
  const b0 = f.segment(0, 1000);
  assertTook(await h.run(b0.bytes), f, b0, 0, 1000, EventFlag.StreamStart, 'first');
  const b1 = f.segment(1000, 2000);
  assertTook(await h.run(b1.bytes), f, b1, 1000, 2000, 0, 'within the timeout');
  await sleep(250);
  const b2 = f.segment(2000, 3000);
  const r = await h.run(b2.bytes);
  assert.deepEqual(r.delta, { ...ONE_EVENT, TcpFlowsExpired: 1 });
  assertTook(r, f, b2, 2000, 3000, EventFlag.StreamStart, 'after the timeout');
  // An expired stream takes what comes as its new start, even old bytes.
  await sleep(250);
  const r2 = await h.run(b0.bytes);
  assert.equal(r2.delta.TcpFlowsExpired, 1);
  assertTook(r2, f, b0, 0, 1000, EventFlag.StreamStart, 'old bytes after the timeout');
});

// The real path: GSO super-packets of up to 64 KB on a veth pair.

const ID = process.pid % 100000;
const NS = `altp${ID}`;
const IF_A = `altp${ID}a`; // ours: the classifier attaches here
const IF_B = `altp${ID}b`; // peer, inside NS
const LL_OURS = 'fe80::a17:11';
const LL_PEER = 'fe80::a17:12';
const GSO_PORT = 47104;

function sh(args: string[]): string {
  return execFileSync(args[0], args.slice(1), {
    encoding: 'utf8',
    stdio: ['ignore', 'pipe', 'pipe'],
  });
}

function shQuiet(args: string[]): void {
  try {
    sh(args);
  } catch {
    // already gone
  }
}

/** A TCP sink inside NS: reads everything, prints the byte count when the peer closes. */
function startSink(): ChildProcess {
  const script = `
    const net = require('node:net');
    const srv = net.createServer((s) => {
      let n = 0;
      s.on('data', (d) => { n += d.length; });
      s.on('end', () => { s.end(); console.log('got ' + n); srv.close(); });
    });
    srv.listen(${GSO_PORT}, '::', () => console.log('listening'));
  `;
  return spawn('ip', ['netns', 'exec', NS, process.execPath, '-e', script], {
    stdio: ['ignore', 'pipe', 'inherit'],
  });
}

/** Waits for a line of the child's output; `seen` holds all of it (listeners come late). */
async function lineFrom(
  child: ChildProcess,
  seen: { text: string },
  match: RegExp,
): Promise<string> {
  for (;;) {
    const m = seen.text.match(match);
    if (m) return m[0];
    if (child.exitCode !== null) throw new Error(`sink exited before ${match}: ${seen.text}`);
    await sleep(10);
  }
}

async function sendAll(data: Uint8Array): Promise<void> {
  await new Promise<void>((resolve, reject) => {
    const sock = connect({ host: `${LL_PEER}%${IF_A}`, port: GSO_PORT, family: 6 }, () => {
      sock.end(data);
    });
    sock.on('error', reject);
    sock.on('close', () => resolve());
    sock.resume();
  });
}

test('GSO super-packets on a veth pair: chunks of one packet rebuild the stream exactly', async (t) => {
  if (!requireRoot(t)) return;
  shQuiet(['ip', 'netns', 'del', NS]);
  sh(['ip', 'netns', 'add', NS]);
  t.after(() => {
    shQuiet(['ip', 'link', 'del', IF_A]);
    shQuiet(['ip', 'netns', 'del', NS]);
  });
  sh(['ip', 'link', 'add', IF_A, 'type', 'veth', 'peer', 'name', IF_B]);
  sh(['ip', 'link', 'set', IF_B, 'netns', NS]);
  sh(['ip', '-6', 'addr', 'add', `${LL_OURS}/64`, 'dev', IF_A, 'nodad']);
  sh(['ip', 'netns', 'exec', NS, 'ip', '-6', 'addr', 'add', `${LL_PEER}/64`, 'dev', IF_B, 'nodad']);
  sh(['ip', 'link', 'set', IF_A, 'up']);
  sh(['ip', 'netns', 'exec', NS, 'ip', 'link', 'set', IF_B, 'up']);
  sh(['ip', 'netns', 'exec', NS, 'ip', 'link', 'set', 'lo', 'up']);

  const h = new Harness({ audioPorts: [{ from: GSO_PORT, to: GSO_PORT }], ringBufferPages: 4096 });
  harnesses.push(h);
  const { ifindex } = h.classifier.attach(IF_A);
  const sink = startSink();
  const seen = { text: '' };
  sink.stdout?.on('data', (d: Buffer) => (seen.text += d.toString()));
  t.after(() => sink.kill());
  await lineFrom(sink, seen, /listening/);

  const total = 4 * 1024 * 1024;
  const data = streamBytes(total, 20);
  const before = h.classifier.stats().kernel;
  await sendAll(data);
  assert.equal(await lineFrom(sink, seen, /got \d+/), `got ${total}`);
  await h.classifier.drain();
  const delta = counters(h.classifier.stats().kernel.map((v, i) => v - before[i]));
  h.classifier.detach(IF_A);

  const ours = h.events
    .map(decodeEvent)
    .filter(
      (e) => e.dport === GSO_PORT && e.direction === Direction.Egress && e.ifindex === ifindex,
    );
  assert.ok(ours.length > 0, 'events for the stream');
  assert.equal(ours[0].flags & EventFlag.StreamStart, EventFlag.StreamStart);
  // Packets: an event without CHUNK starts one; its chunks follow it, seq consecutive.
  let largest = 0;
  let packetBytes = 0;
  const isn = (ours[0].seq - 0) >>> 0;
  let at = 0;
  for (const e of ours) {
    assert.equal(e.flags & EventFlag.Gap, 0, 'no hole on a veth');
    assert.equal(e.seq, (isn + at) >>> 0, 'seq follows the bytes');
    if (!(e.flags & EventFlag.Chunk)) packetBytes = 0;
    packetBytes += e.capturedLen;
    largest = Math.max(largest, packetBytes);
    at += e.capturedLen;
  }
  assert.equal(at, total, 'every byte once');
  assert.ok(
    Buffer.from(data).equals(Buffer.concat(ours.map((e) => e.data))),
    'the events rebuild the stream byte for byte',
  );
  assert.ok((delta.GsoChunks ?? 0) > 0, `super-packets were seen: ${JSON.stringify(delta)}`);
  assert.equal(delta.Lost ?? 0, 0);
  assert.equal(delta.GsoTruncated ?? 0, 0);
  t.diagnostic(
    `largest packet seen on ${IF_A}: ${largest} bytes of payload, ${JSON.stringify(delta)}`,
  );
  assert.ok(largest > 3 * AEV_MAX_CAPTURE, `a packet of more than 3 chunks (largest ${largest})`);
});
