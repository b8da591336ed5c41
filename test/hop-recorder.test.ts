import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { Attributes, Counter, Histogram } from '@opentelemetry/api';
import {
  AggregationTemporality,
  DataPointType,
  MeterProvider,
  MetricReader,
  type HistogramMetricData,
  type MetricData,
  type SumMetricData,
} from '@opentelemetry/sdk-metrics';
import { SIG_RECORD_SIZE } from '../src/abi.js';
import { Correlator } from '../src/correlate/correlator.js';
import { EndpointTable } from '../src/endpoints.js';
import { FLUSH_INTERVAL_MS, HopRecorder } from '../src/hop-recorder.js';
import { SignatureBatchDecoder, writeSigRecord } from '../src/signature-batch.js';

/** The smallest real reader: collect() on demand, nothing exported. */
class TestReader extends MetricReader {
  constructor() {
    super({ aggregationTemporalitySelector: () => AggregationTemporality.CUMULATIVE });
  }
  protected onForceFlush(): Promise<void> {
    return Promise.resolve();
  }
  protected onShutdown(): Promise<void> {
    return Promise.resolve();
  }
}

function setup(resolver?: (ip: string) => string, pairCacheCapacity?: number) {
  const reader = new TestReader();
  const provider = new MeterProvider({ readers: [reader] });
  const meter = provider.getMeter('test');
  const instruments = {
    hopLatency: meter.createHistogram('audio_latency_seconds', {
      unit: 's',
      advice: { explicitBucketBoundaries: [0.001, 0.01, 0.1, 1] },
    }),
    transitLatency: meter.createHistogram('audio_transit_latency_seconds', {
      unit: 's',
      advice: { explicitBucketBoundaries: [0.0001, 0.001] },
    }),
    signatures: meter.createCounter('audio_signatures'),
    collisions: meter.createCounter('audio_signature_collisions'),
  };
  const endpoints = new EndpointTable({ capacity: 16, resolver });
  const samples: unknown[][] = [];
  const recorder = new HopRecorder({
    ...instruments,
    endpoints,
    pairCacheCapacity,
    onSample: (...args) => samples.push(args),
  });
  return { reader, provider, endpoints, recorder, samples };
}

async function metrics(reader: TestReader): Promise<Map<string, MetricData>> {
  const { resourceMetrics, errors } = await reader.collect();
  assert.deepEqual(errors, []);
  const out = new Map<string, MetricData>();
  for (const scope of resourceMetrics.scopeMetrics) {
    for (const metric of scope.metrics) out.set(metric.descriptor.name, metric);
  }
  return out;
}

function histogram(all: Map<string, MetricData>, name: string): HistogramMetricData {
  const m = all.get(name);
  assert.ok(m !== undefined, `metric ${name} missing`);
  assert.equal(m.dataPointType, DataPointType.HISTOGRAM);
  return m as HistogramMetricData;
}

function sum(all: Map<string, MetricData>, name: string): SumMetricData {
  const m = all.get(name);
  assert.ok(m !== undefined, `metric ${name} missing`);
  assert.equal(m.dataPointType, DataPointType.SUM);
  return m as SumMetricData;
}

const byPair = (m: HistogramMetricData) =>
  new Map(
    m.dataPoints.map((p) => [`${p.attributes.source_pod}->${p.attributes.dest_pod}`, p.value]),
  );

