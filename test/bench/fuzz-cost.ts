/**
 * The classifier's cost on hostile input: the worst per-packet time over a few hundred fuzzed
 * packets (test/support/packet-mutator.ts: mutated, truncated, garbage, plus hand-made deep
 * ones), beside tc_empty and beside the budget, all measured in the same run through
 * BPF_PROG_TEST_RUN with `repeat` (as test/bench/classifier.ts does).
 *
 * Budget: no packet may cost more than the most expensive legitimate one of the same size. Two
 * candidates, both measured, the costlier is the budget: a full-size UDP event (RTP L16 whose
 * 1984 audio bytes, AEV_MAX_CAPTURE, are all copied into the ring buffer) and a TCP segment in
 * the largest frame whose 3,646 bytes are all new (two events). A malformed or absurd packet
 * that cost more would be a lever for whoever sends it; the "worst / budget" row must stay at or
 * below 1. (The TCP segment carries SYN: it restarts its stream, so every repeated run takes all
 * its bytes again, which is what an in-order segment costs; without it, repeats after the first
 * would measure a retransmission.)
 *
 * How: every candidate runs once with a short repeat (screening), then the slowest few and the
 * two references are measured CALLS times with REPEAT runs each, interleaved so drift hits all
 * alike; each figure is the median of the kernel's per-run mean. Under `repeat` a stateful packet
 * shows its steady state (an RTP flow's "same packet again", a TCP segment's retransmission
 * path): the in-order TCP path is measured by test/bench/classifier.ts.
 *
 * The candidates are drawn from a fixed seed (FUZZ_SEED overrides it), so runs compare.
 */
import { KernelStat } from '../../src/abi.js';
import { Classifier, type TestProgram } from '../../src/native.js';
import { classifyPacket, describeReference } from '../support/classifier-model.js';
import {
  BaseFactory,
  garbage,
  mutate,
  TEST_RUN_MAX_FRAME,
  testRunRefuses,
  type FuzzPacketOptions,
} from '../support/packet-mutator.js';
import { FuzzRng, fuzzSeed } from '../support/fuzz-random.js';
import { audioBytes, buildTcpPacket, buildUdpPacket, TcpFlag } from '../support/packets.js';
import type { BenchRow } from './types.js';

const AUDIO_PORTS = [5004];
const DEFAULT_SEED = 0xf022c057;
/** Fuzzed candidates screened. */
const CANDIDATES = 400;
const SCREEN_REPEAT = 200;
/** The slowest candidates measured in full, and the slowest of those that yield no event. */
const FINALISTS = 8;
const SILENT_FINALISTS = 4;
const REPEAT = 1000;
const CALLS = 21;

interface Candidate {
  name: string;
  packet: Uint8Array;
}

function median(values: number[]): number {
  const s = [...values].sort((a, b) => a - b);
  return s[s.length >> 1];
}

/** A fixed corpus unless FUZZ_SEED is set, so runs compare. */
function seed(): number {
  return process.env.FUZZ_SEED ? fuzzSeed() : DEFAULT_SEED;
}

/** Legitimate packets that cost the most: the budget is the costlier of them. */
function legitimate(): Candidate[] {
  // Ethernet 14 + IPv4 20 + TCP 32 (timestamps) in front of the payload.
  const tcpPayload = audioBytes(TEST_RUN_MAX_FRAME - 66, 4);
  tcpPayload[0] = 0x11; // no TLS or SSH start
  return [
    {
      name: 'RTP L16, 1984 B audio (full-size UDP event)',
      packet: buildUdpPacket({ rtp: { payloadType: 11 }, payload: audioBytes(1984, 1) }),
    },
    {
      name: `TCP segment, ${tcpPayload.length} B all new (2 events)`,
      packet: buildTcpPacket({
        dport: AUDIO_PORTS[0],
        flags: TcpFlag.Syn | TcpFlag.Ack,
        tcpOptions: Uint8Array.of(1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2),
        payload: tcpPayload,
      }).bytes,
    },
  ];
}

/**
 * Packets built to be as deep as the parser goes: both VLAN tags, six IPv6 extension headers
 * (one of 2 KiB), 15 CSRCs, an extension, padding, the largest frame; and the IPv4 equivalent.
 */
function deepPackets(): Candidate[] {
  const rtp = {
    payloadType: 11,
    csrcs: Array.from({ length: 15 }, (_, i) => i + 1),
    extension: { words: [1, 2, 3, 4] },
    padding: 8,
  };
  const vlans = [{ tpid: 0x88a8 as const, vid: 1 }, { vid: 2 }];
  return [
    {
      name: 'deep IPv6: 2 tags, 6 extension headers (2 KiB), RTP 15 CSRCs + extension + padding',
      packet: buildUdpPacket({
        family: 6,
        vlans,
        ipv6Ext: [
          { type: 'hop', length: 2048 },
          { type: 'routing' },
          { type: 'dest' },
          { type: 'fragment' },
          { type: 'dest' },
          { type: 'dest' },
        ],
        rtp,
        payload: audioBytes(1400, 2),
      }),
    },
    {
      name: 'deep IPv4: 2 tags, 40 B options, RTP 15 CSRCs + extension + padding, 3.6 KB',
      packet: buildUdpPacket({
        vlans,
        ipv4Options: new Uint8Array(40).fill(1),
        rtp,
        payload: audioBytes(3500, 3),
      }),
    },
  ];
}

