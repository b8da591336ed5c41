/**
 * The load lab: many concurrent G.711 streams through a relay, bulk TCP beside them, and the real
 * agent watching every veth, with its CPU, memory and self metrics recorded while it runs.
 *
 *   sender --N RTP streams, 20 ms, one source port each--> relay (holds H ms, one output flow per
 *   input flow) --N streams--> sink;   bulkc --TCP, non-audio port--> bulks
 *
 * The pods run test/load/udp-load.c (compiled here with `cc -O2` into dist/test/load/ when
 * missing or older than the source) and iperf3 when installed (else udp-load's own bulk modes).
 * Used by test/soak.test.ts (bounded, CI) and test/lab/soak.ts (the 10-minute soak CLI).
 *
 * What is recorded, from the traffic's start (t = 0):
 *   - every second, from /proc: the agent's CPU (utime + stime, all threads, and per thread name
 *     from /proc/<pid>/task/<tid>/stat), its VmRSS, and the machine's busy share (/proc/stat);
 *   - every scrape interval, from /metrics: the self metrics that account for every event
 *     (docs/metrics.md) and the hop, transit and signature counts;
 *   - optionally, the entries of the classifier's LRU maps (rtp_flows, tcp_flows), by bpftool;
 *   - at the end: each pod process's report, and the prediction of the hop samples.
 */
import { execFile, execFileSync, spawn } from 'node:child_process';
import {
  existsSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  renameSync,
  rmSync,
  statSync,
} from 'node:fs';
import { dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { AgentProcess, sleep, type AgentExit } from './agent-process.js';
import type { Json } from './cli.js';
import { Lab, LabProcess } from './lab.js';
import { bucketsOf, histogramQuantile, parseMetrics, sumOf, type Sample } from './metrics-text.js';
import { LATENCY_BUCKETS } from './scenario.js';

const execFileAsync = promisify(execFile);

export const LOAD_SOURCE = fileURLToPath(new URL('../../../test/load/udp-load.c', import.meta.url));
export const LOAD_BINARY = fileURLToPath(new URL('../load/udp-load', import.meta.url));

/**
 * Ports. Only the relay's and the sink's listening ports are audio ports: every audio packet has
 * one of them as its destination, while the streams' source ports and the bulk pair's ephemeral
 * ports (32768-60999) stay outside AUDIO_PORTS, so bulk TCP leaves the classifier at the port check.
 */
export const LOAD_PORTS = {
  relay: 30000,
  sink: 30001,
  senderBase: 31000,
  relayOutBase: 41000,
  bulk: 5201,
} as const;
export const LOAD_AUDIO_PORTS = `${LOAD_PORTS.relay}-${LOAD_PORTS.sink}`;
export const PACKETS_PER_SECOND_PER_STREAM = 50; // 20 ms packetisation
export const PAYLOAD_BYTES = 160;
/** Each datagram crosses two watched veths (its sender's and its receiver's host side). */
export const OBSERVATIONS_PER_PACKET = 2;
const SIGNATURE_WINDOW = 256;
const SILENCE_THRESHOLD = 256;
const PROGRESS_EVERY_MS = 5000;
/** USER_HZ: /proc/<pid>/stat counts CPU time in these ticks (100 on every Linux we run). */
const CLOCK_TICKS = clockTicks();

function clockTicks(): number {
  try {
    const n = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim());
    return Number.isInteger(n) && n > 0 ? n : 100;
  } catch {
    return 100;
  }
}

/** Compiles udp-load.c when the binary is missing or older than the source; returns its path. */
export function ensureLoadBinary(): string {
  if (!existsSync(LOAD_SOURCE)) throw new Error(`load: ${LOAD_SOURCE} not found`);
  const fresh =
    existsSync(LOAD_BINARY) && statSync(LOAD_BINARY).mtimeMs >= statSync(LOAD_SOURCE).mtimeMs;
  if (!fresh) {
    mkdirSync(dirname(LOAD_BINARY), { recursive: true });
    // Built aside and renamed: a concurrent run never executes a half-written binary.
    const tmp = `${LOAD_BINARY}.${process.pid}.tmp`;
    try {
      execFileSync('cc', ['-O2', '-Wall', '-o', tmp, LOAD_SOURCE], { stdio: 'pipe' });
      renameSync(tmp, LOAD_BINARY);
    } catch (err) {
      rmSync(tmp, { force: true });
      const e = err as { stderr?: Buffer; message: string };
      throw new Error(`load: cc -O2 ${LOAD_SOURCE} failed: ${e.stderr?.toString() ?? e.message}`);
    }
  }
  return LOAD_BINARY;
}

export interface LoadOptions {
  streams: number;
  /**
   * Seconds of audio each stream sends (durationS x 50 packets). A sender that falls behind is
   * stopped at the wall clock, durationS + max(5 s, 10%) after it started (LoadResult.senderCut).
   */
  durationS: number;
  /** The relay's hold, ms (default 20: a jitter buffer's worth). */
  holdMs?: number;
  /** Bulk TCP between two more pods (default false). */
  bulk?: boolean;
  /** Bulk rate in Mbit/s; 0 = as fast as it goes (default 200). */
  bulkMbps?: number;
  /** Seeds the streams' noise (default 0x10ad). */
  seed?: number;
  /** Agent variables beyond the lab's (MAX_FLOWS, MAX_PENDING_SIGNATURES, ...). */
  agentEnv?: Record<string, string>;
  /** /metrics scrape interval (default 1000 ms). */
  scrapeIntervalMs?: number;
  /** Also count the entries of the kernel's LRU maps every scrape (bpftool; small maps only). */
  kernelMaps?: boolean;
  /**
   * Niceness of the load's sources, the sender and the bulk client (default 10; the agent, the
   * relay and the sink run at 0). The sender alone can ask for more CPU than this machine has (a
   * datagram costs 8-10 us of kernel time on its way); niced, it takes what is left and falls
   * behind (reported as lateness) instead of starving the agent and the relay, so what is
   * measured is the agent at the rate the machine carries, and nothing downstream overflows.
   */
  generatorNice?: number;
  /** Run the C prediction of hop samples afterwards (default true). */
  predict?: boolean;
  /** Stops the streams early (Ctrl-C in the CLI); the run then settles and reports. */
  signal?: AbortSignal;
  /** Progress lines (CLI). */
  onProgress?: (line: string) => void;
}

/** One second of the agent's process, from /proc. */
export interface ProcSample {
  /** Seconds since the traffic started (negative: before). */
  tS: number;
  rssMiB: number;
  /** CPU over the last interval, percent of one core, all threads. */
  cpuPct: number;
  /** The same per thread name (threads sharing a name are summed). */
  threads: Record<string, number>;
  /** The whole machine's busy share over the interval, percent of all cores. */
  machineBusyPct: number;
}

/** The self metrics of one scrape. Counters are cumulative since the agent started. */
export interface ScrapeSample {
  tS: number;
  packetsInspected: number;
  audioPackets: number;
  eventsDelivered: number;
  eventsLost: number;
  flowsTracked: number;
  flowsEvicted: number;
  flowsExpired: number;
  pendingSignatures: number;
  correlatorEvictions: number;
  correlatorExpired: number;
  windowsSilent: number;
  collisions: number;
  /** audio_latency_seconds_count of the hop sender -> relay. */
  hopSamples: number;
  /** audio_transit_latency_seconds_count, both legs. */
  transitSamples: number;
  /** audio_signatures_total of the sender pod and of the relay pod. */
  signaturesSender: number;
  signaturesRelay: number;
  /** audio_signatures_total of every pod: occurrences the correlator has stored so far. */
  signaturesAll: number;
  bpfRunTimeS: number;
  bpfRunCount: number;
  /** Distinct keys in the kernel LRU maps, when LoadOptions.kernelMaps (see mapEntries). */
  rtpFlowEntries?: number;
  tcpFlowEntries?: number;
}

