/**
 * A throw-away network of "pods" on this machine: one network namespace per pod, each with a veth
 * pair whose host side is enslaved to a bridge in the root namespace, the way a CNI wires pods on
 * a node. The agent attaches to the host-side veths (altv<id>*), exactly where it would on a node.
 *
 *   root namespace:  altbr<id> (bridge, no IP address)
 *                      |- altv<id>1 <-> eth0 10.213.<s>.2/24 in alt-<id>-<pod1>
 *                      |- altv<id>2 <-> eth0 10.213.<s>.3/24 in alt-<id>-<pod2> ...
 *
 * Nothing on the machine is touched: no address or route in the root namespace, no sysctl, no
 * existing interface. <id> is four digits, so `altv<id>*` never matches another lab's interfaces.
 * teardown() removes every namespace, veth and the bridge; it is synchronous so it also runs from
 * signal and exit handlers. cleanupStale() removes what a killed earlier run left behind.
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import {
  appendFileSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  rmSync,
  writeFileSync,
} from 'node:fs';
import { fileURLToPath } from 'node:url';
import type { Json } from './cli.js';

const NS_PREFIX = 'alt-';
const VETH_PREFIX = 'altv';
const BRIDGE_PREFIX = 'altbr';
const STATE_DIR = '/run/alt-lab';
const SUBNET_SECOND_OCTET = 213;

export interface Pod {
  name: string;
  index: number; // 1-based
  netns: string;
  ip: string;
  hostIf: string; // host side of the veth, on the bridge
}

export interface CmdResult {
  stdout: string;
  stderr: string;
}

/** Runs a command synchronously; throws with the command line and its stderr on failure. */
export function run(cmd: string, args: string[]): string {
  try {
    return execFileSync(cmd, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
  } catch (err) {
    const e = err as { status?: number; stderr?: string; message: string };
    const stderr = (e.stderr ?? '').trim();
    throw new Error(
      `lab: '${cmd} ${args.join(' ')}' failed (exit ${e.status}): ${stderr || e.message}`,
    );
  }
}

/** Like run() but never throws: for teardown, where the thing may already be gone. */
function tryRun(cmd: string, args: string[]): boolean {
  try {
    execFileSync(cmd, args, { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

export function isRoot(): boolean {
  return typeof process.getuid === 'function' && process.getuid() === 0;
}

function listNetns(): string[] {
  const out = tryOutput('ip', ['netns', 'list']);
  return out
    .split('\n')
    .map((l) => l.trim().split(/\s+/)[0])
    .filter((n) => n.length > 0);
}

function listLinks(): string[] {
  const out = tryOutput('ip', ['-o', 'link', 'show']);
  const names: string[] = [];
  for (const line of out.split('\n')) {
    // "12: altv10011@if2: <...>" -> altv10011
    const m = /^\d+:\s+([^:@\s]+)/.exec(line);
    if (m) names.push(m[1]);
  }
  return names;
}

function tryOutput(cmd: string, args: string[]): string {
  try {
    return execFileSync(cmd, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] });
  } catch {
    return '';
  }
}

function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
  // A killed process whose parent has not reaped it yet is a zombie: dead for our purposes.
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) !== 'Z';
  } catch {
    return false;
  }
}

function idString(id: number): string {
  return String(id).padStart(4, '0');
}

function ownerFile(id: string): string {
  return `${STATE_DIR}/${id}.pid`;
}

/**
 * A lab's state file: `owner <pid>` (the process that built it), then one `proc <pid> <start>`
 * per helper process started for it outside the namespaces (the agent, Prometheus) and one
 * `dir <path>` per temporary directory. A helper is identified by pid and start time, so a
 * recycled pid is never killed.
 */
interface LabState {
  owner?: number;
  procs: { pid: number; start: string }[];
  dirs: string[];
}

function readState(id: string): LabState {
  const state: LabState = { procs: [], dirs: [] };
  let text: string;
  try {
    text = readFileSync(ownerFile(id), 'utf8');
  } catch {
    return state;
  }
  for (const line of text.split('\n')) {
    const [kind, a, b] = line.trim().split(' ');
    if (kind === 'owner' || /^\d+$/.test(kind ?? ''))
      state.owner = Number(kind === 'owner' ? a : kind);
    else if (kind === 'proc' && a && b) state.procs.push({ pid: Number(a), start: b });
    else if (kind === 'dir' && a) state.dirs.push(line.trim().slice(4));
  }
  return state;
}

/** Start time of a process in clock ticks since boot (field 22 of /proc/<pid>/stat). */
function procStartTime(pid: number): string | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // The command name (field 2) may hold spaces and parentheses: split after the last ')'.
    return stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19];
  } catch {
    return undefined;
  }
}

