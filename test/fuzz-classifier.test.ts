/**
 * Fuzzes the real TC classifier (bpf/audio_tc.bpf.o, through the addon's BPF_PROG_TEST_RUN and
 * its ring-buffer thread) with random and mutated packets, and checks every run against the
 * TypeScript reference (test/support/classifier-model.ts):
 *
 *  - the program passes the verifier at every configuration the agent can give it;
 *  - every truncation of each base packet, then FUZZ_ITERATIONS mutated packets
 *    (test/support/packet-mutator.ts), through tc_ingress and tc_egress: the verdict is always
 *    TC_ACT_UNSPEC (the classifier never drops), every event is one the reference allows, with
 *    the frame's own bytes, and the kernel counters agree (EVENTS + LOST == AUDIO, malformed,
 *    fragments, port misses counted);
 *  - the agent never wedges: every drain completes, and after the fuzz a valid audio packet still
 *    yields its event.
 *
 * RTP recognition is exact here, not only one-sided: each flow's payloads also go through
 * RtpFlowRule (test/support/packets.ts), and the kernel must give its verdict (the maps are large
 * enough that no flow state is evicted).
 *
 * Runs (root, after `npx tsc -p tsconfig.json`):
 *   node --test dist/test/fuzz-classifier.test.js           30,000 iterations; the file ~30 s
 *   FUZZ_ITERATIONS=1000000 node --test dist/test/fuzz-classifier.test.js     longer, on demand
 *   FUZZ_SEED=0x1234abcd node --test dist/test/fuzz-classifier.test.js        replay a failure
 * Frames BPF_PROG_TEST_RUN itself refuses (untagged IPv4/IPv6 shorter than the IP header, on
 * kernel 6.18) are checked to be refused and go no further: truncated IP headers reach the
 * classifier behind VLAN tags.
 * The seed is printed first; a failure names the seed, the iteration, the packet in hex, the
 * mutations that made it and what the reference allowed. Speed is measured by
 * test/bench/fuzz-cost.ts, not asserted here.
 */
import assert from 'node:assert/strict';
import { after, test } from 'node:test';
import { EventFlag, KERNEL_STAT_COUNT, KernelStat } from '../src/abi.js';
import {
  Classifier,
  NativeError,
  splitRawEvents,
  type ClassifierOptions,
  type PortRange,
  type TestProgram,
} from '../src/native.js';
import {
  checkObservation,
  classifyPacket,
  describeReference,
  sparse,
  type Reference,
  type UdpAlternative,
} from './support/classifier-model.js';
import {
  BaseFactory,
  garbage,
  MIN_FRAME,
  mutate,
  TEST_RUN_MAX_FRAME,
  testRunRefuses,
  type BasePacket,
} from './support/packet-mutator.js';
import { FuzzRng, fuzzSettings } from './support/fuzz-random.js';
import { decodeAudioEvent, type AudioEventRecord } from './support/audio-event.js';
import {
  audioBytes,
  buildTcpPacket,
  buildUdpPacketLayout,
  RtpFlowRule,
  TcpFlag,
  type BuiltTcpPacket,
} from './support/packets.js';
import { requireRoot } from './support/root.js';

const TC_ACT_UNSPEC = -1;
const DEFAULT_ITERATIONS = 30_000;
/** The list harness's AUDIO_PORTS; the mutator puts ports on them most of the time. */
const AUDIO_PORTS = [5004, 5005, 6000, 8000, 65535];
const MAX_FLOWS = 1_000_000;
/** Runs between drains: events are matched to their runs by the per-run EVENTS delta. */
const FLUSH_EVERY = 128;
const DRAIN_TIMEOUT_MS = 10_000;
/** Failures listed in one report. */
const MAX_REPORTED = 5;

const { seed: SEED, iterations: ITERATIONS } = fuzzSettings('fuzz-classifier', DEFAULT_ITERATIONS);
const PROGRAMS: readonly TestProgram[] = ['ingress', 'egress'];

const seedText = `FUZZ_SEED=0x${SEED.toString(16).padStart(8, '0')}`;

function hex(b: Uint8Array): string {
  return Buffer.from(b).toString('hex');
}

function ranges(ports: readonly number[]): PortRange[] {
  return ports.map((p) => ({ from: p, to: p }));
}

