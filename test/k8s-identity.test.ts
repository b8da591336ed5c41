/**
 * Pod labels of endpoints: the resolver (pod by IP, `external`, the IP when asked), the cap on
 * label values with its `other` overflow, relabelling when an IP passes to a new pod, and the
 * series of a deleted pod leaving /metrics (and the SDK's memory) once SERIES_TTL_MS has passed,
 * driven by an injected clock.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { EndpointTable } from '../src/endpoints.js';
import { HopRecorder } from '../src/hop-recorder.js';
import {
  EXTERNAL,
  invalidateIps,
  OTHER,
  PodLabeler,
  type PodLabelerOptions,
  type SweepResult,
} from '../src/k8s/identity.js';
import { parsePod, PodCache, type PodIdentity } from '../src/k8s/pod-cache.js';
import {
  createMeterPipeline,
  emptySelfStats,
  filterResourceMetrics,
  retainedSeriesCount,
  type MeterPipeline,
} from '../otel/index.js';
import { makePod, type PodSpecInput } from './support/fake-k8s.js';
import { parseMetrics, sumOf } from './lab/metrics-text.js';
import { AggregationTemporality, MeterProvider, MetricReader } from '@opentelemetry/sdk-metrics';

const NODE = 'node-1';

function pod(input: Omit<PodSpecInput, 'node'>): PodIdentity {
  const r = parsePod(makePod({ node: NODE, ...input }));
  assert.ok(r.ok, 'fixture pod parses');
  return r.pod;
}

function labeler(cache: PodCache | null, extra: Partial<PodLabelerOptions> = {}) {
  const clock = { ms: 1_000_000 };
  const l = new PodLabeler({
    cache,
    maxValues: 500,
    seriesTtlMs: 60_000,
    now: () => clock.ms,
    ...extra,
  });
  return { l, clock };
}

describe('PodLabeler: naming endpoints', () => {
  it('names a pod of this node by name with its namespace; anything else `external`', () => {
    const cache = new PodCache();
    cache.replaceAll([
      pod({ name: 'mixer-0', namespace: 'media', ip: '10.1.0.5', extraIps: ['fd00::5'] }),
      pod({ name: 'relay', namespace: 'core', ip: '10.1.0.6' }),
    ]);
    const { l } = labeler(cache);
    assert.deepEqual(l.labelIp('10.1.0.5'), { name: 'mixer-0', namespace: 'media' });
    assert.deepEqual(l.labelIp('fd00::5'), { name: 'mixer-0', namespace: 'media' });
    assert.equal(l.labelIp('10.1.0.5'), l.labelIp('fd00::5'), 'one shared frozen object');
    assert.ok(Object.isFrozen(l.labelIp('10.1.0.6')));
    // Not a pod of this node: another node's pod, a service, the internet.
    assert.equal(l.labelIp('10.2.0.9'), EXTERNAL);
    assert.equal(l.labelIp('203.0.113.1'), EXTERNAL);
    assert.deepEqual(EXTERNAL, { name: 'external', namespace: '' });
    assert.equal(l.stats.values, 2, '`external` is not a counted value');
  });

  it('K8S_LABEL_EXTERNAL=ip names a non-pod by its address; without Kubernetes every endpoint', () => {
    const cache = new PodCache();
    cache.replaceAll([pod({ name: 'a', namespace: 'n', ip: '10.1.0.5' })]);
    const byIp = labeler(cache, { external: 'ip' }).l;
    assert.deepEqual(byIp.labelIp('203.0.113.1'), { name: '203.0.113.1', namespace: '' });
    assert.deepEqual(byIp.labelIp('10.1.0.5'), { name: 'a', namespace: 'n' });
    const off = labeler(null).l;
    assert.deepEqual(off.labelIp('10.1.0.5'), { name: '10.1.0.5', namespace: '' });
  });

  it('a cgroup path names its pod by container ID, else by pod UID', () => {
    const json = makePod({ node: NODE, name: 'rtpengine-x', namespace: 'voip', hostNetwork: true });
    const r = parsePod(json);
    assert.ok(r.ok);
    const cache = new PodCache();
    cache.replaceAll([r.pod]);
    const { l } = labeler(cache);
    const id = r.pod.containerIds[0];
    const uid = r.pod.uid.replaceAll('-', '_');
    const path = `/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod${uid}.slice/cri-containerd-${id}.scope`;
    assert.deepEqual(l.labelCgroupPath(path), { name: 'rtpengine-x', namespace: 'voip' });
    const unknownContainer = path.replace(id, 'f'.repeat(64));
    assert.deepEqual(l.labelCgroupPath(unknownContainer), {
      name: 'rtpengine-x',
      namespace: 'voip',
    });
    assert.equal(l.labelCgroupPath('/system.slice/sshd.service'), undefined);
    // hostNetwork pods are never found by IP (they share the node's).
    assert.equal(l.labelIp('192.0.2.10'), EXTERNAL);
  });
});

describe('PodLabeler: cardinality cap', () => {
  it('folds values beyond the cap into `other`, counts them, and frees room after the TTL', () => {
    const cache = new PodCache();
    const pods = Array.from({ length: 12 }, (_, i) =>
      pod({ name: `p${i}`, namespace: 'ns', ip: `10.1.0.${i + 1}` }),
    );
    cache.replaceAll(pods);
    const { l, clock } = labeler(cache, { maxValues: 10, seriesTtlMs: 5000 });
    const labels = pods.map((_, i) => l.labelIp(`10.1.0.${i + 1}`));
    assert.deepEqual(
      labels.map((x) => x.name),
      ['p0', 'p1', 'p2', 'p3', 'p4', 'p5', 'p6', 'p7', 'p8', 'p9', 'other', 'other'],
    );
    assert.equal(labels[10], OTHER);
    assert.deepEqual(OTHER, { name: 'other', namespace: '' });
    assert.equal(l.stats.overflows, 2);
    assert.equal(l.stats.values, 10);
    // A known value is not a new one: no more overflow.
    l.labelIp('10.1.0.1');
    assert.equal(l.stats.overflows, 2);

    // p0 is deleted: its value stays (series still exported) until the TTL has passed.
    cache.remove(pods[0].uid);
    assert.deepEqual(l.sweep(), { retired: 0, refold: false });
    clock.ms += 4999;
    assert.deepEqual(l.sweep(), { retired: 0, refold: false });
    assert.equal(l.labelIp('10.1.0.11'), OTHER, 'still full within the TTL');
    clock.ms += 1;
    assert.deepEqual(l.sweep(), { retired: 1, refold: true });
    assert.deepEqual(l.labelIp('10.1.0.11'), { name: 'p10', namespace: 'ns' });
    assert.equal(l.labelIp('10.1.0.12'), OTHER);
  });

  it('a value retired to make room for a new one is still reported by the next sweep (to prune)', () => {
    const cache = new PodCache();
    const pods = Array.from({ length: 11 }, (_, i) =>
      pod({ name: `q${i}`, namespace: 'ns', ip: `10.1.1.${i + 1}` }),
    );
    cache.replaceAll(pods);
    const { l, clock } = labeler(cache, { maxValues: 10, seriesTtlMs: 1000 });
    for (let i = 1; i <= 10; i++) l.labelIp(`10.1.1.${i}`);
    cache.remove(pods[0].uid);
    l.sweep();
    clock.ms += 1000;
    // No sweep in between: the labeler retires q0 by itself to admit q10.
    assert.deepEqual(l.labelIp('10.1.1.11'), { name: 'q10', namespace: 'ns' });
    assert.equal(l.stats.filtered, 1, 'q0 is filtered from the exports');
    assert.deepEqual(l.sweep(), { retired: 1, refold: false });
    assert.deepEqual(l.sweep(), { retired: 0, refold: false });
  });

  it('a live pod is never retired, however long it is idle', () => {
    const cache = new PodCache();
    cache.replaceAll([pod({ name: 'idle', namespace: 'ns', ip: '10.1.0.1' })]);
    const { l, clock } = labeler(cache, { seriesTtlMs: 1000 });
    l.labelIp('10.1.0.1');
    clock.ms += 86_400_000;
    assert.equal(l.sweep().retired, 0);
    assert.equal(l.stats.values, 1);
  });
});

describe('relabel on IP reuse', () => {
  it('an IP given to a new pod is never labelled with the old pod', () => {
    const cache = new PodCache();
    const old = pod({ name: 'caller-a', namespace: 'media', ip: '10.1.0.7' });
    cache.replaceAll([old]);
    const { l } = labeler(cache);
    const endpoints = new EndpointTable({ capacity: 16, labeler: (ip) => l.labelIp(ip) });
    const changed: string[][] = [];
    cache.onChange((ips) => {
      changed.push(ips);
      invalidateIps(endpoints, ips);
    });
    const id = endpoints.internAddress('10.1.0.7');
    const gen = endpoints.generation(id);
    assert.equal(endpoints.endpointLabel(id).name, 'caller-a');

    cache.remove(old.uid);
    assert.deepEqual(changed, [['10.1.0.7']]);
    assert.notEqual(endpoints.generation(id), gen, 'cached attributes must be rebuilt');
    assert.equal(endpoints.endpointLabel(id), EXTERNAL, 'a deleted pod keeps no samples');

    cache.upsert(pod({ name: 'caller-b', namespace: 'media', ip: '10.1.0.7' }));
    assert.deepEqual(endpoints.endpointLabel(id), { name: 'caller-b', namespace: 'media' });
    // Unknown IPs and non-addresses in a change report are ignored.
    assert.equal(invalidateIps(endpoints, ['10.9.9.9', 'not-an-ip']), 0);
  });
});

describe('dead series', () => {
  let pipeline: MeterPipeline;
  let cache: PodCache;
  let l: PodLabeler;
  let clock: { ms: number };
  let endpoints: EndpointTable;
  let recorder: HopRecorder;
  const ttl = 60_000;

  before(async () => {
    cache = new PodCache();
    ({ l, clock } = labeler(cache, { seriesTtlMs: ttl }));
    pipeline = await createMeterPipeline({
      serviceVersion: 'test',
      host: '127.0.0.1',
      port: 0,
      latencyBuckets: [0.01, 0.1, 1],
      otlp: {
        enabled: false,
        endpoint: '',
        headers: {},
        compression: 'none',
        timeoutMs: 1000,
        exportIntervalMs: 1000,
        exportTimeoutMs: 1000,
        temporality: 'cumulative',
        histogramAggregation: 'explicit',
      },
      dropSeries: (a) => l.dropSeries(a),
      labelStats: () => ({ overflows: l.stats.overflows, values: l.stats.values }),
    });
    const instruments = pipeline.createInstruments(() => emptySelfStats());
    endpoints = new EndpointTable({ capacity: 16, labeler: (ip) => l.labelIp(ip) });
    cache.onChange((ips) => invalidateIps(endpoints, ips));
    recorder = new HopRecorder({ ...instruments, endpoints });
  });
  after(() => pipeline.shutdown());

  const scrape = async (): Promise<string> => {
    const res = await fetch(`http://127.0.0.1:${pipeline.address.port}/metrics`);
    return res.text();
  };

  it("drops a deleted pod's series from /metrics and the SDK after SERIES_TTL_MS, not before", async () => {
    const gone = pod({ name: 'gone-0', namespace: 'media', ip: '10.1.0.1' });
    const stays = pod({ name: 'stays-0', namespace: 'media', ip: '10.1.0.2' });
    cache.replaceAll([gone, stays]);
    const g = endpoints.internAddress('10.1.0.1');
    const s = endpoints.internAddress('10.1.0.2');
    recorder.hop(g, s, 0.05, 0, 0, 0);
    recorder.hop(s, g, 0.05, 0, 0, 0);
    recorder.signature(g);
    recorder.signature(s);
    recorder.flush();
    const goneSel = { pod: 'gone-0', namespace: 'media' };
    let m = parseMetrics(await scrape());
    assert.equal(sumOf(m, 'audio_signatures_total', goneSel), 1);
    assert.equal(
      sumOf(m, 'audio_latency_seconds_count', {
        source_pod: 'gone-0',
        source_namespace: 'media',
        dest_pod: 'stays-0',
        dest_namespace: 'media',
      }),
      1,
    );
    assert.equal(sumOf(m, 'audio_tracker_label_values'), 2);
    const heldBefore = retainedSeriesCount(pipeline.meterProvider);
    assert.ok(heldBefore !== undefined && heldBefore > 0, 'SDK storages readable');

    cache.remove(gone.uid);
    l.sweep();
    // Traffic from the IP after the deletion is not the deleted pod's.
    recorder.signature(g);
    recorder.flush();
    clock.ms += ttl - 1;
    assert.equal(l.sweep().retired, 0);
    m = parseMetrics(await scrape());
    assert.equal(sumOf(m, 'audio_signatures_total', goneSel), 1, 'exported within the TTL');
    assert.equal(sumOf(m, 'audio_signatures_total', { pod: 'external', namespace: '' }), 1);

    clock.ms += 1;
    assert.equal(l.sweep().retired, 1);
    const mentionsGone = (text: string): boolean => text.includes('"gone-0"');
    let text = await scrape();
    assert.ok(!mentionsGone(text), 'filtered from /metrics once retired');
    m = parseMetrics(text);
    assert.equal(sumOf(m, 'audio_signatures_total', { pod: 'stays-0' }), 1);
    // Both hop series involve the deleted pod, whichever side it was on.
    assert.equal(sumOf(m, 'audio_latency_seconds_count'), undefined);

    // The SDK forgets them too (memory), and the filter can then let go of the value.
    const pruned = pipeline.pruneSeries();
    assert.equal(pruned.supported, true, 'sdk-metrics internals changed: update series-retention');
    assert.ok(pruned.removed > 0);
    const heldAfter = retainedSeriesCount(pipeline.meterProvider);
    assert.ok(heldAfter !== undefined && heldAfter < heldBefore);
    l.forgetRetired();
    assert.equal(l.stats.filtered, 0);
    text = await scrape();
    assert.ok(!mentionsGone(text), 'gone from the SDK, not just filtered');
    m = parseMetrics(text);
    assert.equal(sumOf(m, 'audio_signatures_total', { pod: 'stays-0' }), 1);
    assert.equal(sumOf(m, 'audio_tracker_label_values'), 1);

    // A pod recreated under the same name (a StatefulSet) is exported again, from zero.
    cache.upsert(pod({ name: 'gone-0', namespace: 'media', ip: '10.1.0.9' }));
    const back = endpoints.internAddress('10.1.0.9');
    recorder.signature(back);
    recorder.flush();
    assert.equal(sumOf(parseMetrics(await scrape()), 'audio_signatures_total', goneSel), 1);
  });

  it('filterResourceMetrics removes exactly the rejected points (the OTLP path)', async () => {
    const reader = new PullReader();
    const provider = new MeterProvider({ readers: [reader] });
    const counter = provider.getMeter('t').createCounter('audio_signatures');
    const histogram = provider.getMeter('t').createHistogram('audio_latency_seconds');
    counter.add(1, { pod: 'a', namespace: 'n' });
    counter.add(1, { pod: 'b', namespace: 'n' });
    histogram.record(0.1, {
      source_pod: 'a',
      source_namespace: 'n',
      dest_pod: 'b',
      dest_namespace: 'n',
    });
    const { resourceMetrics } = await reader.collect();
    const kept = filterResourceMetrics(resourceMetrics, (attrs) => attrs.pod === 'a');
    const names = (rm: typeof resourceMetrics) =>
      rm.scopeMetrics.flatMap((sm) =>
        sm.metrics.flatMap((m) =>
          m.dataPoints.map((p) => `${m.descriptor.name}:${JSON.stringify(p.attributes)}`),
        ),
      );
    assert.deepEqual(names(kept).sort(), [
      'audio_latency_seconds:{"source_pod":"a","source_namespace":"n","dest_pod":"b","dest_namespace":"n"}',
      'audio_signatures:{"pod":"b","namespace":"n"}',
    ]);
    assert.equal(names(resourceMetrics).length, 3, 'the collection itself is not modified');
    const none = filterResourceMetrics(resourceMetrics, (attrs) => attrs.dest_pod === 'b');
    assert.deepEqual(
      none.scopeMetrics.flatMap((sm) => sm.metrics.map((m) => m.descriptor.name)),
      ['audio_signatures'],
      'a metric left without points is omitted',
    );
    assert.equal(
      filterResourceMetrics(resourceMetrics, () => false),
      resourceMetrics,
    );
    await provider.shutdown();
  });
});

describe('idle IP values (Kubernetes off, or K8S_LABEL_EXTERNAL=ip)', () => {
  const ttl = 60_000;
  const SECOND_NS = 1e9;

  /** A labeler watching its endpoint table, a recorder and a scrape endpoint, as the agent has. */
  async function rig(maxValues: number) {
    const { l, clock } = labeler(null, { maxValues, seriesTtlMs: ttl });
    const pipeline = await createTestPipeline(l);
    const instruments = pipeline.createInstruments(() => emptySelfStats());
    const endpoints = new EndpointTable({ capacity: 16, labeler: (ip) => l.labelIp(ip) });
    l.watchEndpoints(endpoints);
    const recorder = new HopRecorder({ ...instruments, endpoints });
    const time = { ns: 5 * SECOND_NS };
    /** One signature record from `ip` at the current event time (intern, then count). */
    const use = (ip: string): number => {
      const id = endpoints.internAddress(ip, time.ns);
      recorder.signature(id);
      return id;
    };
    /** The agent's 1 s sweep, one second of both clocks later. */
    const tick = (): SweepResult => {
      clock.ms += 1000;
      time.ns += SECOND_NS;
      return l.sweep();
    };
    /** What Agent.sweepLabels does with a sweep's result. */
    const apply = (swept: SweepResult): void => {
      if (swept.retired > 0) {
        recorder.flush();
        assert.equal(pipeline.pruneSeries().supported, true, 'sdk-metrics internals changed');
        l.forgetRetired();
      }
      if (swept.refold) endpoints.invalidateWhere((label) => label === OTHER);
    };
    const scrape = async () => {
      recorder.flush();
      const res = await fetch(`http://127.0.0.1:${pipeline.address.port}/metrics`);
      return res.text();
    };
    return { l, endpoints, recorder, pipeline, use, tick, apply, scrape };
  }

  it('retires addresses idle for SERIES_TTL_MS, drops their series and names the `other` ones', async () => {
    const r = await rig(3);
    try {
      const ips = ['10.9.0.1', '10.9.0.2', '10.9.0.3', '10.9.0.4'];
      const ids = ips.map((ip) => r.use(ip));
      const label = (i: number) => r.endpoints.endpointLabel(ids[i]);
      assert.deepEqual(label(0), { name: ips[0], namespace: '' });
      assert.deepEqual(label(2), { name: ips[2], namespace: '' });
      assert.equal(label(3), OTHER, 'the fourth address is beyond the cap');
      assert.equal(r.l.stats.values, 3);
      assert.deepEqual(r.l.sweep(), { retired: 0, refold: false });
      const sel = (ip: string) => ({ pod: ip, namespace: '' });
      let m = parseMetrics(await r.scrape());
      assert.equal(sumOf(m, 'audio_signatures_total', sel(ips[0])), 1);
      assert.equal(sumOf(m, 'audio_signatures_total', { pod: 'other' }), 1);

      // Only the fourth keeps sending; the first three are idle for the TTL, not a tick less.
      for (let s = 1; s < ttl / 1000; s++) {
        r.use(ips[3]);
        assert.deepEqual(r.tick(), { retired: 0, refold: false }, `second ${s}`);
      }
      r.use(ips[3]);
      const swept = r.tick();
      assert.deepEqual(swept, { retired: 3, refold: true });
      assert.equal(r.l.stats.values, 0);
      for (const ip of ips.slice(0, 3)) {
        assert.equal(r.l.dropSeries({ pod: ip, namespace: '' }), true, `${ip} filtered`);
      }
      let text = await r.scrape();
      for (const ip of ips.slice(0, 3)) assert.ok(!text.includes(`"${ip}"`), `${ip} not exported`);
      const heldBefore = retainedSeriesCount(r.pipeline.meterProvider);
      r.apply(swept);
      const heldAfter = retainedSeriesCount(r.pipeline.meterProvider);
      assert.ok(heldBefore !== undefined && heldAfter !== undefined && heldAfter < heldBefore);
      assert.equal(r.l.stats.filtered, 0, 'pruned from the SDK: the filter lets go');

      // Room again: the endpoint folded into `other` gets its own name on its next use.
      r.use(ips[3]);
      assert.deepEqual(label(3), { name: ips[3], namespace: '' });
      assert.equal(r.l.stats.values, 1);
      // A retired address that comes back is admitted again, its series from zero.
      const back = r.use(ips[0]);
      assert.deepEqual(r.endpoints.endpointLabel(back), { name: ips[0], namespace: '' });
      text = await r.scrape();
      m = parseMetrics(text);
      assert.equal(sumOf(m, 'audio_signatures_total', sel(ips[3])), 1);
      assert.equal(sumOf(m, 'audio_signatures_total', sel(ips[0])), 1);
      assert.equal(sumOf(m, 'audio_signatures_total', { pod: 'other' }), ttl / 1000 + 1);
      for (const ip of ips.slice(1, 3)) assert.ok(!text.includes(`"${ip}"`), `${ip} stays gone`);
    } finally {
      await r.pipeline.shutdown();
    }
  });

  it('never retires an address in steady use, however long', async () => {
    const r = await rig(3);
    try {
      const steady = r.use('10.9.1.1');
      const first = r.endpoints.endpointLabel(steady);
      r.use('10.9.1.2');
      r.l.sweep();
      let retired = 0;
      for (let s = 0; s < (10 * ttl) / 1000; s++) {
        r.use('10.9.1.1');
        retired += r.tick().retired;
      }
      assert.equal(retired, 1, 'only the idle address is retired');
      assert.equal(r.l.stats.values, 1);
      assert.equal(r.endpoints.endpointLabel(steady), first, 'same label object: no flap');
      assert.equal(r.l.dropSeries({ pod: '10.9.1.1', namespace: '' }), false);
      assert.equal(r.l.dropSeries({ pod: '10.9.1.2', namespace: '' }), true);
    } finally {
      await r.pipeline.shutdown();
    }
  });

  it('without a watched endpoint table an address is never idle', () => {
    const { l, clock } = labeler(null, { seriesTtlMs: 1000 });
    l.labelIp('10.9.2.1');
    clock.ms += 86_400_000;
    assert.equal(l.sweep().retired, 0);
    assert.equal(l.stats.values, 1);
  });
});

function createTestPipeline(l: PodLabeler): Promise<MeterPipeline> {
  return createMeterPipeline({
    serviceVersion: 'test',
    host: '127.0.0.1',
    port: 0,
    latencyBuckets: [0.01, 0.1, 1],
    otlp: {
      enabled: false,
      endpoint: '',
      headers: {},
      compression: 'none',
      timeoutMs: 1000,
      exportIntervalMs: 1000,
      exportTimeoutMs: 1000,
      temporality: 'cumulative',
      histogramAggregation: 'explicit',
    },
    dropSeries: (a) => l.dropSeries(a),
    labelStats: () => ({ overflows: l.stats.overflows, values: l.stats.values }),
  });
}

/** The smallest real reader: collect() on demand. */
class PullReader extends MetricReader {
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