export interface Prediction {
  packetsPerStream: number;
  /** Non-silent windows of all streams: the hop samples a lossless run yields. */
  signatures: number;
  windows: number;
  silent: number;
  /** The rough figure: streams x bytes / window. */
  rough: number;
}

export interface BulkReport {
  tool: 'iperf3' | 'udp-load';
  bytes: number;
  mbps: number;
}

export interface LoadResult {
  options: {
    streams: number;
    durationS: number;
    holdMs: number;
    bulk: boolean;
    bulkMbps: number;
    seed: number;
    generatorNice: number;
    agentEnv: Record<string, string>;
  };
  labId: string;
  agentPid: number;
  /** The agent's RSS once attached, before any traffic. */
  idleRssMiB: number;
  /** Seconds the streams ran (sender ready to sender exit). */
  trafficS: number;
  aborted: boolean;
  /** The sender was stopped at the wall-clock end of the run, behind its schedule. */
  senderCut: boolean;
  proc: ProcSample[];
  scrapes: ScrapeSample[];
  /** The scrape after every event was consumed and the hop count stopped moving. */
  final: ScrapeSample;
  /** Hop latency quantiles from the agent's histogram, seconds. */
  hopP50S: number;
  hopP99S: number;
  reports: {
    send: Record<string, Json> | null;
    relay: Record<string, Json> | null;
    sink: Record<string, Json> | null;
  };
  bulk: BulkReport | null;
  prediction: Prediction | null;
  agentExit: AgentExit;
  agentLogTail: string[];
  /** Agent thread names seen. */
  threadNames: string[];
  /** The kernel LRU maps (LoadOptions.kernelMaps), as created by the loader. */
  kernelMaps: MapInfo[];
}

// ---- /proc sampling ---------------------------------------------------------------------------

/** utime + stime in clock ticks of a /proc/<pid>[/task/<tid>]/stat file, and the thread name. */
function readStat(path: string): { comm: string; ticks: number } | undefined {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch {
    return undefined;
  }
  // The name (field 2) may hold spaces and parentheses: split after the last ')'.
  const close = text.lastIndexOf(')');
  const comm = text.slice(text.indexOf('(') + 1, close);
  const fields = text.slice(close + 2).split(' ');
  return { comm, ticks: Number(fields[11]) + Number(fields[12]) };
}

function readRssMiB(pid: number): number {
  try {
    const kb = Number(/^VmRSS:\s+(\d+)/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1]);
    return kb / 1024;
  } catch {
    return NaN;
  }
}

/** Busy and total jiffies of the whole machine (first line of /proc/stat). */
function readMachine(): { busy: number; total: number } {
  const line = readFileSync('/proc/stat', 'utf8').split('\n')[0];
  const v = line.trim().split(/\s+/).slice(1, 9).map(Number);
  const total = v.reduce((a, b) => a + b, 0);
  const idle = v[3] + v[4]; // idle + iowait
  return { busy: total - idle, total };
}

/** Per-thread CPU ticks of a process: tid -> { comm, ticks }. */
function readThreads(pid: number): Map<string, { comm: string; ticks: number }> {
  const out = new Map<string, { comm: string; ticks: number }>();
  let tids: string[];
  try {
    tids = readdirSync(`/proc/${pid}/task`);
  } catch {
    return out;
  }
  for (const tid of tids) {
    const s = readStat(`/proc/${pid}/task/${tid}/stat`);
    if (s) out.set(tid, s);
  }
  return out;
}

/** Samples the agent's process every second until stopped. */
class ProcSampler {
  readonly samples: ProcSample[] = [];
  private timer: NodeJS.Timeout | null = null;
  private lastAt = 0;
  private lastTicks = 0;
  private lastThreads = new Map<string, { comm: string; ticks: number }>();
  private lastMachine = { busy: 0, total: 0 };
  readonly names = new Set<string>();

  constructor(
    private readonly pid: number,
    private readonly t0: () => number,
  ) {}

  start(intervalMs = 1000): void {
    this.take(false);
    this.timer = setInterval(() => this.take(true), intervalMs);
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
  }

  private take(record: boolean): void {
    const at = performance.now();
    const total = readStat(`/proc/${this.pid}/stat`);
    if (!total) return;
    const threads = readThreads(this.pid);
    const machine = readMachine();
    if (record) {
      const seconds = (at - this.lastAt) / 1000;
      const perName: Record<string, number> = {};
      for (const [tid, t] of threads) {
        const before = this.lastThreads.get(tid)?.ticks ?? 0;
        const pct = (100 * (t.ticks - before)) / CLOCK_TICKS / seconds;
        perName[t.comm] = round2((perName[t.comm] ?? 0) + pct);
        this.names.add(t.comm);
      }
      const dm = machine.total - this.lastMachine.total;
      this.samples.push({
        tS: round2((at - this.t0()) / 1000),
        rssMiB: round2(readRssMiB(this.pid)),
        cpuPct: round2((100 * (total.ticks - this.lastTicks)) / CLOCK_TICKS / seconds),
        threads: perName,
        machineBusyPct: dm > 0 ? round2((100 * (machine.busy - this.lastMachine.busy)) / dm) : 0,
      });
    }
    this.lastAt = at;
    this.lastTicks = total.ticks;
    this.lastThreads = threads;
    this.lastMachine = machine;
  }
}

// ---- kernel maps ------------------------------------------------------------------------------

export interface MapInfo {
  id: number;
  name: string;
  maxEntries: number;
}

/** The BPF maps a process holds open (map ids from fdinfo, names from bpftool). */
export function processMaps(pid: number): MapInfo[] {
  const ids = new Set<number>();
  let fds: string[] = [];
  try {
    fds = readdirSync(`/proc/${pid}/fdinfo`);
  } catch {
    return [];
  }
  for (const fd of fds) {
    try {
      const m = /^map_id:\s+(\d+)/m.exec(readFileSync(`/proc/${pid}/fdinfo/${fd}`, 'utf8'));
      if (m) ids.add(Number(m[1]));
    } catch {
      // closed meanwhile
    }
  }
  const out: MapInfo[] = [];
  for (const id of ids) {
    try {
      const info = JSON.parse(
        execFileSync('bpftool', ['map', 'show', 'id', String(id), '--json'], { encoding: 'utf8' }),
      ) as { name?: string; max_entries?: number };
      out.push({ id, name: info.name ?? '', maxEntries: info.max_entries ?? NaN });
    } catch {
      // gone meanwhile
    }
  }
  return out;
}

/**
 * Distinct keys in a BPF hash map (bpftool map dump). Not a snapshot while the map changes: the
 * dump walks it key by key, so under churn it can meet a key evicted and re-inserted behind it;
 * exact once traffic has stopped.
 */
async function mapEntries(id: number): Promise<number> {
  const { stdout } = await execFileAsync('bpftool', ['map', 'dump', 'id', String(id), '--json'], {
    maxBuffer: 64 << 20,
  });
  const entries = JSON.parse(stdout) as { key?: unknown }[];
  return new Set(entries.map((e) => JSON.stringify(e.key))).size;
}

