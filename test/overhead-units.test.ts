/**
 * The overhead bench's statistics and parsers (test/bench/overhead.ts), no root needed; and, when
 * cc is present, that pingpong.c builds and reports what this file's percentiles compute.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { test } from 'node:test';
import {
  caseList,
  ensurePingpong,
  mean,
  pairedDifferences,
  parseIperf,
  parsePingpong,
  percentileOf,
  phaseOrder,
  summarizeRtt,
  throughputLossPercent,
} from './bench/overhead.js';

test('percentileOf is the nearest rank: a measured value, never interpolated', () => {
  const sorted = Array.from({ length: 100 }, (_, i) => i + 1); // 1..100
  assert.equal(percentileOf(sorted, 0.5), 50);
  assert.equal(percentileOf(sorted, 0.99), 99);
  assert.equal(percentileOf(sorted, 1), 100);
  assert.equal(percentileOf(sorted, 0), 1);
  assert.equal(percentileOf([10, 20, 30], 0.5), 20);
  assert.equal(percentileOf([10, 20, 30, 40], 0.5), 20);
  assert.equal(percentileOf([10, 20, 30, 40], 0.51), 30);
  assert.equal(percentileOf([7], 0.99), 7);
  assert.throws(() => percentileOf([], 0.5), /no samples/);
  assert.throws(() => percentileOf([1], 1.5), /outside/);
  assert.throws(() => percentileOf([1], Number.NaN), /outside/);
});

test('summarizeRtt sorts numerically and converts ns to µs', () => {
  // Lexical order would put 100000 before 20000.
  const samples = [30_000, 100_000, 20_000, 10_000, 40_000];
  const s = summarizeRtt(samples);
  assert.deepEqual(s, { count: 5, p50: 30, p99: 100 });
  assert.deepEqual(samples, [30_000, 100_000, 20_000, 10_000, 40_000], 'input left as it was');
  const many = Array.from({ length: 1000 }, (_, i) => (1000 - i) * 1000);
  assert.deepEqual(summarizeRtt(many), { count: 1000, p50: 500, p99: 990 });
});

test('phaseOrder is ABBA: interleaved and balanced', () => {
  assert.deepEqual(phaseOrder(2), ['without', 'with']);
  assert.deepEqual(phaseOrder(8), [
    'without',
    'with',
    'with',
    'without',
    'without',
    'with',
    'with',
    'without',
  ]);
  for (const n of [4, 8, 12]) {
    const order = phaseOrder(n);
    assert.equal(order.filter((m) => m === 'with').length, n / 2);
    // A linear drift t = 0, 1, 2, ... sums alike in both modes: it cancels in the difference.
    const sum = (mode: string): number => order.reduce((a, m, i) => a + (m === mode ? i : 0), 0);
    if (n % 4 === 0) assert.equal(sum('with'), sum('without'));
  }
  for (const bad of [0, 1, 3, 2.5, -2]) assert.throws(() => phaseOrder(bad), /even integer/);
});

test('pairedDifferences takes with minus without within each adjacent pair', () => {
  const order = phaseOrder(4); // without, with, with, without
  assert.deepEqual(pairedDifferences(order, [10, 13, 21, 20]), [3, 1]);
  assert.throws(() => pairedDifferences(order, [1, 2, 3]), /3 values for 4 phases/);
  assert.throws(() => pairedDifferences(['with', 'with'], [1, 2]), /not one of each mode/);
});

test('caseList: a pair of ping-pongs per rate, then the two transfers, ids unique', () => {
  const cases = caseList([2000, 0]);
  assert.deepEqual(
    cases.map((c) => [c.proto, c.port, c.rate]),
    [
      ['udp', 'audio', 2000],
      ['udp', 'other', 2000],
      ['udp', 'audio', 0],
      ['udp', 'other', 0],
      ['tcp', 'other', 0],
      ['tcp', 'audio', 0],
    ],
  );
  assert.equal(new Set(cases.map((c) => c.id)).size, cases.length);
  assert.match(cases[2].label, /back to back/);
  assert.match(cases[0].label, /2000\/s/);
  assert.equal(caseList([]).length, 2, 'transfers only');
  assert.throws(() => caseList([-1]), /bad rate/);
});

test('mean and throughputLossPercent', () => {
  assert.equal(mean([1, 2, 3, 6]), 3);
  assert.throws(() => mean([]), /no values/);
  assert.equal(throughputLossPercent([10, 10], [9.7, 9.7]), (1 - 9.7 / 10) * 100);
  assert.ok(Math.abs(throughputLossPercent([20, 10], [14.55, 14.55]) - 3) < 1e-9);
  assert.ok(throughputLossPercent([10], [11]) < 0, 'faster with the agent: negative loss');
});

test('parsePingpong reads the summary line and every sample', () => {
  const out = '{"event":"result","count":3,"lost":1,"p50_ns":20}\n30\n10\n20\n';
  assert.deepEqual(parsePingpong(out), { count: 3, lost: 1, samplesNs: [30, 10, 20] });
  assert.throws(() => parsePingpong('{"event":"result","count":3,"lost":0}\n1\n2\n'), /2 samples/);
  assert.throws(() => parsePingpong('{"event":"ready"}\n'), /unexpected first line/);
  assert.throws(() => parsePingpong('{"event":"result","count":1,"lost":0}\nx\n'), /samples/);
});

test('parseIperf takes the receiver side of iperf3 -J', () => {
  const doc = {
    end: {
      sum_sent: { bits_per_second: 12.5e9, retransmits: 4 },
      sum_received: { bits_per_second: 12.4e9 },
    },
  };
  assert.deepEqual(parseIperf(JSON.stringify(doc)), { gbps: 12.4, retransmits: 4 });
  assert.throws(
    () => parseIperf(JSON.stringify({ error: 'unable to connect to server' })),
    /unable to connect/,
  );
  assert.throws(() => parseIperf('{}'), /no receiver throughput/);
});

test('pingpong.c builds and its percentiles agree with percentileOf', (t) => {
  try {
    execFileSync('sh', ['-c', 'command -v cc'], { stdio: 'ignore' });
  } catch {
    // Only the C tool is out of reach; every helper above ran.
    if (process.env.CI === 'true') assert.fail('cc is needed to build test/load/pingpong.c');
    console.warn('SKIPPED pingpong.c build: no cc');
    t.skip('no cc');
    return;
  }
  const bin = ensurePingpong();
  // Loopback needs no namespace and no root: a server on a free port, 300 round trips.
  const port = 20000 + (process.pid % 10000);
  const script = [
    `${bin} server ${port} >/dev/null & s=$!`,
    'sleep 0.2',
    `${bin} client 127.0.0.1 ${port} --count 300 --warmup 10 --rate 0 --samples; rc=$?`,
    'kill $s',
    'exit $rc',
  ].join('\n');
  const out = execFileSync('sh', ['-c', script], { encoding: 'utf8' });
  const res = parsePingpong(out);
  assert.equal(res.count, 300);
  assert.equal(res.lost, 0);
  const head = JSON.parse(out.split('\n')[0]) as { p50_ns: number; p99_ns: number };
  const sorted = Float64Array.from(res.samplesNs).sort();
  assert.equal(head.p50_ns, percentileOf(sorted, 0.5));
  assert.equal(head.p99_ns, percentileOf(sorted, 0.99));
});
