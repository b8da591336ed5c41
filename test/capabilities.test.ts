/**
 * The agent as the image runs it: a non-root user (65532) holding exactly CAP_BPF, CAP_NET_ADMIN
 * and CAP_PERFMON, started from the tree scripts/build-image-root.sh assembles. With all three it
 * attaches (TCX) and serves metrics; without any one of them it exits 1 with one line naming what
 * is missing. BPF run-time statistics need CAP_SYS_ADMIN, which the agent does not get: it must
 * run on without them.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { chmodSync, mkdtempSync, readFileSync, readdirSync, readlinkSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { rootUnavailable, requireRoot } from './support/root.js';

const REPO = fileURLToPath(new URL('../..', import.meta.url));
const NONROOT = '65532'; // distroless "nonroot"
const CAPS = ['bpf', 'net_admin', 'perfmon'] as const;
type Cap = (typeof CAPS)[number];
/** Bit numbers in /proc/PID/status Cap* masks (linux/capability.h). */
const CAP_BITS: Readonly<Record<Cap, bigint>> = { net_admin: 12n, perfmon: 38n, bpf: 39n };

const tag = `${process.pid % 10000}`;
const HOST_IF = `altcp${tag}h`;
const NS = `alt-caps-${tag}`;
const NS_ADDR = '10.213.0.1/30';
const NS_PEER = '10.213.0.2';

function ip(...args: string[]): void {
  execFileSync('ip', args, { stdio: 'pipe' });
}

function removeVeth(): void {
  for (const args of [
    ['link', 'del', HOST_IF],
    ['netns', 'del', NS],
  ]) {
    try {
      ip(...args);
    } catch {
      // absent: nothing to remove
    }
  }
}