// ---- scrapes ----------------------------------------------------------------------------------

function scrapeSample(samples: Sample[], tS: number, sender: string, relay: string): ScrapeSample {
  const v = (name: string, sel: Record<string, string> = {}): number =>
    sumOf(samples, name, sel) ?? 0;
  return {
    tS: round2(tS),
    packetsInspected: v('audio_tracker_packets_inspected_total'),
    audioPackets: v('audio_tracker_audio_packets_total'),
    eventsDelivered: v('audio_tracker_events_delivered_total'),
    eventsLost: v('audio_tracker_events_lost_total'),
    flowsTracked: v('audio_tracker_flows_tracked'),
    flowsEvicted: v('audio_tracker_flows_evicted_total'),
    flowsExpired: v('audio_tracker_flows_expired_total'),
    pendingSignatures: v('audio_tracker_pending_signatures'),
    correlatorEvictions: v('audio_tracker_correlator_evictions_total'),
    correlatorExpired: v('audio_tracker_correlator_expired_total'),
    windowsSilent: v('audio_tracker_windows_silent_total'),
    collisions: v('audio_signature_collisions_total'),
    hopSamples: v('audio_latency_seconds_count', { source_pod: sender, dest_pod: relay }),
    transitSamples: v('audio_transit_latency_seconds_count'),
    signaturesSender: v('audio_signatures_total', { pod: sender }),
    signaturesRelay: v('audio_signatures_total', { pod: relay }),
    signaturesAll: v('audio_signatures_total'),
    bpfRunTimeS: v('audio_tracker_bpf_run_time_seconds_total'),
    bpfRunCount: v('audio_tracker_bpf_run_count_total'),
  };
}

// ---- pod processes ----------------------------------------------------------------------------

/** Starts the lab's pod processes and remembers them for the teardown. */
class PodProcesses {
  readonly all: LabProcess[] = [];

  constructor(
    readonly lab: Lab,
    /** The niceness of the load's sources (LoadOptions.generatorNice). */
    readonly sourceNice: number,
  ) {}

  /**
   * `cmd args...` inside the pod's namespace; its JSON ready/report lines are parsed. `ip netns
   * exec` and `nice` both exec, so the child is the command itself and gets the signals.
   */
  spawn(podName: string, label: string, cmd: string, args: string[], nice = 0): LabProcess {
    const pod = this.lab.pod(podName);
    const child = spawn(
      'ip',
      ['netns', 'exec', pod.netns, 'nice', '-n', String(nice), cmd, ...args],
      { stdio: ['ignore', 'pipe', 'pipe'] },
    );
    const proc = new LabProcess(pod, label, child);
    this.all.push(proc);
    return proc;
  }

  load(podName: string, mode: string, args: string[], nice = 0): LabProcess {
    return this.spawn(podName, `udp-load ${mode}`, LOAD_BINARY, [mode, ...args], nice);
  }

  async killAll(): Promise<void> {
    await Promise.all(this.all.map((p) => p.stop('SIGKILL', 1000)));
  }
}

function hasIperf3(): boolean {
  try {
    execFileSync('iperf3', ['--version'], { stdio: 'pipe' });
    return true;
  } catch {
    return false;
  }
}

/** The bulk pair: iperf3 when installed, else udp-load's TCP modes. */
interface BulkPair {
  tool: 'iperf3' | 'udp-load';
  server: LabProcess;
  client: LabProcess | null;
  clientOut: string;
}

async function waitListening(lab: Lab, pod: string, port: number): Promise<void> {
  const deadline = Date.now() + 5000;
  while (Date.now() < deadline) {
    const out = lab.exec(pod, 'ss', ['-Htln', `sport = :${port}`]);
    if (out.trim() !== '') return;
    await sleep(50);
  }
  throw new Error(`load: nothing listens on TCP ${port} in pod ${pod} after 5 s`);
}

async function startBulkServer(pods: PodProcesses): Promise<BulkPair> {
  const port = String(LOAD_PORTS.bulk);
  if (hasIperf3()) {
    const server = pods.spawn('bulks', 'iperf3 -s', 'iperf3', ['-s', '-1', '-p', port]);
    await waitListening(pods.lab, 'bulks', LOAD_PORTS.bulk);
    return { tool: 'iperf3', server, client: null, clientOut: '' };
  }
  const server = pods.load('bulks', 'bulk-sink', ['--listen', port]);
  await server.ready;
  return { tool: 'udp-load', server, client: null, clientOut: '' };
}

function startBulkClient(
  pods: PodProcesses,
  pair: BulkPair,
  durationS: number,
  mbps: number,
): void {
  const dest = pods.lab.pod('bulks').ip;
  if (pair.tool === 'iperf3') {
    const client = pods.spawn(
      'bulkc',
      'iperf3 -c',
      'iperf3',
      [
        ...['-c', dest, '-p', String(LOAD_PORTS.bulk), '-J'],
        ...['-t', String(Math.max(1, Math.round(durationS)))],
        ...['-b', mbps > 0 ? `${mbps}M` : '0'],
      ],
      pods.sourceNice,
    );
    client.child.stdout?.on('data', (c: string) => (pair.clientOut += c));
    pair.client = client;
    return;
  }
  pair.client = pods.load(
    'bulkc',
    'bulk-send',
    [
      ...['--dest', `${dest}:${LOAD_PORTS.bulk}`],
      ...['--mbps', String(mbps), '--duration', String(durationS)],
    ],
    pods.sourceNice,
  );
}

async function stopBulk(pair: BulkPair | null): Promise<BulkReport | null> {
  if (!pair) return null;
  const client = pair.client ? await pair.client.stop('SIGTERM', 3000) : null;
  const server = await pair.server.stop('SIGTERM', 3000);
  if (pair.tool === 'iperf3') {
    try {
      const doc = JSON.parse(pair.clientOut) as {
        end?: { sum_sent?: { bytes?: number; bits_per_second?: number } };
      };
      const sent = doc.end?.sum_sent;
      return {
        tool: 'iperf3',
        bytes: sent?.bytes ?? 0,
        mbps: round2((sent?.bits_per_second ?? 0) / 1e6),
      };
    } catch {
      return { tool: 'iperf3', bytes: 0, mbps: 0 };
    }
  }
  const sent = client?.report;
  const bytes = Number(sent?.bytes ?? server.report?.bytes ?? 0);
  const elapsed = Number(sent?.elapsedS ?? 0);
  return { tool: 'udp-load', bytes, mbps: elapsed > 0 ? round2((bytes * 8) / elapsed / 1e6) : 0 };
}

/** Sink, then relay (receivers first), each waited for until it listens. */
async function startReceivers(
  pods: PodProcesses,
  streams: number,
  holdMs: number,
): Promise<{ sink: LabProcess; relay: LabProcess }> {
  const sink = pods.load('sink', 'sink', ['--listen', String(LOAD_PORTS.sink)]);
  await sink.ready;
  const relay = pods.load('relay', 'relay', [
    ...['--listen', String(LOAD_PORTS.relay), '--hold-ms', String(holdMs)],
    ...['--to', `${pods.lab.pod('sink').ip}:${LOAD_PORTS.sink}`],
    ...['--streams', String(streams), '--sport-base', String(LOAD_PORTS.relayOutBase)],
  ]);
  await relay.ready;
  return { sink, relay };
}

