/**
 * Agent configuration: environment variables -> a frozen, fully typed AgentConfig.
 *
 * convict maps variables to keys and runs validation, but every value goes
 * through a parser of our own (registered with convict.addFormat) because
 * convict's built-in coercions are lenient in ways that matter here: parseInt
 * turns "12abc" into 12 and Boolean turns "0" into true.
 *
 * Parsers never throw. A bad value becomes a rejection that is reported with
 * all the others in one ConfigError, one line per problem, naming the variable,
 * the (quoted, truncated, escaped) value and the accepted form. Values of
 * sensitive variables are never repeated.
 *
 * Defaults are written in each variable's own syntax and parsed by the same
 * parser, so the documented default and the effective default cannot drift.
 */

import convict from 'convict';
import { accessSync, constants as fsConstants, statSync } from 'node:fs';
import { resolve as resolvePath } from 'node:path';
import { isIP } from 'node:net';
import { formatAddress, parseAddress } from './endpoints.js';
import { checkIfnamePattern } from './interface-watcher.js';
import { type LogLevel, LOG_LEVELS, quoteForDisplay } from './log.js';

export type Env = Readonly<Record<string, string | undefined>>;

export type SignatureAlgorithm = 'xxhash' | 'crc32' | 'rolling_hash';
export type ContainerRuntime = 'auto' | 'docker' | 'containerd' | 'crio';
export type PodSource = 'auto' | 'kubelet' | 'apiserver';
/** How an endpoint that is not a known pod is named: `external`, or its IP address. */
export type ExternalLabel = 'external' | 'ip';
export type OtlpCompression = 'gzip' | 'none';
export type TemporalityPreference = 'cumulative' | 'delta' | 'lowmemory';
export type HistogramAggregation =
  | 'explicit_bucket_histogram'
  | 'base2_exponential_bucket_histogram';

export interface PortRange {
  readonly from: number;
  readonly to: number;
}

export interface OtlpConfig {
  /** True when OTEL_EXPORTER_OTLP_METRICS_ENDPOINT or OTEL_EXPORTER_OTLP_ENDPOINT is set. */
  readonly enabled: boolean;
  /** Effective endpoint (the metrics-specific one wins), `http(s)://host[:port]`; null when disabled. */
  readonly endpoint: string | null;
  /** Plaintext gRPC: true exactly when the endpoint is http://. */
  readonly insecure: boolean;
  /** General headers merged with the metrics-specific ones (those win); keys lower-cased. SECRET. */
  readonly headers: Readonly<Record<string, string>>;
  readonly compression: OtlpCompression;
  /** Absolute paths of readable PEM files, or null. */
  readonly certificatePath: string | null;
  readonly clientKeyPath: string | null;
  readonly clientCertificatePath: string | null;
  readonly timeoutMs: number;
  readonly exportIntervalMs: number;
  /** Never above exportIntervalMs (clamped when not set explicitly, as the SDK does). */
  readonly exportTimeoutMs: number;
  readonly temporality: TemporalityPreference;
  readonly histogramAggregation: HistogramAggregation;
  /** Resource attributes; they apply to the Prometheus target_info as much as to OTLP. */
  readonly serviceName: string;
  readonly resourceAttributes: Readonly<Record<string, string>>;
}

export interface K8sConfig {
  readonly enabled: boolean;
  readonly nodeName: string | null;
  readonly podSource: PodSource;
  /** NODE_IP, canonical text; null when unset. */
  readonly nodeIp: string | null;
  /** K8S_KUBELET_URL, else https://$NODE_IP:10250; null: no kubelet source. */
  readonly kubeletUrl: string | null;
  readonly kubeletInsecure: boolean;
  /** Null: the service-account ca.crt. */
  readonly kubeletCaFile: string | null;
  /** Null: the service-account token. */
  readonly tokenFile: string | null;
  readonly kubeletPollIntervalMs: number;
  readonly podCacheSize: number;
}

/** Cardinality policy of the pod label values (source_pod, dest_pod, pod). */
export interface LabelConfig {
  readonly external: ExternalLabel;
  /** Distinct label values at most; the rest are folded into `other`. */
  readonly maxValues: number;
  /** A deleted pod's series are exported for this long, then dropped. */
  readonly seriesTtlMs: number;
}

export interface AgentConfig {
  readonly interfaces: readonly string[];
  readonly logLevel: LogLevel;
  readonly metricsPort: number;
  readonly audioPorts: readonly PortRange[] | 'all';
  readonly signatureWindowSize: number;
  readonly silenceThreshold: number;
  readonly signatureAlgorithm: SignatureAlgorithm;
  readonly k8s: K8sConfig;
  readonly labels: LabelConfig;
  readonly containerRuntime: ContainerRuntime;
  readonly maxFlows: number;
  readonly flowTimeoutMs: number;
  /** Ring buffer size in 4 KiB pages (the loader rounds it up to a power of two). */
  readonly perfBufferPages: number;
  readonly maxPendingSignatures: number;
  /** Histogram bucket upper bounds in seconds, strictly increasing. */
  readonly latencyBuckets: readonly number[];
  readonly sampleLog: { readonly enabled: boolean; readonly ratePerSecond: number };
  readonly otlp: OtlpConfig;
}

export class ConfigError extends Error {
  /** One entry per problem; `message` is these joined by newlines. */
  readonly problems: readonly string[];

  constructor(problems: readonly string[]) {
    super(problems.join('\n'));
    this.name = 'ConfigError';
    this.problems = Object.freeze([...problems]);
  }
}

// ---------------------------------------------------------------------------
// Parsers: raw string -> value | Rejection. Reasons never quote the value.

class Rejection {
  constructor(
    readonly reason: string | null,
    /** Set when the value itself may hold a secret (e.g. credentials in a URL). */
    readonly hideValue = false,
  ) {}
}

const reject = (reason?: string, hideValue = false): Rejection =>
  new Rejection(reason ?? null, hideValue);

type Parser<T> = (raw: string) => T | Rejection;

const DECIMAL_INT = /^(0|[1-9][0-9]{0,15})$/;
const CONTROL_CHARS = /[\u0000-\u001f\u007f-\u009f]/;
/**
 * Control characters, and the invisible and bidirectional formatting characters (and lone
 * surrogates) that make text read differently from what it is: a forged log line, a reversed
 * name (Trojan Source), or a value the OTLP protobuf encoder cannot carry as UTF-8.
 */
const UNSAFE_TEXT =
  /[\u0000-\u001f\u007f-\u009f\u200b-\u200f\u2028-\u202e\u2066-\u2069\ufeff]|[\ud800-\udfff]/u;

function intParser(min: number, max: number): Parser<number> {
  return (raw) => {
    if (!DECIMAL_INT.test(raw)) return reject();
    const value = Number(raw);
    return value >= min && value <= max ? value : reject();
  };
}

