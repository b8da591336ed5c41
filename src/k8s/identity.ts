/**
 * What metrics call an endpoint, and how many different names they may use.
 *
 * PodLabeler turns an IP address (or a pod UID, for the HostPod endpoints of hostNetwork pods
 * found by the sending socket's cgroup, src/k8s/cgroup-ids.ts) into an EndpointLabel: `{name, namespace}` of a pod of this node,
 * `external` (or the IP, K8S_LABEL_EXTERNAL=ip) for anything else, or `other` once
 * MAX_POD_LABEL_VALUES values are in use. Without Kubernetes every endpoint is named by its IP.
 *
 * A label value (a namespace/name pair, or an IP) is *admitted* when first handed out and counts
 * towards the cap until it is *retired*: SERIES_TTL_MS after its pod left the cache (deleted,
 * evicted), after its IP became a known pod, or, for an IP value, after SERIES_TTL_MS without
 * use (watchEndpoints: no record of that address interned, so no sample, transit or signature
 * carried it). Retired values are what the exporters drop (dropSeries) until the meter pipeline
 * has also pruned them from the SDK (forgetRetired). A pod value is never retired while its pod
 * lives, however idle, so its series never flap.
 *
 * Idleness costs the data path nothing: the sweep compares each IP value's endpoint stamp
 * (EndpointTable.lastUsed, kept by intern() anyway) with the one it saw last time, and dates a
 * change by its own clock. The endpoints of a retired IP value are invalidated, so a later use
 * admits the value again (its series restart from zero) instead of recording under a dropped one.
 *
 * Nothing here touches the network: lookups are PodCache Map reads, and the labels are frozen
 * objects shared by every endpoint with the same value (EndpointTable caches them per id).
 */

import type { Attributes } from '@opentelemetry/api';
import type { EndpointLabel, EndpointTable } from '../endpoints.js';
import type { ExternalLabel } from '../config.js';
import type { PodCache, PodIdentity } from './pod-cache.js';
import { parseCgroupPath } from './cgroup.js';
import {
  ATTR_DEST_NAMESPACE,
  ATTR_DEST_POD,
  ATTR_NAMESPACE,
  ATTR_POD,
  ATTR_SOURCE_NAMESPACE,
  ATTR_SOURCE_POD,
} from '../../otel/metric-names.js';

/** Label of an endpoint that is not a known pod (K8S_LABEL_EXTERNAL=external). */
export const LABEL_EXTERNAL = 'external';
/** Label of every endpoint beyond MAX_POD_LABEL_VALUES. */
export const LABEL_OTHER = 'other';

/** Pods always have a namespace: an empty one marks a value that is not a pod. */
export const EXTERNAL: EndpointLabel = Object.freeze({ name: LABEL_EXTERNAL, namespace: '' });
export const OTHER: EndpointLabel = Object.freeze({ name: LABEL_OTHER, namespace: '' });

/** Retired values remembered for the export filter when the SDK cannot be pruned. */
const MAX_REMEMBERED_RETIRED = 65_536;

export interface PodLabelerOptions {
  /** This node's pods; null when Kubernetes is off (endpoints are named by IP). */
  cache: PodCache | null;
  /** K8S_LABEL_EXTERNAL. Default 'external'. */
  external?: ExternalLabel;
  /** MAX_POD_LABEL_VALUES. */
  maxValues: number;
  /** SERIES_TTL_MS. */
  seriesTtlMs: number;
  /** Wall clock in ms (injected in tests). Default Date.now. */
  now?: () => number;
}

export interface PodLabelerStats {
  /** Values admitted now (live, or dead and within the TTL). */
  values: number;
  /** Labels handed out as `other` because the cap was reached. */
  overflows: number;
  /** Values retired so far. */
  retired: number;
  /** Retired values the exporters still filter out (not yet pruned from the SDK). */
  filtered: number;
}

export interface SweepResult {
  /** Values retired since the previous sweep() (by it, or to make room for a new value). */
  retired: number;
  /** True when endpoints labelled `other` should be labelled again (values became free). */
  refold: boolean;
}

interface Admitted {
  readonly label: EndpointLabel;
  /** UID of the pod last seen under this name; '' for an IP value. */
  uid: string;
  /** The IP of an IP value ('' for a pod). */
  readonly ip: string;
  /** When the pod (or the IP's unknown status) went away; undefined while alive. */
  deadSinceMs: number | undefined;
  /** IP value: when the sweep last saw it used; undefined = used since, date it next sweep. */
  lastUsedMs: number | undefined;
  /** IP value: the endpoint's EndpointTable.lastUsed at the last sweep (-1: none seen). */
  useStamp: number;
  /** IP value: its endpoint id (-1: unknown) and that id's generation when it was looked up. */
  endpointId: number;
  endpointGen: number;
}

/** The id of the endpoint at `ip` (found without interning), or -1. */
function lookupIp(endpoints: EndpointTable, ip: string): number {
  try {
    return endpoints.lookup(ip);
  } catch {
    return -1; // not an address: nothing of ours can carry it
  }
}