function startSender(
  pods: PodProcesses,
  streams: number,
  packets: number,
  seed: number,
): LabProcess {
  return pods.load(
    'sender',
    'send',
    [
      ...['--dest', `${pods.lab.pod('relay').ip}:${LOAD_PORTS.relay}`],
      ...['--streams', String(streams), '--sport-base', String(LOAD_PORTS.senderBase)],
      ...['--packets', String(packets), '--seed', String(seed)],
    ],
    pods.sourceNice,
  );
}

// ---- prediction -------------------------------------------------------------------------------

export interface PredictOutput {
  perStream: number[];
  windows: number;
  silent: number;
  signatures: number;
}

/** `udp-load predict` for streams first .. first + count - 1. */
export async function predictRange(
  first: number,
  count: number,
  packetsPerStream: number,
  seed: number,
): Promise<PredictOutput> {
  const { stdout } = await execFileAsync(
    LOAD_BINARY,
    [
      ...['predict', '--streams', String(count), '--stream', String(first)],
      ...['--packets', String(packetsPerStream), '--seed', String(seed)],
      ...['--window', String(SIGNATURE_WINDOW), '--silence', String(SILENCE_THRESHOLD)],
    ],
    { maxBuffer: 16 << 20 },
  );
  return JSON.parse(stdout) as PredictOutput;
}

/**
 * Runs `udp-load predict` on two processes (the machine's two cores), halves of the streams.
 * `withOneMore`: a sender stopped mid-round sent one packet more on streams 0 .. withOneMore - 1.
 */
export async function predictHops(
  streams: number,
  packetsPerStream: number,
  seed: number,
  withOneMore = 0,
): Promise<Prediction> {
  const runs: Promise<PredictOutput>[] = [];
  const add = (first: number, count: number, packets: number): void => {
    const half = Math.ceil(count / 2);
    if (count <= 0 || packets <= 0) return;
    runs.push(predictRange(first, half, packets, seed));
    if (count > half) runs.push(predictRange(first + half, count - half, packets, seed));
  };
  add(0, withOneMore, packetsPerStream + 1);
  add(withOneMore, streams - withOneMore, packetsPerStream);
  const outs = await Promise.all(runs);
  const sum = (f: (o: PredictOutput) => number): number => outs.reduce((a, o) => a + f(o), 0);
  return {
    packetsPerStream,
    signatures: sum((o) => o.signatures),
    windows: sum((o) => o.windows),
    silent: sum((o) => o.silent),
    rough: Math.round(
      ((streams * packetsPerStream + withOneMore) * PAYLOAD_BYTES) / SIGNATURE_WINDOW,
    ),
  };
}

/** The payload bytes stream `index` sends in `packets` packets (for the reference check). */
export function dumpStream(index: number, packets: number, seed: number): Buffer {
  return execFileSync(
    LOAD_BINARY,
    ['dump', '--stream', String(index), '--packets', String(packets), '--seed', String(seed)],
    { maxBuffer: 256 << 20 },
  );
}

// ---- the run ----------------------------------------------------------------------------------

/** The agent's configuration for the load lab. */
export function loadAgentEnv(lab: Lab, extra: Record<string, string> = {}): Record<string, string> {
  return {
    INTERFACE: lab.interfaceGlob,
    AUDIO_PORTS: LOAD_AUDIO_PORTS,
    LATENCY_BUCKETS: LATENCY_BUCKETS.join(','),
    SIGNATURE_WINDOW_SIZE: String(SIGNATURE_WINDOW),
    SILENCE_THRESHOLD: String(SILENCE_THRESHOLD),
    SIGNATURE_ALGORITHM: 'xxhash',
    LOG_LEVEL: 'info',
    ...extra,
  };
}

async function waitAttached(agent: AgentProcess, want: number): Promise<void> {
  const deadline = Date.now() + 15_000;
  let got: number | undefined;
  while (Date.now() < deadline) {
    got = sumOf(parseMetrics(await agent.scrape()), 'audio_tracker_interfaces_attached');
    if (got !== undefined && got >= want) return;
    await sleep(100);
  }
  throw new Error(`load: agent attached ${got} interfaces, want ${want}`);
}

/** Scrapes the agent (and counts the kernel maps) on a timer, and on demand. */
class Scraper {
  readonly scrapes: ScrapeSample[] = [];
  private timer: NodeJS.Timeout | null = null;
  private busy = false;

  constructor(
    private readonly agent: AgentProcess,
    private readonly lab: Lab,
    private readonly maps: MapInfo[],
    private readonly t0: () => number,
    private readonly onSample: (s: ScrapeSample, count: number) => void,
  ) {}

  async take(): Promise<ScrapeSample> {
    const text = await this.agent.scrape();
    const tS = (performance.now() - this.t0()) / 1000;
    const s = scrapeSample(
      parseMetrics(text),
      tS,
      this.lab.pod('sender').ip,
      this.lab.pod('relay').ip,
    );
    for (const m of this.maps) {
      const n = await mapEntries(m.id);
      if (m.name === 'rtp_flows') s.rtpFlowEntries = n;
      else s.tcpFlowEntries = n;
    }
    return s;
  }

  start(intervalMs: number): void {
    this.timer = setInterval(() => this.tick(), intervalMs);
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
  }

  private tick(): void {
    if (this.busy) return; // a slow scrape is not stacked on
    this.busy = true;
    this.take()
      .then((s) => {
        this.scrapes.push(s);
        this.onSample(s, this.scrapes.length);
      })
      .catch((err: unknown) =>
        process.stderr.write(`load: scrape failed: ${(err as Error).message}\n`),
      )
      .finally(() => (this.busy = false));
  }
}

/** The agent, attached to every veth of the lab, and what is known before the traffic. */
async function startAgent(
  lab: Lab,
  env: Record<string, string>,
  kernelMaps: boolean,
): Promise<{ agent: AgentProcess; maps: MapInfo[]; idleRssMiB: number }> {
  const agent = await AgentProcess.start({ env });
  lab.track(agent.pid);
  await waitAttached(agent, lab.hostInterfaces.length);
  const maps = kernelMaps
    ? processMaps(agent.pid).filter((m) => m.name === 'rtp_flows' || m.name === 'tcp_flows')
    : [];
  return { agent, maps, idleRssMiB: round2(readRssMiB(agent.pid)) };
}

/**
 * Builds the load lab, runs the streams (and bulk) for durationS with the agent attached, waits
 * until the agent has consumed every event and paired every window, and returns everything
 * recorded. The lab is always torn down.
 */
