/**
 * Interns IP endpoints (address family + 16 address bytes) into small integer ids, so the
 * correlator can key its tables on numbers, and names each id through an injected resolver.
 *
 * Besides IPv4 and IPv6 there is one synthetic family, AddressFamily.HostPod: a hostNetwork pod
 * found through the sending socket's cgroup (docs/kubernetes.md). Its 16 "address" bytes are the
 * pod's UID, so every container of the pod is one endpoint, and it is named by `podLabeler`.
 *
 * Hot path: `intern()` reads the address as four 32-bit words straight from a batch buffer and
 * allocates nothing when the endpoint is known. Labels are resolved lazily (only when a metric is
 * about to carry one) and cached until `relabel()`/`invalidate()`.
 */

import { isIPv4, isIPv6 } from 'node:net';
import { mix32, nextPowerOfTwo } from './hash-tables.js';

/** Maps an IP address (canonical text form) to the label metrics carry, e.g. a pod name. */
export type EndpointResolver = (ip: string) => string;

/**
 * What metrics call an endpoint: a pod name and its namespace, or for anything that is not a
 * pod a name (its IP, `external`, `other`) with an empty namespace. Labelers should hand out
 * shared frozen objects: they are cached per endpoint and compared by identity.
 */
export interface EndpointLabel {
  readonly name: string;
  readonly namespace: string;
}

/** Maps an IP address (canonical text form) to its label. */
export type EndpointLabeler = (ip: string) => EndpointLabel;

/** Maps the pod UID of a HostPod endpoint (dashed UUID text, see hostPodAddress) to its label. */
export type HostPodLabeler = (podUid: string) => EndpointLabel;

export interface EndpointTableOptions {
  /** Most endpoints held at once; ids are 0 .. capacity-1. */
  capacity: number;
  /** Names an endpoint for metrics. Default: the address itself (a pod is named by its IP). */
  resolver?: EndpointResolver;
  /** Names an endpoint with a namespace; wins over `resolver`. */
  labeler?: EndpointLabeler;
  /** Names a HostPod endpoint. Default: its UID text, no namespace. */
  podLabeler?: HostPodLabeler;
  /**
   * An id is only reclaimed when it has been idle (by event time) for at least this long;
   * otherwise interning a new endpoint into a full table fails (returns -1, counted as
   * `rejected`). Set it to the correlator timeout so no pending occurrence can ever refer to a
   * reclaimed id. Default 0: plain least-recently-used reclaim (recency resolution 100 ms).
   */
  minIdleNs?: number;
}

export interface EndpointTableStats {
  size: number;
  capacity: number;
  /** Ids taken from the least recently used endpoint to make room. */
  reclaimed: number;
  /** Endpoints not interned: table full of endpoints used within minIdleNs. */
  rejected: number;
}

/**
 * Values of a record's family byte, and of an endpoint's. HostPod (128) is never in a record: the
 * decoder gives it to the source of a record sent from a hostNetwork pod's cgroup. 128 is no
 * AF_* value the classifier can write (it writes 4 or 6).
 */
export const AddressFamily = { Inet: 4, Inet6: 6, HostPod: 128 } as const;

const NONE = -1;
/** Recency resolution of the least-recently-used order: reclaim decisions are about endpoints
 * idle for seconds, so a coarse order is enough and most sightings skip the list update. */
const TOUCH_GRANULARITY_NS = 100e6;

/** A string resolver as a labeler: the name only, no namespace. */
function fromResolver(resolver: EndpointResolver): EndpointLabeler {
  return (ip) => ({ name: resolver(ip), namespace: '' });
}

/** Default: an endpoint is named by its address. */
const byAddress: EndpointLabeler = (ip) => ({ name: ip, namespace: '' });

function isEndpointFamily(family: number): boolean {
  return (
    family === AddressFamily.Inet ||
    family === AddressFamily.Inet6 ||
    family === AddressFamily.HostPod
  );
}

function hashAddress(family: number, w0: number, w1: number, w2: number, w3: number): number {
  let h = Math.imul(family ^ w0, 0x9e3779b1);
  h = Math.imul(h ^ w1, 0x85ebca77);
  h = Math.imul(h ^ w2, 0xc2b2ae3d);
  h = Math.imul(h ^ w3, 0x27d4eb2f);
  return mix32(h);
}

export class EndpointTable {
  readonly capacity: number;
  private labeler: EndpointLabeler;
  private podLabeler: HostPodLabeler;
  private readonly minIdleNs: number;
  /** A last use further ahead of the record being interned is impossible (see touch()). */
  private readonly futureSlackNs: number;

