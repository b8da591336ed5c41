/**
 * Fault injection against the real agent process (`node dist/src/main.js`), attached to a lab of
 * three pods (sender -> relay holding 20 ms -> sink, RTP PCMU at 50 packets/s, running through
 * the whole file), so every fault is judged by what matters: hop samples keep arriving.
 *
 *  1. OTLP collector down, hanging (TCP and gRPC), slow, answering UNAVAILABLE,
 *     RESOURCE_EXHAUSTED, INTERNAL: /metrics stays fresh, failures are counted, logged once
 *     (rate-limited), retried with backoff only when retryable, memory stays bounded, and
 *     pushes carry current values again once the collector recovers.
 *  2. Kubelet answering 403, down, hanging; 3. API server answering 403, down, hanging: the
 *     agent keeps measuring, keeps the names it knows, and learns new ones once they return.
 *  4. SIGKILL under traffic and a restart: stale tc filters of a dead instance removed, no
 *     duplicate attachments, measurement resumes.
 *  5. A pod's veth deleted and re-created under the same name: re-attached on the new ifindex,
 *     measurement resumes, no error loop.
 *  6. Ring buffer overflow (PERF_BUFFER_SIZE=1): losses counted exactly, recovery after.
 *
 * Faults are made by test/support/fault-proxy.ts (a TCP front switched between pass, down and
 * hang), the OTLP receiver's failure modes and the fake kubelet / API server's forced status.
 * Root only: skips loudly outside CI, fails under CI=true.
 */
import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import { once } from 'node:events';
import { readdirSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { after, test, type TestContext } from 'node:test';
import { RETRY_MAX, retryDelayMs } from '../otel/otlp-exporter.js';
import { AgentProcess, sleep } from './lab/agent-process.js';
import { agentTcFilters, bpfLinks, ifindexOf, processTcxLinks } from './lab/attachments.js';
import { Lab, type LabProcess } from './lab/lab.js';
import { parseMetrics, sumOf, type Labels, type Sample } from './lab/metrics-text.js';
import { FaultProxy } from './support/fault-proxy.js';
import {
  FakeApiServer,
  FakeCluster,
  FakeKubelet,
  makeCertificate,
  makePod,
  writeKubeconfig,
  writeTokenFile,
  type TestCertificate,
} from './support/fake-k8s.js';
import {
  attributesOf,
  metricsNamed,
  startOtlpReceiver,
  type ReceivedExport,
} from './support/otlp-receiver.js';
import { requireRoot } from './support/root.js';

const AUDIO_PORTS = '40000-40199';
const RELAY_PORT = 40000;
const RELAY_OUT_PORT = 40001;
const SINK_PORT = 40002;
const SENDER_PORT = 40010;
const BURST_PORT = 40150;
const NODE = 'node-1';
const NAMESPACE = 'media';
const HOPS = 'audio_latency_seconds_count';
const AGENT_PROG_NAMES = new Set(['tc_ingress', 'tc_egress']);
const TCX_ATTACH_TYPES = [46, 47]; // BPF_TCX_INGRESS, BPF_TCX_EGRESS

// ---------------------------------------------------------------------------------------------
// The lab, shared by every test: built on first use, torn down at the end.

interface Rig {
  lab: Lab;
  sink: LabProcess;
  relay: LabProcess;
  sender: LabProcess | undefined;
}

let rig: Rig | undefined;

async function labRig(): Promise<Rig> {
  if (rig !== undefined) {
    if (rig.sender === undefined || !rig.sender.running) await startSender(rig);
    return rig;
  }
  const lab = Lab.create({ pods: ['sender', 'relay', 'sink'] });
  const sink = lab.spawn('sink', 'sink', ['--listen', String(SINK_PORT), '--in', 'rtp']);
  await sink.ready;
  const relay = lab.spawn('relay', 'relay', [
    '--listen',
    String(RELAY_PORT),
    '--to',
    `${lab.pod('sink').ip}:${SINK_PORT}`,
    '--sport',
    String(RELAY_OUT_PORT),
    '--hold-ms',
    '20',
    '--in',
    'rtp',
    '--out',
    'rtp',
  ]);
  await relay.ready;
  rig = { lab, sink, relay, sender: undefined };
  await startSender(rig);
  return rig;
}

async function startSender(r: Rig): Promise<void> {
  r.sender = r.lab.spawn('sender', 'sender', [
    '--dest',
    `${r.lab.pod('relay').ip}:${RELAY_PORT}`,
    '--encoding',
    'pcmu',
    '--transport',
    'rtp',
    '--seed',
    String(0x5eed0101),
    '--duration',
    '0',
    '--sport',
    String(SENDER_PORT),
  ]);
  await r.sender.ready;
}

after(async () => {
  if (rig === undefined) return;
  await rig.sender?.stop();
  await rig.relay.stop();
  await rig.sink.stop();
  rig.lab.teardown();
});

// ---------------------------------------------------------------------------------------------
// The agent

interface Run {
  agent: AgentProcess;
  /** Every stdout line, in order (AgentProcess keeps only the last 500). */
  lines: string[];
}

async function startAgent(lab: Lab, env: Record<string, string>): Promise<Run> {
  const lines: string[] = [];
  const agent = await AgentProcess.start({
    env: {
      INTERFACE: lab.interfaceGlob,
      AUDIO_PORTS,
      SIGNATURE_WINDOW_SIZE: '256',
      SILENCE_THRESHOLD: '256',
      SIGNATURE_ALGORITHM: 'xxhash',
      FLOW_TIMEOUT_MS: '30000',
      LOG_LEVEL: 'info',
      K8S_ENABLED: 'false',
      ...env,
    },
    onLine: (line, stream) => lines.push(stream === 'stderr' ? `[stderr] ${line}` : line),
  });
  lab.track(agent.pid);
  const run = { agent, lines };
  await waitFor(run, 'the three lab interfaces attached', 15_000, async () => {
    return (sumOf(await scrape(run), 'audio_tracker_interfaces_attached') ?? 0) >= 3;
  });
  return run;
}

async function stopAgent(t: TestContext, run: Run): Promise<void> {
  const exit = await run.agent.stop();
  t.diagnostic(`agent exit: code ${exit.code} signal ${exit.signal}`);
  assert.equal(exit.code, 0, `agent exit ${JSON.stringify(exit)}:\n${tail(run)}`);
}

function tail(run: Run, n = 40): string {
  return run.lines.slice(-n).join('\n');
}

async function scrape(run: Run): Promise<Sample[]> {
  return parseMetrics(await run.agent.scrape());
}

async function hops(run: Run, selector: Labels = {}): Promise<number> {
  return sumOf(await scrape(run), HOPS, selector) ?? 0;
}

async function waitFor(
  run: Run,
  what: string,
  timeoutMs: number,
  check: () => Promise<boolean>,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (await check()) return;
    await sleep(200);
  }
  assert.fail(`timed out (${timeoutMs} ms) waiting for ${what}; agent log:\n${tail(run)}`);
}

