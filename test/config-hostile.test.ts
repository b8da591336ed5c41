/**
 * Hostile configuration: every variable of CONFIG_VARIABLES (a new one is covered as soon as it
 * is added) against every category of hostile value: empty, whitespace, huge, huge numbers,
 * negative, non-numeric, fractional, other radixes and exponents, unknown enum words, shell and
 * log injection, terminal escapes, bidi and invisible characters, NUL, paths, URLs with
 * credentials, header injection, JSON/YAML fragments, prototype keys.
 *
 * The verdict is decided here, per category and per kind of variable (integer, boolean, enum,
 * interface list, port list, bucket list, DNS name, IP, URL, file, headers, attributes, text),
 * from the documented accepted form (the `expected` text and docs/configuration.md), never from
 * what the code happens to do:
 *   - 'reject': loadConfig throws a ConfigError with exactly one line for the variable, naming
 *     it, showing the value escaped and truncated (or `(hidden)` for secrets and credentials),
 *     and ending with the accepted form; no raw control or invisible character anywhere;
 *   - 'unset': the configuration is the one without the variable (empty OTEL_* values, and the
 *     optional variables docs/configuration.md lists);
 *   - 'form': decided value by value by the documented form of the kind (an oracle written here,
 *     independently of src/config.ts), which also gives the value the variable must parse to.
 *
 * Then the same at process level: `node dist/src/main.js` with hostile values exits 2, says why
 * on stderr, never opens the metrics port, and attaches nothing (checked on a test veth as root).
 */
import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import { once } from 'node:events';
import {
  accessSync,
  constants as fsConstants,
  mkdtempSync,
  readFileSync,
  rmSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import { type AddressInfo, connect, createServer, isIP } from 'node:net';
import { tmpdir } from 'node:os';
import { join, resolve as resolvePath } from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, describe, it, test, type TestContext } from 'node:test';

import {
  type AgentConfig,
  CONFIG_VARIABLES,
  type ConfigVariable,
  ConfigError,
  loadConfig,
} from '../src/config.js';
import { rootUnavailable } from './support/root.js';

type Env = Record<string, string | undefined>;

const tmp = mkdtempSync(join(tmpdir(), 'alt-config-hostile-'));
after(() => rmSync(tmp, { recursive: true, force: true }));
const readableFile = join(tmp, 'readable.pem');
writeFileSync(readableFile, '-----BEGIN TEST-----\n');

// ---------------------------------------------------------------------------
// Hostile values by category

const CATEGORIES = {
  empty: [''],
  whitespace: [' ', '   ', '\t', ' \n '],
  huge: ['x'.repeat(100_000), '9'.repeat(100_000), 'a,'.repeat(50_000) + 'a'],
  hugeNumber: ['1e309', '99999999999999999999', '-99999999999999999999', '18446744073709551616'],
  negative: ['-1', '-0', '-65535'],
  nonNumeric: ['abc', 'NaN', 'Infinity', 'null', 'undefined'],
  fractional: ['1.5', '0.5', '.5', '5.', '1,5'],
  radix: ['0x10', '0o17', '010', '0b101', '1e3', '1E3', '1_000', '\uff15'],
  unknownEnum: ['not-a-known-value', 'XXHASH2', 'info ', 'Auto'],
  shell: ['; rm -rf /', '$(id)', '`id`', '5004;rm -rf /', '|| reboot', '&& curl x'],
  logForgery: ['x\n{"level":"error","msg":"forged"}', 'a\r\nLOG_LEVEL=debug', 'ok\u2028forged'],
  terminal: ['\u001b[31mred\u001b[0m', '\u009b2J', 'bell\u0007'],
  bidi: ['abc\u202edcba', '\u2066x\u2069', 'a\u200bb', '\ufeffa', 'lone\ud800'],
  nul: ['a\u0000b', '\u0000'],
  path: ['../../etc/passwd', '/etc/shadow', '/dev/zero', '/proc/self/environ', '/'],
  urlCreds: ['http://user:pass@host', 'https://u:secretpw@10.0.0.1:4317'],
  headerInjection: ['a=b\r\nX: y', 'a=b%0D%0AX:%20y', 'a=b\nX-Injected: 1'],
  fragment: ['{"a":1}', '[1,2]', 'a: [1, 2]\n- b', '---\nfoo: bar', '<x/>', 'key=value'],
  prototype: ['__proto__', 'constructor', '__proto__=x', 'toString'],
} as const satisfies Record<string, readonly string[]>;

type Category = keyof typeof CATEGORIES;
const CATEGORY_NAMES = Object.keys(CATEGORIES) as Category[];

// ---------------------------------------------------------------------------
// Kinds of variable, recognised from the documented accepted form