  /** Open-addressing index (linear probing): id + 1, 0 = empty. */
  private readonly index: Int32Array;
  private readonly indexMask: number;
  /** Per id: the address as 4 words (host order, as read from the record) and its bytes. */
  private readonly keyWords: Uint32Array;
  private readonly keyBytes: Uint8Array;
  private readonly family: Uint8Array;
  private readonly hashes: Uint32Array;
  /** Per id: least-recently-used list (doubly linked, NONE-terminated) and last use time. */
  private readonly prev: Int32Array;
  private readonly next: Int32Array;
  private readonly lastUsedNs: Float64Array;
  /** Per id: bumped whenever the id's label may have changed (reclaimed, relabelled). */
  private readonly generations: Uint32Array;
  private readonly labels: (EndpointLabel | undefined)[];
  private readonly addresses: (string | undefined)[];

  private lruHead = NONE; // least recently used
  private lruTail = NONE; // most recently used
  private used = 0;
  private reclaimedCount = 0;
  private rejectedCount = 0;

  constructor(options: EndpointTableOptions) {
    const { capacity } = options;
    if (!Number.isInteger(capacity) || capacity < 1 || capacity > 1 << 24) {
      throw new RangeError(
        `EndpointTable: capacity must be an integer in 1..2^24, got ${capacity}`,
      );
    }
    this.capacity = capacity;
    this.labeler =
      options.labeler ??
      (options.resolver !== undefined ? fromResolver(options.resolver) : byAddress);
    this.podLabeler = options.podLabeler ?? byAddress;
    this.minIdleNs = options.minIdleNs ?? 0;
    this.futureSlackNs = Math.max(this.minIdleNs, TOUCH_GRANULARITY_NS);
    const buckets = nextPowerOfTwo(capacity * 2);
    this.index = new Int32Array(buckets);
    this.indexMask = buckets - 1;
    this.keyWords = new Uint32Array(capacity * 4);
    this.keyBytes = new Uint8Array(this.keyWords.buffer);
    this.family = new Uint8Array(capacity);
    this.hashes = new Uint32Array(capacity);
    this.prev = new Int32Array(capacity).fill(NONE);
    this.next = new Int32Array(capacity).fill(NONE);
    this.lastUsedNs = new Float64Array(capacity);
    this.generations = new Uint32Array(capacity);
    this.labels = new Array<EndpointLabel | undefined>(capacity).fill(undefined);
    this.addresses = new Array<string | undefined>(capacity).fill(undefined);
  }

  /**
   * Id of the endpoint whose address is `words[at .. at+4)` (the 16 address bytes as read
   * through a Uint32Array over the record; IPv4 uses the first word, the rest are zero; HostPod:
   * hostPodAddress()). Returns -1 when `family` is not 4, 6 or HostPod, or when the table is
   * full of endpoints used within `minIdleNs`. `nowNs` (event time) orders the
   * least-recently-used reclaim.
   */
  intern(family: number, words: Uint32Array, at: number, nowNs: number): number {
    if (!isEndpointFamily(family)) return NONE;
    const w0 = words[at];
    const w1 = words[at + 1];
    const w2 = words[at + 2];
    const w3 = words[at + 3];
    const hash = hashAddress(family, w0, w1, w2, w3);
    const mask = this.indexMask;
    const keys = this.keyWords;
    let b = hash & mask;
    for (;;) {
      const e = this.index[b];
      if (e === 0) break;
      const id = e - 1;
      const k = id * 4;
      if (
        this.hashes[id] === hash &&
        keys[k] === w0 &&
        keys[k + 1] === w1 &&
        keys[k + 2] === w2 &&
        keys[k + 3] === w3 &&
        this.family[id] === family
      ) {
        this.touch(id, nowNs);
        return id;
      }
      b = (b + 1) & mask;
    }
    return this.insert(family, w0, w1, w2, w3, hash, nowNs);
  }

  /** Interns an address given as text (configuration, tests). Allocates; not for the hot path. */
  internAddress(ip: string, nowNs = 0): number {
    const parsed = parseAddress(ip);
    return this.intern(parsed.family, parsed.words, 0, nowNs);
  }

  /** Canonical text of the address of `id` (dotted quad, RFC 5952 IPv6, or a HostPod's UID). */
  address(id: number): string {
    this.checkId(id, 'address');
    let text = this.addresses[id];
    if (text === undefined) {
      text =
        this.family[id] === AddressFamily.HostPod
          ? formatPodUid(this.keyBytes, id * 16)
          : formatAddress(this.family[id], this.keyBytes, id * 16);
      this.addresses[id] = text;
    }
    return text;
  }

