/**
 * JSON-line outputs: the SAMPLE_LOG hop-sample logger (line shape, token
 * bucket, suppression summaries, clock conversion) and the structured
 * logger of src/log.ts (levels, fields, errors, rate limiting, never throwing).
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import { createLogger, quoteForDisplay, rateLimited, serializeError } from '../src/log.js';
import {
  createMonotonicToWallClock,
  monotonicToWallClock,
  SampleLogger,
} from '../src/sample-log.js';

/**
 * A controllable CLOCK_MONOTONIC (ms) and a line sink. The bucket runs on the
 * samples' timestamps, so tests pass ns(clock) as tsNs.
 */
function rig(ratePerSecond: number): {
  logger: SampleLogger;
  lines: string[];
  clock: { now: number };
  conversions: { count: number };
} {
  const lines: string[] = [];
  const clock = { now: 5_000 };
  const conversions = { count: 0 };
  const logger = new SampleLogger({
    ratePerSecond,
    write: (line) => lines.push(line),
    nowMs: () => clock.now,
    wallNowMs: () => 1_700_000_000_000 + clock.now,
    toWallClockMs: (tsNs) => {
      conversions.count++;
      return 1_700_000_000_000 + tsNs / 1e6;
    },
    autoFlush: false,
  });
  return { logger, lines, clock, conversions };
}

const ns = (clock: { now: number }): number => clock.now * 1e6;

type Parsed = Record<string, unknown>;
const parse = (lines: readonly string[]): Parsed[] => lines.map((l) => JSON.parse(l) as Parsed);
const isSummary = (p: Parsed): boolean => p['msg'] === 'sample log suppressed';

