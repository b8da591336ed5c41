/**
 * Structured logging: one JSON object per line on stdout,
 * {"time": ISO-8601, "level", "msg", ...fields}.
 *
 * Logging must never take the daemon down, so every public function here
 * swallows its own failures (unserialisable fields, a broken stdout) and
 * degrades to a smaller line instead of throwing.
 */

export type LogLevel = 'debug' | 'info' | 'warn' | 'error';
export const LOG_LEVELS: readonly LogLevel[] = Object.freeze(['debug', 'info', 'warn', 'error']);

const LEVEL_RANK: Readonly<Record<LogLevel, number>> = { debug: 10, info: 20, warn: 30, error: 40 };

/** Keys every line owns; caller fields with these names are renamed so they cannot forge them. */
const RESERVED_KEYS: ReadonlySet<string> = new Set(['time', 'level', 'msg']);
const MAX_CAUSE_DEPTH = 3;

export type LogFields = Readonly<Record<string, unknown>>;
export type LineWriter = (line: string) => void;

export interface Logger {
  readonly level: LogLevel;
  isEnabled(level: LogLevel): boolean;
  debug(msg: string, fields?: LogFields): void;
  info(msg: string, fields?: LogFields): void;
  warn(msg: string, fields?: LogFields): void;
  error(msg: string, fields?: LogFields): void;
  log(level: LogLevel, msg: string, fields?: LogFields): void;
  /** A logger that adds `fields` to every line (the child's own fields win over the parent's). */
  child(fields: LogFields): Logger;
}

export interface LoggerOptions {
  /** Receives one complete JSON line without the trailing newline. Default: process.stdout. */
  readonly write?: LineWriter;
  /** Wall clock in ms since the epoch. Default: Date.now. */
  readonly now?: () => number;
  /** Fields bound to every line of this logger. */
  readonly fields?: LogFields;
}

export function isLogLevel(value: string): value is LogLevel {
  return (LOG_LEVELS as readonly string[]).includes(value);
}

/** Writes to stdout; a closed or broken stdout must not crash the agent. */
export const stdoutWriter: LineWriter = (line: string): void => {
  try {
    process.stdout.write(line + '\n');
  } catch {
    // Nothing sensible left to report to.
  }
};

export function createLogger(level: LogLevel, options: LoggerOptions = {}): Logger {
  const write = options.write ?? stdoutWriter;
  const now = options.now ?? Date.now;
  return makeLogger(level, write, now, { ...(options.fields ?? {}) });
}

function makeLogger(
  level: LogLevel,
  write: LineWriter,
  now: () => number,
  bound: LogFields,
): Logger {
  const threshold = LEVEL_RANK[level];
  const emit = (lvl: LogLevel, msg: string, fields?: LogFields): void => {
    if (LEVEL_RANK[lvl] < threshold) return;
    const line = formatLine(now, lvl, msg, bound, fields);
    try {
      write(line);
    } catch {
      // A failing sink must not turn a log call into a crash.
    }
  };
  return {
    level,
    isEnabled: (lvl: LogLevel): boolean => LEVEL_RANK[lvl] >= threshold,
    debug: (msg, fields) => emit('debug', msg, fields),
    info: (msg, fields) => emit('info', msg, fields),
    warn: (msg, fields) => emit('warn', msg, fields),
    error: (msg, fields) => emit('error', msg, fields),
    log: (lvl, msg, fields) => emit(lvl, msg, fields),
    child: (fields: LogFields): Logger => makeLogger(level, write, now, { ...bound, ...fields }),
  };
}

function formatLine(
  now: () => number,
  level: LogLevel,
  msg: unknown,
  bound: LogFields,
  fields: LogFields | undefined,
): string {
  const time = safeIsoTime(now);
  const text = typeof msg === 'string' ? msg : String(msg);
  const record: Record<string, unknown> = { time, level, msg: text };
  try {
    copyFields(record, bound);
    if (fields !== undefined && fields !== null) copyFields(record, fields);
    return JSON.stringify(record, jsonReplacer());
  } catch (err) {
    // A getter that throws, a hostile toJSON...: keep the message, drop the fields.
    return JSON.stringify({ time, level, msg: text, log_error: describeFailure(err) });
  }
}

