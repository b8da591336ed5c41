/**
 * The demo (`npm run demo`, test/lab/demo.ts) as a user runs it, without a terminal:
 *
 * - `--duration 15`: exits 0 by itself; its final figures show both hops of the voice pipeline
 *   named by Kubernetes pod and namespace (no address anywhere in the table), caller -> sbc with
 *   p50 within 2 ms of the sbc's 20 ms hold and sbc -> gateway within 2 ms of the gateway's
 *   40 ms; afterwards nothing of the lab is left (namespaces, veths, bridge, state files, cgroup
 *   directories, the agent and pod processes, the certificate directory).
 * - SIGINT to its whole process group after ~8 s (what a terminal's Ctrl-C does): exits 0 and
 *   leaves nothing behind either.
 *
 * The view's pure parts (table, warm-up line) are checked without root first. The root tests
 * skip loudly when not root and fail under CI=true.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { dirname } from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { leftovers } from './lab/demo-leftovers.js';
import { GATEWAY_HOLD_MS, SBC_HOLD_MS } from './lab/demo-pipeline.js';
import { agentProgress, hopRows, renderTable, warmupLine } from './lab/demo-view.js';
import { parseMetrics } from './lab/metrics-text.js';
import { requireRoot } from './support/root.js';

const DEMO = fileURLToPath(new URL('./lab/demo.js', import.meta.url));
const IPV4 = /\b\d{1,3}(\.\d{1,3}){3}\b/;

interface DemoRun {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  ms: number;
}

/** Runs the demo with pipes (no TTY) in its own process group; `interruptAfterMs` sends SIGINT. */
function runDemo(args: string[], interruptAfterMs?: number): Promise<DemoRun> {
  const t0 = Date.now();
  const child = spawn(process.execPath, [DEMO, ...args], {
    stdio: ['ignore', 'pipe', 'pipe'],
    detached: true,
  });
  let stdout = '';
  let stderr = '';
  child.stdout.setEncoding('utf8').on('data', (c: string) => (stdout += c));
  child.stderr.setEncoding('utf8').on('data', (c: string) => (stderr += c));
  const pgid = child.pid ?? 0;
  const timers = [
    // A hung demo must not hang the test: the whole group goes.
    setTimeout(() => process.kill(-pgid, 'SIGKILL'), 50_000),
  ];
  if (interruptAfterMs !== undefined) {
    // A terminal's Ctrl-C reaches every process of the foreground group: the agent too.
    timers.push(setTimeout(() => process.kill(-pgid, 'SIGINT'), interruptAfterMs));
  }
  return new Promise((resolve) => {
    child.on('close', (code, signal) => {
      for (const t of timers) clearTimeout(t);
      resolve({ code, signal, stdout, stderr, ms: Date.now() - t0 });
    });
  });
}

interface Parsed {
  labId: string;
  pods: Map<string, { name: string; ip: string; cgroupDir: string }>;
  pids: number[];
  dirs: string[];
}

/** What the demo's log says it built: lab id, pods (by role), processes, temporary dirs. */
function parseLog(out: string): Parsed {
  const lab = /\blab (\d{4}): 4 pods on bridge altbr\1 /.exec(out);
  assert.ok(lab, `no lab line in the output:\n${out}`);
  const pods = new Map<string, { name: string; ip: string; cgroupDir: string }>();
  for (const m of out.matchAll(/ pod voice\/(\S+) \((\w+)\) ip (\S+) cgroup (\S+)/g)) {
    pods.set(m[2], { name: m[1], ip: m[3], cgroupDir: m[4] });
  }
  assert.deepEqual([...pods.keys()].sort(), ['caller', 'gateway', 'sbc', 'stt'], out);
  const pids: number[] = [];
  const agent = /agent pid (\d+) on altv/.exec(out);
  if (agent) pids.push(Number(agent[1]));
  const pipeline = /pipeline running: (.*)/.exec(out);
  for (const m of (pipeline?.[1] ?? '').matchAll(/pid (\d+)/g)) pids.push(Number(m[1]));
  const dirs = [...out.matchAll(/certificate in (\S+)/g)].map((m) => m[1]);
  return { labId: lab[1], pods, pids, dirs };
}

interface Row {
  source: string;
  dest: string;
  samples: number;
  p50: number;
  p95: number;
  p99: number;
  expected: string;
}

/** The rows of the demo's last table ("--- final figures" snapshot). */
function finalRows(out: string): Row[] {
  const at = out.lastIndexOf('--- final figures');
  assert.ok(at >= 0, `no final figures in the output:\n${out}`);
  const rows: Row[] = [];
  for (const line of out.slice(at).split('\n').slice(1)) {
    if (line.startsWith('[') || line.startsWith('---')) break;
    const m = /^(\S+) -> (\S+)\s+(\d+)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)\s+(\S+)$/.exec(line);
    if (m) {
      rows.push({
        source: m[1],
        dest: m[2],
        samples: Number(m[3]),
        p50: Number(m[4]),
        p95: Number(m[5]),
        p99: Number(m[6]),
        expected: m[7],
      });
    }
  }
  return rows;
}

function assertNothingLeft(p: Parsed, out: string): void {
  const cgroupDirs = [...p.pods.values()].flatMap((x) => [x.cgroupDir, dirname(x.cgroupDir)]);
  assert.equal(cgroupDirs.length, 8);
  assert.ok(p.pids.length === 5, `expected the agent's and 4 pod pids in:\n${out}`);
  const left = leftovers({ labId: p.labId, cgroupDirs, pids: p.pids, dirs: p.dirs });
  assert.deepEqual(left, [], `left behind by lab ${p.labId}`);
  assert.equal(p.dirs.length, 1);
  assert.ok(!existsSync(p.dirs[0]));
}

