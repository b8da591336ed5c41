/**
 * What the agent costs the traffic itself, with and without it, in one run: round-trip time of a
 * UDP ping-pong between two lab pods (test/load/pingpong.c: RTP-shaped 172-byte datagrams, on an
 * audio port where each packet becomes an event at each of its two veths, and on another port
 * where the classifier leaves at the port check), and the throughput of a bulk TCP transfer
 * (iperf3) on a non-audio port and on an audio port (where the kernel marks the stream bulk and
 * skips it).
 *
 * "With the agent" is the real agent process (node dist/src/main.js) attached to both pods'
 * host-side veths, ingress and egress, as deployed: BPF statistics held, ring buffer consumed,
 * signatures computed and correlated. "Without" is no agent at all: it is stopped with SIGTERM
 * and its detachment checked before each such phase, so the baseline carries no leftover
 * program, no BPF_ENABLE_STATS and no idle agent process. A toggle inside a running agent would
 * leave some of that in place and flatter the figures. Starting and stopping take seconds and
 * fall outside the measured windows; each phase begins after the same settling pause.
 *
 * The ping-pong runs paced (2000 round trips a second by default: a busy node's audio, the
 * agent's user space has spare time) and back to back (the classic ping-pong: the agent's user
 * space competes with the traffic for the CPU, a worst case on two cores).
 *
 * Phases run in the order without, with, with, without, without, with, ... (ABBA): interleaved so
 * slow drift (other load, frequency, caches) hits both modes alike, and balanced so a linear
 * drift cancels instead of always favouring the later mode, as plain ABAB would. Every phase
 * runs the same cases with the same seed, client ports and order: identical traffic.
 *
 * The figures are pooled over all phases of a mode (percentiles of all round trips together,
 * mean throughput); the per-pair differences show how far one pair can stray on this machine.
 */