/**
 * The PodCache.onChange hook of an endpoint table: forgets the labels of the endpoints at `ips`
 * (found without interning), so their next sample is named after the IP's new owner. Returns
 * how many endpoints were known.
 */
export function invalidateIps(endpoints: EndpointTable, ips: readonly string[]): number {
  let n = 0;
  for (const ip of ips) {
    const id = lookupIp(endpoints, ip);
    if (id >= 0) {
      endpoints.invalidate(id);
      n++;
    }
  }
  return n;
}

const keyOf = (namespace: string, name: string): string => `${namespace}/${name}`;

export class PodLabeler {
  private readonly cache: PodCache | null;
  private readonly external: ExternalLabel;
  private readonly maxValues: number;
  private readonly ttlMs: number;
  private readonly now: () => number;
  private readonly admitted = new Map<string, Admitted>();
  /** Retired keys, oldest first: the export filter. */
  private readonly retired = new Set<string>();
  private overflowCount = 0;
  private retiredCount = 0;
  /** Some label was folded into `other` since the last refold. */
  private folded = false;
  /** Retired since the last sweep() result (admit() may retire too): still to be pruned. */
  private unreportedRetired = 0;
  /** Where IP values are used (watchEndpoints); null: IP values never go idle. */
  private endpoints: EndpointTable | null = null;

  constructor(options: PodLabelerOptions) {
    const { maxValues, seriesTtlMs } = options;
    if (!Number.isInteger(maxValues) || maxValues < 1) {
      throw new RangeError(`PodLabeler: maxValues must be a positive integer, got ${maxValues}`);
    }
    if (!(seriesTtlMs >= 0)) {
      throw new RangeError(`PodLabeler: seriesTtlMs must be >= 0, got ${seriesTtlMs}`);
    }
    this.cache = options.cache;
    this.external = options.external ?? 'external';
    this.maxValues = maxValues;
    this.ttlMs = seriesTtlMs;
    this.now = options.now ?? Date.now;
  }

  /**
   * Lets sweep() retire IP values idle for SERIES_TTL_MS: their use is read from `endpoints`
   * (the table this labeler names), whose endpoints are invalidated when their value is retired.
   */
  watchEndpoints(endpoints: EndpointTable): void {
    this.endpoints = endpoints;
  }

  /** The EndpointLabeler of the endpoint table: a pod of this node by IP, else external/IP. */
  labelIp(ip: string): EndpointLabel {
    if (this.cache === null) return this.ipLabel(ip);
    const pod = this.cache.byIp(ip);
    if (pod !== undefined) return this.labelPod(pod);
    return this.external === 'ip' ? this.ipLabel(ip) : EXTERNAL;
  }

  /** A pod's label (admitting its value), or `other` beyond the cap. */
  labelPod(pod: PodIdentity): EndpointLabel {
    const key = keyOf(pod.namespace, pod.name);
    const known = this.admitted.get(key);
    if (known !== undefined) {
      known.uid = pod.uid;
      known.deadSinceMs = undefined;
      return known.label;
    }
    return this.admit(key, { name: pod.name, namespace: pod.namespace }, pod.uid, '');
  }

  /** The pod of a container (hostNetwork attribution by cgroup), or undefined when unknown. */
  labelContainer(containerId: string): EndpointLabel | undefined {
    const pod = this.cache?.byContainerId(containerId);
    return pod === undefined ? undefined : this.labelPod(pod);
  }

  /** The pod with this UID, or undefined when unknown. */
  labelPodUid(uid: string): EndpointLabel | undefined {
    const pod = this.cache?.byUid(uid);
    return pod === undefined ? undefined : this.labelPod(pod);
  }

  /**
   * The HostPodLabeler of the endpoint table: a hostNetwork pod's endpoint by its UID. A pod no
   * longer in the cache is not a known pod: `external`, as an unknown IP would be.
   */
  labelHostPod(uid: string): EndpointLabel {
    return this.labelPodUid(uid) ?? EXTERNAL;
  }

  /** The pod a cgroup path names (container ID first, then pod UID), or undefined. */
  labelCgroupPath(path: string): EndpointLabel | undefined {
    const parsed = parseCgroupPath(path);
    if (parsed === undefined) return undefined;
    if (parsed.containerId !== undefined) {
      const byContainer = this.labelContainer(parsed.containerId);
      if (byContainer !== undefined) return byContainer;
    }
    return parsed.podUid === undefined ? undefined : this.labelPodUid(parsed.podUid);
  }

  /**
   * Marks values whose pod is gone as dead (and revives those whose pod is back), then retires
   * the ones dead for at least the TTL, and the IP values unused for the TTL (watchEndpoints).
   * Call after pod changes and periodically (cheap: a Map read or two per admitted value).
   */
  sweep(): SweepResult {
    this.retireExpired(true);
    const retired = this.unreportedRetired;
    this.unreportedRetired = 0;
    const refold = retired > 0 && this.folded && this.admitted.size < this.maxValues;
    if (refold) this.folded = false;
    return { retired, refold };
  }

