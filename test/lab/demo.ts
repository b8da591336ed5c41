/**
 * The demo (`npm run demo`, the README's first command). It builds the lab on this machine: four
 * pods in network namespaces on a bridge, each in a containerd-shaped cgroup and served as a Pod
 * of namespace `voice` by a test kubelet over HTTPS; streams speech-like audio through a two-hop
 * voice pipeline with known delays, UDP RTP in and TCP out,
 *
 *   caller --RTP--> sbc (holds 20 ms, rewrites RTP headers) --RTP--> gateway (holds 40 ms)
 *     --TCP, same payload bytes--> stt
 *
 * runs the agent with Kubernetes on (so hops are named by pod and namespace, not by address) and
 * shows, every second, per hop: samples, p50/p95/p99 and the expected delay, from its /metrics.
 *
 *   node dist/test/lab/demo.js [--duration <s>] [--prometheus] [--port <metrics port>]
 *
 * Ctrl-C (SIGINT) or SIGTERM stops everything and removes the lab (namespaces, veths, bridge,
 * cgroup directories, processes, temporary files), then checks that nothing is left. A second
 * Ctrl-C exits at once; the synchronous exit handlers still remove the lab. When stdout is not a
 * terminal the view is printed as plain snapshots (every 5 s, and a final one).
 */
import { randomUUID } from 'node:crypto';
import { existsSync } from 'node:fs';
import { hostname } from 'node:os';
import { parseArgs } from 'node:util';
import {
  FakeCluster,
  FakeKubelet,
  makeCertificate,
  writeTokenFile,
  type TestCertificate,
} from '../support/fake-k8s.js';
import { AGENT_ENTRY, AgentProcess, sleep } from './agent-process.js';
import {
  DEMO_AUDIO_PORTS,
  DEMO_BUCKETS,
  DEMO_LAB_PODS,
  DEMO_NAMESPACE,
  DEMO_NODE,
  DEMO_PODS,
  EXPECTED_HOPS,
  GATEWAY_HOLD_MS,
  SBC_HOLD_MS,
  startDemoPipeline,
  stopDemoPipeline,
  type DemoProcess,
  type DemoRole,
} from './demo-pipeline.js';
import { leftovers } from './demo-leftovers.js';
import {
  agentProgress,
  footerLine,
  HOP_METRIC,
  hopRows,
  renderTable,
  warmupLine,
} from './demo-view.js';
import { K8sLab, type K8sPod } from './k8s-lab.js';
import { cleanupStale, isRoot, Lab } from './lab.js';
import { parseMetrics, sumOf, type Sample } from './metrics-text.js';
import { Prometheus } from './prometheus.js';
import { agentEnv } from './scenario.js';

const KUBELET_POLL_MS = 500;
const SNAPSHOT_EVERY_S = 5; // without a terminal

interface DemoOptions {
  durationS: number; // 0: until stopped
  prometheus: boolean;
  port: number; // 0: a free one
}

/** Everything the demo started, so the teardown stops exactly that. */
interface Running {
  lab?: Lab;
  k8s?: K8sLab;
  pods: Map<DemoRole, K8sPod>;
  cert?: TestCertificate;
  kubelet?: FakeKubelet;
  agent?: AgentProcess;
  prom?: Prometheus;
  procs: DemoProcess[];
  /** When the audio started (ms epoch). */
  streamStart?: number;
  /** The last good scrape: the final figures when the agent is gone (a terminal's Ctrl-C
   * reaches the whole process group, the agent included). */
  last?: { samples: Sample[]; streamingS: number };
}

function usage(msg?: string): never {
  if (msg) process.stderr.write(`demo: ${msg}\n`);
  process.stderr.write(
    'usage: node dist/test/lab/demo.js [--duration <seconds>] [--prometheus] [--port <metrics port>]\n',
  );
  process.exit(2);
}

function parseOptions(): DemoOptions {
  let values: { duration?: string; prometheus?: boolean; port?: string; help?: boolean };
  try {
    ({ values } = parseArgs({
      options: {
        duration: { type: 'string' },
        prometheus: { type: 'boolean', default: false },
        port: { type: 'string' },
        help: { type: 'boolean', short: 'h', default: false },
      },
    }));
  } catch (err) {
    usage((err as Error).message);
  }
  if (values.help) usage();
  const durationS = values.duration === undefined ? 0 : Number(values.duration);
  if (!Number.isFinite(durationS) || durationS < 0) usage(`bad --duration '${values.duration}'`);
  const port = values.port === undefined ? 0 : Number(values.port);
  if (!Number.isInteger(port) || port < 0 || port > 65535) usage(`bad --port '${values.port}'`);
  return { durationS, prometheus: values.prometheus ?? false, port };
}

