/**
 * End to end, as root: a lab of six pods in network namespaces (two pipelines, see
 * test/lab/scenario.ts), the real agent (`node dist/src/main.js`) attached to the lab's host-side
 * veths, a real Prometheus scraping it every second, ~18 s of speech-like audio. Then PromQL
 * answers what the agent measured, checked against ground truth: the relays' exact hold (20 ms)
 * and the hop-sample count the TypeScript reference predicts from the bytes the senders sent.
 * The same run pushes OTLP/gRPC to a test collector every second (decoded with the official
 * OTLP definitions): its last export must agree with Prometheus, carry the resource and the
 * configured header, and the header's secret must never reach the agent's output.
 * Finally SIGTERM: the agent must exit 0 leaving no program attached.
 *
 * Skips loudly when not root; fails under CI=true when it cannot run.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import type { SignerConfig } from '../src/signature/index.js';
import { AgentProcess, REPO_ROOT, sleep } from './lab/agent-process.js';
import {
  agentAttachments,
  agentTcFilters,
  BPF_TCX_INGRESS,
  ifindexOf,
  processTcxLinks,
} from './lab/attachments.js';
import { Lab } from './lab/lab.js';
import { parseMetrics, sumOf } from './lab/metrics-text.js';
import { predictSender, type Prediction } from './lab/predict.js';
import { Prometheus } from './lab/prometheus.js';
import {
  agentEnv,
  HOLD_MS,
  LAB_PODS,
  LATENCY_BUCKETS,
  PIPELINES,
  startReceivers,
  startSenders,
  stopPipelines,
  type PipelineReports,
  type RunningPipeline,
} from './lab/scenario.js';
import {
  attributesOf,
  metricsNamed,
  startOtlpReceiver,
  type HistogramDataPoint,
  type NumberDataPoint,
  type OtlpReceiver,
  type ReceivedExport,
} from './support/otlp-receiver.js';
import { deployMetricNames, NOT_AGENT_METRICS } from './support/promql-names.js';
import { requireRoot } from './support/root.js';

const DURATION_S = 18; // 900 packets: a multiple of relay2's 3-packet groups
const SIGNER: SignerConfig = { algorithm: 'xxhash', windowSize: 256, silenceThreshold: 256 };
const MIN_PAIRED_FRACTION = 0.99;
const MIN_SAMPLES_PER_SPEECH_SECOND = 10;
const OTLP_SECRET = 'e2e-secret';
const OTLP_INTERVAL_MS = 1000;
const CLUSTER = 'lab';
const MAX_MEAN_ERROR_S = 0.002;

/** PromQL selector of one hop's series. */
function hopSel(lab: Lab, sender: string, relay: string): string {
  return `source_pod="${lab.pod(sender).ip}",dest_pod="${lab.pod(relay).ip}"`;
}

/** Polls the agent until the total hop count stops moving (the last windows paired). */
async function waitAgentSettled(agent: AgentProcess): Promise<number> {
  let last = -1;
  let stableSince = Date.now();
  const deadline = Date.now() + 20_000;
  while (Date.now() < deadline) {
    const samples = parseMetrics(await agent.scrape());
    const now = sumOf(samples, 'audio_latency_seconds_count') ?? 0;
    if (now !== last) {
      last = now;
      stableSince = Date.now();
    } else if (Date.now() - stableSince >= 2000) {
      return now;
    }
    await sleep(500);
  }
  return last;
}

/** Waits until the agent reports `want` attached interfaces. */
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

interface Measured {
  p50: number;
  count: number;
}

/** The agent's OTLP settings: the test collector, a 1 s push, a secret header, a cluster. */
function otlpEnv(receiver: OtlpReceiver): Record<string, string> {
  return {
    OTEL_EXPORTER_OTLP_ENDPOINT: receiver.url,
    OTEL_METRIC_EXPORT_INTERVAL: String(OTLP_INTERVAL_MS),
    OTEL_EXPORTER_OTLP_HEADERS: `x-api-key=${OTLP_SECRET}`,
    OTEL_RESOURCE_ATTRIBUTES: `k8s.cluster.name=${CLUSTER}`,
  };
}

