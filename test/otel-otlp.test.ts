import assert from 'node:assert/strict';
import { hostname } from 'node:os';
import { after, before, describe, it } from 'node:test';
import {
  createMeterPipeline,
  parseOtlpHeaders,
  type AgentInstruments,
  type MeterPipeline,
  type MeterPipelineOptions,
  type OtlpExportError,
  type OtlpExportOptions,
  type SelfStatsSnapshot,
} from '../otel/index.js';
import { ExportFailureReporter } from '../otel/otlp-exporter.js';
import {
  attributesOf,
  metricsNamed,
  startOtlpReceiver,
  unusedPort,
  type HistogramDataPoint,
  type Metric,
  type OtlpReceiver,
  type ReceivedExport,
} from './support/otlp-receiver.js';

const LATENCY_BUCKETS = [0.005, 0.02, 0.1, 0.5, 2];
const HOP = [0.001, 0.004, 0.02, 0.07, 0.3, 0.31, 9];
const PAIR = { source_pod: 'relay-0', dest_pod: 'stt-0' };
const SECRET = 'Bearer s3cr3t-t0ken';
const HEADERS = { authorization: SECRET, 'x-tenant': 'voice-lab' };

const SNAPSHOT: SelfStatsSnapshot = {
  packetsInspected: 1000,
  audioPackets: 900,
  eventsDelivered: 880,
  eventsLost: 20,
  payloadTruncated: 1,
  packetsMalformed: 0,
  flowsTracked: 6,
  flowsEvicted: 0,
  flowsExpired: 2,
  interfacesAttached: 3,
  bpfRunTimeSeconds: 0.0042,
  bpfRunCount: 1000,
  windowsSilent: 12,
  pendingSignatures: 5,
  correlatorEvictions: 0,
  correlatorExpired: 4,
  tcpSegments: 10,
  tcpRetransmittedBytes: 0,
  tcpOutOfOrder: 0,
  tcpResyncs: 0,
  tcpFlowsExpired: 0,
  encryptedFlows: 0,
  encryptedSegments: 0,
  gsoChunks: 0,
  bulkFlows: 0,
  bulkSegments: 0,
};

function otlpOptions(url: string, overrides: Partial<OtlpExportOptions> = {}): OtlpExportOptions {
  return {
    enabled: true,
    endpoint: url,
    headers: HEADERS,
    compression: 'none',
    timeoutMs: 2000,
    // Long interval: tests push with flush(), so each export holds exactly what they recorded.
    exportIntervalMs: 60_000,
    exportTimeoutMs: 5000,
    temporality: 'cumulative',
    histogramAggregation: 'explicit',
    ...overrides,
  };
}

function pipelineOptions(
  otlp: OtlpExportOptions,
  overrides: Partial<MeterPipelineOptions> = {},
): MeterPipelineOptions {
  return {
    serviceName: 'audio-latency-tracker',
    serviceVersion: '0.0.1-otlp-test',
    host: '127.0.0.1',
    port: 0,
    latencyBuckets: LATENCY_BUCKETS,
    otlp,
    ...overrides,
  };
}

function cumulativeCounts(values: number[], bounds: number[]): number[] {
  return [...bounds, Infinity].map((b) => values.filter((v) => v <= b).length);
}

/** OTLP bucket counts are per bucket, not cumulative. */
function perBucketCounts(values: number[], bounds: number[]): number[] {
  const cumulative = cumulativeCounts(values, bounds);
  return cumulative.map((c, i) => (i === 0 ? c : c - cumulative[i - 1]));
}

function sum(values: number[]): number {
  return values.reduce((a, b) => a + b, 0);
}

function single(exp: ReceivedExport, name: string): Metric {
  const found = metricsNamed(exp.request, name);
  assert.equal(found.length, 1, `expected one metric ${name}, got ${found.length}`);
  return found[0];
}

function histogramPoint(metric: Metric): HistogramDataPoint {
  assert.equal(metric.data, 'histogram', `${metric.name} should be an explicit histogram`);
  const points = metric.histogram?.dataPoints ?? [];
  assert.equal(points.length, 1);
  return points[0];
}

async function scrape(pipeline: MeterPipeline): Promise<string> {
  const res = await fetch(`http://127.0.0.1:${pipeline.address.port}/metrics`);
  assert.equal(res.status, 200);
  return res.text();
}

function promValue(text: string, name: string, labelFilter = ''): number {
  const line = text.split('\n').find((l) => l.startsWith(name + '{') && l.includes(labelFilter));
  assert.ok(line, `no ${name} ${labelFilter} in scrape`);
  return Number(line.slice(line.lastIndexOf(' ') + 1));
}