import { execFile, execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, statSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { AgentProcess, REPO_ROOT, sleep } from '../lab/agent-process.js';
import { agentAttachments, processTcxLinks } from '../lab/attachments.js';
import { Lab } from '../lab/lab.js';
import { parseMetrics, sumOf } from '../lab/metrics-text.js';
import type { BenchRow } from './types.js';

/** Below the ephemeral range (32768-60999), so no client's own port ever lands on an audio port. */
const UDP_AUDIO_PORT = 5004;
const TCP_AUDIO_PORT = 5005;
const UDP_OTHER_PORT = 6004;
const TCP_OTHER_PORT = 6005;
const AUDIO_PORTS = `${UDP_AUDIO_PORT},${TCP_AUDIO_PORT}`;
/** Fixed client ports (not audio): the same 5-tuples in every phase. */
const PING_CPORT_BASE = { audio: 6010, other: 6020 };
/** iperf3 data connections: one port per phase, so no TIME_WAIT from the previous phase. */
const IPERF_CPORT_BASE = { audio: 7000, other: 7500 };
/** Events per round trip on the audio port: request and reply, each at both veths. */
const EVENTS_PER_ROUND_TRIP = 4;
const SETTLE_MS = 1000;
const BASELINE = 'without agent, same run';
const PINGPONG_SOURCE = join(REPO_ROOT, 'test/load/pingpong.c');
const PINGPONG_BINARY = join(REPO_ROOT, 'dist/test/load/pingpong');

export type Mode = 'without' | 'with';

export interface OverheadOptions {
  /** Number of phases, even, in ABBA order (default 8). */
  phases?: number;
  /** Round trips measured per ping-pong case and phase (default 10000). */
  pings?: number;
  /** Round trips sent first and not counted (ARP, flow state, caches; default 500). */
  warmup?: number;
  /** Ping-pong rates, round trips per second, each a pair of cases; 0 is back to back
   * (default [2000, 0]). */
  rates?: number[];
  /** Seconds of each iperf3 transfer (default 5). */
  iperfSeconds?: number;
  /** Pin the client to CPU 0 and the server to CPU 1 (taskset; default false). */
  pin?: boolean;
  /** Progress and per-phase lines (default console.log). */
  log?: (line: string) => void;
}

type Resolved = Required<OverheadOptions>;

// ---- pure helpers (test/overhead-units.test.ts) ----

/**
 * Nearest-rank percentile of ascending `sorted` (q in [0, 1]): always a measured value, never an
 * interpolation, as pingpong.c computes it.
 */
export function percentileOf(sorted: ArrayLike<number>, q: number): number {
  const n = sorted.length;
  if (n === 0) throw new Error('percentileOf: no samples');
  if (!(q >= 0 && q <= 1)) throw new Error(`percentileOf: q=${q} is outside [0, 1]`);
  const rank = Math.min(n, Math.max(1, Math.ceil(n * q - 1e-9)));
  return sorted[rank - 1];
}

export interface RttSummary {
  count: number;
  p50: number;
  p99: number;
}

/** p50 and p99 of samples in any order (nanoseconds in, microseconds out). */
export function summarizeRtt(samplesNs: ArrayLike<number>): RttSummary {
  const sorted = Float64Array.from(samplesNs).sort();
  return {
    count: sorted.length,
    p50: percentileOf(sorted, 0.5) / 1000,
    p99: percentileOf(sorted, 0.99) / 1000,
  };
}

/** ABBA order: without, with, with, without, without, with, ... `phases` even, at least 2. */
export function phaseOrder(phases: number): Mode[] {
  if (!Number.isInteger(phases) || phases < 2 || phases % 2 !== 0) {
    throw new Error(`overhead: phases must be an even integer >= 2, got ${phases}`);
  }
  return Array.from({ length: phases }, (_, i): Mode => {
    const flipped = Math.floor(i / 2) % 2 === 1;
    return (i % 2 === 0) !== flipped ? 'without' : 'with';
  });
}

/**
 * Per adjacent pair of phases (0-1, 2-3, ...): the with-agent value minus the without one.
 * `order` from phaseOrder(), `values` one per phase.
 */
export function pairedDifferences(order: Mode[], values: number[]): number[] {
  if (order.length !== values.length) {
    throw new Error(`overhead: ${values.length} values for ${order.length} phases`);
  }
  const out: number[] = [];
  for (let i = 0; i + 1 < order.length; i += 2) {
    const w = order[i] === 'with' ? i : i + 1;
    const wo = order[i] === 'with' ? i + 1 : i;
    if (order[w] !== 'with' || order[wo] !== 'without') {
      throw new Error(`overhead: phases ${i} and ${i + 1} are not one of each mode`);
    }
    out.push(values[w] - values[wo]);
  }
  return out;
}

export function mean(values: number[]): number {
  if (values.length === 0) throw new Error('mean: no values');
  return values.reduce((a, b) => a + b, 0) / values.length;
}

/** Throughput lost with the agent, in percent of the mean without it (negative: none lost). */
export function throughputLossPercent(without: number[], withAgent: number[]): number {
  return (1 - mean(withAgent) / mean(without)) * 100;
}

export interface PingpongResult {
  count: number;
  lost: number;
  samplesNs: number[];
}

/** pingpong.c client output: one JSON line, then one RTT in ns per line (--samples). */
export function parsePingpong(stdout: string): PingpongResult {
  const lines = stdout.trim().split('\n');
  const head = JSON.parse(lines[0] ?? '') as { event?: unknown; count?: unknown; lost?: unknown };
  if (head.event !== 'result' || typeof head.count !== 'number' || typeof head.lost !== 'number') {
    throw new Error(`pingpong: unexpected first line: ${lines[0]}`);
  }
  const samplesNs = lines.slice(1).map(Number);
  if (samplesNs.length !== head.count || samplesNs.some((x) => !Number.isFinite(x) || x <= 0)) {
    throw new Error(`pingpong: ${samplesNs.length} samples for a count of ${head.count}`);
  }
  return { count: head.count, lost: head.lost, samplesNs };
}

/** Receiver-side throughput from `iperf3 -J`, in Gbit/s. */
export function parseIperf(stdout: string): { gbps: number; retransmits: number } {
  const doc = JSON.parse(stdout) as {
    error?: string;
    end?: {
      sum_received?: { bits_per_second?: number };
      sum_sent?: { retransmits?: number };
    };
  };
  const bps = doc.end?.sum_received?.bits_per_second;
  if (doc.error !== undefined || typeof bps !== 'number') {
    throw new Error(`iperf3: no receiver throughput in its report: ${doc.error ?? 'no end.sum'}`);
  }
  return { gbps: bps / 1e9, retransmits: doc.end?.sum_sent?.retransmits ?? 0 };
}

// ---- the run ----

/** Builds dist/test/load/pingpong from test/load/pingpong.c when missing or older. */
export function ensurePingpong(): string {
  const stale =
    !existsSync(PINGPONG_BINARY) ||
    statSync(PINGPONG_BINARY).mtimeMs < statSync(PINGPONG_SOURCE).mtimeMs;
  if (stale) {
    mkdirSync(dirname(PINGPONG_BINARY), { recursive: true });
    try {
      execFileSync('cc', ['-O2', '-Wall', '-o', PINGPONG_BINARY, PINGPONG_SOURCE], {
        stdio: ['ignore', 'pipe', 'pipe'],
      });
    } catch (err) {
      const stderr = (err as { stderr?: Buffer }).stderr?.toString() ?? String(err);
      throw new Error(`overhead: cc -O2 ${PINGPONG_SOURCE} failed: ${stderr.trim()}`);
    }
  }
  return PINGPONG_BINARY;
}

function requireTool(name: string): void {
  try {
    execFileSync('sh', ['-c', `command -v ${name}`], { stdio: 'ignore' });
  } catch {
    throw new Error(`overhead: '${name}' not found (apt-get install -y ${name})`);
  }
}

/** Runs a command inside a pod's namespace without blocking the event loop (the agent's pipes). */
function execInPod(
  lab: Lab,
  pod: string,
  cpu: number | undefined,
  cmd: string,
  args: string[],
  timeoutMs: number,
): Promise<string> {
  const pinned = cpu === undefined ? [cmd, ...args] : ['taskset', '-c', String(cpu), cmd, ...args];
  const argv = ['netns', 'exec', lab.pod(pod).netns, ...pinned];
  return new Promise((resolve, reject) => {
    execFile(
      'ip',
      argv,
      { encoding: 'utf8', maxBuffer: 256 * 1024 * 1024, timeout: timeoutMs },
      (err, stdout, stderr) => {
        if (err)
          reject(new Error(`overhead: 'ip ${argv.join(' ')}' failed: ${err.message} ${stderr}`));
        else resolve(stdout);
      },
    );
  });
}

/** Starts a server inside a pod and waits for `readyText` on its stdout. */
function startServer(
  lab: Lab,
  pod: string,
  cpu: number | undefined,
  cmd: string,
  args: string[],
  readyText: string,
): Promise<ChildProcess> {
  const pinned = cpu === undefined ? [cmd, ...args] : ['taskset', '-c', String(cpu), cmd, ...args];
  const child = spawn('ip', ['netns', 'exec', lab.pod(pod).netns, ...pinned], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  return new Promise((resolve, reject) => {
    let out = '';
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`overhead: ${cmd} ${args.join(' ')} not ready after 10 s: ${out}`));
    }, 10_000);
    let ready = false;
    // Read on after ready (the pipe must not fill), keeping nothing.
    const onData = (chunk: Buffer): void => {
      if (ready) return;
      out += chunk.toString();
      if (out.includes(readyText)) {
        ready = true;
        clearTimeout(timer);
        resolve(child);
      }
    };
    child.stdout.on('data', onData);
    child.stderr.on('data', (chunk: Buffer) => {
      if (!ready) out += chunk.toString();
    });
    child.once('exit', (code, signal) => {
      clearTimeout(timer);
      reject(new Error(`overhead: ${cmd} ${args.join(' ')} exited (${code ?? signal}): ${out}`));
    });
  });
}