type Kind =
  | { readonly name: 'int'; readonly min: number; readonly max: number }
  | { readonly name: 'bool' }
  | { readonly name: 'enum'; readonly values: readonly string[]; readonly ci: boolean }
  | { readonly name: 'ifnames' }
  | { readonly name: 'ports' }
  | { readonly name: 'buckets' }
  | { readonly name: 'dns' }
  | { readonly name: 'ip' }
  | { readonly name: 'url' }
  | { readonly name: 'file' }
  | { readonly name: 'headers' }
  | { readonly name: 'attributes' }
  | { readonly name: 'text'; readonly max: number };

type KindName = Kind['name'];

function kindOf(v: ConfigVariable): Kind {
  const e = v.expected;
  const int = /^an integer from (\d+) to (\d+)/.exec(e);
  if (int !== null) return { name: 'int', min: Number(int[1]), max: Number(int[2]) };
  if (e.startsWith('one of true, false, 1, 0, yes, no')) return { name: 'bool' };
  const oneOf = /^one of (.+?)( \(case-insensitive\))?$/.exec(e);
  if (oneOf !== null) {
    return { name: 'enum', values: oneOf[1].split(', '), ci: oneOf[2] !== undefined };
  }
  if (e.startsWith('comma-separated interface names')) return { name: 'ifnames' };
  if (e.startsWith('`all`, empty, or comma-separated ports')) return { name: 'ports' };
  if (e.startsWith('comma-separated positive decimal numbers')) return { name: 'buckets' };
  if (e.startsWith('a DNS-1123 subdomain')) return { name: 'dns' };
  if (e === 'an IPv4 or IPv6 address') return { name: 'ip' };
  if (e.startsWith('an http:// or https:// URL')) return { name: 'url' };
  if (e.startsWith('the path of a readable file')) return { name: 'file' };
  if (e.startsWith('comma-separated key=value pairs (values %-encoded')) return { name: 'headers' };
  if (e.startsWith('comma-separated key=value pairs, "," and "=" %-encoded')) {
    return { name: 'attributes' };
  }
  const text = /^text of at most (\d+) characters/.exec(e);
  if (text !== null) return { name: 'text', max: Number(text[1]) };
  throw new Error(
    `${v.name}: accepted form ${JSON.stringify(e)} is of no known kind; teach config-hostile.test.ts its verdicts`,
  );
}

// ---------------------------------------------------------------------------
// The verdicts, per kind and category

/** reject: every value refused; accept/form: each value judged by the kind's oracle. */
type Cell = 'reject' | 'accept' | 'form';

const R: Cell = 'reject';
const F: Cell = 'form';
const A: Cell = 'accept';

/** Kinds that take no hostile value at all (their forms are strict words and numbers). */
const ALL_REJECT: Record<Category, Cell> = Object.fromEntries(
  CATEGORY_NAMES.map((c) => [c, R]),
) as Record<Category, Cell>;

const MATRIX: Record<KindName, Record<Category, Cell>> = {
  int: ALL_REJECT,
  bool: ALL_REJECT,
  enum: ALL_REJECT,
  ip: ALL_REJECT,
  // Credentials are refused (and hidden); hosts must be DNS names or addresses.
  url: ALL_REJECT,
  // Interface names are 1-15 of [A-Za-z0-9_.-]: number-like words are valid names.
  ifnames: {
    ...ALL_REJECT,
    huge: F, // a 100k-character list of valid names is valid
    hugeNumber: F, // "1e309" is a name, 20 digits are too long
    negative: A,
    nonNumeric: A,
    fractional: A,
    radix: F, // a fullwidth digit is not ASCII
    unknownEnum: F, // 17 characters is too long, "info " has a space
    prototype: F, // "__proto__=x" has "="
  },
  // Plain decimal ports and ranges: "1,5" is a list of two ports, nothing else passes.
  ports: { ...ALL_REJECT, fractional: F },
  // Plain decimals of seconds (at most 9 integer digits): 1.5 and 0.5 are bucket bounds.
  buckets: { ...ALL_REJECT, fractional: F },
  // Lower-case DNS labels: digits and words are node names.
  dns: {
    ...ALL_REJECT,
    hugeNumber: F,
    nonNumeric: F,
    fractional: F,
    radix: F,
    unknownEnum: F,
    prototype: F,
  },
  // Any readable regular file; control characters never.
  file: {
    ...Object.fromEntries(CATEGORY_NAMES.map((c) => [c, F])),
    logForgery: R,
    terminal: R,
    nul: R,
  } as Record<Category, Cell>,
  // key=value pairs with printable-ASCII values: only well-formed pairs pass.
  headers: { ...ALL_REJECT, fragment: F, prototype: F },
  // Same, but blank entries are skipped (the OpenTelemetry SDK's own rule).
  attributes: { ...ALL_REJECT, whitespace: A, fragment: F, prototype: F },
  // Free text without control, invisible or bidi characters, at most 255.
  text: {
    ...Object.fromEntries(CATEGORY_NAMES.map((c) => [c, A])),
    whitespace: F,
    huge: R,
    logForgery: R,
    terminal: R,
    bidi: R,
    nul: R,
    headerInjection: F,
    fragment: F,
  } as Record<Category, Cell>,
};

