/**
 * Pods of this node from the local kubelet: GET https://<kubelet>/pods, a PodList of exactly
 * the pods the kubelet runs (static pods included), polled because the kubelet offers no watch.
 *
 * Authentication is the pod's service-account token, re-read before every request because
 * projected tokens rotate. The kubelet's serving certificate is verified against a CA file
 * (by default the service-account ca.crt, which only works when kubelet serving certificates are
 * issued by the cluster CA, i.e. serverTLSBootstrap) unless the insecure switch is set.
 * The kubelet authorises /pods as `nodes/proxy` (or `nodes/pods` with KubeletFineGrainedAuthz).
 *
 * Failures never escape: they are logged (rate-limited; an auth failure gets one clear line),
 * reported to the sink, and retried with exponential backoff.
 */

import { readFile } from 'node:fs/promises';
import { request as httpsRequest } from 'node:https';
import { request as httpRequest, type IncomingMessage } from 'node:http';
import { type Logger, rateLimited } from '../log.js';
import {
  Backoff,
  type BackoffOptions,
  describeError,
  parsePodList,
  type PodSink,
  type PodSource,
  Sleeper,
} from './pod-cache.js';

export const SERVICE_ACCOUNT_TOKEN = '/var/run/secrets/kubernetes.io/serviceaccount/token';
export const SERVICE_ACCOUNT_CA = '/var/run/secrets/kubernetes.io/serviceaccount/ca.crt';

export interface KubeletSourceOptions {
  /** Base URL, e.g. https://10.0.0.5:10250 (K8S_KUBELET_URL). */
  url: string;
  /** This node: pods naming another node are ignored. */
  nodeName: string;
  /** Default SERVICE_ACCOUNT_TOKEN. */
  tokenFile?: string;
  /** CA bundle verifying the kubelet's certificate; default SERVICE_ACCOUNT_CA. */
  caFile?: string;
  /** Skip verification of the kubelet's certificate (K8S_KUBELET_INSECURE). */
  insecure?: boolean;
  /** Delay between successful polls. Default 2000. */
  pollIntervalMs?: number;
  /** Whole request (connect to last byte). Default 10000. */
  timeoutMs?: number;
  /** Larger responses are refused. Default 64 MiB. */
  maxBodyBytes?: number;
  /** Retry delays after failures. Default 1 s .. 30 s. */
  backoff?: BackoffOptions;
  log: Logger;
}

/** A failed request, with what the log line needs. */
export class KubeletError extends Error {
  constructor(
    message: string,
    readonly statusCode?: number,
    options?: { cause?: unknown },
  ) {
    super(message, options);
    this.name = 'KubeletError';
  }
}

export class KubeletSource implements PodSource {
  readonly name = 'kubelet';
  private readonly url: URL;
  private readonly tokenFile: string;
  private readonly caFile: string;
  private readonly insecure: boolean;
  private readonly pollIntervalMs: number;
  private readonly timeoutMs: number;
  private readonly maxBodyBytes: number;
  private readonly backoff: Backoff;
  private readonly log: Logger;
  private readonly sleeper = new Sleeper();
  private running: Promise<void> | undefined;
  private stopped = false;
  private abort: AbortController | undefined;
  /** The current failure streak is an auth failure that has already been explained. */
  private authExplained = false;
  private polls = 0;

  constructor(private readonly options: KubeletSourceOptions) {
    this.url = new URL('/pods', options.url);
    if (this.url.protocol !== 'https:' && this.url.protocol !== 'http:') {
      throw new Error(`kubelet URL must be http(s), got ${JSON.stringify(options.url)}`);
    }
    this.tokenFile = options.tokenFile ?? SERVICE_ACCOUNT_TOKEN;
    this.caFile = options.caFile ?? SERVICE_ACCOUNT_CA;
    this.insecure = options.insecure ?? false;
    this.pollIntervalMs = options.pollIntervalMs ?? 2000;
    this.timeoutMs = options.timeoutMs ?? 10_000;
    this.maxBodyBytes = options.maxBodyBytes ?? 64 << 20;
    this.backoff = new Backoff(options.backoff);
    this.log = options.log.child({ component: 'kubelet-source' });
  }

  /** Successful polls so far. */
  get pollCount(): number {
    return this.polls;
  }

  start(sink: PodSink): void {
    if (this.running !== undefined) return;
    this.stopped = false;
    this.running = this.loop(sink);
  }

  async stop(): Promise<void> {
    this.stopped = true;
    this.abort?.abort();
    this.sleeper.cancel();
    await this.running;
    this.running = undefined;
  }

  private async loop(sink: PodSink): Promise<void> {
    while (!this.stopped) {
      let delay: number;
      try {
        await this.pollOnce(sink);
        delay = this.pollIntervalMs;
      } catch (err) {
        if (this.stopped) break;
        delay = this.backoff.next();
        this.reportFailure(err, delay);
        try {
          sink.failed(describeError(err));
        } catch (sinkErr) {
          this.log.error('pod sink failed', { err: sinkErr });
        }
      }
      if (!this.stopped) await this.sleeper.sleep(delay);
    }
  }

