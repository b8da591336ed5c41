/**
 * The agent process with Kubernetes on: pod metadata from a test API server over HTTPS
 * (KUBECONFIG, list + watch of this node's pods), audio sent from two pod IPs in a network
 * namespace, and /metrics naming the senders by pod and namespace. A pod is then deleted and its
 * IP given to a new pod: later signatures carry the new name, the old pod's series leave
 * /metrics after SERIES_TTL_MS, and the API server going away does not stop the agent.
 *
 * Traffic: the namespace's eth0 holds both pod IPs and a static neighbour for a ghost peer, so
 * packets leave through the veth whose host side the agent watches and go nowhere else.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { fileURLToPath } from 'node:url';
import { requireRoot } from './support/root.js';
import {
  FakeApiServer,
  FakeCluster,
  makeCertificate,
  makePod,
  writeKubeconfig,
  writeTokenFile,
} from './support/fake-k8s.js';
import { parseMetrics, sumOf } from './lab/metrics-text.js';

const MAIN = fileURLToPath(new URL('../src/main.js', import.meta.url));
const tag = `${process.pid % 10000}`;
const NS = `alt-k8s-${tag}`;
const HOST_IF = `altk8s${tag}`;
const NET = `10.252.${process.pid % 200}`;
const IP_A = `${NET}.11`;
const IP_B = `${NET}.12`;
const GHOST = `${NET}.99`;
const NODE = 'node-1';
const NAMESPACE = 'media';
const PORT = 19398;
const SERIES_TTL_MS = 5000;

function ip(...args: string[]): void {
  execFileSync('ip', args, { stdio: 'pipe' });
}

function setUp(): void {
  tearDown();
  ip('netns', 'add', NS);
  ip('link', 'add', HOST_IF, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', NS);
  ip('link', 'set', HOST_IF, 'up');
  ip('-n', NS, 'addr', 'add', `${IP_A}/24`, 'dev', 'eth0');
  ip('-n', NS, 'addr', 'add', `${IP_B}/24`, 'dev', 'eth0');
  ip('-n', NS, 'link', 'set', 'eth0', 'up');
  ip('-n', NS, 'neigh', 'add', GHOST, 'lladdr', '02:00:00:00:00:63', 'dev', 'eth0');
}

function tearDown(): void {
  for (const args of [
    ['link', 'del', HOST_IF],
    ['netns', 'del', NS],
  ]) {
    try {
      ip(...args);
    } catch {
      // not there
    }
  }
}

/** Noise-like 16-bit audio (never silent) from `from`, 20 ms packets, to the ghost peer. */
function sendAudio(from: string, seed: number, packets = 60): void {
  const script = `
const s = require('node:dgram').createSocket('udp4');
let seed = ${seed} >>> 0;
const payload = Buffer.alloc(320);
s.bind(0, '${from}', async () => {
  for (let n = 0; n < ${packets}; n++) {
    for (let i = 0; i < payload.length; i++) {
      seed = (Math.imul(seed, 1103515245) + 12345) >>> 0;
      payload[i] = seed >>> 24;
    }
    await new Promise((r) => s.send(payload, 5004, '${GHOST}', r));
    await new Promise((r) => setTimeout(r, 5));
  }
  s.close();
});`;
  execFileSync('ip', ['netns', 'exec', NS, process.execPath, '-e', script], { stdio: 'pipe' });
}

interface Run {
  child: ChildProcess;
  stdout: string[];
  stderr: string[];
}

