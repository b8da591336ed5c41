import assert from 'node:assert/strict';
import { createServer } from 'node:net';
import { hostname } from 'node:os';
import { after, before, describe, it } from 'node:test';
import type { ResourceDetector } from '@opentelemetry/resources';
import {
  buildAgentResource,
  createMeterPipeline,
  emptySelfStats,
  SELF_METRICS,
  type AgentInstruments,
  type MeterPipeline,
  type MeterPipelineOptions,
  type SelfStatsSnapshot,
} from '../otel/index.js';

// Deliberately not the agent's defaults: the scrape must show exactly what was configured.
const LATENCY_BUCKETS = [0.002, 0.01, 0.05, 0.2, 1, 7.5];

const HOP_VALUES: Array<{ src: string; dst: string; v: number }> = [
  { src: 'relay-0', dst: 'stt-0', v: 0.0015 },
  { src: 'relay-0', dst: 'stt-0', v: 0.01 }, // exactly on a boundary: le is inclusive
  { src: 'relay-0', dst: 'stt-0', v: 0.03 },
  { src: 'relay-0', dst: 'stt-0', v: 12 }, // beyond the last boundary: only +Inf
  { src: 'pbx-1', dst: 'relay-0', v: 0.19 },
];
const TRANSIT_VALUES: Array<{ src: string; dst: string; v: number }> = [
  { src: 'relay-0', dst: 'stt-0', v: 0.0004 },
  { src: 'relay-0', dst: 'stt-0', v: 0.0021 },
];

const SNAPSHOT: SelfStatsSnapshot = {
  packetsInspected: 123456,
  audioPackets: 4567,
  eventsDelivered: 4500,
  eventsLost: 67,
  payloadTruncated: 3,
  packetsMalformed: 2,
  flowsTracked: 11,
  flowsEvicted: 5,
  flowsExpired: 7,
  interfacesAttached: 4,
  bpfRunTimeSeconds: 0.125,
  bpfRunCount: 123460,
  windowsSilent: 99,
  pendingSignatures: 17,
  correlatorEvictions: 8,
  correlatorExpired: 13,
  tcpSegments: 501,
  tcpRetransmittedBytes: 8192,
  tcpOutOfOrder: 3,
  tcpResyncs: 2,
  tcpFlowsExpired: 1,
  encryptedFlows: 1,
  encryptedSegments: 9,
  gsoChunks: 40,
  bulkFlows: 2,
  bulkSegments: 77,
};

// ---------------------------------------------------------------------------------------------
// Prometheus text format parsing (just enough for our exposition)

interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

interface Exposition {
  types: Map<string, string>;
  samples: Sample[];
}

