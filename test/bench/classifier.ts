/**
 * Classifier cost per packet, from BPF_PROG_TEST_RUN: the kernel runs a program `repeat` times on
 * one frame and reports the mean time per run. tc_empty (returns at once) is the baseline: the
 * cost of running any TC program at all, so each row's ratio is "how much more than nothing".
 *
 * Audio rows include the event's trip through the ring buffer (the kernel side of it: copy and
 * submit); the ring is drained between calls so it never fills, and any loss is reported.
 * BPF_ENABLE_STATS is off for the main rows (it adds two clock reads to every run, which would
 * flatten the ratios), and on for the last two, as a deployed agent runs.
 *
 * TCP: a repeated run of one segment is a retransmission after its first run (the stream state
 * has moved past it), so `repeat` measures the retransmit path honestly and nothing else. The
 * in-order row runs each of a flow's consecutive segments once (repeat = 1), taking the kernel's
 * figure for that single run; its baseline is tc_empty measured the same way (repeat = 1, same
 * number of calls, interleaved), since a single run's figure includes the kernel's clock reads
 * around it, which `repeat` spreads thin.
 */
import { KernelStat } from '../../src/abi.js';
import { Classifier, type TestProgram } from '../../src/native.js';
import { audioBytes, buildTcpPacket, buildUdpPacket, TcpFlag } from '../support/packets.js';
import type { BenchRow } from './types.js';

const AUDIO_PORT = 5004;
const REPEAT = 1000;
const CALLS = 41;
const MSS = 1448;
/** In-order segments per single-run series, and series interleaved with the baseline's. */
const SEGMENTS = 400;
const SERIES = 10;

interface Case {
  name: string;
  prog: TestProgram;
  packet: Uint8Array;
}

function cases(): Case[] {
  const nonAudio = buildUdpPacket({ sport: 40000, dport: 6000, payload: audioBytes(172, 1) });
  const g711 = buildUdpPacket({ rtp: { payloadType: 0 }, payload: audioBytes(160, 2) });
  const l16 = buildUdpPacket({ rtp: { payloadType: 11 }, payload: audioBytes(1400, 3) });
  const tcpMiss = buildTcpPacket({ dport: 6000, payload: audioBytes(MSS, 4) }).bytes;
  // Seen once before the runs (warm-up below): every run of it is a retransmission.
  const retrans = tcpSegment(40001, 0, 5);
  return [
    { name: 'tc_empty', prog: 'empty', packet: nonAudio },
    { name: 'non-audio UDP (port miss), 214 B frame', prog: 'ingress', packet: nonAudio },
    { name: 'RTP G.711, 172 B UDP payload (event)', prog: 'ingress', packet: g711 },
    { name: 'RTP L16, 1400 B audio payload (event)', prog: 'ingress', packet: l16 },
    { name: 'non-audio TCP (port miss), 1448 B payload', prog: 'ingress', packet: tcpMiss },
    { name: 'TCP retransmitted segment, 1448 B payload', prog: 'ingress', packet: retrans },
  ];
}

/** Segment `index` of a flow of MSS-sized segments on the audio port. */
function tcpSegment(sport: number, index: number, seed: number): Uint8Array {
  const payload = audioBytes(MSS, seed + index);
  payload[0] = 0x11; // never a TLS/SSH start
  return buildTcpPacket({
    sport,
    dport: AUDIO_PORT,
    seq: 1_000_000 + index * MSS,
    flags: TcpFlag.Ack | TcpFlag.Psh,
    payload,
  }).bytes;
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

/**
 * Median ns of single runs: SERIES flows of SEGMENTS consecutive segments each, every segment run
 * once (new, in order: one event), alternating with single runs of tc_empty on the same frame
 * size, and of an RTP L16 event (stateless: repeating it is honest) as a reference measured the
 * same way. Returns [tc_empty, in-order segment, RTP L16].
 */
async function measureInOrder(c: Classifier, l16: Uint8Array): Promise<[number, number, number]> {
  const empty: number[] = [];
  const inOrder: number[] = [];
  const udp: number[] = [];
  const before = c.stats().kernel;
  for (let series = 0; series < SERIES; series++) {
    const segments = Array.from({ length: SEGMENTS }, (_, i) => tcpSegment(41000 + series, i, 100));
    for (const [i, seg] of segments.entries()) {
      empty.push(c.testRun('empty', seg, 1).durationNs);
      inOrder.push(c.testRun('ingress', seg, 1).durationNs);
      udp.push(c.testRun('ingress', l16, 1).durationNs);
      if (i % 100 === 99) await c.drain();
    }
    await c.drain();
  }
  // Each run took a new segment: one event attempted each, nothing retransmitted or skipped.
  const after = c.stats().kernel;
  const audio = after[KernelStat.Audio] - before[KernelStat.Audio];
  const old = after[KernelStat.TcpRetransBytes] - before[KernelStat.TcpRetransBytes];
  if (audio !== 2 * SERIES * SEGMENTS || old !== 0) {
    throw new Error(`in-order TCP runs: ${audio} events for ${2 * SERIES * SEGMENTS} runs`);
  }
  return [median(empty), median(inOrder), median(udp)];
}

export async function benchClassifier(): Promise<BenchRow[]> {
  const list = cases();
  const rows: BenchRow[] = [];

  const plain = open(false);
  try {
    const runsBefore = plain.stats().progs.runCount;
    // The retransmission row's segment, seen once: from now on it is old.
    const retrans = list.find((k) => k.name.startsWith('TCP retransmitted'));
    if (retrans) plain.testRun(retrans.prog, retrans.packet, 1);
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
    const l16 = list.find((k) => k.name.startsWith('RTP L16'));
    if (!l16) throw new Error('no RTP L16 case');
    const [empty1, inOrder, udp1] = await measureInOrder(plain, l16.packet);
    rows.push({ name: `tc_empty, repeat=1${note}`, value: empty1, unit: 'ns/packet' });
    rows.push({
      name: `TCP segment in order, 1448 B payload (event), repeat=1${note}`,
      value: inOrder,
      unit: 'ns/packet',
      baseline: `tc_empty, repeat=1${note}`,
      ratio: inOrder / empty1,
    });
    rows.push({
      name: `RTP L16, 1400 B audio payload (event), repeat=1${note}`,
      value: udp1,
      unit: 'ns/packet',
      baseline: `tc_empty, repeat=1${note}`,
      ratio: udp1 / empty1,
    });
    const k = plain.stats().kernel;
    // Every run of the retransmitted segment after the first was dropped, no event.
    if (k[KernelStat.TcpRetransBytes] < CALLS * REPEAT * MSS) {
      throw new Error('the retransmission row did not take the retransmit path');
    }
    const lost = k[KernelStat.Lost];
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