function startAgent(env: Record<string, string>): Run {
  const child = spawn(process.execPath, [MAIN], {
    env: { PATH: process.env.PATH ?? '/usr/bin:/bin', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const run: Run = { child, stdout: [], stderr: [] };
  child.stdout?.setEncoding('utf8').on('data', (d: string) => run.stdout.push(d));
  child.stderr?.setEncoding('utf8').on('data', (d: string) => run.stderr.push(d));
  return run;
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

function output(run: Run): string {
  return `stdout:\n${run.stdout.join('')}\nstderr:\n${run.stderr.join('')}`;
}

async function waitForLog(run: Run, msg: string, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (run.stdout.join('').includes(`"msg":"${msg}"`)) return;
    if (run.child.exitCode !== null) break;
    await sleep(50);
  }
  assert.fail(`agent never logged "${msg}"; ${output(run)}`);
}

async function scrape(): Promise<ReturnType<typeof parseMetrics>> {
  const res = await fetch(`http://127.0.0.1:${PORT}/metrics`);
  assert.equal(res.status, 200);
  return parseMetrics(await res.text());
}

/** Signatures counted for pod `name` of the test namespace (undefined: no such series). */
async function signaturesOf(name: string): Promise<number | undefined> {
  return sumOf(await scrape(), 'audio_signatures_total', { pod: name, namespace: NAMESPACE });
}

/** Polls until `check` returns true (the agent flushes counts within about a second). */
async function until(what: string, run: Run, check: () => Promise<boolean>): Promise<void> {
  const deadline = Date.now() + 10_000;
  while (Date.now() < deadline) {
    if (await check()) return;
    await sleep(200);
  }
  assert.fail(`timed out waiting for ${what}; ${output(run)}`);
}

test('agent with K8S_ENABLED: pods named from the API server, IP reuse, dead series, API server down', async (t) => {
  if (!requireRoot(t)) return;
  const cert = makeCertificate();
  t.after(() => cert.cleanup());
  const cluster = new FakeCluster();
  const token = `token-${tag}`;
  const api = new FakeApiServer(cluster, cert, token);
  await api.up();
  t.after(() => api.down());
  const kubeconfig = writeKubeconfig(
    cert.dir,
    api.url,
    cert.certPath,
    writeTokenFile(cert.dir, token),
  );
  const podA = cluster.add(
    makePod({ name: 'caller-a', namespace: NAMESPACE, node: NODE, ip: IP_A }),
  );
  cluster.add(makePod({ name: 'caller-b', namespace: NAMESPACE, node: NODE, ip: IP_B }));
  // Another node's pod is not this agent's to name.
  cluster.add(makePod({ name: 'elsewhere', namespace: NAMESPACE, node: 'node-2', ip: GHOST }));

  setUp();
  t.after(tearDown);
  const run = startAgent({
    INTERFACE: HOST_IF,
    METRICS_PORT: String(PORT),
    K8S_ENABLED: 'true',
    K8S_NODE_NAME: NODE,
    K8S_POD_SOURCE: 'apiserver',
    KUBECONFIG: kubeconfig,
    SERIES_TTL_MS: String(SERIES_TTL_MS),
  });
  t.after(() => {
    if (run.child.exitCode === null) run.child.kill('SIGKILL');
  });
  await waitForLog(run, 'agent started', 15_000);
  await waitForLog(run, 'API server: pod list received', 10_000);
  assert.ok(
    api.requests.some((r) => r.path.includes(`fieldSelector=spec.nodeName%3D${NODE}`)),
    'the agent lists only its node',
  );

  // 1. Both senders are named by pod and namespace.
  sendAudio(IP_A, 1);
  sendAudio(IP_B, 2);
  await until('signatures of caller-a and caller-b', run, async () => {
    return (
      ((await signaturesOf('caller-a')) ?? 0) > 0 && ((await signaturesOf('caller-b')) ?? 0) > 0
    );
  });
  const metrics = await scrape();
  const senders = metrics.filter((s) => s.name === 'audio_signatures_total').map((s) => s.labels);
  assert.ok(
    senders.every((l) => l.pod !== IP_A && l.pod !== IP_B),
    `no series named by a pod IP: ${JSON.stringify(senders)}`,
  );
  assert.equal(sumOf(metrics, 'audio_tracker_label_values'), 2);

  // 2. caller-a is deleted and its IP given to a new pod.
  await sleep(1500); // counts of the first burst are all flushed
  const before = await signaturesOf('caller-a');
  cluster.delete(podA.metadata.uid);
  cluster.add(makePod({ name: 'caller-a2', namespace: NAMESPACE, node: NODE, ip: IP_A }));
  const deletedAt = Date.now();
  await sleep(500); // the watch events reach the agent
  sendAudio(IP_A, 3);
  await until(
    'signatures of caller-a2',
    run,
    async () => ((await signaturesOf('caller-a2')) ?? 0) > 0,
  );
  await sleep(1500);
  const after = await signaturesOf('caller-a');
  assert.ok(
    after === before || (after === undefined && Date.now() - deletedAt >= SERIES_TTL_MS),
    `caller-a counted ${String(after)} after its deletion (was ${String(before)})`,
  );

  // 3. The deleted pod's series leave /metrics once SERIES_TTL_MS has passed.
  await until(
    'caller-a series dropped',
    run,
    async () => (await signaturesOf('caller-a')) === undefined,
  );
  const droppedAfter = Date.now() - deletedAt;
  assert.ok(
    droppedAfter >= SERIES_TTL_MS - 1000,
    `dropped ${droppedAfter} ms after the deletion, before SERIES_TTL_MS`,
  );
  assert.ok(((await signaturesOf('caller-a2')) ?? 0) > 0);
  assert.ok(((await signaturesOf('caller-b')) ?? 0) > 0, 'a live pod keeps its series');

  // 4. The API server goes away: the agent keeps measuring and serving /metrics.
  await api.down();
  await sleep(2000);
  const bBefore = (await signaturesOf('caller-b')) ?? 0;
  sendAudio(IP_B, 4);
  await until('caller-b counting on without the API server', run, async () => {
    return ((await signaturesOf('caller-b')) ?? 0) > bBefore;
  });
  assert.equal(run.child.exitCode, null, `agent exited; ${output(run)}`);
  assert.ok((await fetch(`http://127.0.0.1:${PORT}/healthz`)).ok);
  assert.match(run.stdout.join(''), /pod list\/watch failed, retrying/);

  run.child.kill('SIGTERM');
  const [code] = (await once(run.child, 'exit')) as [number | null];
  assert.equal(code, 0, output(run));
});
