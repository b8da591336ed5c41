/**
 * Hostile input through the user-space data path (no root, no BPF, no addon):
 *
 *  - sig_record batches (test/support/event-mutator.ts SigRecordMutator: valid records written by
 *    writeSigRecord, then random bytes, impossible families, zero / huge / backward / hours-ahead
 *    timestamps, absurd cgroup IDs, one observation point for a whole batch, odd buffer offsets)
 *    and a flood of distinct flows, through SignatureBatchDecoder -> Correlator -> HopRecorder
 *    wired as src/agent.ts wires them (EndpointTable sized and aged by MAX_FLOWS and
 *    FLOW_TIMEOUT_MS, PodLabeler, a hostNetwork cgroup resolver, the once-a-second expire timer
 *    driven by a simulated CLOCK_MONOTONIC). Nothing may throw; pending occurrences, endpoints,
 *    label values and cached label pairs stay within their bounds; and afterwards a clean chain
 *    A -> R -> B, its hops spanning timer ticks, correlates exactly: the garbage left no state
 *    behind that could change a later answer.
 *  - raw audio_event records (AudioEventMutator) through the TypeScript reference engine
 *    (ReferenceEngine over src/signature/): nothing throws, the stream table stays within
 *    MAX_FLOWS, no event yields more signatures than it has audio bytes, and a clean stream fed
 *    after garbage on the same key signs as it would have on a fresh engine.
 *
 * Runs (after `npx tsc -p tsconfig.json`):
 *   node --test dist/test/fuzz-userspace.test.js                          defaults, ~10 s
 *   FUZZ_ITERATIONS=100000 node --test dist/test/fuzz-userspace.test.js   longer, on demand
 *   FUZZ_SEED=0x1234abcd node --test dist/test/fuzz-userspace.test.js     replay a failure
 * FUZZ_ITERATIONS counts garbage batches (up to 512 records each) and reference-engine
 * scenarios; the flood sends 300 distinct flows per iteration. The seed is printed first and
 * named in every failure.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { AggregationTemporality, MeterProvider, MetricReader } from '@opentelemetry/sdk-metrics';
import {
  AEV_HEADER_SIZE,
  AEV_MAX_CAPTURE,
  AudioEventLayout,
  Direction,
  Encoding,
  EventFlag,
  SIG_RECORD_SIZE,
} from '../src/abi.js';
import { Correlator, type CorrelatorSink } from '../src/correlate/correlator.js';
import { EndpointTable, hostPodAddress } from '../src/endpoints.js';
import { HopRecorder } from '../src/hop-recorder.js';
import { OTHER, PodLabeler } from '../src/k8s/identity.js';
import {
  SignatureBatchDecoder,
  writeSigRecord,
  type CgroupSourceResolver,
  type SigRecordFields,
} from '../src/signature-batch.js';
import { encodePcmu, encodeRawLe16, speechLike, chunk } from './support/audio-fixtures.js';
import {
  AudioEventMutator,
  ReferenceEngine,
  SigRecordMutator,
  type ReferenceEngineConfig,
  type ReferenceRecord,
} from './support/event-mutator.js';
import { FuzzRng, fuzzSettings } from './support/fuzz-random.js';
import { writeAudioEvent, type AudioEventHeader } from './support/audio-event.js';
import { concat, tcpEvents, WS_UPGRADE_REQUEST, wsFrame } from './support/tcp-streams.js';

const DEFAULT_ITERATIONS = 3000;
const FLOOD_PER_ITERATION = 300;

const {
  seed: SEED,
  iterations: ITERATIONS,
  replay: REPLAY,
} = fuzzSettings('fuzz-userspace', DEFAULT_ITERATIONS);

/** Runs fn; a failure names the seed and where, so it can be replayed. */
function replayable(where: () => string, fn: () => void): void {
  try {
    fn();
  } catch (err) {
    const e = err instanceof Error ? err : new Error(String(err));
    const context = `${where()} (replay: ${REPLAY})`;
    e.message = `${e.message}\n    at ${context}`;
    e.stack = `${context}\n${e.stack ?? ''}`;
    throw e;
  }
}

