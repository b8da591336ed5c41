/**
 * A small reader of the Prometheus text exposition format (what the agent serves on /metrics),
 * and histogram_quantile() as Prometheus computes it, so the demo can show p50/p95/p99 per hop
 * and tests can cross-check Prometheus' answers without running it.
 */

export type Labels = Record<string, string>;

export interface Sample {
  name: string;
  labels: Labels;
  value: number;
}

function parseValue(text: string): number {
  switch (text) {
    case '+Inf':
      return Infinity;
    case '-Inf':
      return -Infinity;
    case 'NaN':
      return NaN;
    default:
      return Number(text);
  }
}

/** Parses `{a="x",b="y\"z"}` starting at text[i] === '{'; returns the labels and the index after '}'. */
function parseLabels(text: string, start: number): { labels: Labels; end: number } {
  const labels: Labels = {};
  let i = start + 1;
  while (i < text.length) {
    while (text[i] === ' ' || text[i] === ',') i++;
    if (text[i] === '}') return { labels, end: i + 1 };
    const eq = text.indexOf('=', i);
    if (eq < 0) break;
    const key = text.slice(i, eq).trim();
    i = eq + 1;
    if (text[i] !== '"') break;
    i++;
    let value = '';
    while (i < text.length && text[i] !== '"') {
      if (text[i] === '\\' && i + 1 < text.length) {
        const c = text[i + 1];
        value += c === 'n' ? '\n' : c;
        i += 2;
      } else {
        value += text[i++];
      }
    }
    labels[key] = value;
    i++; // closing quote
  }
  throw new Error(`metrics-text: unterminated label set in: ${text}`);
}

/** Every sample in an exposition; comments and blank lines are skipped. */
export function parseMetrics(text: string): Sample[] {
  const out: Sample[] = [];
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    if (line === '' || line.startsWith('#')) continue;
    const brace = line.indexOf('{');
    const space = line.indexOf(' ');
    let name: string;
    let labels: Labels = {};
    let rest: string;
    if (brace >= 0 && (space < 0 || brace < space)) {
      name = line.slice(0, brace);
      const parsed = parseLabels(line, brace);
      labels = parsed.labels;
      rest = line.slice(parsed.end).trim();
    } else {
      name = line.slice(0, space);
      rest = line.slice(space + 1).trim();
    }
    out.push({ name, labels, value: parseValue(rest.split(/\s+/)[0]) });
  }
  return out;
}

function matches(labels: Labels, selector: Labels): boolean {
  for (const [k, v] of Object.entries(selector)) if (labels[k] !== v) return false;
  return true;
}

/** Sum of the values of `name` whose labels include `selector` (undefined when none). */
export function sumOf(samples: Sample[], name: string, selector: Labels = {}): number | undefined {
  let sum: number | undefined;
  for (const s of samples) {
    if (s.name === name && matches(s.labels, selector)) sum = (sum ?? 0) + s.value;
  }
  return sum;
}

export interface Bucket {
  le: number;
  count: number; // cumulative
}

/** Cumulative buckets of histogram `name`, summed over every series matching `selector`. */
export function bucketsOf(samples: Sample[], name: string, selector: Labels = {}): Bucket[] {
  const byLe = new Map<number, number>();
  for (const s of samples) {
    if (s.name !== `${name}_bucket` || !matches(s.labels, selector)) continue;
    const le = parseValue(s.labels.le ?? '');
    if (Number.isNaN(le)) continue;
    byLe.set(le, (byLe.get(le) ?? 0) + s.value);
  }
  return [...byLe.entries()].map(([le, count]) => ({ le, count })).sort((a, b) => a.le - b.le);
}

/**
 * histogram_quantile() with Prometheus' rules: linear interpolation inside the bucket holding the
 * rank, the first bucket starting at 0 (when its bound is positive), and a rank in the +Inf bucket
 * answering the highest finite bound. NaN without observations or without a +Inf bucket.
 */
export function histogramQuantile(q: number, buckets: Bucket[]): number {
  if (buckets.length < 2 || buckets[buckets.length - 1].le !== Infinity) return NaN;
  const total = buckets[buckets.length - 1].count;
  if (total === 0) return NaN;
  if (q < 0) return -Infinity;
  if (q > 1) return Infinity;
  const rank = q * total;
  let i = 0;
  while (i < buckets.length - 1 && buckets[i].count < rank) i++;
  if (i === buckets.length - 1) return buckets[buckets.length - 2].le;
  if (i === 0 && buckets[0].le <= 0) return buckets[0].le;
  const lower = i === 0 ? 0 : buckets[i - 1].le;
  const below = i === 0 ? 0 : buckets[i - 1].count;
  const inBucket = buckets[i].count - below;
  return lower + (buckets[i].le - lower) * ((rank - below) / inBucket);
}

/** Distinct values of the label pair (a, b) among the series of `name`. */
export function labelPairs(
  samples: Sample[],
  name: string,
  a: string,
  b: string,
): [string, string][] {
  const seen = new Map<string, [string, string]>();
  for (const s of samples) {
    if (s.name !== name) continue;
    const va = s.labels[a];
    const vb = s.labels[b];
    if (va === undefined || vb === undefined) continue;
    seen.set(`${va}\u0000${vb}`, [va, vb]);
  }
  return [...seen.values()];
}