const intExpected = (min: number, max: number): string => `an integer from ${min} to ${max}`;

const BOOLEAN_WORDS: Readonly<Record<string, boolean>> = {
  true: true,
  false: false,
  '1': true,
  '0': false,
  yes: true,
  no: false,
};
const BOOLEAN_EXPECTED = 'one of true, false, 1, 0, yes, no (case-insensitive)';

const parseBoolean: Parser<boolean> = (raw) => {
  const value = Object.hasOwn(BOOLEAN_WORDS, raw.toLowerCase())
    ? BOOLEAN_WORDS[raw.toLowerCase()]
    : undefined;
  return value === undefined ? reject() : value;
};

function enumParser<T extends string>(values: readonly T[], caseInsensitive: boolean): Parser<T> {
  return (raw) => {
    const candidate = caseInsensitive ? raw.toLowerCase() : raw;
    return (values as readonly string[]).includes(candidate) ? (candidate as T) : reject();
  };
}

const enumExpected = (values: readonly string[], caseInsensitive: boolean): string =>
  `one of ${values.join(', ')}${caseInsensitive ? ' (case-insensitive)' : ''}`;

function nullable<T>(parse: Parser<T>): Parser<T | null> {
  return (raw) => (raw === '' ? null : parse(raw));
}

/** Splits a comma list; an empty item is an error (usually a stray or trailing comma). */
function splitList(raw: string): string[] | Rejection {
  const items = raw.split(',');
  const empty = items.findIndex((item) => item === '');
  return empty >= 0 ? reject(`item ${empty + 1} is empty`) : items;
}

const parseInterfaces: Parser<readonly string[]> = (raw) => {
  const items = splitList(raw);
  if (items instanceof Rejection) return items;
  for (const [i, item] of items.entries()) {
    const problem = checkIfnamePattern(item);
    if (problem !== null) return reject(`item ${i + 1} ${problem}`);
  }
  return [...new Set(items)];
};

const PORT_ITEM = /^(0|[1-9][0-9]{0,5})(?:-(0|[1-9][0-9]{0,5}))?$/;

const parseAudioPorts: Parser<readonly PortRange[] | 'all'> = (raw) => {
  if (raw === '' || raw.toLowerCase() === 'all') return 'all';
  const items = splitList(raw);
  if (items instanceof Rejection) return items;
  const ranges: PortRange[] = [];
  for (const [i, item] of items.entries()) {
    const m = PORT_ITEM.exec(item);
    if (m === null) return reject(`item ${i + 1} is not a port or a from-to range`);
    const from = Number(m[1]);
    const to = m[2] === undefined ? from : Number(m[2]);
    if (from < 1 || to > 65535) return reject(`item ${i + 1} is outside 1-65535`);
    if (from > to) return reject(`item ${i + 1} is a range whose start exceeds its end`);
    ranges.push({ from, to });
  }
  return mergeRanges(ranges);
};

/** Sorted, with overlapping and adjacent ranges merged: one canonical form for the port map. */
function mergeRanges(ranges: readonly PortRange[]): PortRange[] {
  const sorted = [...ranges].sort((a, b) => a.from - b.from);
  const merged: { from: number; to: number }[] = [];
  for (const r of sorted) {
    const last = merged.at(-1);
    if (last !== undefined && r.from <= last.to + 1) last.to = Math.max(last.to, r.to);
    else merged.push({ from: r.from, to: r.to });
  }
  return merged;
}

const BUCKET_ITEM = /^(0|[1-9][0-9]{0,8})(\.[0-9]{1,12})?$/;
const MAX_BUCKETS = 100;

const parseBuckets: Parser<readonly number[]> = (raw) => {
  const items = splitList(raw);
  if (items instanceof Rejection) return items;
  if (items.length > MAX_BUCKETS) return reject(`more than ${MAX_BUCKETS} buckets`);
  const bounds: number[] = [];
  for (const [i, item] of items.entries()) {
    if (!BUCKET_ITEM.test(item)) {
      // A decimal number that is merely too long gets its own reason, not "not a number".
      return reject(
        /^[0-9]+(\.[0-9]+)?$/.test(item)
          ? `item ${i + 1} has more than 9 integer or 12 fractional digits`
          : `item ${i + 1} is not a decimal number`,
      );
    }
    const value = Number(item);
    if (!(value > 0)) return reject(`item ${i + 1} is not positive`);
    const previous = bounds.at(-1);
    if (previous !== undefined && value <= previous) {
      return reject(`item ${i + 1} is not greater than the item before it`);
    }
    bounds.push(value);
  }
  return bounds;
};

const DNS1123_SUBDOMAIN = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;

const parseNodeName: Parser<string | null> = nullable((raw) =>
  raw.length <= 253 && DNS1123_SUBDOMAIN.test(raw) ? raw : reject(),
);

const parseIp: Parser<string | null> = nullable((raw) => {
  if (raw.length > 45 || isIP(raw) === 0) return reject();
  // The canonical form, so the kubelet URL and logs show one spelling of the address.
  const parsed = parseAddress(raw);
  return formatAddress(parsed.family, parsed.bytes, 0);
});

/** The kubelet's base URL: scheme and authority only (the agent appends /pods). */
const parseKubeletUrl: Parser<string | null> = nullable((raw) => {
  const secretish = raw.includes('@');
  if (/\s/.test(raw) || UNSAFE_TEXT.test(raw)) {
    return reject('contains whitespace or control characters', secretish);
  }
  if (!/^https?:\/\//i.test(raw))
    return reject('does not start with http:// or https://', secretish);
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    return reject('is not a valid URL', secretish);
  }
  if (url.username !== '' || url.password !== '' || secretish) {
    return reject('must not contain credentials (the token comes from K8S_TOKEN_FILE)', true);
  }
  const hostProblem = checkHost(url);
  if (hostProblem !== null) return reject(hostProblem);
  if ((url.pathname !== '' && url.pathname !== '/') || url.search !== '' || url.hash !== '') {
    return reject('must not have a path, query or fragment');
  }
  return `${url.protocol}//${url.host}`;
});

/** gRPC endpoints are a scheme and an authority; a path would be silently ignored. */
const parseEndpoint: Parser<string | null> = nullable((raw) => {
  // An '@' may be the start of user:password; never echo such a value.
  const secretish = raw.includes('@');
  if (/\s/.test(raw) || UNSAFE_TEXT.test(raw)) {
    return reject('contains whitespace or control characters', secretish);
  }
  const scheme = /^(https?):\/\//i.exec(raw);
  if (scheme === null) return reject('does not start with http:// or https://', secretish);
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    return reject('is not a valid URL', secretish);
  }
  if (url.username !== '' || url.password !== '' || secretish) {
    return reject('must not contain credentials (use OTEL_EXPORTER_OTLP_HEADERS)', true);
  }
  const hostProblem = checkHost(url);
  if (hostProblem !== null) return reject(hostProblem);
  if ((url.pathname !== '' && url.pathname !== '/') || url.search !== '' || url.hash !== '') {
    return reject('must not have a path, query or fragment (gRPC endpoints are host[:port])');
  }
  // The host as URL parsed it (the one validated: `0x7f.1` is 127.0.0.1, `%41` is `a`), so gRPC
  // connects where the check says; an explicit port is kept even when it is the default one.
  const explicitPort = /:([0-9]+)$/.exec(raw.slice(scheme[0].length).replace(/\/$/, ''));
  const port = explicitPort === null ? '' : `:${Number(explicitPort[1])}`;
  return `${scheme[1].toLowerCase()}://${url.hostname}${port}`;
});