/** Waits until the hop count (of `selector`) passes `above`: measurement goes on. */
async function hopsGrow(
  run: Run,
  what: string,
  above: number,
  selector: Labels = {},
  timeoutMs = 10_000,
): Promise<number> {
  const deadline = Date.now() + timeoutMs;
  let samples: Sample[] = [];
  while (Date.now() < deadline) {
    samples = await scrape(run);
    const now = sumOf(samples, HOPS, selector) ?? 0;
    if (now > above) return now;
    await sleep(200);
  }
  const series = samples
    .filter((s) => s.name === HOPS)
    .map((s) => `${JSON.stringify(s.labels)} ${s.value}`);
  assert.fail(
    `${what}: hop samples of ${JSON.stringify(selector)} stayed at ${above}; series:\n` +
      `${series.join('\n')}\nagent log:\n${tail(run)}`,
  );
}

interface LogLine {
  level?: string;
  msg?: string;
  [k: string]: unknown;
}

function parsed(lines: readonly string[]): LogLine[] {
  const out: LogLine[] = [];
  for (const l of lines) {
    try {
      out.push(JSON.parse(l) as LogLine);
    } catch {
      out.push({ level: 'unparsable', msg: l });
    }
  }
  return out;
}

function problems(lines: readonly string[]): LogLine[] {
  return parsed(lines).filter((l) => l.level !== 'info' && l.level !== 'debug');
}

function rssKiB(pid: number): number {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  return Number(/^VmRSS:\s+(\d+)/m.exec(status)?.[1] ?? NaN);
}

// ---------------------------------------------------------------------------------------------
// 1. OTLP collector faults

const OTLP_INTERVAL_MS = 500;
const OTLP_TIMEOUT_MS = 400;
/** The agent's resident memory may not grow more than this across the fault period. */
const OTLP_FAULT_RSS_BOUND_KIB = 24 * 1024;

/** The sum of `name` across the data points of one OTLP export (undefined: absent). */
function exportedSum(exp: ReceivedExport, name: string): number | undefined {
  let total: number | undefined;
  for (const m of metricsNamed(exp.request, name)) {
    for (const p of m.histogram?.dataPoints ?? []) total = (total ?? 0) + p.count;
    for (const p of m.sum?.dataPoints ?? []) total = (total ?? 0) + (p.asDouble ?? p.asInt ?? 0);
  }
  return total;
}