function copyFields(target: Record<string, unknown>, fields: LogFields): void {
  for (const key of Object.keys(fields)) {
    const outKey = RESERVED_KEYS.has(key) ? `field_${key}` : key;
    // defineProperty so a key named "__proto__" stays a plain field.
    Object.defineProperty(target, outKey, {
      value: fields[key],
      enumerable: true,
      writable: true,
      configurable: true,
    });
  }
}

function safeIsoTime(now: () => number): string {
  try {
    return new Date(now()).toISOString();
  } catch {
    return new Date().toISOString();
  }
}

function describeFailure(err: unknown): string {
  try {
    return err instanceof Error ? err.message : String(err);
  } catch {
    return 'unserialisable log fields';
  }
}

/** JSON.stringify replacer: Errors, bigints and cycles, which JSON cannot express as they are. */
function jsonReplacer(): (this: unknown, key: string, value: unknown) => unknown {
  const seen = new WeakSet<object>();
  return function replace(_key: string, value: unknown): unknown {
    if (typeof value === 'bigint') return value.toString();
    if (value instanceof Error) return serializeError(value);
    if (typeof value === 'object' && value !== null) {
      if (seen.has(value)) return '[Circular]';
      seen.add(value);
    }
    return value;
  };
}

export interface SerializedError {
  readonly name: string;
  readonly message: string;
  readonly stack?: string;
  readonly code?: string | number;
  readonly errno?: number;
  readonly syscall?: string;
  readonly cause?: SerializedError | string;
}

/** The parts of an Error worth logging; Node system errors carry code/errno/syscall. */
export function serializeError(err: unknown, depth = 0): SerializedError {
  if (!(err instanceof Error)) return { name: 'NonError', message: safeString(err) };
  const out: {
    name: string;
    message: string;
    stack?: string;
    code?: string | number;
    errno?: number;
    syscall?: string;
    cause?: SerializedError | string;
  } = { name: safeString(err.name), message: safeString(err.message) };
  if (typeof err.stack === 'string') out.stack = err.stack;
  const extra = err as Error & { code?: unknown; errno?: unknown; syscall?: unknown };
  if (typeof extra.code === 'string' || typeof extra.code === 'number') out.code = extra.code;
  if (typeof extra.errno === 'number') out.errno = extra.errno;
  if (typeof extra.syscall === 'string') out.syscall = extra.syscall;
  if (err.cause !== undefined) {
    out.cause =
      depth < MAX_CAUSE_DEPTH ? serializeError(err.cause, depth + 1) : safeString(err.cause);
  }
  return out;
}

function safeString(value: unknown): string {
  try {
    return typeof value === 'string' ? value : String(value);
  } catch {
    return '[unprintable]';
  }
}

/**
 * Renders an untrusted string for a human-readable message: quoted, at most
 * `maxChars` characters, with control, bidi and other invisible characters
 * escaped so a value cannot forge extra lines or reorder a terminal display.
 */
export function quoteForDisplay(value: string, maxChars = 64): string {
  const chars = Array.from(value);
  const truncated = chars.length > maxChars;
  const shown = truncated ? chars.slice(0, maxChars) : chars;
  let out = '"';
  for (const ch of shown) out += escapeChar(ch);
  out += '"';
  if (truncated) out += ` (truncated, ${chars.length} characters)`;
  return out;
}

function escapeChar(ch: string): string {
  switch (ch) {
    case '"':
      return '\\"';
    case '\\':
      return '\\\\';
    case '\n':
      return '\\n';
    case '\r':
      return '\\r';
    case '\t':
      return '\\t';
  }
  const cp = ch.codePointAt(0) ?? 0;
  if (isInvisible(cp)) {
    return cp > 0xffff ? `\\u{${cp.toString(16)}}` : `\\u${cp.toString(16).padStart(4, '0')}`;
  }
  return ch;
}

