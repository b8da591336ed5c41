/**
 * A TCP front for a test server (OTLP receiver, fake kubelet, fake API server) that a test
 * switches between faults while the agent talks through it:
 *
 *   pass   bytes flow both ways (TLS and HTTP/2 pass through untouched);
 *   down   nothing listens on the port: connection refused;
 *   hang   connections are accepted and never answered (not even a TLS or HTTP/2 handshake):
 *          a server that is slow forever, so only the client's own timeout ends the request;
 *   reset  connections are accepted and reset at once.
 *
 * Every switch cuts the connections open at that moment (a client then reconnects into the new
 * mode) unless `keepHung` asks to leave hung ones waiting, to prove the client times them out
 * by itself. The port stays the same across `down`, so the client's configuration holds.
 */
import { connect, createServer, type Server, type Socket } from 'node:net';

export type FaultMode = 'pass' | 'down' | 'hang' | 'reset';

export interface AcceptedConnection {
  /** Date.now() at accept. */
  readonly at: number;
  readonly mode: FaultMode;
  /** Date.now() when the connection closed (by either side), undefined while open. */
  closedAt?: number;
}

export interface SetModeOptions {
  /** Leave connections held by `hang` open (default: every connection is cut). */
  keepHung?: boolean;
}

export class FaultProxy {
  private server: Server | undefined;
  private currentMode: FaultMode = 'pass';
  private readonly open = new Set<Socket>();
  private readonly hung = new Set<Socket>();
  /** Every accepted connection, in order. */
  readonly accepted: AcceptedConnection[] = [];

  private constructor(
    private readonly targetHost: string,
    private readonly targetPort: number,
    private listenPort: number,
  ) {}

  /** A proxy on 127.0.0.1 (a free port unless `port` is given) to target, in `pass` mode. */
  static async start(target: { host?: string; port: number }, port = 0): Promise<FaultProxy> {
    const proxy = new FaultProxy(target.host ?? '127.0.0.1', target.port, port);
    await proxy.listen();
    return proxy;
  }

  get port(): number {
    return this.listenPort;
  }

  get mode(): FaultMode {
    return this.currentMode;
  }

  /** host:port, for URLs. */
  get address(): string {
    return `127.0.0.1:${this.listenPort}`;
  }

  /** Connections accepted since `since` (Date.now() value). */
  acceptedSince(since: number): AcceptedConnection[] {
    return this.accepted.filter((c) => c.at >= since);
  }

  async setMode(mode: FaultMode, options: SetModeOptions = {}): Promise<void> {
    this.currentMode = mode;
    for (const s of this.open) {
      if (options.keepHung === true && this.hung.has(s)) continue;
      s.destroy();
    }
    if (mode === 'down') await this.unlisten();
    else if (this.server === undefined) await this.listen();
  }

  async close(): Promise<void> {
    this.currentMode = 'down';
    for (const s of this.open) s.destroy();
    await this.unlisten();
  }

  private track(socket: Socket, record?: AcceptedConnection): void {
    this.open.add(socket);
    socket.on('close', () => {
      this.open.delete(socket);
      this.hung.delete(socket);
      if (record !== undefined) record.closedAt = Date.now();
    });
    // A reset client must not become an uncaught error in the test process.
    socket.on('error', () => socket.destroy());
  }

  private onConnection(client: Socket): void {
    const mode = this.currentMode;
    const record: AcceptedConnection = { at: Date.now(), mode };
    this.accepted.push(record);
    this.track(client, record);
    if (mode === 'reset' || mode === 'down') {
      client.resetAndDestroy();
      return;
    }
    if (mode === 'hang') {
      this.hung.add(client);
      // Read and drop what the client sends, answer nothing.
      client.resume();
      return;
    }
    const upstream = connect(this.targetPort, this.targetHost);
    this.track(upstream);
    client.pipe(upstream);
    upstream.pipe(client);
    client.on('close', () => upstream.destroy());
    upstream.on('close', () => client.destroy());
  }

  private listen(): Promise<void> {
    const server = createServer((c) => this.onConnection(c));
    return new Promise((resolve, reject) => {
      server.once('error', reject);
      server.listen(this.listenPort, '127.0.0.1', () => {
        server.off('error', reject);
        const addr = server.address();
        this.listenPort = typeof addr === 'object' && addr !== null ? addr.port : this.listenPort;
        this.server = server;
        resolve();
      });
    });
  }

  private unlisten(): Promise<void> {
    const server = this.server;
    this.server = undefined;
    if (server === undefined) return Promise.resolve();
    return new Promise((resolve) => server.close(() => resolve()));
  }
}