const US = 1e3;
const MS = 1e6;
const S = 1e9;
/** The agent's configuration, scaled down so every bound is reached within the run. */
const FLOW_TIMEOUT_MS = 5000;
const MAX_FLOWS = 512;
const MAX_PENDING = 4096;
const MAX_LABEL_VALUES = 500;
const SERIES_TTL_MS = 60_000;
/** src/agent.ts: EXPIRE_INTERVAL_MS, and the endpoint table's size. */
const TICK_NS = 1000 * MS;
const ENDPOINT_CAPACITY = Math.max(1024, MAX_FLOWS * 2);
const PAIR_CACHE = 65536;

/** The smallest real metric reader: collect() on demand, nothing exported. */
class TestReader extends MetricReader {
  constructor() {
    super({ aggregationTemporalitySelector: () => AggregationTemporality.CUMULATIVE });
  }
  protected onForceFlush(): Promise<void> {
    return Promise.resolve();
  }
  protected onShutdown(): Promise<void> {
    return Promise.resolve();
  }
}

/** Cgroup IDs of two hostNetwork pods, as src/k8s/cgroup-ids.ts would resolve them. */
class HostPods implements CgroupSourceResolver {
  readonly cgroups: bigint[] = [0x1000n, 0x2000n | (7n << 32n)];
  private readonly byCgroup = new Map<string, Uint32Array>([
    ['0:4096', hostPodAddress('11111111-2222-3333-4444-555555555555')],
    ['7:8192', hostPodAddress('66666666-7777-8888-9999-000000000000')],
  ]);
  hostPodAddress(cgroupLo: number, cgroupHi: number): Uint32Array | null {
    return this.byCgroup.get(`${cgroupHi}:${cgroupLo}`) ?? null;
  }
}

interface Sighting {
  source: string;
  dest: string;
  seconds: number;
}

/** The agent's sink (HopRecorder), with every hop and transit also noted by address. */
class TeeSink implements CorrelatorSink {
  readonly hops: Sighting[] = [];
  readonly transits: Sighting[] = [];
  collisions = 0;
  constructor(
    private readonly inner: HopRecorder,
    private readonly endpoints: EndpointTable,
  ) {}
  hop(source: number, dest: number, seconds: number, tsNs: number, sigHi: number, sigLo: number) {
    this.inner.hop(source, dest, seconds, tsNs, sigHi, sigLo);
    this.hops.push(this.sighting(source, dest, seconds));
  }
  transit(source: number, dest: number, seconds: number) {
    this.inner.transit(source, dest, seconds);
    this.transits.push(this.sighting(source, dest, seconds));
  }
  signature(sender: number) {
    this.inner.signature(sender);
  }
  collision() {
    this.inner.collision();
    this.collisions++;
  }
  clear(): void {
    this.hops.length = 0;
    this.transits.length = 0;
    this.collisions = 0;
  }
  private sighting(source: number, dest: number, seconds: number): Sighting {
    return { source: this.endpoints.address(source), dest: this.endpoints.address(dest), seconds };
  }
}

/** src/agent.ts startStages(), for the stages after the addon, on a simulated clock. */
class Pipeline {
  readonly hostPods = new HostPods();
  readonly provider: MeterProvider;
  readonly reader = new TestReader();
  readonly labeler: PodLabeler;
  readonly endpoints: EndpointTable;
  readonly recorder: HopRecorder;
  readonly sink: TeeSink;
  readonly correlator: Correlator;
  readonly decoder: SignatureBatchDecoder;
  /** Simulated CLOCK_MONOTONIC, ns: record timestamps and the expire timer read it. */
  nowNs = 7200 * S;
  private nextTickNs = this.nowNs + TICK_NS;
  recordsFed = 0;

  constructor() {
    this.provider = new MeterProvider({ readers: [this.reader] });
    const meter = this.provider.getMeter('fuzz');
    this.labeler = new PodLabeler({
      cache: null,
      maxValues: MAX_LABEL_VALUES,
      seriesTtlMs: SERIES_TTL_MS,
      now: () => this.nowNs / MS,
    });
    const labeler = this.labeler;
    this.endpoints = new EndpointTable({
      capacity: ENDPOINT_CAPACITY,
      minIdleNs: FLOW_TIMEOUT_MS * MS,
      labeler: (ip) => labeler.labelIp(ip),
      podLabeler: (uid) => labeler.labelHostPod(uid),
    });
    labeler.watchEndpoints(this.endpoints);
    this.recorder = new HopRecorder({
      hopLatency: meter.createHistogram('audio_latency_seconds'),
      transitLatency: meter.createHistogram('audio_transit_latency_seconds'),
      signatures: meter.createCounter('audio_signatures'),
      collisions: meter.createCounter('audio_signature_collisions'),
      endpoints: this.endpoints,
      pairCacheCapacity: PAIR_CACHE,
    });
    this.sink = new TeeSink(this.recorder, this.endpoints);
    this.correlator = new Correlator(this.sink, {
      timeoutMs: FLOW_TIMEOUT_MS,
      maxPending: MAX_PENDING,
    });
    this.decoder = new SignatureBatchDecoder(this.endpoints, this.correlator, {
      cgroupSources: this.hostPods,
      localPortTtlMs: FLOW_TIMEOUT_MS,
    });
  }

