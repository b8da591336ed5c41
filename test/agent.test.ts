/**
 * The agent as a process: refuses bad configuration before attaching anything, says in one line
 * what privilege is missing, and leaves nothing attached after SIGTERM or SIGKILL.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { fileURLToPath } from 'node:url';
import { readdirSync, readFileSync, readlinkSync } from 'node:fs';
import { requireRoot } from './support/root.js';

const MAIN = fileURLToPath(new URL('../src/main.js', import.meta.url));
const tag = `${process.pid % 10000}`;
const HOST_IF = `altag${tag}h`;
const NS = `alt-agent-${tag}`;

function ip(...args: string[]): void {
  execFileSync('ip', args, { stdio: 'pipe' });
}

function createVeth(): void {
  removeVeth();
  ip('netns', 'add', NS);
  ip('link', 'add', HOST_IF, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', NS);
  ip('link', 'set', HOST_IF, 'up');
}

function removeVeth(): void {
  try {
    ip('link', 'del', HOST_IF);
  } catch {
    // absent: nothing to remove
  }
  try {
    ip('netns', 'del', NS);
  } catch {
    // absent
  }
}

/** tc filters of ours on the interface (the clsact fallback path). */
function ourTcFilters(ifname: string): string[] {
  const found: string[] = [];
  for (const dir of ['ingress', 'egress']) {
    try {
      const tc = execFileSync('tc', ['filter', 'show', 'dev', ifname, dir], { encoding: 'utf8' });
      if (/tc_ingress|tc_egress/.test(tc)) found.push(`tc ${dir}: ${tc.trim()}`);
    } catch {
      // no clsact qdisc: no filters
    }
  }
  return found;
}

/** TCX links the process holds on `ifindex`, read from its fdinfo: "linkId:attachType". */
function heldTcxLinks(pid: number, ifindex: number): string[] {
  const links: string[] = [];
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
      links.push(`${field('link_id')}:${field('attach_type')}`);
    }
  }
  return links.sort();
}

/** Ids of every BPF link alive on the machine. */
function liveLinkIds(): Set<string> {
  const text = execFileSync('bpftool', ['-j', 'link', 'show'], { encoding: 'utf8' });
  return new Set((JSON.parse(text || '[]') as { id: number }[]).map((l) => String(l.id)));
}

function ifindexOf(name: string): number {
  return Number(readFileSync(`/sys/class/net/${name}/ifindex`, 'utf8').trim());
}

async function assertLinksGone(held: string[]): Promise<void> {
  const ids = held.map((h) => h.split(':')[0] ?? '');
  const deadline = Date.now() + 5000;
  let alive = ids.filter((id) => liveLinkIds().has(id));
  while (alive.length > 0 && Date.now() < deadline) {
    await new Promise((r) => setTimeout(r, 100));
    alive = ids.filter((id) => liveLinkIds().has(id));
  }
  assert.deepEqual(alive, [], 'TCX links of the agent still alive');
}

interface Run {
  child: ChildProcess;
  stdout: string[];
  stderr: string[];
}

