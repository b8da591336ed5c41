/**
 * The agent's soak, as a command (root): N concurrent G.711 streams through a relay (and bulk TCP
 * beside them) for a while, the real agent attached; prints the figures and writes a JSON summary.
 *
 *   node dist/test/lab/soak.js --streams 2000 --duration 600 --bulk
 *        [--hold-ms 20] [--bulk-mbps 200] [--warmup 0.2] [--generator-nice 10]
 *        [--json soak-summary.json] [--env NAME=VALUE ...] [--quiet]
 *
 * Exit status: 0 when the accounting holds (every attempted event delivered or counted lost, hop
 * samples explained by the prediction and the counted losses) and RSS and CPU stayed flat within
 * the bounds below; 1 otherwise, with the reasons; 2 on a usage or set-up error. Ctrl-C stops the
 * streams early and still reports. See test/lab/load-scenario.ts for what is measured.
 */
import { writeFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { rootUnavailable } from '../support/root.js';
import {
  accountFor,
  flatness,
  formatSummary,
  runLoad,
  warmupS,
  type Accounting,
  type Flatness,
  type LoadResult,
} from './load-scenario.js';

/**
 * The soak's bounds, once warm (after the first 20% of the run, or once the correlator's
 * preallocated ring has been written all round: load-scenario.ts warmupS).
 *   - RSS grows under 1 MiB per minute (a leak of one 64-byte record per event would grow by
 *     gigabytes per minute at 2,000 streams, one per stream per second by 7 MiB), judged on the
 *     levels right after V8's major collections when the run has two a minute apart, else on
 *     the minimum of each eighth of the steady phase (load-scenario.ts Flatness): not on every
 *     sample, because V8 breathes in a sawtooth (+16 MiB at once, ~1 MiB/min of old-generation
 *     garbage, -30 MiB at a major collection every 2-3 minutes in 2,000-stream runs).
 *   - RSS spread under 48 MiB: V8's young generation alone may take 3 x 16 MiB semi-spaces.
 *   - CPU per delivered event grows less than 15% from the first half of the steady phase to the
 *     second: per event, because a sender that falls behind and catches up changes the load, not
 *     the cost; work that grows with time (a table scanned and never shrunk) shows here first.
 *   - Hop samples: at least 99% of the prediction, less what counted losses explain.
 */
export interface SoakBounds {
  rssTrendSlopeMiBPerMin: number;
  rssRangeMiB: number;
  cpuPerEventGrowth: number;
  minHopRatio: number;
}

export const SOAK_BOUNDS: SoakBounds = {
  rssTrendSlopeMiBPerMin: 1,
  rssRangeMiB: 48,
  cpuPerEventGrowth: 0.15,
  minHopRatio: 0.99,
};

export interface Verdict {
  ok: boolean;
  failures: string[];
}

/** Every event, datagram, window and occurrence accounted for. */
function accountingFailures(r: LoadResult, acc: Accounting, bounds: SoakBounds): string[] {
  const out: string[] = [];
  if (acc.unaccounted !== 0)
    out.push(
      `audio packets ${acc.audioPackets} != delivered ${acc.eventsDelivered} + lost ${acc.eventsLost}`,
    );
  if (acc.maxOvercount > acc.ringEvents)
    out.push(
      `a scrape read delivered + lost ${acc.maxOvercount} above the audio count: more than the ` +
        `${acc.ringEvents} events the ring holds, so more than the read-order race explains`,
    );
  if (acc.audioPackets < acc.kernelAudioLow || acc.audioPackets > acc.kernelAudioHigh)
    out.push(
      `classifier saw ${acc.audioPackets} audio packets, the wire says ` +
        `${acc.kernelAudioLow}..${acc.kernelAudioHigh}`,
    );
  const f = r.final;
  const accounted = f.pendingSignatures + f.correlatorEvictions + f.correlatorExpired;
  if (accounted !== f.signaturesAll)
    out.push(
      `occurrences stored ${f.signaturesAll} != pending ${f.pendingSignatures} + evicted ` +
        `${f.correlatorEvictions} + expired ${f.correlatorExpired}`,
    );
  if (!r.prediction) return out;
  if (acc.hopSamples > acc.hopPredicted)
    out.push(`hop samples ${acc.hopSamples} exceed the ${acc.hopPredicted} windows`);
  const floor = bounds.minHopRatio * acc.hopPredicted - acc.hopExplainable;
  if (acc.hopSamples < floor)
    out.push(
      `hop samples ${acc.hopSamples} of ${acc.hopPredicted} predicted: a shortfall beyond ` +
        `${(100 * (1 - bounds.minHopRatio)).toFixed(0)}% plus what ${acc.eventsLost} lost ` +
        `events and lost datagrams explain (${acc.hopExplainable}): losses nobody counted`,
    );
  return out;
}

/** RSS and CPU per event flat once warm. */
function flatnessFailures(flat: Flatness, bounds: SoakBounds): string[] {
  const out: string[] = [];
  if (!(flat.rssTrendSlopeMiBPerMin < bounds.rssTrendSlopeMiBPerMin))
    out.push(
      `RSS grows ${flat.rssTrendSlopeMiBPerMin} MiB/min once warm by ${flat.rssTrendMethod} ` +
        `(bound ${bounds.rssTrendSlopeMiBPerMin}; every sample: ${flat.rssSlopeMiBPerMin} MiB/min)`,
    );
  if (!(flat.rssMaxMiB - flat.rssMinMiB < bounds.rssRangeMiB))
    out.push(
      `RSS spread ${(flat.rssMaxMiB - flat.rssMinMiB).toFixed(1)} MiB once warm ` +
        `(bound ${bounds.rssRangeMiB})`,
    );
  if (!(flat.cpuPerEventGrowth < bounds.cpuPerEventGrowth))
    out.push(
      `CPU per event grew ${(100 * flat.cpuPerEventGrowth).toFixed(0)}% from the first to the ` +
        `second half of the steady phase (${flat.cpuUsPerEventFirstHalf} -> ` +
        `${flat.cpuUsPerEventSecondHalf} us; bound ${100 * bounds.cpuPerEventGrowth}%)`,
    );
  return out;
}

/** The soak's rules, shared with test/soak.test.ts (which asserts them one by one). */
export function judge(
  r: LoadResult,
  acc: Accounting,
  flat: Flatness,
  bounds: SoakBounds = SOAK_BOUNDS,
): Verdict {
  const failures = [...accountingFailures(r, acc, bounds), ...flatnessFailures(flat, bounds)];
  if (r.agentExit.code !== 0) failures.push(`agent exit code ${r.agentExit.code}`);
  return { ok: failures.length === 0, failures };
}

function usage(message: string): never {
  process.stderr.write(`soak: ${message}\n`);
  process.exit(2);
}

function positive(name: string, value: string | undefined, fallback: number): number {
  if (value === undefined) return fallback;
  const n = Number(value);
  if (!Number.isFinite(n) || n < 0) usage(`--${name} wants a non-negative number, got '${value}'`);
  return n;
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      streams: { type: 'string' },
      duration: { type: 'string' },
      bulk: { type: 'boolean', default: false },
      'bulk-mbps': { type: 'string' },
      'hold-ms': { type: 'string' },
      warmup: { type: 'string' },
      'generator-nice': { type: 'string' },
      json: { type: 'string', default: 'soak-summary.json' },
      env: { type: 'string', multiple: true, default: [] },
      quiet: { type: 'boolean', default: false },
    },
  });
  const streams = positive('streams', values.streams, 2000);
  const durationS = positive('duration', values.duration, 600);
  const warmup = positive('warmup', values.warmup, 0.2);
  if (!Number.isInteger(streams) || streams < 1 || streams > 20000)
    usage(`--streams wants 1..20000, got ${streams}`);
  if (durationS < 5) usage('--duration wants at least 5 s');
  if (warmup >= 1) usage('--warmup is a fraction of the run, below 1');
  const env: Record<string, string> = {};
  for (const kv of values.env) {
    const eq = kv.indexOf('=');
    if (eq <= 0) usage(`--env wants NAME=VALUE, got '${kv}'`);
    env[kv.slice(0, eq)] = kv.slice(eq + 1);
  }
  const why = rootUnavailable();
  if (why) usage(why);

  const abort = new AbortController();
  process.on('SIGINT', () => {
    if (abort.signal.aborted) process.exit(130); // second Ctrl-C: exit handlers tear down
    process.stderr.write('soak: stopping the streams early; Ctrl-C again to quit at once\n');
    abort.abort();
  });
  process.on('SIGTERM', () => abort.abort());

  const started = new Date();
  const result = await runLoad({
    streams,
    durationS,
    bulk: values.bulk,
    bulkMbps: positive('bulk-mbps', values['bulk-mbps'], 200),
    holdMs: positive('hold-ms', values['hold-ms'], 20),
    generatorNice: positive('generator-nice', values['generator-nice'], 10),
    agentEnv: env,
    signal: abort.signal,
    onProgress: values.quiet ? undefined : (line) => process.stderr.write(`${line}\n`),
  });
  const acc = accountFor(result, warmup);
  const flat = flatness(result, warmupS(result, warmup));
  const verdict = judge(result, acc, flat);
  console.log(formatSummary(result, acc, flat));
  const path = resolve(values.json);
  writeFileSync(
    path,
    JSON.stringify(
      {
        started: started.toISOString(),
        bounds: SOAK_BOUNDS,
        verdict,
        accounting: acc,
        flatness: flat,
        result,
      },
      null,
      2,
    ) + '\n',
  );
  console.log(verdict.ok ? 'soak: OK' : `soak: FAILED\n  ${verdict.failures.join('\n  ')}`);
  console.log(`soak: summary written to ${path}`);
  process.exitCode = verdict.ok ? 0 : 1;
}

// Imported by the test for judge() and SOAK_BOUNDS: run only as the entry point.
if (process.argv[1] && resolve(process.argv[1]) === new URL(import.meta.url).pathname) {
  main().catch((err: unknown) => {
    process.stderr.write(`soak: ${(err as Error).stack ?? String(err)}\n`);
    process.exit(2);
  });
}