/** Kills the helpers and removes the directories recorded for lab `id`. */
function removeTracked(id: string): void {
  const state = readState(id);
  for (const { pid, start } of state.procs) {
    if (procStartTime(pid) === start) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        // gone meanwhile
      }
    }
  }
  for (const dir of state.dirs) rmSync(dir, { recursive: true, force: true });
}

/** Kills every process still inside a namespace (a namespace with processes keeps its veth). */
function killNetnsPids(netns: string): void {
  for (const p of tryOutput('ip', ['netns', 'pids', netns]).split(/\s+/)) {
    const pid = Number(p);
    if (Number.isInteger(pid) && pid > 0) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        // already gone
      }
    }
  }
}

/** Removes the namespaces, veths and bridge of lab `id` (4 digits); whatever is there. */
function removeLabResources(id: string): number {
  let removed = 0;
  removeTracked(id);
  for (const ns of listNetns()) {
    if (ns.startsWith(`${NS_PREFIX}${id}-`)) {
      killNetnsPids(ns);
      if (tryRun('ip', ['netns', 'delete', ns])) removed++;
    }
  }
  // Deleting a namespace destroys its veth end and so the pair; delete host ends that survived
  // (a process was still holding the namespace) and the bridge.
  const vethRe = new RegExp(`^${VETH_PREFIX}${id}\\d+$`);
  for (const link of listLinks()) {
    if (vethRe.test(link) || link === `${BRIDGE_PREFIX}${id}`) {
      if (tryRun('ip', ['link', 'delete', link])) removed++;
    }
  }
  rmSync(ownerFile(id), { force: true });
  return removed;
}

/** Ids of lab resources present on the machine, from namespace, veth and bridge names. */
function presentLabIds(): Set<string> {
  const ids = new Set<string>();
  const nsRe = new RegExp(`^${NS_PREFIX}(\\d{4})-`);
  for (const ns of listNetns()) {
    const m = nsRe.exec(ns);
    if (m) ids.add(m[1]);
  }
  const linkRe = new RegExp(`^(?:${VETH_PREFIX}(\\d{4})\\d+|${BRIDGE_PREFIX}(\\d{4}))$`);
  for (const link of listLinks()) {
    const m = linkRe.exec(link);
    if (m) ids.add(m[1] ?? m[2]);
  }
  return ids;
}

function ownerAlive(id: string): boolean {
  const pid = readState(id).owner; // no owner file: nobody claims it
  return pid !== undefined && Number.isInteger(pid) && pid > 0 && pidAlive(pid);
}

/**
 * Removes labs left by runs that were killed before their teardown (their owner process is gone).
 * Labs of live processes, including concurrent test runs, are left alone. Returns how many
 * namespaces and links were removed.
 */
export function cleanupStale(): number {
  let removed = 0;
  for (const id of presentLabIds()) {
    if (!ownerAlive(id)) removed += removeLabResources(id);
  }
  try {
    for (const f of readdirSync(STATE_DIR)) {
      const id = f.replace(/\.pid$/, '');
      if (!ownerAlive(id)) {
        removeTracked(id);
        rmSync(ownerFile(id), { force: true });
      }
    }
  } catch {
    // no state dir yet
  }
  return removed;
}

const liveLabs = new Set<Lab>();
let handlersInstalled = false;

/**
 * Tears every live lab down on exit and on SIGINT/SIGTERM (then exits 130/143), so an interrupted
 * test or demo leaves nothing behind. Installed by Lab.create(); callers that handle SIGINT
 * themselves (the demo) can pass `signals: false`.
 */
function installExitHandlers(signals: boolean): void {
  if (handlersInstalled) return;
  handlersInstalled = true;
  process.on('exit', () => {
    for (const lab of liveLabs) lab.teardown();
  });
  if (!signals) return;
  for (const [sig, code] of [
    ['SIGINT', 130],
    ['SIGTERM', 143],
  ] as const) {
    process.once(sig, () => {
      process.stderr.write(`lab: ${sig}: tearing down\n`);
      for (const lab of liveLabs) lab.teardown();
      process.exit(code);
    });
  }
}

export interface LabOptions {
  pods: string[];
  /** Install SIGINT/SIGTERM handlers that tear down and exit (default true). */
  signalHandlers?: boolean;
}

export interface ProcessExit {
  code: number | null;
  signal: NodeJS.Signals | null;
  report: { [k: string]: Json } | null;
}

/** A lab process (sender, relay, sink) running inside a pod namespace. */
export class LabProcess {
  readonly ready: Promise<{ [k: string]: Json }>;
  readonly exited: Promise<ProcessExit>;
  private report: { [k: string]: Json } | null = null;
  private stderrText = '';
  private exitInfo: ProcessExit | null = null;