  /** The metrics name of `id` (a pod name, an address, ...): endpointLabel(id).name. */
  label(id: number): string {
    return this.endpointLabel(id).name;
  }

  /**
   * The metrics label of `id`: labeler(address), or podLabeler(uid) for a HostPod endpoint,
   * cached until relabel()/invalidate().
   */
  endpointLabel(id: number): EndpointLabel {
    this.checkId(id, 'label');
    let label = this.labels[id];
    if (label === undefined) {
      const ip = this.address(id);
      try {
        label = this.family[id] === AddressFamily.HostPod ? this.podLabeler(ip) : this.labeler(ip);
      } catch {
        // A failing labeler must not stop the data path: the address names the endpoint.
        label = { name: ip, namespace: '' };
      }
      this.labels[id] = label;
    }
    return label;
  }

  /** The family of `id`: 4, 6 or AddressFamily.HostPod. */
  familyOf(id: number): number {
    this.checkId(id, 'familyOf');
    return this.family[id];
  }

  /**
   * Event time (ns) `id` was last interned, to TOUCH_GRANULARITY_NS: it moves while the endpoint
   * is in use, so a periodic reader can tell use from idleness without a clock read per record.
   */
  lastUsed(id: number): number {
    return this.lastUsedNs[id];
  }

  /** Changes whenever the label of `id` may have changed: compare to drop cached attributes. */
  generation(id: number): number {
    return this.generations[id];
  }

  /**
   * Forgets every cached label (optionally installing a new resolver), e.g. when Kubernetes
   * metadata arrives and IPs can now be named as pods. Labels are re-resolved on next use.
   */
  relabel(resolver?: EndpointResolver): void {
    if (resolver !== undefined) this.labeler = fromResolver(resolver);
    for (let id = 0; id < this.used; id++) this.invalidate(id);
  }

  /** relabel() with a labeler (names with namespaces), and optionally a HostPod labeler. */
  setLabeler(labeler: EndpointLabeler, podLabeler?: HostPodLabeler): void {
    this.labeler = labeler;
    if (podLabeler !== undefined) this.podLabeler = podLabeler;
    for (let id = 0; id < this.used; id++) this.invalidate(id);
  }

  /**
   * Forgets the cached labels for which `matches` is true (e.g. every endpoint folded into
   * `other`, once label values are free again). Returns how many. Walks the table: not for the
   * hot path.
   */
  invalidateWhere(matches: (label: EndpointLabel) => boolean): number {
    let n = 0;
    for (let id = 0; id < this.used; id++) {
      const label = this.labels[id];
      if (label !== undefined && matches(label)) {
        this.invalidate(id);
        n++;
      }
    }
    return n;
  }

  /** Forgets the cached label of one id (its pod changed). */
  invalidate(id: number): void {
    this.checkId(id, 'invalidate');
    this.labels[id] = undefined;
    this.generations[id] = (this.generations[id] + 1) >>> 0;
  }

  /** Id of a known address, or -1. Allocates; not for the hot path. */
  lookup(ip: string): number {
    const parsed = parseAddress(ip);
    return this.lookupWords(parsed.family, parsed.words);
  }

  /** Id of the HostPod endpoint of a pod UID, or -1. Allocates; not for the hot path. */
  lookupHostPod(podUid: string): number {
    return this.lookupWords(AddressFamily.HostPod, hostPodAddress(podUid));
  }

  private lookupWords(family: number, words: Uint32Array): number {
    const hash = hashAddress(family, words[0], words[1], words[2], words[3]);
    const b = this.findBucket(family, words[0], words[1], words[2], words[3], hash);
    return b === NONE ? NONE : this.index[b] - 1;
  }

  get size(): number {
    return this.used;
  }

  get stats(): EndpointTableStats {
    return {
      size: this.used,
      capacity: this.capacity,
      reclaimed: this.reclaimedCount,
      rejected: this.rejectedCount,
    };
  }

  private checkId(id: number, op: string): void {
    if (!Number.isInteger(id) || id < 0 || id >= this.used) {
      throw new RangeError(`EndpointTable.${op}: unknown endpoint id ${id} (size ${this.used})`);
    }
  }