/** What the agent counted, its own CPU time (user + system) and the wall clock, in seconds. */
interface Counters {
  inspected: number;
  audio: number;
  lost: number;
  bulkFlows: number;
  bpfSeconds: number;
  bpfRuns: number;
  agentCpuSeconds: number;
  wallSeconds: number;
}

let clockTicks: number | undefined;

/** utime + stime of a process, in seconds (fields 14 and 15 of /proc/<pid>/stat). */
function cpuSeconds(pid: number): number {
  clockTicks ??= Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100;
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(fields[11]) + Number(fields[12])) / clockTicks;
}

async function counters(agent: AgentProcess): Promise<Counters> {
  const m = parseMetrics(await agent.scrape());
  const v = (name: string): number => sumOf(m, `audio_tracker_${name}_total`) ?? 0;
  return {
    inspected: v('packets_inspected'),
    audio: v('audio_packets'),
    lost: v('events_lost'),
    bulkFlows: v('bulk_flows'),
    bpfSeconds: v('bpf_run_time_seconds'),
    bpfRuns: v('bpf_run_count'),
    agentCpuSeconds: cpuSeconds(agent.pid),
    wallSeconds: performance.now() / 1000,
  };
}

function delta(a: Counters, b: Counters): Counters {
  const out = { ...b };
  for (const k of Object.keys(out) as (keyof Counters)[]) out[k] = b[k] - a[k];
  return out;
}