const DNS_LABEL = /^[a-z0-9_]([-a-z0-9_]{0,61}[a-z0-9_])?$/;

/** Why the host (and port) of a parsed http(s) URL cannot be connected to, or null. */
function checkHost(url: URL): string | null {
  const host = url.hostname;
  if (host === '') return 'has no host';
  if (url.port === '0') return 'has port 0';
  // IPv6 literals (in brackets) and IPv4 addresses were validated by URL itself.
  if (host.startsWith('[') || isIP(host) === 4) return null;
  const name = host.endsWith('.') ? host.slice(0, -1) : host;
  if (name.length > 253) return 'has a host name longer than 253 characters';
  if (!name.split('.').every((label) => DNS_LABEL.test(label))) {
    return 'has a host that is neither a DNS name nor an IP address';
  }
  return null;
}

const HEADER_KEY = /^[A-Za-z0-9_.-]+$/;
const HEADER_VALUE = /^[\u0020-\u007e]*$/;

/**
 * Key/value lists are parsed to pairs, not objects: convict deep-clones values
 * with an old lodash.clonedeep that silently drops a "__proto__" key.
 */
type Pairs = readonly (readonly [string, string])[];

/** W3C-baggage-like `k=v,k2=v2`, percent-decoded; keys and values as gRPC metadata accepts them. */
const parseHeaders: Parser<Pairs | null> = nullable((raw) => {
  const entries = new Map<string, string>();
  for (const [i, entry] of raw.split(',').entries()) {
    const n = i + 1;
    const trimmed = entry.trim();
    if (trimmed === '') return reject(`entry ${n} is empty`);
    const eq = trimmed.indexOf('=');
    if (eq < 0) return reject(`entry ${n} has no "="`);
    const key = trimmed.slice(0, eq).trim().toLowerCase();
    if (key === '') return reject(`entry ${n} has an empty key`);
    if (!HEADER_KEY.test(key)) {
      return reject(
        `entry ${n} has a key with characters other than letters, digits, "-", "_", "."`,
      );
    }
    if (key.endsWith('-bin')) return reject(`entry ${n} has a binary ("-bin") key`);
    const value = percentDecode(trimmed.slice(eq + 1).trim());
    if (value === null) return reject(`entry ${n} has invalid percent-encoding`);
    if (value === '') return reject(`entry ${n} has an empty value`);
    if (!HEADER_VALUE.test(value)) {
      return reject(`entry ${n} has a value with characters other than printable ASCII`);
    }
    if (entries.has(key)) return reject(`entry ${n} repeats an earlier key`);
    entries.set(key, value);
  }
  return [...entries];
});

const MAX_ATTRIBUTE_LENGTH = 255;

/** OTEL_RESOURCE_ATTRIBUTES as the OTel SDK reads it, but rejected loudly instead of dropped. */
const parseResourceAttributes: Parser<Pairs> = (raw) => {
  const entries = new Map<string, string>();
  for (const [i, entry] of raw.split(',').entries()) {
    const n = i + 1;
    if (entry.trim() === '') continue;
    const parts = entry.split('=');
    if (parts.length !== 2)
      return reject(`entry ${n} is not key=value ("," and "=" must be %-encoded)`);
    const key = percentDecode(parts[0].trim());
    const value = percentDecode(parts[1].trim());
    if (key === null || value === null) return reject(`entry ${n} has invalid percent-encoding`);
    if (key === '') return reject(`entry ${n} has an empty key`);
    if (key.length > MAX_ATTRIBUTE_LENGTH || value.length > MAX_ATTRIBUTE_LENGTH) {
      return reject(`entry ${n} is longer than ${MAX_ATTRIBUTE_LENGTH} characters`);
    }
    if (UNSAFE_TEXT.test(key) || UNSAFE_TEXT.test(value)) {
      return reject(`entry ${n} contains control characters`);
    }
    if (entries.has(key)) return reject(`entry ${n} repeats an earlier key`);
    entries.set(key, value);
  }
  return [...entries];
};

function percentDecode(text: string): string | null {
  try {
    return decodeURIComponent(text);
  } catch {
    return null;
  }
}

const parseServiceName: Parser<string> = (raw) =>
  raw.length <= MAX_ATTRIBUTE_LENGTH && !UNSAFE_TEXT.test(raw) ? raw : reject();

/** A PEM file the agent must be able to read when it connects, checked now rather than then. */
const parseReadableFile: Parser<string | null> = nullable((raw) => {
  if (CONTROL_CHARS.test(raw)) return reject('contains control characters');
  const path = resolvePath(process.cwd(), raw);
  try {
    if (!statSync(path).isFile()) return reject('is not a regular file');
    accessSync(path, fsConstants.R_OK);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code ?? 'error';
    return reject(`cannot be read (${code})`);
  }
  return path;
});

// ---------------------------------------------------------------------------
// The variables

interface VarSpec<T> {
  readonly env: string;
  /** The default in the variable's own syntax; '' means unset. */
  readonly default: string;
  /** The default as documented, when it is not simply `default`. */
  readonly defaultDoc?: string;
  readonly defaultFromEnv?: (env: Env) => string;
  /** The accepted form, completing "expected ...". */
  readonly expected: string;
  readonly doc: string;
  readonly sensitive?: boolean;
  /** OpenTelemetry rule: an empty value means the same as an unset one. */
  readonly blankIsUnset?: boolean;
  readonly parse: Parser<T>;
}

const spec = <T>(s: VarSpec<T>): VarSpec<T> => s;

const LOG_LEVEL_VALUES: readonly LogLevel[] = LOG_LEVELS;
const ALGORITHMS: readonly SignatureAlgorithm[] = ['xxhash', 'crc32', 'rolling_hash'];
const RUNTIMES: readonly ContainerRuntime[] = ['auto', 'docker', 'containerd', 'crio'];
const POD_SOURCES: readonly PodSource[] = ['auto', 'kubelet', 'apiserver'];
const EXTERNAL_LABELS: readonly ExternalLabel[] = ['external', 'ip'];
const SA_DIR = '/var/run/secrets/kubernetes.io/serviceaccount';
const READABLE_EXPECTED = 'the path of a readable file';
const COMPRESSIONS: readonly OtlpCompression[] = ['gzip', 'none'];
const TEMPORALITIES: readonly TemporalityPreference[] = ['cumulative', 'delta', 'lowmemory'];
const HISTOGRAMS: readonly HistogramAggregation[] = [
  'explicit_bucket_histogram',
  'base2_exponential_bucket_histogram',
];

