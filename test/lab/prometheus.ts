/**
 * A private Prometheus for the lab: Debian's /usr/bin/prometheus with a temporary config that
 * scrapes the given targets every second, a temporary TSDB, and a listener on a free loopback
 * port. query() asks the HTTP API; stop() kills it and removes the temporary directory.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { freePort, sleep } from './agent-process.js';

export const PROMETHEUS_BIN = '/usr/bin/prometheus';

export interface PrometheusOptions {
  /** host:port targets of job "alt" (e.g. the agent at 127.0.0.1:<port>). */
  targets: string[];
  scrapeIntervalS?: number;
  binary?: string;
  readyTimeoutMs?: number;
}

export interface VectorSample {
  metric: Record<string, string>;
  value: number;
  time: number;
}

// Killed and removed if the process exits without stop() (a failed test, Ctrl-C).
const live = new Set<Prometheus>();
process.on('exit', () => {
  for (const p of live) p.killNow();
});

interface ApiResponse {
  status: string;
  error?: string;
  data?: { resultType: string; result: unknown };
}

export class Prometheus {
  private stderrText = '';
  private exitCode: number | null | undefined = undefined;
  private readonly exited: Promise<void>;

  private constructor(
    private readonly child: ChildProcess,
    /** Temporary directory (config and TSDB), removed by stop(). */
    readonly dir: string,
    readonly port: number,
  ) {
    child.stderr?.setEncoding('utf8');
    child.stderr?.on('data', (c: string) => {
      this.stderrText = (this.stderrText + c).slice(-8000);
    });
    child.stdout?.resume();
    this.exited = new Promise((resolve) => {
      child.on('close', (code) => {
        this.exitCode = code;
        resolve();
      });
    });
    live.add(this);
  }

  /** Synchronous last resort for exit handlers. */
  killNow(): void {
    if (this.exitCode === undefined) this.child.kill('SIGKILL');
    rmSync(this.dir, { recursive: true, force: true });
    live.delete(this);
  }

  get pid(): number {
    return this.child.pid ?? -1;
  }

  get url(): string {
    return `http://127.0.0.1:${this.port}`;
  }

  static async start(opts: PrometheusOptions): Promise<Prometheus> {
    const bin = opts.binary ?? PROMETHEUS_BIN;
    if (!existsSync(bin))
      throw new Error(`prometheus: ${bin} not found (apt-get install prometheus)`);
    const interval = opts.scrapeIntervalS ?? 1;
    const dir = mkdtempSync(join(tmpdir(), 'alt-prometheus-'));
    const config = [
      'global:',
      `  scrape_interval: ${interval}s`,
      `  scrape_timeout: ${interval}s`,
      `  evaluation_interval: ${interval}s`,
      'scrape_configs:',
      '  - job_name: alt',
      '    static_configs:',
      `      - targets: [${opts.targets.map((t) => `'${t}'`).join(', ')}]`,
      '',
    ].join('\n');
    const configPath = join(dir, 'prometheus.yml');
    writeFileSync(configPath, config);
    const port = await freePort();
    const child = spawn(
      bin,
      [
        `--config.file=${configPath}`,
        `--storage.tsdb.path=${join(dir, 'data')}`,
        `--web.listen-address=127.0.0.1:${port}`,
        '--storage.tsdb.retention.time=1h',
        '--log.level=warn',
      ],
      { stdio: ['ignore', 'pipe', 'pipe'], cwd: dir },
    );
    const prom = new Prometheus(child, dir, port);
    try {
      await prom.waitReady(opts.readyTimeoutMs ?? 30_000);
    } catch (err) {
      await prom.stop();
      throw err;
    }
    return prom;
  }

  private async waitReady(timeoutMs: number): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    let last = '';
    while (Date.now() < deadline) {
      if (this.exitCode !== undefined) {
        throw new Error(`prometheus exited (code ${this.exitCode}): ${this.stderrText.trim()}`);
      }
      try {
        const res = await fetch(`${this.url}/-/ready`, { signal: AbortSignal.timeout(1000) });
        if (res.status === 200) return;
        last = `HTTP ${res.status}`;
      } catch (err) {
        last = (err as Error).message;
      }
      await sleep(200);
    }
    throw new Error(
      `prometheus: not ready after ${timeoutMs} ms (${last}): ${this.stderrText.trim()}`,
    );
  }

  /** Instant query; the result as samples (a scalar answers one sample without labels). */
  async query(promql: string, timeS?: number): Promise<VectorSample[]> {
    const params = new URLSearchParams({ query: promql });
    if (timeS !== undefined) params.set('time', String(timeS));
    const res = await fetch(`${this.url}/api/v1/query?${params.toString()}`, {
      signal: AbortSignal.timeout(10_000),
    });
    const body = (await res.json()) as ApiResponse;
    if (body.status !== 'success' || !body.data) {
      throw new Error(`prometheus: query '${promql}' failed: ${body.error ?? res.status}`);
    }
    const { resultType, result } = body.data;
    if (resultType === 'scalar') {
      const [t, v] = result as [number, string];
      return [{ metric: {}, value: Number(v), time: t }];
    }
    if (resultType !== 'vector') throw new Error(`prometheus: '${promql}' gave a ${resultType}`);
    return (result as { metric: Record<string, string>; value: [number, string] }[]).map((r) => ({
      metric: r.metric,
      value: Number(r.value[1]),
      time: r.value[0],
    }));
  }

  /** The single value of a query, or undefined when the vector is empty. */
  async queryValue(promql: string): Promise<number | undefined> {
    const r = await this.query(promql);
    if (r.length > 1)
      throw new Error(`prometheus: '${promql}' gave ${r.length} series, expected one`);
    return r[0]?.value;
  }

  /** Waits until `promql` returns a value satisfying `ok` (polling every 500 ms). */
  async waitFor(promql: string, ok: (v: number) => boolean, timeoutMs: number): Promise<number> {
    const deadline = Date.now() + timeoutMs;
    let last: number | undefined;
    while (Date.now() < deadline) {
      last = await this.queryValue(promql);
      if (last !== undefined && ok(last)) return last;
      await sleep(500);
    }
    throw new Error(`prometheus: '${promql}' still ${last} after ${timeoutMs} ms`);
  }

  async stop(): Promise<void> {
    if (this.exitCode === undefined) {
      this.child.kill('SIGTERM');
      const timer = setTimeout(() => this.child.kill('SIGKILL'), 5000);
      await this.exited;
      clearTimeout(timer);
    }
    rmSync(this.dir, { recursive: true, force: true });
    live.delete(this);
  }
}
