/**
 * The pods of this node, indexed for the hot path: pod IP -> pod, container ID -> pod,
 * pod UID -> pod. Lookups are synchronous Map reads; the network is only ever touched by the
 * sources (kubelet-source.ts, apiserver-source.ts) that feed the cache through a PodSink.
 *
 * Pod churn is the correctness concern. An IP belongs to the newest live pod that claims it:
 * a deleted pod loses its IPs at once (DELETED event, or absence from the next full list), a
 * pod that has finished (Succeeded/Failed) gives its IP back even though its status still shows
 * it (the CNI has released it), and when an old and a new pod both claim an IP (the old one
 * still terminating) the new one wins. Every IP whose owner changes is reported through
 * onChange() so the endpoint table can drop labels it cached.
 *
 * hostNetwork pods are never indexed by IP: they share the node's address with each other and
 * with the node itself, so an IP lookup could only guess. They are found by container ID (from
 * cgroups) or pod UID instead.
 *
 * Everything arriving from the network is untrusted: parsePod() validates each item and a bad
 * one is skipped, never thrown.
 */

import { isIP } from 'node:net';
import { formatAddress, parseAddress, type EndpointResolver } from '../endpoints.js';
import { type Logger, rateLimited } from '../log.js';
import { type Workload, workloadFromOwners } from './workload.js';

export type { Workload } from './workload.js';

export interface PodIdentity {
  readonly uid: string;
  readonly name: string;
  readonly namespace: string;
  readonly workload: Workload | undefined;
  readonly hostNetwork: boolean;
  /** status.phase ('' when absent). */
  readonly phase: string;
  /** metadata.deletionTimestamp is set: the pod is shutting down. */
  readonly terminating: boolean;
  /** metadata.creationTimestamp (RFC 3339, '' when absent): orders claims on one IP. */
  readonly createdAt: string;
  /** spec.nodeName ('' when absent). */
  readonly nodeName: string;
  /** status.podIPs (or podIP), canonical text (RFC 5952 for IPv6), deduplicated. */
  readonly ips: readonly string[];
  /** Container IDs without the runtime scheme (`containerd://`), lower case. */
  readonly containerIds: readonly string[];
}

// ---------------------------------------------------------------------------
// Parsing untrusted pod JSON (kubelet /pods, API server list and watch)

const MAX_NAME = 253;
const MAX_NAMESPACE = 63;
const MAX_UID = 128;
const MAX_IPS = 8;
const MAX_CONTAINERS = 64;
const CONTAINER_ID = /^[a-z][a-z0-9.+-]{0,31}:\/\/([0-9a-f]{12,128})$/;
const RFC3339ISH = /^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9:.]+(Z|[+-][0-9:]+)$/;
const TERMINAL_PHASES: ReadonlySet<string> = new Set(['Succeeded', 'Failed']);
/**
 * Pod names are DNS-1123 subdomains and namespaces DNS-1123 labels (the API server validates
 * both). Anything else is refused: `namespace/name` keys the label values, so a "/" would let
 * two pods share one, and control or bidi characters would reach metrics and logs.
 */
const DNS1123_SUBDOMAIN = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;
const DNS1123_LABEL = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;
const MAX_RESOURCE_VERSION = 64;

export type ParseResult = { ok: true; pod: PodIdentity } | { ok: false; reason: string };

const fail = (reason: string): ParseResult => ({ ok: false, reason });

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function boundedString(v: unknown, max: number): string | undefined {
  return typeof v === 'string' && v.length > 0 && v.length <= max ? v : undefined;
}

/** Canonical text of an IP, or undefined when `v` is not one. */
export function canonicalIp(v: unknown): string | undefined {
  if (typeof v !== 'string' || v.length > 64 || isIP(v) === 0) return undefined;
  try {
    const parsed = parseAddress(v);
    return formatAddress(parsed.family, parsed.bytes, 0);
  } catch {
    return undefined;
  }
}