/** Why the demo stops; set once by a signal, the duration, or a failure. */
class StopFlag {
  reason: string | undefined;
  private wake: () => void = () => {};
  private readonly woken = new Promise<void>((resolve) => (this.wake = resolve));

  set(reason: string): void {
    this.reason ??= reason;
    this.wake();
  }

  /** Sleeps `ms`, or less when a stop is asked meanwhile. */
  async nap(ms: number): Promise<void> {
    await Promise.race([sleep(ms), this.woken]);
  }
}

const started = Date.now();
function log(line: string): void {
  process.stdout.write(`[${((Date.now() - started) / 1000).toFixed(1).padStart(5)} s] ${line}\n`);
}

/** Waits until the agent is attached to every lab interface and the kubelet was listed twice. */
async function warmUp(run: Running, stop: StopFlag): Promise<void> {
  const { agent, kubelet, lab } = run;
  if (!agent || !kubelet || !lab) throw new Error('demo: warm-up before the agent started');
  const want = lab.hostInterfaces.length;
  const since = Date.now();
  const deadline = since + 20_000;
  let attached = 0;
  let lists = 0;
  while (!stop.reason) {
    attached = sumOf(parseMetrics(await agent.scrape()), 'audio_tracker_interfaces_attached') ?? 0;
    // The second list started after the first was taken in: the agent knows every pod.
    lists = kubelet.requests.filter((r) => r.at >= since && r.status === 200).length;
    if (attached >= want && lists >= 2) break;
    if (Date.now() > deadline) {
      throw new Error(
        `agent attached ${attached}/${want} interfaces and read the kubelet ${lists} times in ` +
          `20 s:\n${agent.logs(20).join('\n')}`,
      );
    }
    await stop.nap(200);
  }
  log(`agent attached to ${attached}/${want} veths; it read the kubelet's pod list ${lists} times`);
}

async function setUp(run: Running, opts: DemoOptions, stop: StopFlag): Promise<string[]> {
  const stale = cleanupStale();
  if (stale > 0) log(`removed ${stale} namespaces/links left by an earlier, killed run`);
  const lab = Lab.create({ pods: DEMO_LAB_PODS, signalHandlers: false });
  run.lab = lab;
  log(`lab ${lab.id}: ${DEMO_LAB_PODS.length} pods on bridge ${lab.bridge} (${lab.subnet})`);
  const k8s = K8sLab.create(lab, { namespace: DEMO_NAMESPACE, node: DEMO_NODE });
  run.k8s = k8s;
  const cluster = new FakeCluster();
  for (const spec of DEMO_PODS) {
    const pod = k8s.addPod(spec.labPod, spec.app);
    run.pods.set(spec.role, pod);
    cluster.add(k8s.podJson(pod));
    log(
      `pod ${pod.namespace}/${pod.name} (${spec.role}) ip ${lab.pod(spec.labPod).ip} cgroup ` +
        pod.cgroupDir,
    );
  }
  const cert = makeCertificate('demo-kubelet');
  run.cert = cert;
  lab.trackDir(cert.dir);
  const token = `demo-${randomUUID()}`;
  const kubelet = new FakeKubelet(cluster, cert, token, DEMO_NODE);
  run.kubelet = kubelet;
  await kubelet.up();
  log(
    `test kubelet at ${kubelet.url}/pods (HTTPS, self-signed, bearer token), node ${DEMO_NODE}, ` +
      `certificate in ${cert.dir}`,
  );
  if (stop.reason) return [];

  const agent = await AgentProcess.start({
    env: agentEnv(lab, {
      AUDIO_PORTS: DEMO_AUDIO_PORTS,
      LATENCY_BUCKETS: DEMO_BUCKETS.join(','),
      K8S_ENABLED: 'true',
      K8S_NODE_NAME: DEMO_NODE,
      K8S_POD_SOURCE: 'kubelet',
      K8S_KUBELET_URL: kubelet.url,
      K8S_KUBELET_INSECURE: 'true',
      K8S_TOKEN_FILE: writeTokenFile(cert.dir, token),
      K8S_KUBELET_POLL_INTERVAL_MS: String(KUBELET_POLL_MS),
      LOG_LEVEL: 'warn',
    }),
    metricsPort: opts.port || undefined,
  });
  run.agent = agent;
  lab.track(agent.pid);
  log(
    `agent pid ${agent.pid} on ${lab.interfaceGlob}, K8S_ENABLED=true, /metrics on ${agent.port}`,
  );
  await warmUp(run, stop);
  if (stop.reason) return [];

  // After the agent: it follows a TCP stream from its SYN, and the gateway connects at start.
  await startDemoPipeline(lab, k8s, run.pods, (p) => {
    run.procs.push(p);
    lab.track(p.proc.child.pid ?? -1);
  });
  log(
    `pipeline running: ${run.procs.map((p) => `${p.spec.role} pid ${p.proc.child.pid}`).join(', ')}`,
  );

  const name = (r: DemoRole): string => run.pods.get(r)?.name ?? r;
  const header = [
    `audio-latency-tracker demo: lab ${lab.id}, node ${DEMO_NODE}, namespace ${DEMO_NAMESPACE}`,
    `  ${name('caller')} --RTP PCMU--> ${name('sbc')} (holds ${SBC_HOLD_MS} ms, rewrites RTP headers)`,
    `    --RTP--> ${name('gateway')} (holds ${GATEWAY_HOLD_MS} ms) --TCP, same bytes--> ${name('stt')}`,
    `metrics at http://${hostname()}:${agent.port}/metrics  (also http://127.0.0.1:${agent.port}/metrics)`,
  ];
  if (opts.prometheus && !stop.reason) {
    const prom = await Prometheus.start({ targets: [`127.0.0.1:${agent.port}`] });
    run.prom = prom;
    lab.track(prom.pid);
    lab.trackDir(prom.dir);
    log(`Prometheus pid ${prom.pid} at ${prom.url}`);
    header.push(
      `Prometheus at ${prom.url}  e.g. histogram_quantile(0.5, sum by (le, source_pod, dest_pod) ` +
        `(rate(${HOP_METRIC}_bucket[30s])))`,
    );
  }
  header.push(
    opts.durationS > 0
      ? `running ${opts.durationS} s (Ctrl-C stops earlier)`
      : 'running until Ctrl-C',
  );
  return header;
}