  /** The addon's onSignatures callback. */
  feed(records: Uint8Array, count: number): void {
    this.decoder.decode(records, count);
    this.recordsFed += count;
  }

  /** Time passes; the agent's timer runs at every whole tick on the way. */
  advance(ns: number): void {
    this.nowNs += ns;
    while (this.nextTickNs <= this.nowNs) {
      this.tick(this.nextTickNs);
      this.nextTickNs += TICK_NS;
    }
  }

  /** The body of the agent's setInterval: expire, flush, sweep label values. */
  private tick(nowNs: number): void {
    this.correlator.expire(nowNs);
    this.recorder.flush();
    const swept = this.labeler.sweep();
    if (swept.retired > 0) {
      this.recorder.flush();
      this.labeler.forgetRetired();
    }
    if (swept.refold) this.endpoints.invalidateWhere((label) => label === OTHER);
  }

  /** Every bound the agent promises, and the books of each stage balance. */
  checkBounds(): void {
    const c = this.correlator.stats;
    assert.ok(c.pending <= MAX_PENDING, `correlator pending ${c.pending} > ${MAX_PENDING}`);
    assert.equal(c.occurrences, c.pending + c.evictions + c.expired, 'occurrences balance');
    const e = this.endpoints.stats;
    assert.ok(e.size <= ENDPOINT_CAPACITY, `endpoints ${e.size} > ${ENDPOINT_CAPACITY}`);
    const d = this.decoder.stats;
    assert.equal(d.records, this.recordsFed, 'decoder counts every record');
    const r = this.recorder.stats;
    assert.ok(r.cachedPairs <= PAIR_CACHE, `cached label pairs ${r.cachedPairs}`);
    const l = this.labeler.stats;
    assert.ok(l.values <= MAX_LABEL_VALUES, `label values ${l.values} > ${MAX_LABEL_VALUES}`);
  }
}

/** Records of distinct random flows, written straight into the batch (writeSigRecord is slow). */
function floodBatch(rng: FuzzRng, count: number, nowNs: number): Uint8Array {
  const buf = new Uint8Array(count * SIG_RECORD_SIZE);
  const v = new DataView(buf.buffer);
  for (let i = 0; i < count; i++) {
    const at = i * SIG_RECORD_SIZE;
    const v6 = rng.chance(0.3);
    v.setBigUint64(at, BigInt(Math.round(nowNs + i * 100)), true);
    v.setUint32(at + 8, rng.u32(), true);
    v.setUint32(at + 12, rng.u32(), true);
    for (let k = 0; k < (v6 ? 8 : 2); k++) {
      v.setUint32(at + 16 + (k & 3) * 4 + (k >> 2) * 16, rng.u32(), true);
    }
    v.setUint16(at + 48, rng.u16(), true);
    v.setUint16(at + 50, rng.u16(), true);
    v.setUint32(at + 52, 10 + rng.int(4), true);
    buf[at + 56] = rng.int(2);
    buf[at + 57] = v6 ? 6 : 4;
    buf[at + 58] = 17;
  }
  return buf;
}

/** The pods of the clean chain: addresses the garbage never used. */
const CHAIN = {
  A: { ip: '10.200.0.1', veth: 101 },
  R: { ip: '10.200.0.2', veth: 102 },
  B: { ip: '10.200.0.3', veth: 103 },
} as const;
type ChainPod = keyof typeof CHAIN;
/** A hostNetwork pod's socket, learned from a record stamped 2^64 - 1 ns. */
const LEARNED = { ip: '10.200.0.9', port: 7777 } as const;
const HOP_NS = 1500 * MS; // R holds the audio 1.5 s: every hop spans a timer tick
const WIRE_NS = 50 * US;