test('OTLP collector down, hanging, slow and failing: Prometheus stays fresh, failures counted and logged once, retries only when retryable, bounded memory, recovery', async (t) => {
  if (!requireRoot(t)) return;
  const { lab } = await labRig();
  const receiver = await startOtlpReceiver();
  t.after(() => receiver.close());
  const proxy = await FaultProxy.start({ port: receiver.port });
  t.after(() => proxy.close());
  const run = await startAgent(lab, {
    OTEL_EXPORTER_OTLP_ENDPOINT: `http://${proxy.address}`,
    OTEL_METRIC_EXPORT_INTERVAL: String(OTLP_INTERVAL_MS),
    OTEL_EXPORTER_OTLP_TIMEOUT: String(OTLP_TIMEOUT_MS),
  });
  t.after(() => run.agent.stop());

  // Healthy first: pushes arrive and carry hop samples.
  await receiver.waitForExport((e) => (exportedSum(e, 'audio_latency_seconds') ?? 0) > 0, 15_000);
  const linesBefore = run.lines.length;
  const rss: number[] = [rssKiB(run.agent.pid)];
  const failuresAt = async (): Promise<number> =>
    sumOf(await scrape(run), 'audio_tracker_otlp_export_failures_total') ?? 0;

  /** Holds a fault for `ms`: hop samples and failures must both grow on /metrics meanwhile. */
  const hold = async (fault: string, ms: number): Promise<{ start: number; end: number }> => {
    const start = Date.now();
    const hopsStart = await hops(run);
    const failStart = await failuresAt();
    while (Date.now() - start < ms) {
      await sleep(500);
      rss.push(rssKiB(run.agent.pid));
    }
    await hopsGrow(run, `collector ${fault}`, hopsStart);
    const failEnd = await failuresAt();
    const intervals = ms / OTLP_INTERVAL_MS;
    assert.ok(
      failEnd - failStart >= intervals / 2,
      `collector ${fault}: ${failEnd - failStart} failures counted in ${intervals} intervals`,
    );
    assert.ok((await fetch(`${run.agent.baseUrl}/healthz`)).ok);
    t.diagnostic(`${fault}: +${failEnd - failStart} failures, ${receiver.attempts} attempts`);
    return { start, end: Date.now() };
  };
  /** The exports attempted in window `w`, each as the delays between its attempts. */
  const exportsIn = (w: { start: number; end: number }): number[][] => {
    const byExport = new Map<string, number[]>();
    receiver.attemptTimes.forEach((at, i) => {
      if (at < w.start || at >= w.end) return;
      const digest = receiver.attemptDigests[i];
      byExport.set(digest, [...(byExport.get(digest) ?? []), at]);
    });
    return [...byExport.values()].map((times) => times.slice(1).map((at, i) => at - times[i]));
  };

  await proxy.setMode('down'); // connection refused
  await hold('down', 3000);
  // Connections reset at once: every export and retry must really try to connect. A grpc-js
  // channel that failed to connect waits out its own reconnect backoff (1 s, x1.6, up to
  // 2 min) and fails calls meanwhile without trying; the agent renews the channel instead.
  await proxy.setMode('reset');
  const reset = await hold('resetting connections', 3000);
  const tried = proxy.accepted.filter((c) => c.at >= reset.start && c.at < reset.end).length;
  t.diagnostic(`connection attempts while reset: ${tried} in 3 s`);
  // A new channel at most once a second (grpc-js alone: none in these 3 s).
  assert.ok(tried >= 2 && tried <= 12, `${tried} connection attempts in 3 s`);
  // Back: the next export gets through.
  const upAgain = Date.now();
  const exportsBefore = receiver.exports.length;
  await proxy.setMode('pass');
  await waitFor(run, 'a push after the collector came back', 5000, async () => {
    return receiver.exports.length > exportsBefore;
  });
  const reconnectMs = Date.now() - upAgain;
  t.diagnostic(`first push ${reconnectMs} ms after the collector came back`);
  assert.ok(reconnectMs <= 3 * OTLP_INTERVAL_MS, `push ${reconnectMs} ms after the outage`);
  await proxy.setMode('hang'); // TCP accepted, HTTP/2 never answered
  await hold('accepting TCP and never answering', 2500);
  await proxy.setMode('pass');
  receiver.mode = 'hang'; // the gRPC call accepted, never answered
  await hold('accepting the call and never answering', 2000);
  receiver.mode = 'slow';
  receiver.slowMs = OTLP_TIMEOUT_MS * 2; // answered, after the deadline
  const slow = await hold('answering after the deadline', 2000);
  receiver.mode = 'unavailable';
  const unavailable = await hold('answering UNAVAILABLE', 2500);
  receiver.mode = 'resource_exhausted';
  const exhausted = await hold('answering RESOURCE_EXHAUSTED', 2000);
  receiver.mode = 'internal';
  const internal = await hold('answering INTERNAL', 2000);

  // Retries: UNAVAILABLE is retried with growing delays inside each export interval;
  // RESOURCE_EXHAUSTED (no RetryInfo) and INTERNAL are not; a call that hit its deadline
  // (slow) leaves no budget for a retry.
  const retried = exportsIn(unavailable);
  t.diagnostic(`UNAVAILABLE: ms between the attempts of each export: ${JSON.stringify(retried)}`);
  const full = retried.filter((gaps) => gaps.length >= 3);
  assert.ok(full.length >= 2, `retried exports: ${JSON.stringify(retried)}`);
  const budget = Math.min(OTLP_TIMEOUT_MS, OTLP_INTERVAL_MS);
  for (const gaps of full) {
    assert.ok(gaps.length <= RETRY_MAX, `at most ${RETRY_MAX} retries: ${gaps}`);
    // Each delay is at least its step of the schedule (x1.5, -20 % jitter); the attempt
    // itself (a new connection after UNAVAILABLE) adds to it, so only the floor is exact.
    gaps.forEach((gap, i) => {
      const floor = 0.8 * retryDelayMs(budget, i);
      assert.ok(gap >= floor, `retry ${i + 1} after ${gap} ms, schedule floor ${floor}: ${gaps}`);
    });
    assert.ok(gaps[gaps.length - 1] > gaps[0], `backoff grows: ${gaps}`);
  }
  for (const [name, w] of [
    ['RESOURCE_EXHAUSTED', exhausted],
    ['INTERNAL', internal],
    ['slow', slow],
  ] as const) {
    const b = exportsIn(w);
    assert.ok(
      b.every((gaps) => gaps.length === 0),
      `${name} must not be retried: ${JSON.stringify(b)}`,
    );
    assert.ok(b.length >= 2, `${name}: one attempt per export, got ${JSON.stringify(b)}`);
  }

  // Logged, but not flooded: one line for the whole fault period (~40 export intervals).
  const faultLines = problems(run.lines.slice(linesBefore));
  t.diagnostic(`warn/error lines during the faults: ${JSON.stringify(faultLines)}`);
  const otlpLines = faultLines.filter((l) => l.msg === 'OTLP export failed');
  assert.equal(otlpLines.length, 1, 'exactly one OTLP failure line over ~40 intervals');
  assert.equal(faultLines.length, otlpLines.length, 'nothing else complains');
  assert.match(String(otlpLines[0].error), /UNAVAILABLE/);

  // Memory: bounded over the fault period.
  const growth = Math.max(...rss) - rss[0];
  t.diagnostic(
    `RSS KiB over the faults: first ${rss[0]}, max ${Math.max(...rss)}, last ${rss.at(-1)}`,
  );
  assert.ok(growth <= OTLP_FAULT_RSS_BOUND_KIB, `RSS grew ${growth} KiB during the faults`);

  // Recovery: the next pushes arrive and carry what /metrics shows now.
  receiver.mode = 'ok';
  const hopsNow = await hops(run);
  const recoveredFrom = Date.now();
  const exp = await receiver.waitForExport(
    (e) => (exportedSum(e, 'audio_latency_seconds') ?? 0) >= hopsNow,
    10_000,
  );
  t.diagnostic(`first current push ${Date.now() - recoveredFrom} ms after recovery`);
  const pushedFailures = exportedSum(exp, 'audio_tracker_otlp_export_failures') ?? 0;
  assert.ok(pushedFailures >= 20, `the push reports the failures: ${pushedFailures}`);
  const resource = attributesOf(exp.request.resourceMetrics[0]?.resource?.attributes);
  assert.equal(resource['service.name'], 'audio-latency-tracker');
  await stopAgent(t, run);
});