function isInvisible(cp: number): boolean {
  return (
    cp < 0x20 ||
    (cp >= 0x7f && cp <= 0x9f) || // DEL and C1 controls (CSI 0x9b starts terminal escapes)
    (cp >= 0x200b && cp <= 0x200f) || // zero-width characters, LRM/RLM
    (cp >= 0x2028 && cp <= 0x202e) || // line/paragraph separators, bidi embeddings
    (cp >= 0x2066 && cp <= 0x2069) || // bidi isolates
    cp === 0xfeff ||
    (cp >= 0xd800 && cp <= 0xdfff) // lone surrogates
  );
}

export interface RateLimitedLogger {
  debug(msg: string, fields?: LogFields): void;
  info(msg: string, fields?: LogFields): void;
  warn(msg: string, fields?: LogFields): void;
  error(msg: string, fields?: LogFields): void;
  /** Lines dropped since the last one written. */
  readonly suppressed: number;
  /** Writes a summary line now if anything was suppressed (e.g. at shutdown). */
  flush(): void;
}

interface RateState {
  lastAt: number;
  suppressed: number;
  lastLevel: LogLevel;
  lastMsg: string;
}

const rateStates = new WeakMap<Logger, Map<string, RateState>>();

/**
 * For failures that repeat (a collector that is down, an interface that keeps
 * failing): the first line is written, then at most one per `intervalMs` for
 * this (logger, key), carrying `suppressed`: how many were dropped in between.
 * State is shared by every call with the same logger and key, so call sites
 * can write `rateLimited(log, 'otlp-export', 60_000).warn(...)` inline.
 */
export function rateLimited(
  logger: Logger,
  key: string,
  intervalMs: number,
  now: () => number = Date.now,
): RateLimitedLogger {
  let perLogger = rateStates.get(logger);
  if (perLogger === undefined) {
    perLogger = new Map();
    rateStates.set(logger, perLogger);
  }
  let state = perLogger.get(key);
  if (state === undefined) {
    state = { lastAt: Number.NEGATIVE_INFINITY, suppressed: 0, lastLevel: 'info', lastMsg: '' };
    perLogger.set(key, state);
  }
  const st = state;
  const emit = (level: LogLevel, msg: string, fields?: LogFields): void => {
    if (!logger.isEnabled(level)) return;
    const t = safeNow(now);
    if (t - st.lastAt < intervalMs) {
      st.suppressed++;
      st.lastLevel = level;
      st.lastMsg = msg;
      return;
    }
    const extra = st.suppressed > 0 ? { suppressed: st.suppressed } : {};
    st.lastAt = t;
    st.suppressed = 0;
    logger.log(level, msg, withFields(fields, { ...extra, rate_limit_key: key }));
  };
  return {
    debug: (msg, fields) => emit('debug', msg, fields),
    info: (msg, fields) => emit('info', msg, fields),
    warn: (msg, fields) => emit('warn', msg, fields),
    error: (msg, fields) => emit('error', msg, fields),
    get suppressed(): number {
      return st.suppressed;
    },
    flush(): void {
      if (st.suppressed === 0) return;
      logger.log(st.lastLevel, st.lastMsg, { suppressed: st.suppressed, rate_limit_key: key });
      st.suppressed = 0;
      st.lastAt = safeNow(now);
    },
  };
}

/** Merges without throwing: a hostile getter in `fields` is left for the logger to report. */
function withFields(fields: LogFields | undefined, extra: LogFields): LogFields {
  try {
    return { ...fields, ...extra };
  } catch {
    return fields ?? extra;
  }
}

function safeNow(now: () => number): number {
  try {
    return now();
  } catch {
    return Date.now();
  }
}
