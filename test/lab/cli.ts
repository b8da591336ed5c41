/**
 * What the lab's pod processes (sender, relay, sink) share: the line protocol to their parent
 * (one JSON object per stdout line: `{"event":"ready"}` once listening, `{"event":"report"}` on
 * exit) and argument helpers.
 */

export type Json = string | number | boolean | null | Json[] | { [k: string]: Json };

export function emit(event: string, fields: { [k: string]: Json } = {}): void {
  process.stdout.write(JSON.stringify({ event, ...fields }) + '\n');
}

export function fail(role: string, message: string): never {
  process.stderr.write(`${role}: ${message}\n`);
  process.exit(2);
}

export function parseHostPort(role: string, value: string): { host: string; port: number } {
  const m = /^(\d+\.\d+\.\d+\.\d+):(\d+)$/.exec(value);
  if (!m) fail(role, `expected IPv4:port, got '${value}'`);
  return { host: m[1], port: parsePort(role, m[2]) };
}

export function parsePort(role: string, value: string): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n < 1 || n > 65535) fail(role, `bad port '${value}'`);
  return n;
}

export function parseNumber(role: string, name: string, value: string, min: number): number {
  const n = Number(value);
  if (!Number.isFinite(n) || n < min)
    fail(role, `--${name} must be a number >= ${min}, got '${value}'`);
  return n;
}

/** Runs `report` once on SIGTERM/SIGINT (or when called), prints it, then exits 0. */
export function onStop(report: () => { [k: string]: Json }): () => void {
  let done = false;
  const stop = (): void => {
    if (done) return;
    done = true;
    emit('report', report());
    process.exit(0);
  };
  process.once('SIGTERM', stop);
  process.once('SIGINT', stop);
  return stop;
}

/** Like onStop, for reports that must be collected asynchronously (from a worker thread). */
export function onStopAsync(report: () => Promise<{ [k: string]: Json }>): () => void {
  let done = false;
  const stop = (): void => {
    if (done) return;
    done = true;
    // A report that never comes must not keep the process alive.
    setTimeout(() => process.exit(1), 3000).unref();
    report().then(
      (r) => {
        emit('report', r);
        process.exit(0);
      },
      (err: unknown) => {
        process.stderr.write(`report failed: ${(err as Error).message}\n`);
        process.exit(1);
      },
    );
  };
  process.once('SIGTERM', stop);
  process.once('SIGINT', stop);
  return stop;
}

/** Monotonic clock in nanoseconds as a number (safe for ~104 days of uptime). */
export function nowNs(): number {
  return Number(process.hrtime.bigint());
}

const sleeper = new Int32Array(new SharedArrayBuffer(4));
const FINAL_SPIN_NS = 200_000;

/**
 * Blocks this thread until the monotonic clock reaches `dueNs`, to within a few microseconds:
 * a futex sleep (Atomics.wait, sub-millisecond timeouts) to 0.2 ms before, then a short spin.
 * Callers first wait with a timer to ~2 ms before, so the thread is blocked only briefly, and
 * little CPU is burnt on a 2-core machine that also runs the agent and Prometheus.
 */
export function blockUntil(dueNs: number): void {
  const sleepNs = dueNs - nowNs() - FINAL_SPIN_NS;
  if (sleepNs > 0) Atomics.wait(sleeper, 0, 0, sleepNs / 1e6);
  while (nowNs() < dueNs) {
    // spin the last microseconds
  }
}

/**
 * Histogram of timing errors in 10 us bins up to 20 ms: enough to report a relay's or sender's
 * precision as p50/p99/max without keeping every value.
 */
export class ErrorHistogram {
  private readonly bins = new Uint32Array(2001);
  private count = 0;
  private sum = 0;
  private max = -Infinity;
  private min = Infinity;

  add(us: number): void {
    const b = Math.max(0, Math.min(this.bins.length - 1, Math.floor(us / 10)));
    this.bins[b]++;
    this.count++;
    this.sum += us;
    if (us > this.max) this.max = us;
    if (us < this.min) this.min = us;
  }

  quantileUs(q: number): number {
    if (this.count === 0) return 0;
    const rank = q * this.count;
    let acc = 0;
    for (let i = 0; i < this.bins.length; i++) {
      acc += this.bins[i];
      if (acc >= rank) return (i + 1) * 10;
    }
    return this.bins.length * 10;
  }

  toJson(): { [k: string]: Json } {
    return {
      count: this.count,
      meanUs: this.count ? Math.round(this.sum / this.count) : 0,
      minUs: this.count ? Math.round(this.min) : 0,
      p50Us: this.quantileUs(0.5),
      p99Us: this.quantileUs(0.99),
      maxUs: this.count ? Math.round(this.max) : 0,
    };
  }
}
