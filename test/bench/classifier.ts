/**
 * Classifier cost per packet, from BPF_PROG_TEST_RUN: the kernel runs a program `repeat` times on
 * one frame and reports the mean time per run. tc_empty (returns at once) is the baseline: the
 * cost of running any TC program at all, so each row's ratio is "how much more than nothing".
 *
 * Audio rows include the event's trip through the ring buffer (the kernel side of it: copy and
 * submit); the ring is drained between calls so it never fills, and any loss is reported.
 * BPF_ENABLE_STATS is off for the main rows (it adds two clock reads to every run, which would
 * flatten the ratios), and on for the last two, as a deployed agent runs.
 */
import { KernelStat } from '../../src/abi.js';
import { Classifier, type TestProgram } from '../../src/native.js';
import { audioBytes, buildUdpPacket } from '../support/packets.js';
import type { BenchRow } from './types.js';

const AUDIO_PORT = 5004;
const REPEAT = 1000;
const CALLS = 41;

interface Case {
  name: string;
  prog: TestProgram;
  packet: Uint8Array;
}

function cases(): Case[] {
  const nonAudio = buildUdpPacket({ sport: 40000, dport: 6000, payload: audioBytes(172, 1) });
  const g711 = buildUdpPacket({ rtp: { payloadType: 0 }, payload: audioBytes(160, 2) });
  const l16 = buildUdpPacket({ rtp: { payloadType: 11 }, payload: audioBytes(1400, 3) });
  return [
    { name: 'tc_empty', prog: 'empty', packet: nonAudio },
    { name: 'non-audio UDP (port miss), 214 B frame', prog: 'ingress', packet: nonAudio },
    { name: 'RTP G.711, 172 B UDP payload (event)', prog: 'ingress', packet: g711 },
    { name: 'RTP L16, 1400 B audio payload (event)', prog: 'ingress', packet: l16 },
  ];
}

function median(values: number[]): number {
  const s = [...values].sort((a, b) => a - b);
  return s[s.length >> 1];
}

function open(runStats: boolean): Classifier {
  return Classifier.open({
    ringBufferPages: 1024, // 4 MiB: a call of 1000 L16 events is 1.5 MB
    audioPorts: [{ from: AUDIO_PORT, to: AUDIO_PORT }],
    algorithm: 'xxhash',
    windowSize: 256,
    silenceThreshold: 10,
    maxFlows: 1024,
    flowTimeoutMs: 60_000,
    runStats,
    onSignatures: () => {},
  });
}

/** Median ns/packet of each case; calls interleaved so drift hits every case alike. */
async function measure(c: Classifier, list: Case[]): Promise<number[]> {
  const samples: number[][] = list.map(() => []);
  for (let call = 0; call < CALLS; call++) {
    for (const [i, k] of list.entries()) {
      samples[i].push(c.testRun(k.prog, k.packet, REPEAT).durationNs);
      await c.drain();
    }
  }
  return samples.map(median);
}

export async function benchClassifier(): Promise<BenchRow[]> {
  const list = cases();
  const rows: BenchRow[] = [];

  const plain = open(false);
  try {
    const runsBefore = plain.stats().progs.runCount;
    const ns = await measure(plain, list);
    // run_cnt only moves while someone (another agent) holds BPF stats on: then these figures
    // include the clock reads too, and say so.
    const note = plain.stats().progs.runCount > runsBefore ? ' [BPF stats on elsewhere]' : '';
    list.forEach((k, i) =>
      rows.push({
        name: `${k.name}${note}`,
        value: ns[i],
        unit: 'ns/packet',
        ...(i > 0 ? { baseline: `${list[0].name}${note}`, ratio: ns[i] / ns[0] } : {}),
      }),
    );
    const lost = plain.stats().kernel[KernelStat.Lost];
    rows.push({ name: 'ring buffer events lost during the runs', value: lost, unit: 'events' });
  } finally {
    plain.close();
  }

  const withStats = open(true);
  try {
    const ns = await measure(withStats, list.slice(0, 2));
    rows.push({ name: 'tc_empty, BPF_ENABLE_STATS on', value: ns[0], unit: 'ns/packet' });
    rows.push({
      name: 'non-audio UDP, BPF_ENABLE_STATS on',
      value: ns[1],
      unit: 'ns/packet',
      baseline: 'tc_empty, BPF_ENABLE_STATS on',
      ratio: ns[1] / ns[0],
    });
  } finally {
    withStats.close();
  }
  return rows;
}