/** A Pod object (JSON as the API server or kubelet sends it) -> PodIdentity, or why not. */
export function parsePod(raw: unknown): ParseResult {
  if (!isRecord(raw)) return fail('item is not an object');
  const { metadata, spec, status } = raw;
  if (!isRecord(metadata)) return fail('metadata is not an object');
  const name = boundedString(metadata.name, MAX_NAME);
  if (name === undefined || !DNS1123_SUBDOMAIN.test(name)) {
    return fail('metadata.name missing or invalid');
  }
  const namespace = boundedString(metadata.namespace, MAX_NAMESPACE);
  if (namespace === undefined || !DNS1123_LABEL.test(namespace)) {
    return fail('metadata.namespace missing or invalid');
  }
  const uid = boundedString(metadata.uid, MAX_UID);
  if (uid === undefined) return fail('metadata.uid missing or invalid');
  if (spec !== undefined && !isRecord(spec)) return fail('spec is not an object');
  if (status !== undefined && !isRecord(status)) return fail('status is not an object');
  const labels = isRecord(metadata.labels) ? metadata.labels : undefined;
  const hash = labels?.['pod-template-hash'];
  const createdAt = metadata.creationTimestamp;
  return {
    ok: true,
    pod: {
      uid,
      name,
      namespace,
      workload: workloadFromOwners(
        metadata.ownerReferences,
        typeof hash === 'string' && hash.length <= 63 ? hash : undefined,
      ),
      hostNetwork: spec?.hostNetwork === true,
      phase: typeof status?.phase === 'string' && status.phase.length <= 32 ? status.phase : '',
      terminating: typeof metadata.deletionTimestamp === 'string',
      createdAt: typeof createdAt === 'string' && RFC3339ISH.test(createdAt) ? createdAt : '',
      nodeName: boundedString(spec?.nodeName, MAX_NAME) ?? '',
      ips: podIps(status),
      containerIds: containerIds(status),
    },
  };
}

function podIps(status: Record<string, unknown> | undefined): string[] {
  if (status === undefined) return [];
  const out: string[] = [];
  const add = (v: unknown): void => {
    const ip = canonicalIp(v);
    if (ip !== undefined && !out.includes(ip) && out.length < MAX_IPS) out.push(ip);
  };
  add(status.podIP);
  if (Array.isArray(status.podIPs)) {
    for (const entry of status.podIPs.slice(0, MAX_IPS)) {
      if (isRecord(entry)) add(entry.ip);
    }
  }
  return out;
}

function containerIds(status: Record<string, unknown> | undefined): string[] {
  if (status === undefined) return [];
  const out: string[] = [];
  for (const key of ['containerStatuses', 'initContainerStatuses', 'ephemeralContainerStatuses']) {
    const list = status[key];
    if (!Array.isArray(list)) continue;
    for (const cs of list.slice(0, MAX_CONTAINERS)) {
      if (!isRecord(cs) || typeof cs.containerID !== 'string') continue;
      const m = CONTAINER_ID.exec(cs.containerID.toLowerCase());
      if (m !== null && !out.includes(m[1]) && out.length < MAX_CONTAINERS) out.push(m[1]);
    }
  }
  return out;
}

export interface ParsedPodList {
  readonly pods: PodIdentity[];
  /** List resourceVersion ('' when absent, as from the kubelet). */
  readonly resourceVersion: string;
  /** Items skipped as malformed, and the first few reasons (for one log line). */
  readonly rejected: number;
  readonly reasons: string[];
}

