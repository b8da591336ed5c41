/**
 * A test kubelet and a test API server over real HTTPS (a self-signed certificate made by
 * openssl for this run), speaking the real protocol with real-shaped JSON:
 *
 *  API server  GET /api/v1/pods?fieldSelector=spec.nodeName%3D<node>        -> PodList
 *              GET /api/v1/pods?watch=true&resourceVersion=N&fieldSelector=... -> a stream of
 *              newline-delimited {type, object} events (ADDED/MODIFIED/DELETED/BOOKMARK/ERROR);
 *              a resourceVersion older than the kept history gets ERROR {Status 410 Expired}.
 *  kubelet     GET /pods -> PodList of the node's pods (no resourceVersion, as the kubelet does).
 *  Both        Authorization: Bearer <token>, else 401 with a Status body.
 *
 * Both serve one FakeCluster, so a test changes pods in one place.
 */

import { execFileSync } from 'node:child_process';
import { randomBytes, randomUUID } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:https';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export interface TestCertificate {
  readonly dir: string;
  readonly certPath: string;
  readonly keyPath: string;
  readonly cert: Buffer;
  readonly key: Buffer;
  cleanup(): void;
}

/** A self-signed certificate for 127.0.0.1 and localhost, valid for a day. */
export function makeCertificate(cn = 'fake-k8s'): TestCertificate {
  const dir = mkdtempSync(join(tmpdir(), 'fake-k8s-'));
  const certPath = join(dir, 'cert.pem');
  const keyPath = join(dir, 'key.pem');
  execFileSync(
    '/usr/bin/openssl',
    [
      'req',
      '-x509',
      '-newkey',
      'ec',
      '-pkeyopt',
      'ec_paramgen_curve:prime256v1',
      '-nodes',
      '-keyout',
      keyPath,
      '-out',
      certPath,
      '-days',
      '1',
      '-subj',
      `/CN=${cn}`,
      '-addext',
      'subjectAltName=IP:127.0.0.1,DNS:localhost',
    ],
    { stdio: 'pipe' },
  );
  return {
    dir,
    certPath,
    keyPath,
    cert: readFileSync(certPath),
    key: readFileSync(keyPath),
    cleanup: () => rmSync(dir, { recursive: true, force: true }),
  };
}

// ---------------------------------------------------------------------------
// Pod JSON

export interface PodSpecInput {
  name: string;
  namespace?: string;
  uid?: string;
  node: string;
  ip?: string;
  /** Extra addresses (dual stack); podIPs lists ip first, then these. */
  extraIps?: string[];
  hostNetwork?: boolean;
  phase?: string;
  /** e.g. { kind: 'ReplicaSet', name: 'web-7d4b9c8f5d' }. */
  owner?: { kind: string; name: string };
  labels?: Record<string, string>;
  containers?: number;
  createdAt?: string;
  deleting?: boolean;
}

export type PodJson = Record<string, unknown> & {
  metadata: Record<string, unknown> & { uid: string; name: string; namespace: string };
};

export function containerId(): string {
  return randomBytes(32).toString('hex');
}

