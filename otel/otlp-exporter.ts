import { readFileSync } from 'node:fs';
import { ExportResultCode, type ExportResult } from '@opentelemetry/core';
import { OTLPMetricExporter } from '@opentelemetry/exporter-metrics-otlp-grpc';
import { AggregationTemporalityPreference } from '@opentelemetry/exporter-metrics-otlp-http';
import { CompressionAlgorithm } from '@opentelemetry/otlp-exporter-base';
// Credentials and metadata must come from the exporter's own copy of @grpc/grpc-js: grpc-js
// checks them with instanceof, and a second copy in the tree makes that check fail.
import {
  createEmptyMetadata,
  createInsecureCredentials,
  createSslCredentials,
} from '@opentelemetry/otlp-grpc-exporter-base';
import {
  AggregationType,
  InstrumentType,
  PeriodicExportingMetricReader,
  type AggregationOption,
  type AggregationSelector,
  type AggregationTemporality,
  type PushMetricExporter,
  type ResourceMetrics,
} from '@opentelemetry/sdk-metrics';
import { validateOtlpHeaders } from './otlp-headers.js';
import { filterResourceMetrics, type SeriesPredicate } from './series-retention.js';

export type OtlpTemporality = 'cumulative' | 'delta' | 'lowmemory';
export type OtlpHistogramAggregation = 'explicit' | 'exponential';

export interface OtlpExportOptions {
  enabled: boolean;
  /** gRPC endpoint. http:// = plaintext, https:// = TLS, no scheme: `insecure` decides. */
  endpoint: string;
  /** Sent as gRPC metadata on every export. Secrets: never logged. */
  headers: Record<string, string>;
  compression: 'gzip' | 'none';
  /** Plaintext for an endpoint without scheme (OTEL_EXPORTER_OTLP_INSECURE). */
  insecure?: boolean;
  /** PEM file of the CA to trust for TLS (OTEL_EXPORTER_OTLP_CERTIFICATE). */
  certificatePath?: string;
  /** mTLS client certificate chain and key, PEM (both or neither). */
  clientCertificatePath?: string;
  clientKeyPath?: string;
  /** gRPC deadline of one export call. */
  timeoutMs: number;
  /** Period of the push (OTEL_METRIC_EXPORT_INTERVAL). */
  exportIntervalMs: number;
  /** Bound on one collect + export cycle (OTEL_METRIC_EXPORT_TIMEOUT); clamped to the interval. */
  exportTimeoutMs: number;
  temporality: OtlpTemporality;
  /** 'exponential' = base2 exponential histograms over OTLP; Prometheus stays explicit. */
  histogramAggregation: OtlpHistogramAggregation;
}

/** What onExportError receives: a message safe to log, plus counts for rate-limited logging. */
export class OtlpExportError extends Error {
  constructor(
    message: string,
    /** Failed exports since the agent started. */
    readonly failures: number,
    /** Failures not reported since the previous report (rate limiting). */
    readonly suppressed: number,
    /** gRPC status code when the failure was a gRPC error. */
    readonly grpcCode: number | undefined,
  ) {
    super(message);
    this.name = 'OtlpExportError';
  }
}

export type ExportErrorHandler = (err: OtlpExportError) => void;

export interface OtlpReader {
  reader: PeriodicExportingMetricReader;
  /** Failed exports so far. */
  failures(): number;
}

const GRPC_CODE_NAMES = [
  'OK',
  'CANCELLED',
  'UNKNOWN',
  'INVALID_ARGUMENT',
  'DEADLINE_EXCEEDED',
  'NOT_FOUND',
  'ALREADY_EXISTS',
  'PERMISSION_DENIED',
  'RESOURCE_EXHAUSTED',
  'FAILED_PRECONDITION',
  'ABORTED',
  'OUT_OF_RANGE',
  'UNIMPLEMENTED',
  'INTERNAL',
  'UNAVAILABLE',
  'DATA_LOSS',
  'UNAUTHENTICATED',
] as const;

