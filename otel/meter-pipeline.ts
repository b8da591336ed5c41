import type { Meter } from '@opentelemetry/api';
import { PrometheusExporter } from '@opentelemetry/exporter-prometheus';
import type { Resource, ResourceDetector } from '@opentelemetry/resources';
import { MeterProvider, type IMetricReader } from '@opentelemetry/sdk-metrics';
import {
  createAgentInstruments,
  validateBucketBoundaries,
  type AgentInstruments,
  type SelfStatsSnapshot,
} from './instruments.js';
import {
  DEFAULT_SERVICE_NAME,
  METER_NAME,
  METRIC_LABEL_OVERFLOW,
  METRIC_LABEL_VALUES,
  METRIC_OTLP_EXPORT_FAILURES,
} from './metric-names.js';
import {
  createOtlpReader,
  type ExportErrorHandler,
  type OtlpExportOptions,
  type OtlpReader,
} from './otlp-exporter.js';
import { startMetricsServer, type MetricsServer } from './prometheus-server.js';
import { buildAgentResource } from './resource.js';
import {
  filterResourceMetrics,
  pruneRetainedSeries,
  type PruneResult,
  type SeriesPredicate,
} from './series-retention.js';

export interface MeterPipelineOptions {
  /** service.name unless OTEL_SERVICE_NAME or OTEL_RESOURCE_ATTRIBUTES set one.
   *  Default 'audio-latency-tracker'. */
  serviceName?: string;
  serviceVersion: string;
  /** Address of the /metrics, /healthz, /readyz server. Default '0.0.0.0' (all IPv4). */
  host?: string;
  /** 0 picks a free port (tests); the bound port is in MeterPipeline.address. */
  port: number;
  /** Explicit bucket boundaries of the latency histograms, seconds, strictly increasing. */
  latencyBuckets: number[];
  otlp: OtlpExportOptions;
  /** Extra resource detectors (Kubernetes); they override host attributes. */
  detectors?: ResourceDetector[];
  /** /readyz answers 200 while this returns true, 503 otherwise. Default: always ready. */
  ready?: () => boolean;
  /** Called, rate-limited, when OTLP exports fail. Its message never contains header values. */
  onExportError?: ExportErrorHandler;
  /** Minimum time between two onExportError calls. Default 60 s. */
  errorReportIntervalMs?: number;
  /** Bound on shutdown(), OTLP flush included. Default 5 s. */
  shutdownTimeoutMs?: number;
  /**
   * Data points for which this returns true are left out of every export (Prometheus and
   * OTLP): series of deleted pods. See otel/series-retention.ts.
   */
  dropSeries?: SeriesPredicate;
  /** Pod label cardinality, exported as audio_tracker_label_* when given. */
  labelStats?: () => LabelStats;
}

export interface LabelStats {
  /** Cumulative: labels folded into `other`. */
  overflows: number;
  /** Level: label values in use. */
  values: number;
}

export interface MeterPipeline {
  readonly meterProvider: MeterProvider;
  /** The agent's meter (scope audio-latency-tracker, version = serviceVersion). */
  readonly meter: Meter;
  readonly resource: Resource;
  /** Where the metrics server listens (actual port). */
  readonly address: { host: string; port: number };
  readonly otlpEnabled: boolean;
  /** Failed OTLP exports so far (also exported as audio_tracker_otlp_export_failures_total). */
  otlpExportFailures(): number;
  /** createAgentInstruments on this pipeline's meter with its latency buckets. Call once. */
  createInstruments(stats: () => SelfStatsSnapshot): AgentInstruments;
  /**
   * Removes the series dropSeries rejects from the SDK's own storages (memory). Best effort:
   * `supported: false` when the SDK's internals are not as expected (the export filter still
   * applies).
   */
  pruneSeries(): PruneResult;
  /** Pushes to OTLP now; resolves even when the push fails (failures are reported). */
  flush(timeoutMs?: number): Promise<void>;
  /** Closes the server and flushes OTLP; resolves within shutdownTimeoutMs (+ a small margin). */
  shutdown(): Promise<void>;
}

const DEFAULT_HOST = '0.0.0.0';
const DEFAULT_ERROR_REPORT_INTERVAL_MS = 60_000;
const DEFAULT_SHUTDOWN_TIMEOUT_MS = 5_000;
const DEFAULT_FLUSH_TIMEOUT_MS = 10_000;
const HTTP_CLOSE_GRACE_MS = 1_000;