const DEFAULT_BUCKETS = '0.0005,0.001,0.0025,0.005,0.01,0.025,0.05,0.1,0.25,0.5,1,2.5,5,10,30';
const OTLP_TIMEOUT_DEFAULT_MS = 10_000;
const ENDPOINT_EXPECTED = 'an http:// or https:// URL with host[:port] and no path';
const HEADERS_EXPECTED =
  'comma-separated key=value pairs (values %-encoded as in W3C Baggage; printable ASCII)';
const FILE_EXPECTED = 'the path of a readable file (PEM)';

const SPECS = {
  interfaces: spec<readonly string[]>({
    env: 'INTERFACE',
    default: 'eth0',
    expected:
      'comma-separated interface names or glob patterns (* ? [abc] [a-z] [!x]), each 1 to 15 characters from letters, digits, "_", ".", "-"',
    doc: 'Interfaces to attach the classifier to; patterns are re-evaluated every second, so pod veths (e.g. `veth*`, `cali*`, `lxc*`) are followed as they come and go.',
    parse: parseInterfaces,
  }),
  logLevel: spec<LogLevel>({
    env: 'LOG_LEVEL',
    default: 'info',
    expected: enumExpected(LOG_LEVEL_VALUES, true),
    doc: 'Lowest level written to the JSON log on stdout.',
    parse: enumParser(LOG_LEVEL_VALUES, true),
  }),
  metricsPort: spec<number>({
    env: 'METRICS_PORT',
    default: '9090',
    expected: intExpected(1, 65535),
    doc: 'TCP port of the HTTP server with the Prometheus scrape endpoint (`/metrics`).',
    parse: intParser(1, 65535),
  }),
  audioPorts: spec<readonly PortRange[] | 'all'>({
    env: 'AUDIO_PORTS',
    default: 'all',
    expected:
      '`all`, empty, or comma-separated ports and inclusive ranges from 1 to 65535 (e.g. 5004,10000-20000)',
    doc: 'UDP and TCP ports whose packets are inspected for audio (either source or destination port); packets on other ports leave the classifier before any payload is read. `all` inspects every UDP and TCP packet (encrypted and bulk TCP streams are still recognised and skipped early).',
    parse: parseAudioPorts,
  }),
  signatureWindowSize: spec<number>({
    env: 'SIGNATURE_WINDOW_SIZE',
    default: '256',
    expected: intExpected(32, 4096),
    doc: 'Length in bytes of the audio window one content signature covers; also sets the anchor density (see docs/signatures.md). Every agent that is to pair samples must use the same value.',
    parse: intParser(32, 4096),
  }),
  silenceThreshold: spec<number>({
    env: 'SILENCE_THRESHOLD',
    default: '256',
    expected: intExpected(0, 32767),
    doc: 'Windows whose RMS level (16-bit linear sample units) is below this are treated as silence and get no signature: silence is alike everywhere and would pair wrongly. 0 turns off the level check (constant or near-constant windows stay silent).',
    parse: intParser(0, 32767),
  }),
  signatureAlgorithm: spec<SignatureAlgorithm>({
    env: 'SIGNATURE_ALGORITHM',
    default: 'xxhash',
    expected: enumExpected(ALGORITHMS, false),
    doc: 'Hash of the window bytes (see docs/signatures.md); must be the same on every agent. `crc32` is cheaper but its 32 bits collide sooner.',
    parse: enumParser(ALGORITHMS, false),
  }),
  k8sEnabled: spec<boolean>({
    env: 'K8S_ENABLED',
    default: 'false',
    defaultDoc: '`true` when `KUBERNETES_SERVICE_HOST` is set, else `false`',
    defaultFromEnv: (env) =>
      env.KUBERNETES_SERVICE_HOST !== undefined && env.KUBERNETES_SERVICE_HOST !== ''
        ? 'true'
        : 'false',
    expected: BOOLEAN_EXPECTED,
    doc: 'Resolve IP addresses to pods through the Kubernetes API (pods on this node).',
    parse: parseBoolean,
  }),
  k8sNodeName: spec<string | null>({
    env: 'K8S_NODE_NAME',
    default: '',
    defaultDoc: '(unset)',
    expected: 'a DNS-1123 subdomain (lower-case letters, digits, "-" and ".", at most 253)',
    doc: 'Name of the node the agent runs on; required when K8S_ENABLED is true. Set it from the downward API (`fieldRef: spec.nodeName`).',
    parse: parseNodeName,
  }),
  k8sPodSource: spec<PodSource>({
    env: 'K8S_POD_SOURCE',
    default: 'auto',
    expected: enumExpected(POD_SOURCES, false),
    doc: 'Where pod metadata comes from: `auto` asks the local kubelet and falls back to the API server while the kubelet fails; `kubelet` or `apiserver` use only that one (see docs/kubernetes-pods.md).',
    parse: enumParser(POD_SOURCES, false),
  }),
  k8sKubeletUrl: spec<string | null>({
    env: 'K8S_KUBELET_URL',
    default: '',
    defaultDoc: '`https://$NODE_IP:10250` (none without NODE_IP)',
    expected: 'an http:// or https:// URL with host[:port] and no path (IPv6 in brackets)',
    doc: 'Base URL of the local kubelet (the agent reads `/pods`). Without it and without NODE_IP the kubelet is not asked and only the API server is used.',
    parse: parseKubeletUrl,
  }),
  nodeIp: spec<string | null>({
    env: 'NODE_IP',
    default: '',
    defaultDoc: '(unset)',
    expected: 'an IPv4 or IPv6 address',
    doc: "The node's IP, from the downward API (`fieldRef: status.hostIP`); makes the default K8S_KUBELET_URL.",
    parse: parseIp,
  }),
  k8sKubeletInsecure: spec<boolean>({
    env: 'K8S_KUBELET_INSECURE',
    default: 'false',
    expected: BOOLEAN_EXPECTED,
    doc: "Skip verification of the kubelet's serving certificate (most kubelets use a self-signed one); the token still authenticates the agent.",
    parse: parseBoolean,
  }),
  k8sKubeletCaFile: spec<string | null>({
    env: 'K8S_KUBELET_CA_FILE',
    default: '',
    defaultDoc: `\`${SA_DIR}/ca.crt\``,
    expected: READABLE_EXPECTED + ' (PEM)',
    doc: "CA bundle that verifies the kubelet's certificate (works when kubelet certificates are issued by the cluster CA).",
    parse: parseReadableFile,
  }),
  k8sTokenFile: spec<string | null>({
    env: 'K8S_TOKEN_FILE',
    default: '',
    defaultDoc: `\`${SA_DIR}/token\``,
    expected: READABLE_EXPECTED,
    doc: 'Bearer token sent to the kubelet; read again before every request (projected tokens rotate).',
    parse: parseReadableFile,
  }),
  k8sKubeletPollIntervalMs: spec<number>({
    env: 'K8S_KUBELET_POLL_INTERVAL_MS',
    default: '2000',
    expected: intExpected(200, 60_000),
    doc: 'Delay between two kubelet pod lists (the kubelet has no watch); a reused pod IP is noticed within this delay.',
    parse: intParser(200, 60_000),
  }),
  k8sPodCacheSize: spec<number>({
    env: 'K8S_POD_CACHE_SIZE',
    default: '4096',
    expected: intExpected(16, 65_536),
    doc: "Most pods the agent keeps metadata for (this node's pods); finished pods are dropped first when full.",
    parse: intParser(16, 65_536),
  }),
  labelExternal: spec<ExternalLabel>({
    env: 'K8S_LABEL_EXTERNAL',
    default: 'external',
    expected: enumExpected(EXTERNAL_LABELS, false),
    doc: 'Label of an endpoint that is not a known pod of this node: `external`, or `ip` for its IP address (more series: every address is a value, within MAX_POD_LABEL_VALUES).',
    parse: enumParser(EXTERNAL_LABELS, false),
  }),
  maxPodLabelValues: spec<number>({
    env: 'MAX_POD_LABEL_VALUES',
    default: '500',
    expected: intExpected(10, 100_000),
    doc: 'Most distinct values of the pod labels (source_pod, dest_pod, pod) at once; further endpoints are labelled `other` (counted by audio_tracker_label_overflow_total) until a value is retired (a deleted pod, or an address unused for SERIES_TTL_MS).',
    parse: intParser(10, 100_000),
  }),
  seriesTtlMs: spec<number>({
    env: 'SERIES_TTL_MS',
    default: '60000',
    expected: intExpected(1000, 86_400_000),
    doc: "How long a deleted pod's series (or an address label unused that long) stay exported with their last values; after that they are dropped from /metrics and OTLP and their label value is free again.",
    parse: intParser(1000, 86_400_000),
  }),
  containerRuntime: spec<ContainerRuntime>({
    env: 'CONTAINER_RUNTIME',
    default: 'auto',
    expected: enumExpected(RUNTIMES, false),
    doc: 'Container runtime the agent queries; `auto` detects it.',
    parse: enumParser(RUNTIMES, false),
  }),
  maxFlows: spec<number>({
    env: 'MAX_FLOWS',
    default: '10000',
    expected: intExpected(1, 1_000_000),
    doc: 'Upper bound on audio streams (flow x observation point) with signature state, and size of the kernel per-flow RTP map (about 100 bytes per entry, preallocated); the least recently used is evicted beyond it (counted).',
    parse: intParser(1, 1_000_000),
  }),
  flowTimeoutMs: spec<number>({
    env: 'FLOW_TIMEOUT_MS',
    default: '30000',
    expected: intExpected(100, 3_600_000),
    doc: 'A stream without packets for this many milliseconds is dropped (counted).',
    parse: intParser(100, 3_600_000),
  }),
  perfBufferPages: spec<number>({
    env: 'PERF_BUFFER_SIZE',
    default: '1024',
    expected: intExpected(1, 262_144),
    doc: 'Size of the kernel-to-agent ring buffer in 4 KiB pages (1024 = 4 MiB); the loader rounds it up to a power of two. Increase it when the lost-events counter grows.',
    parse: intParser(1, 262_144),
  }),
  maxPendingSignatures: spec<number>({
    env: 'MAX_PENDING_SIGNATURES',
    default: '1048576',
    expected: intExpected(1024, 67_108_864),
    doc: 'Upper bound on signatures the correlator holds while waiting for the same audio to be seen elsewhere; the oldest is evicted when full. Bounds memory.',
    parse: intParser(1024, 67_108_864),
  }),
  latencyBuckets: spec<readonly number[]>({
    env: 'LATENCY_BUCKETS',
    default: DEFAULT_BUCKETS,
    expected: `comma-separated positive decimal numbers of seconds, strictly increasing, at most ${MAX_BUCKETS}`,
    doc: 'Explicit bucket upper bounds (seconds) of the latency histogram scraped by Prometheus.',
    parse: parseBuckets,
  }),
  sampleLog: spec<boolean>({
    env: 'SAMPLE_LOG',
    default: 'false',
    expected: BOOLEAN_EXPECTED,
    doc: 'Write every hop latency sample as a JSON line on stdout (rate-limited by SAMPLE_LOG_RATE).',
    parse: parseBoolean,
  }),
  sampleLogRate: spec<number>({
    env: 'SAMPLE_LOG_RATE',
    default: '100',
    expected: intExpected(1, 100_000),
    doc: 'Maximum hop-sample lines per second; the excess is counted and reported once per second.',
    parse: intParser(1, 100_000),
  }),
  otlpEndpoint: spec<string | null>({
    env: 'OTEL_EXPORTER_OTLP_ENDPOINT',
    default: '',
    defaultDoc: '(unset: no OTLP push)',
    expected: ENDPOINT_EXPECTED,
    doc: 'OTLP/gRPC collector; setting it (or the metrics-specific one) enables the push. `http://` is plaintext, `https://` TLS.',
    blankIsUnset: true,
    parse: parseEndpoint,
  }),
  otlpMetricsEndpoint: spec<string | null>({
    env: 'OTEL_EXPORTER_OTLP_METRICS_ENDPOINT',
    default: '',
    defaultDoc: '(unset)',
    expected: ENDPOINT_EXPECTED,
    doc: 'Metrics-specific endpoint; wins over OTEL_EXPORTER_OTLP_ENDPOINT.',
    blankIsUnset: true,
    parse: parseEndpoint,
  }),
  otlpHeaders: spec<Pairs | null>({
    env: 'OTEL_EXPORTER_OTLP_HEADERS',
    default: '',
    defaultDoc: '(unset)',
    expected: HEADERS_EXPECTED,
    doc: 'gRPC metadata sent with every export (e.g. `authorization=Bearer%20xyz`). Secret: never logged.',
    sensitive: true,
    blankIsUnset: true,
    parse: parseHeaders,
  }),
  otlpMetricsHeaders: spec<Pairs | null>({
    env: 'OTEL_EXPORTER_OTLP_METRICS_HEADERS',
    default: '',
    defaultDoc: '(unset)',
    expected: HEADERS_EXPECTED,
    doc: 'Metrics-specific headers, merged over OTEL_EXPORTER_OTLP_HEADERS. Secret: never logged.',
    sensitive: true,
    blankIsUnset: true,
    parse: parseHeaders,
  }),
  otlpCompression: spec<OtlpCompression | null>({
    env: 'OTEL_EXPORTER_OTLP_COMPRESSION',
    default: '',
    defaultDoc: '`none`',
    expected: enumExpected(COMPRESSIONS, true),
    doc: 'Compression of OTLP exports.',
    blankIsUnset: true,
    parse: nullable(enumParser(COMPRESSIONS, true)),
  }),
  otlpMetricsCompression: spec<OtlpCompression | null>({
    env: 'OTEL_EXPORTER_OTLP_METRICS_COMPRESSION',
    default: '',
    defaultDoc: '(unset)',
    expected: enumExpected(COMPRESSIONS, true),
    doc: 'Metrics-specific compression; wins over OTEL_EXPORTER_OTLP_COMPRESSION.',
    blankIsUnset: true,
    parse: nullable(enumParser(COMPRESSIONS, true)),
  }),
  otlpInsecure: spec<boolean | null>({
    env: 'OTEL_EXPORTER_OTLP_INSECURE',
    default: '',
    defaultDoc: '`false`',
    expected: BOOLEAN_EXPECTED,
    doc: 'Plaintext is chosen by the `http://` scheme; `true` is accepted only with an `http://` endpoint (it contradicts `https://`).',
    blankIsUnset: true,
    parse: nullable(parseBoolean),
  }),
  otlpMetricsInsecure: spec<boolean | null>({
    env: 'OTEL_EXPORTER_OTLP_METRICS_INSECURE',
    default: '',
    defaultDoc: '(unset)',
    expected: BOOLEAN_EXPECTED,
    doc: 'Metrics-specific OTEL_EXPORTER_OTLP_INSECURE.',
    blankIsUnset: true,
    parse: nullable(parseBoolean),
  }),
  otlpCertificate: spec<string | null>({
    env: 'OTEL_EXPORTER_OTLP_CERTIFICATE',
    default: '',
    defaultDoc: '(unset: system CAs)',
    expected: FILE_EXPECTED,
    doc: 'CA certificate(s) that verify the collector (https:// only). Relative paths are resolved from the working directory.',
    blankIsUnset: true,
    parse: parseReadableFile,
  }),
  otlpMetricsCertificate: spec<string | null>({
    env: 'OTEL_EXPORTER_OTLP_METRICS_CERTIFICATE',
    default: '',
    defaultDoc: '(unset)',
    expected: FILE_EXPECTED,
    doc: 'Metrics-specific OTEL_EXPORTER_OTLP_CERTIFICATE.',
    blankIsUnset: true,
    parse: parseReadableFile,
  }),
  otlpClientKey: spec<string | null>({
    env: 'OTEL_EXPORTER_OTLP_CLIENT_KEY',
    default: '',
    defaultDoc: '(unset)',
    expected: FILE_EXPECTED,
    doc: 'Private key for mutual TLS (with OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE; both or neither).',
    blankIsUnset: true,
    parse: parseReadableFile,
  }),
  otlpMetricsClientKey: spec<string | null>({
    env: 'OTEL_EXPORTER_OTLP_METRICS_CLIENT_KEY',
    default: '',
    defaultDoc: '(unset)',
    expected: FILE_EXPECTED,
    doc: 'Metrics-specific OTEL_EXPORTER_OTLP_CLIENT_KEY.',
    blankIsUnset: true,
    parse: parseReadableFile,
  }),
  otlpClientCertificate: spec<string | null>({
    env: 'OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE',
    default: '',
    defaultDoc: '(unset)',
    expected: FILE_EXPECTED,
    doc: 'Client certificate chain for mutual TLS.',
    blankIsUnset: true,
    parse: parseReadableFile,
  }),
  otlpMetricsClientCertificate: spec<string | null>({
    env: 'OTEL_EXPORTER_OTLP_METRICS_CLIENT_CERTIFICATE',
    default: '',
    defaultDoc: '(unset)',
    expected: FILE_EXPECTED,
    doc: 'Metrics-specific OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE.',
    blankIsUnset: true,
    parse: parseReadableFile,
  }),
  otlpTimeout: spec<number | null>({
    env: 'OTEL_EXPORTER_OTLP_TIMEOUT',
    default: '',
    defaultDoc: `\`${OTLP_TIMEOUT_DEFAULT_MS}\``,
    expected: intExpected(1, 3_600_000) + ' (milliseconds)',
    doc: 'Timeout of one OTLP export request, in milliseconds.',
    blankIsUnset: true,
    parse: nullable(intParser(1, 3_600_000)),
  }),
  otlpMetricsTimeout: spec<number | null>({
    env: 'OTEL_EXPORTER_OTLP_METRICS_TIMEOUT',
    default: '',
    defaultDoc: '(unset)',
    expected: intExpected(1, 3_600_000) + ' (milliseconds)',
    doc: 'Metrics-specific OTEL_EXPORTER_OTLP_TIMEOUT.',
    blankIsUnset: true,
    parse: nullable(intParser(1, 3_600_000)),
  }),
  exportIntervalMs: spec<number>({
    env: 'OTEL_METRIC_EXPORT_INTERVAL',
    default: '60000',
    expected: intExpected(100, 86_400_000) + ' (milliseconds)',
    doc: 'Interval between OTLP pushes, in milliseconds.',
    blankIsUnset: true,
    parse: intParser(100, 86_400_000),
  }),
  exportTimeoutMs: spec<number>({
    env: 'OTEL_METRIC_EXPORT_TIMEOUT',
    default: '30000',
    expected: intExpected(1, 86_400_000) + ' (milliseconds)',
    doc: 'Time allowed for one collect-and-export cycle. Must not exceed OTEL_METRIC_EXPORT_INTERVAL when both are set; when only the interval is set, this is clamped to it.',
    blankIsUnset: true,
    parse: intParser(1, 86_400_000),
  }),
  temporality: spec<TemporalityPreference>({
    env: 'OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE',
    default: 'cumulative',
    expected: enumExpected(TEMPORALITIES, true),
    doc: 'Aggregation temporality of OTLP metrics (Prometheus is always cumulative).',
    blankIsUnset: true,
    parse: enumParser(TEMPORALITIES, true),
  }),
  histogramAggregation: spec<HistogramAggregation>({
    env: 'OTEL_EXPORTER_OTLP_METRICS_DEFAULT_HISTOGRAM_AGGREGATION',
    default: 'explicit_bucket_histogram',
    expected: enumExpected(HISTOGRAMS, true),
    doc: 'Histogram aggregation for OTLP (Prometheus always gets LATENCY_BUCKETS explicit buckets).',
    blankIsUnset: true,
    parse: enumParser(HISTOGRAMS, true),
  }),
  serviceName: spec<string>({
    env: 'OTEL_SERVICE_NAME',
    default: 'audio-latency-tracker',
    expected: `text of at most ${MAX_ATTRIBUTE_LENGTH} characters without control characters`,
    doc: 'The `service.name` resource attribute.',
    blankIsUnset: true,
    parse: parseServiceName,
  }),
  resourceAttributes: spec<Pairs>({
    env: 'OTEL_RESOURCE_ATTRIBUTES',
    default: '',
    defaultDoc: '(unset)',
    expected:
      'comma-separated key=value pairs, "," and "=" %-encoded, keys and values at most 255 characters',
    doc: 'Extra resource attributes (e.g. `k8s.cluster.name=prod`). An invalid value is an error here, not silently dropped as the OTel SDK would.',
    blankIsUnset: true,
    parse: parseResourceAttributes,
  }),
} as const;