/**
 * Empty means unset for every OTEL_* variable (OpenTelemetry rule) and, for the agent's own
 * variables, exactly for those docs/configuration.md lists; any other empty value is an error.
 */
const EMPTY_IS_UNSET: ReadonlySet<string> = new Set([
  'AUDIO_PORTS',
  'K8S_NODE_NAME',
  'NODE_IP',
  'K8S_KUBELET_URL',
  'K8S_KUBELET_CA_FILE',
  'K8S_TOKEN_FILE',
]);

const emptyIsUnset = (name: string): boolean =>
  name.startsWith('OTEL_') || EMPTY_IS_UNSET.has(name);

/** Extra values per kind, with their verdict stated outright. */
const EXTRA: Partial<Record<KindName, readonly (readonly [string, Verdict])[]>> = {
  url: [
    ['http://' + 'a'.repeat(100_000), { verdict: 'reject' }],
    ['http://a..b:4317', { verdict: 'reject' }],
    ['http://host:0', { verdict: 'reject' }],
    ['http://host:99999999999999999999', { verdict: 'reject' }],
    ['javascript:alert(1)', { verdict: 'reject' }],
    ['file:///etc/passwd', { verdict: 'reject' }],
    ['http://[::1', { verdict: 'reject' }],
    ['http://collector\u200b:4317', { verdict: 'reject' }],
    // What WHATWG URL reads as 127.0.0.1 is what the agent connects to, not the raw text.
    ['http://0x7f.1:4317', { verdict: 'accept', value: 'http://127.0.0.1:4317' }],
  ],
  headers: [
    ['k=' + 'v'.repeat(100_000), { verdict: 'accept', value: { k: 'v'.repeat(100_000) } }],
    ['authorization=Bearer%0D%0AX:%20y', { verdict: 'reject' }],
    ['trace-bin=AAAA', { verdict: 'reject' }],
  ],
  attributes: [
    ['k=%E2%80%AEevil', { verdict: 'reject' }],
    ['k=%00', { verdict: 'reject' }],
  ],
  buckets: [
    [Array.from({ length: 100_000 }, (_, i) => String(i + 1)).join(','), { verdict: 'reject' }],
  ],
  ports: [['1,'.repeat(50_000) + '2', { verdict: 'accept', value: [{ from: 1, to: 2 }] }]],
};

// ---------------------------------------------------------------------------
// Oracles: the documented form of each kind, written independently of src/config.ts

type Verdict =
  | { readonly verdict: 'reject' }
  | { readonly verdict: 'unset' }
  | { readonly verdict: 'accept'; readonly value: unknown };

const REJECT: Verdict = { verdict: 'reject' };
const accept = (value: unknown): Verdict => ({ verdict: 'accept', value });

const C0_C1 = /[\u0000-\u001f\u007f-\u009f]/;
const INVISIBLE = /[\u200b-\u200f\u2028-\u202e\u2066-\u2069\ufeff]|[\ud800-\udfff]/u;
const PLAIN_DECIMAL = /^(0|[1-9][0-9]*)$/;

function ifnamesOracle(raw: string): Verdict {
  const items = raw.split(',');
  for (const item of items) {
    if (/[*?[\]!^]/.test(item)) throw new Error(`oracle: glob in ${JSON.stringify(item)}`);
    if (!/^[A-Za-z0-9_.-]{1,15}$/.test(item) || item === '.' || item === '..') return REJECT;
  }
  return accept([...new Set(items)]);
}

function portsOracle(raw: string): Verdict {
  if (raw === '' || raw.toLowerCase() === 'all') return accept('all');
  const ranges: { from: number; to: number }[] = [];
  for (const item of raw.split(',')) {
    const [a, b, ...rest] = item.split('-');
    if (rest.length > 0 || !PLAIN_DECIMAL.test(a) || (b !== undefined && !PLAIN_DECIMAL.test(b))) {
      return REJECT;
    }
    const from = Number(a);
    const to = b === undefined ? from : Number(b);
    if (from < 1 || to > 65535 || from > to) return REJECT;
    ranges.push({ from, to });
  }
  ranges.sort((x, y) => x.from - y.from);
  const merged: { from: number; to: number }[] = [];
  for (const r of ranges) {
    const last = merged[merged.length - 1];
    if (last !== undefined && r.from <= last.to + 1) last.to = Math.max(last.to, r.to);
    else merged.push({ ...r });
  }
  return accept(merged);
}