const REDACT_MIN_LENGTH = 4;
/** Words of a header value redacted on their own: long enough not to be "Bearer" or "Basic". */
const REDACT_MIN_WORD_LENGTH = 8;

/**
 * What to redact from collector messages: each header value, and each long word of it, since a
 * backend may echo only the token of "authorization: Bearer <token>". Longest first, so a whole
 * value goes before its words.
 */
function secretsOf(headers: Record<string, string>): string[] {
  const out = new Set<string>();
  for (const value of Object.values(headers)) {
    if (value.length >= REDACT_MIN_LENGTH) out.add(value);
    for (const word of value.split(/\s+/)) {
      if (word.length >= REDACT_MIN_WORD_LENGTH) out.add(word);
    }
  }
  return [...out].sort((a, b) => b.length - a.length);
}

function hasScheme(endpoint: string): boolean {
  return /^[a-z][a-z0-9+.-]*:\/\//i.test(endpoint);
}

/** The endpoint with an explicit scheme, chosen as the OTLP specification says. */
export function resolveEndpoint(opts: Pick<OtlpExportOptions, 'endpoint' | 'insecure'>): string {
  const endpoint = opts.endpoint.trim();
  if (hasScheme(endpoint)) return endpoint;
  return `${opts.insecure === true ? 'http' : 'https'}://${endpoint}`;
}

/** Scheme and host:port only: an endpoint may carry user:password, which must not be logged. */
export function describeEndpoint(url: string): string {
  try {
    const parsed = new URL(url);
    return `${parsed.protocol}//${parsed.host}`;
  } catch {
    return '<unparsable endpoint>';
  }
}

function readPem(path: string, what: string): Buffer {
  try {
    return readFileSync(path);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code ?? String(err);
    throw new Error(`OTLP: cannot read ${what} ${path}: ${code}`, { cause: err });
  }
}

function channelCredentials(url: string, opts: OtlpExportOptions) {
  if (url.startsWith('http://')) return createInsecureCredentials();
  const ca = opts.certificatePath ? readPem(opts.certificatePath, 'CA certificate') : undefined;
  const hasCert = opts.clientCertificatePath !== undefined;
  if (hasCert !== (opts.clientKeyPath !== undefined)) {
    throw new Error('OTLP: mTLS needs both a client certificate and a client key');
  }
  if (!opts.clientCertificatePath || !opts.clientKeyPath) return createSslCredentials(ca);
  return createSslCredentials(
    ca,
    readPem(opts.clientKeyPath, 'client key'),
    readPem(opts.clientCertificatePath, 'client certificate'),
  );
}

function lowerCaseKeys(headers: Record<string, string>): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [key, value] of Object.entries(headers)) out[key.toLowerCase()] = value;
  return out;
}

function metadataFrom(headers: Record<string, string>) {
  const metadata = createEmptyMetadata();
  for (const [key, value] of Object.entries(headers)) metadata.set(key, value);
  return metadata;
}

const TEMPORALITY: Record<OtlpTemporality, AggregationTemporalityPreference> = {
  cumulative: AggregationTemporalityPreference.CUMULATIVE,
  delta: AggregationTemporalityPreference.DELTA,
  lowmemory: AggregationTemporalityPreference.LOWMEMORY,
};

const DEFAULT_AGGREGATION: AggregationOption = { type: AggregationType.DEFAULT };
const EXPONENTIAL_AGGREGATION: AggregationOption = { type: AggregationType.EXPONENTIAL_HISTOGRAM };

function aggregationSelector(kind: OtlpHistogramAggregation): AggregationSelector | undefined {
  if (kind === 'explicit') return undefined;
  // Only this reader sees the selector; the Prometheus reader keeps the advice's buckets.
  return (type: InstrumentType) =>
    type === InstrumentType.HISTOGRAM ? EXPONENTIAL_AGGREGATION : DEFAULT_AGGREGATION;
}

