/**
 * hostNetwork attribution by cgroup: cgroup v2 ID -> container -> pod.
 *
 * The classifier records, on egress, the cgroup ID of the sending socket (bpf_skb_cgroup_id).
 * A hostNetwork pod shares the node's address, so that ID is the only thing in a packet that
 * tells its pods apart. CgroupIdentities maps IDs to the container cgroups found by walking the
 * cgroup2 mount (scanContainerCgroups: a cgroup v2 ID is its directory's inode number);
 * HostNetworkSources turns one into the HostPod endpoint address of its pod when the pod cache
 * says the pod is hostNetwork (docs/kubernetes.md, "hostNetwork pods").
 *
 * The hot path (a record per signature window) only reads Maps. An ID it does not know is noted
 * and a rescan is started in the background, at most one per `minRescanIntervalMs`; the record
 * keeps its IP source until the scan has found the cgroup. IDs a scan did not find as
 * containers (the node's own services, the root cgroup) are remembered as such, so they cost a
 * Map read and no rescan, until `expire()` forgets them after `negativeTtlMs`.
 */

import { formatPodUid, hostPodAddress } from '../endpoints.js';
import { type Logger, rateLimited, serializeError } from '../log.js';
import type { CgroupSourceResolver } from '../signature-batch.js';
import {
  type CgroupFs,
  type ContainerCgroup,
  type ContainerIdentity,
  readCgroupMounts,
  scanContainerCgroups,
} from './cgroup.js';
import type { PodCache, PodIdentity } from './pod-cache.js';

/** Lists the container cgroups of the node with their cgroup IDs (one walk of the tree). */
export type CgroupScanner = () => Promise<readonly ContainerCgroup[]>;

export interface CgroupIdentitiesOptions {
  scan: CgroupScanner;
  /** Least time between the starts of two scans. Default 2000 ms. */
  minRescanIntervalMs?: number;
  /** How long an ID a scan did not find stays "not a container". Default 60 000 ms. */
  negativeTtlMs?: number;
  /** Most IDs remembered (containers and not); beyond it the non-containers are forgotten
   *  first. Default 65 536. */
  maxEntries?: number;
  /** Wall clock in ms (tests). Default Date.now. */
  now?: () => number;
  log?: Logger;
}

/** One known cgroup ID. The attribution fields are HostNetworkSources' cache for it. */
export interface CgroupEntry {
  readonly lo: number;
  readonly hi: number;
  /** The container cgroup; null: a scan did not find this ID as a container. */
  readonly cgroup: ContainerCgroup | null;
  /** When the ID was found not to be a container (ms), for negativeTtlMs. */
  readonly since: number;
  /** UID of the pod `address` was made for ('' none yet). */
  podUid: string;
  address: Uint32Array | null;
}

export interface CgroupIdentitiesStats {
  /** Container cgroups known. */
  containers: number;
  /** IDs known not to be containers. */
  notContainers: number;
  /** Scans finished (and failed). */
  scans: number;
  scanFailures: number;
  /** Lookups of an ID not known at all (each notes it for the next scan). */
  misses: number;
  /** IDs waiting for a scan. */
  pending: number;
}

const TWO_32 = 4294967296;
const DEFAULT_MIN_RESCAN_MS = 2000;
const DEFAULT_NEGATIVE_TTL_MS = 60_000;
const DEFAULT_MAX_ENTRIES = 65_536;
/** IDs noted between two scans; more are not noted (the scan runs anyway). */
const MAX_PENDING = 4096;

/** The Map key of an ID. Exact below 2^53 (kernfs IDs are a 32-bit generation over a 32-bit
 *  index: far below); above, distinct IDs may share a key, and the lo/hi check keeps them apart
 *  (one of them is then never cached, a lost attribution, not a wrong one). */
function keyOf(lo: number, hi: number): number {
  return hi * TWO_32 + lo;
}

/** (lo, hi) words of a cgroup ID. */
export function splitCgroupId(id: bigint): { lo: number; hi: number } {
  return { lo: Number(id & 0xffffffffn), hi: Number((id >> 32n) & 0xffffffffn) };
}

export class CgroupIdentities {
  private readonly scanner: CgroupScanner;
  private readonly minRescanMs: number;
  private readonly negativeTtlMs: number;
  private readonly maxEntries: number;
  private readonly now: () => number;
  private readonly log: Logger | undefined;
  private entries = new Map<number, CgroupEntry>();
  private containerCount = 0;
  /** IDs seen since the last scan started, not known yet. */
  private pending = new Map<number, { lo: number; hi: number }>();
  private scanning: Promise<void> | null = null;
  private timer: NodeJS.Timeout | null = null;
  private lastScanStartMs = Number.NEGATIVE_INFINITY;
  private lastExpireMs = 0;
  private scans = 0;
  private scanFailures = 0;
  private misses = 0;
  private stopped = false;