function registerPipelineMetrics(
  meter: Meter,
  otlp: OtlpReader | undefined,
  labelStats: (() => LabelStats) | undefined,
): void {
  const failures = meter.createObservableCounter(METRIC_OTLP_EXPORT_FAILURES, {
    description: 'OTLP metric exports that failed (collector down, refused or timed out).',
    unit: '{export}',
  });
  failures.addCallback((result) => result.observe(otlp ? otlp.failures() : 0));
  if (labelStats === undefined) return;
  const overflow = meter.createObservableCounter(METRIC_LABEL_OVERFLOW, {
    description:
      'Endpoints labelled `other` because MAX_POD_LABEL_VALUES label values were in use.',
    unit: '{label}',
  });
  const values = meter.createObservableGauge(METRIC_LABEL_VALUES, {
    description:
      'Pod label values in use (live pods, addresses, deleted pods within SERIES_TTL_MS).',
    unit: '{label}',
  });
  meter.addBatchObservableCallback(
    (result) => {
      const s = labelStats();
      result.observe(overflow, s.overflows);
      result.observe(values, s.values);
    },
    [overflow, values],
  );
}

function withTimeout(work: Promise<void>, ms: number): Promise<void> {
  return new Promise((resolve) => {
    const timer = setTimeout(resolve, ms);
    timer.unref();
    // Errors were already counted and reported by the exporter wrapper; nothing to add here.
    work.then(
      () => {
        clearTimeout(timer);
        resolve();
      },
      () => {
        clearTimeout(timer);
        resolve();
      },
    );
  });
}

/** The Prometheus exporter with dropped series filtered out of each collection. */
class FilteringPrometheusExporter extends PrometheusExporter {
  constructor(private readonly drop: SeriesPredicate | undefined) {
    super({ preventServerStart: true });
  }

  override async collect(
    options?: Parameters<PrometheusExporter['collect']>[0],
  ): ReturnType<PrometheusExporter['collect']> {
    const result = await super.collect(options);
    const drop = this.drop;
    if (drop === undefined) return result;
    return { ...result, resourceMetrics: filterResourceMetrics(result.resourceMetrics, drop) };
  }
}

/**
 * Builds the one MeterProvider of the agent with two readers fed by the same instruments:
 * a Prometheus pull endpoint (always) and an OTLP gRPC push (when opts.otlp.enabled).
 */
export async function createMeterPipeline(opts: MeterPipelineOptions): Promise<MeterPipeline> {
  validateBucketBoundaries(opts.latencyBuckets);
  const resource = await buildAgentResource({
    serviceName: opts.serviceName ?? DEFAULT_SERVICE_NAME,
    serviceVersion: opts.serviceVersion,
    detectors: opts.detectors,
  });
  const otlp = opts.otlp.enabled
    ? createOtlpReader(
        opts.otlp,
        opts.onExportError,
        opts.errorReportIntervalMs ?? DEFAULT_ERROR_REPORT_INTERVAL_MS,
        opts.dropSeries,
      )
    : undefined;
  // Our own server serves /metrics so that health endpoints can live beside it.
  const prometheus = new FilteringPrometheusExporter(opts.dropSeries);
  const readers: IMetricReader[] = otlp ? [prometheus, otlp.reader] : [prometheus];
  const meterProvider = new MeterProvider({ resource, readers });
  const meter = meterProvider.getMeter(METER_NAME, opts.serviceVersion);
  registerPipelineMetrics(meter, otlp, opts.labelStats);

  let server: MetricsServer;
  try {
    server = await startMetricsServer({
      host: opts.host ?? DEFAULT_HOST,
      port: opts.port,
      handleMetrics: (req, res) => prometheus.getMetricsRequestHandler(req, res),
      ready: opts.ready ?? (() => true),
    });
  } catch (err) {
    await meterProvider.shutdown({ timeoutMillis: 1000 }).catch(() => undefined);
    throw err;
  }

  const shutdownTimeoutMs = opts.shutdownTimeoutMs ?? DEFAULT_SHUTDOWN_TIMEOUT_MS;
  let stopping: Promise<void> | undefined;
  return {
    meterProvider,
    meter,
    resource,
    address: server.address,
    otlpEnabled: otlp !== undefined,
    otlpExportFailures: () => (otlp ? otlp.failures() : 0),
    createInstruments: (stats) => createAgentInstruments(meter, opts.latencyBuckets, stats),
    pruneSeries: () =>
      opts.dropSeries === undefined
        ? { supported: true, removed: 0 }
        : pruneRetainedSeries(meterProvider, opts.dropSeries),
    flush: (timeoutMs = DEFAULT_FLUSH_TIMEOUT_MS) =>
      otlp
        ? withTimeout(otlp.reader.forceFlush({ timeoutMillis: timeoutMs }), timeoutMs)
        : Promise.resolve(),
    shutdown(): Promise<void> {
      stopping ??= Promise.all([
        server.close(Math.min(HTTP_CLOSE_GRACE_MS, shutdownTimeoutMs)),
        // The SDK bounds each reader's shutdown; our own bound covers an SDK that does not.
        withTimeout(
          meterProvider.shutdown({ timeoutMillis: shutdownTimeoutMs }),
          shutdownTimeoutMs,
        ),
      ]).then(() => undefined);
      return stopping;
    },
  };
}