type Specs = typeof SPECS;
type SpecKey = keyof Specs;
type SpecValue<S> = S extends VarSpec<infer T> ? T : never;
type Values = { -readonly [K in SpecKey]: SpecValue<Specs[K]> };

export interface ConfigVariable {
  readonly name: string;
  /** The default as documented (may be a sentence for computed defaults). */
  readonly default: string;
  readonly expected: string;
  readonly doc: string;
  readonly sensitive: boolean;
}

/** Every variable the agent reads, in documentation order (docs/configuration.md mirrors it). */
export const CONFIG_VARIABLES: readonly ConfigVariable[] = Object.freeze(
  Object.values(SPECS).map((s: VarSpec<unknown>) =>
    Object.freeze({
      name: s.env,
      default: s.defaultDoc ?? `\`${s.default}\``,
      expected: s.expected,
      doc: s.doc,
      sensitive: s.sensitive === true,
    }),
  ),
);

// ---------------------------------------------------------------------------
// convict plumbing

/**
 * What a format's coerce hands convict: a one- or two-element array, because
 * convict flattens plain objects into sub-keys (which would break strict
 * validation of record-valued variables) but keeps arrays whole.
 */
type Box = readonly [true, unknown] | readonly [false, string | null, boolean];

const formatName = (s: VarSpec<unknown>): string => `audio-latency-tracker:${s.env}`;