function options(overrides: Partial<ClassifierOptions>): ClassifierOptions {
  return {
    ringBufferPages: 1024,
    audioPorts: ranges(AUDIO_PORTS),
    algorithm: 'xxhash',
    windowSize: 256,
    silenceThreshold: 10,
    maxFlows: MAX_FLOWS,
    flowTimeoutMs: 3_600_000,
    runStats: false,
    onSignatures: () => {},
    ...overrides,
  };
}

/** Resolves when the classifier's ring-buffer thread has delivered everything, or fails. */
async function drainOrFail(c: Classifier, what: string): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(
      () => reject(new Error(`${what}: drain() did not complete in ${DRAIN_TIMEOUT_MS} ms`)),
      DRAIN_TIMEOUT_MS,
    );
  });
  try {
    await Promise.race([c.drain(), timeout]);
  } finally {
    clearTimeout(timer);
  }
}

interface Pending {
  label: string;
  frame: Uint8Array;
  prog: TestProgram;
  ref: Reference;
  delta: number[];
}

/** Outcome tallies, to show (and check) what the fuzz reached. */
type Tally = Map<string, number>;

function bump(t: Tally, key: string): void {
  t.set(key, (t.get(key) ?? 0) + 1);
}

/**
 * One classifier under fuzz: runs frames, keeps the reference's view of each run, and checks the
 * runs against it at each flush (events only arrive through the ring buffer).
 */
class FuzzHarness {
  readonly classifier: Classifier;
  readonly tally: Tally = new Map();
  runs = 0;
  eventsSeen = 0;
  private readonly raw: Uint8Array[] = [];
  private readonly pending: Pending[] = [];
  private readonly rtpRules = new Map<string, RtpFlowRule>();
  private last: number[];
  private egressCgroup: bigint | undefined;
  private ifindex: number | undefined;
  private lastTs = 0n;

  constructor(
    readonly name: string,
    readonly audioPorts: readonly number[] | 'all',
  ) {
    this.classifier = Classifier.open(
      options({
        audioPorts: audioPorts === 'all' ? 'all' : ranges(audioPorts),
        onRawEvents: (buf, count) => this.raw.push(...splitRawEvents(buf, count)),
      }),
    );
    this.last = this.classifier.stats().kernel;
  }

  isAudioPort = (port: number): boolean =>
    this.audioPorts === 'all' || this.audioPorts.includes(port);

  /** One run; checked at the next flush. */
  run(frame: Uint8Array, prog: TestProgram, label: string): void {
    if (testRunRefuses(frame)) {
      // Not the classifier's doing: the kernel builds no skb of it. It must say so.
      assert.throws(
        () => this.classifier.testRun(prog, frame, 1),
        (e: unknown) => e instanceof NativeError && e.code === 'EINVAL',
        `${label}: BPF_PROG_TEST_RUN took a frame it refuses\n${hex(frame)}`,
      );
      bump(this.tally, 'refused by test_run');
      return;
    }
    const { retval } = this.classifier.testRun(prog, frame, 1);
    const now = this.classifier.stats().kernel;
    const delta = now.map((v, i) => v - this.last[i]);
    this.last = now;
    this.runs++;
    const ref = this.narrow(classifyPacket(frame, { isAudioPort: this.isAudioPort }), frame, label);
    if (retval !== TC_ACT_UNSPEC) {
      assert.fail(`${label} ${prog}: verdict ${retval}, expected TC_ACT_UNSPEC\n${hex(frame)}`);
    }
    bump(
      this.tally,
      ref.kind === 'udp'
        ? `udp ${ref.alternatives[0].kind}`
        : ref.kind === 'none'
          ? ref.reason
          : ref.kind,
    );
    this.pending.push({ label, frame, prog, ref, delta });
  }