function recordAll(instruments: AgentInstruments, values: number[]): void {
  for (const v of values) instruments.hopLatency.record(v, PAIR);
}

// ---------------------------------------------------------------------------------------------

describe('OTLP headers parsing', () => {
  it('parses key=value pairs with percent-decoding', () => {
    assert.deepEqual(parseOtlpHeaders('api-key=abc%2C123, X-Team = voice%20ops ,,'), {
      'api-key': 'abc,123',
      'x-team': 'voice ops',
    });
  });

  it('keeps "=" inside values (base64 tokens)', () => {
    assert.deepEqual(parseOtlpHeaders('authorization=Basic dXNlcjpwYXNz=='), {
      authorization: 'Basic dXNlcjpwYXNz==',
    });
  });

  it('accepts an empty string', () => {
    assert.deepEqual(parseOtlpHeaders(''), {});
  });

  it('rejects malformed entries without echoing values', () => {
    assert.throws(
      () => parseOtlpHeaders('a=1,justsecretvalue'),
      (err: Error) => {
        assert.match(err.message, /entry 1/);
        assert.ok(!err.message.includes('justsecretvalue'));
        return true;
      },
    );
    assert.throws(
      () => parseOtlpHeaders('token=%E0%A4%A'),
      (err: Error) => {
        assert.match(err.message, /percent-encoding/);
        assert.ok(!err.message.includes('%E0'));
        return true;
      },
    );
    assert.throws(() => parseOtlpHeaders('bad key=1'), /not a valid gRPC metadata key/);
    assert.throws(() => parseOtlpHeaders('x-bin=1'), /reserved/);
    assert.throws(() => parseOtlpHeaders('k=caf%C3%A9'), /printable ASCII/);
  });
});

describe('export failure reporting', () => {
  it('reports the first failure at once, then at most once per interval', () => {
    let now = 0;
    const reports: OtlpExportError[] = [];
    const reporter = new ExportFailureReporter(
      'http://collector:4317',
      { authorization: SECRET },
      (e) => reports.push(e),
      1000,
      () => now,
    );
    const grpcError = Object.assign(new Error(`14 UNAVAILABLE: echo ${SECRET}`), { code: 14 });
    reporter.record(grpcError);
    now = 10;
    reporter.record(grpcError);
    now = 999;
    reporter.record(grpcError);
    assert.equal(reports.length, 1);
    now = 1000;
    reporter.record(grpcError);
    assert.equal(reports.length, 2);
    assert.equal(reporter.failures(), 4);
    assert.equal(reports[0].failures, 1);
    assert.equal(reports[1].failures, 4);
    assert.equal(reports[1].suppressed, 2);
    assert.equal(reports[1].grpcCode, 14);
    assert.match(reports[1].message, /UNAVAILABLE/);
    assert.match(reports[1].message, /http:\/\/collector:4317/);
    for (const r of reports) assert.ok(!r.message.includes('s3cr3t'), r.message);
  });

  it('survives a handler that throws', () => {
    const reporter = new ExportFailureReporter(
      'x',
      {},
      () => {
        throw new Error('log sink broken');
      },
      0,
    );
    reporter.record(new Error('down'));
    assert.equal(reporter.failures(), 1);
  });
});