/** The agent on the lab's veths, started and checked attached (positive control of "with"). */
class AgentSwitch {
  private agent: AgentProcess | undefined;
  private linkIds = new Set<number>();

  constructor(private readonly lab: Lab) {}

  get running(): AgentProcess | undefined {
    return this.agent;
  }

  async start(): Promise<void> {
    const agent = await AgentProcess.start({
      env: { INTERFACE: this.lab.interfaceGlob, AUDIO_PORTS, LOG_LEVEL: 'warn' },
    });
    this.agent = agent;
    this.lab.track(agent.pid);
    const want = this.lab.hostInterfaces.length;
    const deadline = Date.now() + 15_000;
    let got = 0;
    while (Date.now() < deadline) {
      got = sumOf(parseMetrics(await agent.scrape()), 'audio_tracker_interfaces_attached') ?? 0;
      if (got >= want) break;
      await sleep(100);
    }
    if (got < want) {
      throw new Error(
        `overhead: agent attached ${got} of ${want} veths:\n${agent.logs(20).join('\n')}`,
      );
    }
    for (const l of processTcxLinks(agent.pid)) this.linkIds.add(l.linkId);
  }

  /** SIGTERM; then nothing of it may remain on the veths (the baseline must be bare). */
  async stop(): Promise<void> {
    const agent = this.agent;
    if (!agent) return;
    this.agent = undefined;
    const exit = await agent.stop();
    if (exit.code !== 0) {
      throw new Error(
        `overhead: agent exited ${exit.code ?? exit.signal}:\n${agent.logs(20).join('\n')}`,
      );
    }
    const left = agentAttachments(this.lab.hostInterfaces, this.linkIds);
    if (left.length > 0) throw new Error(`overhead: agent left attachments: ${left.join('; ')}`);
  }
}

type Port = 'audio' | 'other';

/** One measurement repeated in every phase. */
export interface CaseSpec {
  id: string;
  label: string;
  proto: 'udp' | 'tcp';
  port: Port;
  /** UDP: round trips per second, 0 back to back. */
  rate: number;
}