function bucketsOracle(raw: string): Verdict {
  const items = raw.split(',');
  if (items.length > 100) return REJECT;
  const out: number[] = [];
  for (const item of items) {
    const m = /^(0|[1-9][0-9]*)(?:\.([0-9]+))?$/.exec(item);
    if (m === null || m[1].length > 9 || (m[2] ?? '').length > 12) return REJECT;
    const v = Number(item);
    if (!(v > 0) || (out.length > 0 && v <= out[out.length - 1])) return REJECT;
    out.push(v);
  }
  return accept(out);
}

function dnsOracle(raw: string): Verdict {
  if (raw.length > 253) return REJECT;
  const ok = raw.split('.').every((l) => /^[a-z0-9]([a-z0-9-]*[a-z0-9])?$/.test(l));
  return ok ? accept(raw) : REJECT;
}

function fileOracle(raw: string): Verdict {
  if (C0_C1.test(raw)) return REJECT;
  const path = resolvePath(process.cwd(), raw);
  try {
    if (!statSync(path).isFile()) return REJECT;
    accessSync(path, fsConstants.R_OK);
  } catch {
    return REJECT;
  }
  return accept(path);
}

function decode(text: string): string | null {
  try {
    return decodeURIComponent(text);
  } catch {
    return null;
  }
}

function headersOracle(raw: string): Verdict {
  const out: [string, string][] = [];
  for (const entry of raw.split(',')) {
    const t = entry.trim();
    const eq = t.indexOf('=');
    if (t === '' || eq < 0) return REJECT;
    const key = t.slice(0, eq).trim().toLowerCase();
    const value = decode(t.slice(eq + 1).trim());
    if (!/^[a-z0-9_.-]+$/.test(key) || key.endsWith('-bin')) return REJECT;
    if (value === null || value === '' || !/^[\x20-\x7e]+$/.test(value)) return REJECT;
    if (out.some(([k]) => k === key)) return REJECT;
    out.push([key, value]);
  }
  return accept(Object.fromEntries(out));
}

function attributesOracle(raw: string): Verdict {
  const out: [string, string][] = [];
  for (const entry of raw.split(',')) {
    if (entry.trim() === '') continue;
    const parts = entry.split('=');
    if (parts.length !== 2) return REJECT;
    const key = decode(parts[0].trim());
    const value = decode(parts[1].trim());
    if (key === null || value === null || key === '') return REJECT;
    if (key.length > 255 || value.length > 255) return REJECT;
    if ([key, value].some((s) => C0_C1.test(s) || INVISIBLE.test(s))) return REJECT;
    if (out.some(([k]) => k === key)) return REJECT;
    out.push([key, value]);
  }
  return accept(Object.fromEntries(out));
}

function textOracle(raw: string, max: number): Verdict {
  return raw.length <= max && !C0_C1.test(raw) && !INVISIBLE.test(raw) ? accept(raw) : REJECT;
}

function oracle(kind: Kind, raw: string): Verdict {
  switch (kind.name) {
    case 'ifnames':
      return ifnamesOracle(raw);
    case 'ports':
      return portsOracle(raw);
    case 'buckets':
      return bucketsOracle(raw);
    case 'dns':
      return dnsOracle(raw);
    case 'file':
      return fileOracle(raw);
    case 'headers':
      return headersOracle(raw);
    case 'attributes':
      return attributesOracle(raw);
    case 'text':
      return textOracle(raw, kind.max);
    default:
      throw new Error(`oracle: no form oracle for kind ${kind.name}; its cells must be 'reject'`);
  }
}

function verdictFor(v: ConfigVariable, kind: Kind, category: Category, raw: string): Verdict {
  if (raw === '') return emptyIsUnset(v.name) ? { verdict: 'unset' } : REJECT;
  const cell = MATRIX[kind.name][category];
  if (cell === 'reject') return REJECT;
  const verdict = oracle(kind, raw);
  if (cell === 'accept') {
    assert.equal(verdict.verdict, 'accept', `${v.name}: the table says every ${category} passes`);
  }
  return verdict;
}

// ---------------------------------------------------------------------------
// Where an accepted value lands in AgentConfig