describe('OTLP push to a live collector', () => {
  let receiver: OtlpReceiver;

  before(async () => {
    process.env.OTEL_RESOURCE_ATTRIBUTES = 'k8s.cluster.name=lab-cluster';
    receiver = await startOtlpReceiver();
  });

  after(async () => {
    await receiver.close();
    delete process.env.OTEL_RESOURCE_ATTRIBUTES;
  });

  it('sends explicit histograms, counters, self metrics, resource and headers', async () => {
    const errors: OtlpExportError[] = [];
    const pipeline = await createMeterPipeline(
      pipelineOptions(otlpOptions(receiver.url), { onExportError: (e) => errors.push(e) }),
    );
    try {
      const instruments = pipeline.createInstruments(() => SNAPSHOT);
      recordAll(instruments, HOP);
      instruments.transitLatency.record(0.003, PAIR);
      instruments.signatures.add(7, { pod: 'relay-0' });
      instruments.collisions.add(2);
      const before = receiver.exports.length;
      await pipeline.flush();
      assert.equal(receiver.exports.length, before + 1);
      const exp = receiver.exports[before];

      assert.equal(exp.metadata.authorization, SECRET);
      assert.equal(exp.metadata['x-tenant'], 'voice-lab');

      const resource = attributesOf(exp.request.resourceMetrics[0].resource?.attributes);
      assert.equal(resource['service.name'], 'audio-latency-tracker');
      assert.equal(resource['service.version'], '0.0.1-otlp-test');
      assert.equal(resource['host.name'], hostname());
      assert.equal(resource['k8s.cluster.name'], 'lab-cluster');

      const scope = exp.request.resourceMetrics[0].scopeMetrics[0].scope;
      assert.equal(scope?.name, 'audio-latency-tracker');
      assert.equal(scope?.version, '0.0.1-otlp-test');

      const hop = single(exp, 'audio_latency_seconds');
      assert.equal(hop.unit, 's');
      assert.equal(hop.histogram?.aggregationTemporality, 'AGGREGATION_TEMPORALITY_CUMULATIVE');
      const point = histogramPoint(hop);
      assert.deepEqual(attributesOf(point.attributes), PAIR);
      assert.deepEqual(point.explicitBounds, LATENCY_BUCKETS);
      assert.deepEqual(point.bucketCounts, perBucketCounts(HOP, LATENCY_BUCKETS));
      assert.equal(point.count, HOP.length);
      assert.ok(Math.abs((point.sum ?? NaN) - sum(HOP)) < 1e-9);
      assert.equal(point.min, Math.min(...HOP));
      assert.equal(point.max, Math.max(...HOP));

      const transit = histogramPoint(single(exp, 'audio_transit_latency_seconds'));
      assert.equal(transit.count, 1);
      assert.deepEqual(transit.explicitBounds, LATENCY_BUCKETS);

      const sigs = single(exp, 'audio_signatures');
      assert.equal(sigs.data, 'sum');
      assert.equal(sigs.sum?.isMonotonic, true);
      assert.equal(sigs.sum?.dataPoints[0].asDouble ?? sigs.sum?.dataPoints[0].asInt, 7);
      assert.deepEqual(attributesOf(sigs.sum?.dataPoints[0].attributes), { pod: 'relay-0' });

      const lost = single(exp, 'audio_tracker_events_lost');
      assert.equal(lost.data, 'sum');
      assert.equal(lost.sum?.dataPoints[0].asDouble ?? lost.sum?.dataPoints[0].asInt, 20);
      const flows = single(exp, 'audio_tracker_flows_tracked');
      assert.equal(flows.data, 'gauge');
      assert.equal(flows.gauge?.dataPoints[0].asDouble ?? flows.gauge?.dataPoints[0].asInt, 6);
      const failures = single(exp, 'audio_tracker_otlp_export_failures');
      assert.equal(failures.sum?.dataPoints[0].asDouble ?? failures.sum?.dataPoints[0].asInt, 0);

      // Same instruments, second reader: Prometheus sees the same data.
      const text = await scrape(pipeline);
      assert.equal(promValue(text, 'audio_latency_seconds_count', 'dest_pod="stt-0"'), HOP.length);
      assert.equal(errors.length, 0);
      assert.equal(pipeline.otlpExportFailures(), 0);
    } finally {
      await pipeline.shutdown();
    }
  });

  it('sends delta temporality when asked, while Prometheus stays cumulative', async () => {
    const pipeline = await createMeterPipeline(
      pipelineOptions(otlpOptions(receiver.url, { temporality: 'delta' })),
    );
    try {
      const instruments = pipeline.createInstruments(() => SNAPSHOT);
      const first = [0.01, 0.2];
      const second = [0.03, 0.04, 1.5];
      recordAll(instruments, first);
      instruments.signatures.add(3, { pod: 'relay-0' });
      const start = receiver.exports.length;
      await pipeline.flush();
      recordAll(instruments, second);
      instruments.signatures.add(4, { pod: 'relay-0' });
      await pipeline.flush();
      assert.equal(receiver.exports.length, start + 2);
      const [e1, e2] = receiver.exports.slice(start);

      const h1 = single(e1, 'audio_latency_seconds');
      const h2 = single(e2, 'audio_latency_seconds');
      assert.equal(h1.histogram?.aggregationTemporality, 'AGGREGATION_TEMPORALITY_DELTA');
      assert.equal(h2.histogram?.aggregationTemporality, 'AGGREGATION_TEMPORALITY_DELTA');
      assert.deepEqual(histogramPoint(h1).bucketCounts, perBucketCounts(first, LATENCY_BUCKETS));
      assert.deepEqual(histogramPoint(h2).bucketCounts, perBucketCounts(second, LATENCY_BUCKETS));
      assert.equal(histogramPoint(h2).count, second.length);
      assert.ok(histogramPoint(h2).startTimeUnixNano >= histogramPoint(h1).timeUnixNano);

      const s2 = single(e2, 'audio_signatures');
      assert.equal(s2.sum?.aggregationTemporality, 'AGGREGATION_TEMPORALITY_DELTA');
      assert.equal(s2.sum?.dataPoints[0].asDouble ?? s2.sum?.dataPoints[0].asInt, 4);

      const text = await scrape(pipeline);
      const total = first.length + second.length;
      assert.equal(promValue(text, 'audio_latency_seconds_count'), total);
      assert.equal(promValue(text, 'audio_signatures_total'), 7);
    } finally {
      await pipeline.shutdown();
    }
  });

  it('sends base2 exponential histograms when asked, Prometheus keeping explicit buckets', async () => {
    const pipeline = await createMeterPipeline(
      pipelineOptions(otlpOptions(receiver.url, { histogramAggregation: 'exponential' })),
    );
    try {
      const instruments = pipeline.createInstruments(() => SNAPSHOT);
      recordAll(instruments, HOP);
      const start = receiver.exports.length;
      await pipeline.flush();
      const exp = receiver.exports[start];
      const hop = single(exp, 'audio_latency_seconds');
      assert.equal(hop.data, 'exponentialHistogram');
      const point = hop.exponentialHistogram?.dataPoints[0];
      assert.ok(point);
      assert.deepEqual(attributesOf(point.attributes), PAIR);
      assert.equal(point.count, HOP.length);
      assert.ok(Math.abs((point.sum ?? NaN) - sum(HOP)) < 1e-9);
      const positive = point.positive?.bucketCounts ?? [];
      assert.equal(sum(positive) + point.zeroCount, HOP.length);
      // Base2 exponential: every value lies in the bucket its index says.
      const base = 2 ** (2 ** -point.scale);
      for (const v of HOP) {
        const index = Math.ceil(Math.log(v) / Math.log(base)) - 1 - (point.positive?.offset ?? 0);
        assert.ok(index >= 0 && index < positive.length && positive[index] > 0, `value ${v}`);
      }
      // Counters are unaffected by the histogram preference.
      assert.equal(single(exp, 'audio_tracker_events_lost').data, 'sum');

      const text = await scrape(pipeline);
      const les = text
        .split('\n')
        .filter((l) => l.startsWith('audio_latency_seconds_bucket{'))
        .map((l) => /le="([^"]+)"/.exec(l)?.[1]);
      assert.deepEqual(les, [...LATENCY_BUCKETS.map(String), '+Inf']);
    } finally {
      await pipeline.shutdown();
    }
  });

  it('compresses with gzip when asked', async () => {
    // Many similar series make a request that compresses well.
    const record = (instruments: AgentInstruments): void => {
      for (let i = 0; i < 300; i++) {
        instruments.hopLatency.record(0.01, { source_pod: `relay-${i}`, dest_pod: 'stt-0' });
      }
    };
    const bytesFor = async (compression: 'gzip' | 'none'): Promise<[number, number]> => {
      const pipeline = await createMeterPipeline(
        pipelineOptions(otlpOptions(receiver.url, { compression })),
      );
      try {
        record(pipeline.createInstruments(() => SNAPSHOT));
        receiver.resetWireBytes();
        const start = receiver.exports.length;
        await pipeline.flush();
        const exp = receiver.exports[start];
        assert.equal(single(exp, 'audio_latency_seconds').histogram?.dataPoints.length, 300);
        return [receiver.wireBytes(), exp.messageBytes];
      } finally {
        await pipeline.shutdown();
      }
    };
    const [plainWire, plainMessage] = await bytesFor('none');
    const [gzipWire, gzipMessage] = await bytesFor('gzip');
    assert.ok(plainWire > plainMessage, `uncompressed wire ${plainWire} >= ${plainMessage}`);
    assert.ok(Math.abs(gzipMessage - plainMessage) < plainMessage * 0.05);
    assert.ok(gzipWire * 3 < plainWire, `gzip wire ${gzipWire} vs plain ${plainWire}`);
  });

  it('pushes on its own at the export interval', async () => {
    const pipeline = await createMeterPipeline(
      pipelineOptions(otlpOptions(receiver.url, { exportIntervalMs: 200, exportTimeoutMs: 150 })),
    );
    try {
      const instruments = pipeline.createInstruments(() => SNAPSHOT);
      instruments.signatures.add(1, { pod: 'interval-probe' });
      // No flush(): only the reader's own timer can deliver this.
      await receiver.waitForExport(
        (e) =>
          metricsNamed(e.request, 'audio_signatures').some((m) =>
            m.sum?.dataPoints.some((p) => attributesOf(p.attributes).pod === 'interval-probe'),
          ),
        3000,
      );
    } finally {
      await pipeline.shutdown();
    }
  });
});