/** A PodList body (already JSON-parsed). Throws only when the body is not a list at all. */
export function parsePodList(body: unknown, nodeName?: string): ParsedPodList {
  if (!isRecord(body) || !Array.isArray(body.items)) {
    throw new Error('response is not a PodList (no items array)');
  }
  const pods: PodIdentity[] = [];
  const reasons: string[] = [];
  let rejected = 0;
  for (const item of body.items) {
    const r = parsePod(item);
    if (!r.ok) {
      rejected++;
      if (reasons.length < 3) reasons.push(r.reason);
      continue;
    }
    // The kubelet only knows its own pods and the API server filters by field selector; a pod
    // of another node here is a confused server, not ours to label.
    if (nodeName !== undefined && r.pod.nodeName !== '' && r.pod.nodeName !== nodeName) continue;
    pods.push(r.pod);
  }
  const meta = body.metadata;
  // Bounded like a watch event's: it goes into the next watch URL.
  const rv =
    isRecord(meta) &&
    typeof meta.resourceVersion === 'string' &&
    meta.resourceVersion.length <= MAX_RESOURCE_VERSION
      ? meta.resourceVersion
      : '';
  return { pods, resourceVersion: rv, rejected, reasons };
}

// ---------------------------------------------------------------------------
// The cache

export interface PodCacheOptions {
  /** Most pods held; beyond it finished pods go first, then the longest known. Default 4096. */
  maxPods?: number;
  log?: Logger;
}

export interface PodCacheStats {
  pods: number;
  ips: number;
  containers: number;
  /** Pods dropped because the cache was full. */
  evicted: number;
}

export type PodChangeListener = (ips: string[]) => void;

interface Entry {
  pod: PodIdentity;
  /** Order of first sight: the tie-breaker between claims with equal creation times. */
  readonly seq: number;
  /** Links in the eviction lists (by age, and of finished pods). */
  readonly age: Link;
  readonly done: Link;
}

interface Link {
  prev: Entry | undefined;
  next: Entry | undefined;
  linked: boolean;
}

const newLink = (): Link => ({ prev: undefined, next: undefined, linked: false });

/**
 * An intrusive doubly linked list of entries: O(1) append, removal and oldest. (A Map or Set
 * in insertion order would do, but V8 leaves deleted slots in place until it rehashes, so
 * finding the first live entry after many evictions walks over them: a list larger than the
 * cache then cost time quadratic in its size.)
 */
class EntryList {
  private head: Entry | undefined;
  private tail: Entry | undefined;

  constructor(private readonly link: (e: Entry) => Link) {}

  append(e: Entry): void {
    const l = this.link(e);
    if (l.linked) return;
    l.prev = this.tail;
    l.next = undefined;
    l.linked = true;
    if (this.tail === undefined) this.head = e;
    else this.link(this.tail).next = e;
    this.tail = e;
  }

  remove(e: Entry): void {
    const l = this.link(e);
    if (!l.linked) return;
    if (l.prev === undefined) this.head = l.next;
    else this.link(l.prev).next = l.next;
    if (l.next === undefined) this.tail = l.prev;
    else this.link(l.next).prev = l.prev;
    l.prev = undefined;
    l.next = undefined;
    l.linked = false;
  }

  /** The oldest entry other than `except`. */
  first(except: Entry): Entry | undefined {
    const e = this.head;
    return e === except && e !== undefined ? this.link(e).next : e;
  }
}

export class PodCache {
  readonly maxPods: number;
  private readonly log: Logger | undefined;
  private readonly byUidMap = new Map<string, Entry>();
  private readonly ipOwner = new Map<string, Entry>();
  /** Every live pod claiming each IP (usually one; two during a quick reuse). */
  private readonly ipClaims = new Map<string, Entry[]>();
  /**
   * Every pod claiming each container ID, the latest to claim it owning it. IDs are unique in a
   * sane cluster; a hostile list that repeats one must not leave a live pod unfindable when
   * the other claimant goes.
   */
  private readonly containerClaims = new Map<string, Entry[]>();
  /**
   * Eviction order: finished (terminal or terminating) pods in the order they finished, then
   * every pod by age. Lists, so that an eviction never scans the cache: a pod list larger than
   * the cache costs one eviction per extra pod, and a scan each made it quadratic.
   */
  private readonly byAge = new EntryList((e) => e.age);
  private readonly finished = new EntryList((e) => e.done);
  private readonly listeners: PodChangeListener[] = [];
  private seq = 0;
  private evicted = 0;
  /**
   * IPs touched during the current batch, with their pod before it: compared with the pod after
   * it, so an update that removes and re-adds the same claim reports nothing.
   */
  private pending: Map<string, PodIdentity | undefined> | null = null;