const GETTERS: Readonly<Record<string, (c: AgentConfig) => unknown>> = {
  INTERFACE: (c) => c.interfaces,
  AUDIO_PORTS: (c) => c.audioPorts,
  LATENCY_BUCKETS: (c) => c.latencyBuckets,
  K8S_NODE_NAME: (c) => c.k8s.nodeName,
  K8S_KUBELET_URL: (c) => c.k8s.kubeletUrl,
  K8S_KUBELET_CA_FILE: (c) => c.k8s.kubeletCaFile,
  K8S_TOKEN_FILE: (c) => c.k8s.tokenFile,
  OTEL_EXPORTER_OTLP_ENDPOINT: (c) => c.otlp.endpoint,
  OTEL_EXPORTER_OTLP_METRICS_ENDPOINT: (c) => c.otlp.endpoint,
  OTEL_EXPORTER_OTLP_HEADERS: (c) => c.otlp.headers,
  OTEL_EXPORTER_OTLP_METRICS_HEADERS: (c) => c.otlp.headers,
  OTEL_EXPORTER_OTLP_CERTIFICATE: (c) => c.otlp.certificatePath,
  OTEL_EXPORTER_OTLP_METRICS_CERTIFICATE: (c) => c.otlp.certificatePath,
  OTEL_EXPORTER_OTLP_CLIENT_KEY: (c) => c.otlp.clientKeyPath,
  OTEL_EXPORTER_OTLP_METRICS_CLIENT_KEY: (c) => c.otlp.clientKeyPath,
  OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE: (c) => c.otlp.clientCertificatePath,
  OTEL_EXPORTER_OTLP_METRICS_CLIENT_CERTIFICATE: (c) => c.otlp.clientCertificatePath,
  OTEL_SERVICE_NAME: (c) => c.otlp.serviceName,
  OTEL_RESOURCE_ATTRIBUTES: (c) => c.otlp.resourceAttributes,
};

/** Other variables an accepted value needs to load (mutual TLS comes in pairs). */
function companions(name: string): Env {
  if (name.includes('CLIENT_KEY')) {
    return { [name.replace('CLIENT_KEY', 'CLIENT_CERTIFICATE')]: readableFile };
  }
  if (name.includes('CLIENT_CERTIFICATE')) {
    return { [name.replace('CLIENT_CERTIFICATE', 'CLIENT_KEY')]: readableFile };
  }
  return {};
}

// ---------------------------------------------------------------------------
// Checking one (variable, value)

/** Characters that must never reach a terminal or a log raw: C0/C1, DEL, bidi, invisible. */
const UNSAFE_OUTPUT =
  /[\u0000-\u0009\u000b-\u001f\u007f-\u009f\u200b-\u200f\u2028-\u202e\u2066-\u2069\ufeff]|[\ud800-\udfff]/u;

/** The quoted display of a value, unescaped: a check independent of log.ts's escaper. */
function unquote(shown: string): string {
  assert.ok(shown.startsWith('"') && shown.endsWith('"'), `quoted: ${shown}`);
  let out = '';
  const body = shown.slice(1, -1);
  for (let i = 0; i < body.length; i++) {
    const ch = body[i];
    if (ch !== '\\') {
      assert.notEqual(ch, '"', `unescaped quote in ${shown}`);
      out += ch;
      continue;
    }
    const next = body[++i];
    if (next === 'n') out += '\n';
    else if (next === 'r') out += '\r';
    else if (next === 't') out += '\t';
    else if (next === '"' || next === '\\') out += next;
    else if (next === 'u' && body[i + 1] === '{') {
      const end = body.indexOf('}', i);
      out += String.fromCodePoint(parseInt(body.slice(i + 2, end), 16));
      i = end;
    } else if (next === 'u') {
      out += String.fromCharCode(parseInt(body.slice(i + 1, i + 5), 16));
      i += 4;
    } else assert.fail(`unknown escape \\${next} in ${shown}`);
  }
  return out;
}

const MAX_SHOWN_CODE_POINTS = 64;
const LOAD_BUDGET_MS = 250;

function timedLoad(env: Env): { config?: AgentConfig; error?: unknown; ms: number } {
  const t0 = performance.now();
  try {
    const config = loadConfig(env);
    return { config, ms: performance.now() - t0 };
  } catch (error) {
    return { error, ms: performance.now() - t0 };
  }
}

function describeValue(raw: string): string {
  const s = JSON.stringify(raw);
  return s.length > 80 ? `${s.slice(0, 80)}... (${raw.length} chars)` : s;
}

