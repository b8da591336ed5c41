/**
 * Follows the node's network interfaces so the classifier is attached to
 * every interface matching INTERFACE, including pod veths that come and go.
 *
 * Polling /sys/class/net is deliberate: it needs no netlink socket, works in
 * any network namespace the agent runs in, and a one-second delay before a new
 * pod's veth is attached is acceptable for latency statistics.
 */

import { readFileSync, readdirSync } from 'node:fs';
import { quoteForDisplay } from './log.js';

/** IFNAMSIZ is 16 including the terminating NUL. */
export const IFNAME_MAX_LENGTH = 15;
const SYS_CLASS_NET = '/sys/class/net';
const DEFAULT_INTERVAL_MS = 1000;
const MAX_RETRY_DELAY_MS = 60_000;

// ---------------------------------------------------------------------------
// Glob patterns: * ? [abc] [a-z] [!x] (also [^x]), anchored at both ends. No escapes.

type Token =
  | { readonly kind: 'char'; readonly code: number }
  | { readonly kind: 'any' }
  | { readonly kind: 'star' }
  | {
      readonly kind: 'class';
      readonly negate: boolean;
      readonly ranges: readonly (readonly [number, number])[];
    };

export interface IfnamePattern {
  readonly source: string;
  matches(name: string): boolean;
}

/**
 * Why `pattern` is not an acceptable interface name pattern, or null when it is.
 * The reason never repeats the pattern, so callers decide how to display it.
 */
export function checkIfnamePattern(pattern: string): string | null {
  const parsed = parsePattern(pattern);
  return typeof parsed === 'string' ? parsed : null;
}

export function compileIfnamePattern(pattern: string): IfnamePattern {
  const parsed = parsePattern(pattern);
  if (typeof parsed === 'string') {
    throw new Error(`invalid interface pattern ${quoteForDisplay(pattern)}: ${parsed}`);
  }
  const tokens = parsed;
  return Object.freeze({
    source: pattern,
    matches: (name: string): boolean => matchTokens(tokens, name),
  });
}

/**
 * Literal characters are limited to what interface names use in practice
 * (the kernel would also take "$", "(", quotes...): a pattern is then never
 * shell- or log-hostile, and "[]", "!", "^" keep their glob meaning only.
 */
const NAME_CHAR = /^[A-Za-z0-9_.-]$/;

function parsePattern(pattern: string): readonly Token[] | string {
  if (pattern.length === 0) return 'is empty';
  if (pattern.length > IFNAME_MAX_LENGTH) {
    return `is longer than ${IFNAME_MAX_LENGTH} characters (Linux IFNAMSIZ)`;
  }
  if (pattern === '.' || pattern === '..') return 'is not a valid interface name';
  const tokens: Token[] = [];
  let i = 0;
  while (i < pattern.length) {
    const ch = pattern[i];
    if (ch === '*') {
      // Consecutive stars are one star; keeps matching linear.
      if (tokens.at(-1)?.kind !== 'star') tokens.push({ kind: 'star' });
      i++;
    } else if (ch === '?') {
      tokens.push({ kind: 'any' });
      i++;
    } else if (ch === '[') {
      const cls = parseClass(pattern, i);
      if (typeof cls === 'string') return cls;
      tokens.push(cls.token);
      i = cls.next;
    } else if (ch === ']') {
      return 'has a "]" without a matching "["';
    } else if (NAME_CHAR.test(ch)) {
      tokens.push({ kind: 'char', code: pattern.charCodeAt(i) });
      i++;
    } else {
      return INVALID_CHAR_REASON;
    }
  }
  return tokens;
}

const INVALID_CHAR_REASON =
  'contains a character other than letters, digits, "_", ".", "-" and the glob characters * ? [ ] ! ^';

function parseClass(pattern: string, open: number): { token: Token; next: number } | string {
  let i = open + 1;
  let negate = false;
  if (pattern[i] === '!' || pattern[i] === '^') {
    negate = true;
    i++;
  }
  const ranges: (readonly [number, number])[] = [];
  while (i < pattern.length && pattern[i] !== ']') {
    if (!NAME_CHAR.test(pattern[i])) return INVALID_CHAR_REASON;
    const lo = pattern.charCodeAt(i);
    // "a-z" is a range; a "-" first or last in the class is a literal "-".
    if (pattern[i + 1] === '-' && i + 2 < pattern.length && pattern[i + 2] !== ']') {
      if (!NAME_CHAR.test(pattern[i + 2])) return INVALID_CHAR_REASON;
      const hi = pattern.charCodeAt(i + 2);
      if (hi < lo) return 'has a reversed range in "[...]"';
      ranges.push([lo, hi]);
      i += 3;
    } else {
      ranges.push([lo, lo]);
      i++;
    }
  }
  if (i >= pattern.length) return 'has a "[" without a matching "]"';
  if (ranges.length === 0) return 'has an empty "[]"';
  return { token: { kind: 'class', negate, ranges }, next: i + 1 };
}