/** A Pod as the API server serialises it (the fields this agent reads, and a few it does not). */
export function makePod(input: PodSpecInput): PodJson {
  const uid = input.uid ?? randomUUID();
  const namespace = input.namespace ?? 'default';
  const containers = input.containers ?? 1;
  const names = Array.from({ length: containers }, (_, i) => `c${i}`);
  const ips = input.ip === undefined ? [] : [input.ip, ...(input.extraIps ?? [])];
  const metadata: PodJson['metadata'] = {
    name: input.name,
    namespace,
    uid,
    resourceVersion: '0',
    creationTimestamp: input.createdAt ?? new Date().toISOString().replace(/\.\d+Z$/, 'Z'),
    labels: { app: input.name, ...(input.labels ?? {}) },
  };
  if (input.owner !== undefined) {
    metadata.ownerReferences = [
      {
        apiVersion: input.owner.kind === 'ReplicaSet' ? 'apps/v1' : 'apps/v1',
        kind: input.owner.kind,
        name: input.owner.name,
        uid: randomUUID(),
        controller: true,
        blockOwnerDeletion: true,
      },
    ];
  }
  if (input.deleting === true) {
    metadata.deletionTimestamp = new Date().toISOString();
    metadata.deletionGracePeriodSeconds = 30;
  }
  return {
    metadata,
    spec: {
      nodeName: input.node,
      hostNetwork: input.hostNetwork === true ? true : undefined,
      containers: names.map((n) => ({ name: n, image: `registry.example/${n}:1` })),
      restartPolicy: 'Always',
    },
    status: {
      phase: input.phase ?? 'Running',
      hostIP: '192.0.2.10',
      podIP: input.ip,
      podIPs: ips.map((ip) => ({ ip })),
      containerStatuses: names.map((n) => ({
        name: n,
        ready: true,
        restartCount: 0,
        image: `registry.example/${n}:1`,
        containerID: `containerd://${containerId()}`,
        state: { running: { startedAt: new Date().toISOString() } },
      })),
    },
  };
}

// ---------------------------------------------------------------------------
// The shared state

type EventType = 'ADDED' | 'MODIFIED' | 'DELETED';

interface HistoryEntry {
  rv: number;
  type: EventType;
  object: PodJson;
}

interface Watcher {
  node: string | undefined;
  res: ServerResponse;
}

/** The cluster's pods, a resourceVersion counter and the event history watches replay. */
export class FakeCluster {
  private readonly pods = new Map<string, PodJson>();
  /** Raw items appended to every list (malformed input for robustness tests). */
  rawItems: unknown[] = [];
  private rv = 100;
  private history: HistoryEntry[] = [];
  /** Watches from a resourceVersion below this get 410. */
  private oldestRv = 100;
  readonly watchers = new Set<Watcher>();

  get resourceVersion(): number {
    return this.rv;
  }

  add(pod: PodJson): PodJson {
    return this.record('ADDED', pod);
  }

  modify(pod: PodJson): PodJson {
    return this.record('MODIFIED', pod);
  }

  delete(uid: string): void {
    const pod = this.pods.get(uid);
    if (pod === undefined) throw new Error(`FakeCluster.delete: no pod ${uid}`);
    this.record('DELETED', pod);
  }

  /** Changes a pod without any watch event (as if the event were lost in a compaction). */
  silently(mutate: (pods: Map<string, PodJson>) => void): void {
    mutate(this.pods);
    this.rv++;
  }

  podsOf(node: string | undefined): PodJson[] {
    return [...this.pods.values()].filter(
      (p) => node === undefined || (p.spec as { nodeName?: string }).nodeName === node,
    );
  }

  /**
   * Forgets the history (etcd compaction): every open watch gets ERROR 410 Expired and is closed,
   * and a watch from any older resourceVersion will be refused the same way.
   */
  compact(): void {
    this.history = [];
    this.oldestRv = this.rv;
    for (const w of [...this.watchers]) {
      writeEvent(w.res, { type: 'ERROR', object: expiredStatus(this.rv) });
      w.res.end();
      this.watchers.delete(w);
    }
  }

  /** Ends every open watch stream cleanly (as the server's timeoutSeconds does). */
  endWatches(): void {
    for (const w of [...this.watchers]) {
      w.res.end();
      this.watchers.delete(w);
    }
  }

  bookmark(): void {
    for (const w of this.watchers) {
      writeEvent(w.res, {
        type: 'BOOKMARK',
        object: { kind: 'Pod', apiVersion: 'v1', metadata: { resourceVersion: String(this.rv) } },
      });
    }
  }

  /** Writes a raw line to every watch (malformed events). */
  rawWatchLine(line: string): void {
    for (const w of this.watchers) w.res.write(line + '\n');
  }

  private record(type: EventType, pod: PodJson): PodJson {
    this.rv++;
    const stored: PodJson = structuredClone(pod);
    stored.metadata.resourceVersion = String(this.rv);
    if (type === 'DELETED') this.pods.delete(stored.metadata.uid);
    else this.pods.set(stored.metadata.uid, stored);
    const entry: HistoryEntry = { rv: this.rv, type, object: stored };
    this.history.push(entry);
    for (const w of this.watchers) {
      if (matchesNode(stored, w.node)) writeEvent(w.res, { type, object: stored });
    }
    return stored;
  }

