/**
 * End to end over TCP (issue 3), as root: one namespace lab, the real agent on its host-side
 * veths, a real Prometheus. Phase 1 streams five audio pipelines at once (test/lab/tcp-scenario.ts):
 * raw L16 re-chunked at random sizes, an RTP-in/TCP-out gateway, WebSocket binary in and out,
 * SSE with hex PCM in re-built JSON held 2 s, WebSocket JSON with base64 mu-law re-encoded.
 * Phase 2 streams the raw pipeline again (other pods) beside a bulk non-audio transfer at full
 * speed. For each hop the agent's sample count is checked against the windows the TypeScript
 * reference finds in the audio bytes sent, and its p50 against the relay's exact hold (ground
 * truth: the relays' own hold error, and SHA-256 of the audio at every stage).
 *
 * Skips loudly when not root; fails under CI=true when it cannot run.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { test } from 'node:test';
import type { SignerConfig } from '../src/signature/index.js';
import { AgentProcess, sleep } from './lab/agent-process.js';
import type { Json } from './lab/cli.js';
import { Lab } from './lab/lab.js';
import {
  bucketsOf,
  histogramQuantile,
  parseMetrics,
  sumOf,
  type Sample,
} from './lab/metrics-text.js';
import { Prometheus } from './lab/prometheus.js';
import { agentEnv } from './lab/scenario.js';
import {
  BULK_PODS,
  BULK_PORT,
  BULK_SPORT,
  predictTcp,
  procOf,
  spawnInPod,
  startTcpReceivers,
  startTcpStarter,
  stopTcpPipeline,
  TCP2_PIPELINE,
  TCP_AUDIO_PORTS,
  TCP_LAB_PODS,
  TCP_LATENCY_BUCKETS,
  TCP_PIPELINES,
  type RunningTcpPipeline,
  type TcpPipeline,
  type TcpPrediction,
  type TcpReports,
} from './lab/tcp-scenario.js';
import { requireRoot } from './support/root.js';

const PHASE1_S = 12;
const PHASE2_S = 8;
const SIGNER: SignerConfig = { algorithm: 'xxhash', windowSize: 256, silenceThreshold: 256 };
const MIN_PAIRED_FRACTION = 0.95;
const MIN_SAMPLES_PER_SPEECH_SECOND = 10;

interface HopResult {
  spec: TcpPipeline;
  pred: TcpPrediction;
  reports: TcpReports;
  count: number;
  p50: number;
  p01: number;
  p99: number;
  sourceSignatures: number | undefined;
}

async function waitAttached(agent: AgentProcess, want: number): Promise<void> {
  const deadline = Date.now() + 15_000;
  let got: number | undefined;
  while (Date.now() < deadline) {
    got = sumOf(parseMetrics(await agent.scrape()), 'audio_tracker_interfaces_attached');
    if (got !== undefined && got >= want) return;
    await sleep(200);
  }
  throw new Error(`agent attached ${got} interfaces, want ${want}:\n${agent.logs(20).join('\n')}`);
}

/** Polls the agent until its total hop count stops moving (the last windows paired). */
async function waitAgentSettled(agent: AgentProcess): Promise<Sample[]> {
  let last = -1;
  let stableSince = Date.now();
  const deadline = Date.now() + 15_000;
  let samples: Sample[] = [];
  while (Date.now() < deadline) {
    samples = parseMetrics(await agent.scrape());
    const now = sumOf(samples, 'audio_latency_seconds_count') ?? 0;
    if (now !== last) {
      last = now;
      stableSince = Date.now();
    } else if (Date.now() - stableSince >= 1500) {
      break;
    }
    await sleep(300);
  }
  return samples;
}

/** Packets through a host-side veth so far (both directions), from the kernel's own counters. */
function vethPackets(iface: string): number {
  const out = execFileSync('ip', ['-s', '-j', 'link', 'show', 'dev', iface], { encoding: 'utf8' });
  const [link] = JSON.parse(out) as {
    stats64: { rx: { packets: number }; tx: { packets: number } };
  }[];
  return link.stats64.rx.packets + link.stats64.tx.packets;
}

function selfCounter(samples: Sample[], name: string): number {
  return sumOf(samples, `${name}_total`) ?? sumOf(samples, name) ?? 0;
}

/** Runs pipelines together: receivers, then every starter at once, until the sources end. */
async function runPipelines(
  lab: Lab,
  specs: readonly TcpPipeline[],
  durationS: number,
  beside?: () => Promise<void>,
): Promise<{ runs: RunningTcpPipeline[]; reports: TcpReports[] }> {
  const runs = await Promise.all(specs.map((s) => startTcpReceivers(lab, s, durationS)));
  const besideDone = beside?.();
  await Promise.all(runs.map((r) => startTcpStarter(lab, r, durationS)));
  // Sources stop by themselves after durationS; then the longest hold drains.
  await Promise.all(runs.map((r) => procOf(r, 'source').exited));
  await sleep(Math.max(...specs.map((s) => s.holdMs)) + 500);
  await besideDone;
  const reports: TcpReports[] = [];
  for (const r of runs) reports.push(await stopTcpPipeline(r));
  return { runs, reports };
}