  constructor(options: PodCacheOptions = {}) {
    const max = options.maxPods ?? 4096;
    if (!Number.isInteger(max) || max < 1) {
      throw new RangeError(`PodCache: maxPods must be a positive integer, got ${max}`);
    }
    this.maxPods = max;
    this.log = options.log;
  }

  // Hot-path lookups: Map reads, nothing else.

  byIp(ip: string): PodIdentity | undefined {
    return this.ipOwner.get(ip)?.pod;
  }

  byContainerId(id: string): PodIdentity | undefined {
    const claims = this.containerClaims.get(id);
    return claims === undefined ? undefined : claims[claims.length - 1].pod;
  }

  byUid(uid: string): PodIdentity | undefined {
    return this.byUidMap.get(uid)?.pod;
  }

  get size(): number {
    return this.byUidMap.size;
  }

  stats(): PodCacheStats {
    return {
      pods: this.byUidMap.size,
      ips: this.ipOwner.size,
      containers: this.containerClaims.size,
      evicted: this.evicted,
    };
  }

  /** All pods (a copy; not for the hot path). */
  pods(): PodIdentity[] {
    return [...this.byUidMap.values()].map((e) => e.pod);
  }

  /**
   * Called with the IPs whose pod changed (appeared, went away, or passed to another pod),
   * once per update batch. Returns an unsubscribe function. A throwing listener is logged and
   * does not stop the others.
   */
  onChange(listener: PodChangeListener): () => void {
    this.listeners.push(listener);
    return () => {
      const i = this.listeners.indexOf(listener);
      if (i >= 0) this.listeners.splice(i, 1);
    };
  }

  /**
   * An EndpointResolver naming an IP `namespace/pod`, and anything else by `unknown(ip)`
   * (default: the IP itself, upgraded through onChange once the pod is known).
   */
  resolver(unknown: EndpointResolver = (ip) => ip): EndpointResolver {
    return (ip) => {
      const pod = this.ipOwner.get(ip)?.pod;
      return pod === undefined ? unknown(ip) : `${pod.namespace}/${pod.name}`;
    };
  }

  /** Adds or updates one pod (watch ADDED/MODIFIED). */
  upsert(pod: PodIdentity): void {
    this.batch(() => this.put(pod));
  }

  /** Removes one pod by UID (watch DELETED). Unknown UIDs are ignored. */
  remove(uid: string): void {
    this.batch(() => this.drop(uid));
  }

  /** Removes the pod with this namespace/name (a DELETED event without a usable UID). */
  removeByName(namespace: string, name: string): void {
    for (const [uid, e] of this.byUidMap) {
      if (e.pod.namespace === namespace && e.pod.name === name) this.remove(uid);
    }
  }

  /** A complete list: pods not in it are gone (a list or re-list, a kubelet poll). */
  replaceAll(pods: readonly PodIdentity[]): void {
    this.batch(() => {
      const present = new Set<string>();
      for (const p of pods) present.add(p.uid);
      for (const uid of [...this.byUidMap.keys()]) if (!present.has(uid)) this.drop(uid);
      for (const p of pods) this.put(p);
    });
  }

  /** Forgets everything (reported as a change of every IP that had an owner). */
  clear(): void {
    this.batch(() => {
      for (const uid of [...this.byUidMap.keys()]) this.drop(uid);
    });
  }

  // ---- internals

  private batch(fn: () => void): void {
    const outer = this.pending === null;
    if (outer) this.pending = new Map();
    try {
      fn();
    } finally {
      if (outer) {
        const touched = this.pending ?? new Map<string, PodIdentity | undefined>();
        this.pending = null;
        const changed: string[] = [];
        for (const [ip, was] of touched) {
          if (!sameLabel(was, this.ipOwner.get(ip)?.pod)) changed.push(ip);
        }
        if (changed.length > 0) this.emit(changed);
      }
    }
  }