function packageVersion(): string {
  const pkg = JSON.parse(readFileSync(join(REPO_ROOT, 'package.json'), 'utf8')) as {
    version: string;
  };
  return pkg.version;
}

/** One hop's audio_latency_seconds point in an OTLP export, if the export has it. */
function otlpHopPoint(
  exp: ReceivedExport,
  source: string,
  dest: string,
): HistogramDataPoint | undefined {
  return metricsNamed(exp.request, 'audio_latency_seconds')
    .flatMap((m) => m.histogram?.dataPoints ?? [])
    .find((p) => {
      const a = attributesOf(p.attributes);
      return a.source_pod === source && a.dest_pod === dest;
    });
}

function numberValue(p: NumberDataPoint): number {
  return p.asDouble ?? p.asInt ?? NaN;
}

test('e2e: agent measures relay hops in a namespace lab, Prometheus agrees', async (t) => {
  if (!requireRoot(t)) return;

  // Reference first: cheap, and it documents what the run must produce.
  const predicted = new Map<string, Prediction>();
  for (const p of PIPELINES) {
    predicted.set(p.key, predictSender(SIGNER, p.seed, p.encoding, DURATION_S));
  }

  const lab = Lab.create({ pods: LAB_PODS });
  let agent: AgentProcess | undefined;
  let prom: Prometheus | undefined;
  let otlp: OtlpReceiver | undefined;
  let pipes: RunningPipeline[] = [];
  // Every line the agent printed, unbounded (AgentProcess keeps only the last 500).
  const agentOutput: string[] = [];
  try {
    pipes = await startReceivers(lab);
    otlp = await startOtlpReceiver();
    agent = await AgentProcess.start({
      env: agentEnv(lab, { ...otlpEnv(otlp), SAMPLE_LOG: 'true', SAMPLE_LOG_RATE: '1000' }),
      onLine: (line, stream) => agentOutput.push(`[${stream}] ${line}`),
    });
    lab.track(agent.pid);
    await waitAttached(agent, lab.hostInterfaces.length);

    // Positive control for the detach check: while running, the agent's TCX links (from its
    // fdinfo) or tc filters are visible on the ingress and egress of every lab interface.
    const agentLinks = processTcxLinks(agent.pid);
    const knownLinkIds = new Set<number>();
    for (const iface of lab.hostInterfaces) {
      const index = ifindexOf(iface);
      const links = agentLinks.filter((l) => l.ifindex === index);
      for (const l of links) knownLinkIds.add(l.linkId);
      const filters = agentTcFilters(iface);
      const hooks = new Set([
        ...links.map((l) => (l.attachType === BPF_TCX_INGRESS ? 'ingress' : 'egress')),
        ...filters.map((f) => (f.includes(' ingress: ') ? 'ingress' : 'egress')),
      ]);
      assert.deepEqual(
        [...hooks].sort(),
        ['egress', 'ingress'],
        `agent running, but on ${iface} saw links ${JSON.stringify(links)} filters ${filters}`,
      );
    }

    prom = await Prometheus.start({ targets: [`127.0.0.1:${agent.port}`] });
    lab.track(prom.pid);
    lab.trackDir(prom.dir);
    await prom.waitFor('up{job="alt"}', (v) => v === 1, 15_000);

    const started = Date.now();
    await startSenders(lab, pipes, DURATION_S);
    await Promise.all(pipes.map((p) => p.sender?.exited));
    const streamedS = (Date.now() - started) / 1000;
    await sleep(500); // last held packets leave the relays
    const agentTotal = await waitAgentSettled(agent);
    // Prometheus has scraped the final state once it reports the same total.
    await prom.waitFor('sum(audio_latency_seconds_count)', (v) => v === agentTotal, 15_000);
    const reports: PipelineReports[] = await stopPipelines(pipes);

    const measured = new Map<string, Measured>();
    for (const p of PIPELINES) {
      const sel = hopSel(lab, p.sender, p.relay);
      const p50 = await prom.queryValue(
        `histogram_quantile(0.5, sum by (le) (audio_latency_seconds_bucket{${sel}}))`,
      );
      const count = await prom.queryValue(`sum(audio_latency_seconds_count{${sel}})`);
      measured.set(p.key, { p50: p50 ?? NaN, count: count ?? 0 });
    }
    const transitMean = await prom.queryValue(
      'sum(audio_transit_latency_seconds_sum) / sum(audio_transit_latency_seconds_count)',
    );
    const transitP90 = await prom.queryValue(
      'histogram_quantile(0.9, sum by (le) (audio_transit_latency_seconds_bucket))',
    );
    const sigCounts = new Map<string, number | undefined>();
    for (const p of PIPELINES) {
      sigCounts.set(
        p.key,
        await prom.queryValue(`sum(audio_signatures_total{pod="${lab.pod(p.sender).ip}"})`),
      );
    }

    // The agent is settled, so the next push (1 s) carries the final count Prometheus saw.
    const s1 = lab.pod('sender1').ip;
    const r1 = lab.pod('relay1').ip;
    const rtpCount = (measured.get('rtp') as Measured).count;
    const collector = otlp;
    const otlpFinal = await collector
      .waitForExport((e) => otlpHopPoint(e, s1, r1)?.count === rtpCount, 4 * OTLP_INTERVAL_MS)
      .catch(() => undefined);
    const otlpSeen = collector.exports.length;
    const otlpLastCount = collector.exports
      .map((e) => otlpHopPoint(e, s1, r1)?.count)
      .findLast((c) => c !== undefined);
    const otlpFinalPoint = otlpFinal ? otlpHopPoint(otlpFinal, s1, r1) : undefined;
    const otlpMeanMs = (1000 * (otlpFinalPoint?.sum ?? NaN)) / (otlpFinalPoint?.count ?? NaN);

    const summary = PIPELINES.map((p) => {
      const m = measured.get(p.key) as Measured;
      const pr = predicted.get(p.key) as Prediction;
      const r = reports.find((x) => x.spec.key === p.key);
      return (
        `${p.key}: ${p.sender}->${p.relay} p50 ${(m.p50 * 1000).toFixed(3)} ms, ` +
        `samples ${m.count} / predicted ${pr.signatures} ` +
        `(${((100 * m.count) / pr.signatures).toFixed(1)}%), ` +
        `${(m.count / pr.speechSeconds).toFixed(1)} per speech second, ` +
        `agent signatures of ${p.sender} ${sigCounts.get(p.key)}, ` +
        `relay hold error ${JSON.stringify(r?.relay.report?.holdError)}`
      );
    });
    console.log(
      `e2e lab ${lab.id}: streamed ${streamedS.toFixed(1)} s\n  ${summary.join('\n  ')}\n` +
        `  transit mean ${((transitMean ?? NaN) * 1e6).toFixed(0)} us, p90 ${((transitP90 ?? NaN) * 1e6).toFixed(0)} us\n` +
        `  OTLP: ${otlpSeen} exports, last sender1->relay1 count ${otlpLastCount} ` +
        `(Prometheus ${rtpCount}), mean ${otlpMeanMs.toFixed(3)} ms`,
    );

    await t.test('senders sent the bytes the reference signed, relays forwarded all', () => {
      for (const r of reports) {
        const pr = predicted.get(r.spec.key) as Prediction;
        const sent = r.sender?.report;
        assert.equal(
          sent?.sha256,
          pr.sha256,
          `${r.spec.sender} payload bytes differ from the reference`,
        );
        assert.equal(sent?.packets, pr.packets, `${r.spec.sender} packets`);
        assert.equal(r.relay.report?.sha256In, pr.sha256, `${r.spec.relay} received other bytes`);
        assert.equal(r.relay.report?.sha256Out, pr.sha256, `${r.spec.relay} forwarded other bytes`);
        assert.equal(r.sink.report?.sha256, pr.sha256, `${r.spec.sink} received other bytes`);
        assert.equal(
          r.relay.report?.packetsOut,
          pr.packets / r.spec.gather,
          `${r.spec.relay} output packets (re-framing ${r.spec.gather}:1)`,
        );
      }
    });

    await t.test('the relays held each packet 20 ms to within 0.5 ms (ground truth)', () => {
      for (const r of reports) {
        const hold = r.relay.report?.holdError as { p50Us: number; p99Us: number } | undefined;
        assert.ok(hold, `${r.spec.relay} gave no hold report`);
        assert.ok(hold.p50Us <= 500, `${r.spec.relay} hold error p50 ${hold.p50Us} us`);
      }
    });

    await t.test('RTP hop sender1 -> relay1: p50 within 1 ms of the 20 ms hold', () => {
      const m = measured.get('rtp') as Measured;
      assert.ok(
        Math.abs(m.p50 - HOLD_MS / 1000) <= 0.001,
        `p50 ${(m.p50 * 1000).toFixed(3)} ms, want ${HOLD_MS} +- 1 ms`,
      );
    });

    await t.test('every non-silent window of each hop paired (>= 99% of predicted)', () => {
      for (const p of PIPELINES) {
        const m = measured.get(p.key) as Measured;
        const pr = predicted.get(p.key) as Prediction;
        assert.ok(pr.signatures > 0, `${p.key}: the reference predicts no signature at all`);
        assert.ok(
          m.count >= MIN_PAIRED_FRACTION * pr.signatures,
          `${p.sender}->${p.relay}: ${m.count} hop samples, predicted ${pr.signatures}`,
        );
        // One sample per window: more would mean double counting or false pairs.
        assert.ok(
          m.count <= pr.signatures,
          `${p.sender}->${p.relay}: ${m.count} hop samples exceed the ${pr.signatures} windows`,
        );
      }
    });

    await t.test('each stream yields >= 10 samples per second of speech', () => {
      for (const p of PIPELINES) {
        const m = measured.get(p.key) as Measured;
        const pr = predicted.get(p.key) as Prediction;
        const rate = m.count / pr.speechSeconds;
        assert.ok(
          rate >= MIN_SAMPLES_PER_SPEECH_SECOND,
          `${p.key}: ${rate.toFixed(1)} samples per speech second (${m.count} in ${pr.speechSeconds} s)`,
        );
      }
    });

    await t.test('re-framing hop: hold + 0/20/40 ms, never less than the hold', async () => {
      // A window is seen leaving relay2 with the 60 ms packet holding its last byte: 20 ms
      // after the third input arrived, i.e. 20, 40 or 60 ms after the input packet holding
      // that byte. Nothing can be faster than the hold.
      const sel = hopSel(lab, 'sender2', 'relay2');
      const p01 = await (prom as Prometheus).queryValue(
        `histogram_quantile(0.01, sum by (le) (audio_latency_seconds_bucket{${sel}}))`,
      );
      const p99 = await (prom as Prometheus).queryValue(
        `histogram_quantile(0.99, sum by (le) (audio_latency_seconds_bucket{${sel}}))`,
      );
      assert.ok(p01 !== undefined && p01 >= 0.019, `relay2 p1 ${p01}`);
      assert.ok(p99 !== undefined && p99 <= 0.065, `relay2 p99 ${p99}`);
    });

    await t.test('transit latency exported and small (< 5 ms)', () => {
      assert.ok(
        transitMean !== undefined && Number.isFinite(transitMean),
        'no audio_transit_latency_seconds',
      );
      assert.ok(transitMean < 0.005, `transit mean ${transitMean} s`);
      assert.ok(transitP90 !== undefined && transitP90 < 0.005, `transit p90 ${transitP90} s`);
    });

    await t.test('audio_signatures_total counts each sender', () => {
      for (const p of PIPELINES) {
        const v = sigCounts.get(p.key);
        assert.ok(
          v !== undefined && v > 0,
          `audio_signatures_total{pod=${lab.pod(p.sender).ip}} = ${v}`,
        );
      }
    });

    await t.test('the agent signs each sender stream as the reference does (+-1%)', () => {
      // Localises a shortfall of hop samples: if the sender's own stream already yields fewer
      // signatures than the reference, the bytes were lost or misread before correlation
      // (classifier, engine); if not, the pairing lost them.
      for (const p of PIPELINES) {
        const v = sigCounts.get(p.key) ?? 0;
        const want = (predicted.get(p.key) as Prediction).signatures;
        assert.ok(
          Math.abs(v - want) <= 0.01 * want,
          `${p.sender} (${p.encoding}, ${p.transport}): agent made ${v} signatures, the reference ` +
            `${want} from the same bytes`,
        );
      }
    });

    await t.test('OTLP: the hop histogram agrees with Prometheus, explicit bounds, ~20 ms', () => {
      assert.ok(
        otlpFinal,
        `no OTLP export with sender1->relay1 count ${rtpCount} (Prometheus) after ${otlpSeen} ` +
          `exports; last count ${otlpLastCount}`,
      );
      const hop = metricsNamed(otlpFinal.request, 'audio_latency_seconds');
      assert.equal(hop.length, 1);
      assert.equal(hop[0].data, 'histogram');
      assert.equal(hop[0].histogram?.aggregationTemporality, 'AGGREGATION_TEMPORALITY_CUMULATIVE');
      const point = otlpHopPoint(otlpFinal, s1, r1) as HistogramDataPoint;
      assert.deepEqual(point.explicitBounds, LATENCY_BUCKETS);
      assert.equal(point.bucketCounts.length, LATENCY_BUCKETS.length + 1);
      assert.equal(
        point.bucketCounts.reduce((a, b) => a + b, 0),
        point.count,
        'bucket counts add up to the count',
      );
      const mean = (point.sum ?? NaN) / point.count;
      assert.ok(
        Math.abs(mean - HOLD_MS / 1000) <= MAX_MEAN_ERROR_S,
        `OTLP mean ${(mean * 1000).toFixed(3)} ms, want ${HOLD_MS} +- 2 ms`,
      );
    });

    await t.test('OTLP: audio_signatures per pod, as Prometheus counted them', () => {
      assert.ok(otlpFinal, 'no final OTLP export');
      const sigs = metricsNamed(otlpFinal.request, 'audio_signatures');
      assert.equal(sigs.length, 1);
      assert.equal(sigs[0].data, 'sum');
      assert.equal(sigs[0].sum?.isMonotonic, true);
      const points = sigs[0].sum?.dataPoints ?? [];
      for (const p of points) {
        assert.equal(typeof attributesOf(p.attributes).pod, 'string', 'point without pod');
      }
      for (const p of PIPELINES) {
        const ip = lab.pod(p.sender).ip;
        const point = points.find((x) => attributesOf(x.attributes).pod === ip);
        assert.ok(point, `no audio_signatures point for pod=${ip}`);
        assert.equal(numberValue(point), sigCounts.get(p.key), `audio_signatures{pod=${ip}}`);
      }
    });

    await t.test('OTLP: resource attributes and the header on every export', () => {
      assert.ok(otlpFinal, 'no final OTLP export');
      const resource = attributesOf(otlpFinal.request.resourceMetrics[0]?.resource?.attributes);
      assert.equal(resource['service.name'], 'audio-latency-tracker');
      assert.equal(resource['service.version'], packageVersion());
      assert.equal(resource['host.name'], hostname());
      assert.equal(resource['k8s.cluster.name'], CLUSTER);
      const exports = (otlp as OtlpReceiver).exports;
      const without = exports.filter((e) => e.metadata['x-api-key'] !== OTLP_SECRET);
      assert.equal(
        without.length,
        0,
        `${without.length} of ${exports.length} exports lack x-api-key`,
      );
    });

    await t.test(
      'SAMPLE_LOG: one JSON line per hop sample, as many as the histogram counted',
      async () => {
        const a = agent as AgentProcess;
        const src = lab.pod('sender1').ip;
        const dst = lab.pod('relay1').ip;
        const counted = sumOf(parseMetrics(await a.scrape()), 'audio_latency_seconds_count', {
          source_pod: src,
          dest_pod: dst,
        });
        const lines = agentOutput
          .filter((l) => l.startsWith('[stdout] ') && l.includes('"latency_seconds"'))
          .map((l) => JSON.parse(l.slice('[stdout] '.length)) as Record<string, unknown>)
          .filter((o) => o.source_pod === src && o.dest_pod === dst);
        assert.equal(lines.length, counted, 'one sample line per recorded hop sample');
        for (const o of lines) {
          assert.match(String(o.signature), /^[0-9a-f]{16}$/);
          // The relay never forwards before its hold; scheduling delays may add to it.
          const latency = Number(o.latency_seconds);
          assert.ok(latency >= HOLD_MS / 1000 - 0.001 && latency < 1, JSON.stringify(o));
          const at = Date.parse(String(o.time));
          assert.ok(
            Math.abs(at - Date.now()) < 120_000,
            `sample time ${o.time} is not wall-clock now`,
          );
        }
      },
    );

    await t.test(
      "deploy/: every metric the dashboard and the alerts use is in the agent's scrape",
      async () => {
        const text = await (agent as AgentProcess).scrape();
        const scraped = new Set(parseMetrics(text).map((s) => s.name));
        const used = deployMetricNames(join(REPO_ROOT, 'deploy'));
        assert.ok(used.size >= 10, `only ${used.size} metric names in deploy/`);
        const missing = [...used]
          .filter(([name]) => !NOT_AGENT_METRICS.has(name))
          .filter(([name]) => !scraped.has(name))
          .map(([name, where]) => `${name} (${where.join(', ')})`);
        assert.deepEqual(missing, [], 'used by deploy/ but not in the scrape');
      },
    );

    await t.test('SIGTERM: exit 0, nothing left attached on the lab interfaces', async () => {
      const a = agent as AgentProcess;
      const exit = await a.stop();
      assert.equal(exit.signal, null, `agent died of ${exit.signal}:\n${a.logs(20).join('\n')}`);
      assert.equal(exit.code, 0, `agent exit code ${exit.code}:\n${a.logs(20).join('\n')}`);
      const left = agentAttachments(lab.existingHostInterfaces(), knownLinkIds);
      assert.deepEqual(left, [], `still attached after SIGTERM:\n${left.join('\n')}`);
    });

    await t.test('the OTLP header secret never reaches the agent output', () => {
      assert.ok(!(agent as AgentProcess).running, 'checked after exit, shutdown logs included');
      assert.ok(agentOutput.length > 0, 'the agent printed nothing at all');
      const leaks = agentOutput.filter((l) => l.includes(OTLP_SECRET));
      assert.deepEqual(leaks, [], 'agent output shows the x-api-key value');
    });
  } catch (err) {
    if (agent) console.error(`agent log tail:\n${agent.logs(40).join('\n')}`);
    for (const p of pipes) {
      for (const proc of [p.sender, p.relay, p.sink]) {
        if (proc?.stderr) console.error(`${proc.describe()} stderr: ${proc.stderr}`);
      }
    }
    throw err;
  } finally {
    await stopPipelines(pipes).catch(() => []);
    if (agent?.running) await agent.stop();
    await prom?.stop();
    await otlp?.close();
    lab.teardown();
  }
});