function startAgent(env: Record<string, string>, uidArgs: string[] = []): Run {
  const cmd = uidArgs.length > 0 ? 'setpriv' : process.execPath;
  const args = uidArgs.length > 0 ? [...uidArgs, process.execPath, MAIN] : [MAIN];
  const child = spawn(cmd, args, {
    env: { PATH: process.env.PATH ?? '/usr/bin:/bin', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const run: Run = { child, stdout: [], stderr: [] };
  child.stdout?.setEncoding('utf8').on('data', (d: string) => run.stdout.push(d));
  child.stderr?.setEncoding('utf8').on('data', (d: string) => run.stderr.push(d));
  return run;
}

async function waitForLog(run: Run, msg: string, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (run.stdout.join('').includes(`"msg":"${msg}"`)) return;
    if (run.child.exitCode !== null) break;
    await new Promise((r) => setTimeout(r, 50));
  }
  assert.fail(
    `agent never logged "${msg}"; stdout:\n${run.stdout.join('')}\nstderr:\n${run.stderr.join('')}`,
  );
}

async function exitOf(run: Run): Promise<number | null> {
  if (run.child.exitCode !== null) return run.child.exitCode;
  const [code] = (await once(run.child, 'exit')) as [number | null];
  return code;
}

test('bad configuration exits 2 before attaching, naming every bad variable', async (t) => {
  if (!requireRoot(t)) return;
  createVeth();
  t.after(removeVeth);
  const run = startAgent({
    INTERFACE: HOST_IF,
    METRICS_PORT: '70000',
    SIGNATURE_ALGORITHM: 'md5',
    MAX_FLOWS: '12abc',
    LATENCY_BUCKETS: '0.5,0.1',
  });
  assert.equal(await exitOf(run), 2);
  const err = run.stderr.join('');
  assert.match(err, /METRICS_PORT="70000" is invalid/);
  assert.match(err, /SIGNATURE_ALGORITHM="md5" is invalid/);
  assert.match(err, /MAX_FLOWS="12abc" is invalid/);
  assert.match(err, /LATENCY_BUCKETS="0.5,0.1" is invalid/);
  assert.doesNotMatch(run.stdout.join(''), /"msg":"attached"/);
  assert.deepEqual(ourTcFilters(HOST_IF), []);
});

for (const signal of ['SIGTERM', 'SIGINT'] as const) {
  test(`${signal} detaches everything the agent attached`, async (t) => {
    if (!requireRoot(t)) return;
    createVeth();
    t.after(removeVeth);
    const run = startAgent({ INTERFACE: `altag${tag}*`, METRICS_PORT: '19391' });
    t.after(() => run.child.kill('SIGKILL'));
    await waitForLog(run, 'agent started', 15_000);
    const held = heldTcxLinks(run.child.pid ?? -1, ifindexOf(HOST_IF));
    // attach types 46 and 47: BPF_TCX_INGRESS and BPF_TCX_EGRESS
    assert.deepEqual(held.map((h) => h.split(':')[1]).sort(), ['46', '47']);
    run.child.kill(signal);
    assert.equal(await exitOf(run), 0);
    await assertLinksGone(held);
    assert.deepEqual(ourTcFilters(HOST_IF), []);
  });
}

test('SIGKILL leaves nothing attached either (TCX links die with the process)', async (t) => {
  if (!requireRoot(t)) return;
  createVeth();
  t.after(removeVeth);
  const run = startAgent({ INTERFACE: HOST_IF, METRICS_PORT: '19392' });
  await waitForLog(run, 'agent started', 15_000);
  assert.match(run.stdout.join(''), /"mode":"tcx"/, 'this kernel has TCX: the agent must use it');
  const held = heldTcxLinks(run.child.pid ?? -1, ifindexOf(HOST_IF));
  assert.equal(held.length, 2);
  run.child.kill('SIGKILL');
  await exitOf(run);
  // The kernel releases the links once the last file descriptor is closed.
  await assertLinksGone(held);
  assert.deepEqual(ourTcFilters(HOST_IF), []);
});

test('missing privileges end the agent with one clear line', async (t) => {
  if (!requireRoot(t)) return;
  const run = startAgent({ INTERFACE: 'lo', METRICS_PORT: '19393' }, [
    '--reuid=65534',
    '--regid=65534',
    '--clear-groups',
    '--inh-caps=-all',
    '--bounding-set=-all',
  ]);
  assert.equal(await exitOf(run), 1);
  const lines = run.stdout
    .join('')
    .split('\n')
    .filter((l) => l.includes('"level":"error"'));
  assert.equal(lines.length, 1, `expected exactly one error line, got:\n${lines.join('\n')}`);
  assert.match(lines[0] ?? '', /CAP_BPF|CAP_SYS_ADMIN|permission/i);
});

test('interfaces that appear later are attached within a second; vanished ones are forgotten', async (t) => {
  if (!requireRoot(t)) return;
  removeVeth();
  t.after(removeVeth);
  const port = 19395;
  const run = startAgent({ INTERFACE: `altag${tag}*`, METRICS_PORT: String(port) });
  t.after(() => run.child.kill('SIGKILL'));
  await waitForLog(run, 'agent started', 15_000);
  assert.equal(await attachedGauge(port), 0);

  createVeth();
  const appeared = Date.now();
  await waitForLog(run, 'attached', 3000);
  const delay = Date.now() - appeared;
  assert.ok(delay <= 1500, `attached ${delay} ms after the interface appeared`);
  assert.equal(heldTcxLinks(run.child.pid ?? -1, ifindexOf(HOST_IF)).length, 2);
  assert.equal(await attachedGauge(port), 1);

  const held = heldTcxLinks(run.child.pid ?? -1, ifindexOf(HOST_IF));
  removeVeth();
  await waitForLog(run, 'detached', 3000);
  await assertLinksGone(held);
  assert.equal(await attachedGauge(port), 0);
  assert.doesNotMatch(run.stdout.join(''), /"level":"(warn|error)"/);
  run.child.kill('SIGTERM');
  assert.equal(await exitOf(run), 0);
});

async function attachedGauge(port: number): Promise<number> {
  const text = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
  const line = text.split('\n').find((l) => l.startsWith('audio_tracker_interfaces_attached'));
  assert.ok(line, 'audio_tracker_interfaces_attached missing from /metrics');
  return Number(line.split(' ').at(-1));
}
