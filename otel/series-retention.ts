/**
 * Forgetting series: the OpenTelemetry JS SDK (sdk-metrics 3.1) has no API to drop one
 * attribute set of a synchronous instrument. With cumulative temporality every attribute set
 * ever recorded stays in each reader's report history (TemporalMetricProcessor._reportHistory)
 * and is exported forever; the aggregation cardinality limit does not help, it only bounds the
 * attribute sets recorded *within one collection interval* (DeltaMetricProcessor).
 *
 * Two layers, so that what is exported never depends on SDK internals:
 *  1. filterResourceMetrics(): the data points a predicate rejects are removed from every
 *     collection before it is serialised (Prometheus) or pushed (OTLP). Public types only.
 *  2. pruneRetainedSeries(): best effort, removes those attribute sets from the SDK's own
 *     storages so memory stays bounded on a long-running agent with pod churn. It reads private
 *     fields, checks their shape at every step, and reports `supported: false` (touching
 *     nothing) when the SDK no longer looks as expected; the filter then keeps working alone.
 */

import type { Attributes } from '@opentelemetry/api';
import type { MeterProvider, MetricData, ResourceMetrics } from '@opentelemetry/sdk-metrics';

/** True for a data point that must not be exported (its pod is gone). */
export type SeriesPredicate = (attributes: Attributes) => boolean;

export interface PruneResult {
  /** False when the SDK's internals did not have the expected shape: nothing was pruned. */
  supported: boolean;
  /** Attribute sets removed from SDK storages (each reader's copy counts). */
  removed: number;
}

/** A copy of `rm` without the data points `drop` rejects (metrics left empty are omitted). */
export function filterResourceMetrics(rm: ResourceMetrics, drop: SeriesPredicate): ResourceMetrics {
  let changed = false;
  const scopeMetrics = rm.scopeMetrics.map((scope) => {
    const metrics: MetricData[] = [];
    let scopeChanged = false;
    for (const metric of scope.metrics) {
      const kept = filterMetric(metric, drop);
      if (kept !== metric) scopeChanged = true;
      if (kept !== undefined) metrics.push(kept);
    }
    changed ||= scopeChanged;
    return scopeChanged ? { ...scope, metrics } : scope;
  });
  return changed ? { ...rm, scopeMetrics } : rm;
}

function filterMetric(metric: MetricData, drop: SeriesPredicate): MetricData | undefined {
  // The data point types differ only in `value`: filtering keeps each metric's own type.
  const points = metric.dataPoints as readonly { attributes: Attributes }[];
  let dropped = 0;
  for (const p of points) if (drop(p.attributes)) dropped++;
  if (dropped === 0) return metric;
  if (dropped === points.length) return undefined;
  return { ...metric, dataPoints: points.filter((p) => !drop(p.attributes)) } as MetricData;
}

// ---------------------------------------------------------------------------
// The SDK's storages (sdk-metrics 3.1 private fields, shape-checked)

interface AttributeHashMapShape {
  _keyMap: Map<unknown, unknown>;
  _valueMap: Map<unknown, unknown>;
}

function field(obj: unknown, name: string): unknown {
  return typeof obj === 'object' && obj !== null
    ? (obj as Record<string, unknown>)[name]
    : undefined;
}

function isAttributeMap(v: unknown): v is AttributeHashMapShape {
  return field(v, '_keyMap') instanceof Map && field(v, '_valueMap') instanceof Map;
}

/** Every attribute map a sync or async storage keeps, or undefined when its shape is unknown. */
function attributeMapsOf(storage: unknown): AttributeHashMapShape[] | undefined {
  const delta = field(storage, '_deltaMetricStorage');
  const temporal = field(storage, '_temporalMetricStorage');
  const active = field(delta, '_activeCollectionStorage');
  const memo = field(delta, '_cumulativeMemoStorage');
  const history = field(temporal, '_reportHistory');
  const unreported = field(temporal, '_unreportedAccumulations');
  if (!isAttributeMap(active) || !isAttributeMap(memo)) return undefined;
  if (!(history instanceof Map) || !(unreported instanceof Map)) return undefined;
  const maps: AttributeHashMapShape[] = [active, memo];
  for (const report of history.values()) {
    const acc = field(report, 'accumulations');
    if (!isAttributeMap(acc)) return undefined;
    maps.push(acc);
  }
  for (const list of unreported.values()) {
    if (!Array.isArray(list)) return undefined;
    for (const acc of list) {
      if (!isAttributeMap(acc)) return undefined;
      maps.push(acc);
    }
  }
  return maps;
}

/** Every metric storage of the provider, or undefined when the shape is unknown. */
function storagesOf(provider: MeterProvider): unknown[] | undefined {
  const states = field(field(provider, '_sharedState'), 'meterSharedStates');
  if (!(states instanceof Map)) return undefined;
  const storages: unknown[] = [];
  for (const state of states.values()) {
    const registry = field(state, 'metricStorageRegistry');
    const shared = field(registry, '_sharedRegistry');
    const perCollector = field(registry, '_perCollectorRegistry');
    if (!(shared instanceof Map) || !(perCollector instanceof Map)) return undefined;
    const byName: unknown[] = [...shared.values()];
    for (const m of perCollector.values()) {
      if (!(m instanceof Map)) return undefined;
      byName.push(...m.values());
    }
    for (const list of byName) {
      if (!Array.isArray(list)) return undefined;
      storages.push(...(list as unknown[]));
    }
  }
  return storages;
}

/**
 * Removes the attribute sets `drop` rejects from every storage of `provider` (both readers'
 * histories). All shapes are checked before anything is removed.
 */
export function pruneRetainedSeries(provider: MeterProvider, drop: SeriesPredicate): PruneResult {
  const storages = storagesOf(provider);
  if (storages === undefined) return { supported: false, removed: 0 };
  const maps: AttributeHashMapShape[] = [];
  for (const storage of storages) {
    const own = attributeMapsOf(storage);
    if (own === undefined) return { supported: false, removed: 0 };
    maps.push(...own);
  }
  let removed = 0;
  for (const map of maps) {
    for (const [hash, attributes] of [...map._keyMap]) {
      if (typeof attributes !== 'object' || attributes === null) continue;
      if (!drop(attributes as Attributes)) continue;
      map._keyMap.delete(hash);
      if (map._valueMap.delete(hash)) removed++;
    }
  }
  return { supported: true, removed };
}

/** Attribute sets the SDK holds in total (every storage, every reader): for tests. */
export function retainedSeriesCount(provider: MeterProvider): number | undefined {
  const storages = storagesOf(provider);
  if (storages === undefined) return undefined;
  let n = 0;
  for (const storage of storages) {
    const maps = attributeMapsOf(storage);
    if (maps === undefined) return undefined;
    for (const m of maps) n += m._valueMap.size;
  }
  return n;
}