function hopOf(
  lab: Lab,
  samples: Sample[],
  spec: TcpPipeline,
  pred: TcpPrediction,
  reports: TcpReports,
): HopResult {
  const sel = { source_pod: lab.pod(spec.source).ip, dest_pod: lab.pod(spec.relay).ip };
  const buckets = bucketsOf(samples, 'audio_latency_seconds', sel);
  return {
    spec,
    pred,
    reports,
    count: sumOf(samples, 'audio_latency_seconds_count', sel) ?? 0,
    p50: histogramQuantile(0.5, buckets),
    p01: histogramQuantile(0.01, buckets),
    p99: histogramQuantile(0.99, buckets),
    sourceSignatures: sumOf(samples, 'audio_signatures_total', { pod: sel.source_pod }),
  };
}

function describeHop(h: HopResult): string {
  const hold = h.reports.relay.report?.holdError as { p50Us?: number } | undefined;
  const ws = h.reports.relay.report?.writeSize as { min?: number; max?: number } | undefined;
  return (
    `${h.spec.key}: ${h.spec.source}->${h.spec.relay} samples ${h.count} / predicted ` +
    `${h.pred.pairable} (${((100 * h.count) / h.pred.pairable).toFixed(1)}%; in ` +
    `${h.pred.inSignatures}, out ${h.pred.outSignatures}), ` +
    `${(h.count / h.pred.speechSeconds).toFixed(1)}/speech s, p50 ${(h.p50 * 1000).toFixed(3)} ms ` +
    `(hold ${h.spec.holdMs}; p1 ${(h.p01 * 1000).toFixed(2)}, p99 ${(h.p99 * 1000).toFixed(2)}), ` +
    `agent signatures of source ${h.sourceSignatures}, relay hold error p50 ${hold?.p50Us} us, ` +
    `relay writes ${h.reports.relay.report?.writesOut} (${ws?.min}-${ws?.max} B)`
  );
}