/** The cases of a phase, in the order they run: ping-pongs per rate, then the transfers. */
export function caseList(rates: number[]): CaseSpec[] {
  const cases: CaseSpec[] = [];
  for (const rate of rates) {
    if (!Number.isInteger(rate) || rate < 0) throw new Error(`overhead: bad rate ${rate}`);
    const pace = rate === 0 ? 'back to back' : `${rate}/s`;
    cases.push({
      id: `udp-audio-${rate}`,
      label: `audio port RTP, ${pace}`,
      proto: 'udp',
      port: 'audio',
      rate,
    });
    cases.push({
      id: `udp-other-${rate}`,
      label: `other port, ${pace}`,
      proto: 'udp',
      port: 'other',
      rate,
    });
  }
  cases.push({ id: 'tcp-other', label: 'other port', proto: 'tcp', port: 'other', rate: 0 });
  cases.push({
    id: 'tcp-audio',
    label: 'audio port (bulk-skipped)',
    proto: 'tcp',
    port: 'audio',
    rate: 0,
  });
  return cases;
}

interface Outcome {
  rtt?: PingpongResult;
  gbps?: number;
  /** With the agent: what it counted meanwhile (positive control and cost). */
  seen?: Counters;
}

interface PhaseResult {
  mode: Mode;
  outcomes: Map<string, Outcome>;
}

function outcome(r: PhaseResult, c: CaseSpec): Outcome {
  const o = r.outcomes.get(c.id);
  if (!o) throw new Error(`overhead: no outcome for case ${c.id}`);
  return o;
}

class Bench {
  constructor(
    private readonly lab: Lab,
    private readonly opts: Resolved,
    private readonly pingpong: string,
    private readonly agents: AgentSwitch,
  ) {}

  private get serverIp(): string {
    return this.lab.pod('server').ip;
  }

  private get clientCpu(): number | undefined {
    return this.opts.pin ? 0 : undefined;
  }

  async ping(c: CaseSpec, index: number): Promise<PingpongResult> {
    const o = this.opts;
    const port = c.port === 'audio' ? UDP_AUDIO_PORT : UDP_OTHER_PORT;
    const cport = PING_CPORT_BASE[c.port] + index;
    const args = ['client', this.serverIp, String(port), '--count', String(o.pings)];
    args.push('--warmup', String(o.warmup), '--size', '172', '--rate', String(c.rate));
    args.push('--cport', String(cport), '--seed', '7', '--samples');
    const budgetMs = 30_000 + ((o.pings + o.warmup) / Math.max(c.rate, 1000)) * 2000;
    const res = parsePingpong(
      await execInPod(this.lab, 'client', this.clientCpu, this.pingpong, args, budgetMs),
    );
    if (res.lost > o.pings / 100) {
      throw new Error(`overhead: ${res.lost} of ${o.pings} pings on port ${port} got no reply`);
    }
    return res;
  }

  async iperf(c: CaseSpec, phase: number): Promise<number> {
    const port = c.port === 'audio' ? TCP_AUDIO_PORT : TCP_OTHER_PORT;
    const cport = IPERF_CPORT_BASE[c.port] + phase;
    const args = ['-c', this.serverIp, '-p', String(port), '-t', String(this.opts.iperfSeconds)];
    args.push('--cport', String(cport), '-J');
    const timeout = this.opts.iperfSeconds * 1000 + 30_000;
    return parseIperf(await execInPod(this.lab, 'client', this.clientCpu, 'iperf3', args, timeout))
      .gbps;
  }

  /** Runs one case; with the agent, also what it counted meanwhile. */
  private async run(c: CaseSpec, index: number, phase: number): Promise<Outcome> {
    const agent = this.agents.running;
    const before = agent ? await counters(agent) : undefined;
    const out: Outcome =
      c.proto === 'udp' ? { rtt: await this.ping(c, index) } : { gbps: await this.iperf(c, phase) };
    if (agent && before) {
      out.seen = delta(before, await counters(agent));
      this.check(c, out.seen);
    }
    return out;
  }