// ---------------------------------------------------------------------------------------------
// 2, 3. Kubelet and API server faults

interface K8sRig {
  cert: TestCertificate;
  cluster: FakeCluster;
  token: string;
  tokenFile: string;
}

function k8sRig(t: TestContext, lab: Lab): K8sRig {
  const cert = makeCertificate();
  t.after(() => cert.cleanup());
  const cluster = new FakeCluster();
  const token = `fault-token-${process.pid}`;
  const tokenFile = writeTokenFile(cert.dir, token);
  // The sender is a known pod; the relay's address is not a pod yet.
  cluster.add(
    makePod({ name: 'caller', namespace: NAMESPACE, node: NODE, ip: podIp(lab, 'sender') }),
  );
  return { cert, cluster, token, tokenFile };
}

function podIp(lab: Lab, name: string): string {
  return lab.pod(name).ip;
}

/** A source retries with exponential backoff (1 s doubling, +-20 %): after ~5 s of faults the
 *  next try may be 8-10 s away. */
const RECOVERY_TIMEOUT_MS = 15_000;

/** The hop as long as only the caller is known, and once the relay's pod is known too. */
const KNOWN_NAME: Labels = { source_pod: 'caller', dest_pod: 'external' };
const LEARNT_NAME: Labels = { source_pod: 'caller', dest_pod: 'relay' };

function relayPod(lab: Lab): ReturnType<typeof makePod> {
  return makePod({ name: 'relay', namespace: NAMESPACE, node: NODE, ip: podIp(lab, 'relay') });
}