  /** Events after `rv` for `node`, or 'expired' when that history is gone. */
  since(rv: number, node: string | undefined): HistoryEntry[] | 'expired' {
    if (rv < this.oldestRv) return 'expired';
    return this.history.filter((e) => e.rv > rv && matchesNode(e.object, node));
  }

  podList(node: string | undefined, withRv: boolean): Record<string, unknown> {
    return {
      kind: 'PodList',
      apiVersion: 'v1',
      metadata: withRv ? { resourceVersion: String(this.rv) } : {},
      items: [...this.podsOf(node), ...this.rawItems],
    };
  }
}

function matchesNode(pod: PodJson, node: string | undefined): boolean {
  return node === undefined || (pod.spec as { nodeName?: string }).nodeName === node;
}

function expiredStatus(rv: number): Record<string, unknown> {
  return {
    kind: 'Status',
    apiVersion: 'v1',
    metadata: {},
    status: 'Failure',
    message: `too old resource version: requested (current: ${rv})`,
    reason: 'Expired',
    code: 410,
  };
}

function statusBody(code: number, reason: string, message: string): string {
  return JSON.stringify({
    kind: 'Status',
    apiVersion: 'v1',
    metadata: {},
    status: 'Failure',
    message,
    reason,
    code,
  });
}

function forcedMessage(code: number): string {
  return code === 403
    ? 'pods is forbidden: User "system:serviceaccount:test:agent" cannot list resource "pods"'
    : `fake server answers ${code}`;
}

function writeEvent(res: ServerResponse, event: { type: string; object: unknown }): void {
  res.write(JSON.stringify(event) + '\n');
}

// ---------------------------------------------------------------------------
// Servers

export interface RequestRecord {
  at: number;
  path: string;
  status: number;
}

abstract class FakeHttpsServer {
  token: string;
  /**
   * When set, every authenticated request is answered with this HTTP status and a Status body
   * (403: the token is valid but not allowed; 500, 503...). Open watches are not touched:
   * end them with FakeCluster.endWatches() so the client asks again.
   */
  forceStatus: number | undefined = undefined;
  readonly requests: RequestRecord[] = [];
  private server: Server | undefined;
  private readonly sockets = new Set<Socket>();
  private portNumber = 0;

  constructor(
    readonly cluster: FakeCluster,
    readonly cert: TestCertificate,
    token: string,
  ) {
    this.token = token;
  }

  get port(): number {
    return this.portNumber;
  }

  get url(): string {
    return `https://127.0.0.1:${this.portNumber}`;
  }

  /** Listens (again, on the same port after down() when possible). */
  async up(): Promise<void> {
    const server = createServer({ cert: this.cert.cert, key: this.cert.key }, (req, res) =>
      this.handle(req, res),
    );
    server.on('connection', (s: Socket) => {
      this.sockets.add(s);
      s.on('close', () => this.sockets.delete(s));
    });
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(this.portNumber, '127.0.0.1', () => resolve());
    });
    this.portNumber = (server.address() as AddressInfo).port;
    this.server = server;
  }

  /** Stops listening and cuts every connection (a dead server: connection refused). */
  async down(): Promise<void> {
    const server = this.server;
    this.server = undefined;
    if (server === undefined) return;
    for (const s of this.sockets) s.destroy();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  }

  private handle(req: IncomingMessage, res: ServerResponse): void {
    const url = new URL(req.url ?? '/', 'https://fake');
    const record = (status: number): void => {
      this.requests.push({ at: Date.now(), path: url.pathname + url.search, status });
    };
    if (req.headers.authorization !== `Bearer ${this.token}`) {
      record(401);
      res.writeHead(401, { 'Content-Type': 'application/json' });
      res.end(statusBody(401, 'Unauthorized', 'Unauthorized'));
      return;
    }
    if (this.forceStatus !== undefined) {
      const code = this.forceStatus;
      record(code);
      res.writeHead(code, { 'Content-Type': 'application/json' });
      res.end(statusBody(code, code === 403 ? 'Forbidden' : 'Failure', forcedMessage(code)));
      return;
    }
    this.route(url, res, record);
  }

  protected abstract route(url: URL, res: ServerResponse, record: (status: number) => void): void;
}