function grpcCodeOf(err: unknown): number | undefined {
  if (typeof err !== 'object' || err === null || !('code' in err)) return undefined;
  const code = (err as { code: unknown }).code;
  return typeof code === 'number' ? code : undefined;
}

function isRetryable(err: unknown): boolean {
  const code = grpcCodeOf(err);
  return code !== undefined && RETRYABLE_GRPC_CODES.has(code);
}

/**
 * Counts failures and hands them to the handler at most once per interval, the first at once.
 * Messages are built here so that no header value can leak into a log line.
 */
export class ExportFailureReporter {
  private count = 0;
  private suppressed = 0;
  private lastReportAt = Number.NEGATIVE_INFINITY;
  private readonly secrets: string[];

  constructor(
    private readonly endpoint: string,
    headers: Record<string, string>,
    private readonly handler: ExportErrorHandler | undefined,
    private readonly minIntervalMs: number,
    private readonly now: () => number = Date.now,
  ) {
    this.secrets = secretsOf(headers);
  }

  failures(): number {
    return this.count;
  }

  /** One export that failed for good, after `attempts` tries. */
  record(err: unknown, attempts = 1): void {
    this.count++;
    const t = this.now();
    if (t - this.lastReportAt < this.minIntervalMs) {
      this.suppressed++;
      return;
    }
    const report = this.describe(err, attempts);
    this.lastReportAt = t;
    this.suppressed = 0;
    try {
      this.handler?.(report);
    } catch {
      // A failing log sink must not turn an export failure into a crash.
    }
  }

  private redact(text: string): string {
    let out = text;
    for (const secret of this.secrets) out = out.split(secret).join('<redacted>');
    return out;
  }

  private describe(err: unknown, attempts: number): OtlpExportError {
    const code = grpcCodeOf(err);
    const codeName = code === undefined ? '' : ` [${GRPC_CODE_NAMES[code] ?? code}]`;
    const detail = err instanceof Error ? err.message : String(err ?? 'unknown error');
    const tries = attempts > 1 ? ` after ${attempts} attempts` : '';
    const message =
      `OTLP metrics export to ${this.endpoint} failed${codeName}${tries}: ${this.redact(detail)} ` +
      `(failed exports so far: ${this.count}; not reported since the last report: ${this.suppressed})`;
    return new OtlpExportError(message, this.count, this.suppressed, code);
  }
}

/**
 * Retries of one export. The gRPC exporter (@opentelemetry/exporter-metrics-otlp-grpc 0.301) does
 * not retry at all: its transport reports every gRPC error as final (only the OTLP/HTTP
 * exporters wrap theirs in a RetryingTransport), so a collector restarting for two seconds cost a
 * whole export interval (all of that interval's data with delta temporality).
 *
 * Retried here: the codes the OTLP specification calls retryable. RESOURCE_EXHAUSTED is retryable
 * there only when the collector sends RetryInfo, which is not read here, so it is not retried:
 * an overloaded collector is not pressed harder. The schedule is the upstream HTTP exporter's
 * (at most 5 retries, delays x1.5 from 1 s, capped at 5 s, +-20 % jitter), within one budget: the
 * export timeout, never past the reader's own timeout, so a retry never runs into the next
 * periodic export. A short budget (a short export interval) scales the first delay down to a
 * tenth of it, so that retries still fit.
 */
export const RETRYABLE_GRPC_CODES: ReadonlySet<number> = new Set([
  1, // CANCELLED
  4, // DEADLINE_EXCEEDED
  10, // ABORTED
  11, // OUT_OF_RANGE
  14, // UNAVAILABLE
  15, // DATA_LOSS
]);
export const RETRY_MAX = 5;
const RETRY_INITIAL_MS = 1000;
const RETRY_MAX_DELAY_MS = 5000;
const RETRY_MULTIPLIER = 1.5;
const RETRY_JITTER = 0.2;
const RETRY_INITIAL_BUDGET_FRACTION = 0.1;