/**
 * One fault phase of a pod metadata source: hop samples keep arriving on both hops, the names
 * the agent knew stay, and the pod added meanwhile is not known yet.
 */
async function k8sFaultHolds(run: Run, fault: string, ms: number): Promise<void> {
  const known = await hops(run, KNOWN_NAME);
  await sleep(ms);
  await hopsGrow(run, `${fault}: still measured, the caller still named`, known, KNOWN_NAME);
  assert.equal(await hops(run, LEARNT_NAME), 0, `${fault}: the new pod cannot be known yet`);
}

test('kubelet answering 403, down and hanging: measuring goes on, names kept, new names learnt once it returns', async (t) => {
  if (!requireRoot(t)) return;
  const { lab } = await labRig();
  const k = k8sRig(t, lab);
  const kubelet = new FakeKubelet(k.cluster, k.cert, k.token, NODE);
  await kubelet.up();
  t.after(() => kubelet.down());
  const proxy = await FaultProxy.start({ port: kubelet.port });
  t.after(() => proxy.close());
  const run = await startAgent(lab, {
    K8S_ENABLED: 'true',
    K8S_NODE_NAME: NODE,
    K8S_POD_SOURCE: 'kubelet',
    K8S_KUBELET_URL: `https://${proxy.address}`,
    K8S_KUBELET_CA_FILE: k.cert.certPath,
    K8S_TOKEN_FILE: k.tokenFile,
    K8S_KUBELET_POLL_INTERVAL_MS: '200',
  });
  t.after(() => run.agent.stop());
  await hopsGrow(run, 'kubelet healthy', 0, KNOWN_NAME);
  const linesBefore = run.lines.length;

  // The relay's pod appears while the kubelet cannot tell.
  k.cluster.add(relayPod(lab));

  // Hanging (accepted, never answered): the agent's request must end by its own timeout
  // (10 s), not wait forever, and the agent measures on meanwhile.
  await proxy.setMode('hang');
  const hangStart = Date.now();
  await waitFor(run, 'the hung kubelet request to time out', 20_000, async () => {
    const hung = proxy.acceptedSince(hangStart)[0];
    return hung?.closedAt !== undefined;
  });
  const hung = proxy.acceptedSince(hangStart)[0];
  const hungFor = (hung.closedAt ?? NaN) - hung.at;
  t.diagnostic(`hung kubelet request given up by the agent after ${hungFor} ms`);
  assert.ok(hungFor >= 9500 && hungFor <= 11_000, `request timeout ${hungFor} ms, expected 10 s`);
  kubelet.forceStatus = 403;
  await proxy.setMode('pass');
  await k8sFaultHolds(run, 'kubelet hanging', 0);
  await k8sFaultHolds(run, 'kubelet 403', 2000);
  kubelet.forceStatus = undefined;
  await proxy.setMode('down');
  await k8sFaultHolds(run, 'kubelet down', 2000);
  const faultLines = problems(run.lines.slice(linesBefore));
  t.diagnostic(`warn/error lines during the faults: ${JSON.stringify(faultLines)}`);
  assert.ok(
    faultLines.some((l) => l.level === 'error' && /403/.test(String(l.msg))),
    'the 403 is explained',
  );
  assert.ok(faultLines.length <= 3, `log not flooded: ${faultLines.length} lines`);

  // The kubelet answers again: the new pod is named at the next retry (backoff: up to ~10 s).
  await proxy.setMode('pass');
  const recovered = Date.now();
  await hopsGrow(run, 'kubelet back: the relay named', 0, LEARNT_NAME, RECOVERY_TIMEOUT_MS);
  t.diagnostic(`relay named ${Date.now() - recovered} ms after the kubelet returned`);
  await stopAgent(t, run);
});