  /**
   * The flow's RTP history decides raw or RTP (rtp_flows): RtpFlowRule keeps that history for
   * every flow we sent, so the reference can name the one verdict.
   */
  private narrow(ref: Reference, frame: Uint8Array, label: string): Reference {
    if (ref.kind !== 'udp') return ref;
    const f = ref.flow;
    const key = `${f.family}|${hex(f.saddr)}|${hex(f.daddr)}|${f.sport}|${f.dport}`;
    let rule = this.rtpRules.get(key);
    if (!rule) {
      // Beyond this the kernel's LRU map may evict, and the history is no longer ours.
      if (this.rtpRules.size >= MAX_FLOWS / 4) return ref;
      rule = new RtpFlowRule();
      this.rtpRules.set(key, rule);
    }
    const payload = frame.subarray(ref.payloadOff, ref.payloadOff + ref.payloadLen);
    const verdict = rule.classify(payload, !ref.firstFragment);
    const alternatives: UdpAlternative[] = ref.alternatives.filter((a) => a.kind === verdict.kind);
    if (alternatives.length !== 1) {
      assert.fail(
        `${label}: the references disagree: RtpFlowRule says ${verdict.kind}, the model allows ` +
          `${ref.alternatives.map((a) => a.kind).join('/')}\n${hex(frame)}`,
      );
    }
    return { ...ref, alternatives };
  }

  /** Drains, hands each run its events, checks every run; fails listing the first few. */
  async flush(): Promise<void> {
    await drainOrFail(this.classifier, this.name);
    const runs = this.pending.splice(0);
    const records = this.raw.splice(0);
    const expected = runs.reduce((n, r) => n + r.delta[KernelStat.Events], 0);
    assert.equal(
      records.length,
      expected,
      `${this.name}: ${records.length} events delivered, EVENTS counted ${expected}`,
    );
    this.eventsSeen += records.length;
    const failures: string[] = [];
    let at = 0;
    for (const r of runs) {
      const n = r.delta[KernelStat.Events];
      const events = records.slice(at, at + n).map(decodeAudioEvent);
      at += n;
      const direction = r.prog === 'egress' ? 1 : 0;
      const problems = checkObservation(r.frame, r.ref, { direction, events, delta: r.delta });
      problems.push(...this.environmentProblems(r.prog, events));
      if (r.delta[KernelStat.Lost] !== 0) problems.push('events lost: the ring buffer filled');
      if (events.length > 0) bump(this.tally, `${r.ref.kind}-events`);
      if (events.length > 1) bump(this.tally, 'tcp-chunked');
      if (events.some((e) => e.flags & EventFlag.Truncated)) bump(this.tally, 'udp-truncated');
      if (events.some((e) => e.flags & EventFlag.Gap)) bump(this.tally, 'tcp-gap');
      if (problems.length > 0 && failures.length < MAX_REPORTED) {
        failures.push(
          `${r.label} ${r.prog}: ${problems.join('; ')}\n` +
            `  reference: ${describeReference(r.ref)}\n` +
            `  counters: ${JSON.stringify(sparse(r.delta))}\n` +
            `  packet (${r.frame.length} B): ${hex(r.frame)}`,
        );
      }
    }
    if (failures.length > 0) {
      assert.fail(
        `${this.name}, ${seedText}: the kernel did what the reference does not allow\n` +
          failures.join('\n'),
      );
    }
  }

  /** What the reference cannot know: where and when. Consistent across events. */
  private environmentProblems(prog: TestProgram, events: readonly AudioEventRecord[]): string[] {
    const out: string[] = [];
    for (const ev of events) {
      this.ifindex ??= ev.ifindex;
      if (ev.ifindex === 0 || ev.ifindex !== this.ifindex) out.push(`ifindex ${ev.ifindex}`);
      // Sequential runs: one clock, never going back.
      if (ev.tsNs === 0n || ev.tsNs < this.lastTs) out.push(`ts_ns ${ev.tsNs} < ${this.lastTs}`);
      this.lastTs = ev.tsNs;
      if (prog === 'ingress') {
        if (ev.cgroupId !== 0n) out.push(`ingress event with cgroup ${ev.cgroupId}`);
      } else {
        this.egressCgroup ??= ev.cgroupId;
        if (ev.cgroupId !== this.egressCgroup) out.push(`egress cgroup ${ev.cgroupId}`);
      }
    }
    return out;
  }

  /** Both programs, flushed every FLUSH_EVERY runs. */
  async runBoth(frame: Uint8Array, label: string): Promise<void> {
    for (const prog of PROGRAMS) this.run(frame, prog, label);
    if (this.pending.length >= FLUSH_EVERY) await this.flush();
  }
}

const harnesses = new Map<string, FuzzHarness>();

