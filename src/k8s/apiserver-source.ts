/**
 * Pods of this node from the API server: list, then watch from the list's resourceVersion,
 * both with fieldSelector spec.nodeName=<node>, through @kubernetes/client-node's KubeConfig
 * (in-cluster service account, or KUBECONFIG) and its Watch.
 *
 * Why not ListWatch/makeInformer: in client-node 2.x the informer takes no field selector, keeps
 * a second full copy of every pod, stops for good on any error other than 410, and its typed
 * list deserialiser throws on the first malformed item, failing the whole list. Here the list is
 * fetched raw through the client's own request machinery (same auth and TLS as its API classes)
 * and each item is validated on its own.
 *
 * Protocol handling:
 *  - list (no resourceVersion: a consistent read) -> cache.replaceAll, keep list RV;
 *  - watch ?resourceVersion=RV&allowWatchBookmarks=true; every event advances RV;
 *  - ERROR event with code 410 (Expired/Gone), or HTTP 410 -> re-list at once;
 *  - the stream ending cleanly or going idle (client-side timeout) -> watch again from RV;
 *  - anything else (refused connection, 5xx, 401/403) -> exponential backoff 1 s .. 30 s, and
 *    on 401/403 the KubeConfig is rebuilt so a rotated or fixed token is read again.
 */

import { delimiter } from 'node:path';
import {
  HttpMethod,
  IsomorphicFetchHttpLibrary,
  KubeConfig,
  RequestContext,
  Watch,
} from '@kubernetes/client-node';
import type { Env } from '../config.js';
import { type Logger, rateLimited } from '../log.js';
import {
  Backoff,
  type BackoffOptions,
  describeError,
  httpStatusOf,
  parsePod,
  parsePodList,
  type PodSink,
  type PodSource,
  Sleeper,
} from './pod-cache.js';

export interface ApiServerSourceOptions {
  nodeName: string;
  /**
   * Builds the client configuration. Called at start and again after an auth failure.
   * Default: loadKubeConfig(process.env).
   */
  loadConfig?: () => KubeConfig;
  /** Timeout of one list request. Default 30000. */
  listTimeoutMs?: number;
  /** Larger list responses are refused, as the kubelet source does. Default 64 MiB. */
  maxBodyBytes?: number;
  /** Server-side watch timeout asked for (timeoutSeconds). Default 300. */
  watchTimeoutSeconds?: number;
  backoff?: BackoffOptions;
  log: Logger;
}

/** An HTTP failure of the list request (the watch's carry statusCode from client-node). */
export class ApiServerError extends Error {
  constructor(
    message: string,
    readonly statusCode?: number,
    options?: { cause?: unknown },
  ) {
    super(message, options);
    this.name = 'ApiServerError';
  }
}

/**
 * KUBECONFIG (a path list, merged in order) when set, else the in-cluster service account.
 * Throws when neither is available.
 */
export function loadKubeConfig(env: Env = process.env): KubeConfig {
  const kc = new KubeConfig();
  const files = (env.KUBECONFIG ?? '').split(delimiter).filter((f) => f !== '');
  if (files.length > 0) {
    kc.loadFromFile(files[0]);
    for (const file of files.slice(1)) {
      const more = new KubeConfig();
      more.loadFromFile(file);
      kc.mergeConfig(more, true);
    }
    return kc;
  }
  if (env.KUBERNETES_SERVICE_HOST !== undefined && env.KUBERNETES_SERVICE_HOST !== '') {
    kc.loadFromCluster();
    return kc;
  }
  throw new Error('no API server configuration: KUBECONFIG is not set and not running in a pod');
}

/** Where the credentials came from, for a log line a human can act on. */
export function credentialsHint(kc: KubeConfig | undefined): string {
  const user = kc?.getCurrentUser();
  if (user === null || user === undefined) return 'the kubeconfig (no current user)';
  const config: unknown = (user.authProvider as { config?: unknown } | undefined)?.config;
  const tokenFile = (config as { tokenFile?: unknown } | undefined)?.tokenFile;
  if (typeof tokenFile === 'string') return `the token file ${tokenFile}`;
  return `the credentials of kubeconfig user ${JSON.stringify(user.name)}`;
}