/** Expected delay per hop, keyed `namespace/pod -> namespace/pod` as the view spells hops. */
function expectedDelays(run: Running): Map<string, number> {
  const key = (r: DemoRole): string => {
    const p = run.pods.get(r);
    return p ? `${p.namespace}/${p.name}` : r;
  };
  return new Map(EXPECTED_HOPS.map((h) => [`${key(h.source)} -> ${key(h.dest)}`, h.delayMs]));
}

/** The view below the header: the hop table and a footer, or the warm-up line. */
function body(
  samples: Sample[],
  expected: Map<string, number>,
  interfaces: number,
  streamingS: number,
): { lines: string[]; warm: boolean } {
  const rows = hopRows(samples, expected);
  const progress = agentProgress(samples);
  if (rows.length === 0) {
    return { lines: [warmupLine(progress, interfaces, streamingS)], warm: false };
  }
  return { lines: [...renderTable(rows), '', footerLine(progress, streamingS)], warm: true };
}

/** A terminal gets header and view redrawn in place (clear, then home). */
function redraw(header: string[], lines: string[]): void {
  process.stdout.write(`\x1b[H\x1b[2J${[...header, '', ...lines].join('\n')}\n`);
}

/** A log gets the header once, then plain snapshots: no cursor control. */
function snapshot(title: string, lines: string[]): void {
  process.stdout.write(`--- ${title}\n${lines.join('\n')}\n`);
}

async function stream(
  run: Running,
  header: string[],
  opts: DemoOptions,
  stop: StopFlag,
): Promise<number> {
  const { agent, lab } = run;
  if (!agent || !lab) throw new Error('demo: streaming before set-up');
  const expected = expectedDelays(run);
  const tty = process.stdout.isTTY === true;
  if (!tty) process.stdout.write(`${header.join('\n')}\n`);
  const t0 = Date.now();
  run.streamStart = t0;
  let lastSnapshot = -Infinity;
  while (!stop.reason) {
    const streamingS = (Date.now() - t0) / 1000;
    if (!agent.running) {
      process.stdout.write(`agent exited unexpectedly:\n${agent.logs(30).join('\n')}\n`);
      stop.set('agent died');
      return 1;
    }
    const dead = run.procs.find((p) => !p.proc.running);
    if (dead) {
      process.stdout.write(`${dead.proc.describe()} exited: ${dead.proc.stderr.trim()}\n`);
      stop.set(`${dead.spec.role} died`);
      return 1;
    }
    if (opts.durationS > 0 && streamingS >= opts.durationS) {
      stop.set(`${opts.durationS} s elapsed`);
      break;
    }
    let view: { lines: string[]; warm: boolean };
    try {
      const samples = parseMetrics(await agent.scrape());
      run.last = { samples, streamingS };
      view = body(samples, expected, lab.hostInterfaces.length, streamingS);
    } catch (err) {
      view = { lines: [`(scrape failed: ${(err as Error).message})`], warm: false };
    }
    if (tty) {
      redraw(header, view.lines);
    } else if (!view.warm) {
      process.stdout.write(`${view.lines.join('\n')}\n`);
    } else if (streamingS - lastSnapshot >= SNAPSHOT_EVERY_S) {
      snapshot(`streaming ${streamingS.toFixed(0)} s`, view.lines);
      lastSnapshot = streamingS;
    }
    await stop.nap(1000);
  }
  return 0;
}