  private emit(ips: string[]): void {
    for (const listener of [...this.listeners]) {
      try {
        listener(ips);
      } catch (err) {
        this.log?.error('pod cache change listener failed', { err });
      }
    }
  }

  private put(pod: PodIdentity): void {
    const old = this.byUidMap.get(pod.uid);
    if (old !== undefined) {
      this.unindex(old);
      old.pod = pod;
      this.index(old);
      this.trackFinished(old);
      return;
    }
    const entry: Entry = { pod, seq: this.seq++, age: newLink(), done: newLink() };
    this.byUidMap.set(pod.uid, entry);
    this.byAge.append(entry);
    this.index(entry);
    this.trackFinished(entry);
    if (this.byUidMap.size > this.maxPods) this.evictOne(entry);
  }

  private drop(uid: string): void {
    const e = this.byUidMap.get(uid);
    if (e === undefined) return;
    this.byUidMap.delete(uid);
    this.byAge.remove(e);
    this.finished.remove(e);
    this.unindex(e);
  }

  private trackFinished(e: Entry): void {
    if (TERMINAL_PHASES.has(e.pod.phase) || e.pod.terminating) this.finished.append(e);
    else this.finished.remove(e);
  }

  private index(e: Entry): void {
    for (const id of e.pod.containerIds) {
      const claims = this.containerClaims.get(id);
      if (claims === undefined) this.containerClaims.set(id, [e]);
      else claims.push(e);
    }
    if (!claimsIps(e.pod)) return;
    for (const ip of e.pod.ips) {
      let claims = this.ipClaims.get(ip);
      if (claims === undefined) {
        claims = [];
        this.ipClaims.set(ip, claims);
      }
      claims.push(e);
      this.settle(ip);
    }
  }

  private unindex(e: Entry): void {
    for (const id of e.pod.containerIds) {
      const claims = this.containerClaims.get(id);
      if (claims === undefined) continue;
      const i = claims.indexOf(e);
      if (i >= 0) claims.splice(i, 1);
      if (claims.length === 0) this.containerClaims.delete(id);
    }
    if (!claimsIps(e.pod)) return;
    for (const ip of e.pod.ips) {
      const claims = this.ipClaims.get(ip);
      if (claims === undefined) continue;
      const i = claims.indexOf(e);
      if (i >= 0) claims.splice(i, 1);
      if (claims.length === 0) this.ipClaims.delete(ip);
      this.settle(ip);
    }
  }

  /** Recomputes the owner of `ip` from its claims, remembering the owner before the batch. */
  private settle(ip: string): void {
    const claims = this.ipClaims.get(ip);
    let best: Entry | undefined;
    if (claims !== undefined)
      for (const c of claims) if (best === undefined || newer(c, best)) best = c;
    if (this.pending !== null && !this.pending.has(ip)) {
      this.pending.set(ip, this.ipOwner.get(ip)?.pod);
    }
    if (best === undefined) this.ipOwner.delete(ip);
    else this.ipOwner.set(ip, best);
  }

  private evictOne(keep: Entry): void {
    const victim = this.finished.first(keep) ?? this.byAge.first(keep);
    if (victim === undefined) return;
    this.drop(victim.pod.uid);
    this.evicted++;
    if (this.log !== undefined) {
      rateLimited(this.log, 'pod-cache-full', 60_000).warn(
        'pod cache full: dropped a pod; raise the pod cache size if this node runs more pods',
        { max_pods: this.maxPods, evicted_total: this.evicted },
      );
    }
  }
}

/** Only a live pod on the pod network owns its IPs. */
function claimsIps(pod: PodIdentity): boolean {
  return !pod.hostNetwork && !TERMINAL_PHASES.has(pod.phase);
}