/** Delay before retry number `retry` (0-based) within `budgetMs`, without jitter. */
export function retryDelayMs(budgetMs: number, retry: number): number {
  const initial = Math.min(RETRY_INITIAL_MS, budgetMs * RETRY_INITIAL_BUDGET_FRACTION);
  return Math.min(initial * RETRY_MULTIPLIER ** retry, RETRY_MAX_DELAY_MS);
}

function jittered(ms: number): number {
  return ms * (1 - RETRY_JITTER + Math.random() * 2 * RETRY_JITTER);
}

const GRPC_UNAVAILABLE = 14;
/**
 * At most one new channel per second: grpc-js's own first reconnect is 1 s away anyway, and each
 * channel is garbage (an HTTP/2 session and its buffers) once replaced.
 */
const RENEW_MIN_INTERVAL_MS = 1000;

/**
 * Passes everything through to the OTLP exporter, without the series `drop` rejects, retries
 * what is retryable (see RETRYABLE_GRPC_CODES) and reports every export that failed for good.
 *
 * After UNAVAILABLE the next attempt goes through a new exporter, hence a new gRPC channel. A
 * grpc-js channel that failed to connect waits out its own reconnect backoff (1 s growing x1.6
 * to 120 s) and meanwhile fails every call at once: retries on it were void, and a collector back
 * after a minute's outage got its first push only ~25 s later (up to 2 min after longer ones).
 * Renewed at most once per RENEW_MIN_INTERVAL_MS.
 */
class FailureCountingExporter implements PushMetricExporter {
  /** Exports waiting for a retry: shutdown() ends them at once. */
  private readonly waiting = new Map<NodeJS.Timeout, () => void>();
  private readonly chains = new Set<Promise<void>>();
  private closed = false;
  private inner: OTLPMetricExporter;
  private renewChannel = false;
  private renewedAt = Number.NEGATIVE_INFINITY;

  constructor(
    private readonly createInner: () => OTLPMetricExporter,
    private readonly reporter: ExportFailureReporter,
    private readonly drop: SeriesPredicate | undefined,
    private readonly retryBudgetMs: number,
  ) {
    this.inner = createInner();
  }

  /** The exporter for the next attempt: a new one (new channel) after UNAVAILABLE. */
  private current(): OTLPMetricExporter {
    const now = performance.now();
    if (this.renewChannel && !this.closed && now - this.renewedAt >= RENEW_MIN_INTERVAL_MS) {
      this.renewChannel = false;
      this.renewedAt = now;
      const old = this.inner;
      this.inner = this.createInner();
      // Exports still in flight on the old channel end by their deadline; then it closes.
      old.shutdown().catch(() => undefined);
    }
    return this.inner;
  }

  export(metrics: ResourceMetrics, resultCallback: (result: ExportResult) => void): void {
    let kept: ResourceMetrics;
    try {
      kept = this.drop === undefined ? metrics : filterResourceMetrics(metrics, this.drop);
    } catch (err) {
      this.fail(err, 1, resultCallback);
      return;
    }
    let settle: () => void = () => undefined;
    const chain = new Promise<void>((resolve) => (settle = resolve));
    this.chains.add(chain);
    const done = (result: ExportResult): void => {
      this.chains.delete(chain);
      settle();
      resultCallback(result);
    };
    this.attempt(kept, 0, performance.now(), done);
  }