describe('HopRecorder', () => {
  it('records hops, transits, signatures and collisions with label attributes', async () => {
    const names: Record<string, string> = { '10.0.0.1': 'caller-0', '10.0.0.2': 'relay-0' };
    const { reader, endpoints, recorder, samples } = setup((ip) => names[ip] ?? ip);
    const a = endpoints.internAddress('10.0.0.1');
    const r = endpoints.internAddress('10.0.0.2');
    const b = endpoints.internAddress('10.0.0.3');
    recorder.hop(a, r, 0.002, 123, 7, 8);
    recorder.hop(a, r, 0.004, 456, 9, 10);
    recorder.hop(r, b, 0.5, 789, 11, 12);
    recorder.transit(a, r, 0.00005);
    recorder.signature(a);
    recorder.signature(a);
    recorder.signature(r);
    recorder.collision();
    assert.equal(recorder.stats.unflushedSignatures, 3);
    recorder.flush();
    assert.equal(recorder.stats.unflushedSignatures, 0);

    const all = await metrics(reader);
    const hops = byPair(histogram(all, 'audio_latency_seconds'));
    assert.equal(hops.size, 2);
    const ar = hops.get('caller-0->relay-0');
    assert.ok(ar !== undefined);
    assert.equal(ar.count, 2);
    assert.ok(Math.abs((ar.sum ?? 0) - 0.006) < 1e-12);
    assert.deepEqual(ar.buckets.counts, [0, 2, 0, 0, 0]);
    assert.equal(hops.get('relay-0->10.0.0.3')?.count, 1);

    const transits = byPair(histogram(all, 'audio_transit_latency_seconds'));
    assert.equal(transits.get('caller-0->relay-0')?.count, 1);

    const signatures = sum(all, 'audio_signatures');
    assert.deepEqual(
      new Map(signatures.dataPoints.map((p) => [p.attributes.pod, p.value])),
      new Map([
        ['caller-0', 2],
        ['relay-0', 1],
      ]),
    );
    const collisions = sum(all, 'audio_signature_collisions');
    assert.equal(collisions.dataPoints.length, 1);
    assert.equal(collisions.dataPoints[0].value, 1);
    assert.deepEqual(collisions.dataPoints[0].attributes, {});

    assert.deepEqual(samples, [
      [123, 7, 8, 'caller-0', 'relay-0', 0.002],
      [456, 9, 10, 'caller-0', 'relay-0', 0.004],
      [789, 11, 12, 'relay-0', '10.0.0.3', 0.5],
    ]);
  });

  it('builds each attribute object once and reuses it', () => {
    const endpoints = new EndpointTable({ capacity: 4 });
    const seen: Attributes[] = [];
    const histogram = { record: (_v: number, attrs?: Attributes) => seen.push(attrs ?? {}) };
    const counter = { add: (_v: number, attrs?: Attributes) => seen.push(attrs ?? {}) };
    const recorder = new HopRecorder({
      hopLatency: histogram as unknown as Histogram,
      transitLatency: histogram as unknown as Histogram,
      signatures: counter as unknown as Counter,
      // Not `counter`: the recorder adds a zero to it at construction (a series from the start).
      collisions: { add: (): void => {} } as unknown as Counter,
      endpoints,
    });
    const a = endpoints.internAddress('10.0.0.1');
    const r = endpoints.internAddress('10.0.0.2');
    for (let i = 0; i < 1000; i++) {
      recorder.hop(a, r, 0.001, i, 0, 0);
      recorder.transit(a, r, 0.001);
      recorder.signature(a);
      if (i % 100 === 0) recorder.flush();
    }
    recorder.flush();
    assert.equal(recorder.stats.attributeBuilds, 2, 'one pair object, one sender object');
    assert.equal(new Set(seen).size, 2);
    assert.ok(seen.every((x) => Object.isFrozen(x)));
  });

  it('picks up new labels after relabel() and after an id is reclaimed', async () => {
    let names: Record<string, string> = {};
    const { reader, endpoints, recorder } = setup((ip) => names[ip] ?? ip);
    const a = endpoints.internAddress('10.0.0.1');
    const r = endpoints.internAddress('10.0.0.2');
    recorder.hop(a, r, 0.01, 0, 0, 0);
    recorder.signature(a);
    names = { '10.0.0.1': 'caller-0', '10.0.0.2': 'relay-0' };
    endpoints.relabel();
    recorder.hop(a, r, 0.01, 0, 0, 0);
    recorder.signature(a);
    recorder.signature(a);
    recorder.flush();
    const all = await metrics(reader);
    const hops = byPair(histogram(all, 'audio_latency_seconds'));
    assert.equal(hops.get('10.0.0.1->10.0.0.2')?.count, 1);
    assert.equal(hops.get('caller-0->relay-0')?.count, 1);
    // The count held before relabel() stays with the label it was counted under.
    const pods = new Map(
      sum(all, 'audio_signatures').dataPoints.map((p) => [p.attributes.pod, p.value]),
    );
    assert.deepEqual(
      pods,
      new Map([
        ['10.0.0.1', 1],
        ['caller-0', 2],
      ]),
    );

    // An id reused for another address gets a new label without relabel().
    const small = new EndpointTable({ capacity: 1 });
    const built = new HopRecorder({
      hopLatency: { record: () => {} } as unknown as Histogram,
      transitLatency: { record: () => {} } as unknown as Histogram,
      signatures: { add: () => {} } as unknown as Counter,
      collisions: { add: () => {} } as unknown as Counter,
      endpoints: small,
      onSample: (_t, _h, _l, source) => labels.push(source),
    });
    const labels: string[] = [];
    const first = small.internAddress('10.9.9.1', 0);
    built.hop(first, first, 0, 0, 0, 0);
    const second = small.internAddress('10.9.9.2', 1);
    assert.equal(second, first);
    built.hop(second, second, 0, 0, 0, 0);
    assert.deepEqual(labels, ['10.9.9.1', '10.9.9.2']);
  });

  it('carries pod names and namespaces; invalidate() of one endpoint rebuilds only its pairs', async () => {
    const reader = new TestReader();
    const provider = new MeterProvider({ readers: [reader] });
    const meter = provider.getMeter('test');
    const owners = new Map<string, { name: string; namespace: string }>([
      ['10.0.0.1', Object.freeze({ name: 'caller-0', namespace: 'media' })],
      ['10.0.0.2', Object.freeze({ name: 'relay-0', namespace: 'core' })],
    ]);
    const external = Object.freeze({ name: 'external', namespace: '' });
    const endpoints = new EndpointTable({
      capacity: 8,
      labeler: (ip) => owners.get(ip) ?? external,
    });
    const recorder = new HopRecorder({
      hopLatency: meter.createHistogram('audio_latency_seconds'),
      transitLatency: meter.createHistogram('audio_transit_latency_seconds'),
      signatures: meter.createCounter('audio_signatures'),
      collisions: meter.createCounter('audio_signature_collisions'),
      endpoints,
    });
    const a = endpoints.internAddress('10.0.0.1');
    const r = endpoints.internAddress('10.0.0.2');
    const x = endpoints.internAddress('192.0.2.7');
    recorder.hop(a, r, 0.01, 0, 0, 0);
    recorder.hop(x, r, 0.01, 0, 0, 0);
    recorder.signature(a);
    recorder.flush();
    const builds = recorder.stats.attributeBuilds;
    // 10.0.0.1 passes to a new pod: only that endpoint is invalidated, found without interning.
    owners.set('10.0.0.1', Object.freeze({ name: 'caller-1', namespace: 'media' }));
    const size = endpoints.size;
    assert.equal(endpoints.lookup('10.0.0.1'), a);
    assert.equal(endpoints.lookup('10.0.0.99'), -1);
    assert.equal(endpoints.size, size, 'lookup() interns nothing');
    endpoints.invalidate(a);
    recorder.hop(a, r, 0.01, 0, 0, 0);
    recorder.hop(x, r, 0.01, 0, 0, 0);
    recorder.signature(a);
    recorder.flush();
    assert.equal(recorder.stats.attributeBuilds - builds, 2, 'the a->r pair and sender a only');

    const all = await metrics(reader);
    const points = histogram(all, 'audio_latency_seconds').dataPoints.map((p) => ({
      ...p.attributes,
      count: p.value.count,
    }));
    const sortKey = (o: Record<string, unknown>) => JSON.stringify(o);
    assert.deepEqual(
      points.sort((p, q) => sortKey(p).localeCompare(sortKey(q))),
      [
        {
          source_pod: 'caller-0',
          source_namespace: 'media',
          dest_pod: 'relay-0',
          dest_namespace: 'core',
          count: 1,
        },
        {
          source_pod: 'caller-1',
          source_namespace: 'media',
          dest_pod: 'relay-0',
          dest_namespace: 'core',
          count: 1,
        },
        {
          source_pod: 'external',
          source_namespace: '',
          dest_pod: 'relay-0',
          dest_namespace: 'core',
          count: 2,
        },
      ].sort((p, q) => sortKey(p).localeCompare(sortKey(q))),
    );
    const senders = sum(all, 'audio_signatures').dataPoints.map((p) => ({
      ...p.attributes,
      n: p.value,
    }));
    assert.deepEqual(
      senders.sort((p, q) => sortKey(p).localeCompare(sortKey(q))),
      [
        { pod: 'caller-0', namespace: 'media', n: 1 },
        { pod: 'caller-1', namespace: 'media', n: 1 },
      ],
    );
  });

  it('flushes held signature counts by itself once FLUSH_INTERVAL_MS has passed', (t) => {
    let clock = 1_000_000;
    t.mock.method(Date, 'now', () => clock);
    const endpoints = new EndpointTable({ capacity: 4 });
    const added: number[] = [];
    const recorder = new HopRecorder({
      hopLatency: { record: () => {} } as unknown as Histogram,
      transitLatency: { record: () => {} } as unknown as Histogram,
      signatures: { add: (v: number) => added.push(v) } as unknown as Counter,
      collisions: { add: () => {} } as unknown as Counter,
      endpoints,
    });
    const a = endpoints.internAddress('10.0.0.1');
    const b = endpoints.internAddress('10.0.0.2');
    for (let i = 0; i < 1000; i++) recorder.signature(i % 4 === 0 ? b : a);
    assert.deepEqual(added, [], 'held while within the interval');
    clock += FLUSH_INTERVAL_MS;
    for (let i = 0; i < 64; i++) recorder.signature(a);
    // The clock is read every 64th count: the 1024th count flushes (b first: counted first).
    assert.deepEqual(added, [250, 750 + 24]);
    assert.equal(recorder.stats.unflushedSignatures, 40);
  });

  it('stays bounded: a full pair cache starts over', () => {
    const endpoints = new EndpointTable({ capacity: 8 });
    const seen: Attributes[] = [];
    const histogram = { record: (_v: number, attrs?: Attributes) => seen.push(attrs ?? {}) };
    const recorder = new HopRecorder({
      hopLatency: histogram as unknown as Histogram,
      transitLatency: histogram as unknown as Histogram,
      signatures: { add: () => {} } as unknown as Counter,
      collisions: { add: () => {} } as unknown as Counter,
      endpoints,
      pairCacheCapacity: 2,
    });
    const ids = ['10.0.0.1', '10.0.0.2', '10.0.0.3'].map((ip) => endpoints.internAddress(ip));
    recorder.hop(ids[0], ids[1], 0, 0, 0, 0);
    recorder.hop(ids[1], ids[2], 0, 0, 0, 0);
    assert.equal(recorder.stats.cachedPairs, 2);
    recorder.hop(ids[0], ids[2], 0, 0, 0, 0);
    assert.equal(recorder.stats.cacheResets, 1);
    assert.equal(recorder.stats.cachedPairs, 1);
    recorder.hop(ids[0], ids[1], 0, 0, 0, 0);
    assert.deepEqual(
      seen.map((a) => `${a.source_pod}->${a.dest_pod}`),
      ['10.0.0.1->10.0.0.2', '10.0.0.2->10.0.0.3', '10.0.0.1->10.0.0.3', '10.0.0.1->10.0.0.2'],
    );
  });

  it('end to end: records -> decoder -> correlator -> metrics', async () => {
    const { reader, endpoints, recorder } = setup();
    const correlator = new Correlator(recorder, { timeoutMs: 1000, maxPending: 1024 });
    const decoder = new SignatureBatchDecoder(endpoints, correlator);
    const buffer = new Uint8Array(4 * SIG_RECORD_SIZE);
    const t0 = 7_000_000_000_000;
    const hopNs = 3_250_000;
    const at = (
      i: number,
      ts: number,
      from: string,
      to: string,
      ifindex: number,
      direction: number,
    ) =>
      writeSigRecord(buffer, i, {
        tsNs: ts,
        sigLo: 0x1234,
        sigHi: 0x5678,
        saddr: from,
        daddr: to,
        sport: 40000,
        dport: 5004,
        ifindex,
        direction,
      });
    at(0, t0, '10.0.0.1', '10.0.0.2', 11, 0);
    at(1, t0 + 40_000, '10.0.0.1', '10.0.0.2', 12, 1);
    at(2, t0 + hopNs, '10.0.0.2', '10.0.0.3', 12, 0);
    at(3, t0 + hopNs + 60_000, '10.0.0.2', '10.0.0.3', 13, 1);
    decoder.decode(buffer, 4);
    recorder.flush();
    const all = await metrics(reader);
    const hops = byPair(histogram(all, 'audio_latency_seconds'));
    assert.equal(hops.size, 1);
    const hop = hops.get('10.0.0.1->10.0.0.2');
    assert.equal(hop?.count, 1);
    assert.ok(Math.abs((hop?.sum ?? 0) - hopNs / 1e9) < 1e-12);
    const transits = byPair(histogram(all, 'audio_transit_latency_seconds'));
    assert.ok(Math.abs((transits.get('10.0.0.1->10.0.0.2')?.sum ?? 0) - 40e-6) < 1e-12);
    assert.ok(Math.abs((transits.get('10.0.0.2->10.0.0.3')?.sum ?? 0) - 60e-6) < 1e-12);
    const signatures = sum(all, 'audio_signatures').dataPoints;
    assert.equal(
      signatures.reduce((n, p) => n + p.value, 0),
      2,
    );
  });
});