function matchOne(token: Token, code: number): boolean {
  switch (token.kind) {
    case 'char':
      return token.code === code;
    case 'any':
      return true;
    case 'star':
      return false;
    case 'class': {
      let inside = false;
      for (const [lo, hi] of token.ranges) {
        if (code >= lo && code <= hi) {
          inside = true;
          break;
        }
      }
      return inside !== token.negate;
    }
  }
}

/** Greedy match with backtracking to the last star: O(pattern x name). */
function matchTokens(tokens: readonly Token[], name: string): boolean {
  let t = 0;
  let n = 0;
  let starT = -1;
  let starN = 0;
  while (n < name.length) {
    const tok = tokens[t];
    if (tok !== undefined && tok.kind === 'star') {
      starT = t++;
      starN = n;
    } else if (tok !== undefined && matchOne(tok, name.charCodeAt(n))) {
      t++;
      n++;
    } else if (starT >= 0) {
      t = starT + 1;
      n = ++starN;
    } else {
      return false;
    }
  }
  while (tokens[t]?.kind === 'star') t++;
  return t === tokens.length;
}

// ---------------------------------------------------------------------------
// /sys/class/net access

export interface SysNetLister {
  /** Names of the interfaces currently present. */
  list(): readonly string[];
  /** The interface's ifindex, or null when it vanished since list(). */
  ifindex(name: string): number | null;
}

export const sysClassNetLister: SysNetLister = {
  list: (): readonly string[] => readdirSync(SYS_CLASS_NET),
  ifindex: (name: string): number | null => {
    let text: string;
    try {
      text = readFileSync(`${SYS_CLASS_NET}/${name}/ifindex`, 'utf8');
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      // Vanished between readdir and read: a normal race with pod teardown.
      if (code === 'ENOENT' || code === 'ENODEV' || code === 'ENOTDIR') return null;
      throw err;
    }
    return parseIfindex(name, text);
  },
};

function parseIfindex(name: string, text: string): number {
  const trimmed = text.trim();
  const value = /^[1-9][0-9]{0,9}$/.test(trimmed) ? Number(trimmed) : NaN;
  if (!Number.isSafeInteger(value)) {
    throw new Error(
      `unexpected content in ${SYS_CLASS_NET}/${name}/ifindex: ${quoteForDisplay(trimmed)}`,
    );
  }
  return value;
}

// ---------------------------------------------------------------------------
// The watcher

export type WatcherOperation = 'list' | 'ifindex' | 'appear' | 'vanish';

export interface WatcherErrorContext {
  readonly op: WatcherOperation;
  readonly name?: string;
  readonly ifindex?: number;
}

export interface InterfaceWatcherOptions {
  /** INTERFACE patterns (validated again here: an invalid one throws). */
  readonly patterns: readonly string[];
  readonly onAppear: (name: string, ifindex: number) => void | Promise<void>;
  readonly onVanish: (name: string, ifindex: number) => void | Promise<void>;
  /** Every failure, including exceptions from the callbacks above; must not throw. */
  readonly onError: (err: Error, context: WatcherErrorContext) => void;
  readonly intervalMs?: number;
  readonly lister?: SysNetLister;
  /** Monotonic milliseconds, for the retry back-off. Default: performance.now. */
  readonly now?: () => number;
}

interface RetryState {
  readonly ifindex: number;
  readonly failures: number;
  readonly notBefore: number;
}

/**
 * Calls onAppear(name, ifindex) for every matching interface that appears and
 * onVanish(name, ifindex) for every one that goes away. A name whose ifindex
 * changed (veth deleted and recreated under the same name) is a vanish of the
 * old ifindex followed by an appear of the new one.
 *
 * If onAppear fails, the interface is not considered attached and is retried
 * on later scans with exponential back-off (interval, 2x, 4x... up to 60 s).
 * If onVanish fails, the interface is forgotten anyway: it is already gone.
 * stop() does not call onVanish: detaching at shutdown is the caller's job.
 */
export class InterfaceWatcher {
  readonly #patterns: readonly IfnamePattern[];
  readonly #options: InterfaceWatcherOptions;
  readonly #lister: SysNetLister;
  readonly #intervalMs: number;
  readonly #now: () => number;
  readonly #attached = new Map<string, number>();
  readonly #retry = new Map<string, RetryState>();
  #queue: Promise<void> = Promise.resolve();
  #timer: NodeJS.Timeout | null = null;
  #running = false;

