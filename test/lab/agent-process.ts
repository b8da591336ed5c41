/**
 * The agent as the lab runs it: a child process `node dist/src/main.js` configured by environment
 * variables, exactly as the DaemonSet runs it. start() waits until /healthz answers 200; scrape()
 * reads /metrics; stop() sends SIGTERM and returns the exit status.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { createServer } from 'node:net';
import { fileURLToPath } from 'node:url';

/** Repository root, from dist/test/lab/agent-process.js. */
export const REPO_ROOT = fileURLToPath(new URL('../../../', import.meta.url));
export const AGENT_ENTRY = fileURLToPath(new URL('../../src/main.js', import.meta.url));

/** A TCP port free on 127.0.0.1 right now (bind to 0, read it, close). */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const addr = srv.address();
      const port = typeof addr === 'object' && addr ? addr.port : 0;
      srv.close(() => resolve(port));
    });
  });
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

// An agent still running when this process exits (failed test, Ctrl-C) is killed with it.
const live = new Set<AgentProcess>();
process.on('exit', () => {
  for (const a of live) if (a.running) a.child.kill('SIGKILL');
});

export interface AgentOptions {
  /** Agent configuration (INTERFACE, LATENCY_BUCKETS, ...); METRICS_PORT is set by start(). */
  env: Record<string, string>;
  /** Port for /metrics and /healthz; default: a free one. */
  metricsPort?: number;
  /** How long to wait for /healthz (default 20 s). */
  readyTimeoutMs?: number;
  /** Called for every stdout/stderr line (e.g. to echo logs). */
  onLine?: (line: string, stream: 'stdout' | 'stderr') => void;
}

export interface AgentExit {
  code: number | null;
  signal: NodeJS.Signals | null;
}

export class AgentProcess {
  private readonly lines: string[] = [];
  private exitInfo: AgentExit | null = null;
  readonly exited: Promise<AgentExit>;

  private constructor(
    readonly child: ChildProcess,
    readonly port: number,
    onLine?: AgentOptions['onLine'],
  ) {
    for (const stream of ['stdout', 'stderr'] as const) {
      let buf = '';
      const src = child[stream];
      src?.setEncoding('utf8');
      src?.on('data', (chunk: string) => {
        buf += chunk;
        let nl: number;
        while ((nl = buf.indexOf('\n')) >= 0) {
          const line = buf.slice(0, nl);
          buf = buf.slice(nl + 1);
          this.lines.push(stream === 'stderr' ? `[stderr] ${line}` : line);
          if (this.lines.length > 500) this.lines.shift();
          onLine?.(line, stream);
        }
      });
    }
    this.exited = new Promise((resolve) => {
      child.on('close', (code, signal) => {
        this.exitInfo = { code, signal };
        live.delete(this);
        resolve(this.exitInfo);
      });
    });
    live.add(this);
  }

  static async start(opts: AgentOptions): Promise<AgentProcess> {
    if (!existsSync(AGENT_ENTRY)) {
      throw new Error(`agent: ${AGENT_ENTRY} not found; build first (npm run build)`);
    }
    const port = opts.metricsPort ?? (await freePort());
    const child = spawn(process.execPath, [AGENT_ENTRY], {
      cwd: REPO_ROOT,
      env: { ...process.env, ...opts.env, METRICS_PORT: String(port) },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    const agent = new AgentProcess(child, port, opts.onLine);
    try {
      await agent.waitHealthy(opts.readyTimeoutMs ?? 20_000);
    } catch (err) {
      await agent.stop(2000);
      throw err;
    }
    return agent;
  }

  get pid(): number {
    return this.child.pid ?? -1;
  }

  get baseUrl(): string {
    return `http://127.0.0.1:${this.port}`;
  }

  get running(): boolean {
    return this.exitInfo === null;
  }

  /** The last lines the agent printed (JSON logs), for failure messages. */
  logs(last = 60): string[] {
    return this.lines.slice(-last);
  }

  /** Parsed JSON log lines (non-JSON lines are skipped). */
  jsonLogs(): Record<string, unknown>[] {
    const out: Record<string, unknown>[] = [];
    for (const l of this.lines) {
      try {
        const v: unknown = JSON.parse(l);
        if (v && typeof v === 'object') out.push(v as Record<string, unknown>);
      } catch {
        // not JSON
      }
    }
    return out;
  }

  private async waitHealthy(timeoutMs: number): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    let last = '';
    while (Date.now() < deadline) {
      if (!this.running) {
        throw new Error(
          `agent exited (code ${this.exitInfo?.code}, signal ${this.exitInfo?.signal}) before ` +
            `/healthz answered:\n${this.logs(30).join('\n')}`,
        );
      }
      try {
        const res = await fetch(`${this.baseUrl}/healthz`, { signal: AbortSignal.timeout(1000) });
        if (res.status === 200) return;
        last = `HTTP ${res.status}`;
      } catch (err) {
        last = (err as Error).message;
      }
      await sleep(100);
    }
    throw new Error(
      `agent: /healthz not ready after ${timeoutMs} ms (${last}):\n${this.logs(30).join('\n')}`,
    );
  }

  async scrape(): Promise<string> {
    const res = await fetch(`${this.baseUrl}/metrics`, { signal: AbortSignal.timeout(5000) });
    if (res.status !== 200) throw new Error(`agent: GET /metrics answered HTTP ${res.status}`);
    return res.text();
  }

  /** SIGTERM, wait for the exit; SIGKILL after timeoutMs. */
  async stop(timeoutMs = 15_000): Promise<AgentExit> {
    if (this.exitInfo) return this.exitInfo;
    this.child.kill('SIGTERM');
    const timer = setTimeout(() => this.child.kill('SIGKILL'), timeoutMs);
    const res = await this.exited;
    clearTimeout(timer);
    return res;
  }
}