function box(result: unknown): Box {
  return result instanceof Rejection ? [false, result.reason, result.hideValue] : [true, result];
}

function isBox(value: unknown): value is Box {
  return Array.isArray(value) && (value[0] === true || value[0] === false);
}

let formatsRegistered = false;

function registerFormats(): void {
  if (formatsRegistered) return;
  for (const s of Object.values(SPECS) as VarSpec<unknown>[]) {
    convict.addFormat({
      name: formatName(s),
      coerce: (raw: string): Box => box(s.parse(raw === '' && s.blankIsUnset ? s.default : raw)),
      validate: (value: unknown): void => {
        // The message is unused (our own report is built from the boxes) but must not leak values.
        if (!isBox(value) || value[0] !== true) throw new Error('invalid value');
      },
    });
  }
  formatsRegistered = true;
}

function buildSchema(env: Env): convict.Schema<Record<string, unknown>> {
  const schema: Record<string, convict.SchemaObj<unknown>> = {};
  for (const s of Object.values(SPECS) as VarSpec<unknown>[]) {
    schema[s.env] = {
      doc: s.doc,
      format: formatName(s),
      default: s.defaultFromEnv?.(env) ?? s.default,
      env: s.env,
      sensitive: s.sensitive === true,
    };
  }
  return schema as convict.Schema<Record<string, unknown>>;
}