/** The problem line for `v` is one clear, safe line: name, shown value, reason, accepted form. */
function assertProblemLine(v: ConfigVariable, raw: string, line: string): void {
  const what = `${v.name}=${describeValue(raw)}`;
  assert.ok(
    !UNSAFE_OUTPUT.test(line),
    `${what}: raw control/invisible character in ${JSON.stringify(line)}`,
  );
  assert.ok(!line.includes('\n') && !line.includes('\r'), `${what}: one line`);
  assert.ok(line.endsWith(`expected ${v.expected}`), `${what}: states the accepted form: ${line}`);
  const m = /^([A-Z0-9_]+)=(.*?) is invalid: /.exec(line);
  assert.ok(m !== null, `${what}: "NAME=value is invalid: ..." form: ${line.slice(0, 300)}`);
  assert.equal(m[1], v.name);
  const shown = m[2];
  const hidden = v.sensitive || (raw.includes('@') && kindOf(v).name === 'url');
  if (hidden) {
    assert.equal(shown, '(hidden)', `${what}: a secret is never shown`);
    // Not even a piece of it: no 6-character window of the value outside the fixed text.
    for (let i = 0; i + 6 <= raw.length && i < 2000; i++) {
      const piece = raw.slice(i, i + 6);
      if (!v.expected.includes(piece)) assert.ok(!line.includes(piece), `${what}: leaks ${piece}`);
    }
    return;
  }
  const chars = Array.from(raw);
  const truncated = / \(truncated, (\d+) characters\)$/.exec(shown);
  const quoted = truncated === null ? shown : shown.slice(0, truncated.index);
  const shownValue = unquote(quoted);
  if (chars.length > MAX_SHOWN_CODE_POINTS) {
    assert.ok(truncated !== null, `${what}: a long value is truncated`);
    assert.equal(Number(truncated[1]), chars.length, `${what}: states the full length`);
    assert.equal(shownValue, chars.slice(0, MAX_SHOWN_CODE_POINTS).join(''));
  } else {
    assert.equal(truncated, null, `${what}: a short value is shown whole`);
    assert.equal(shownValue, raw, `${what}: the value shown is the value given`);
  }
}

function checkOne(v: ConfigVariable, category: string, raw: string, verdict: Verdict): void {
  const what = `${v.name}=${describeValue(raw)} (${category})`;
  const extra = verdict.verdict === 'accept' ? companions(v.name) : {};
  const env = { ...extra, [v.name]: raw };
  const r = timedLoad(env);
  // Slow once may be the machine or the GC; slow every time is the value (a regex gone wrong).
  const ms = r.ms < LOAD_BUDGET_MS ? r.ms : Math.min(r.ms, timedLoad(env).ms, timedLoad(env).ms);
  assert.ok(ms < LOAD_BUDGET_MS, `${what}: loadConfig took ${ms.toFixed(0)} ms`);
  if (verdict.verdict === 'reject') {
    assert.ok(
      r.error instanceof ConfigError,
      `${what}: expected a ConfigError, got ${r.error === undefined ? 'a configuration' : String(r.error)}`,
    );
    const mine = r.error.problems.filter((p) => p.startsWith(`${v.name}=`));
    assert.equal(mine.length, 1, `${what}: one line about ${v.name} in:\n${r.error.message}`);
    assert.equal(r.error.problems.length, 1, `${what}: nothing else reported:\n${r.error.message}`);
    assertProblemLine(v, raw, mine[0]);
    return;
  }
  assert.equal(r.error, undefined, `${what}: must load, got ${String(r.error)}`);
  const config = r.config as AgentConfig;
  if (verdict.verdict === 'unset') {
    assert.deepEqual(config, loadConfig({}), `${what}: same as unset`);
    return;
  }
  const get = GETTERS[v.name];
  assert.ok(get !== undefined, `${v.name} accepts ${describeValue(raw)}: add its GETTERS entry`);
  assert.deepEqual(get(config), verdict.value, `${what}: parsed value`);
  const got = get(config);
  if (typeof got === 'object' && got !== null && !Array.isArray(got)) {
    assert.equal(Object.getPrototypeOf(got), Object.prototype, `${what}: plain object`);
  }
}

// ---------------------------------------------------------------------------
// Tests

const prototypeBefore = Object.getOwnPropertyNames(Object.prototype).sort();

describe('every variable against every hostile category', () => {
  it('every variable is of a known kind, and the table covers every kind and category', () => {
    for (const v of CONFIG_VARIABLES) kindOf(v);
    for (const kind of Object.keys(MATRIX) as KindName[]) {
      assert.deepEqual(Object.keys(MATRIX[kind]).sort(), [...CATEGORY_NAMES].sort(), kind);
    }
  });

  for (const v of CONFIG_VARIABLES) {
    it(`${v.name}`, () => {
      const kind = kindOf(v);
      let checked = 0;
      for (const category of CATEGORY_NAMES) {
        for (const raw of CATEGORIES[category]) {
          checkOne(v, category, raw, verdictFor(v, kind, category, raw));
          checked++;
        }
      }
      for (const [raw, verdict] of EXTRA[kind.name] ?? []) {
        checkOne(v, 'extra', raw, verdict);
        checked++;
      }
      assert.ok(checked >= 70, `${v.name}: ${checked} values`);
    });
  }

  it('leaves Object.prototype alone', () => {
    assert.deepEqual(Object.getOwnPropertyNames(Object.prototype).sort(), prototypeBefore);
    assert.equal(({} as Record<string, unknown>).polluted, undefined);
  });
});