  async phase(index: number, mode: Mode, cases: CaseSpec[]): Promise<PhaseResult> {
    if (mode === 'with' && !this.agents.running) await this.agents.start();
    if (mode === 'without' && this.agents.running) await this.agents.stop();
    await sleep(SETTLE_MS);
    const outcomes = new Map<string, Outcome>();
    for (const [i, c] of cases.entries()) outcomes.set(c.id, await this.run(c, i, index));
    return { mode, outcomes };
  }

  /** The agent really was in the path of the case, and skipped what it should skip. */
  private check(c: CaseSpec, seen: Counters): void {
    const min = EVENTS_PER_ROUND_TRIP * this.opts.pings;
    const fail = (what: string): never => {
      throw new Error(`overhead: with the agent, ${c.proto} ${c.label}: ${what}`);
    };
    if (c.proto === 'udp' && c.port === 'audio' && seen.audio < min) {
      fail(`${seen.audio} audio packets, want >= ${min}`);
    }
    if (c.proto === 'udp' && c.port === 'other' && (seen.inspected < min || seen.audio !== 0)) {
      fail(`${seen.inspected} packets inspected (want >= ${min}), ${seen.audio} audio (want 0)`);
    }
    if (c.proto === 'tcp' && c.port === 'other' && seen.audio !== 0) {
      fail(`${seen.audio} audio packets, want 0`);
    }
    if (c.proto === 'tcp' && c.port === 'audio' && seen.bulkFlows < 1) {
      fail('the transfer was never marked bulk');
    }
  }
}

function resolve(opts: OverheadOptions): Resolved {
  return {
    phases: opts.phases ?? 8,
    pings: opts.pings ?? 10_000,
    warmup: opts.warmup ?? 500,
    rates: opts.rates ?? [2000, 0],
    iperfSeconds: opts.iperfSeconds ?? 5,
    pin: opts.pin ?? false,
    log: opts.log ?? ((line: string) => console.log(line)),
  };
}

function us(x: number): string {
  return x.toFixed(1);
}

function phaseLine(i: number, n: number, r: PhaseResult, cases: CaseSpec[]): string {
  const parts = cases.map((c) => {
    const o = outcome(r, c);
    if (o.rtt) {
      const s = summarizeRtt(o.rtt.samplesNs);
      return `${c.label} ${us(s.p50)}/${us(s.p99)} µs`;
    }
    const lost = o.seen && o.seen.lost > 0 ? ` (${o.seen.lost} ring events lost)` : '';
    return `TCP ${c.label} ${(o.gbps ?? 0).toFixed(2)} Gbit/s${lost}`;
  });
  const mode = r.mode === 'with' ? 'with agent   ' : 'without agent';
  return `  phase ${i + 1}/${n} ${mode}  RTT p50/p99: ${parts.join('; ')}`;
}

function range(values: number[], digits: number): string {
  return `${Math.min(...values).toFixed(digits)} to ${Math.max(...values).toFixed(digits)}`;
}

/** The pooled rows of one ping-pong case. */
function rttRows(order: Mode[], results: PhaseResult[], c: CaseSpec): BenchRow[] {
  const samples = (r: PhaseResult): number[] => outcome(r, c).rtt?.samplesNs ?? [];
  const pooled = (mode: Mode): RttSummary =>
    summarizeRtt(results.filter((r) => r.mode === mode).flatMap(samples));
  const per = results.map((r) => summarizeRtt(samples(r)));
  const wo = pooled('without');
  const w = pooled('with');
  const rows: BenchRow[] = [];
  for (const q of ['p50', 'p99'] as const) {
    const base = `RTT ${q}, ${c.label}, without agent`;
    const pairs = pairedDifferences(
      order,
      per.map((s) => s[q]),
    );
    rows.push({ name: base, value: wo[q], unit: 'µs' });
    rows.push({
      name: `RTT ${q}, ${c.label}, with agent`,
      value: w[q],
      unit: 'µs',
      baseline: BASELINE,
      ratio: w[q] / wo[q],
    });
    const target = q === 'p50' ? ' (target < 5 µs)' : '';
    rows.push({
      name: `  added ${q}${target}, pairs ${range(pairs, 1)}`,
      value: w[q] - wo[q],
      unit: 'µs',
    });
  }
  return rows;
}