function describeProblem(s: VarSpec<unknown>, raw: string | undefined, rejected: Box): string {
  const [, reason, hideValue] = rejected as readonly [false, string | null, boolean];
  const shown =
    s.sensitive === true || hideValue
      ? '(hidden)'
      : raw === undefined
        ? `(default ${quoteForDisplay(s.default)})`
        : quoteForDisplay(raw);
  const why = reason === null ? '' : `${reason}; `;
  return `${s.env}=${shown} is invalid: ${why}expected ${s.expected}`;
}

// ---------------------------------------------------------------------------
// Loading

/**
 * Reads and validates the whole configuration. Throws ConfigError listing
 * every problem found, one per line.
 */
export function loadConfig(env: Env = process.env): AgentConfig {
  registerFormats();
  const cfg = convict<Record<string, unknown>>(buildSchema(env), {
    env: env as NodeJS.ProcessEnv,
    args: [],
  });
  let convictError: unknown = null;
  try {
    cfg.validate({ allowed: 'strict', output: () => undefined });
  } catch (err) {
    convictError = err;
  }

  const props = cfg.getProperties();
  const problems: string[] = [];
  const values: Partial<Values> = {};
  for (const key of Object.keys(SPECS) as SpecKey[]) {
    const s = SPECS[key] as VarSpec<unknown>;
    const boxed = props[s.env];
    if (isBox(boxed) && boxed[0] === true) (values as Record<string, unknown>)[key] = boxed[1];
    else if (isBox(boxed)) problems.push(describeProblem(s, env[s.env], boxed));
    else problems.push(`${s.env} could not be read (internal error: unexpected value)`);
  }
  // Rules between variables run on whatever parsed, so one pass reports everything.
  problems.push(...crossVariableProblems(values, env));
  if (problems.length > 0) throw new ConfigError(problems);
  if (convictError !== null) {
    // Our parsers accepted everything yet convict did not: a schema bug, reported without values.
    throw new ConfigError([
      `configuration schema error: ${quoteForDisplay(String(convictError), 200)}`,
    ]);
  }
  return assemble(values as Values);
}

/** True when every listed value parsed (a rule is skipped when one of its inputs is already reported). */
function have<K extends SpecKey>(
  v: Partial<Values>,
  ...keys: K[]
): v is Partial<Values> & Pick<Values, K> {
  return keys.every((k) => k in v);
}