/** One rejected hostile value per variable, from categories spread over the variables. */
function hostileEnv(pick: (v: ConfigVariable, i: number) => string | undefined): Env {
  const env: Env = {};
  CONFIG_VARIABLES.forEach((v, i) => {
    const raw = pick(v, i);
    if (raw !== undefined) env[v.name] = raw;
  });
  return env;
}

/** A value of `v` that must be rejected, preferring `category`; never NUL (no env can hold it). */
function rejectedValue(v: ConfigVariable, preferred: readonly Category[]): string | undefined {
  const kind = kindOf(v);
  for (const category of [...preferred, ...CATEGORY_NAMES]) {
    for (const raw of CATEGORIES[category]) {
      if (raw.includes('\u0000') || raw.includes('\ud800')) continue;
      if (verdictFor(v, kind, category, raw).verdict === 'reject') return raw;
    }
  }
  return undefined;
}

const SPREAD: readonly Category[] = [
  'shell',
  'logForgery',
  'terminal',
  'bidi',
  'huge',
  'headerInjection',
  'urlCreds',
  'fragment',
  'hugeNumber',
  'negative',
  'radix',
  'unknownEnum',
  'whitespace',
  'empty',
];

describe('all variables hostile at once', () => {
  it('one line per variable, in table order, none unsafe, none leaking a secret', () => {
    const secret = 'Bearer%0D%0ASuperSecret42';
    const env = hostileEnv((v, i) =>
      v.sensitive ? `authorization=${secret}` : rejectedValue(v, [SPREAD[i % SPREAD.length]]),
    );
    const r = timedLoad(env);
    assert.ok(r.error instanceof ConfigError, String(r.error));
    const names = CONFIG_VARIABLES.map((v) => v.name).filter((n) => env[n] !== undefined);
    assert.deepEqual(
      r.error.problems.map((p) => /^[A-Z0-9_]+/.exec(p)?.[0]),
      names,
    );
    for (const v of CONFIG_VARIABLES) {
      const line = r.error.problems.find((p) => p.startsWith(`${v.name}=`));
      assert.ok(line !== undefined, v.name);
      assertProblemLine(v, env[v.name] ?? '', line);
    }
    assert.ok(!r.error.message.includes('SuperSecret42'));
    assert.ok(r.error.message.length < CONFIG_VARIABLES.length * 1000, 'bounded message');
  });
});

// ---------------------------------------------------------------------------
// Process level

const MAIN = fileURLToPath(new URL('../src/main.js', import.meta.url));
const tag = `${process.pid % 10000}`;
const HOST_IF = `altcf${tag}h`;
const NS = `alt-cfg-${tag}`;

function run(cmd: string, args: string[]): string {
  return execFileSync(cmd, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
}

function removeVeth(): void {
  for (const args of [
    ['link', 'del', HOST_IF],
    ['netns', 'del', NS],
  ]) {
    try {
      run('ip', args);
    } catch {
      // absent
    }
  }
}

function createVeth(): void {
  removeVeth();
  run('ip', ['netns', 'add', NS]);
  run('ip', ['link', 'add', HOST_IF, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', NS]);
  run('ip', ['link', 'set', HOST_IF, 'up']);
}

/** What the agent could have left on the veth: a clsact qdisc, tc filters, TCX links. */
function attachmentsOn(ifname: string): string[] {
  const found: string[] = [];
  const qdiscs = run('tc', ['qdisc', 'show', 'dev', ifname]);
  if (/clsact/.test(qdiscs)) found.push(`qdisc: ${qdiscs.trim()}`);
  for (const dir of ['ingress', 'egress']) {
    try {
      const f = run('tc', ['filter', 'show', 'dev', ifname, dir]);
      if (f.trim() !== '') found.push(`tc ${dir}: ${f.trim()}`);
    } catch {
      // no clsact: no filters
    }
  }
  const ifindex = Number(readFileSync(`/sys/class/net/${ifname}/ifindex`, 'utf8').trim());
  const links = JSON.parse(run('bpftool', ['-j', 'link', 'show']) || '[]') as {
    type?: string;
    ifindex?: number;
  }[];
  for (const l of links) {
    if (l.ifindex === ifindex) found.push(`bpf link: ${JSON.stringify(l)}`);
  }
  return found;
}

async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const port = (server.address() as AddressInfo).port;
  await new Promise<void>((r) => server.close(() => r()));
  return port;
}

function tryConnect(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = connect({ port, host: '127.0.0.1' });
    s.once('connect', () => {
      s.destroy();
      resolve(true);
    });
    s.once('error', () => resolve(false));
  });
}

interface AgentRun {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  connected: boolean;
}