  private attempt(
    metrics: ResourceMetrics,
    retry: number,
    startedAt: number,
    done: (result: ExportResult) => void,
  ): void {
    try {
      this.current().export(metrics, (result) => {
        if (result.code === ExportResultCode.SUCCESS) return done(result);
        if (grpcCodeOf(result.error) === GRPC_UNAVAILABLE) this.renewChannel = true;
        const delay = jittered(retryDelayMs(this.retryBudgetMs, retry));
        const elapsed = performance.now() - startedAt;
        if (
          this.closed ||
          retry >= RETRY_MAX ||
          !isRetryable(result.error) ||
          elapsed + delay >= this.retryBudgetMs
        ) {
          this.reporter.record(result.error, retry + 1);
          return done(result);
        }
        const giveUp = (): void => {
          this.reporter.record(result.error, retry + 1);
          done(result);
        };
        const timer = setTimeout(() => {
          this.waiting.delete(timer);
          this.attempt(metrics, retry + 1, startedAt, done);
        }, delay);
        timer.unref();
        this.waiting.set(timer, giveUp);
      });
    } catch (err) {
      this.fail(err, retry + 1, done);
    }
  }

  private fail(err: unknown, attempts: number, done: (result: ExportResult) => void): void {
    this.reporter.record(err, attempts);
    const error = err instanceof Error ? err : new Error(String(err));
    done({ code: ExportResultCode.FAILED, error });
  }

  async forceFlush(): Promise<void> {
    await Promise.all([...this.chains]);
    await this.inner.forceFlush();
  }

  shutdown(): Promise<void> {
    this.closed = true;
    for (const [timer, giveUp] of this.waiting) {
      clearTimeout(timer);
      giveUp();
    }
    this.waiting.clear();
    return this.inner.shutdown();
  }

  selectAggregationTemporality(type: InstrumentType): AggregationTemporality {
    return this.inner.selectAggregationTemporality(type);
  }

  selectAggregation(type: InstrumentType): AggregationOption {
    return this.inner.selectAggregation(type);
  }
}

function checkPositive(name: string, value: number): void {
  if (!Number.isFinite(value) || value <= 0) {
    throw new Error(`OTLP: ${name} must be a positive number of milliseconds (got ${value})`);
  }
}

/**
 * Builds the OTLP gRPC push reader. Configuration errors (bad headers, unreadable certificate)
 * throw here, at start-up; failures of the collector later are only counted and reported.
 */
export function createOtlpReader(
  opts: OtlpExportOptions,
  onExportError: ExportErrorHandler | undefined,
  errorReportIntervalMs: number,
  dropSeries?: SeriesPredicate,
): OtlpReader {
  checkPositive('timeoutMs', opts.timeoutMs);
  checkPositive('exportIntervalMs', opts.exportIntervalMs);
  checkPositive('exportTimeoutMs', opts.exportTimeoutMs);
  const headers = lowerCaseKeys(opts.headers);
  validateOtlpHeaders(headers);
  const url = resolveEndpoint(opts);
  // Read once (certificate files): a failure is a start-up error, and renewed channels reuse it.
  const credentials = channelCredentials(url, opts);
  const metadata = metadataFrom(headers);
  const createExporter = (): OTLPMetricExporter =>
    new OTLPMetricExporter({
      url,
      credentials,
      metadata,
      compression:
        opts.compression === 'gzip' ? CompressionAlgorithm.GZIP : CompressionAlgorithm.NONE,
      timeoutMillis: opts.timeoutMs,
      temporalityPreference: TEMPORALITY[opts.temporality],
      aggregationPreference: aggregationSelector(opts.histogramAggregation),
    });
  const reporter = new ExportFailureReporter(
    describeEndpoint(url),
    headers,
    onExportError,
    errorReportIntervalMs,
  );
  // The reader throws when the timeout exceeds the interval: clamp instead.
  const readerTimeoutMs = Math.min(opts.exportTimeoutMs, opts.exportIntervalMs);
  const reader = new PeriodicExportingMetricReader({
    exporter: new FailureCountingExporter(
      createExporter,
      reporter,
      dropSeries,
      Math.min(opts.timeoutMs, readerTimeoutMs),
    ),
    exportIntervalMillis: opts.exportIntervalMs,
    exportTimeoutMillis: readerTimeoutMs,
  });
  return { reader, failures: () => reporter.failures() };
}