export async function runLoad(opts: LoadOptions): Promise<LoadResult> {
  ensureLoadBinary();
  const holdMs = opts.holdMs ?? 20;
  const bulkOn = opts.bulk ?? false;
  const bulkMbps = opts.bulkMbps ?? 200;
  const seed = opts.seed ?? 0x10ad;
  const nice = opts.generatorNice ?? 10;
  const progress = opts.onProgress ?? ((): void => {});
  const packets = Math.round(opts.durationS * PACKETS_PER_SECOND_PER_STREAM);
  const podNames = ['sender', 'relay', 'sink', ...(bulkOn ? ['bulkc', 'bulks'] : [])];
  const lab = Lab.create({ pods: podNames, signalHandlers: opts.signal === undefined });
  const pods = new PodProcesses(lab, nice);
  let agent: AgentProcess | undefined;
  let sampler: ProcSampler | undefined;
  let scraper: Scraper | undefined;
  let bulk: BulkPair | null = null;
  try {
    const { sink, relay } = await startReceivers(pods, opts.streams, holdMs);
    if (bulkOn) bulk = await startBulkServer(pods);
    const agentEnv = loadAgentEnv(lab, opts.agentEnv);
    const started = await startAgent(lab, agentEnv, opts.kernelMaps ?? false);
    const a = (agent = started.agent);
    progress(
      `lab ${lab.id}: agent ${a.pid} attached to ${lab.hostInterfaces.length} veths, ` +
        `RSS ${started.idleRssMiB} MiB`,
    );

    let t0 = performance.now();
    sampler = new ProcSampler(a.pid, () => t0);
    const proc = sampler;
    const scrapeMs = opts.scrapeIntervalMs ?? 1000;
    const every = Math.max(1, Math.round(PROGRESS_EVERY_MS / scrapeMs));
    scraper = new Scraper(
      a,
      lab,
      started.maps,
      () => t0,
      (s, n) => {
        if (n % every === 0) progress(progressLine(s, proc.samples.at(-1)));
      },
    );
    const sender = startSender(pods, opts.streams, packets, seed);
    if (bulk) startBulkClient(pods, bulk, opts.durationS, bulkMbps);
    await sender.ready;
    t0 = performance.now();
    sampler.start(1000);
    scraper.start(scrapeMs);
    const onAbort = (): void => void sender.stop('SIGTERM');
    opts.signal?.addEventListener('abort', onAbort, { once: true });
    // A machine that cannot carry the load makes the sender fall behind its schedule; the run
    // still ends on the wall clock, and the sender's report says how far it got.
    let cut = false;
    const wallCap = setTimeout(
      () => {
        cut = true;
        void sender.stop('SIGTERM');
      },
      1000 * (opts.durationS + Math.max(5, 0.1 * opts.durationS)),
    );
    const sent = await sender.exited;
    clearTimeout(wallCap);
    opts.signal?.removeEventListener('abort', onAbort);
    const trafficS = (performance.now() - t0) / 1000;
    sampler.stop();
    scraper.stop();
    progress(`streams done after ${trafficS.toFixed(1)} s; settling`);

    await sleep(holdMs + 300); // the last held packets leave the relay
    const s = scraper;
    const final = await settle(() => s.take());
    const relayExit = await relay.stop();
    const sinkExit = await sink.stop();
    const bulkReport = await stopBulk(bulk);
    bulk = null;
    const hist = bucketsOf(parseMetrics(await a.scrape()), 'audio_latency_seconds', {
      source_pod: lab.pod('sender').ip,
      dest_pod: lab.pod('relay').ip,
    });
    const agentExit = await a.stop();
    agent = undefined;

    const perStream = Number(sent.report?.packetsPerStream ?? 0);
    const oneMore = Number(sent.report?.streamsWithOneMore ?? 0);
    let prediction: Prediction | null = null;
    if ((opts.predict ?? true) && perStream > 0) {
      progress(`predicting hop samples for ${opts.streams} x ${perStream} packets`);
      prediction = await predictHops(opts.streams, perStream, seed, oneMore);
    }
    return {
      options: {
        ...{ streams: opts.streams, durationS: opts.durationS, holdMs, bulk: bulkOn },
        ...{ bulkMbps, seed, generatorNice: nice, agentEnv },
      },
      labId: lab.id,
      agentPid: a.pid,
      idleRssMiB: started.idleRssMiB,
      trafficS: round2(trafficS),
      aborted: opts.signal?.aborted ?? false,
      senderCut: cut,
      proc: sampler.samples,
      scrapes: scraper.scrapes,
      final,
      hopP50S: histogramQuantile(0.5, hist),
      hopP99S: histogramQuantile(0.99, hist),
      reports: { send: sent.report, relay: relayExit.report, sink: sinkExit.report },
      bulk: bulkReport,
      prediction,
      agentExit,
      agentLogTail: a.logs(40),
      threadNames: [...sampler.names].sort(),
      kernelMaps: started.maps,
    };
  } finally {
    scraper?.stop();
    sampler?.stop();
    await pods.killAll();
    await stopBulk(bulk);
    if (agent?.running) await agent.stop();
    lab.teardown();
  }
}

/**
 * Waits until the ring buffer is drained (audio packets == delivered + lost: every event the
 * kernel attempted is accounted for) and the hop count has stopped moving for 2 s; returns the
 * last scrape. After 30 s it returns what it has: the accounting check then shows the gap.
 */
async function settle(take: () => Promise<ScrapeSample>): Promise<ScrapeSample> {
  const deadline = Date.now() + 30_000;
  let last = await take();
  let stableSince = Date.now();
  while (Date.now() < deadline) {
    await sleep(500);
    const s = await take();
    const drained = s.audioPackets === s.eventsDelivered + s.eventsLost;
    const moved = s.hopSamples !== last.hopSamples || s.eventsDelivered !== last.eventsDelivered;
    last = s;
    if (moved || !drained) stableSince = Date.now();
    else if (Date.now() - stableSince >= 2000) break;
  }
  return last;
}

function progressLine(s: ScrapeSample, p: ProcSample | undefined): string {
  const cpu = p ? `cpu ${p.cpuPct.toFixed(0)}% rss ${p.rssMiB.toFixed(0)} MiB` : '';
  return (
    `t=${s.tS.toFixed(0)}s audio ${s.audioPackets} delivered ${s.eventsDelivered} lost ` +
    `${s.eventsLost} flows ${s.flowsTracked} pending ${s.pendingSignatures} hops ` +
    `${s.hopSamples} ${cpu}`
  );
}

// ---- analysis (pure: no root needed) ----------------------------------------------------------

export function round2(x: number): number {
  return Math.round(x * 100) / 100;
}

/** p in [0, 1], nearest rank. NaN for no values. */
export function percentile(values: readonly number[], p: number): number {
  if (values.length === 0) return NaN;
  const sorted = [...values].sort((a, b) => a - b);
  const rank = Math.min(sorted.length - 1, Math.max(0, Math.ceil(p * sorted.length) - 1));
  return sorted[rank];
}

/** Least-squares slope of y over x (NaN with fewer than two distinct x). */
export function leastSquaresSlope(xs: readonly number[], ys: readonly number[]): number {
  const n = Math.min(xs.length, ys.length);
  if (n < 2) return NaN;
  let mx = 0;
  let my = 0;
  for (let i = 0; i < n; i++) {
    mx += xs[i];
    my += ys[i];
  }
  mx /= n;
  my /= n;
  let sxy = 0;
  let sxx = 0;
  for (let i = 0; i < n; i++) {
    sxy += (xs[i] - mx) * (ys[i] - my);
    sxx += (xs[i] - mx) ** 2;
  }
  return sxx === 0 ? NaN : sxy / sxx;
}