describe('SampleLogger', () => {
  it('writes one JSON line per sample with exactly the documented fields', () => {
    const { logger, lines } = rig(100);
    logger.log(2_500_000_000, 0x0123abcd, 0x89ef0001, 'media/mixer-0', 'media/"rec"\n1', 0.0123);
    assert.equal(lines.length, 1);
    assert.ok(!lines[0].includes('\n'));
    const line = JSON.parse(lines[0]) as Parsed;
    assert.deepEqual(Object.keys(line), [
      'time',
      'signature',
      'source_pod',
      'dest_pod',
      'latency_seconds',
    ]);
    assert.equal(line['time'], new Date(1_700_000_002_500).toISOString());
    assert.equal(line['signature'], '0123abcd89ef0001');
    assert.equal(line['source_pod'], 'media/mixer-0');
    assert.equal(line['dest_pod'], 'media/"rec"\n1');
    assert.equal(line['latency_seconds'], 0.0123);
  });

  it('formats the signature as 16 hex digits whatever the halves', () => {
    const { logger, lines } = rig(100);
    logger.log(0, 0xffffffff, 0, 'a', 'b', 1);
    logger.log(0, 0, 1, 'a', 'b', 1);
    logger.log(0, -1, -2, 'a', 'b', 1); // int32 views of the same bits
    assert.deepEqual(
      parse(lines).map((p) => p['signature']),
      ['ffffffff00000000', '0000000000000001', 'fffffffffffffffe'],
    );
  });

  it('allows a burst of rate lines, then counts what it drops and summarises once per second', () => {
    const { logger, lines, clock, conversions } = rig(10);
    for (let i = 0; i < 25; i++) logger.log(ns(clock), 0, i, 'a', 'b', 0.001);
    assert.equal(lines.length, 10);
    assert.equal(logger.written, 10);
    assert.equal(logger.suppressedTotal, 15);
    // Dropped samples cost no formatting and no clock conversion.
    assert.equal(conversions.count, 10);

    clock.now += 999;
    logger.tick();
    assert.equal(lines.length, 10, 'no summary before a second has passed');
    clock.now += 1;
    logger.tick();
    const summary = parse(lines.slice(10));
    assert.equal(summary.length, 1);
    assert.deepEqual(Object.keys(summary[0]), ['time', 'msg', 'suppressed']);
    assert.equal(summary[0]['msg'], 'sample log suppressed');
    assert.equal(summary[0]['suppressed'], 15);
    assert.equal(summary[0]['time'], new Date(1_700_000_000_000 + clock.now).toISOString());
    logger.tick();
    assert.equal(lines.length, 11, 'nothing pending: no second summary');

    // A second later the bucket is full again.
    for (let i = 0; i < 12; i++) logger.log(ns(clock), 0, i, 'a', 'b', 0.001);
    assert.equal(logger.written, 20);
    assert.equal(logger.suppressedTotal, 17);
    logger.close();
    assert.equal(parse(lines).filter(isSummary).at(-1)?.['suppressed'], 2);
  });

  it('holds the configured rate in a steady overload and accounts for every sample', () => {
    const rate = 100;
    const { logger, lines, clock } = rig(rate);
    const total = 5000;
    for (let i = 0; i < total; i++) {
      logger.log(ns(clock), 0, i, 'a', 'b', 0.001);
      clock.now += 1; // 1000 samples/s offered, 10x the rate
    }
    logger.close();
    const parsed = parse(lines);
    const samples = parsed.filter((p) => !isSummary(p));
    const summaries = parsed.filter(isSummary);
    // Full bucket (rate) plus rate/s over the 5 s.
    assert.ok(
      samples.length >= rate + 5 * rate - 2 && samples.length <= rate + 5 * rate + 1,
      `${samples.length}`,
    );
    assert.equal(samples.length, logger.written);
    const suppressed = summaries.reduce((n, p) => n + (p['suppressed'] as number), 0);
    assert.equal(suppressed, logger.suppressedTotal);
    assert.equal(samples.length + suppressed, total);
    assert.ok(summaries.length >= 4 && summaries.length <= 6, `${summaries.length} summaries`);
  });

  it('summarises in log() too, and ignores timestamps that go backwards', () => {
    const { logger, lines, clock } = rig(2);
    logger.log(ns(clock), 0, 0, 'a', 'b', 1);
    logger.log(ns(clock), 0, 0, 'a', 'b', 1);
    logger.log(ns(clock), 0, 0, 'a', 'b', 1); // dropped
    logger.log(ns(clock) - 5e9, 0, 0, 'a', 'b', 1); // 5 s in the past: no refill, dropped
    assert.equal(logger.suppressedTotal, 2);
    clock.now += 1000;
    logger.log(ns(clock), 0, 0, 'a', 'b', 1); // refilled; the pending summary goes first
    const parsed = parse(lines);
    assert.equal(parsed.length, 4);
    assert.equal(parsed[2]['suppressed'], 2);
    assert.equal(parsed[3]['signature'], '0000000000000000');
  });

  it('rejects a rate below 1', () => {
    assert.throws(() => new SampleLogger({ ratePerSecond: 0, autoFlush: false }), /ratePerSecond/);
  });

  it('never throws when the sink fails', () => {
    const logger = new SampleLogger({
      ratePerSecond: 1,
      write: () => {
        throw new Error('EPIPE');
      },
      autoFlush: false,
    });
    logger.log(0, 0, 0, 'a', 'b', 1);
    logger.log(0, 0, 0, 'a', 'b', 1);
    logger.close();
  });

  it('measured: cost of a dropped sample (default clocks)', () => {
    let written = 0;
    const logger = new SampleLogger({ ratePerSecond: 1, write: () => written++, autoFlush: false });
    const t = 1e12;
    logger.log(t, 0, 0, 'a', 'b', 1); // empties the bucket
    const n = 1_000_000;
    let perSample = Infinity;
    // Best of three rounds: the first one includes JIT warm-up.
    for (let round = 0; round < 3; round++) {
      const t0 = process.hrtime.bigint();
      for (let i = 0; i < n; i++) logger.log(t + i, 0, i, 'a', 'b', 0.001); // 1 ms of sample time
      perSample = Math.min(perSample, Number(process.hrtime.bigint() - t0) / n);
    }
    assert.equal(logger.suppressedTotal, 3 * n);
    assert.equal(written, 1);
    console.log(`# SampleLogger: ${perSample.toFixed(1)} ns per dropped sample`);
    assert.ok(perSample < 100, `${perSample} ns per dropped sample`);
    logger.close();
  });
});

describe('monotonicToWallClock', () => {
  it('maps by a fixed offset', () => {
    const toWall = createMonotonicToWallClock(1_000_000_000n, 1_700_000_000_000);
    assert.equal(toWall(1_000_000_000), 1_700_000_000_000);
    assert.equal(toWall(3_500_000_000), 1_700_000_002_500);
  });

  it('agrees with Date.now() for the process monotonic clock (CLOCK_MONOTONIC)', () => {
    const wall = monotonicToWallClock(Number(process.hrtime.bigint()));
    assert.ok(Math.abs(wall - Date.now()) < 50, `${wall} vs ${Date.now()}`);
  });
});