function crossVariableProblems(v: Partial<Values>, env: Env): string[] {
  const problems: string[] = [];
  if (have(v, 'k8sEnabled', 'k8sNodeName') && v.k8sEnabled && v.k8sNodeName === null) {
    problems.push(
      'K8S_NODE_NAME is required when K8S_ENABLED is true (K8S_ENABLED defaults to true inside a pod): ' +
        'set it from the downward API (fieldRef: spec.nodeName) or set K8S_ENABLED=false',
    );
  }
  if (
    have(v, 'k8sEnabled', 'k8sPodSource', 'k8sKubeletUrl', 'nodeIp') &&
    v.k8sEnabled &&
    v.k8sPodSource === 'kubelet' &&
    kubeletUrl(v.k8sKubeletUrl, v.nodeIp) === null
  ) {
    problems.push(
      'K8S_POD_SOURCE=kubelet needs the kubelet address: set K8S_KUBELET_URL, or NODE_IP from the downward API (fieldRef: status.hostIP)',
    );
  }
  if (
    have(
      v,
      'otlpClientKey',
      'otlpMetricsClientKey',
      'otlpClientCertificate',
      'otlpMetricsClientCertificate',
    ) &&
    (resolveTls(v).clientKeyPath === null) !== (resolveTls(v).clientCertificatePath === null)
  ) {
    problems.push(
      'OTEL_EXPORTER_OTLP_[METRICS_]CLIENT_KEY and OTEL_EXPORTER_OTLP_[METRICS_]CLIENT_CERTIFICATE must be set together',
    );
  }
  if (have(v, 'otlpEndpoint', 'otlpMetricsEndpoint')) {
    const endpoint = v.otlpMetricsEndpoint ?? v.otlpEndpoint;
    const endpointVar =
      v.otlpMetricsEndpoint !== null
        ? 'OTEL_EXPORTER_OTLP_METRICS_ENDPOINT'
        : 'OTEL_EXPORTER_OTLP_ENDPOINT';
    const plaintext = endpoint !== null && endpoint.startsWith('http://');
    if (
      endpoint !== null &&
      !plaintext &&
      have(v, 'otlpInsecure', 'otlpMetricsInsecure') &&
      (v.otlpMetricsInsecure ?? v.otlpInsecure) === true
    ) {
      problems.push(
        `OTEL_EXPORTER_OTLP_[METRICS_]INSECURE is true but ${endpointVar} is https://: ` +
          'use an http:// endpoint for plaintext',
      );
    }
    const tls = resolveTls(v);
    if (
      plaintext &&
      (tls.certificatePath !== null ||
        tls.clientKeyPath !== null ||
        tls.clientCertificatePath !== null)
    ) {
      problems.push(
        `TLS files (OTEL_EXPORTER_OTLP_[METRICS_]CERTIFICATE / CLIENT_KEY / CLIENT_CERTIFICATE) are set but ${endpointVar} is http:// (plaintext): ` +
          'use an https:// endpoint',
      );
    }
  }
  if (
    have(v, 'exportIntervalMs', 'exportTimeoutMs') &&
    v.exportTimeoutMs > v.exportIntervalMs &&
    (env.OTEL_METRIC_EXPORT_TIMEOUT ?? '') !== '' &&
    (env.OTEL_METRIC_EXPORT_INTERVAL ?? '') !== ''
  ) {
    problems.push(
      `OTEL_METRIC_EXPORT_TIMEOUT (${v.exportTimeoutMs}) must not exceed OTEL_METRIC_EXPORT_INTERVAL (${v.exportIntervalMs})`,
    );
  }
  return problems;
}

/** Signal-specific variables win over general ones, one setting at a time, as in the OTel spec. */
function resolveTls(v: Partial<Values>): {
  certificatePath: string | null;
  clientKeyPath: string | null;
  clientCertificatePath: string | null;
} {
  return {
    certificatePath: v.otlpMetricsCertificate ?? v.otlpCertificate ?? null,
    clientKeyPath: v.otlpMetricsClientKey ?? v.otlpClientKey ?? null,
    clientCertificatePath: v.otlpMetricsClientCertificate ?? v.otlpClientCertificate ?? null,
  };
}

/** K8S_KUBELET_URL, else https://$NODE_IP:10250 (IPv6 in brackets), else null. */
function kubeletUrl(explicit: string | null, nodeIp: string | null): string | null {
  if (explicit !== null) return explicit;
  if (nodeIp === null) return null;
  return `https://${nodeIp.includes(':') ? `[${nodeIp}]` : nodeIp}:10250`;
}

function assemble(v: Values): AgentConfig {
  const endpoint = v.otlpMetricsEndpoint ?? v.otlpEndpoint;
  const otlp: OtlpConfig = {
    enabled: endpoint !== null,
    endpoint,
    insecure: endpoint !== null && endpoint.startsWith('http://'),
    // fromEntries defines own properties, so even "__proto__" stays a plain key.
    headers: Object.fromEntries([...(v.otlpHeaders ?? []), ...(v.otlpMetricsHeaders ?? [])]),
    compression: v.otlpMetricsCompression ?? v.otlpCompression ?? 'none',
    ...resolveTls(v),
    timeoutMs: v.otlpMetricsTimeout ?? v.otlpTimeout ?? OTLP_TIMEOUT_DEFAULT_MS,
    exportIntervalMs: v.exportIntervalMs,
    // PeriodicExportingMetricReader's rule: a timeout above the interval is clamped
    // (an explicit pair that conflicts was rejected above).
    exportTimeoutMs: Math.min(v.exportTimeoutMs, v.exportIntervalMs),
    temporality: v.temporality,
    histogramAggregation: v.histogramAggregation,
    serviceName: v.serviceName,
    resourceAttributes: Object.fromEntries(v.resourceAttributes),
  };
  return deepFreeze({
    interfaces: v.interfaces,
    logLevel: v.logLevel,
    metricsPort: v.metricsPort,
    audioPorts: v.audioPorts,
    signatureWindowSize: v.signatureWindowSize,
    silenceThreshold: v.silenceThreshold,
    signatureAlgorithm: v.signatureAlgorithm,
    k8s: {
      enabled: v.k8sEnabled,
      nodeName: v.k8sNodeName,
      podSource: v.k8sPodSource,
      nodeIp: v.nodeIp,
      kubeletUrl: kubeletUrl(v.k8sKubeletUrl, v.nodeIp),
      kubeletInsecure: v.k8sKubeletInsecure,
      kubeletCaFile: v.k8sKubeletCaFile,
      tokenFile: v.k8sTokenFile,
      kubeletPollIntervalMs: v.k8sKubeletPollIntervalMs,
      podCacheSize: v.k8sPodCacheSize,
    },
    labels: {
      external: v.labelExternal,
      maxValues: v.maxPodLabelValues,
      seriesTtlMs: v.seriesTtlMs,
    },
    containerRuntime: v.containerRuntime,
    maxFlows: v.maxFlows,
    flowTimeoutMs: v.flowTimeoutMs,
    perfBufferPages: v.perfBufferPages,
    maxPendingSignatures: v.maxPendingSignatures,
    latencyBuckets: v.latencyBuckets,
    sampleLog: { enabled: v.sampleLog, ratePerSecond: v.sampleLogRate },
    otlp,
  });
}

function deepFreeze<T>(value: T): T {
  if (typeof value === 'object' && value !== null && !Object.isFrozen(value)) {
    for (const key of Object.keys(value)) deepFreeze((value as Record<string, unknown>)[key]);
    Object.freeze(value);
  }
  return value;
}

export type ConfigSummary = Omit<AgentConfig, 'otlp'> & {
  readonly otlp: Omit<OtlpConfig, 'headers'> & { readonly headerNames: readonly string[] };
};

/** The configuration for a startup log line: header values (secrets) reduced to their names. */
export function describeConfig(cfg: AgentConfig): ConfigSummary {
  const { headers, ...otlp } = cfg.otlp;
  return deepFreeze({
    ...cfg,
    otlp: { ...otlp, headerNames: Object.keys(headers).sort() },
  });
}