  constructor(
    readonly pod: Pod,
    readonly script: string,
    readonly child: ChildProcess,
  ) {
    let onReady: (v: { [k: string]: Json }) => void = () => {};
    let onNotReady: (e: Error) => void = () => {};
    this.ready = new Promise((resolve, reject) => {
      onReady = resolve;
      onNotReady = reject;
    });
    // A caller may never await ready (e.g. teardown after a failure): no unhandled rejection.
    this.ready.catch(() => {});
    let buf = '';
    child.stdout?.setEncoding('utf8');
    child.stdout?.on('data', (chunk: string) => {
      buf += chunk;
      let nl: number;
      while ((nl = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + 1);
        this.onLine(line, onReady);
      }
    });
    child.stderr?.setEncoding('utf8');
    child.stderr?.on('data', (chunk: string) => {
      this.stderrText = (this.stderrText + chunk).slice(-4000);
    });
    this.exited = new Promise((resolve) => {
      child.on('close', (code, signal) => {
        this.exitInfo = { code, signal, report: this.report };
        onNotReady(
          new Error(
            `${this.describe()} exited (code ${code}, signal ${signal}) before ready: ${this.stderrText.trim()}`,
          ),
        );
        resolve(this.exitInfo);
      });
    });
  }

  private onLine(line: string, onReady: (v: { [k: string]: Json }) => void): void {
    let msg: { [k: string]: Json };
    try {
      msg = JSON.parse(line) as { [k: string]: Json };
    } catch {
      return;
    }
    if (msg.event === 'ready') onReady(msg);
    else if (msg.event === 'report') this.report = msg;
  }

  describe(): string {
    return `${this.script} in ${this.pod.name}`;
  }

  get stderr(): string {
    return this.stderrText;
  }

  get running(): boolean {
    return this.exitInfo === null;
  }

  /** Sends `signal`, waits for the exit (SIGKILL after timeoutMs) and returns the report. */
  async stop(signal: NodeJS.Signals = 'SIGTERM', timeoutMs = 5000): Promise<ProcessExit> {
    if (this.exitInfo) return this.exitInfo;
    this.child.kill(signal);
    const timer = setTimeout(() => this.child.kill('SIGKILL'), timeoutMs);
    const res = await this.exited;
    clearTimeout(timer);
    return res;
  }
}

export class Lab {
  readonly id: string;
  readonly bridge: string;
  readonly subnet: string;
  readonly pods = new Map<string, Pod>();
  private readonly procs: LabProcess[] = [];
  private torn = false;

  private constructor(id: string, subnetThirdOctet: number) {
    this.id = id;
    this.bridge = `${BRIDGE_PREFIX}${id}`;
    this.subnet = `10.${SUBNET_SECOND_OCTET}.${subnetThirdOctet}.0/24`;
  }

  /** The interface glob that selects exactly this lab's host-side veths. */
  get interfaceGlob(): string {
    return `${VETH_PREFIX}${this.id}*`;
  }

  get hostInterfaces(): string[] {
    return [...this.pods.values()].map((p) => p.hostIf);
  }

  pod(name: string): Pod {
    const p = this.pods.get(name);
    if (!p) throw new Error(`lab ${this.id}: no pod named '${name}'`);
    return p;
  }

  /** Pod name for an IP address, for display. */
  podByIp(ip: string): Pod | undefined {
    for (const p of this.pods.values()) if (p.ip === ip) return p;
    return undefined;
  }

  /**
   * Builds a lab with one namespace per pod name. Requires root. On any failure everything
   * created so far is removed before the error propagates.
   */
  static create(opts: LabOptions): Lab {
    if (!isRoot()) {
      throw new Error('lab: needs root (network namespaces, veth pairs, a bridge); run as root');
    }
    if (opts.pods.length === 0 || opts.pods.length > 99) {
      throw new Error(`lab: between 1 and 99 pods, got ${opts.pods.length}`);
    }
    for (const name of opts.pods) {
      // Namespace names become mount points; keep them simple.
      if (!/^[a-z][a-z0-9]{0,15}$/.test(name)) throw new Error(`lab: bad pod name '${name}'`);
    }
    installExitHandlers(opts.signalHandlers ?? true);
    cleanupStale();
    const lab = Lab.reserve();
    liveLabs.add(lab);
    try {
      lab.build(opts.pods);
    } catch (err) {
      lab.teardown();
      throw err;
    }
    return lab;
  }