/** One packet from -> to, seen leaving the sender's veth and arriving at the receiver's. */
function packetRecords(tsNs: number, sig: number, from: ChainPod, to: ChainPod): SigRecordFields[] {
  const base = {
    sigLo: sig,
    sigHi: 0x7e570000,
    saddr: CHAIN[from].ip,
    daddr: CHAIN[to].ip,
    sport: 41000,
    dport: 5004,
    protocol: 17,
  };
  return [
    { ...base, tsNs, ifindex: CHAIN[from].veth, direction: Direction.Ingress },
    { ...base, tsNs: tsNs + WIRE_NS, ifindex: CHAIN[to].veth, direction: Direction.Egress },
  ];
}

/**
 * K signatures A -> R, each relayed R -> B 1.5 s (+ k us) later, fed in time order with the
 * timer ticking between them: every hop and transit must come out exactly.
 */
function assertCleanChainCorrelates(p: Pipeline, signatures: number): void {
  const start = p.nowNs;
  const timeline: Array<{ ts: number; fields: SigRecordFields }> = [];
  for (let k = 0; k < signatures; k++) {
    const t = start + k * 200 * MS;
    for (const f of packetRecords(t, 0x1000 + k, 'A', 'R')) timeline.push({ ts: t, fields: f });
    const relay = t + HOP_NS + k * US;
    for (const f of packetRecords(relay, 0x1000 + k, 'R', 'B'))
      timeline.push({ ts: relay, fields: f });
  }
  timeline.sort((a, b) => Number(a.fields.tsNs) - Number(b.fields.tsNs));
  const before = p.decoder.stats;
  p.sink.clear();
  const one = new Uint8Array(SIG_RECORD_SIZE);
  for (const { fields } of timeline) {
    const ts = Number(fields.tsNs);
    if (ts > p.nowNs) p.advance(ts - p.nowNs);
    writeSigRecord(one, 0, fields);
    p.feed(one, 1);
  }
  const after = p.decoder.stats;
  assert.equal(after.endpointsFull, before.endpointsFull, 'clean records found no endpoint room');
  assert.equal(after.badFamily, before.badFamily);
  const { hops, transits, collisions } = p.sink;
  assert.equal(collisions, 0, 'collisions on the clean chain');
  assert.equal(hops.length, signatures, `hops of the clean chain (${hops.length})`);
  hops.forEach((h, k) => {
    assert.equal(h.source, CHAIN.A.ip);
    assert.equal(h.dest, CHAIN.R.ip);
    const want = (HOP_NS + k * US) / S;
    assert.ok(Math.abs(h.seconds - want) < 1e-9, `hop ${k}: ${h.seconds} s, want ${want} s`);
  });
  assert.equal(transits.length, 2 * signatures, 'one transit per flow and signature');
  for (const t of transits) assert.ok(Math.abs(t.seconds - WIRE_NS / S) < 1e-12);
}

/**
 * 30 s of valid records at 200 new occurrences a second (a fifth of MAX_PENDING per timeout):
 * nothing is evicted, occurrences expire by time, and what is pending is what the last timeout
 * brought.
 */
function assertCleanTrafficDrains(p: Pipeline, clean: SigRecordMutator): void {
  const before = p.correlator.stats;
  const batchNs = 50 * MS;
  const perBatch = 10;
  for (let t = 0; t < 30 * S; t += batchNs) {
    p.feed(clean.batch(perBatch, p.nowNs), perBatch);
    p.advance(batchNs);
    p.checkBounds();
  }
  const after = p.correlator.stats;
  assert.equal(after.evictions, before.evictions, 'clean traffic evicted pending occurrences');
  assert.ok(after.expired > before.expired, 'clean occurrences expire by time');
  const perTimeout = (perBatch * FLOW_TIMEOUT_MS * MS) / batchNs;
  assert.ok(
    after.pending >= perTimeout * 0.75 && after.pending <= perTimeout * 1.25,
    `pending ${after.pending}: want about ${perTimeout}, what one timeout brings`,
  );
}