/** How flat the agent stayed once warm. */
export interface Flatness {
  fromS: number;
  toS: number;
  samples: number;
  rssStartMiB: number;
  rssEndMiB: number;
  rssMaxMiB: number;
  rssMinMiB: number;
  /** Least-squares growth of RSS over the steady phase, every sample. */
  rssSlopeMiBPerMin: number;
  /**
   * Least-squares growth of the RSS floor: the minimum of each window of rssFloorWindowS over the
   * steady phase. V8 breathes in steps (its young generation grows by 16 MiB at once, a major
   * collection hands 30 MiB back minutes later: both seen in 1,000- and 2,000-stream runs), which
   * throw a slope over every sample either way; a leak raises every floor after it.
   */
  rssFloorSlopeMiBPerMin: number;
  rssFloorWindowS: number;
  /**
   * RSS right after each major collection (a fall of DROP_MIB or more within a second: the live
   * size then), and the least-squares growth of those levels when there are two or more at least
   * a minute apart. The trend that decides: these levels when present, else the floor slope.
   */
  rssTroughs: { tS: number; rssMiB: number }[];
  rssTrendSlopeMiBPerMin: number;
  rssTrendMethod: 'post-collection troughs' | 'window minima';
  cpuMeanPct: number;
  cpuP95Pct: number;
  cpuSlopePctPerMin: number;
  /**
   * The agent's CPU per event delivered (all threads, microseconds), over the first and the second
   * half of the steady phase, and the growth from one to the other. Per event, because a sender
   * that falls behind and catches up changes the load, not the cost: work that grows with time
   * shows as growth here.
   */
  cpuUsPerEventFirstHalf: number;
  cpuUsPerEventSecondHalf: number;
  cpuPerEventGrowth: number;
  /** Mean CPU per thread name over the steady phase, busiest first. */
  threads: { name: string; meanPct: number; p95Pct: number }[];
  machineBusyMeanPct: number;
}

/** MAX_PENDING_SIGNATURES as the agent ran with it (docs/configuration.md default otherwise). */
export function maxPendingOf(r: LoadResult): number {
  const v = Number(r.options.agentEnv.MAX_PENDING_SIGNATURES ?? DEFAULT_MAX_PENDING);
  return Number.isInteger(v) && v > 0 ? v : DEFAULT_MAX_PENDING;
}
const DEFAULT_MAX_PENDING = 1_048_576;

/**
 * When the correlator's ring had been written once all round: the first scrape by which the
 * occurrences stored (audio_signatures_total, all pods) reached MAX_PENDING_SIGNATURES. The ring
 * (64 bytes a slot) is allocated at start but the kernel gives it pages only as slots are first
 * written, so until then RSS grows by design: 64 MiB at the default 1,048,576 slots, by 2 MiB/s
 * at 500 streams. Infinity when it never filled.
 */
export function ringWarmS(r: LoadResult): number {
  const max = maxPendingOf(r);
  return r.scrapes.find((s) => s.signaturesAll >= max)?.tS ?? Infinity;
}

/**
 * The warm-up: the first `warmupFraction` of the traffic, or longer when the correlator's ring was
 * not yet touched all round by then (ringWarmS), plus 2 s. At most 60% of the run, so a steady
 * phase remains to judge (a ring that never warms then shows as growth).
 */
export function warmupS(r: LoadResult, warmupFraction = 0.2): number {
  const ring = ringWarmS(r);
  const byRing = Number.isFinite(ring) ? ring + 2 : 0;
  return round2(Math.min(0.6 * r.trafficS, Math.max(warmupFraction * r.trafficS, byRing)));
}

/** Flatness over the steady phase: from `fromS` (see warmupS) until the traffic's end. */
export function flatness(r: LoadResult, fromS: number): Flatness {
  const { proc, trafficS } = r;
  const steady = proc.filter((p) => p.tS >= fromS && p.tS <= trafficS);
  const rss = steady.map((p) => p.rssMiB);
  const cpu = steady.map((p) => p.cpuPct);
  const minutes = steady.map((p) => p.tS / 60);
  const names = new Set(steady.flatMap((p) => Object.keys(p.threads)));
  const threads = [...names]
    .map((name) => {
      const v = steady.map((p) => p.threads[name] ?? 0);
      return { name, meanPct: round2(mean(v)), p95Pct: round2(percentile(v, 0.95)) };
    })
    .sort((a, b) => b.meanPct - a.meanPct);
  return {
    fromS: round2(fromS),
    toS: round2(trafficS),
    samples: steady.length,
    rssStartMiB: rss[0] ?? NaN,
    rssEndMiB: rss.at(-1) ?? NaN,
    rssMaxMiB: rss.length ? Math.max(...rss) : NaN,
    rssMinMiB: rss.length ? Math.min(...rss) : NaN,
    rssSlopeMiBPerMin: round2(leastSquaresSlope(minutes, rss)),
    ...rssTrend(r, steady, fromS),
    cpuMeanPct: round2(mean(cpu)),
    cpuP95Pct: round2(percentile(cpu, 0.95)),
    cpuSlopePctPerMin: round2(leastSquaresSlope(minutes, cpu)),
    ...cpuPerEvent(r, fromS, trafficS),
    threads,
    machineBusyMeanPct: round2(mean(steady.map((p) => p.machineBusyPct))),
  };
}

/** A fall of RSS this large between two one-second samples is a major collection. */
const DROP_MIB = 8;
/** Seconds after a fall in which its trough (the lowest sample) is looked for. */
const TROUGH_S = 5;

function rssTrend(
  r: LoadResult,
  steady: readonly ProcSample[],
  fromS: number,
): Pick<
  Flatness,
  | 'rssFloorSlopeMiBPerMin'
  | 'rssFloorWindowS'
  | 'rssTroughs'
  | 'rssTrendSlopeMiBPerMin'
  | 'rssTrendMethod'
> {
  const floor = rssFloor(steady, fromS, r.trafficS);
  // Post-collection levels compare from the moment the correlator's ring is warm, which can be
  // before the steady phase starts (it also waits out a fraction of the run).
  const ring = ringWarmS(r);
  const from = Number.isFinite(ring) ? Math.min(fromS, ring + 2) : fromS;
  const warm = r.proc.filter((p) => p.tS >= from && p.tS <= r.trafficS);
  const troughs: { tS: number; rssMiB: number }[] = [];
  for (let i = 1; i < warm.length; i++) {
    if (warm[i - 1].rssMiB - warm[i].rssMiB < DROP_MIB) continue;
    const after = warm.filter((p) => p.tS >= warm[i].tS && p.tS <= warm[i].tS + TROUGH_S);
    troughs.push({ tS: warm[i].tS, rssMiB: Math.min(...after.map((p) => p.rssMiB)) });
  }
  const spanS = troughs.length ? troughs[troughs.length - 1].tS - troughs[0].tS : 0;
  const byTroughs = troughs.length >= 2 && spanS >= 60;
  const troughSlope = leastSquaresSlope(
    troughs.map((t) => t.tS / 60),
    troughs.map((t) => t.rssMiB),
  );
  return {
    ...floor,
    rssTroughs: troughs,
    rssTrendSlopeMiBPerMin: byTroughs ? round2(troughSlope) : floor.rssFloorSlopeMiBPerMin,
    rssTrendMethod: byTroughs ? 'post-collection troughs' : 'window minima',
  };
}

/** Windows of at least 10 s, eight over the steady phase when it is long enough. */
function rssFloor(
  steady: readonly ProcSample[],
  fromS: number,
  toS: number,
): Pick<Flatness, 'rssFloorSlopeMiBPerMin' | 'rssFloorWindowS'> {
  const windowS = Math.max(10, (toS - fromS) / 8);
  const xs: number[] = [];
  const ys: number[] = [];
  for (let lo = fromS; lo + windowS <= toS + 1e-9; lo += windowS) {
    const inside = steady.filter((p) => p.tS >= lo && p.tS < lo + windowS).map((p) => p.rssMiB);
    if (inside.length === 0) continue;
    xs.push((lo + windowS / 2) / 60);
    ys.push(Math.min(...inside));
  }
  return {
    rssFloorSlopeMiBPerMin: round2(leastSquaresSlope(xs, ys)),
    rssFloorWindowS: round2(windowS),
  };
}

