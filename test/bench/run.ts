/**
 * `npm run bench`: every benchmark, each figure printed beside the ratio to the baseline measured
 * in the same run (the empty classifier, a bare histogram.record), so figures from different
 * machines compare by their ratios.
 */
import type { BenchRow } from './types.js';
import { benchUserspace } from './userspace.js';
import { benchClassifier } from './classifier.js';
import { benchAgentMemory } from './agent-memory.js';
import { benchFuzzCost } from './fuzz-cost.js';
import { benchOverhead } from './overhead.js';

type Suite = { name: string; run: () => Promise<BenchRow[]>; needsRoot: boolean };

const SUITES: Suite[] = [
  { name: 'classifier (BPF_PROG_TEST_RUN)', run: benchClassifier, needsRoot: true },
  {
    name: 'classifier under fuzzed input (BPF_PROG_TEST_RUN)',
    run: benchFuzzCost,
    needsRoot: true,
  },
  { name: 'userspace (one core)', run: benchUserspace, needsRoot: false },
  { name: 'agent memory', run: benchAgentMemory, needsRoot: true },
  {
    name: 'overhead on the traffic (two lab pods, agent off/on, ABBA)',
    run: benchOverhead,
    needsRoot: true,
  },
];

function formatRow(row: BenchRow): string {
  const value = Number.isInteger(row.value) ? String(row.value) : row.value.toFixed(2);
  const ratio = row.ratio !== undefined ? `  ${row.ratio.toFixed(2)}x ${row.baseline ?? ''}` : '';
  return `  ${row.name.padEnd(58)} ${value.padStart(12)} ${row.unit}${ratio}`;
}

async function main(): Promise<void> {
  const isRoot = process.getuid?.() === 0;
  let failed = false;
  for (const suite of SUITES) {
    console.log(`\n${suite.name}`);
    if (suite.needsRoot && !isRoot) {
      console.log('  SKIPPED: needs root');
      continue;
    }
    try {
      for (const row of await suite.run()) console.log(formatRow(row));
    } catch (err) {
      failed = true;
      console.log(`  FAILED: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}`);
    }
  }
  process.exitCode = failed ? 1 : 0;
}

await main();