const SCRAPE = `
audio_latency_seconds_bucket{source_pod="a-1",source_namespace="voice",dest_pod="b-2",dest_namespace="voice",le="0.02"} 0
audio_latency_seconds_bucket{source_pod="a-1",source_namespace="voice",dest_pod="b-2",dest_namespace="voice",le="0.021"} 10
audio_latency_seconds_bucket{source_pod="a-1",source_namespace="voice",dest_pod="b-2",dest_namespace="voice",le="+Inf"} 10
audio_latency_seconds_count{source_pod="a-1",source_namespace="voice",dest_pod="b-2",dest_namespace="voice"} 10
audio_latency_seconds_bucket{source_pod="b-2",source_namespace="voice",dest_pod="external",le="0.04"} 0
audio_latency_seconds_bucket{source_pod="b-2",source_namespace="voice",dest_pod="external",le="0.041"} 4
audio_latency_seconds_bucket{source_pod="b-2",source_namespace="voice",dest_pod="external",le="+Inf"} 4
audio_latency_seconds_count{source_pod="b-2",source_namespace="voice",dest_pod="external"} 4
audio_tracker_interfaces_attached 4
audio_signatures_total{pod="a-1",namespace="voice"} 7
`;

test('demo view: one row per hop in pipeline order, quantiles, expected delay', () => {
  const samples = parseMetrics(SCRAPE);
  const rows = hopRows(samples, new Map([['voice/a-1 -> voice/b-2', 20]]));
  assert.deepEqual(
    rows.map((r) => [r.source, r.dest, r.samples, r.expectedMs]),
    [
      ['voice/a-1', 'voice/b-2', 10, 20],
      ['voice/b-2', 'external', 4, undefined],
    ],
  );
  assert.ok(Math.abs(rows[0].p50Ms - 20.5) < 1e-9, `p50 ${rows[0].p50Ms}`);
  assert.ok(Math.abs(rows[1].p50Ms - 40.5) < 1e-9, `p50 ${rows[1].p50Ms}`);
  const table = renderTable(rows);
  assert.equal(table.length, 3);
  assert.match(table[1], /^voice\/a-1 -> voice\/b-2\s+10\s+20\.50\s+20\.95\s+20\.99\s+20\.00$/);
  assert.match(table[2], /^voice\/b-2 -> external\s+4\s+40\.50\s+40\.95\s+40\.99\s+-$/);
  // The demo test parses these rows: every column of a row lines up under its heading.
  assert.equal(new Set(table.map((l) => l.length)).size, 1);
  const p = agentProgress(samples);
  assert.deepEqual([p.attached, p.signatures], [4, 7]);
  assert.match(warmupLine(p, 4, 3), /4\/4 interfaces attached, 7 signatures so far/);
  assert.deepEqual(hopRows(parseMetrics('audio_tracker_interfaces_attached 0\n'), new Map()), []);
});

test('demo --duration 15 (no TTY): both hops by pod name at their delays, nothing left', async (t) => {
  if (!requireRoot(t)) return;
  const run = await runDemo(['--duration', '15']);
  const out = run.stdout;
  assert.equal(run.code, 0, `demo exited ${run.code}/${run.signal}:\n${out}\n${run.stderr}`);
  // No cursor control without a terminal.
  assert.ok(!out.includes('\x1b['), 'escape sequences in a non-TTY output');
  const p = parseLog(out);
  const rows = finalRows(out);
  const name = (role: string): string => `voice/${p.pods.get(role)?.name}`;
  for (const [src, dst, delay] of [
    ['caller', 'sbc', SBC_HOLD_MS],
    ['sbc', 'gateway', GATEWAY_HOLD_MS],
  ] as const) {
    const row = rows.find((r) => r.source === name(src) && r.dest === name(dst));
    assert.ok(row, `no ${name(src)} -> ${name(dst)} row in:\n${out}`);
    t.diagnostic(
      `${src} -> ${dst}: ${row.samples} samples, p50 ${row.p50} p95 ${row.p95} p99 ${row.p99} ms`,
    );
    assert.ok(row.samples >= 150, `${src} -> ${dst}: only ${row.samples} samples`);
    assert.ok(Math.abs(row.p50 - delay) <= 2, `${src} -> ${dst}: p50 ${row.p50} ms, want ${delay}`);
    assert.ok(row.p50 <= row.p95 && row.p95 <= row.p99, JSON.stringify(row));
    assert.equal(Number(row.expected), delay);
  }
  for (const r of rows) {
    assert.doesNotMatch(`${r.source} ${r.dest}`, IPV4, 'a hop named by an address');
  }
  assert.match(out, /metrics at http:\/\/\S+:\d+\/metrics/);
  assert.match(out, /nothing left behind/);
  assertNothingLeft(p, out);
  t.diagnostic(`run took ${(run.ms / 1000).toFixed(1)} s`);
});

test('demo: Ctrl-C (SIGINT to its process group) after 8 s exits 0, nothing left', async (t) => {
  if (!requireRoot(t)) return;
  const run = await runDemo([], 8000);
  const out = run.stdout;
  assert.equal(run.code, 0, `demo exited ${run.code}/${run.signal}:\n${out}\n${run.stderr}`);
  assert.match(out, /SIGINT: stopping/);
  assert.match(out, /nothing left behind/);
  assertNothingLeft(parseLog(out), out);
  t.diagnostic(`run took ${(run.ms / 1000).toFixed(1)} s`);
});
