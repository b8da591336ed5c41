/**
 * The TypeScript face of the native addon (native/): loads the TC classifier, attaches it to
 * interfaces, and delivers signature records in batches from the addon's ring-buffer thread.
 *
 * Thin by design: arguments are checked so C++ never sees garbage (the config module has already
 * validated their meaning), native failures become NativeError with one clear line for the
 * failures an operator can fix. The native class is injectable, so this logic is testable
 * without root.
 */
import { existsSync, readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { constants as osConstants } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { KERNEL_STAT_COUNT, PORT_MAP_WORDS } from './abi.js';

export type PortRange = { from: number; to: number }; // inclusive
export type SignatureAlgorithm = 'xxhash' | 'crc32' | 'rolling_hash';
/** 'auto': TCX where the kernel has it (6.6+), else clsact + tc filter. The others force one. */
export type AttachMode = 'auto' | 'tcx' | 'tc';
export type TestProgram = 'ingress' | 'egress' | 'empty';

export interface ClassifierOptions {
  bpfObjectPath?: string; // default: <repo>/bpf/audio_tc.bpf.o
  ringBufferPages: number; // PERF_BUFFER_SIZE, 4 KiB pages, rounded up to a power of two
  audioPorts: PortRange[] | 'all';
  algorithm: SignatureAlgorithm;
  windowSize: number;
  silenceThreshold: number;
  /** MAX_FLOWS: streams of the signature engine, and flows in the kernel's RTP and TCP state maps. */
  maxFlows: number;
  /** FLOW_TIMEOUT_MS: idle streams expire, in the signature engine and in the kernel's TCP state. */
  flowTimeoutMs: number;
  /** One call per batch: `count` packed sig_record; the view is valid only during the call. */
  onSignatures: (records: Uint8Array, count: number) => void;
  /** Raw kernel events: [u32 LE byteLength][event], each entry padded to 8 bytes (see splitRawEvents). */
  onRawEvents?: (buf: Uint8Array, count: number) => void;
  /**
   * Hold BPF_ENABLE_STATS for stats().progs (default true). While held, the kernel reads the clock
   * twice around every BPF program run on the machine; benchmarks turn it off.
   */
  runStats?: boolean;
}

export interface AttachResult {
  ifindex: number;
  name: string;
  mode: 'tcx' | 'tc';
}

export interface EngineStats {
  streamsActive: number;
  streamsCreated: number;
  streamsEvicted: number;
  streamsExpired: number;
  bytes: number;
  windows: number;
  windowsSilent: number;
  signatures: number;
  anchorsDropped: number;
}

export interface ClassifierStats {
  /** Summed over CPUs, indexed by KernelStat (src/abi.ts): KERNEL_STAT_COUNT, UDP and TCP. */
  kernel: number[];
  engine: EngineStats;
  /** batches: handed to onSignatures/onRawEvents; records: events consumed from the ring buffer. */
  ringbuf: { batches: number; records: number };
  /** BPF_ENABLE_STATS figures of tc_ingress + tc_egress (zero without CAP_SYS_ADMIN or runStats). */
  progs: { runTimeNs: number; runCount: number };
}

export interface TestRunResult {
  retval: number; // TC_ACT_UNSPEC is -1
  durationNs: number; // per run, averaged by the kernel over `repeat`
}

/** One entry of the kernel's tcp_flows map: raw struct aev_tcp_key / aev_tcp_flow bytes (abi.ts). */
export interface TcpFlowEntry {
  key: Uint8Array;
  value: Uint8Array;
}

/** What the addon exports; the default is loaded from native/build/Release/alt_native.node. */
export interface NativeBinding {
  Classifier: new (opts: NativeClassifierOptions) => NativeClassifier;
  tcHandle: number;
  tcPriority: number;
}

export interface NativeClassifierOptions {
  objectPath: string;
  ringPages: number;
  allPorts: boolean;
  portWords: BigUint64Array;
  runStats: boolean;
  algorithm: number;
  windowSize: number;
  silenceThreshold: number;
  maxFlows: number;
  flowTimeoutMs: number;
  onSignatures: (records: Uint8Array, count: number) => void;
  onRawEvents?: (buf: Uint8Array, count: number) => void;
}

export interface NativeClassifier {
  attach(name: string, mode: AttachMode): AttachResult;
  detach(name: string): void;
  attached(): AttachResult[];
  removeStale(name: string): number;
  stats(): ClassifierStats;
  testRun(prog: number, packet: Uint8Array, repeat: number): TestRunResult;
  tcpFlows(): TcpFlowEntry[];
  drain(): Promise<void>;
  close(): void;
}

const ALGORITHMS: Readonly<Record<SignatureAlgorithm, number>> = {
  xxhash: 0,
  crc32: 1,
  rolling_hash: 2,
};
const TEST_PROGRAMS: Readonly<Record<TestProgram, number>> = { ingress: 0, egress: 1, empty: 2 };
const MAX_PORT = 65535;
const U32_MAX = 0xffffffff;
const VMLINUX_BTF = '/sys/kernel/btf/vmlinux';

const ERRNO_NAMES: ReadonlyMap<number, string> = new Map(
  Object.entries(osConstants.errno).map(([name, value]) => [value, name]),
);

/**
 * A failed native operation. `errno` is negative, as in Node's own system errors (-1 for EPERM);
 * `detail` holds libbpf's output for the operation (the verifier log on a rejected load).
 */
export class NativeError extends Error {
  readonly op: string;
  readonly errno: number;
  readonly code: string;
  readonly detail: string;

  constructor(message: string, op: string, errno: number, detail = '') {
    super(message);
    this.name = 'NativeError';
    this.op = op;
    this.errno = errno;
    this.code = ERRNO_NAMES.get(Math.abs(errno)) ?? `E${Math.abs(errno)}`;
    this.detail = detail;
  }
}

/** The repository root: the nearest directory above this module holding package.json. */
function repoRoot(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  while (!existsSync(join(dir, 'package.json'))) {
    const up = dirname(dir);
    if (up === dir) throw new Error(`no package.json above ${fileURLToPath(import.meta.url)}`);
    dir = up;
  }
  return dir;
}

export function defaultBpfObjectPath(): string {
  return join(repoRoot(), 'bpf', 'audio_tc.bpf.o');
}

export function loadBinding(): NativeBinding {
  const path = join(repoRoot(), 'native', 'build', 'Release', 'alt_native.node');
  if (!existsSync(path)) {
    throw new Error(`native addon not built: ${path} is missing (run npm run build:native)`);
  }
  return createRequire(import.meta.url)(path) as NativeBinding;
}

/** One bit per port, bit (port & 63) of word (port >> 6), as the kernel's ports map. */
export function portBitmap(ports: readonly PortRange[]): BigUint64Array {
  const words = new BigUint64Array(PORT_MAP_WORDS);
  // The u64 words seen as u32 halves: on little-endian hosts bit p of the map is bit (p & 31) of
  // half (p >> 5), which avoids BigInt arithmetic per port.
  const halves = new Uint32Array(words.buffer);
  for (const { from, to } of ports) {
    if (!isPort(from) || !isPort(to) || from > to) {
      throw new RangeError(`audio port range ${from}-${to}: expected 0 <= from <= to <= 65535`);
    }
    for (let p = from; p <= to; p++) halves[p >>> 5] |= 1 << (p & 31);
  }
  return words;
}

/** Splits an onRawEvents buffer into copies of its events. */
export function splitRawEvents(buf: Uint8Array, count: number): Uint8Array[] {
  const view = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  const events: Uint8Array[] = [];
  let at = 0;
  for (let i = 0; i < count; i++) {
    const len = view.getUint32(at, true);
    events.push(buf.slice(at + 4, at + 4 + len));
    at += (4 + len + 7) & ~7;
  }
  return events;
}

function isPort(v: number): boolean {
  return Number.isInteger(v) && v >= 0 && v <= MAX_PORT;
}

function u32(name: string, v: number): number {
  if (!Number.isInteger(v) || v < 0 || v > U32_MAX) {
    throw new RangeError(`${name}: expected an integer 0..${U32_MAX}, got ${v}`);
  }
  return v;
}

function interfaceName(name: string): string {
  // IFNAMSIZ is 16 including the terminator.
  if (typeof name !== 'string' || name.length === 0 || name.length > 15) {
    throw new TypeError(`interface name: expected 1..15 characters, got ${JSON.stringify(name)}`);
  }
  return name;
}

interface RawNativeError {
  message: string;
  op: string;
  errno: number;
  detail?: string;
}

function isRawNativeError(e: unknown): e is RawNativeError {
  return (
    e instanceof Error &&
    typeof (e as Partial<RawNativeError>).op === 'string' &&
    typeof (e as Partial<RawNativeError>).errno === 'number'
  );
}

/** The one line an operator can act on, for the failures that have one. */
/** Capabilities the agent needs (bit numbers of CapEff), and what each one is for. */
const NEEDED_CAPS: ReadonlyArray<{ name: string; bit: number; why: string }> = [
  { name: 'CAP_BPF', bit: 39, why: 'load BPF programs and maps' },
  { name: 'CAP_PERFMON', bit: 38, why: 'let the verifier accept pointer arithmetic on packets' },
  { name: 'CAP_NET_ADMIN', bit: 12, why: 'attach to interfaces' },
];
const CAP_SYS_ADMIN_BIT = 21;

/** Effective capabilities of this process, from /proc/self/status (undefined if unreadable). */
function effectiveCaps(): bigint | undefined {
  try {
    const m = /^CapEff:\s*([0-9a-f]+)$/m.exec(readFileSync('/proc/self/status', 'utf8'));
    return m?.[1] !== undefined ? BigInt(`0x${m[1]}`) : undefined;
  } catch {
    return undefined;
  }
}

/** Which of the needed capabilities are missing, named, in one line. */
function missingCapabilities(op: string): string {
  const caps = effectiveCaps();
  const has = (bit: number): boolean => caps !== undefined && ((caps >> BigInt(bit)) & 1n) === 1n;
  const missing = caps === undefined ? NEEDED_CAPS : NEEDED_CAPS.filter((c) => !has(c.bit));
  const list = missing.length > 0 ? missing : NEEDED_CAPS;
  const names = list.map((c) => `${c.name} (${c.why})`).join(', ');
  const fallback = has(CAP_SYS_ADMIN_BIT) ? '' : '; on kernels before 5.8, CAP_SYS_ADMIN instead';
  return `${op}: operation not permitted: missing ${names}${fallback}`;
}

function explain(op: string, code: string, subject: string): string | undefined {
  const loading = op.startsWith('open') || op.startsWith('load');
  // EACCES from the verifier: an unprivileged load (no CAP_PERFMON / CAP_BPF).
  if (code === 'EPERM' || (loading && code === 'EACCES')) return missingCapabilities(op);
  if (loading && !existsSync(VMLINUX_BTF)) {
    return `${op}: the kernel has no BTF (${VMLINUX_BTF} is missing): it needs CONFIG_DEBUG_INFO_BTF=y`;
  }
  if (op.startsWith('open') && code === 'ENOENT') {
    return `${op}: BPF object not found: run npm run build:bpf`;
  }
  if (op.startsWith('find interface') && (code === 'ENODEV' || code === 'ENXIO')) {
    return `${op}: no such network interface`;
  }
  const tcPath = op.startsWith('create clsact') || op.startsWith('attach tc');
  if (tcPath && (code === 'EOPNOTSUPP' || code === 'EINVAL')) {
    return (
      `cannot attach to ${subject}: the kernel has neither TCX (6.6+) nor a usable clsact qdisc ` +
      `(CONFIG_NET_SCH_INGRESS, CONFIG_NET_CLS_BPF): ${op}: ${code}`
    );
  }
  return undefined;
}

/** Runs a native call, turning its failures into NativeError. */
function native<T>(subject: string, fn: () => T): T {
  try {
    return fn();
  } catch (e) {
    if (!isRawNativeError(e)) throw e;
    const code = ERRNO_NAMES.get(-e.errno) ?? `E${-e.errno}`;
    const detail = e.detail ?? '';
    const message =
      explain(e.op, code, subject) ?? (detail ? `${e.message}\n${detail.trimEnd()}` : e.message);
    throw new NativeError(message, e.op, e.errno, detail);
  }
}

function nativeOptions(opts: ClassifierOptions): NativeClassifierOptions {
  const algorithm = ALGORITHMS[opts.algorithm];
  if (algorithm === undefined) {
    throw new RangeError(
      `algorithm: expected xxhash, crc32 or rolling_hash, got ${opts.algorithm}`,
    );
  }
  if (typeof opts.onSignatures !== 'function')
    throw new TypeError('onSignatures: expected a function');
  const all = opts.audioPorts === 'all';
  const out: NativeClassifierOptions = {
    objectPath: opts.bpfObjectPath ?? defaultBpfObjectPath(),
    ringPages: u32('ringBufferPages', opts.ringBufferPages),
    allPorts: all,
    portWords: all
      ? new BigUint64Array(PORT_MAP_WORDS)
      : portBitmap(opts.audioPorts as PortRange[]),
    runStats: opts.runStats ?? true,
    algorithm,
    windowSize: u32('windowSize', opts.windowSize),
    silenceThreshold: u32('silenceThreshold', opts.silenceThreshold),
    maxFlows: u32('maxFlows', opts.maxFlows),
    flowTimeoutMs: u32('flowTimeoutMs', opts.flowTimeoutMs),
    onSignatures: opts.onSignatures,
  };
  if (out.ringPages === 0) throw new RangeError('ringBufferPages: expected at least 1');
  if (out.maxFlows === 0) throw new RangeError('maxFlows: expected at least 1');
  if (opts.onRawEvents) out.onRawEvents = opts.onRawEvents;
  return out;
}

export class Classifier {
  private constructor(private readonly handle: NativeClassifier) {}

  /** Loads and verifies the classifier, fills its maps and starts the ring-buffer thread. */
  static open(opts: ClassifierOptions, binding: NativeBinding = loadBinding()): Classifier {
    const nativeOpts = nativeOptions(opts);
    return new Classifier(native('classifier', () => new binding.Classifier(nativeOpts)));
  }

  /** Ingress and egress; idempotent. `mode` forces one mechanism (tests, old kernels). */
  attach(name: string, options: { mode?: AttachMode } = {}): AttachResult {
    const mode = options.mode ?? 'auto';
    if (mode !== 'auto' && mode !== 'tcx' && mode !== 'tc') {
      throw new RangeError(`attach mode: expected auto, tcx or tc, got ${String(mode)}`);
    }
    return native(name, () => this.handle.attach(interfaceName(name), mode));
  }

  /** Idempotent; tolerates the interface having vanished. */
  detach(name: string): void {
    native(name, () => this.handle.detach(interfaceName(name)));
  }

  attachedInterfaces(): AttachResult[] {
    return this.handle.attached();
  }

  /** Removes tc filters an earlier, crashed instance left on `name`; returns how many. */
  removeStale(name: string): number {
    return native(name, () => this.handle.removeStale(interfaceName(name)));
  }

  stats(): ClassifierStats {
    const s = native('stats', () => this.handle.stats());
    if (s.kernel.length !== KERNEL_STAT_COUNT) {
      throw new Error(
        `addon reports ${s.kernel.length} kernel stats, abi.ts knows ${KERNEL_STAT_COUNT}`,
      );
    }
    return s;
  }

  /** BPF_PROG_TEST_RUN; audio events go through the real ring-buffer path. */
  testRun(prog: TestProgram, packet: Uint8Array, repeat = 1): TestRunResult {
    const id = TEST_PROGRAMS[prog];
    if (id === undefined) throw new RangeError(`testRun: unknown program ${String(prog)}`);
    if (!(packet instanceof Uint8Array))
      throw new TypeError('testRun: packet must be a Uint8Array');
    if (repeat < 1) throw new RangeError('testRun: repeat must be at least 1');
    return native('testRun', () => this.handle.testRun(id, packet, u32('repeat', repeat)));
  }

  /** Every TCP stream state the kernel holds (walks the map: diagnostics and tests, not per packet). */
  tcpFlows(): TcpFlowEntry[] {
    return native('tcpFlows', () => this.handle.tcpFlows());
  }

  /** Resolves once every event submitted so far has been consumed, signed and delivered. */
  drain(): Promise<void> {
    return this.handle.drain();
  }

  /** Detaches everything, stops the ring-buffer thread, frees the BPF objects. Idempotent. */
  close(): void {
    this.handle.close();
  }
}