function parseLabels(text: string): Record<string, string> {
  const labels: Record<string, string> = {};
  const re = /([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g;
  for (const m of text.matchAll(re)) {
    labels[m[1]] = m[2].replace(/\\n/g, '\n').replace(/\\"/g, '"').replace(/\\\\/g, '\\');
  }
  return labels;
}

function parseValue(text: string): number {
  if (text === '+Inf') return Infinity;
  if (text === '-Inf') return -Infinity;
  return Number(text);
}

function parseExposition(body: string): Exposition {
  const types = new Map<string, string>();
  const samples: Sample[] = [];
  for (const line of body.split('\n')) {
    if (line === '') continue;
    const type = /^# TYPE (\S+) (\S+)$/.exec(line);
    if (type) {
      types.set(type[1], type[2]);
      continue;
    }
    if (line.startsWith('#')) continue;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
    assert.ok(m, `unparsable exposition line: ${line}`);
    samples.push({ name: m[1], labels: parseLabels(m[2] ?? ''), value: parseValue(m[3]) });
  }
  return { types, samples };
}

function find(expo: Exposition, name: string, match: Record<string, string> = {}): Sample[] {
  return expo.samples.filter(
    (s) => s.name === name && Object.entries(match).every(([k, v]) => s.labels[k] === v),
  );
}

function only(expo: Exposition, name: string, match: Record<string, string> = {}): Sample {
  const found = find(expo, name, match);
  assert.equal(found.length, 1, `expected one ${name} ${JSON.stringify(match)}: ${found.length}`);
  return found[0];
}

// ---------------------------------------------------------------------------------------------
// Expected values computed from the recorded data

function cumulativeBuckets(values: number[], bounds: number[]): number[] {
  return [...bounds, Infinity].map((b) => values.filter((v) => v <= b).length);
}

function valuesFor(list: typeof HOP_VALUES, src: string, dst: string): number[] {
  return list.filter((x) => x.src === src && x.dst === dst).map((x) => x.v);
}

function assertHistogram(
  expo: Exposition,
  base: string,
  attrs: Record<string, string>,
  values: number[],
): void {
  const buckets = find(expo, `${base}_bucket`, attrs);
  const les = buckets.map((b) => b.labels.le);
  assert.deepEqual(les, [...LATENCY_BUCKETS.map(String), '+Inf'], `${base} bucket boundaries`);
  assert.deepEqual(les.slice(0, -1).map(Number), LATENCY_BUCKETS);
  assert.deepEqual(
    buckets.map((b) => b.value),
    cumulativeBuckets(values, LATENCY_BUCKETS),
    `${base} cumulative bucket counts`,
  );
  assert.equal(only(expo, `${base}_count`, attrs).value, values.length);
  const sum = values.reduce((a, b) => a + b, 0);
  assert.ok(Math.abs(only(expo, `${base}_sum`, attrs).value - sum) < 1e-9, `${base}_sum`);
}

// ---------------------------------------------------------------------------------------------

const NODE_DETECTOR: ResourceDetector = {
  detect: () => ({ attributes: { 'k8s.node.name': 'worker-7' } }),
};

function pipelineOptions(overrides: Partial<MeterPipelineOptions> = {}): MeterPipelineOptions {
  return {
    serviceName: 'audio-latency-tracker',
    serviceVersion: '9.8.7-test',
    host: '127.0.0.1',
    port: 0,
    latencyBuckets: LATENCY_BUCKETS,
    otlp: {
      enabled: false,
      endpoint: 'http://127.0.0.1:1',
      headers: {},
      compression: 'none',
      timeoutMs: 1000,
      exportIntervalMs: 60000,
      exportTimeoutMs: 1000,
      temporality: 'cumulative',
      histogramAggregation: 'explicit',
    },
    ...overrides,
  };
}

async function get(pipeline: MeterPipeline, path: string, method = 'GET') {
  const res = await fetch(`http://127.0.0.1:${pipeline.address.port}${path}`, { method });
  return { status: res.status, body: await res.text() };
}

describe('Prometheus endpoint', () => {
  let pipeline: MeterPipeline;
  let instruments: AgentInstruments;
  let ready = false;
  let statsCalls = 0;
  let expo: Exposition;

  before(async () => {
    process.env.OTEL_RESOURCE_ATTRIBUTES = 'deployment.environment.name=lab,team=voice%20ops';
    delete process.env.OTEL_SERVICE_NAME;
    pipeline = await createMeterPipeline(
      pipelineOptions({ detectors: [NODE_DETECTOR], ready: () => ready }),
    );
    instruments = pipeline.createInstruments(() => {
      statsCalls++;
      return SNAPSHOT;
    });
    for (const { src, dst, v } of HOP_VALUES) {
      instruments.hopLatency.record(v, { source_pod: src, dest_pod: dst });
    }
    for (const { src, dst, v } of TRANSIT_VALUES) {
      instruments.transitLatency.record(v, { source_pod: src, dest_pod: dst });
    }
    instruments.signatures.add(40, { pod: 'relay-0' });
    instruments.signatures.add(2, { pod: 'relay-0' });
    instruments.signatures.add(5, { pod: 'stt-0' });
    instruments.collisions.add(3);
    const res = await get(pipeline, '/metrics');
    assert.equal(res.status, 200);
    expo = parseExposition(res.body);
  });

  after(async () => {
    await pipeline.shutdown();
    delete process.env.OTEL_RESOURCE_ATTRIBUTES;
  });

  it('listens on the port it reports', () => {
    assert.equal(pipeline.address.host, '127.0.0.1');
    assert.ok(pipeline.address.port > 0);
  });

  it('exposes exactly the documented metric families', () => {
    const expected = new Map<string, string>([
      ['target_info', 'gauge'],
      ['audio_latency_seconds', 'histogram'],
      ['audio_transit_latency_seconds', 'histogram'],
      ['audio_signatures_total', 'counter'],
      ['audio_signature_collisions_total', 'counter'],
      ['audio_tracker_otlp_export_failures_total', 'counter'],
    ]);
    for (const spec of SELF_METRICS) {
      const name = spec.kind === 'counter' ? `${spec.name}_total` : spec.name;
      expected.set(name, spec.kind);
    }
    assert.deepEqual(new Map([...expo.types].sort()), new Map([...expected].sort()));
    const sampleNames = new Set(expo.samples.map((s) => s.name));
    for (const base of ['audio_latency_seconds', 'audio_transit_latency_seconds']) {
      for (const suffix of ['_bucket', '_sum', '_count']) {
        assert.ok(sampleNames.has(base + suffix), `missing ${base}${suffix}`);
      }
    }
    assert.ok(!sampleNames.has('audio_latency_seconds_seconds_bucket'));
    assert.ok(!sampleNames.has('audio_signatures_total_total'));
  });

  it('has a zero snapshot with exactly the keys of a full one', () => {
    const zero = emptySelfStats();
    assert.deepEqual(Object.keys(zero).sort(), Object.keys(SNAPSHOT).sort());
    assert.ok(Object.values(zero).every((v) => v === 0));
  });

  it('lists every self metric of the brief, with the audio_tracker_ prefix', () => {
    const names = [...expo.types.keys()].filter((n) => n.startsWith('audio_tracker_'));
    assert.deepEqual(
      names.sort(),
      [
        'audio_tracker_audio_packets_total',
        'audio_tracker_bpf_run_count_total',
        'audio_tracker_bpf_run_time_seconds_total',
        'audio_tracker_correlator_evictions_total',
        'audio_tracker_correlator_expired_total',
        'audio_tracker_events_delivered_total',
        'audio_tracker_events_lost_total',
        'audio_tracker_flows_evicted_total',
        'audio_tracker_flows_expired_total',
        'audio_tracker_flows_tracked',
        'audio_tracker_interfaces_attached',
        'audio_tracker_otlp_export_failures_total',
        'audio_tracker_packets_inspected_total',
        'audio_tracker_packets_malformed_total',
        'audio_tracker_payload_truncated_total',
        'audio_tracker_pending_signatures',
        'audio_tracker_windows_silent_total',
        // TCP streams (issue 3)
        'audio_tracker_encrypted_flows_total',
        'audio_tracker_encrypted_segments_total',
        'audio_tracker_gso_chunks_total',
        'audio_tracker_tcp_flows_expired_total',
        'audio_tracker_tcp_out_of_order_segments_total',
        'audio_tracker_tcp_resyncs_total',
        'audio_tracker_tcp_retransmitted_bytes_total',
        'audio_tracker_tcp_segments_total',
        'audio_tracker_bulk_flows_total',
        'audio_tracker_bulk_segments_total',
      ].sort(),
    );
  });

  it('serves hop latency with the configured buckets, counts and sums per pod pair', () => {
    const pairs = new Set(HOP_VALUES.map((x) => `${x.src}>${x.dst}`));
    for (const pair of pairs) {
      const [src, dst] = pair.split('>');
      assertHistogram(
        expo,
        'audio_latency_seconds',
        { source_pod: src, dest_pod: dst },
        valuesFor(HOP_VALUES, src, dst),
      );
    }
    assert.equal(find(expo, 'audio_latency_seconds_count').length, pairs.size);
  });

  it('serves transit latency the same way', () => {
    assertHistogram(
      expo,
      'audio_transit_latency_seconds',
      { source_pod: 'relay-0', dest_pod: 'stt-0' },
      valuesFor(TRANSIT_VALUES, 'relay-0', 'stt-0'),
    );
  });

  it('serves the signature and collision counters', () => {
    assert.equal(only(expo, 'audio_signatures_total', { pod: 'relay-0' }).value, 42);
    assert.equal(only(expo, 'audio_signatures_total', { pod: 'stt-0' }).value, 5);
    assert.equal(only(expo, 'audio_signature_collisions_total').value, 3);
    assert.equal(only(expo, 'audio_tracker_otlp_export_failures_total').value, 0);
  });

  it('serves every self metric with its snapshot value', () => {
    for (const spec of SELF_METRICS) {
      const name = spec.kind === 'counter' ? `${spec.name}_total` : spec.name;
      assert.equal(only(expo, name).value, SNAPSHOT[spec.key], name);
    }
  });

  it('reads the statistics once per scrape', async () => {
    const before = statsCalls;
    await get(pipeline, '/metrics');
    await get(pipeline, '/metrics');
    assert.equal(statsCalls - before, 2);
  });

  it('labels series with the instrumentation scope', () => {
    const s = only(expo, 'audio_signature_collisions_total');
    assert.equal(s.labels.otel_scope_name, 'audio-latency-tracker');
    assert.equal(s.labels.otel_scope_version, '9.8.7-test');
  });

  it('keeps target_info with the resource attributes', () => {
    const info = only(expo, 'target_info');
    assert.equal(info.value, 1);
    assert.equal(info.labels.service_name, 'audio-latency-tracker');
    assert.equal(info.labels.service_version, '9.8.7-test');
    assert.equal(info.labels.host_name, hostname());
    assert.equal(info.labels.telemetry_sdk_language, 'nodejs');
    // From OTEL_RESOURCE_ATTRIBUTES, percent-decoded.
    assert.equal(info.labels.deployment_environment_name, 'lab');
    assert.equal(info.labels.team, 'voice ops');
    // From the extra detector.
    assert.equal(info.labels.k8s_node_name, 'worker-7');
  });

  it('answers /healthz, /readyz and unknown paths', async () => {
    assert.deepEqual(await get(pipeline, '/healthz'), { status: 200, body: 'ok\n' });
    assert.equal((await get(pipeline, '/readyz')).status, 503);
    ready = true;
    assert.equal((await get(pipeline, '/readyz')).status, 200);
    assert.equal((await get(pipeline, '/readyz?verbose=1')).status, 200);
    ready = false;
    assert.equal((await get(pipeline, '/readyz')).status, 503);
    assert.equal((await get(pipeline, '/nope')).status, 404);
    assert.equal((await get(pipeline, '/')).status, 404);
    assert.equal((await get(pipeline, '/metricsx')).status, 404);
    assert.equal((await get(pipeline, '/metrics', 'POST')).status, 405);
    assert.equal((await get(pipeline, '/healthz', 'HEAD')).status, 200);
  });
});

describe('meter pipeline start-up and shutdown', () => {
  it('reports readiness 503 when the readiness check throws', async () => {
    const p = await createMeterPipeline(
      pipelineOptions({
        ready: () => {
          throw new Error('boom');
        },
      }),
    );
    try {
      assert.equal((await get(p, '/readyz')).status, 503);
      assert.equal((await get(p, '/healthz')).status, 200);
    } finally {
      await p.shutdown();
    }
  });

  it('fails with the address when the port is taken', async () => {
    const blocker = createServer();
    await new Promise<void>((resolve) => blocker.listen(0, '127.0.0.1', resolve));
    const port = (blocker.address() as { port: number }).port;
    try {
      await assert.rejects(createMeterPipeline(pipelineOptions({ port })), (err: Error) => {
        assert.match(err.message, new RegExp(`127\\.0\\.0\\.1:${port}.*EADDRINUSE`));
        return true;
      });
    } finally {
      blocker.close();
    }
  });

  it('rejects latency buckets that are not strictly increasing', async () => {
    await assert.rejects(
      createMeterPipeline(pipelineOptions({ latencyBuckets: [0.1, 0.05] })),
      /strictly/,
    );
    await assert.rejects(createMeterPipeline(pipelineOptions({ latencyBuckets: [] })), /at least/);
    await assert.rejects(
      createMeterPipeline(pipelineOptions({ latencyBuckets: [0.1, Infinity] })),
      /finite/,
    );
  });

  it('closes the port on shutdown, and shutdown is idempotent', async () => {
    const p = await createMeterPipeline(pipelineOptions());
    const port = p.address.port;
    await Promise.all([p.shutdown(), p.shutdown()]);
    await assert.rejects(fetch(`http://127.0.0.1:${port}/healthz`));
  });
});

describe('agent resource', () => {
  it('lets OTEL_SERVICE_NAME win over OTEL_RESOURCE_ATTRIBUTES and the option', async () => {
    process.env.OTEL_SERVICE_NAME = 'from-env';
    process.env.OTEL_RESOURCE_ATTRIBUTES = 'service.name=from-attrs,service.version=2';
    try {
      const resource = await buildAgentResource({ serviceName: 'opt', serviceVersion: '1' });
      assert.equal(resource.attributes['service.name'], 'from-env');
      assert.equal(resource.attributes['service.version'], '2');
      assert.equal(resource.attributes['host.name'], hostname());
    } finally {
      delete process.env.OTEL_SERVICE_NAME;
      delete process.env.OTEL_RESOURCE_ATTRIBUTES;
    }
  });

  it('uses the option as service.name when the environment names none', async () => {
    const resource = await buildAgentResource({ serviceName: 'opt', serviceVersion: '1' });
    assert.equal(resource.attributes['service.name'], 'opt');
    assert.equal(resource.attributes['service.version'], '1');
  });

  it('drops a malformed OTEL_RESOURCE_ATTRIBUTES whole, keeping the rest', async () => {
    process.env.OTEL_RESOURCE_ATTRIBUTES = 'good=1,bad';
    try {
      const resource = await buildAgentResource({ serviceName: 'opt', serviceVersion: '1' });
      assert.equal(resource.attributes['good'], undefined);
      assert.equal(resource.attributes['service.name'], 'opt');
    } finally {
      delete process.env.OTEL_RESOURCE_ATTRIBUTES;
    }
  });

  it('survives a detector that throws', async () => {
    const broken: ResourceDetector = {
      detect: () => {
        throw new Error('no kubernetes here');
      },
    };
    const resource = await buildAgentResource({
      serviceName: 'opt',
      serviceVersion: '1',
      detectors: [broken],
    });
    assert.equal(resource.attributes['service.name'], 'opt');
  });
});