function harness(ports: 'list' | 'all'): FuzzHarness {
  let h = harnesses.get(ports);
  if (!h) {
    h = new FuzzHarness(`AUDIO_PORTS=${ports}`, ports === 'all' ? 'all' : AUDIO_PORTS);
    harnesses.set(ports, h);
  }
  return h;
}

after(() => {
  for (const h of harnesses.values()) h.classifier.close();
});

/** A valid RTP packet (PCMU, 160 bytes of audio) on a flow of its own. */
function validRtp(sport: number): { bytes: Uint8Array; audioOffset: number; audioLength: number } {
  return buildUdpPacketLayout({
    sport,
    dport: 5004,
    rtp: { payloadType: 0, ssrc: 0xfeed0000 + sport },
    payload: audioBytes(160, sport),
  });
}

/** A valid TCP segment (300 new bytes) that starts or restarts its stream (SYN). */
function validTcp(sport: number): BuiltTcpPacket {
  const payload = audioBytes(300, sport);
  payload[0] = 0x11; // no TLS or SSH start
  return buildTcpPacket({ sport, dport: 5004, seq: 77, flags: TcpFlag.Syn, payload });
}

test('the classifier passes the verifier at every configuration the agent can give it', async (t) => {
  if (!requireRoot(t)) return;
  // One axis at a time from a middle configuration, then every minimum and every maximum
  // together: rodata (ring size, flow timeout) and map sizes are what the verifier sees.
  const axes: [string, Partial<ClassifierOptions>][] = [
    ['defaults', {}],
    ['AUDIO_PORTS=all', { audioPorts: 'all' }],
    ['AUDIO_PORTS=every port as a list', { audioPorts: [{ from: 0, to: 65535 }] }],
    ['AUDIO_PORTS=none', { audioPorts: [] }],
    ['MAX_FLOWS=1', { maxFlows: 1 }],
    ['MAX_FLOWS=1000000', { maxFlows: 1_000_000 }],
    ['PERF_BUFFER_SIZE=1', { ringBufferPages: 1 }],
    ['PERF_BUFFER_SIZE=262144', { ringBufferPages: 262_144 }],
    ['runStats on', { runStats: true }],
    ['runStats off', { runStats: false }],
    ['SIGNATURE_ALGORITHM=xxhash', { algorithm: 'xxhash' }],
    ['SIGNATURE_ALGORITHM=crc32', { algorithm: 'crc32' }],
    ['SIGNATURE_ALGORITHM=rolling_hash', { algorithm: 'rolling_hash' }],
    ['SIGNATURE_WINDOW_SIZE=32', { windowSize: 32 }],
    ['SIGNATURE_WINDOW_SIZE=4096', { windowSize: 4096 }],
    ['SILENCE_THRESHOLD=0', { silenceThreshold: 0 }],
    ['SILENCE_THRESHOLD=32767', { silenceThreshold: 32767 }],
    ['FLOW_TIMEOUT_MS=100', { flowTimeoutMs: 100 }],
    ['FLOW_TIMEOUT_MS=3600000', { flowTimeoutMs: 3_600_000 }],
  ];
  const extremes: [string, Partial<ClassifierOptions>][] = [
    [
      'every minimum',
      {
        audioPorts: [{ from: 5004, to: 5004 }],
        maxFlows: 1,
        ringBufferPages: 1,
        algorithm: 'crc32',
        windowSize: 32,
        silenceThreshold: 0,
        flowTimeoutMs: 100,
        runStats: false,
      },
    ],
    [
      'every maximum',
      {
        audioPorts: 'all',
        maxFlows: 1_000_000,
        ringBufferPages: 262_144,
        algorithm: 'rolling_hash',
        windowSize: 4096,
        silenceThreshold: 32767,
        flowTimeoutMs: 3_600_000,
        runStats: true,
      },
    ],
  ];
  for (const [what, overrides] of [...axes, ...extremes]) {
    const events: Uint8Array[] = [];
    const c = Classifier.open(
      options({
        ...overrides,
        onRawEvents: (buf, count) => events.push(...splitRawEvents(buf, count)),
      }),
    );
    try {
      // It runs, too: a valid RTP packet and a valid TCP segment get their events (or, on no
      // audio port, their port misses).
      const rtp = validRtp(41000);
      const tcp = validTcp(41001);
      const hit =
        overrides.audioPorts === undefined ||
        overrides.audioPorts === 'all' ||
        overrides.audioPorts.length > 0;
      for (const pkt of [rtp.bytes, tcp.bytes]) {
        assert.equal(c.testRun('ingress', pkt, 1).retval, TC_ACT_UNSPEC, what);
      }
      await drainOrFail(c, what);
      const k = c.stats().kernel;
      assert.equal(k[KernelStat.Packets], 2, what);
      assert.equal(events.length, hit ? 2 : 0, what);
      assert.equal(k[KernelStat.PortMiss], hit ? 0 : 2, what);
      if (hit) {
        const [udpEvent, tcpEvent] = events.map(decodeAudioEvent);
        assert.equal(udpEvent.payloadOff, rtp.audioOffset, what);
        assert.deepEqual(
          udpEvent.data,
          rtp.bytes.slice(rtp.audioOffset, rtp.audioOffset + 160),
          what,
        );
        assert.equal(tcpEvent.payloadOff, tcp.payloadOffset, what);
        assert.deepEqual(tcpEvent.data, tcp.bytes.slice(tcp.payloadOffset), what);
      }
    } finally {
      c.close();
    }
  }
});