describe('fuzz: sig_record batches through decoder, correlator and hop recorder', () => {
  it('survives garbage and floods within every bound, and still correlates exactly', async () => {
    const rng = new FuzzRng(SEED);
    const p = new Pipeline();
    const pods = ['10.1.0.1', '10.1.0.2', '10.1.0.3', '10.1.0.4', '10.1.0.5'];
    const v6pods = ['fd00::1', 'fd00::2', 'fd00::3'];
    const mutators = [
      new SigRecordMutator(rng, { pods, hostPodCgroups: p.hostPods.cgroups }),
      new SigRecordMutator(rng, { pods: v6pods, hostPodCgroups: p.hostPods.cgroups }),
    ];
    let batch = 0;
    const t0 = performance.now();
    replayable(
      () => `garbage batch ${batch}`,
      () => {
        for (; batch < ITERATIONS; batch++) {
          const count = rng.chance(0.02) ? 0 : 1 + rng.int(rng.chance(0.9) ? 64 : 512);
          p.feed(rng.pick(mutators).batch(count, p.nowNs), count);
          p.advance(rng.int(40) * MS);
          p.checkBounds();
        }
      },
    );
    let flood = 0;
    const floodRecords = ITERATIONS * FLOOD_PER_ITERATION;
    replayable(
      () => `flood record ${flood}`,
      () => {
        for (; flood < floodRecords; flood += 4096) {
          const count = Math.min(4096, floodRecords - flood);
          p.feed(floodBatch(rng, count, p.nowNs), count);
          p.advance(count * 100);
          p.checkBounds();
        }
      },
    );
    // A hostNetwork pod's record with a bogus timestamp teaches the decoder its local port.
    const bogusPort = new Uint8Array(SIG_RECORD_SIZE);
    writeSigRecord(bogusPort, 0, {
      ...packetRecords(0, 0xbad, 'A', 'R')[0],
      tsNs: (1n << 64n) - 1n,
      saddr: LEARNED.ip,
      sport: LEARNED.port,
      direction: Direction.Egress,
      cgroupId: p.hostPods.cgroups[0],
    });
    p.feed(bogusPort, 1);
    const garbageMs = performance.now() - t0;
    const stats = {
      decoder: p.decoder.stats,
      endpoints: p.endpoints.stats,
      correlator: p.correlator.stats,
    };
    // Every bound was reached, not merely respected.
    assert.ok(stats.correlator.evictions > 0, 'the pending table filled');
    assert.ok(stats.correlator.expired > 0, 'occurrences expired');
    assert.ok(stats.endpoints.size === ENDPOINT_CAPACITY, 'the endpoint table filled');
    assert.ok(stats.endpoints.reclaimed > 0 && stats.endpoints.rejected > 0, 'endpoints churned');
    assert.ok(stats.decoder.badFamily > 0 && stats.decoder.endpointsFull > 0);
    assert.ok(stats.decoder.hostPodSources > 0, 'hostNetwork attribution ran');
    for (const m of mutators)
      assert.ok(m.applied.size >= 9 || ITERATIONS < 100, 'every corruption');

    // The agent idles past the timeout, then clean traffic flows: fewer occurrences per timeout
    // than the table holds, so state must drain by time alone, never by eviction.
    p.advance(3 * FLOW_TIMEOUT_MS * MS);
    replayable(
      () => 'clean traffic after the garbage',
      () =>
        assertCleanTrafficDrains(
          p,
          new SigRecordMutator(rng, { pods, hostPodCgroups: [], corruptShare: 0 }),
        ),
    );
    // The port learned from the bogus record expired like any other: what is sent to it now is
    // the address's, not the pod's.
    replayable(
      () => 'a port learned from a bogus timestamp',
      () => {
        const before = p.decoder.stats.hostPodDestinations;
        const toLearned = new Uint8Array(SIG_RECORD_SIZE);
        writeSigRecord(toLearned, 0, {
          ...packetRecords(p.nowNs, 0xbad, 'A', 'R')[0],
          daddr: LEARNED.ip,
          dport: LEARNED.port,
        });
        p.feed(toLearned, 1);
        assert.equal(p.decoder.stats.hostPodDestinations, before, 'sent to an expired port');
      },
    );
    // And a clean chain correlates exactly, its hops spanning timer ticks.
    replayable(
      () => 'clean chain after the garbage',
      () => {
        assertCleanChainCorrelates(p, 40);
        p.checkBounds();
      },
    );
    const { errors } = await p.reader.collect();
    assert.deepEqual(errors, [], 'the SDK took every sample');
    await p.provider.shutdown();
    console.log(
      `fuzz-userspace: ${stats.decoder.records} records (${batch} garbage batches, ${floodRecords} ` +
        `flood) in ${(garbageMs / 1000).toFixed(1)} s: ${stats.decoder.badFamily} bad family, ` +
        `${stats.decoder.endpointsFull} without endpoint room, ${stats.correlator.evictions} ` +
        `evicted, ${stats.correlator.expired} expired, ${stats.endpoints.reclaimed} endpoints ` +
        `reclaimed; pending ${stats.correlator.pending}/${MAX_PENDING}, endpoints ` +
        `${stats.endpoints.size}/${ENDPOINT_CAPACITY}`,
    );
  });

  it('rejects a batch shorter than its count, or a bad count, and carries on', () => {
    const p = new Pipeline();
    const rng = new FuzzRng(SEED ^ 0x5eed);
    const m = new SigRecordMutator(rng, { pods: ['10.1.0.1', '10.1.0.2'], hostPodCgroups: [] });
    const records = m.batch(4, p.nowNs);
    for (const count of [5, -1, 1.5, Number.NaN, Number.POSITIVE_INFINITY]) {
      assert.throws(() => p.decoder.decode(records, count), RangeError, `count ${count}`);
    }
    assert.equal(p.decoder.stats.batches, 0);
    assert.equal(p.decoder.stats.records, 0);
    assert.doesNotThrow(() => p.decoder.decode(records, 4));
    assert.doesNotThrow(() => p.decoder.decode(new Uint8Array(0), 0));
    p.recordsFed = 4;
    p.checkBounds();
  });
});