/** CPU microseconds per delivered event over [fromS, mid] and [mid, toS] (see Flatness). */
function cpuPerEvent(
  r: LoadResult,
  fromS: number,
  toS: number,
): Pick<Flatness, 'cpuUsPerEventFirstHalf' | 'cpuUsPerEventSecondHalf' | 'cpuPerEventGrowth'> {
  const mid = (fromS + toS) / 2;
  const delivered = (t: number): number => {
    let best: ScrapeSample | undefined;
    for (const s of r.scrapes) if (!best || Math.abs(s.tS - t) < Math.abs(best.tS - t)) best = s;
    return best?.eventsDelivered ?? NaN;
  };
  // Each sample is the CPU of the second before its time.
  const cpuS = (lo: number, hi: number): number =>
    r.proc.filter((p) => p.tS > lo && p.tS <= hi).reduce((a, p) => a + p.cpuPct / 100, 0);
  const first = (1e6 * cpuS(fromS, mid)) / (delivered(mid) - delivered(fromS));
  const second = (1e6 * cpuS(mid, toS)) / (delivered(toS) - delivered(mid));
  return {
    cpuUsPerEventFirstHalf: round2(first),
    cpuUsPerEventSecondHalf: round2(second),
    cpuPerEventGrowth: round2(second / first - 1),
  };
}

function mean(v: readonly number[]): number {
  return v.length ? v.reduce((a, b) => a + b, 0) / v.length : NaN;
}

/** Every event and every packet accounted for (docs/metrics.md's self metrics). */
export interface Accounting {
  audioPackets: number;
  eventsDelivered: number;
  eventsLost: number;
  /** audio - delivered - lost after settling: 0 when every attempted event is accounted for. */
  unaccounted: number;
  /** The largest audio - delivered - lost during the run: events in the ring at that moment. */
  maxInFlight: number;
  /**
   * Scrapes where delivered + lost exceeded audio, and by how much at most. The agent reads the
   * kernel's counters before the ring-buffer thread's (native/addon.cc, stats()), so events that
   * pass through the ring between the two reads count as delivered but not yet as attempted: a
   * read-order race bounded by what the ring holds (ringEvents), not a counting error.
   */
  overcounted: number;
  maxOvercount: number;
  /** Events of the smallest (160-byte audio) size the ring buffer holds (PERF_BUFFER_SIZE). */
  ringEvents: number;
  lostFraction: number;
  /** Datagrams on the wire, from the pods' reports. */
  wire: {
    sent: number;
    relayReceived: number;
    relayForwarded: number;
    sinkReceived: number;
    relayRxOverflow: number;
    sinkRxOverflow: number;
    sinkSeqGaps: number;
  };
  /** The classifier's audio count must lie in [2 x delivered to sockets, 2 x sent]. */
  kernelAudioLow: number;
  kernelAudioHigh: number;
  /** Hop samples: measured, predicted (C, exact), the rough estimate. */
  hopSamples: number;
  hopPredicted: number;
  hopRough: number;
  hopRatio: number;
  /** The most hop samples the counted losses can explain (LOSS_WINDOWS per lost event or datagram). */
  hopExplainable: number;
  signaturesSender: number;
  signaturesRelay: number;
  transitSamples: number;
  flowsEvicted: number;
  correlatorEvictions: number;
  collisions: number;
  /** Events the classifier handled per second over the steady phase (both legs, both veths). */
  eventsPerSecond: number;
  /** Datagrams per second on the wire (both legs). */
  wirePacketsPerSecond: number;
  /** Share of one core spent in the classifier (kernel BPF statistics). */
  bpfCpuPct: number;
}

/**
 * Hop samples one counted loss can cost. A lost 160-byte event changes, at its observation point,
 * the windows that overlap it or whose anchor falls in the 64 bytes after it: anchors in a span
 * of 160 + 64 + 256 bytes, 1.875 windows on average. A hop sample needs a window missed at both
 * points of a leg (either sighting makes the occurrence), so the real cost is lower; a datagram
 * lost on the wire costs its 1.875 windows at every point. A shortfall beyond 2 per counted loss
 * is a loss nobody counted.
 */
export const LOSS_WINDOWS = 2;

const DEFAULT_RING_PAGES = 1024;
/** libbpf ring buffer record header, and the event header before the audio bytes. */
const RINGBUF_RECORD_HEADER = 8;
const AUDIO_EVENT_HEADER = 72;

/** Audio events (160 bytes of audio each) the ring buffer holds, from PERF_BUFFER_SIZE. */
export function ringEventsOf(r: LoadResult): number {
  const pages = Number(r.options.agentEnv.PERF_BUFFER_SIZE ?? DEFAULT_RING_PAGES);
  // The loader rounds the size up to a power of two.
  const bytes = 4096 * 2 ** Math.ceil(Math.log2(pages > 0 ? pages : DEFAULT_RING_PAGES));
  return Math.floor(bytes / (RINGBUF_RECORD_HEADER + AUDIO_EVENT_HEADER + PAYLOAD_BYTES));
}

export function accountFor(r: LoadResult, warmupFraction = 0.2): Accounting {
  const f = r.final;
  const num = (rep: Record<string, Json> | null, k: string): number => Number(rep?.[k] ?? 0);
  const send = r.reports.send;
  const relay = r.reports.relay;
  const sink = r.reports.sink;
  const wire = {
    sent: num(send, 'sent'),
    relayReceived: num(relay, 'received'),
    relayForwarded: num(relay, 'forwarded'),
    sinkReceived: num(sink, 'received'),
    relayRxOverflow: num(relay, 'rxOverflow'),
    sinkRxOverflow: num(sink, 'rxOverflow'),
    sinkSeqGaps: num(sink, 'seqGaps'),
  };
  // A datagram that reached a socket (or overflowed its buffer) crossed both watched veths; one
  // that was sent may still have been dropped before the first of them (veth backlog).
  const low =
    OBSERVATIONS_PER_PACKET *
    (wire.relayReceived + wire.relayRxOverflow + wire.sinkReceived + wire.sinkRxOverflow);
  const high = OBSERVATIONS_PER_PACKET * (wire.sent + wire.relayForwarded);
  // Every datagram generated (sent, or refused by the sender's own socket) that did not reach
  // the sink was lost somewhere on the way: its windows cannot pair.
  const wireDrops = wire.sent + num(send, 'dropped') - wire.sinkReceived;
  const predicted = r.prediction?.signatures ?? NaN;
  const steady = r.scrapes.filter((s) => s.tS >= warmupS(r, warmupFraction) && s.tS <= r.trafficS);
  const first = steady[0];
  const last = steady.at(-1);
  const span = first && last ? last.tS - first.tS : 0;
  const rate = (k: (s: ScrapeSample) => number): number =>
    first && last && span > 0 ? (k(last) - k(first)) / span : NaN;
  return {
    audioPackets: f.audioPackets,
    eventsDelivered: f.eventsDelivered,
    eventsLost: f.eventsLost,
    unaccounted: f.audioPackets - f.eventsDelivered - f.eventsLost,
    maxInFlight: Math.max(
      0,
      ...r.scrapes.map((s) => s.audioPackets - s.eventsDelivered - s.eventsLost),
    ),
    overcounted: r.scrapes.filter((s) => s.eventsDelivered + s.eventsLost > s.audioPackets).length,
    maxOvercount: Math.max(
      0,
      ...r.scrapes.map((s) => s.eventsDelivered + s.eventsLost - s.audioPackets),
    ),
    ringEvents: ringEventsOf(r),
    lostFraction: f.audioPackets > 0 ? f.eventsLost / f.audioPackets : 0,
    wire,
    kernelAudioLow: low,
    kernelAudioHigh: high,
    hopSamples: f.hopSamples,
    hopPredicted: predicted,
    hopRough: r.prediction?.rough ?? NaN,
    hopRatio: f.hopSamples / predicted,
    hopExplainable: LOSS_WINDOWS * (f.eventsLost + Math.max(0, wireDrops)),
    signaturesSender: f.signaturesSender,
    signaturesRelay: f.signaturesRelay,
    transitSamples: f.transitSamples,
    flowsEvicted: f.flowsEvicted,
    correlatorEvictions: f.correlatorEvictions,
    collisions: f.collisions,
    eventsPerSecond: round2(rate((s) => s.audioPackets)),
    wirePacketsPerSecond: round2(rate((s) => s.audioPackets) / OBSERVATIONS_PER_PACKET),
    bpfCpuPct: round2(100 * rate((s) => s.bpfRunTimeS)),
  };
}

