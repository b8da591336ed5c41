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
    this.secrets = Object.values(headers).filter((v) => v.length >= REDACT_MIN_LENGTH);
  }

  failures(): number {
    return this.count;
  }

  record(err: unknown): void {
    this.count++;
    const t = this.now();
    if (t - this.lastReportAt < this.minIntervalMs) {
      this.suppressed++;
      return;
    }
    const report = this.describe(err);
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

  private describe(err: unknown): OtlpExportError {
    const code = grpcCodeOf(err);
    const codeName = code === undefined ? '' : ` [${GRPC_CODE_NAMES[code] ?? code}]`;
    const detail = err instanceof Error ? err.message : String(err ?? 'unknown error');
    const message =
      `OTLP metrics export to ${this.endpoint} failed${codeName}: ${this.redact(detail)} ` +
      `(failed exports so far: ${this.count}; not reported since the last report: ${this.suppressed})`;
    return new OtlpExportError(message, this.count, this.suppressed, code);
  }
}

/**
 * Passes everything through to the OTLP exporter, without the series `drop` rejects, and
 * reports every failed export.
 */
class FailureCountingExporter implements PushMetricExporter {
  constructor(
    private readonly inner: OTLPMetricExporter,
    private readonly reporter: ExportFailureReporter,
    private readonly drop: SeriesPredicate | undefined,
  ) {}

  export(metrics: ResourceMetrics, resultCallback: (result: ExportResult) => void): void {
    try {
      const kept = this.drop === undefined ? metrics : filterResourceMetrics(metrics, this.drop);
      this.inner.export(kept, (result) => {
        if (result.code !== ExportResultCode.SUCCESS) this.reporter.record(result.error);
        resultCallback(result);
      });
    } catch (err) {
      this.reporter.record(err);
      const error = err instanceof Error ? err : new Error(String(err));
      resultCallback({ code: ExportResultCode.FAILED, error });
    }
  }

  forceFlush(): Promise<void> {
    return this.inner.forceFlush();
  }

  shutdown(): Promise<void> {
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
  const exporter = new OTLPMetricExporter({
    url,
    credentials: channelCredentials(url, opts),
    metadata: metadataFrom(headers),
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
  const reader = new PeriodicExportingMetricReader({
    exporter: new FailureCountingExporter(exporter, reporter, dropSeries),
    exportIntervalMillis: opts.exportIntervalMs,
    // The reader throws when the timeout exceeds the interval: clamp instead.
    exportTimeoutMillis: Math.min(opts.exportTimeoutMs, opts.exportIntervalMs),
  });
  return { reader, failures: () => reporter.failures() };
}