interface WatchEnd {
  err: unknown;
  expired: boolean;
  events: number;
}

const WATCH_PATH = '/api/v1/pods';

export class ApiServerSource implements PodSource {
  readonly name = 'apiserver';
  private readonly fieldSelector: string;
  private readonly loadConfig: () => KubeConfig;
  private readonly listTimeoutMs: number;
  private readonly maxBodyBytes: number;
  private readonly watchTimeoutSeconds: number;
  private readonly backoff: Backoff;
  private readonly log: Logger;
  private readonly http = new IsomorphicFetchHttpLibrary();
  private readonly sleeper = new Sleeper();
  private running: Promise<void> | undefined;
  private stopped = false;
  private controller: AbortController | undefined;
  /** Ends the current watchOnce() at once (stop() must not wait for a server's headers). */
  private endWatch: ((err: unknown) => void) | undefined;
  private resourceVersion = '';
  private authExplained = false;
  private lists = 0;

  constructor(private readonly options: ApiServerSourceOptions) {
    this.fieldSelector = `spec.nodeName=${options.nodeName}`;
    this.loadConfig = options.loadConfig ?? (() => loadKubeConfig(process.env));
    this.listTimeoutMs = options.listTimeoutMs ?? 30_000;
    this.maxBodyBytes = options.maxBodyBytes ?? 64 << 20;
    this.watchTimeoutSeconds = options.watchTimeoutSeconds ?? 300;
    this.backoff = new Backoff(options.backoff);
    this.log = options.log.child({ component: 'apiserver-source' });
  }

  /** Completed lists so far (the first one and every re-list). */
  get listCount(): number {
    return this.lists;
  }

  start(sink: PodSink): void {
    if (this.running !== undefined) return;
    this.stopped = false;
    this.resourceVersion = '';
    this.running = this.loop(sink);
  }

  async stop(): Promise<void> {
    this.stopped = true;
    this.controller?.abort();
    this.endWatch?.(null);
    this.sleeper.cancel();
    await this.running;
    this.running = undefined;
  }

  private async loop(sink: PodSink): Promise<void> {
    let kc: KubeConfig | undefined;
    while (!this.stopped) {
      try {
        kc ??= this.loadConfig();
        if (this.resourceVersion === '') await this.list(kc, sink);
        if (this.stopped) break;
        const startedAt = Date.now();
        const end = await this.watchOnce(kc, sink);
        if (this.stopped) break;
        if (end.expired || httpStatusOf(end.err) === 410) {
          this.log.info('pod watch expired (410 Gone): re-listing', {
            node: this.options.nodeName,
          });
          this.resourceVersion = '';
          continue;
        }
        if (end.err !== null && end.err !== undefined && !isTimeout(end.err)) throw end.err;
        // A clean end or an idle timeout: watch again from the last resourceVersion, but do
        // not spin on a server that closes every watch at once.
        if (end.events === 0 && Date.now() - startedAt < 1000) {
          await this.sleeper.sleep(this.backoff.next());
        }
      } catch (err) {
        if (this.stopped) break;
        // Any failed watch lists again, as client-go's reflector does: resuming from the same
        // resourceVersion can fail for ever (a value the server refuses: a 400 loop).
        this.resourceVersion = '';
        const status = httpStatusOf(err);
        if (status === 401 || status === 403) kc = undefined; // re-read the token next time
        const delay = this.backoff.next();
        this.reportFailure(err, status, kc, delay);
        try {
          sink.failed(describeError(err));
        } catch (sinkErr) {
          this.log.error('pod sink failed', { err: sinkErr });
        }
        await this.sleeper.sleep(delay);
      }
    }
  }