/**
 * Where the agent saturates, from the per-thread CPU: the ring-buffer thread (C++ signature
 * engine) or the main thread (decode, correlate, record) near a full core while events are lost
 * is the stage that limits; a machine with no idle CPU limits everyone.
 */
export function diagnose(r: LoadResult, acc: Accounting, flat: Flatness): string {
  const busiest = flat.threads[0];
  const ring = flat.threads.find((t) => t.name === 'alt-ringbuf');
  const parts: string[] = [];
  const late = Number(r.reports.send?.lateOver5ms ?? 0);
  if (late > 0.01 * acc.wire.sent)
    parts.push(
      `the load generator fell behind: ${late} of ${acc.wire.sent} datagrams sent over 5 ms late ` +
        `(worst ${(Number(r.reports.send?.lateMaxUs ?? 0) / 1000).toFixed(0)} ms), relay queue peak ` +
        `${r.reports.relay?.maxQueued}: the machine did not carry this load`,
    );
  if (acc.eventsLost === 0) parts.push('no event lost: the agent kept up');
  else
    parts.push(
      `${acc.eventsLost} events lost (${(100 * acc.lostFraction).toFixed(3)}%), counted by ` +
        'audio_tracker_events_lost_total',
    );
  if (busiest)
    parts.push(`busiest thread ${busiest.name} ${busiest.meanPct}% (p95 ${busiest.p95Pct}%)`);
  if (ring && busiest && ring.name !== busiest.name) parts.push(`alt-ringbuf ${ring.meanPct}%`);
  if (acc.eventsLost > 0) {
    if (busiest && busiest.p95Pct >= 90)
      parts.push(
        `saturated stage: ${busiest.name === 'alt-ringbuf' ? 'the C++ ring-buffer thread (signature engine)' : `thread ${busiest.name} (JS: decode, correlate, record)`}`,
      );
    else if (flat.machineBusyMeanPct >= 90)
      parts.push(
        `the machine is saturated (${flat.machineBusyMeanPct}% busy): the agent's threads wait for CPU`,
      );
    else parts.push('no thread at a full core: losses come from bursts beyond the ring buffer');
  }
  parts.push(`machine busy ${flat.machineBusyMeanPct}%`);
  return parts.join('; ');
}

/** A human summary of a run. */
export function formatSummary(r: LoadResult, acc: Accounting, flat: Flatness): string {
  const pct = (x: number): string => `${(100 * x).toFixed(2)}%`;
  const gen = (rep: Record<string, Json> | null): string =>
    rep ? `user ${rep.cpuUserS} s sys ${rep.cpuSysS} s` : 'no report';
  const lines = [
    `load: ${r.options.streams} streams x ${r.trafficS} s, hold ${r.options.holdMs} ms, bulk ${r.bulk ? `${r.bulk.tool} ${r.bulk.mbps} Mbit/s` : 'off'}${r.aborted ? ' (stopped early)' : ''}${r.senderCut ? ` (sender cut at the wall clock after ${r.reports.send?.packetsPerStream} of ${r.options.durationS * PACKETS_PER_SECOND_PER_STREAM} packets per stream)` : ''}`,
    `  wire: sent ${acc.wire.sent}, relay in ${acc.wire.relayReceived} (+${acc.wire.relayRxOverflow} socket overflow) out ${acc.wire.relayForwarded}, sink ${acc.wire.sinkReceived} (+${acc.wire.sinkRxOverflow}), ${acc.wirePacketsPerSecond} datagrams/s steady`,
    `  classifier: ${acc.audioPackets} audio events (wire predicts ${acc.kernelAudioLow}..${acc.kernelAudioHigh}), ${acc.eventsPerSecond}/s steady, BPF ${acc.bpfCpuPct}% of a core`,
    `  accounting: delivered ${acc.eventsDelivered} + lost ${acc.eventsLost} = ${acc.eventsDelivered + acc.eventsLost}, unaccounted ${acc.unaccounted}, max in flight ${acc.maxInFlight}${acc.overcounted ? `; ${acc.overcounted} scrapes read delivered + lost above audio, by up to ${acc.maxOvercount} (read-order race, ring holds ${acc.ringEvents})` : ''}`,
    `  hop samples: ${acc.hopSamples} of ${acc.hopPredicted} predicted (${pct(acc.hopRatio)}; rough ${acc.hopRough}), p50 ${(r.hopP50S * 1000).toFixed(2)} ms p99 ${(r.hopP99S * 1000).toFixed(2)} ms; transit ${acc.transitSamples}; signatures sender ${acc.signaturesSender} relay ${acc.signaturesRelay}`,
    `  evictions: flows ${acc.flowsEvicted}, correlator ${acc.correlatorEvictions}; collisions ${acc.collisions}`,
    `  agent CPU (steady ${flat.fromS}-${flat.toS} s): mean ${flat.cpuMeanPct}% p95 ${flat.cpuP95Pct}% of a core, ${flat.cpuUsPerEventFirstHalf} then ${flat.cpuUsPerEventSecondHalf} us per event; threads ${flat.threads
      .slice(0, 5)
      .map((t) => `${t.name} ${t.meanPct}%`)
      .join(', ')}`,
    `  agent RSS: idle ${r.idleRssMiB}, steady start ${flat.rssStartMiB} end ${flat.rssEndMiB} max ${flat.rssMaxMiB} min ${flat.rssMinMiB} MiB; slope ${flat.rssSlopeMiBPerMin} MiB/min, floor slope ${flat.rssFloorSlopeMiBPerMin} MiB/min (${flat.rssFloorWindowS} s windows); trend ${flat.rssTrendSlopeMiBPerMin} MiB/min by ${flat.rssTrendMethod}${flat.rssTroughs.length ? ` (${flat.rssTroughs.map((t) => `${t.rssMiB}@${t.tS.toFixed(0)}s`).join(', ')})` : ''}`,
    `  generators: send ${gen(r.reports.send)} (${r.reports.send?.lateOver5ms} late > 5 ms, worst ${r.reports.send?.lateMaxUs} us), relay ${gen(r.reports.relay)} (queue peak ${r.reports.relay?.maxQueued}), sink ${gen(r.reports.sink)}; machine busy ${flat.machineBusyMeanPct}%`,
    `  verdict: ${diagnose(r, acc, flat)}`,
  ];
  return lines.join('\n');
}