/** HOST_IF stays in this namespace with no address; its peer, eth0 in NS, gets a 10.x one. */
function createVeth(): void {
  removeVeth();
  ip('netns', 'add', NS);
  ip('link', 'add', HOST_IF, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', NS);
  ip('link', 'set', HOST_IF, 'up');
  ip('-n', NS, 'addr', 'add', NS_ADDR, 'dev', 'eth0');
  ip('-n', NS, 'link', 'set', 'eth0', 'up');
}

let tmp = '';
let tree = '';
let buildError: unknown;

before(() => {
  if (rootUnavailable() !== undefined) return;
  tmp = mkdtempSync(join(tmpdir(), 'alt-caps-'));
  chmodSync(tmp, 0o755); // user 65532 must reach the tree
  tree = join(tmp, 'root');
  try {
    execFileSync('bash', [join(REPO, 'scripts/build-image-root.sh'), tree], {
      stdio: 'pipe',
      timeout: 600_000,
    });
  } catch (e) {
    buildError = e;
  }
});

after(() => {
  if (tmp) rmSync(tmp, { recursive: true, force: true });
});

function builtTree(): string {
  if (buildError !== undefined) {
    const e = buildError as { stderr?: Buffer; message?: string };
    assert.fail(`build-image-root.sh failed: ${e.message ?? ''}\n${e.stderr?.toString() ?? ''}`);
  }
  return tree;
}

interface Run {
  child: ChildProcess;
  stdout: string[];
  stderr: string[];
}

/**
 * The tree's entry point under this test's node (no file capabilities), as NONROOT with exactly
 * `caps` ambient: what a kubelet with ambient-capability support would hand the process.
 */
function startAsNonRoot(caps: readonly Cap[], env: Record<string, string>): Run {
  const set = caps.map((c) => `+${c}`).join(',');
  const capArgs =
    caps.length === 0
      ? ['--inh-caps=-all', '--bounding-set=-all']
      : [`--inh-caps=-all,${set}`, `--ambient-caps=${set}`, `--bounding-set=-all,${set}`];
  const args = [
    `--reuid=${NONROOT}`,
    `--regid=${NONROOT}`,
    '--clear-groups',
    ...capArgs,
    process.execPath,
    join(builtTree(), 'app/dist/src/main.js'),
  ];
  const child = spawn('setpriv', args, {
    cwd: '/',
    env: { PATH: '/usr/bin:/bin', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const run: Run = { child, stdout: [], stderr: [] };
  child.stdout?.setEncoding('utf8').on('data', (d: string) => run.stdout.push(d));
  child.stderr?.setEncoding('utf8').on('data', (d: string) => run.stderr.push(d));
  return run;
}

function output(run: Run): string {
  return `stdout:\n${run.stdout.join('')}\nstderr:\n${run.stderr.join('')}`;
}

async function waitForLog(run: Run, msg: string, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline && run.child.exitCode === null) {
    if (run.stdout.join('').includes(`"msg":"${msg}"`)) return;
    await new Promise((r) => setTimeout(r, 50));
  }
  assert.fail(`agent never logged "${msg}"; ${output(run)}`);
}

async function exitOf(run: Run): Promise<number | null> {
  if (run.child.exitCode !== null) return run.child.exitCode;
  const [code] = (await once(run.child, 'exit')) as [number | null];
  return code;
}

function status(pid: number, field: string): string {
  const text = readFileSync(`/proc/${pid}/status`, 'utf8');
  return new RegExp(`^${field}:\\s*(\\S+)`, 'm').exec(text)?.[1] ?? '';
}

function capMask(caps: readonly Cap[]): bigint {
  return caps.reduce((m, c) => m | (1n << CAP_BITS[c]), 0n);
}

/** attach_type of each TCX link the process holds on `ifindex` (46/47: TCX ingress/egress). */
function heldTcxAttachTypes(pid: number, ifindex: number): string[] {
  const types: string[] = [];
  for (const fd of readdirSync(`/proc/${pid}/fd`)) {
    let info: string;
    try {
      if (readlinkSync(`/proc/${pid}/fd/${fd}`) !== 'anon_inode:bpf_link') continue;
      info = readFileSync(`/proc/${pid}/fdinfo/${fd}`, 'utf8');
    } catch {
      continue;
    }
    const field = (k: string): string | undefined =>
      new RegExp(`^${k}:\\s*(\\S+)`, 'm').exec(info)?.[1];
    if (field('link_type') === 'tcx' && Number(field('ifindex')) === ifindex) {
      types.push(field('attach_type') ?? '');
    }
  }
  return types.sort();
}

function metricValue(text: string, name: string): number {
  const line = text.split('\n').find((l) => l.startsWith(name));
  assert.ok(line, `${name} missing from /metrics`);
  return Number(line.split(' ').at(-1));
}

test('non-root with exactly CAP_BPF, CAP_NET_ADMIN, CAP_PERFMON attaches and serves metrics', async (t) => {
  if (!requireRoot(t)) return;
  createVeth();
  t.after(removeVeth);
  const port = 19440 + (process.pid % 40);
  const run = startAsNonRoot(CAPS, { INTERFACE: HOST_IF, METRICS_PORT: String(port) });
  t.after(() => run.child.kill('SIGKILL'));
  await waitForLog(run, 'agent started', 20_000);
  const pid = run.child.pid ?? -1;

  // setpriv exec'd node: this pid is the agent, non-root, with those three and nothing else.
  assert.equal(status(pid, 'Uid').split(/\s/)[0], NONROOT);
  assert.equal(BigInt(`0x${status(pid, 'CapEff')}`), capMask(CAPS));
  assert.match(run.stdout.join(''), /"mode":"tcx"/);
  const ifindex = Number(readFileSync(`/sys/class/net/${HOST_IF}/ifindex`, 'utf8').trim());
  assert.deepEqual(heldTcxAttachTypes(pid, ifindex), ['46', '47']);

  // Traffic through the classifier: ARP for the peer leaves eth0 in NS, enters HOST_IF.
  try {
    execFileSync('ip', ['netns', 'exec', NS, 'ping', '-c', '3', '-i', '0.2', '-W', '1', NS_PEER], {
      stdio: 'pipe',
    });
  } catch {
    // nobody answers: the requests still crossed the veth
  }
  const metrics = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
  assert.equal(metricValue(metrics, 'audio_tracker_interfaces_attached'), 1);
  // BPF_ENABLE_STATS needs CAP_SYS_ADMIN: without it the run statistics stay at zero and the
  // agent runs on, logging neither warnings nor errors.
  assert.equal(metricValue(metrics, 'audio_tracker_bpf_run_count'), 0);
  assert.doesNotMatch(run.stdout.join(''), /"level":"(warn|error)"/);

  run.child.kill('SIGTERM');
  assert.equal(await exitOf(run), 0, output(run));
});

const CAP_NAMES: Readonly<Record<Cap, string>> = {
  bpf: 'CAP_BPF',
  net_admin: 'CAP_NET_ADMIN',
  perfmon: 'CAP_PERFMON',
};

for (const missing of CAPS) {
  test(`without ${CAP_NAMES[missing]} the agent exits 1 with one line naming it`, async (t) => {
    if (!requireRoot(t)) return;
    createVeth();
    t.after(removeVeth);
    const caps = CAPS.filter((c) => c !== missing);
    const port = 19480 + (process.pid % 40);
    const run = startAsNonRoot(caps, { INTERFACE: HOST_IF, METRICS_PORT: String(port) });
    t.after(() => run.child.kill('SIGKILL'));
    assert.equal(await exitOf(run), 1, output(run));
    const errors = run.stdout
      .join('')
      .split('\n')
      .filter((l) => l.includes('"level":"error"'));
    assert.equal(errors.length, 1, `expected one error line; ${output(run)}`);
    const msg = (JSON.parse(errors[0] ?? '{}') as { msg?: string }).msg ?? '';
    assert.doesNotMatch(msg, /\n/, `the message must be one line, got:\n${msg}`);
    assert.match(msg, new RegExp(CAP_NAMES[missing]), `must name ${CAP_NAMES[missing]}: ${msg}`);
  });
}