  constructor(options: InterfaceWatcherOptions) {
    if (options.patterns.length === 0)
      throw new Error('InterfaceWatcher needs at least one pattern');
    this.#patterns = options.patterns.map(compileIfnamePattern);
    this.#options = options;
    this.#lister = options.lister ?? sysClassNetLister;
    this.#intervalMs = options.intervalMs ?? DEFAULT_INTERVAL_MS;
    if (!Number.isFinite(this.#intervalMs) || this.#intervalMs <= 0) {
      throw new Error(`InterfaceWatcher intervalMs must be > 0, got ${this.#intervalMs}`);
    }
    this.#now = options.now ?? ((): number => performance.now());
  }

  /** Interfaces currently attached (onAppear succeeded, no vanish since): name -> ifindex. */
  get attached(): ReadonlyMap<string, number> {
    return new Map(this.#attached);
  }

  /** True when `name` matches one of the patterns. */
  matches(name: string): boolean {
    return this.#patterns.some((p) => p.matches(name));
  }

  /** Starts periodic scans; the first one runs after `intervalMs` (call scanNow() first). */
  start(): void {
    if (this.#running) return;
    this.#running = true;
    this.#schedule();
  }

  /** Stops scanning; resolves once a scan in progress has finished. */
  async stop(): Promise<void> {
    this.#running = false;
    if (this.#timer !== null) {
      clearTimeout(this.#timer);
      this.#timer = null;
    }
    await this.#queue;
  }

  /**
   * One scan, resolving after every callback it triggered (including async
   * ones) has settled. Scans never overlap: concurrent calls are queued.
   */
  scanNow(): Promise<void> {
    this.#queue = this.#queue
      .then(() => this.#scan())
      .catch((err: unknown) => this.#report(err, { op: 'list' }));
    return this.#queue;
  }

  #schedule(): void {
    if (!this.#running) return;
    // setTimeout after each scan, not setInterval: slow callbacks cannot pile up scans.
    this.#timer = setTimeout(() => {
      this.#timer = null;
      void this.scanNow().then(() => this.#schedule());
    }, this.#intervalMs);
    this.#timer.unref();
  }

  async #scan(): Promise<void> {
    const present = this.#listMatching();
    if (present === null) return;
    for (const [name, ifindex] of [...this.#attached]) {
      if (present.get(name) !== ifindex) await this.#vanish(name, ifindex);
    }
    for (const name of this.#retry.keys()) {
      if (!present.has(name)) this.#retry.delete(name);
    }
    for (const [name, ifindex] of present) {
      if (!this.#attached.has(name)) await this.#appear(name, ifindex);
    }
  }

  /** Matching interfaces now present, sorted by name; null when listing failed. */
  #listMatching(): Map<string, number> | null {
    let names: readonly string[];
    try {
      names = this.#lister.list();
    } catch (err) {
      this.#report(err, { op: 'list' });
      return null;
    }
    const present = new Map<string, number>();
    for (const name of [...names].sort()) {
      if (!this.matches(name)) continue;
      let ifindex: number | null;
      try {
        ifindex = this.#lister.ifindex(name);
      } catch (err) {
        this.#report(err, { op: 'ifindex', name });
        // Unknown state: keep what we believe rather than detaching on a read error.
        const known = this.#attached.get(name);
        if (known !== undefined) present.set(name, known);
        continue;
      }
      if (ifindex !== null) present.set(name, ifindex);
    }
    return present;
  }

  async #vanish(name: string, ifindex: number): Promise<void> {
    this.#attached.delete(name);
    try {
      await this.#options.onVanish(name, ifindex);
    } catch (err) {
      this.#report(err, { op: 'vanish', name, ifindex });
    }
  }

  async #appear(name: string, ifindex: number): Promise<void> {
    const retry = this.#retry.get(name);
    const now = this.#now();
    if (retry !== undefined && retry.ifindex === ifindex && now < retry.notBefore) return;
    try {
      await this.#options.onAppear(name, ifindex);
    } catch (err) {
      const failures = retry !== undefined && retry.ifindex === ifindex ? retry.failures + 1 : 1;
      const delay = Math.min(this.#intervalMs * 2 ** (failures - 1), MAX_RETRY_DELAY_MS);
      // Half an interval of slack so the next scan at "exactly" notBefore is not skipped.
      this.#retry.set(name, { ifindex, failures, notBefore: now + delay - this.#intervalMs / 2 });
      this.#report(err, { op: 'appear', name, ifindex });
      return;
    }
    this.#retry.delete(name);
    this.#attached.set(name, ifindex);
  }

  #report(err: unknown, context: WatcherErrorContext): void {
    const error = err instanceof Error ? err : new Error(String(err));
    try {
      this.#options.onError(error, context);
    } catch {
      // The error reporter failing must not stop the watcher either.
    }
  }
}