  /** Picks an id no lab uses whose subnet has no route here, and claims it with an owner file. */
  private static reserve(): Lab {
    const present = presentLabIds();
    const routes = tryOutput('ip', ['-4', 'route', 'show', 'table', 'all']);
    mkdirSync(STATE_DIR, { recursive: true });
    for (let i = 0; i < 9000; i++) {
      const n = 1000 + ((process.pid + i) % 9000);
      const id = idString(n);
      const third = n % 250;
      const prefix = `10.${SUBNET_SECOND_OCTET}.${third}.`;
      if (present.has(id) || routes.includes(prefix)) continue;
      try {
        // 'wx' fails if another process claimed the id first.
        writeFileSync(ownerFile(id), `owner ${process.pid}\n`, { flag: 'wx' });
      } catch {
        continue;
      }
      return new Lab(id, third);
    }
    throw new Error('lab: no free lab id / 10.213.x.0/24 subnet');
  }

  private build(podNames: string[]): void {
    run('ip', [
      'link',
      'add',
      this.bridge,
      'type',
      'bridge',
      'forward_delay',
      '0',
      'stp_state',
      '0',
    ]);
    // No IPv6 link-local address: the bridge stays silent (no router solicitations, no MLD).
    run('ip', ['link', 'set', 'dev', this.bridge, 'addrgenmode', 'none']);
    run('ip', ['link', 'set', 'dev', this.bridge, 'up']);
    const third = this.subnet.split('.')[2];
    podNames.forEach((name, i) => {
      const index = i + 1;
      const pod: Pod = {
        name,
        index,
        netns: `${NS_PREFIX}${this.id}-${name}`,
        ip: `10.${SUBNET_SECOND_OCTET}.${third}.${index + 1}`,
        hostIf: `${VETH_PREFIX}${this.id}${index}`,
      };
      this.pods.set(name, pod);
      run('ip', ['netns', 'add', pod.netns]);
      // The pod end is created inside the namespace directly: no eth0 ever exists here.
      run('ip', [
        'link',
        'add',
        pod.hostIf,
        'type',
        'veth',
        'peer',
        'name',
        'eth0',
        'netns',
        pod.netns,
      ]);
      run('ip', ['link', 'set', 'dev', pod.hostIf, 'addrgenmode', 'none']);
      run('ip', ['link', 'set', 'dev', pod.hostIf, 'master', this.bridge]);
      run('ip', ['link', 'set', 'dev', pod.hostIf, 'up']);
      run('ip', ['-n', pod.netns, 'link', 'set', 'dev', 'lo', 'up']);
      run('ip', ['-n', pod.netns, 'addr', 'add', `${pod.ip}/24`, 'dev', 'eth0']);
      run('ip', ['-n', pod.netns, 'link', 'set', 'dev', 'eth0', 'up']);
    });
  }

  /**
   * Starts `node dist/test/lab/<script>.js args...` inside the pod's namespace. The process is
   * node itself (ip netns exec execs it), so signals reach it directly.
   */
  spawn(podName: string, script: 'sender' | 'relay' | 'sink', args: string[]): LabProcess {
    const pod = this.pod(podName);
    const path = fileURLToPath(new URL(`./${script}.js`, import.meta.url));
    const child = spawn('ip', ['netns', 'exec', pod.netns, process.execPath, path, ...args], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    const proc = new LabProcess(pod, script, child);
    this.procs.push(proc);
    return proc;
  }

  /**
   * Records a helper process started for this lab outside its namespaces (the agent,
   * Prometheus): teardown, and cleanupStale() after a killed run, kill it if still running.
   */
  track(pid: number): void {
    const start = procStartTime(pid);
    if (start !== undefined) appendFileSync(ownerFile(this.id), `proc ${pid} ${start}\n`);
  }

  /** Records a temporary directory to remove with the lab (also after a killed run). */
  trackDir(path: string): void {
    if (/\s/.test(path)) throw new Error(`lab: temporary directory with whitespace: ${path}`);
    appendFileSync(ownerFile(this.id), `dir ${path}\n`);
  }

  /** Runs a command inside a pod's namespace and returns its stdout. */
  exec(podName: string, cmd: string, args: string[]): string {
    return run('ip', ['netns', 'exec', this.pod(podName).netns, cmd, ...args]);
  }

  /** Host interfaces of this lab that exist right now. */
  existingHostInterfaces(): string[] {
    const links = new Set(listLinks());
    return this.hostInterfaces.filter((i) => links.has(i));
  }

  /** Removes everything the lab created. Idempotent, synchronous, never throws. */
  teardown(): void {
    if (this.torn) return;
    this.torn = true;
    for (const p of this.procs) {
      if (p.running) p.child.kill('SIGKILL');
    }
    removeLabResources(this.id);
    liveLabs.delete(this);
  }
}