  constructor(options: CgroupIdentitiesOptions) {
    this.scanner = options.scan;
    this.minRescanMs = options.minRescanIntervalMs ?? DEFAULT_MIN_RESCAN_MS;
    this.negativeTtlMs = options.negativeTtlMs ?? DEFAULT_NEGATIVE_TTL_MS;
    this.maxEntries = options.maxEntries ?? DEFAULT_MAX_ENTRIES;
    this.now = options.now ?? Date.now;
    this.log = options.log;
    if (!(this.minRescanMs >= 0) || !(this.negativeTtlMs >= 0)) {
      throw new RangeError(
        `CgroupIdentities: intervals must be >= 0 (minRescanIntervalMs ${this.minRescanMs}, negativeTtlMs ${this.negativeTtlMs})`,
      );
    }
    if (!Number.isInteger(this.maxEntries) || this.maxEntries < 1) {
      throw new RangeError(`CgroupIdentities: maxEntries must be a positive integer`);
    }
  }

  /**
   * Hot path: the entry of cgroup `(hi << 32) | lo` (a container's, or a known non-container's
   * with `cgroup` null), or undefined when unknown, in which case a background rescan is due.
   */
  lookup(lo: number, hi: number): CgroupEntry | undefined {
    const key = keyOf(lo, hi);
    const e = this.entries.get(key);
    if (e !== undefined && e.lo === lo && e.hi === hi) return e;
    this.miss(key, lo, hi);
    return undefined;
  }

  /** The container of a cgroup ID, without noting a miss (tests, tools). */
  peek(id: bigint): ContainerCgroup | undefined {
    const { lo, hi } = splitCgroupId(id);
    const e = this.entries.get(keyOf(lo, hi));
    return e !== undefined && e.lo === lo && e.hi === hi ? (e.cgroup ?? undefined) : undefined;
  }

  /** Scans now (or joins the scan running), ignoring the rate limit: start-up, tests. */
  scanNow(): Promise<void> {
    if (this.scanning !== null) return this.scanning;
    return this.startScan();
  }

  /**
   * Forgets non-container IDs older than negativeTtlMs (give or take a quarter of it: the Map is
   * walked at most that often). Call periodically; between walks it is one comparison.
   */
  expire(nowMs: number = this.now()): void {
    if (nowMs - this.lastExpireMs < this.negativeTtlMs / 4) return;
    this.lastExpireMs = nowMs;
    for (const [key, e] of this.entries) {
      if (e.cgroup === null && nowMs - e.since >= this.negativeTtlMs) this.entries.delete(key);
    }
  }

  /** Stops background scans (a running one finishes; its result is still applied). */
  stop(): void {
    this.stopped = true;
    if (this.timer !== null) clearTimeout(this.timer);
    this.timer = null;
  }

  get stats(): CgroupIdentitiesStats {
    return {
      containers: this.containerCount,
      notContainers: this.entries.size - this.containerCount,
      scans: this.scans,
      scanFailures: this.scanFailures,
      misses: this.misses,
      pending: this.pending.size,
    };
  }

  // ---- internals

  private miss(key: number, lo: number, hi: number): void {
    this.misses++;
    if (this.pending.size < MAX_PENDING) this.pending.set(key, { lo, hi });
    this.requestScan();
  }

  /** Starts a scan now, or arms one timer for when the rate limit allows it. */
  private requestScan(): void {
    if (this.stopped || this.scanning !== null || this.timer !== null) return;
    const wait = this.lastScanStartMs + this.minRescanMs - this.now();
    if (wait <= 0) {
      void this.startScan();
      return;
    }
    this.timer = setTimeout(() => {
      this.timer = null;
      if (!this.stopped && this.scanning === null && this.pending.size > 0) void this.startScan();
    }, wait);
    this.timer.unref();
  }

  private startScan(): Promise<void> {
    this.lastScanStartMs = this.now();
    const asked = this.pending;
    this.pending = new Map();
    const run = this.scanner()
      .then((found) => this.apply(found, asked))
      .catch((err: unknown) => {
        this.scanFailures++;
        // The IDs stay unknown: asked again by their next record.
        if (this.log !== undefined) {
          rateLimited(this.log, 'cgroup-scan', 60_000).warn(
            'cgroup scan failed: hostNetwork pods are attributed to the node address until it works',
            { error: serializeError(err) },
          );
        }
      })
      .finally(() => {
        this.scans++;
        this.scanning = null;
        // IDs found meanwhile need no further scan; the others do (rate limited).
        for (const [key, id] of this.pending) {
          const e = this.entries.get(key);
          if (e !== undefined && e.lo === id.lo && e.hi === id.hi) this.pending.delete(key);
        }
        if (this.pending.size > 0) this.requestScan();
      });
    this.scanning = run;
    return run;
  }