test('every truncation of every base packet, through both programs', async (t) => {
  if (!requireRoot(t)) return;
  const h = harness('all');
  const rng = new FuzzRng(SEED);
  const bases = new BaseFactory(rng, { audioPorts: AUDIO_PORTS }).catalogue();
  for (const base of bases) {
    for (let len = MIN_FRAME; len <= base.bytes.length; len++) {
      await h.runBoth(base.bytes.slice(0, len), `${seedText} base "${base.name}" truncated@${len}`);
    }
  }
  // The largest frame runs, one byte more is refused: the mutator's bound is the kernel's.
  const largest = validRtp(41002).bytes;
  const frame = new Uint8Array(TEST_RUN_MAX_FRAME + 1);
  frame.set(largest);
  await h.runBoth(frame.subarray(0, TEST_RUN_MAX_FRAME), `${seedText} largest frame`);
  await h.runBoth(frame, `${seedText} one byte over the largest frame`);
  await h.flush();
  t.diagnostic(
    `${bases.length} base packets, ${h.runs} runs: ${JSON.stringify(Object.fromEntries(h.tally))}`,
  );
  // Each base packet whole is a valid packet: the catalogue reached every kind of verdict.
  for (const kind of ['malformed', 'not-ip', 'fragment', 'udp-events', 'tcp-events']) {
    assert.ok((h.tally.get(kind) ?? 0) > 0, `no run ended as ${kind}`);
  }
});

test(`${ITERATIONS} random and mutated packets, through both programs`, async (t) => {
  if (!requireRoot(t)) return;
  const hs = [harness('list'), harness('all')];
  const rng = new FuzzRng(SEED ^ 0x5a5a5a5a);
  const opts = { audioPorts: AUDIO_PORTS };
  const factory = new BaseFactory(rng, opts);
  const catalogue = factory.catalogue();
  const runsBefore = hs.map((h) => h.runs);
  for (const h of hs) h.tally.clear();
  const started = performance.now();
  for (let i = 0; i < ITERATIONS; i++) {
    const roll = rng.int(100);
    let frame: Uint8Array;
    let what: string;
    if (roll < 5) {
      frame = garbage(rng, opts);
      what = 'garbage';
    } else {
      const base: BasePacket = roll < 35 ? rng.pick(catalogue) : factory.random();
      if (roll >= 35 && roll < 50) {
        frame = base.bytes; // valid, unmutated: the positive paths and the flow states
        what = `base "${base.name}"`;
      } else {
        const m = mutate(rng, base, opts);
        frame = m.bytes;
        what = `base "${m.base}" mutations [${m.mutations.join(', ')}]`;
      }
    }
    assert.ok(frame.length >= MIN_FRAME && frame.length <= TEST_RUN_MAX_FRAME, what);
    await hs[i & 1].runBoth(frame, `${seedText} iteration ${i}: ${what}`);
  }
  for (const h of hs) await h.flush();
  const seconds = (performance.now() - started) / 1000;
  const runs = hs.reduce((n, h, i) => n + h.runs - runsBefore[i], 0);
  t.diagnostic(
    `${ITERATIONS} iterations (${runs} runs) in ${seconds.toFixed(1)} s: ` +
      `${Math.round(ITERATIONS / seconds)} iterations/s`,
  );
  for (const h of hs) t.diagnostic(`${h.name}: ${JSON.stringify(Object.fromEntries(h.tally))}`);
  if (ITERATIONS >= 10_000) {
    // A fuzzer that never gets past the Ethernet header proves nothing: every outcome occurs.
    const all = new Map<string, number>();
    for (const h of hs) for (const [k, v] of h.tally) all.set(k, (all.get(k) ?? 0) + v);
    const outcomes = [
      'not-ip',
      'not-udp-tcp',
      'malformed',
      'fragment',
      'port-miss',
      'empty',
      'tcp-no-data',
      'udp rtp',
      'udp raw',
      'udp malformed',
      'udp not-audio',
      'tcp',
      'udp-events',
      'udp-truncated',
      'tcp-events',
      'tcp-chunked',
      'tcp-gap',
    ];
    for (const kind of outcomes) assert.ok((all.get(kind) ?? 0) > 0, `no run ended as ${kind}`);
  }
});