describe('structured logger (src/log.ts)', () => {
  function capture(level: 'debug' | 'info' | 'warn' | 'error'): {
    lines: Parsed[];
    log: ReturnType<typeof createLogger>;
  } {
    const lines: Parsed[] = [];
    const log = createLogger(level, {
      write: (line) => {
        assert.ok(!line.includes('\n'));
        lines.push(JSON.parse(line) as Parsed);
      },
      now: () => Date.UTC(2025, 0, 2, 3, 4, 5, 6),
    });
    return { lines, log };
  }

  it('writes time, level, msg, then fields; filters by level', () => {
    const { lines, log } = capture('info');
    log.debug('hidden');
    log.info('attached', { ifname: 'veth1', ifindex: 7 });
    log.error('boom');
    assert.deepEqual(lines, [
      {
        time: '2025-01-02T03:04:05.006Z',
        level: 'info',
        msg: 'attached',
        ifname: 'veth1',
        ifindex: 7,
      },
      { time: '2025-01-02T03:04:05.006Z', level: 'error', msg: 'boom' },
    ]);
    assert.equal(log.isEnabled('debug'), false);
    assert.equal(log.isEnabled('warn'), true);
  });

  it('child loggers bind fields; fields cannot forge time/level/msg', () => {
    const { lines, log } = capture('debug');
    const child = log.child({ component: 'watcher', node: 'n1' }).child({ node: 'n2' });
    child.debug('scan', { level: 'fake', msg: 'fake', count: 3 });
    assert.deepEqual(lines[0], {
      time: '2025-01-02T03:04:05.006Z',
      level: 'debug',
      msg: 'scan',
      component: 'watcher',
      node: 'n2',
      field_level: 'fake',
      field_msg: 'fake',
      count: 3,
    });
  });

  it('serialises errors with message, stack, code and cause', () => {
    const { lines, log } = capture('info');
    const cause = Object.assign(new Error('connect ECONNREFUSED'), {
      code: 'ECONNREFUSED',
      errno: -111,
      syscall: 'connect',
    });
    log.warn('export failed', { err: new Error('otlp export', { cause }) });
    const err = lines[0]['err'] as Record<string, unknown>;
    assert.equal(err['message'], 'otlp export');
    assert.match(String(err['stack']), /otlp export/);
    const c = err['cause'] as Record<string, unknown>;
    assert.equal(c['code'], 'ECONNREFUSED');
    assert.equal(c['errno'], -111);
    assert.equal(c['syscall'], 'connect');
    assert.equal(serializeError('plain').message, 'plain');
  });

  it('never throws: cycles, bigints, throwing getters, a failing sink', () => {
    const { lines, log } = capture('info');
    const cyclic: Record<string, unknown> = { a: 1 };
    cyclic['self'] = cyclic;
    log.info('cycle', { cyclic, big: 2n ** 64n });
    assert.deepEqual(lines[0]['cyclic'], { a: 1, self: '[Circular]' });
    assert.equal(lines[0]['big'], '18446744073709551616');
    const hostile = {
      get x(): never {
        throw new Error('getter');
      },
    };
    log.info('hostile', { hostile });
    assert.equal(lines[1]['msg'], 'hostile');
    assert.equal(lines[1]['log_error'], 'getter');
    const broken = createLogger('info', {
      write: () => {
        throw new Error('EPIPE');
      },
    });
    broken.error('still fine');
    rateLimited(log, 'hostile', 1000).warn('hostile again', { hostile });
    assert.equal(lines[2]['msg'], 'hostile again');
  });

  it('rateLimited: first line, then one per interval with the suppressed count', () => {
    const { lines, log } = capture('info');
    let now = 0;
    const clock = (): number => now;
    for (let i = 0; i < 5; i++)
      rateLimited(log, 'otlp', 1000, clock).warn('export failed', { attempt: i });
    assert.equal(lines.length, 1);
    assert.equal(lines[0]['attempt'], 0);
    assert.equal(lines[0]['suppressed'], undefined);
    now = 1000;
    rateLimited(log, 'otlp', 1000, clock).warn('export failed', { attempt: 5 });
    assert.equal(lines.length, 2);
    assert.equal(lines[1]['suppressed'], 4);
    assert.equal(lines[1]['attempt'], 5);
    // Keys are independent.
    rateLimited(log, 'k8s', 1000, clock).warn('watch failed');
    assert.equal(lines.length, 3);
    // flush reports what is pending.
    const limiter = rateLimited(log, 'otlp', 1000, clock);
    limiter.warn('export failed');
    assert.equal(limiter.suppressed, 1);
    limiter.flush();
    assert.equal(lines.length, 4);
    assert.equal(lines[3]['suppressed'], 1);
    assert.equal(limiter.suppressed, 0);
  });

  it('quoteForDisplay escapes and truncates', () => {
    assert.equal(quoteForDisplay('a"b\\c\nd\u0000\u202e'), '"a\\"b\\\\c\\nd\\u0000\\u202e"');
    assert.equal(quoteForDisplay('xyz', 2), '"xy" (truncated, 3 characters)');
    assert.equal(quoteForDisplay('héllo'), '"héllo"');
  });
});