  /** Installs a scan's containers; the IDs asked for and not found become non-containers. */
  private apply(
    found: readonly ContainerCgroup[],
    asked: ReadonlyMap<number, { lo: number; hi: number }>,
  ): void {
    const next = new Map<number, CgroupEntry>();
    let containers = 0;
    for (const c of found) {
      if (containers >= this.maxEntries) break;
      const { lo, hi } = splitCgroupId(c.cgroupId);
      const key = keyOf(lo, hi);
      const old = this.entries.get(key);
      // Keep the attribution cache of a container already known.
      const keep = old !== undefined && old.cgroup !== null && old.cgroup.path === c.path;
      next.set(key, {
        lo,
        hi,
        cgroup: c,
        since: 0,
        podUid: keep ? old.podUid : '',
        address: keep ? old.address : null,
      });
      containers++;
    }
    const now = this.now();
    // Known non-containers stay (their TTL runs on), then the newly asked ones, within the cap.
    for (const [key, e] of this.entries) {
      if (e.cgroup === null && !next.has(key) && next.size < this.maxEntries) next.set(key, e);
    }
    for (const [key, id] of asked) {
      if (next.has(key) || next.size >= this.maxEntries) continue;
      next.set(key, { lo: id.lo, hi: id.hi, cgroup: null, since: now, podUid: '', address: null });
    }
    this.entries = next;
    this.containerCount = containers;
    this.log?.debug('cgroup scan', { containers, not_containers: next.size - containers });
  }
}

export interface CgroupScannerOptions {
  fs?: CgroupFs;
  /** Where the proc filesystem is mounted (`/host/proc`). Default `/proc`. */
  procRoot?: string;
  log?: Logger;
}

/**
 * The production scanner: finds the cgroup2 mount in the agent's own mountinfo on every scan
 * (never assumes /sys/fs/cgroup; on a hybrid host it is e.g. /sys/fs/cgroup/unified, in a pod
 * the host's tree mounted from a hostPath), then walks it. No cgroup2 mount: an empty list and
 * one warning.
 */
export function cgroupScanner(options: CgroupScannerOptions = {}): CgroupScanner {
  let warned = false;
  return async () => {
    const mounts = await readCgroupMounts('self', { fs: options.fs, procRoot: options.procRoot });
    const mount = mounts?.unified;
    if (mount === undefined) {
      if (!warned && options.log !== undefined) {
        warned = true;
        options.log.warn(
          'no cgroup2 mount in /proc/self/mountinfo: hostNetwork pods are attributed to the node address',
        );
      }
      return [];
    }
    return scanContainerCgroups(mount, { fs: options.fs });
  };
}

/** The pod of a container cgroup: by container ID, else by the pod UID in its path. */
function podOf(pods: PodCache, identity: ContainerIdentity): PodIdentity | undefined {
  const byContainer =
    identity.containerId !== undefined ? pods.byContainerId(identity.containerId) : undefined;
  if (byContainer !== undefined) return byContainer;
  return identity.podUid !== undefined ? pods.byUid(identity.podUid) : undefined;
}

export interface HostNetworkSourcesStats {
  /** HostPod addresses handed out, for records of a hostNetwork pod's cgroup. */
  attributed: number;
  /** Records of a known container whose pod is not (yet) in the pod cache. */
  unknownPod: number;
}

/**
 * The decoder's CgroupSourceResolver: a cgroup ID -> the HostPod address of its pod when that pod
 * is hostNetwork. Pod-network pods are left alone (their address already names them), and so is
 * everything the pod cache does not know yet: it is upgraded with the cache.
 */
export class HostNetworkSources implements CgroupSourceResolver {
  private readonly ids: CgroupIdentities;
  private readonly pods: PodCache;
  /** HostPod address text -> pod UID, for labels (a UID that is no UUID is hashed). */
  private readonly uidByAddress = new Map<string, string>();
  private attributed = 0;
  private unknownPod = 0;

  constructor(ids: CgroupIdentities, pods: PodCache) {
    this.ids = ids;
    this.pods = pods;
  }

  hostPodAddress(cgroupLo: number, cgroupHi: number): Uint32Array | null {
    const entry = this.ids.lookup(cgroupLo, cgroupHi);
    if (entry === undefined || entry.cgroup === null) return null;
    const pod = podOf(this.pods, entry.cgroup.identity);
    if (pod === undefined) {
      this.unknownPod++;
      return null;
    }
    if (!pod.hostNetwork) return null;
    if (entry.podUid !== pod.uid || entry.address === null) {
      entry.address = hostPodAddress(pod.uid);
      entry.podUid = pod.uid;
      this.remember(entry.address, pod.uid);
    }
    this.attributed++;
    return entry.address;
  }

  /** The pod UID behind a HostPod endpoint's address text (EndpointTable.address). */
  podUidOf(address: string): string {
    return this.uidByAddress.get(address) ?? address;
  }

  get stats(): HostNetworkSourcesStats {
    return { attributed: this.attributed, unknownPod: this.unknownPod };
  }

  private remember(words: Uint32Array, uid: string): void {
    const text = formatPodUid(new Uint8Array(words.buffer, words.byteOffset, 16), 0);
    if (text === uid) return; // the common case: the address text is the UID
    if (this.uidByAddress.size >= DEFAULT_MAX_ENTRIES) this.uidByAddress.clear();
    this.uidByAddress.set(text, uid);
  }
}
