/**
 * Metric names in PromQL, and the Prometheus names the agent exports, so that the dashboard
 * and the alerts (deploy/) can be checked against the code (test/deploy.test.ts) and against a
 * real scrape of the agent (test/e2e.test.ts).
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { parse } from 'yaml';
import { SELF_METRICS } from '../../otel/instruments.js';
import {
  METRIC_HOP_LATENCY,
  METRIC_LABEL_OVERFLOW,
  METRIC_LABEL_VALUES,
  METRIC_OTLP_EXPORT_FAILURES,
  METRIC_SIGNATURE_COLLISIONS,
  METRIC_SIGNATURES,
  METRIC_TRANSIT_LATENCY,
} from '../../otel/metric-names.js';

/** Words that look like metric names but are PromQL syntax. */
const KEYWORDS = new Set([
  'by',
  'without',
  'on',
  'ignoring',
  'group_left',
  'group_right',
  'bool',
  'and',
  'or',
  'unless',
  'offset',
  'inf',
  'nan',
  'atan2',
]);

const STRING = /"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|`[^`]*`/g;
const GRAFANA_VARIABLE = /\$\{[^}]*\}|\$[A-Za-z_][A-Za-z0-9_]*/g;
const LABEL_LIST = /\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)/g;
const TOKEN = /([A-Za-z_:][A-Za-z0-9_:]*)|([0-9.][0-9A-Za-z_.]*)|(\S)/g;

/**
 * The metric names an expression selects, in order of first appearance. Strings, label
 * matchers, ranges, grouping label lists, function names, keywords and Grafana variables
 * (`$__rate_interval`, `${x}`) are not names.
 */
export function metricNamesInPromql(expr: string): string[] {
  const text = expr
    .replace(STRING, '""')
    .replace(GRAFANA_VARIABLE, '0')
    .replace(/\{[^}]*\}/g, ' ')
    .replace(/\[[^\]]*\]/g, ' ')
    .replace(/\boffset\s+-?[0-9A-Za-z]+/g, ' ')
    .replace(LABEL_LIST, ' ');
  const names: string[] = [];
  for (const m of text.matchAll(TOKEN)) {
    const word = m[1];
    if (word === undefined || KEYWORDS.has(word.toLowerCase())) continue;
    const after = text.slice((m.index ?? 0) + word.length).trimStart();
    if (after.startsWith('(')) continue; // a function or an aggregation
    if (!names.includes(word)) names.push(word);
  }
  return names;
}

/** The metric of a Grafana `label_values(metric{...}, label)` variable query, if it is one. */
export function labelValuesMetric(query: string): string | undefined {
  return /^\s*label_values\(\s*([A-Za-z_:][A-Za-z0-9_:]*)\s*[{,]/.exec(query)?.[1];
}

/**
 * Every series name the agent's /metrics can show, with the instrument it comes from:
 * histograms as _bucket/_sum/_count, counters with _total (the exporter appends it), gauges as
 * they are, and the exporter's target_info.
 */
export function agentPrometheusNames(): ReadonlyMap<string, string> {
  const names = new Map<string, string>();
  const histogram = (n: string): void => {
    for (const suffix of ['_bucket', '_sum', '_count']) names.set(n + suffix, n);
  };
  const counter = (n: string): void => void names.set(`${n}_total`, n);
  const gauge = (n: string): void => void names.set(n, n);
  histogram(METRIC_HOP_LATENCY);
  histogram(METRIC_TRANSIT_LATENCY);
  counter(METRIC_SIGNATURES);
  counter(METRIC_SIGNATURE_COLLISIONS);
  counter(METRIC_OTLP_EXPORT_FAILURES);
  counter(METRIC_LABEL_OVERFLOW);
  gauge(METRIC_LABEL_VALUES);
  for (const m of SELF_METRICS) (m.kind === 'counter' ? counter : gauge)(m.name);
  names.set('target_info', 'target_info');
  return names;
}

/**
 * Names the dashboard and alerts may use that the agent does not export, and who does. The
 * agent has no process_* metrics, so its CPU and memory come from the kubelet's cAdvisor.
 */
export const NOT_AGENT_METRICS: ReadonlyMap<string, string> = new Map([
  ['up', 'Prometheus, per scrape target'],
  ['container_cpu_usage_seconds_total', "the kubelet's cAdvisor"],
  ['container_memory_working_set_bytes', "the kubelet's cAdvisor"],
]);

/**
 * Every metric name the dashboard (panel targets, label_values variables) and the alerts
 * (the PrometheusRule) of `deployDir` use, with where each is used.
 */
export function deployMetricNames(deployDir: string): Map<string, string[]> {
  const used = new Map<string, string[]>();
  const add = (where: string, names: readonly string[]): void => {
    for (const n of names) used.set(n, [...(used.get(n) ?? []), where]);
  };
  const dash = JSON.parse(readFileSync(join(deployDir, 'grafana-dashboard.json'), 'utf8')) as {
    panels: { title: string; targets?: { expr: string }[] }[];
    templating: { list: { name: string; type: string; query?: { query?: string } }[] };
  };
  for (const p of dash.panels) {
    for (const t of p.targets ?? []) add(`panel "${p.title}"`, metricNamesInPromql(t.expr));
  }
  for (const v of dash.templating.list) {
    const metric = labelValuesMetric(v.query?.query ?? '');
    if (metric !== undefined) add(`variable ${v.name}`, [metric]);
  }
  const rulesText = readFileSync(join(deployDir, RULES_FILE), 'utf8');
  const rules = parse(rulesText) as { spec: { groups: { rules: PromRule[] }[] } };
  for (const g of rules.spec.groups) {
    for (const r of g.rules) add(`alert ${r.alert ?? r.record}`, metricNamesInPromql(r.expr));
  }
  return used;
}

interface PromRule {
  alert?: string;
  record?: string;
  expr: string;
}

/** Where the PrometheusRule lives (the optional Prometheus Operator component). */
export const RULES_FILE = 'optional/prometheus-operator/prometheus-rules.yaml';