/**
 * Stops the pipeline, shows the final figures, stops the agent and Prometheus, removes the lab
 * and checks that nothing of it is left. Returns the exit code.
 */
async function tearDown(run: Running, header: string[], code: number): Promise<number> {
  const tty = process.stdout.isTTY === true;
  await stopDemoPipeline(run.procs).catch(() => {});
  const { agent, lab } = run;
  if (agent && lab && header.length > 0) {
    let title = 'final figures';
    if (agent.running) {
      await sleep(500); // the last departures pair
      try {
        const samples = parseMetrics(await agent.scrape());
        run.last = { samples, streamingS: (Date.now() - (run.streamStart ?? 0)) / 1000 };
      } catch {
        title = 'final figures (the last scrape before the stop)';
      }
    } else {
      title = 'final figures (the last scrape before the agent stopped)';
    }
    if (run.last) {
      const { samples, streamingS } = run.last;
      const view = body(samples, expectedDelays(run), lab.hostInterfaces.length, streamingS);
      if (tty) redraw(header, [`${title}:`, ...view.lines]);
      else snapshot(title, view.lines);
    }
  }
  log('removing the lab: streams, agent, test kubelet, Prometheus, cgroups, namespaces, bridge');
  const exit = agent ? await agent.stop() : undefined;
  if (exit && exit.code !== 0) {
    process.stdout.write(`agent exited with code ${exit.code} signal ${exit.signal}\n`);
    process.stdout.write(`${agent?.logs(20).join('\n')}\n`);
    code = 1;
  }
  await run.prom?.stop().catch(() => {});
  await run.kubelet?.down().catch(() => {});
  run.cert?.cleanup();
  const cgroupsLeft = run.k8s?.teardown() ?? [];
  lab?.teardown();
  if (!lab) return code;
  const left = leftovers({
    labId: lab.id,
    cgroupDirs: [...run.pods.values()].map((p) => p.cgroupDir),
    pids: [
      ...(agent ? [agent.pid] : []),
      ...(run.prom ? [run.prom.pid] : []),
      ...run.procs.map((p) => p.proc.child.pid ?? -1),
    ],
    dirs: [...(run.cert ? [run.cert.dir] : []), ...(run.prom ? [run.prom.dir] : [])],
  });
  left.push(...cgroupsLeft.map((d) => `cgroup directory ${d} (busy)`));
  if (left.length > 0) {
    process.stdout.write(`teardown left behind:\n  ${left.join('\n  ')}\n`);
    return 1;
  }
  log(`lab ${lab.id} removed; nothing left behind.`);
  return code;
}

async function main(): Promise<void> {
  const opts = parseOptions();
  if (!isRoot()) {
    process.stderr.write(
      'demo: needs root (it creates network namespaces, veths, a bridge and cgroups, and the ' +
        'agent loads eBPF programs): run  sudo npm run demo  or  sudo bash scripts/bootstrap.sh demo\n',
    );
    process.exit(1);
  }
  if (!existsSync(AGENT_ENTRY)) {
    process.stderr.write(`demo: ${AGENT_ENTRY} is missing: build first (npm run build)\n`);
    process.exit(1);
  }
  const stop = new StopFlag();
  for (const sig of ['SIGINT', 'SIGTERM'] as const) {
    process.on(sig, () => {
      // A second signal: no more waiting; the exit handlers kill and remove synchronously.
      if (stop.reason) process.exit(130);
      process.stdout.write(`\n${sig}: stopping...\n`);
      stop.set(sig);
    });
  }
  const run: Running = { pods: new Map(), procs: [] };
  let header: string[] = [];
  let code = 0;
  try {
    header = await setUp(run, opts, stop);
    if (!stop.reason) code = await stream(run, header, opts, stop);
  } catch (err) {
    process.stderr.write(`demo: ${(err as Error).message}\n`);
    for (const p of run.procs) {
      if (p.proc.stderr) process.stderr.write(`${p.proc.describe()}: ${p.proc.stderr.trim()}\n`);
    }
    code = 1;
  }
  log(`stopping (${stop.reason ?? 'error'})`);
  process.exit(await tearDown(run, header, code));
}

void main();
