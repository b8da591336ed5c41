import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';

export interface MetricsServerOptions {
  host: string;
  /** 0 picks a free port (tests). */
  port: number;
  /** Serves GET /metrics (the Prometheus exporter's request handler). */
  handleMetrics: (req: IncomingMessage, res: ServerResponse) => void;
  /** Readiness for GET /readyz; liveness (/healthz) is the server answering at all. */
  ready: () => boolean;
}

export interface MetricsServer {
  /** The address actually bound (the real port when 0 was asked for). */
  readonly address: { host: string; port: number };
  /** Stops accepting, lets requests in flight finish for at most `graceMs`, then cuts them. */
  close(graceMs: number): Promise<void>;
}

const PATH_METRICS = '/metrics';
const PATH_HEALTHZ = '/healthz';
const PATH_READYZ = '/readyz';

function reply(res: ServerResponse, status: number, body: string): void {
  res.statusCode = status;
  res.setHeader('content-type', 'text/plain; charset=utf-8');
  res.end(body);
}

function isReady(ready: () => boolean): boolean {
  try {
    return ready() === true;
  } catch {
    // A readiness probe that throws means "not ready", never a crashed server.
    return false;
  }
}

function pathOf(req: IncomingMessage): string | undefined {
  try {
    return new URL(req.url ?? '/', 'http://localhost').pathname;
  } catch {
    return undefined;
  }
}

function route(opts: MetricsServerOptions, req: IncomingMessage, res: ServerResponse): void {
  const path = pathOf(req);
  if (path === undefined) return reply(res, 400, 'bad request\n');
  const known = path === PATH_METRICS || path === PATH_HEALTHZ || path === PATH_READYZ;
  if (!known) return reply(res, 404, 'not found\n');
  if (req.method !== 'GET' && req.method !== 'HEAD') {
    res.setHeader('allow', 'GET, HEAD');
    return reply(res, 405, 'method not allowed\n');
  }
  if (path === PATH_METRICS) return opts.handleMetrics(req, res);
  if (path === PATH_HEALTHZ) return reply(res, 200, 'ok\n');
  return isReady(opts.ready) ? reply(res, 200, 'ready\n') : reply(res, 503, 'not ready\n');
}

function listen(server: Server, host: string, port: number): Promise<AddressInfo> {
  return new Promise((resolve, reject) => {
    const onError = (err: NodeJS.ErrnoException): void => {
      reject(
        new Error(`metrics server: listen on ${host}:${port} failed: ${err.code ?? err.message}`, {
          cause: err,
        }),
      );
    };
    server.once('error', onError);
    server.listen({ host, port }, () => {
      server.off('error', onError);
      resolve(server.address() as AddressInfo);
    });
  });
}

function closeServer(server: Server, graceMs: number): Promise<void> {
  return new Promise((resolve) => {
    const timer = setTimeout(() => server.closeAllConnections(), graceMs);
    timer.unref();
    server.close(() => {
      clearTimeout(timer);
      resolve();
    });
    server.closeIdleConnections();
  });
}

/** Starts the HTTP server serving /metrics, /healthz and /readyz. */
export async function startMetricsServer(opts: MetricsServerOptions): Promise<MetricsServer> {
  const server = createServer((req, res) => route(opts, req, res));
  // A malformed request from a scanner or a half-open probe must only end that connection.
  server.on('clientError', (_err, socket) => socket.destroy());
  const bound = await listen(server, opts.host, opts.port);
  let closing: Promise<void> | undefined;
  return {
    address: { host: bound.address, port: bound.port },
    close(graceMs: number): Promise<void> {
      closing ??= closeServer(server, graceMs);
      return closing;
    },
  };
}