test('e2e-tcp: TCP, WebSocket and SSE audio hops, beside a bulk transfer', async (t) => {
  if (!requireRoot(t)) return;

  const predicted = new Map<string, TcpPrediction>();
  for (const p of TCP_PIPELINES) predicted.set(p.key, predictTcp(SIGNER, p, PHASE1_S));
  predicted.set(TCP2_PIPELINE.key, predictTcp(SIGNER, TCP2_PIPELINE, PHASE2_S));

  const lab = Lab.create({ pods: TCP_LAB_PODS });
  let agent: AgentProcess | undefined;
  let prom: Prometheus | undefined;
  const running: RunningTcpPipeline[] = [];
  try {
    // The agent first: it must see every TCP connection from its SYN (stream sniffing).
    agent = await AgentProcess.start({
      env: agentEnv(lab, {
        AUDIO_PORTS: TCP_AUDIO_PORTS,
        LATENCY_BUCKETS: TCP_LATENCY_BUCKETS.join(','),
      }),
    });
    lab.track(agent.pid);
    await waitAttached(agent, lab.hostInterfaces.length);
    prom = await Prometheus.start({ targets: [`127.0.0.1:${agent.port}`] });
    lab.track(prom.pid);
    lab.trackDir(prom.dir);
    await prom.waitFor('up{job="alt"}', (v) => v === 1, 15_000);

    // Phase 1: the five audio pipelines at once.
    const t1 = Date.now();
    const phase1 = await runPipelines(lab, TCP_PIPELINES, PHASE1_S);
    running.push(...phase1.runs);
    const samples1 = await waitAgentSettled(agent);
    const phase1S = (Date.now() - t1) / 1000;
    const hops = new Map<string, HopResult>();
    for (const r of phase1.reports) {
      hops.set(
        r.spec.key,
        hopOf(lab, samples1, r.spec, predicted.get(r.spec.key) as TcpPrediction, r),
      );
    }

    // Phase 2: the raw pipeline again, beside a bulk transfer on a non-audio port.
    const bulkIfs = [lab.pod(BULK_PODS.source).hostIf, lab.pod(BULK_PODS.sink).hostIf];
    const audioIfs = lab.hostInterfaces.filter((i) => !bulkIfs.includes(i));
    const before = {
      inspected: selfCounter(samples1, 'audio_tracker_packets_inspected'),
      audio: selfCounter(samples1, 'audio_tracker_audio_packets'),
      tcpSegments: selfCounter(samples1, 'audio_tracker_tcp_segments'),
      bulkVeth: vethPackets(bulkIfs[0]),
      audioVeth: audioIfs.reduce((a, i) => a + vethPackets(i), 0),
    };
    const bulkSink = spawnInPod(lab, BULK_PODS.sink, 'tcp-sink', [
      ...['--mode', 'bulk', '--listen', String(BULK_PORT)],
    ]);
    await bulkSink.ready;
    let bulkSource: ReturnType<typeof spawnInPod> | undefined;
    const phase2 = await runPipelines(lab, [TCP2_PIPELINE], PHASE2_S, async () => {
      bulkSource = spawnInPod(lab, BULK_PODS.source, 'tcp-source', [
        ...['--mode', 'bulk', '--dest', `${lab.pod(BULK_PODS.sink).ip}:${BULK_PORT}`],
        ...['--sport', String(BULK_SPORT), '--duration', String(PHASE2_S)],
      ]);
      await bulkSource.ready;
      await bulkSource.exited;
    });
    running.push(...phase2.runs);
    const bulkSent = (await (bulkSource as ReturnType<typeof spawnInPod>).stop()).report;
    const bulkGot = (await bulkSink.stop()).report;
    const samples2 = await waitAgentSettled(agent);
    const after = {
      inspected: selfCounter(samples2, 'audio_tracker_packets_inspected'),
      audio: selfCounter(samples2, 'audio_tracker_audio_packets'),
      tcpSegments: selfCounter(samples2, 'audio_tracker_tcp_segments'),
      bulkVeth: vethPackets(bulkIfs[0]),
      audioVeth: audioIfs.reduce((a, i) => a + vethPackets(i), 0),
    };
    const r2 = phase2.reports[0];
    const hop2 = hopOf(lab, samples2, TCP2_PIPELINE, predicted.get('tcp2') as TcpPrediction, r2);
    const delta = {
      inspected: after.inspected - before.inspected,
      audio: after.audio - before.audio,
      tcpSegments: after.tcpSegments - before.tcpSegments,
      bulkVeth: after.bulkVeth - before.bulkVeth,
      audioVeth: after.audioVeth - before.audioVeth,
    };

    // Prometheus saw the same: the raw TCP hop's count and p50.
    const tcpHop = hops.get('tcp') as HopResult;
    const promSel = `source_pod="${lab.pod('tsrc').ip}",dest_pod="${lab.pod('trel').ip}"`;
    const promCount = await prom
      .waitFor(`sum(audio_latency_seconds_count{${promSel}})`, (v) => v === tcpHop.count, 10_000)
      .catch(() => undefined);
    const promP50 = await prom.queryValue(
      `histogram_quantile(0.5, sum by (le) (audio_latency_seconds_bucket{${promSel}}))`,
    );

    console.log(
      `e2e-tcp lab ${lab.id}: phase 1 ${phase1S.toFixed(1)} s\n  ` +
        [...hops.values(), hop2].map(describeHop).join('\n  ') +
        `\n  bulk: ${JSON.stringify(bulkSent?.bytes)} B sent, ${JSON.stringify(bulkGot?.bytes)} B ` +
        `received; during phase 2: bulk veth packets ${delta.bulkVeth}, audio veth packets ` +
        `${delta.audioVeth}, agent inspected ${delta.inspected}, audio packets ${delta.audio}, ` +
        `tcp segments ${delta.tcpSegments}\n  Prometheus: tcp hop count ${promCount}, p50 ` +
        `${((promP50 ?? NaN) * 1000).toFixed(3)} ms`,
    );
    const all = [...hops.values(), hop2];

    await t.test('ground truth: every stage carried the audio bytes the reference signed', () => {
      for (const h of all) {
        const { source, relay, sink } = h.reports;
        const k = h.spec.key;
        assert.equal(source.report?.sha256, h.pred.sha256, `${k}: source sent other bytes`);
        assert.equal(relay.report?.sha256In, h.pred.sha256, `${k}: relay received other bytes`);
        assert.equal(relay.report?.sha256Out, h.pred.sha256, `${k}: relay sent other bytes`);
        assert.equal(sink.report?.sha256, h.pred.sha256, `${k}: sink received other bytes`);
        assert.equal(sink.report?.bytes, h.pred.bytes, `${k}: sink byte count`);
        assert.equal(relay.report?.itemsDropped, 0, `${k}: relay dropped items`);
      }
    });

    await t.test('ground truth: relays held to within 0.5 ms (p50), raw relays re-chunked', () => {
      for (const h of all) {
        const hold = h.reports.relay.report?.holdError as { p50Us: number } | undefined;
        assert.ok(hold && hold.p50Us <= 500, `${h.spec.key}: hold error ${JSON.stringify(hold)}`);
      }
      for (const k of ['tcp', 'tcp2']) {
        const h = all.find((x) => x.spec.key === k) as HopResult;
        const ws = h.reports.relay.report?.writeSize as { min: number; max: number };
        const writes = h.reports.relay.report?.writesOut as number;
        const items = h.reports.relay.report?.itemsOut as number;
        assert.ok(writes > items, `${k}: ${writes} writes for ${items} reads: no re-chunking`);
        assert.ok(ws.max > 1448, `${k}: largest write ${ws.max} B, want writes above one MSS`);
      }
    });

    for (const h of all) {
      await t.test(`${h.spec.key}: hop samples >= 95% of predicted, none extra`, () => {
        assert.ok(h.pred.pairable > 0, `${h.spec.key}: the reference predicts no window`);
        assert.ok(
          h.count >= MIN_PAIRED_FRACTION * h.pred.pairable,
          `${describeHop(h)}\n  agent log tail:\n${(agent as AgentProcess).logs(10).join('\n')}`,
        );
        assert.ok(h.count <= h.pred.pairable, `more samples than windows: ${describeHop(h)}`);
      });
      await t.test(`${h.spec.key}: >= 10 samples per second of speech`, () => {
        const rate = h.count / h.pred.speechSeconds;
        assert.ok(rate >= MIN_SAMPLES_PER_SPEECH_SECOND, describeHop(h));
      });
      await t.test(`${h.spec.key}: p50 within ${h.spec.toleranceMs} ms of the hold`, () => {
        const err = Math.abs(h.p50 * 1000 - h.spec.holdMs);
        assert.ok(err <= h.spec.toleranceMs, describeHop(h));
      });
    }

    await t.test('Prometheus agrees on the raw TCP hop', () => {
      assert.equal(promCount, tcpHop.count, 'Prometheus count of tsrc->trel');
      assert.ok(
        promP50 !== undefined && Math.abs(promP50 - tcpHop.p50) < 0.0005,
        `Prometheus p50 ${promP50}, agent /metrics ${tcpHop.p50}`,
      );
    });

    await t.test('bulk transfer: full speed, exits early, audio unchanged', () => {
      const sent = Number((bulkSent as { [k: string]: Json } | null)?.bytes ?? 0);
      const got = Number((bulkGot as { [k: string]: Json } | null)?.bytes ?? 0);
      assert.ok(got > 0 && got === sent, `bulk sent ${sent} B, received ${got} B`);
      // Each bulk packet crosses two lab veths, each inspected once.
      assert.ok(
        delta.inspected >= 0.99 * 2 * delta.bulkVeth,
        `agent inspected ${delta.inspected} packets, bulk alone put ${delta.bulkVeth} on its veth`,
      );
      // No bulk packet got past the port check: audio packets are bounded by the audio veths'.
      assert.ok(
        delta.audio <= 2 * delta.audioVeth,
        `audio packets ${delta.audio} > 2 x ${delta.audioVeth} packets on the audio veths`,
      );
      assert.ok(
        delta.tcpSegments <= 2 * delta.audioVeth,
        `tcp segments on audio ports ${delta.tcpSegments} > 2 x ${delta.audioVeth}`,
      );
      assert.ok(
        delta.bulkVeth > 10 * Math.max(1, delta.audio),
        `bulk ${delta.bulkVeth} packets should dwarf the ${delta.audio} audio packets`,
      );
      // Beside the bulk transfer, the raw pipeline gives what it gave alone.
      const ratio1 = tcpHop.count / tcpHop.pred.pairable;
      const ratio2 = hop2.count / hop2.pred.pairable;
      assert.ok(ratio2 >= ratio1 - 0.02, `paired ${ratio2} beside bulk, ${ratio1} alone`);
      // The bulk transfer takes both cores of the development VM: the relay's reads are stamped
      // a little later (p50 +0.85 ms measured), within the 2 ms of the hold.
      assert.ok(
        Math.abs(hop2.p50 - tcpHop.p50) <= TCP2_PIPELINE.toleranceMs / 1000,
        `p50 ${hop2.p50} beside bulk vs ${tcpHop.p50} alone`,
      );
    });
  } catch (err) {
    if (agent) console.error(`agent log tail:\n${agent.logs(40).join('\n')}`);
    for (const r of running) {
      for (const p of r.procs) {
        if (p.proc.stderr) console.error(`${p.proc.describe()} stderr: ${p.proc.stderr}`);
      }
    }
    throw err;
  } finally {
    for (const r of running) for (const p of r.procs) await p.proc.stop().catch(() => null);
    if (agent?.running) await agent.stop();
    await prom?.stop();
    lab.teardown();
  }
});