  private insert(
    family: number,
    w0: number,
    w1: number,
    w2: number,
    w3: number,
    hash: number,
    nowNs: number,
  ): number {
    let id: number;
    if (this.used < this.capacity) {
      id = this.used++;
    } else {
      id = this.lruHead;
      const last = this.lastUsedNs[id];
      // lastUsedNs may be up to TOUCH_GRANULARITY_NS old: allow for it, so minIdleNs holds. A
      // last use impossibly far ahead (a bogus timestamp, see touch()) does not protect the id:
      // else that one record would keep every new endpoint out once it reached the head.
      if (
        this.minIdleNs > 0 &&
        last + TOUCH_GRANULARITY_NS > nowNs - this.minIdleNs &&
        last - nowNs <= this.futureSlackNs
      ) {
        this.rejectedCount++;
        return NONE;
      }
      this.removeFromIndex(id);
      this.unlink(id);
      this.labels[id] = undefined;
      this.addresses[id] = undefined;
      this.generations[id] = (this.generations[id] + 1) >>> 0;
      this.reclaimedCount++;
    }
    const k = id * 4;
    this.keyWords[k] = w0;
    this.keyWords[k + 1] = w1;
    this.keyWords[k + 2] = w2;
    this.keyWords[k + 3] = w3;
    this.family[id] = family;
    this.hashes[id] = hash;
    let b = hash & this.indexMask;
    while (this.index[b] !== 0) b = (b + 1) & this.indexMask;
    this.index[b] = id + 1;
    this.lastUsedNs[id] = nowNs;
    this.append(id);
    return id;
  }

  private findBucket(
    family: number,
    w0: number,
    w1: number,
    w2: number,
    w3: number,
    hash: number,
  ): number {
    const mask = this.indexMask;
    let b = hash & mask;
    for (;;) {
      const e = this.index[b];
      if (e === 0) return NONE;
      const id = e - 1;
      const k = id * 4;
      if (
        this.hashes[id] === hash &&
        this.keyWords[k] === w0 &&
        this.keyWords[k + 1] === w1 &&
        this.keyWords[k + 2] === w2 &&
        this.keyWords[k + 3] === w3 &&
        this.family[id] === family
      ) {
        return b;
      }
      b = (b + 1) & mask;
    }
  }

  /** Backward-shift deletion keeps linear probing correct without tombstones. */
  private removeFromIndex(id: number): void {
    const k = id * 4;
    const kw = this.keyWords;
    let hole = this.findBucket(
      this.family[id],
      kw[k],
      kw[k + 1],
      kw[k + 2],
      kw[k + 3],
      this.hashes[id],
    );
    if (hole === NONE) throw new Error(`EndpointTable: id ${id} missing from its index`);
    const mask = this.indexMask;
    let j = hole;
    for (;;) {
      j = (j + 1) & mask;
      const e = this.index[j];
      if (e === 0) break;
      const home = this.hashes[e - 1] & mask;
      // The entry at j may fill the hole unless its home lies cyclically in (hole, j].
      const stays = hole < j ? home > hole && home <= j : home > hole || home <= j;
      if (!stays) {
        this.index[hole] = e;
        hole = j;
      }
    }
    this.index[hole] = 0;
  }

  /**
   * Marks `id` used. Recency is kept to TOUCH_GRANULARITY_NS: an endpoint seen on every packet
   * costs one comparison, not a list update, per sighting.
   */
  private touch(id: number, nowNs: number): void {
    const idle = nowNs - this.lastUsedNs[id];
    // Records are stamped by one monotonic clock and arrive at most slightly out of order: a
    // last use further ahead than futureSlackNs came from a bogus timestamp and is replaced.
    if (idle < TOUCH_GRANULARITY_NS && idle >= -this.futureSlackNs) return;
    this.lastUsedNs[id] = nowNs;
    if (id === this.lruTail) return;
    this.unlink(id);
    this.append(id);
  }

  private unlink(id: number): void {
    const p = this.prev[id];
    const n = this.next[id];
    if (p === NONE) this.lruHead = n;
    else this.next[p] = n;
    if (n === NONE) this.lruTail = p;
    else this.prev[n] = p;
    this.prev[id] = NONE;
    this.next[id] = NONE;
  }

  private append(id: number): void {
    this.prev[id] = this.lruTail;
    this.next[id] = NONE;
    if (this.lruTail === NONE) this.lruHead = id;
    else this.next[this.lruTail] = id;
    this.lruTail = id;
  }
}

/** An address in the record's layout: family and 16 bytes (as 4 host-order words). */
export interface ParsedAddress {
  family: number;
  words: Uint32Array;
  bytes: Uint8Array;
}