const SIGNER: ReferenceEngineConfig = {
  algorithm: 'xxhash',
  windowSize: 256,
  silenceThreshold: 256,
  maxStreams: 4,
  streamTimeoutNs: 1_000_000_000n,
};

/** A stream key's header fields: the garbage is re-keyed onto it before the clean stream. */
function keyHeader(protocol: number, sport: number): AudioEventHeader {
  const saddr = new Uint8Array(16);
  const daddr = new Uint8Array(16);
  saddr.set([10, 3, 0, 1]);
  daddr.set([10, 3, 0, 2]);
  return {
    tsNs: 0n,
    ifindex: 21,
    direction: Direction.Egress,
    family: 4,
    protocol,
    encoding: Encoding.Pcmu,
    saddr,
    daddr,
    sport,
    dport: 5004,
    payloadOff: 42,
    payloadLen: 0,
    capturedLen: 0,
    flags: 0,
    seq: 0,
    cgroupId: 0n,
  };
}

/** The record with its stream key (addresses, ports, point, family, protocol) set to h's. */
function rekey(ev: Uint8Array, h: AudioEventHeader): Uint8Array {
  if (ev.length < AEV_HEADER_SIZE) return ev;
  const keyed = writeAudioEvent(h, new Uint8Array(0), AEV_HEADER_SIZE);
  const out = Uint8Array.from(ev);
  const L = AudioEventLayout;
  out.set(keyed.subarray(L.ifindex, L.protocol + 1), L.ifindex);
  out.set(keyed.subarray(L.saddr, L.dport + 2), L.saddr);
  return out;
}

function capturedOf(ev: Uint8Array): number {
  if (ev.length < AEV_HEADER_SIZE) return 0;
  const v = new DataView(ev.buffer, ev.byteOffset, ev.byteLength);
  return Math.min(
    v.getUint16(AudioEventLayout.capturedLen, true),
    ev.length - AEV_HEADER_SIZE,
    AEV_MAX_CAPTURE,
  );
}

const text = (r: ReferenceRecord): string => `${r.sig.toString(16)} enc=${r.encoding} ts=${r.tsNs}`;