/** Whether claim `a` beats `b` for one IP: live over terminating, then the newest. */
function newer(a: Entry, b: Entry): boolean {
  if (a.pod.terminating !== b.pod.terminating) return !a.pod.terminating;
  if (a.pod.createdAt !== b.pod.createdAt && a.pod.createdAt !== '' && b.pod.createdAt !== '') {
    return a.pod.createdAt > b.pod.createdAt;
  }
  return a.seq > b.seq;
}

function sameLabel(a: PodIdentity | undefined, b: PodIdentity | undefined): boolean {
  if (a === undefined || b === undefined) return a === b;
  return (
    a.uid === b.uid &&
    a.name === b.name &&
    a.namespace === b.namespace &&
    a.workload?.kind === b.workload?.kind &&
    a.workload?.name === b.workload?.name
  );
}

// ---------------------------------------------------------------------------
// Sources and the kubelet-first / API-server-fallback switch

/** What a source reports. Sources never throw into the sink's caller and vice versa. */
export interface PodSink {
  /** A complete list of this node's pods. */
  snapshot(pods: readonly PodIdentity[]): void;
  upsert(pod: PodIdentity): void;
  remove(uid: string): void;
  removeByName(namespace: string, name: string): void;
  /** The source could not reach its server (it retries on its own with backoff). */
  failed(reason: string): void;
}

export interface PodSource {
  readonly name: string;
  start(sink: PodSink): void;
  stop(): Promise<void>;
}

export interface PodSourceSwitchOptions {
  cache: PodCache;
  /** Tried first (the kubelet); null when only the fallback is configured. */
  primary: PodSource | null;
  /** Runs while the primary fails (the API server); null for none. */
  fallback: PodSource | null;
  log: Logger;
  /** Consecutive primary failures before the fallback starts, once the primary has worked. */
  failuresBeforeFallback?: number;
  /** Consecutive primary successes before the fallback is stopped again. */
  successesBeforeReturn?: number;
}

/**
 * Feeds the cache from exactly one source at a time, so two views of the node never fight:
 * the primary (kubelet) while it answers, the fallback (API server) while it does not. The
 * primary keeps polling in the background and takes over again after a run of successes.
 * Before the primary has ever answered, one failure is enough to start the fallback.
 */
export class PodSourceSwitch {
  private readonly o: Required<PodSourceSwitchOptions>;
  private active: 'primary' | 'fallback' | 'none' = 'none';
  private primaryEverOk = false;
  private primaryFailures = 0;
  private primarySuccesses = 0;
  private fallbackGen = 0;
  private stopped = false;

  constructor(options: PodSourceSwitchOptions) {
    this.o = { failuresBeforeFallback: 2, successesBeforeReturn: 3, ...options };
  }

  /** Which source currently feeds the cache. */
  get activeSource(): string {
    if (this.active === 'primary') return this.o.primary?.name ?? 'none';
    if (this.active === 'fallback') return this.o.fallback?.name ?? 'none';
    return 'none';
  }

  start(): void {
    if (this.o.primary !== null) {
      this.active = 'primary';
      this.o.primary.start(this.primarySink());
    } else {
      this.startFallback();
    }
  }

  async stop(): Promise<void> {
    this.stopped = true;
    this.fallbackGen++;
    await Promise.all([this.o.primary?.stop(), this.o.fallback?.stop()]);
  }