describe('OTLP collector faults', () => {
  const SHUTDOWN_BOUND_MS = 1500;

  async function assertFaultTolerated(
    endpoint: string,
    timeoutMs: number,
    expectCode: RegExp,
  ): Promise<void> {
    const errors: OtlpExportError[] = [];
    const pipeline = await createMeterPipeline(
      pipelineOptions(otlpOptions(endpoint, { timeoutMs }), {
        onExportError: (e) => errors.push(e),
        errorReportIntervalMs: 60_000,
        shutdownTimeoutMs: SHUTDOWN_BOUND_MS,
      }),
    );
    const instruments = pipeline.createInstruments(() => SNAPSHOT);
    recordAll(instruments, HOP);
    await pipeline.flush(3000);
    await pipeline.flush(3000);
    assert.ok(pipeline.otlpExportFailures() >= 2, `failures ${pipeline.otlpExportFailures()}`);
    assert.equal(errors.length, 1, 'reports are rate-limited');
    assert.match(errors[0].message, expectCode);
    assert.ok(!errors[0].message.includes('s3cr3t'), errors[0].message);

    // Prometheus keeps serving, and counts the failures.
    const text = await scrape(pipeline);
    assert.equal(promValue(text, 'audio_latency_seconds_count'), HOP.length);
    assert.ok(promValue(text, 'audio_tracker_otlp_export_failures_total') >= 2);
    assert.equal((await fetch(`http://127.0.0.1:${pipeline.address.port}/healthz`)).status, 200);

    const t0 = performance.now();
    await pipeline.shutdown();
    const elapsed = performance.now() - t0;
    assert.ok(elapsed < SHUTDOWN_BOUND_MS + 500, `shutdown took ${elapsed.toFixed(0)} ms`);
  }

  it('tolerates a collector that is down (nothing listening)', async () => {
    const port = await unusedPort();
    await assertFaultTolerated(`http://127.0.0.1:${port}`, 1000, /UNAVAILABLE/);
  });

  it('tolerates a collector answering UNAVAILABLE', async () => {
    const receiver = await startOtlpReceiver();
    receiver.mode = 'unavailable';
    try {
      await assertFaultTolerated(receiver.url, 1000, /UNAVAILABLE/);
      assert.ok(receiver.attempts >= 2);
    } finally {
      await receiver.close();
    }
  });

  it('bounds shutdown when the collector never answers', async () => {
    const receiver = await startOtlpReceiver();
    receiver.mode = 'hang';
    const errors: OtlpExportError[] = [];
    const pipeline = await createMeterPipeline(
      pipelineOptions(otlpOptions(receiver.url, { timeoutMs: 10_000 }), {
        onExportError: (e) => errors.push(e),
        shutdownTimeoutMs: SHUTDOWN_BOUND_MS,
      }),
    );
    try {
      recordAll(
        pipeline.createInstruments(() => SNAPSHOT),
        HOP,
      );
      const t0 = performance.now();
      await pipeline.shutdown();
      const elapsed = performance.now() - t0;
      assert.ok(elapsed < SHUTDOWN_BOUND_MS + 500, `shutdown took ${elapsed.toFixed(0)} ms`);
      assert.ok(receiver.attempts >= 1, 'the final flush reached the collector');
    } finally {
      await receiver.close();
    }
  });

  it('refuses an unreadable CA certificate at start-up, naming the file', async () => {
    await assert.rejects(
      createMeterPipeline(
        pipelineOptions(
          otlpOptions('https://127.0.0.1:4317', { certificatePath: '/nonexistent/ca.pem' }),
        ),
      ),
      /CA certificate \/nonexistent\/ca\.pem: ENOENT/,
    );
  });

  it('refuses invalid header keys at start-up', async () => {
    await assert.rejects(
      createMeterPipeline(
        pipelineOptions(otlpOptions('http://127.0.0.1:4317', { headers: { 'bad key': 'v' } })),
      ),
      /not a valid gRPC metadata key/,
    );
  });
});