  private reportFailure(
    err: unknown,
    status: number | undefined,
    kc: KubeConfig | undefined,
    retryInMs: number,
  ): void {
    if (status === 401 || status === 403) {
      if (this.authExplained) return;
      this.authExplained = true;
      const hint = credentialsHint(kc ?? this.tryLoadConfig());
      this.log.error(
        status === 401
          ? `API server rejected the credentials (HTTP 401): check ${hint}`
          : `API server refused to list/watch pods (HTTP 403) for ${hint}: grant list and watch on pods`,
        { error: describeError(err), retry_in_ms: retryInMs },
      );
      return;
    }
    rateLimited(this.log, 'apiserver-pods', 60_000).warn(
      'API server: pod list/watch failed, retrying',
      {
        error: describeError(err),
        retry_in_ms: retryInMs,
      },
    );
  }

  private tryLoadConfig(): KubeConfig | undefined {
    try {
      return this.loadConfig();
    } catch {
      return undefined;
    }
  }

  private async list(kc: KubeConfig, sink: PodSink): Promise<void> {
    const cluster = kc.getCurrentCluster();
    if (cluster === null) throw new ApiServerError('kubeconfig has no current cluster');
    const url = new URL(cluster.server.replace(/\/+$/, '') + WATCH_PATH);
    url.searchParams.set('fieldSelector', this.fieldSelector);
    const ctx = new RequestContext(url.toString(), HttpMethod.GET);
    ctx.setHeaderParam('Accept', 'application/json');
    const abort = new AbortController();
    this.controller = abort;
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      abort.abort();
    }, this.listTimeoutMs);
    ctx.setSignal(abort.signal);
    let text: string;
    let status: number;
    try {
      await kc.applySecurityAuthentication(ctx);
      const response = await this.http.send(ctx).toPromise();
      status = response.httpStatusCode;
      text = await readBounded(response.body.stream(), this.maxBodyBytes);
    } catch (err) {
      // "This operation was aborted" would not say that the API server never answered.
      const what = timedOut ? `no complete answer in ${this.listTimeoutMs} ms` : describeError(err);
      throw new ApiServerError(`list pods: ${what}`, undefined, { cause: err });
    } finally {
      clearTimeout(timer);
      if (this.controller === abort) this.controller = undefined;
    }
    if (status !== 200) {
      throw new ApiServerError(`list pods: HTTP ${status}${statusMessage(text)}`, status);
    }
    let json: unknown;
    try {
      json = JSON.parse(text);
    } catch (err) {
      throw new ApiServerError('list pods: invalid JSON', undefined, { cause: err });
    }
    const list = parsePodList(json, this.options.nodeName);
    this.reportRejected(list.rejected, list.reasons);
    if (this.authExplained || this.lists === 0) {
      this.log.info('API server: pod list received', {
        node: this.options.nodeName,
        pods: list.pods.length,
        resource_version: list.resourceVersion,
      });
    }
    this.authExplained = false;
    this.lists++;
    this.backoff.reset();
    sink.snapshot(list.pods);
    // No resourceVersion means we cannot watch from it: list again after the next delay.
    this.resourceVersion = list.resourceVersion;
    if (this.resourceVersion === '') throw new ApiServerError('list pods: no resourceVersion');
  }

  private watchOnce(kc: KubeConfig, sink: PodSink): Promise<WatchEnd> {
    return new Promise((resolve) => {
      const state: WatchEnd = { err: null, expired: false, events: 0 };
      let finished = false;
      const finish = (err: unknown): void => {
        if (finished) return;
        finished = true;
        this.controller = undefined;
        this.endWatch = undefined;
        resolve({ ...state, err: state.err ?? err });
      };
      this.endWatch = finish;
      const query = {
        fieldSelector: this.fieldSelector,
        resourceVersion: this.resourceVersion,
        allowWatchBookmarks: true,
        timeoutSeconds: this.watchTimeoutSeconds,
      };
      new Watch(kc)
        .watch(WATCH_PATH, query, (type, obj) => this.onEvent(type, obj, state, sink), finish)
        .then(
          (controller) => {
            if (finished || this.stopped) controller.abort();
            else this.controller = controller;
          },
          (err: unknown) => finish(err),
        );
    });
  }

  private onEvent(type: string, obj: unknown, state: WatchEnd, sink: PodSink): void {
    // client-node swallows exceptions thrown here; catch them to log them.
    try {
      if (type === 'ERROR') {
        const { code, message } = (obj ?? {}) as { code?: unknown; message?: unknown };
        // The Status message read directly: re-serialising a hostile object can throw.
        const why = typeof message === 'string' ? `: ${message.slice(0, 200)}` : '';
        if (code === 410) state.expired = true;
        else
          state.err = new ApiServerError(
            `watch pods: ERROR event${why}`,
            typeof code === 'number' ? code : undefined,
          );
        return;
      }
      state.events++;
      this.backoff.reset();
      const rv = resourceVersionOf(obj);
      if (type === 'BOOKMARK') {
        if (rv !== '') this.resourceVersion = rv;
        return;
      }
      if (type === 'DELETED') {
        this.onDeleted(obj, sink);
      } else if (type === 'ADDED' || type === 'MODIFIED') {
        const r = parsePod(obj);
        if (r.ok) {
          if (r.pod.nodeName === '' || r.pod.nodeName === this.options.nodeName) sink.upsert(r.pod);
        } else {
          this.reportRejected(1, [r.reason]);
        }
      }
      if (rv !== '') this.resourceVersion = rv;
    } catch (err) {
      rateLimited(this.log, 'apiserver-event', 60_000).error('pod watch event handling failed', {
        type: String(type).slice(0, 32),
        err,
      });
    }
  }

  private onDeleted(obj: unknown, sink: PodSink): void {
    const r = parsePod(obj);
    if (r.ok) {
      sink.remove(r.pod.uid);
      return;
    }
    const meta = (obj as { metadata?: unknown } | null)?.metadata as
      | { uid?: unknown; namespace?: unknown; name?: unknown }
      | undefined;
    if (typeof meta?.uid === 'string') sink.remove(meta.uid);
    else if (typeof meta?.namespace === 'string' && typeof meta.name === 'string') {
      sink.removeByName(meta.namespace, meta.name);
    } else this.reportRejected(1, [`DELETED event: ${r.reason}`]);
  }

  private reportRejected(count: number, reasons: string[]): void {
    if (count === 0) return;
    rateLimited(this.log, 'apiserver-malformed', 300_000).warn(
      'API server: skipped malformed pods',
      {
        rejected: count,
        reasons,
      },
    );
  }
}