  private primarySink(): PodSink {
    const applies = (): boolean => this.active === 'primary' && !this.stopped;
    return {
      snapshot: (pods) => {
        this.primaryEverOk = true;
        this.primaryFailures = 0;
        this.primarySuccesses++;
        if (this.active === 'fallback' && this.primarySuccesses >= this.o.successesBeforeReturn) {
          this.o.log.info('pod metadata: kubelet answers again, leaving the API server', {
            primary: this.o.primary?.name,
            fallback: this.o.fallback?.name,
          });
          this.stopFallback();
          this.active = 'primary';
        }
        if (applies()) this.o.cache.replaceAll(pods);
      },
      upsert: (pod) => {
        if (applies()) this.o.cache.upsert(pod);
      },
      remove: (uid) => {
        if (applies()) this.o.cache.remove(uid);
      },
      removeByName: (ns, name) => {
        if (applies()) this.o.cache.removeByName(ns, name);
      },
      failed: (reason) => {
        this.primarySuccesses = 0;
        this.primaryFailures++;
        const threshold = this.primaryEverOk ? this.o.failuresBeforeFallback : 1;
        if (this.active === 'primary' && this.o.fallback !== null) {
          if (this.primaryFailures >= threshold) {
            this.o.log.warn('pod metadata: kubelet failing, falling back to the API server', {
              primary: this.o.primary?.name,
              fallback: this.o.fallback.name,
              reason,
            });
            this.startFallback();
          }
        }
      },
    };
  }

  private startFallback(): void {
    if (this.o.fallback === null || this.stopped) return;
    this.active = 'fallback';
    const gen = ++this.fallbackGen;
    // A sink bound to this run: events from a stopped run that still trickle in are ignored.
    const applies = (): boolean => gen === this.fallbackGen && this.active === 'fallback';
    this.o.fallback.start({
      snapshot: (pods) => {
        if (applies()) this.o.cache.replaceAll(pods);
      },
      upsert: (pod) => {
        if (applies()) this.o.cache.upsert(pod);
      },
      remove: (uid) => {
        if (applies()) this.o.cache.remove(uid);
      },
      removeByName: (ns, name) => {
        if (applies()) this.o.cache.removeByName(ns, name);
      },
      failed: () => {
        // The fallback logs and retries itself; the cache keeps the last known pods.
      },
    });
  }

  private stopFallback(): void {
    this.fallbackGen++;
    void this.o.fallback?.stop().catch((err: unknown) => {
      this.o.log.warn('pod metadata: stopping the fallback source failed', { err });
    });
  }
}

// ---------------------------------------------------------------------------
// Shared by the sources

export interface BackoffOptions {
  /** First retry delay. Default 1000. */
  initialMs?: number;
  /** Cap. Default 30000. */
  maxMs?: number;
}

/** Exponential backoff with ±20 % jitter, so agents on every node do not retry in step. */
export class Backoff {
  private readonly initialMs: number;
  private readonly maxMs: number;
  private current = 0;

  constructor(options: BackoffOptions = {}) {
    this.initialMs = options.initialMs ?? 1000;
    this.maxMs = options.maxMs ?? 30_000;
  }

  next(): number {
    this.current = this.current === 0 ? this.initialMs : Math.min(this.current * 2, this.maxMs);
    return Math.round(this.current * (0.8 + Math.random() * 0.4));
  }

  reset(): void {
    this.current = 0;
  }
}

/** A sleep that stop() can cut short. */
export class Sleeper {
  private timer: NodeJS.Timeout | undefined;
  private wake: (() => void) | undefined;

  sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      this.wake = resolve;
      this.timer = setTimeout(resolve, ms);
      this.timer.unref();
    });
  }

  cancel(): void {
    if (this.timer !== undefined) clearTimeout(this.timer);
    this.timer = undefined;
    this.wake?.();
    this.wake = undefined;
  }
}

/** HTTP status of an error from node:https, client-node's Watch or ApiException, if any. */
export function httpStatusOf(err: unknown): number | undefined {
  if (typeof err !== 'object' || err === null) return undefined;
  const e = err as { statusCode?: unknown; code?: unknown };
  if (typeof e.statusCode === 'number') return e.statusCode;
  if (typeof e.code === 'number') return e.code;
  return undefined;
}

/** Short description of an error for a log field (message and system code). */
export function describeError(err: unknown): string {
  if (err instanceof Error) {
    const code = (err as { code?: unknown }).code;
    const cause = err.cause instanceof Error ? `: ${err.cause.message}` : '';
    return `${err.message}${typeof code === 'string' ? ` (${code})` : ''}${cause}`;
  }
  return String(err);
}