function tcpRows(order: Mode[], results: PhaseResult[], c: CaseSpec): BenchRow[] {
  const gbps = results.map((r) => outcome(r, c).gbps ?? 0);
  const of = (mode: Mode): number[] => gbps.filter((_, i) => order[i] === mode);
  const wo = of('without');
  const w = of('with');
  const pairLoss = pairedDifferences(order, gbps).map((d, i) => {
    const base = order[2 * i] === 'without' ? gbps[2 * i] : gbps[2 * i + 1];
    return (-d / base) * 100;
  });
  const base = `TCP bulk, ${c.label}, without agent`;
  return [
    { name: base, value: mean(wo), unit: 'Gbit/s' },
    {
      name: `TCP bulk, ${c.label}, with agent`,
      value: mean(w),
      unit: 'Gbit/s',
      baseline: BASELINE,
      ratio: mean(w) / mean(wo),
    },
    {
      name: `  throughput lost (target < 3 %), pairs ${range(pairLoss, 1)}`,
      value: throughputLossPercent(wo, w),
      unit: '%',
    },
  ];
}

/** Sum of the with-agent phases' counters for one case. */
function seenTotal(results: PhaseResult[], c: CaseSpec): Counters {
  const seen = results.flatMap((r) => {
    const s = outcome(r, c).seen;
    return s ? [s] : [];
  });
  const total = { ...seen[0] };
  for (const s of seen.slice(1)) {
    for (const k of Object.keys(total) as (keyof Counters)[]) total[k] += s[k];
  }
  return total;
}

/**
 * Where the cost comes from, with the agent (zero without it): the classifier's own time from
 * the kernel's BPF statistics (which the agent holds on, as deployed) and the agent process's
 * CPU, per case.
 */
function costRows(results: PhaseResult[], cases: CaseSpec[], tripsPerPhase: number): BenchRow[] {
  const phases = results.filter((r) => r.mode === 'with').length;
  const rows: BenchRow[] = [];
  for (const c of cases) {
    const t = seenTotal(results, c);
    const label = `${c.proto === 'udp' ? 'ping-pong' : 'bulk TCP'}, ${c.label}`;
    rows.push({
      name: `classifier per run, ${label}`,
      value: (t.bpfSeconds * 1e9) / t.bpfRuns,
      unit: 'ns',
    });
    if (c.proto === 'udp') {
      rows.push({
        name: `  classifier time per round trip`,
        value: (t.bpfSeconds * 1e6) / (phases * tripsPerPhase),
        unit: 'µs',
      });
    } else {
      rows.push({
        name: `  classifier CPU`,
        value: (t.bpfSeconds / t.wallSeconds) * 100,
        unit: '% of a core',
      });
    }
    rows.push({
      name: `  agent process CPU`,
      value: (t.agentCpuSeconds / t.wallSeconds) * 100,
      unit: '% of a core',
    });
    if (c.port === 'audio') {
      rows.push({ name: `  ring buffer events lost`, value: t.lost, unit: 'events' });
    }
  }
  return rows;
}

/**
 * Agent overhead on the traffic: UDP ping-pong RTT and bulk TCP throughput between two lab pods,
 * with and without the agent attached, interleaved in one run. Needs root, iperf3, and cc
 * unless dist/test/load/pingpong is built already.
 * Per-phase figures go to `log` as they are measured; the pooled ones are returned.
 */