/** Parses IPv4/IPv6 text into the record layout. Throws on anything else. */
export function parseAddress(ip: string): ParsedAddress {
  const words = new Uint32Array(4);
  const bytes = new Uint8Array(words.buffer);
  if (isIPv4(ip)) {
    writeIPv4(ip, bytes, 0);
    return { family: AddressFamily.Inet, words, bytes };
  }
  if (!isIPv6(ip)) throw new Error(`parseAddress: not an IP address: ${JSON.stringify(ip)}`);
  let text = ip;
  const zone = text.indexOf('%');
  if (zone >= 0) text = text.slice(0, zone);
  const groups: number[] = [];
  const tail: number[] = [];
  const halves = text.split('::');
  const parseGroups = (part: string, out: number[]): void => {
    if (part === '') return;
    for (const g of part.split(':')) {
      if (g.includes('.')) {
        const v4 = new Uint8Array(4);
        writeIPv4(g, v4, 0);
        out.push((v4[0] << 8) | v4[1], (v4[2] << 8) | v4[3]);
      } else {
        out.push(parseInt(g, 16));
      }
    }
  };
  parseGroups(halves[0], groups);
  if (halves.length === 2) parseGroups(halves[1], tail);
  const zeros = 8 - groups.length - tail.length;
  const all = [...groups, ...new Array<number>(halves.length === 2 ? zeros : 0).fill(0), ...tail];
  for (let i = 0; i < 8; i++) {
    bytes[i * 2] = all[i] >>> 8;
    bytes[i * 2 + 1] = all[i] & 0xff;
  }
  return { family: AddressFamily.Inet6, words, bytes };
}

const HEX32 = /^[0-9a-f]{32}$/;

/**
 * The 16 address bytes (as 4 host-order words, the layout intern() reads) of the HostPod endpoint
 * of a pod: the pod UID's 128 bits (a UUID, or the 32-hex config hash of a static pod), so
 * distinct pods never share an endpoint. A UID of any other shape (not from a real API server)
 * is hashed into the 16 bytes instead. Allocates: call once per pod, not per record.
 */
export function hostPodAddress(podUid: string): Uint32Array {
  const words = new Uint32Array(4);
  const bytes = new Uint8Array(words.buffer);
  const hex = podUid.toLowerCase().replace(/-/g, '');
  if (HEX32.test(hex)) {
    for (let i = 0; i < 16; i++) bytes[i] = parseInt(hex.slice(i * 2, i * 2 + 2), 16);
    return words;
  }
  let h = 0x811c9dc5;
  for (let i = 0; i < podUid.length; i++) h = Math.imul(h ^ podUid.charCodeAt(i), 0x01000193);
  for (let i = 0; i < 4; i++) {
    h = mix32(h + i + 1);
    words[i] = h;
  }
  return words;
}

/** A HostPod endpoint's bytes as a dashed UUID (8-4-4-4-12 lower-case hex). */
export function formatPodUid(bytes: Uint8Array, at: number): string {
  let hex = '';
  for (let i = 0; i < 16; i++) hex += bytes[at + i].toString(16).padStart(2, '0');
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}

function writeIPv4(ip: string, out: Uint8Array, at: number): void {
  const parts = ip.split('.');
  for (let i = 0; i < 4; i++) out[at + i] = Number(parts[i]);
}

/** Dotted quad, or RFC 5952 IPv6 (longest zero run as '::', IPv4-mapped as ::ffff:a.b.c.d). */
export function formatAddress(family: number, bytes: Uint8Array, at: number): string {
  if (family === AddressFamily.Inet) {
    return `${bytes[at]}.${bytes[at + 1]}.${bytes[at + 2]}.${bytes[at + 3]}`;
  }
  const groups: number[] = [];
  for (let i = 0; i < 8; i++) groups.push((bytes[at + i * 2] << 8) | bytes[at + i * 2 + 1]);
  const mapped = groups.slice(0, 5).every((g) => g === 0) && groups[5] === 0xffff;
  if (mapped) {
    return `::ffff:${bytes[at + 12]}.${bytes[at + 13]}.${bytes[at + 14]}.${bytes[at + 15]}`;
  }
  let bestStart = -1;
  let bestLen = 0;
  for (let i = 0; i < 8; ) {
    if (groups[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && groups[j] === 0) j++;
    if (j - i > bestLen) {
      bestStart = i;
      bestLen = j - i;
    }
    i = j;
  }
  const hex = groups.map((g) => g.toString(16));
  if (bestLen < 2) return hex.join(':');
  const head = hex.slice(0, bestStart).join(':');
  const tail = hex.slice(bestStart + bestLen).join(':');
  return `${head}::${tail}`;
}