describe('fuzz: raw audio_event records through the TypeScript reference engine', () => {
  it('never throws, keeps the stream table bounded, and no event signs more than it carries', () => {
    const rng = new FuzzRng(SEED ^ 0x0ddba11);
    const engine = new ReferenceEngine(SIGNER);
    const mutator = new AudioEventMutator(rng);
    let scenario = 0;
    let events = 0;
    let bytes = 0;
    let signatures = 0;
    replayable(
      () => `scenario ${scenario}, event ${events}`,
      () => {
        for (; scenario < ITERATIONS; scenario++) {
          for (const ev of mutator.scenario()) {
            const audio = capturedOf(ev);
            const out = engine.ingest(ev);
            events++;
            bytes += audio;
            signatures += out.length;
            // Bytes held back by the framing (sniffing, a text run's start) come out later.
            assert.ok(out.length <= audio + 256 + 64, `${out.length} signatures from ${audio} B`);
            assert.ok(engine.streamsActive <= SIGNER.maxStreams);
          }
        }
      },
    );
    const s = engine.stats;
    assert.equal(s.bytes, bytes, 'every captured byte counted, no more');
    assert.equal(s.signatures, signatures);
    assert.equal(s.windows, s.windowsSilent + s.signatures);
    assert.equal(
      engine.streamsActive,
      s.streamsCreated - s.streamsEvicted - s.streamsExpired - s.streamsEnded,
    );
    if (ITERATIONS >= 200) {
      assert.ok(signatures > 0 && s.restarts > 0 && s.streamsEvicted > 0 && s.streamsEnded > 0);
    }
    console.log(
      `fuzz-userspace: reference engine, ${events} events (${bytes} B) in ${ITERATIONS} scenarios: ` +
        `${signatures} signatures, ${s.restarts} restarts, ${s.streamsEvicted} evicted, ` +
        `${s.streamsExpired} expired, ${s.streamsEnded} ended`,
    );
  });

  it('signs a clean stream after garbage on its key as a fresh engine does', () => {
    const rng = new FuzzRng(SEED ^ 0xc1ea4);
    const speech = speechLike({ seconds: 8, seed: 77 });
    const tcpKey = keyHeader(6, 42001);
    const udpKey = keyHeader(17, 42002);
    const wsStream = concat([
      WS_UPGRADE_REQUEST,
      ...chunk(encodeRawLe16(speech.samples), 640).map((p) =>
        wsFrame(p, 2, { key: Uint8Array.of(9, 8, 7, 6) }),
      ),
    ]);
    const cleanTcp = tcpEvents(chunk(wsStream, 1448), 777).map((e, i) =>
      writeAudioEvent(
        {
          ...tcpKey,
          tsNs: BigInt(9e15 + i * 20e6),
          seq: e.seq,
          flags: e.flags,
          payloadLen: e.audio.length,
          capturedLen: e.audio.length,
        },
        e.audio,
      ),
    );
    const cleanUdp = chunk(encodePcmu(speech.samples), 160).map((audio, i) =>
      writeAudioEvent(
        { ...udpKey, tsNs: BigInt(9e15 + i * 20e6), payloadLen: 160, capturedLen: 160 },
        audio,
      ),
    );
    assert.ok(cleanTcp[0][AudioEventLayout.flags] & EventFlag.StreamStart);

    const fresh = new ReferenceEngine(SIGNER);
    const wantTcp = cleanTcp.flatMap((ev) => fresh.ingest(ev)).map(text);
    const wantUdp = cleanUdp.flatMap((ev) => fresh.ingest(ev));

    const dirty = new ReferenceEngine(SIGNER);
    const mutator = new AudioEventMutator(rng);
    replayable(
      () => 'garbage re-keyed onto the clean streams',
      () => {
        for (let i = 0; i < Math.max(50, ITERATIONS / 10); i++) {
          const key = rng.chance(0.5) ? tcpKey : udpKey;
          for (const ev of mutator.scenario()) dirty.ingest(rekey(ev, key));
        }
      },
    );
    const gotTcp = cleanTcp.flatMap((ev) => dirty.ingest(ev)).map(text);
    assert.ok(wantTcp.length >= 20, `${wantTcp.length} clean TCP signatures`);
    assert.deepEqual(gotTcp, wantTcp, 'TCP: a stream start forgets everything before it');

    // UDP has no start: what the garbage left (Gear state, open windows) is out of reach once
    // a signature's window, the 64 bytes before its anchor and the window before that are clean.
    const gotUdp = cleanUdp.flatMap((ev) => dirty.ingest(ev));
    const reach = 64 + 2 * SIGNER.windowSize;
    const late = wantUdp.filter((r) => r.windowStart >= reach).map(text);
    assert.ok(late.length >= 20, `${late.length} clean UDP signatures`);
    assert.deepEqual(gotUdp.map(text).slice(-late.length), late, 'UDP: beyond the garbage reach');
  });
});