/** Fuzzed packets: mutated bases of every kind, random bases, garbage. */
function fuzzed(rng: FuzzRng, opts: FuzzPacketOptions): Candidate[] {
  const factory = new BaseFactory(rng, opts);
  const catalogue = factory.catalogue();
  const out: Candidate[] = [];
  while (out.length < CANDIDATES) {
    const roll = rng.int(10);
    let c: Candidate;
    if (roll === 0) {
      c = { name: 'garbage', packet: garbage(rng, opts) };
    } else {
      const base = roll < 5 ? rng.pick(catalogue) : factory.random();
      const m = mutate(rng, base, opts);
      c = { name: `"${m.base}" [${m.mutations.join(', ')}]`, packet: m.bytes };
    }
    if (!testRunRefuses(c.packet)) out.push(c);
  }
  return out;
}

function open(): Classifier {
  return Classifier.open({
    ringBufferPages: 2048, // 8 MiB: a call of 1000 two-event TCP segments is 4.1 MB
    audioPorts: AUDIO_PORTS.map((p) => ({ from: p, to: p })),
    algorithm: 'xxhash',
    windowSize: 256,
    silenceThreshold: 10,
    maxFlows: 65536,
    flowTimeoutMs: 60_000,
    runStats: false,
    onSignatures: () => {},
  });
}

/** Median ns/packet of each case; calls interleaved. */
async function measure(
  c: Classifier,
  list: { prog: TestProgram; packet: Uint8Array }[],
): Promise<number[]> {
  const samples: number[][] = list.map(() => []);
  for (let call = 0; call < CALLS; call++) {
    for (const [i, k] of list.entries()) {
      samples[i].push(c.testRun(k.prog, k.packet, REPEAT).durationNs);
      await c.drain();
    }
  }
  return samples.map(median);
}

export async function benchFuzzCost(): Promise<BenchRow[]> {
  const rng = new FuzzRng(seed());
  const opts: FuzzPacketOptions = { audioPorts: AUDIO_PORTS };
  const candidates = [...deepPackets(), ...fuzzed(rng, opts)];
  const c = open();
  try {
    // Screening: one short call each (after a first run, so stateful packets are in their
    // steady state, as they will be in the full measurement).
    const screened = [];
    for (const k of candidates) {
      c.testRun('ingress', k.packet, 1);
      screened.push({ ...k, ns: c.testRun('ingress', k.packet, SCREEN_REPEAT).durationNs });
      await c.drain();
    }
    screened.sort((a, b) => b.ns - a.ns);
    // Junk the parser rejects (no event possible) is ranked apart: it must give up cheaply.
    const isAudioPort = (p: number): boolean => AUDIO_PORTS.includes(p);
    const silent = (k: Candidate): boolean =>
      classifyPacket(k.packet, { isAudioPort }).kind === 'none';
    const loud = screened.filter((k) => !silent(k)).slice(0, FINALISTS);
    const quiet = screened.filter(silent).slice(0, SILENT_FINALISTS);
    const finalists = [...loud, ...quiet];
    const legit = legitimate();
    const ns = await measure(c, [
      { prog: 'empty', packet: legit[0].packet },
      ...legit.map((k) => ({ prog: 'ingress' as const, packet: k.packet })),
      ...finalists.map((k) => ({ prog: 'ingress' as const, packet: k.packet })),
    ]);
    const empty = ns[0];
    const legitNs = ns.slice(1, 1 + legit.length);
    const finals = ns.slice(1 + legit.length);
    const budgetAt = legitNs.indexOf(Math.max(...legitNs));
    const budget = legitNs[budgetAt];
    const worstAt = finals.indexOf(Math.max(...finals));
    const worst = finalists[worstAt];
    const what = describeReference(classifyPacket(worst.packet, { isAudioPort }));
    const quietNs = finals.slice(loud.length);
    const quietAt = quietNs.indexOf(Math.max(...quietNs));
    const quietWhat = quiet[quietAt]
      ? describeReference(classifyPacket(quiet[quietAt].packet, { isAudioPort }))
      : 'none screened';
    const lost = c.stats().kernel[KernelStat.Lost];
    return [
      { name: 'tc_empty', value: empty, unit: 'ns/packet' },
      ...legit.map((k, i) => ({
        name: `legitimate: ${k.name}`,
        value: legitNs[i],
        unit: 'ns/packet',
        baseline: 'tc_empty',
        ratio: legitNs[i] / empty,
      })),
      {
        name: `worst of ${candidates.length} fuzzed packets`,
        value: finals[worstAt],
        unit: 'ns/packet',
        baseline: 'tc_empty',
        ratio: finals[worstAt] / empty,
      },
      {
        name: 'worst fuzzed packet / budget (must be <= 1)',
        value: finals[worstAt] / budget,
        unit: 'x',
        baseline: `legitimate: ${legit[budgetAt].name}`,
        ratio: finals[worstAt] / budget,
      },
      // Which packet it was, to replay it: its size here, its description in the name.
      {
        name: `worst: ${worst.name.slice(0, 60)}; ${what.slice(0, 60)}`,
        value: worst.packet.length,
        unit: 'B frame',
      },
      {
        name: `worst of the fuzzed packets that yield no event (${quietWhat.slice(0, 40)})`,
        value: quietNs[quietAt] ?? 0,
        unit: 'ns/packet',
        baseline: 'tc_empty',
        ratio: (quietNs[quietAt] ?? 0) / empty,
      },
      { name: 'ring buffer events lost during the runs', value: lost, unit: 'events' },
    ];
  } finally {
    c.close();
  }
}
