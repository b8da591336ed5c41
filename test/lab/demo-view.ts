/**
 * What the demo shows, from one /metrics scrape: a table per hop (source -> dest, samples,
 * p50/p95/p99 and the delay the pipeline is known to add) or, before the first hop sample, one
 * progress line. Pure functions of the scrape, so they are tested without root.
 */
import {
  bucketsOf,
  histogramQuantile,
  labelPairs,
  sumOf,
  type Labels,
  type Sample,
} from './metrics-text.js';

export const HOP_METRIC = 'audio_latency_seconds';
export const TRANSIT_METRIC = 'audio_transit_latency_seconds';

export interface HopRow {
  source: string; // namespace/pod as labelled
  dest: string;
  samples: number;
  p50Ms: number;
  p95Ms: number;
  p99Ms: number;
  /** The delay the destination is known to add, when this hop is one the pipeline makes. */
  expectedMs: number | undefined;
}

/** `namespace/pod`, or the pod label alone when it has no namespace (external, an address). */
function endpoint(labels: Labels, side: 'source' | 'dest'): string {
  const pod = labels[`${side}_pod`] ?? '?';
  const ns = labels[`${side}_namespace`];
  return ns === undefined || ns === '' ? pod : `${ns}/${pod}`;
}

/**
 * One row per (source, dest) pod pair of the hop histogram, in pipeline order when `expected`
 * knows the pair (its delay, keyed `source -> dest` as endpoint() spells them), else by name.
 */
export function hopRows(samples: Sample[], expected: ReadonlyMap<string, number>): HopRow[] {
  const pairs = new Map<string, Labels>();
  for (const s of samples) {
    if (s.name !== `${HOP_METRIC}_count`) continue;
    const sel: Labels = {};
    for (const k of ['source_pod', 'source_namespace', 'dest_pod', 'dest_namespace']) {
      if (s.labels[k] !== undefined) sel[k] = s.labels[k];
    }
    pairs.set(`${endpoint(sel, 'source')} -> ${endpoint(sel, 'dest')}`, sel);
  }
  const order = [...expected.keys()];
  const rank = (k: string): number => (order.includes(k) ? order.indexOf(k) : order.length);
  return [...pairs.entries()]
    .sort(([a], [b]) => rank(a) - rank(b) || a.localeCompare(b))
    .map(([key, sel]) => {
      const buckets = bucketsOf(samples, HOP_METRIC, sel);
      return {
        source: endpoint(sel, 'source'),
        dest: endpoint(sel, 'dest'),
        samples: sumOf(samples, `${HOP_METRIC}_count`, sel) ?? 0,
        p50Ms: histogramQuantile(0.5, buckets) * 1000,
        p95Ms: histogramQuantile(0.95, buckets) * 1000,
        p99Ms: histogramQuantile(0.99, buckets) * 1000,
        expectedMs: expected.get(key),
      };
    });
}

function ms(v: number | undefined): string {
  return v !== undefined && Number.isFinite(v) ? v.toFixed(2) : '-';
}

/** The hop table, columns sized to their content. */
export function renderTable(rows: readonly HopRow[]): string[] {
  const head = ['hop (source -> dest)', 'samples', 'p50 ms', 'p95 ms', 'p99 ms', 'expected ms'];
  const cells = rows.map((r) => [
    `${r.source} -> ${r.dest}`,
    String(r.samples),
    ms(r.p50Ms),
    ms(r.p95Ms),
    ms(r.p99Ms),
    ms(r.expectedMs),
  ]);
  const widths = head.map((h, i) => Math.max(h.length, ...cells.map((c) => c[i].length)));
  const line = (c: string[]): string =>
    c.map((v, i) => (i === 0 ? v.padEnd(widths[i]) : v.padStart(widths[i]))).join('  ');
  return [line(head), ...cells.map(line)];
}

/** The agent's own progress figures, for the warm-up line and the footer. */
export interface AgentProgress {
  attached: number;
  signatures: number;
  transitSamples: number;
  transitMeanUs: number;
}

export function agentProgress(samples: Sample[]): AgentProgress {
  const tCount = sumOf(samples, `${TRANSIT_METRIC}_count`) ?? 0;
  const tSum = sumOf(samples, `${TRANSIT_METRIC}_sum`) ?? 0;
  return {
    attached: sumOf(samples, 'audio_tracker_interfaces_attached') ?? 0,
    signatures: sumOf(samples, 'audio_signatures_total') ?? 0,
    transitSamples: tCount,
    transitMeanUs: tCount > 0 ? (tSum / tCount) * 1e6 : NaN,
  };
}

/** The line shown while no hop has a sample yet. */
export function warmupLine(p: AgentProgress, interfaces: number, streamingS: number): string {
  const spin = '|/-\\'[Math.floor(streamingS) % 4];
  return (
    `${spin} warming up: streaming ${streamingS.toFixed(0)} s, ${p.attached}/${interfaces} ` +
    `interfaces attached, ${p.signatures} signatures so far, waiting for the first hop samples...`
  );
}

export function footerLine(p: AgentProgress, streamingS: number): string {
  const mean = Number.isFinite(p.transitMeanUs) ? p.transitMeanUs.toFixed(0) : '-';
  return (
    `transit (the same packet on two veths): ${p.transitSamples} samples, mean ${mean} us; ` +
    `${p.signatures} signatures; ${p.attached} interfaces attached; streaming ` +
    `${streamingS.toFixed(0)} s`
  );
}

/** Distinct (source, dest) pod pairs of the hop histogram: whether warm-up is over. */
export function hopCount(samples: Sample[]): number {
  return labelPairs(samples, `${HOP_METRIC}_count`, 'source_pod', 'dest_pod').length;
}