  /** True when a data point carries a retired value: the exporters must not show it. */
  dropSeries(attributes: Attributes): boolean {
    if (this.retired.size === 0) return false;
    return (
      this.isRetired(attributes[ATTR_SOURCE_NAMESPACE], attributes[ATTR_SOURCE_POD]) ||
      this.isRetired(attributes[ATTR_DEST_NAMESPACE], attributes[ATTR_DEST_POD]) ||
      this.isRetired(attributes[ATTR_NAMESPACE], attributes[ATTR_POD])
    );
  }

  /** The SDK no longer holds the retired series: the export filter can forget them. */
  forgetRetired(): void {
    this.retired.clear();
  }

  /** How many values are admitted now. */
  get size(): number {
    return this.admitted.size;
  }

  get stats(): PodLabelerStats {
    return {
      values: this.admitted.size,
      overflows: this.overflowCount,
      retired: this.retiredCount,
      filtered: this.retired.size,
    };
  }

  // ---- internals

  /**
   * Marks dead values, revives those whose pod is back, retires those dead for the TTL and, with
   * `observeUse` (the sweep), the IP values idle for the TTL. admit() leaves idleness to the
   * sweep: it runs between sweeps, when a value's last use is not dated yet.
   */
  private retireExpired(observeUse: boolean): void {
    const now = this.now();
    for (const [key, entry] of this.admitted) {
      if (this.isAlive(entry)) entry.deadSinceMs = undefined;
      else entry.deadSinceMs ??= now;
      const dead = entry.deadSinceMs !== undefined && now - entry.deadSinceMs >= this.ttlMs;
      if (dead || (observeUse && entry.uid === '' && this.isIdle(entry, now))) {
        this.retire(key, entry);
      }
    }
  }

  private retire(key: string, entry: Admitted): void {
    this.admitted.delete(key);
    this.remember(key);
    this.retiredCount++;
    this.unreportedRetired++;
    // The endpoint's cached label is the retired value: its next use must admit it again.
    if (entry.uid === '' && this.endpoints !== null) {
      const id = lookupIp(this.endpoints, entry.ip);
      if (id >= 0) this.endpoints.invalidate(id);
    }
  }

  /** True when an IP value has not been used for the TTL, dating a use seen since last time. */
  private isIdle(entry: Admitted, now: number): boolean {
    if (this.endpoints === null) return false;
    const stamp = this.useStampOf(this.endpoints, entry);
    if (stamp >= 0 && stamp !== entry.useStamp) {
      entry.useStamp = stamp;
      entry.lastUsedMs = now;
    }
    entry.lastUsedMs ??= now;
    return now - entry.lastUsedMs >= this.ttlMs;
  }

  /** The endpoint's last-use stamp, or -1; the id is looked up again only when it may differ. */
  private useStampOf(endpoints: EndpointTable, entry: Admitted): number {
    let id = entry.endpointId;
    // A reclaimed (or relabelled) id moves its generation: find the address again.
    if (id < 0 || endpoints.generation(id) !== entry.endpointGen) {
      id = lookupIp(endpoints, entry.ip);
      entry.endpointId = id;
      entry.endpointGen = id < 0 ? 0 : endpoints.generation(id);
    }
    return id < 0 ? -1 : endpoints.lastUsed(id);
  }

  private ipLabel(ip: string): EndpointLabel {
    const key = keyOf('', ip);
    const known = this.admitted.get(key);
    if (known !== undefined) {
      known.deadSinceMs = undefined;
      // Labels are resolved when a metric is about to carry one: that is a use.
      known.lastUsedMs = undefined;
      return known.label;
    }
    return this.admit(key, { name: ip, namespace: '' }, '', ip);
  }

  private admit(key: string, label: EndpointLabel, uid: string, ip: string): EndpointLabel {
    // Values past their TTL may be waiting for the next sweep: make room from them first.
    if (this.admitted.size >= this.maxValues) this.retireExpired(false);
    if (this.admitted.size >= this.maxValues) {
      this.overflowCount++;
      this.folded = true;
      return OTHER;
    }
    const frozen = Object.freeze({ name: label.name, namespace: label.namespace });
    this.admitted.set(key, {
      label: frozen,
      uid,
      ip,
      deadSinceMs: undefined,
      lastUsedMs: undefined,
      useStamp: -1,
      endpointId: -1,
      endpointGen: 0,
    });
    // A value that comes back (a StatefulSet pod recreated under its name) is exported again.
    this.retired.delete(key);
    return frozen;
  }

  private isAlive(entry: Admitted): boolean {
    if (this.cache === null) return true;
    // An IP value lives while the IP is not (or no longer) a known pod.
    if (entry.uid === '') return this.cache.byIp(entry.ip) === undefined;
    return this.cache.byUid(entry.uid) !== undefined;
  }

  private remember(key: string): void {
    this.retired.delete(key);
    this.retired.add(key);
    if (this.retired.size > MAX_REMEMBERED_RETIRED) {
      const oldest = this.retired.values().next();
      if (oldest.done !== true) this.retired.delete(oldest.value);
    }
  }

  private isRetired(namespace: unknown, name: unknown): boolean {
    if (typeof name !== 'string') return false;
    return this.retired.has(keyOf(typeof namespace === 'string' ? namespace : '', name));
  }
}