  private async pollOnce(sink: PodSink): Promise<void> {
    const body = await this.fetchPods();
    let json: unknown;
    try {
      json = JSON.parse(body);
    } catch (err) {
      throw new KubeletError('kubelet /pods returned invalid JSON', undefined, { cause: err });
    }
    const list = parsePodList(json, this.options.nodeName);
    if (list.rejected > 0) {
      rateLimited(this.log, 'kubelet-malformed', 300_000).warn('kubelet: skipped malformed pods', {
        rejected: list.rejected,
        reasons: list.reasons,
      });
    }
    if (this.authExplained || this.polls === 0) {
      this.log.info('kubelet: pod list received', { url: this.url.href, pods: list.pods.length });
    }
    this.authExplained = false;
    this.backoff.reset();
    this.polls++;
    sink.snapshot(list.pods);
  }

  private reportFailure(err: unknown, retryInMs: number): void {
    const status = err instanceof KubeletError ? err.statusCode : undefined;
    if (status === 401 || status === 403 || isTokenReadError(err)) {
      // One clear line per failure streak; the retries that follow are quiet.
      if (!this.authExplained) {
        this.authExplained = true;
        this.log.error(
          status === 401
            ? `kubelet rejected the service-account token (HTTP 401): check the token file ${this.tokenFile}`
            : status === 403
              ? `kubelet refused access to /pods (HTTP 403) for the token in ${this.tokenFile}: grant get on nodes/proxy (or nodes/pods)`
              : `cannot read the service-account token file ${this.tokenFile}`,
          {
            url: this.url.href,
            token_file: this.tokenFile,
            error: describeError(err),
            retry_in_ms: retryInMs,
          },
        );
      }
      return;
    }
    rateLimited(this.log, 'kubelet-poll', 60_000).warn('kubelet: pod list failed, retrying', {
      url: this.url.href,
      error: describeError(err),
      retry_in_ms: retryInMs,
    });
  }

  private async fetchPods(): Promise<string> {
    let token: string;
    try {
      token = (await readFile(this.tokenFile, 'utf8')).trim();
    } catch (err) {
      throw new TokenReadError(this.tokenFile, err);
    }
    let ca: Buffer | undefined;
    if (!this.insecure && this.url.protocol === 'https:') {
      try {
        ca = await readFile(this.caFile);
      } catch (err) {
        throw new KubeletError(`cannot read the kubelet CA file ${this.caFile}`, undefined, {
          cause: err,
        });
      }
    }
    this.abort = new AbortController();
    try {
      return await this.get(token, ca, this.abort.signal);
    } finally {
      this.abort = undefined;
    }
  }

  private get(token: string, ca: Buffer | undefined, signal: AbortSignal): Promise<string> {
    return new Promise((resolve, reject) => {
      const options = {
        method: 'GET',
        headers: { Authorization: `Bearer ${token}`, Accept: 'application/json' },
        signal,
        ...(this.url.protocol === 'https:' ? { ca, rejectUnauthorized: !this.insecure } : {}),
      };
      // One deadline for the whole exchange (connect, TLS, headers, body). A socket idle
      // timeout bounds none of it: a kubelet trickling bytes never goes idle, and Node arms
      // the request's idle timeout only after the TLS handshake, so a kubelet that accepts
      // and never completes it held a request twice as long as asked.
      const deadline = setTimeout(() => {
        req.destroy(new KubeletError(`kubelet /pods: no complete answer in ${this.timeoutMs} ms`));
      }, this.timeoutMs);
      deadline.unref();
      const settle = (): void => clearTimeout(deadline);
      const onResponse = (res: IncomingMessage): void => {
        readBody(res, this.maxBodyBytes).then((body) => {
          settle();
          const status = res.statusCode ?? 0;
          if (status === 200) resolve(body);
          else
            reject(new KubeletError(`kubelet /pods: HTTP ${status}${statusMessage(body)}`, status));
        }, fail);
      };
      const fail = (err: unknown): void => {
        settle();
        // Our own errors (deadline, body too large) already say what happened.
        if (err instanceof KubeletError) reject(err);
        else
          reject(
            new KubeletError(`kubelet /pods: ${describeError(err)}`, undefined, { cause: err }),
          );
      };
      const req =
        this.url.protocol === 'https:'
          ? httpsRequest(this.url, options, onResponse)
          : httpRequest(this.url, options, onResponse);
      req.on('error', fail);
      req.end();
    });
  }
}

class TokenReadError extends Error {
  constructor(path: string, cause: unknown) {
    super(`cannot read token file ${path}: ${describeError(cause)}`, { cause });
    this.name = 'TokenReadError';
  }
}

function isTokenReadError(err: unknown): boolean {
  return err instanceof TokenReadError;
}

function readBody(res: IncomingMessage, maxBytes: number): Promise<string> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    res.on('data', (chunk: Buffer) => {
      size += chunk.length;
      if (size > maxBytes) {
        res.destroy(new KubeletError(`kubelet /pods: response larger than ${maxBytes} bytes`));
        return;
      }
      chunks.push(chunk);
    });
    res.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
    res.on('error', reject);
    res.on('aborted', () => reject(new KubeletError('kubelet /pods: response aborted')));
  });
}

/** `: <message>` from a Kubernetes Status body, or '' (never the raw body: it may be HTML). */
function statusMessage(body: string): string {
  try {
    const parsed: unknown = JSON.parse(body);
    if (typeof parsed === 'object' && parsed !== null) {
      const msg = (parsed as { message?: unknown }).message;
      if (typeof msg === 'string') return `: ${msg.slice(0, 200)}`;
    }
  } catch {
    // Not JSON.
  }
  return '';
}