export async function benchOverhead(options: OverheadOptions = {}): Promise<BenchRow[]> {
  const opts = resolve(options);
  const order = phaseOrder(opts.phases);
  const cases = caseList(opts.rates);
  requireTool('iperf3');
  const pingpong = ensurePingpong();
  const lab = Lab.create({ pods: ['client', 'server'] });
  const agents = new AgentSwitch(lab);
  try {
    const serverCpu = opts.pin ? 1 : undefined;
    for (const port of [UDP_AUDIO_PORT, UDP_OTHER_PORT]) {
      await startServer(lab, 'server', serverCpu, pingpong, ['server', String(port)], 'ready');
    }
    for (const port of [TCP_AUDIO_PORT, TCP_OTHER_PORT]) {
      const args = ['-s', '-p', String(port), '--forceflush'];
      await startServer(lab, 'server', serverCpu, 'iperf3', args, 'Server listening');
    }
    opts.log(
      `  ${opts.phases} phases (ABBA); UDP ping-pong of 172 B, ${opts.pings} round trips per ` +
        `case and phase; iperf3 ${opts.iperfSeconds} s` +
        `${opts.pin ? '; client on CPU 0, server on CPU 1' : ''}. Noisy unless the machine is idle.`,
    );
    const bench = new Bench(lab, opts, pingpong, agents);
    const results: PhaseResult[] = [];
    for (const [i, mode] of order.entries()) {
      const r = await bench.phase(i, mode, cases);
      results.push(r);
      opts.log(phaseLine(i, order.length, r, cases));
    }
    await agents.stop();
    return [
      ...cases.flatMap((c) =>
        c.proto === 'udp' ? rttRows(order, results, c) : tcpRows(order, results, c),
      ),
      ...costRows(results, cases, opts.pings + opts.warmup),
    ];
  } finally {
    try {
      await agents.stop();
    } finally {
      lab.teardown();
    }
  }
}

// ---- standalone, as root: node dist/test/bench/overhead.js [--phases 8] [--pings 10000]
//      [--warmup 500] [--rates 2000,0] [--iperf-seconds 5] [--pin] ----

function formatRow(row: BenchRow): string {
  const value = Number.isInteger(row.value) ? String(row.value) : row.value.toFixed(2);
  const ratio = row.ratio !== undefined ? `  ${row.ratio.toFixed(2)}x ${row.baseline ?? ''}` : '';
  return `  ${row.name.padEnd(58)} ${value.padStart(12)} ${row.unit}${ratio}`;
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      phases: { type: 'string' },
      pings: { type: 'string' },
      warmup: { type: 'string' },
      rates: { type: 'string' },
      'iperf-seconds': { type: 'string' },
      pin: { type: 'boolean' },
    },
  });
  const num = (name: string, v: string | undefined): number | undefined => {
    if (v === undefined) return undefined;
    const n = Number(v);
    if (!Number.isInteger(n) || n < 0) throw new Error(`--${name}: '${v}' is not an integer >= 0`);
    return n;
  };
  if (process.getuid?.() !== 0) {
    console.error('overhead: needs root (network namespaces, veths, the agent attaching BPF)');
    process.exitCode = 1;
    return;
  }
  console.log('agent overhead on the traffic (lab pods, agent on/off)');
  const rows = await benchOverhead({
    phases: num('phases', values.phases),
    pings: num('pings', values.pings),
    warmup: num('warmup', values.warmup),
    rates: values.rates?.split(',').map((r) => num('rates', r) ?? 0),
    iperfSeconds: num('iperf-seconds', values['iperf-seconds']),
    pin: values.pin,
  });
  for (const row of rows) console.log(formatRow(row));
}

if (process.argv[1] === fileURLToPath(import.meta.url)) await main();