/** Runs the agent with exactly `env` (and PATH), probing the metrics port while it lives. */
async function runAgent(env: Env, port: number): Promise<AgentRun> {
  const child = spawn(process.execPath, [MAIN], {
    env: { PATH: process.env.PATH ?? '/usr/bin:/bin', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stdout = '';
  let stderr = '';
  child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
  child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
  const exited = once(child, 'close') as Promise<[number | null, NodeJS.Signals | null]>;
  let alive = true;
  void exited.then(() => (alive = false));
  let connected = false;
  const deadline = Date.now() + 20_000;
  while (alive && Date.now() < deadline) {
    if (await tryConnect(port)) connected = true;
    await new Promise((r) => setTimeout(r, 5));
  }
  if (alive) child.kill('SIGKILL');
  const [code, signal] = await exited;
  if (await tryConnect(port)) connected = true;
  return { code, signal, stdout, stderr, connected };
}

/**
 * The agent exits before attaching, so these run without root too; only the look at a test
 * veth (nothing attached to an interface it would have matched) needs root. That part is
 * skipped loudly without root, and missing it fails under CI.
 */
function withVeth(t: TestContext): boolean {
  const reason = rootUnavailable();
  if (reason === undefined) {
    createVeth();
    t.after(removeVeth);
    return true;
  }
  if (process.env.CI === 'true') assert.fail(`${t.name}: ${reason}, and CI must check the veth`);
  console.warn(`PARTLY SKIPPED ${t.name}: no veth attachment check (${reason})`);
  t.diagnostic(`veth attachment check skipped: ${reason}`);
  return false;
}

test('process: hostile values of every kind exit 2 before serving or attaching', async (t) => {
  const root = withVeth(t);
  const byKind = new Map<KindName, ConfigVariable>();
  for (const v of CONFIG_VARIABLES) if (!byKind.has(kindOf(v).name)) byKind.set(kindOf(v).name, v);
  let i = 0;
  for (const [kind, v] of byKind) {
    const raw = rejectedValue(v, [SPREAD[i++ % SPREAD.length]]);
    assert.ok(raw !== undefined, `no rejected value for ${v.name}`);
    const port = await freePort();
    const env: Env = {
      INTERFACE: root ? HOST_IF : 'lo',
      METRICS_PORT: String(port),
      [v.name]: raw,
    };
    const r = await runAgent(env, port);
    const what = `${kind} ${v.name}=${describeValue(raw)}`;
    assert.equal(r.signal, null, `${what}: ended by ${r.signal}; stderr: ${r.stderr}`);
    assert.equal(r.code, 2, `${what}: exit code; stderr: ${r.stderr}`);
    const lines = r.stderr.split('\n').filter((l) => l !== '');
    assert.equal(lines[0], 'audio-latency-tracker: invalid configuration', what);
    assert.equal(lines.length, 2, `${what}: one problem line:\n${r.stderr.slice(0, 2000)}`);
    assertProblemLine(v, raw, lines[1]);
    assert.equal(r.stdout, '', `${what}: nothing started, nothing logged`);
    assert.equal(r.connected, false, `${what}: metrics port ${port} was listening`);
    if (root) assert.deepEqual(attachmentsOn(HOST_IF), [], `${what}: left attached`);
  }
});

test('process: every variable hostile at once -> exit 2, every variable named, no secret', async (t) => {
  const root = withVeth(t);
  const secret = 'SuperSecret42';
  const env = hostileEnv((v, i) =>
    v.sensitive
      ? `authorization=Bearer%0A${secret}`
      : v.name === 'INTERFACE' || v.name === 'METRICS_PORT'
        ? undefined
        : rejectedValue(v, [SPREAD[(i + 3) % SPREAD.length]]),
  );
  const port = await freePort();
  env.INTERFACE = root ? HOST_IF : 'lo';
  env.METRICS_PORT = String(port);
  const r = await runAgent(env, port);
  assert.equal(r.code, 2, r.stderr.slice(0, 2000));
  assert.equal(r.stdout, '');
  assert.equal(r.connected, false);
  assert.ok(!r.stderr.includes(secret), 'the header secret is never printed');
  assert.ok(!UNSAFE_OUTPUT.test(r.stderr), 'no raw control or invisible character on stderr');
  const named = new Set(r.stderr.split('\n').map((l) => /^([A-Z0-9_]+)=/.exec(l)?.[1]));
  for (const v of CONFIG_VARIABLES) {
    if (v.name === 'INTERFACE' || v.name === 'METRICS_PORT') continue;
    assert.ok(named.has(v.name), `${v.name} named on stderr`);
  }
  if (root) assert.deepEqual(attachmentsOn(HOST_IF), []);
});

test('the table is honest: no hostile value is an IP address (the IP kind rejects them all)', () => {
  for (const category of CATEGORY_NAMES) {
    for (const raw of CATEGORIES[category]) assert.equal(isIP(raw), 0, JSON.stringify(raw));
  }
});