export class FakeKubelet extends FakeHttpsServer {
  constructor(
    cluster: FakeCluster,
    cert: TestCertificate,
    token: string,
    readonly node: string,
  ) {
    super(cluster, cert, token);
  }

  protected route(url: URL, res: ServerResponse, record: (status: number) => void): void {
    if (url.pathname !== '/pods') {
      record(404);
      res.writeHead(404, { 'Content-Type': 'text/plain' });
      res.end('404 page not found\n');
      return;
    }
    record(200);
    res.writeHead(200, { 'Content-Type': 'application/json' });
    res.end(JSON.stringify(this.cluster.podList(this.node, false)));
  }
}

export class FakeApiServer extends FakeHttpsServer {
  protected route(url: URL, res: ServerResponse, record: (status: number) => void): void {
    if (url.pathname !== '/api/v1/pods') {
      record(404);
      res.writeHead(404, { 'Content-Type': 'application/json' });
      res.end(statusBody(404, 'NotFound', 'the server could not find the requested resource'));
      return;
    }
    const selector = url.searchParams.get('fieldSelector') ?? '';
    const m = /^spec\.nodeName=(.+)$/.exec(selector);
    if (selector !== '' && m === null) {
      record(400);
      res.writeHead(400, { 'Content-Type': 'application/json' });
      res.end(statusBody(400, 'BadRequest', `unsupported field selector ${selector}`));
      return;
    }
    const node = m?.[1];
    if (url.searchParams.get('watch') !== 'true') {
      record(200);
      res.writeHead(200, { 'Content-Type': 'application/json' });
      res.end(JSON.stringify(this.cluster.podList(node, true)));
      return;
    }
    const rvParam = url.searchParams.get('resourceVersion') ?? '';
    const from = rvParam === '' ? this.cluster.resourceVersion : Number(rvParam);
    record(200);
    res.writeHead(200, { 'Content-Type': 'application/json', 'Transfer-Encoding': 'chunked' });
    // The API server sends the headers at once; a client waits for them to know the watch is on.
    res.flushHeaders();
    const replay = this.cluster.since(from, node);
    if (replay === 'expired') {
      // What the real API server does for a too-old resourceVersion: 200, one ERROR, close.
      writeEvent(res, { type: 'ERROR', object: expiredStatus(this.cluster.resourceVersion) });
      res.end();
      return;
    }
    for (const e of replay) writeEvent(res, { type: e.type, object: e.object });
    const watcher: Watcher = { node, res };
    this.cluster.watchers.add(watcher);
    res.on('close', () => this.cluster.watchers.delete(watcher));
  }
}

/** Writes `token` to a fresh file and returns its path. */
export function writeTokenFile(dir: string, token: string, name = 'token'): string {
  const path = join(dir, name);
  writeFileSync(path, token + '\n');
  return path;
}

/**
 * A kubeconfig for the fake API server, trusting its certificate, whose user reads its token
 * from a file through the `tokenFile` auth provider: the same path client-node's in-cluster
 * configuration takes.
 */
export function writeKubeconfig(
  dir: string,
  server: string,
  caPath: string,
  tokenFile: string,
): string {
  const path = join(dir, 'kubeconfig');
  writeFileSync(
    path,
    JSON.stringify({
      apiVersion: 'v1',
      kind: 'Config',
      clusters: [{ name: 'fake', cluster: { server, 'certificate-authority': caPath } }],
      users: [
        { name: 'agent', user: { 'auth-provider': { name: 'tokenFile', config: { tokenFile } } } },
      ],
      contexts: [{ name: 'fake', context: { cluster: 'fake', user: 'agent' } }],
      'current-context': 'fake',
    }),
  );
  return path;
}