test('API server answering 403, down and hanging: measuring goes on, names kept, new names learnt once it returns', async (t) => {
  if (!requireRoot(t)) return;
  const { lab } = await labRig();
  const k = k8sRig(t, lab);
  const api = new FakeApiServer(k.cluster, k.cert, k.token);
  await api.up();
  t.after(() => api.down());
  const proxy = await FaultProxy.start({ port: api.port });
  t.after(() => proxy.close());
  const kubeconfig = writeKubeconfig(
    k.cert.dir,
    `https://${proxy.address}`,
    k.cert.certPath,
    k.tokenFile,
  );
  const run = await startAgent(lab, {
    K8S_ENABLED: 'true',
    K8S_NODE_NAME: NODE,
    K8S_POD_SOURCE: 'apiserver',
    KUBECONFIG: kubeconfig,
  });
  t.after(() => run.agent.stop());
  await hopsGrow(run, 'API server healthy', 0, KNOWN_NAME);
  await waitFor(run, 'the watch open', 5000, async () => k.cluster.watchers.size === 1);
  const linesBefore = run.lines.length;

  // 403: the watch is cut (as a restarting API server does) and every new request refused.
  api.forceStatus = 403;
  k.cluster.endWatches();
  k.cluster.add(relayPod(lab));
  await k8sFaultHolds(run, 'API server 403', 2000);
  api.forceStatus = undefined;
  await proxy.setMode('down');
  await k8sFaultHolds(run, 'API server down', 1500);
  await proxy.setMode('hang');
  await k8sFaultHolds(run, 'API server hanging', 1500);
  const faultLines = problems(run.lines.slice(linesBefore));
  t.diagnostic(`warn/error lines during the faults: ${JSON.stringify(faultLines)}`);
  assert.ok(
    faultLines.some((l) => l.level === 'error' && /403/.test(String(l.msg))),
    'the 403 is explained',
  );
  assert.ok(faultLines.length <= 3, `log not flooded: ${faultLines.length} lines`);

  // Back (the hung connections are cut, as a restarted server does): list, watch, new name.
  await proxy.setMode('pass');
  const recovered = Date.now();
  await hopsGrow(run, 'API server back: the relay named', 0, LEARNT_NAME, RECOVERY_TIMEOUT_MS);
  t.diagnostic(`relay named ${Date.now() - recovered} ms after the API server returned`);
  await waitFor(run, 'the watch open again', 10_000, async () => k.cluster.watchers.size === 1);
  await stopAgent(t, run);
});

// ---------------------------------------------------------------------------------------------
// 4. SIGKILL and restart

/** A tc filter of ours on `ifname` means a clsact attachment; TCX links are read from fdinfo. */
function tcFilters(lab: Lab): string[] {
  return lab.hostInterfaces.flatMap((i) => agentTcFilters(i));
}

/** TCX links of `pid` on the lab's interfaces, as "ifname:attachType". */
function tcxLinksOf(lab: Lab, pid: number): string[] {
  const names = new Map(lab.hostInterfaces.map((i) => [ifindexOf(i), i] as const));
  return processTcxLinks(pid)
    .filter((l) => names.has(l.ifindex))
    .map((l) => `${names.get(l.ifindex)}:${l.attachType}`)
    .sort();
}

/** Ids of live BPF links running one of the agent's programs. */
function agentLinkIds(): Set<number> {
  return new Set(
    bpfLinks()
      .filter((l) => l.progName !== undefined && AGENT_PROG_NAMES.has(l.progName))
      .map((l) => l.id),
  );
}

/** `bpftool net show dev` per lab interface: the tc programs it lists (clsact attachments). */
function bpftoolTcPrograms(lab: Lab): string[] {
  return lab.hostInterfaces.flatMap((i) => {
    const text = execFileSync('bpftool', ['-j', 'net', 'show', 'dev', i], { encoding: 'utf8' });
    const shown = JSON.parse(text) as { tc?: { name?: string; kind?: string }[] }[];
    return shown.flatMap((s) => s.tc ?? []).map((p) => `${i}: ${p.kind ?? '?'} ${p.name ?? '?'}`);
  });
}

/** Ids of the TCX links on the lab's interfaces held by any process (every /proc/<pid>/fd). */
function tcxLinksHeldOn(lab: Lab): number[] {
  const indexes = new Set(lab.hostInterfaces.map(ifindexOf));
  const ids = new Set<number>();
  for (const pid of readdirSync('/proc').filter((d) => /^\d+$/.test(d))) {
    for (const l of processTcxLinks(Number(pid))) if (indexes.has(l.ifindex)) ids.add(l.linkId);
  }
  return [...ids];
}

/**
 * A dead instance of an older agent, attached with tc filters (what the agent does on kernels
 * without TCX): the addon attached in tc mode, then SIGKILL. tc filters outlive their process.
 */