test('after the fuzz the classifier still classifies, and its counters add up', async (t) => {
  if (!requireRoot(t)) return;
  for (const ports of ['list', 'all'] as const) {
    const h = harness(ports);
    await h.flush();
    // A valid RTP packet and a valid TCP segment on flows of their own: their events, exactly.
    const rtp = validRtp(39000);
    const tcp = validTcp(39001);
    for (const prog of PROGRAMS) {
      h.run(rtp.bytes, prog, 'post-fuzz RTP');
      h.run(tcp.bytes, prog, 'post-fuzz TCP');
    }
    const before = h.eventsSeen;
    await h.flush();
    assert.equal(h.eventsSeen - before, 4, `${h.name}: one event per run`);
    const k = h.classifier.stats();
    assert.equal(k.kernel.length, KERNEL_STAT_COUNT);
    assert.equal(k.kernel[KernelStat.Packets], h.runs, `${h.name}: every run counted`);
    assert.equal(k.kernel[KernelStat.Events], h.eventsSeen, `${h.name}: every event delivered`);
    assert.equal(k.kernel[KernelStat.Lost], 0, `${h.name}: nothing lost`);
    assert.equal(
      k.kernel[KernelStat.Events] + k.kernel[KernelStat.Lost],
      k.kernel[KernelStat.Audio],
      `${h.name}: EVENTS + LOST == AUDIO`,
    );
    assert.equal(k.ringbuf.records, h.eventsSeen, `${h.name}: the addon consumed each event once`);
  }
});

test('a ring buffer overflowing under mutated traffic counts its losses and recovers', async (t) => {
  if (!requireRoot(t)) return;
  const events: Uint8Array[] = [];
  const c = Classifier.open(
    options({
      ringBufferPages: 1,
      audioPorts: 'all',
      onRawEvents: (buf, count) => events.push(...splitRawEvents(buf, count)),
    }),
  );
  try {
    // Largest-capture events, repeated: a 4 KiB ring holds one of them.
    const big = buildUdpPacketLayout({ sport: 39100, payload: audioBytes(3000, 3) });
    big.bytes[big.udpPayloadOffset] = 0x11;
    c.testRun('ingress', big.bytes, 500);
    await drainOrFail(c, 'overflow');
    let k = c.stats().kernel;
    assert.equal(k[KernelStat.Audio], 500);
    assert.ok(k[KernelStat.Lost] > 0, 'a 4 KiB ring must overflow');
    assert.equal(k[KernelStat.Events] + k[KernelStat.Lost], k[KernelStat.Audio]);
    assert.equal(events.length, k[KernelStat.Events]);
    // Drained, it takes the next event.
    events.length = 0;
    const pkt = validRtp(39101);
    c.testRun('egress', pkt.bytes, 1);
    await drainOrFail(c, 'after overflow');
    k = c.stats().kernel;
    assert.equal(events.length, 1);
    assert.equal(k[KernelStat.Events] + k[KernelStat.Lost], k[KernelStat.Audio]);
  } finally {
    c.close();
  }
});