/** The body as text (a BOM dropped, as Response.text() does), refused past `maxBytes`. */
async function readBounded(
  stream: ReadableStream<Uint8Array> | null,
  maxBytes: number,
): Promise<string> {
  if (stream === null) return '';
  const chunks: Uint8Array[] = [];
  let size = 0;
  // Leaving the loop early (the throw) cancels the stream, which closes the connection.
  for await (const chunk of stream) {
    size += chunk.byteLength;
    if (size > maxBytes)
      throw new ApiServerError(`list pods: response larger than ${maxBytes} bytes`);
    chunks.push(chunk);
  }
  return new TextDecoder().decode(Buffer.concat(chunks));
}

function resourceVersionOf(obj: unknown): string {
  const meta = (obj as { metadata?: unknown } | null)?.metadata;
  const rv = (meta as { resourceVersion?: unknown } | undefined)?.resourceVersion;
  return typeof rv === 'string' && rv.length <= 64 ? rv : '';
}

function isTimeout(err: unknown): boolean {
  return (err as { name?: unknown } | null)?.name === 'TimeoutError';
}

function statusMessage(body: string): string {
  try {
    const parsed: unknown = JSON.parse(body);
    const msg = (parsed as { message?: unknown } | null)?.message;
    if (typeof msg === 'string') return `: ${msg.slice(0, 200)}`;
  } catch {
    // Not JSON.
  }
  return '';
}