async function leaveDeadTcInstance(lab: Lab): Promise<void> {
  const native = fileURLToPath(new URL('../src/native.js', import.meta.url));
  const script = `
import { Classifier } from ${JSON.stringify(native)};
const c = Classifier.open({ ringBufferPages: 8, audioPorts: 'all', algorithm: 'xxhash',
  windowSize: 256, silenceThreshold: 256, maxFlows: 64, flowTimeoutMs: 1000,
  onSignatures: () => {} });
for (const i of ${JSON.stringify(lab.hostInterfaces)}) c.attach(i, { mode: 'tc' });
process.stdout.write('attached\\n');
setInterval(() => {}, 1000);`;
  const child = spawn(process.execPath, ['--input-type=module', '-e', script], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  child.stdout.setEncoding('utf8').on('data', (d: string) => (out += d));
  child.stderr.setEncoding('utf8').on('data', (d: string) => (out += d));
  const deadline = Date.now() + 10_000;
  while (!out.includes('attached') && Date.now() < deadline && child.exitCode === null) {
    await sleep(50);
  }
  assert.match(out, /attached/, `tc instance did not attach: ${out}`);
  child.kill('SIGKILL');
  await once(child, 'close');
}

test('SIGKILL under traffic, then a restart: stale tc filters removed, no duplicates, measuring resumes', async (t) => {
  if (!requireRoot(t)) return;
  const { lab } = await labRig();
  // The agent has no switch to force tc mode (the addon picks TCX whenever the kernel has it):
  // a killed tc-mode instance is made with the addon itself.
  await leaveDeadTcInstance(lab);
  assert.equal(tcFilters(lab).length, 2 * lab.hostInterfaces.length, 'dead instance filters');
  assert.equal(bpftoolTcPrograms(lab).length, 2 * lab.hostInterfaces.length, 'seen by bpftool');

  const first = await startAgent(lab, {});
  const attached = parsed(first.lines).filter((l) => l.msg === 'attached');
  assert.deepEqual(
    attached.map((l) => [l.interface, l.mode, l.staleRemoved]).sort(),
    lab.hostInterfaces.map((i) => [i, 'tcx', 2]).sort(),
    'each interface attached with TCX after removing the two stale filters',
  );
  assert.deepEqual(tcFilters(lab), [], 'no tc filter left');
  const expected = lab.hostInterfaces.flatMap((i) => TCX_ATTACH_TYPES.map((a) => `${i}:${a}`));
  assert.deepEqual(tcxLinksOf(lab, first.agent.pid), expected.sort());
  const firstLinks = new Set(processTcxLinks(first.agent.pid).map((l) => l.linkId));
  const before = await hopsGrow(first, 'first instance', 0);

  first.agent.child.kill('SIGKILL');
  await first.agent.exited;
  await waitFor(first, 'the killed instance links released', 5000, async () => {
    const live = agentLinkIds();
    return [...firstLinks].every((id) => !live.has(id));
  });

  const second = await startAgent(lab, {});
  t.after(() => second.agent.stop());
  assert.deepEqual(tcxLinksOf(lab, second.agent.pid), expected.sort(), 'one link per hook');
  assert.deepEqual(tcFilters(lab), []);
  assert.deepEqual(bpftoolTcPrograms(lab), [], 'bpftool net show: no tc program on the veths');
  // Nothing else on these hooks: every TCX link on the lab's interfaces, whoever holds it,
  // is one of the new instance's six (bpftool 7.1 cannot tell a TCX link's interface).
  const mine = processTcxLinks(second.agent.pid).map((l) => l.linkId);
  assert.deepEqual(tcxLinksHeldOn(lab).sort(), mine.sort());
  for (const id of firstLinks) assert.ok(!agentLinkIds().has(id), `link ${id} of the dead agent`);
  const after = await hopsGrow(second, 'restarted instance', 0);
  t.diagnostic(`hop samples: ${before} before the kill, ${after} after the restart`);
  assert.deepEqual(problems(second.lines), []);
  await stopAgent(t, second);
  assert.deepEqual(tcFilters(lab), []);
});

// ---------------------------------------------------------------------------------------------
// 5. An attached interface deleted and re-created

function macOf(ifname: string): string {
  const text = execFileSync('ip', ['-j', 'link', 'show', 'dev', ifname], { encoding: 'utf8' });
  return (JSON.parse(text) as { address: string }[])[0]?.address ?? '';
}

/** A pod restart: the pod's veth pair gone, then a new one under the same names and address. */
function recreateVeth(lab: Lab, podName: string, gapMs: number): void {
  const pod = lab.pod(podName);
  const peerMac = execFileSync('ip', ['-n', pod.netns, '-j', 'link', 'show', 'dev', 'eth0'], {
    encoding: 'utf8',
  });
  const mac = (JSON.parse(peerMac) as { address: string }[])[0]?.address ?? '';
  execFileSync('ip', ['link', 'del', pod.hostIf]);
  if (gapMs > 0) execFileSync('sleep', [String(gapMs / 1000)]);
  const ip = (...args: string[]): void => {
    execFileSync('ip', args, { stdio: 'pipe' });
  };
  ip(
    'link',
    'add',
    pod.hostIf,
    'type',
    'veth',
    'peer',
    'name',
    'eth0',
    'address',
    mac,
    'netns',
    pod.netns,
  );
  ip('link', 'set', 'dev', pod.hostIf, 'addrgenmode', 'none');
  ip('link', 'set', 'dev', pod.hostIf, 'master', lab.bridge);
  ip('link', 'set', 'dev', pod.hostIf, 'up');
  ip('-n', pod.netns, 'addr', 'add', `${pod.ip}/24`, 'dev', 'eth0');
  ip('-n', pod.netns, 'link', 'set', 'dev', 'eth0', 'up');
}

test('a pod veth deleted and re-created under the same name: re-attached on the new ifindex, measuring resumes, no error loop', async (t) => {
  if (!requireRoot(t)) return;
  const { lab } = await labRig();
  const run = await startAgent(lab, {});
  t.after(() => run.agent.stop());
  const relayIf = lab.pod('relay').hostIf;
  // The one hop of the lab: seen leaving the sender's veth, then at the relay's.
  const intoRelay: Labels = { dest_pod: podIp(lab, 'relay') };
  await hopsGrow(run, 'before', 0, intoRelay);
  assert.ok(macOf(relayIf) !== '');

  // Twice: re-created within one watcher scan, and after the scan saw it gone.
  for (const gapMs of [0, 1500]) {
    const oldIndex = ifindexOf(relayIf);
    const linesBefore = run.lines.length;
    recreateVeth(lab, 'relay', gapMs);
    const newIndex = ifindexOf(relayIf);
    assert.notEqual(newIndex, oldIndex);
    await waitFor(run, `attached to the new ifindex ${newIndex}`, 5000, async () => {
      const links = processTcxLinks(run.agent.pid).filter((l) => l.ifindex === newIndex);
      return links.length === 2;
    });
    const held = processTcxLinks(run.agent.pid);
    assert.deepEqual(
      held.filter((l) => l.ifindex === oldIndex),
      [],
      'no link left on the old ifindex',
    );
    const into = await hops(run, intoRelay);
    await hopsGrow(run, `after re-creation (gap ${gapMs} ms)`, into, intoRelay);
    await sleep(2000); // an error loop would show by now
    const lines = parsed(run.lines.slice(linesBefore));
    const events = lines.filter((l) => l.msg === 'attached' || l.msg === 'detached');
    assert.deepEqual(
      events.map((l) => [l.msg, l.ifindex]),
      [
        ['detached', oldIndex],
        ['attached', newIndex],
      ],
    );
    const noise = problems(run.lines.slice(linesBefore));
    assert.ok(noise.length <= 2, `at most 2 warn/error lines per event: ${JSON.stringify(noise)}`);
    t.diagnostic(`gap ${gapMs} ms: ${noise.length} warn/error lines`);
  }
  assert.equal(sumOf(await scrape(run), 'audio_tracker_interfaces_attached'), 3);
  await stopAgent(t, run);
});

// ---------------------------------------------------------------------------------------------
// 6. Ring buffer overflow

/** `packets` noise-like UDP payloads from the sender pod to the relay, as fast as possible. */
function burst(lab: Lab, packets: number): void {
  const script = `
const s = require('node:dgram').createSocket('udp4');
let seed = 12345;
const payload = Buffer.alloc(320);
s.bind(0, async () => {
  for (let n = 0; n < ${packets}; n++) {
    for (let i = 0; i < payload.length; i++) {
      seed = (Math.imul(seed, 1103515245) + 12345) >>> 0;
      payload[i] = seed >>> 24;
    }
    await new Promise((r) => s.send(payload, ${BURST_PORT}, '${podIp(lab, 'relay')}', r));
  }
  s.close();
});`;
  lab.exec('sender', process.execPath, ['-e', script]);
}

function kernelCounts(samples: Sample[]): { audio: number; delivered: number; lost: number } {
  return {
    audio: sumOf(samples, 'audio_tracker_audio_packets_total') ?? NaN,
    delivered: sumOf(samples, 'audio_tracker_events_delivered_total') ?? NaN,
    lost: sumOf(samples, 'audio_tracker_events_lost_total') ?? NaN,
  };
}

test('ring buffer overflow (PERF_BUFFER_SIZE=1): drops counted exactly, the agent recovers', async (t) => {
  if (!requireRoot(t)) return;
  const r = await labRig();
  const run = await startAgent(r.lab, { PERF_BUFFER_SIZE: '1' });
  t.after(() => run.agent.stop());
  await hopsGrow(run, 'before the burst', 0);
  assert.equal(kernelCounts(await scrape(run)).lost, 0, 'normal rate fits in one page');

  burst(r.lab, 20_000);
  const afterBurst = kernelCounts(await scrape(run));
  t.diagnostic(`after the burst: ${JSON.stringify(afterBurst)}`);
  assert.ok(afterBurst.lost > 0, 'the burst overflowed the ring buffer');

  // Normal-rate audio is measured again.
  const hopsAfter = await hops(run);
  await sleep(1000);
  await hopsGrow(run, 'after the burst', hopsAfter);
  assert.equal(run.agent.running, true);

  // Quiet: every event the kernel attempted was delivered or counted lost.
  await r.sender?.stop();
  let last = kernelCounts(await scrape(run));
  await waitFor(run, 'counters settled', 5000, async () => {
    await sleep(300);
    const now = kernelCounts(await scrape(run));
    const settled = JSON.stringify(now) === JSON.stringify(last);
    last = now;
    return settled;
  });
  t.diagnostic(`settled: ${JSON.stringify(last)}`);
  assert.equal(last.audio, last.delivered + last.lost, 'audio packets == delivered + lost');
  const noise = problems(run.lines);
  assert.deepEqual(noise, [], 'losses are counted, not logged as errors');
  await stopAgent(t, run);
});
