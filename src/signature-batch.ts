/**
 * Decodes batches of packed struct sig_record (bpf/audio_event.h, mirrored by src/abi.ts) as the
 * addon hands them over, interns their endpoints and feeds the correlator.
 *
 * The addon writes records in host byte order, so the fields are read through typed-array views
 * (host order by definition) created once per batch; nothing is allocated per record.
 *
 * hostNetwork attribution: a record carrying a cgroup ID (egress, from the sending socket) whose
 * cgroup belongs to a hostNetwork pod gets that pod's HostPod endpoint as its source instead of
 * the node address it shares with every other hostNetwork process (docs/kubernetes.md). The
 * socket's local (protocol, address, port) is learned from those records (LocalPortTable), and a
 * record addressed to a learned socket gets the pod as its destination: what the pod receives
 * then arrives at the endpoint its departures leave from, so hops through it pair.
 */

import { Direction, SIG_RECORD_SIZE, SigRecordLayout } from './abi.js';
import type { SignatureObserver } from './correlate/correlator.js';
import { AddressFamily, EndpointTable, parseAddress } from './endpoints.js';

const RECORD_WORDS = SIG_RECORD_SIZE / 4;
const LITTLE_ENDIAN = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;
// Word indices within one record.
const W_TS_LO = SigRecordLayout.tsNs / 4 + (LITTLE_ENDIAN ? 0 : 1);
const W_TS_HI = SigRecordLayout.tsNs / 4 + (LITTLE_ENDIAN ? 1 : 0);
const W_SIG_LO = SigRecordLayout.sigLo / 4;
const W_SIG_HI = SigRecordLayout.sigHi / 4;
const W_SADDR = SigRecordLayout.saddr / 4;
const W_DADDR = SigRecordLayout.daddr / 4;
// sport and dport share one word: used whole, as the identity of the port pair.
const W_PORTS = SigRecordLayout.sport / 4;
// Shifts of sport and dport within that word.
const SPORT_SHIFT = LITTLE_ENDIAN ? 0 : 16;
const DPORT_SHIFT = LITTLE_ENDIAN ? 16 : 0;
const W_IFINDEX = SigRecordLayout.ifindex / 4;
const W_CGROUP_LO = SigRecordLayout.cgroupId / 4 + (LITTLE_ENDIAN ? 0 : 1);
const W_CGROUP_HI = SigRecordLayout.cgroupId / 4 + (LITTLE_ENDIAN ? 1 : 0);

/** Records per chunk: pass 1 touches what pass 2 needs; a chunk's lines stay in L1/L2. */
const CHUNK = 64;
const BAD_FAMILY = -2;
/** learnedPod(): no pod owns the port (an endpoint id is >= 0, and -1 is "table full"). */
const NO_POD = -3;

export interface SignatureBatchStats {
  batches: number;
  records: number;
  /** Records dropped: address family neither 4 nor 6. */
  badFamily: number;
  /** Records dropped: the endpoint table was full of active endpoints. */
  endpointsFull: number;
  /** Records whose source became a hostNetwork pod's endpoint (by the sender's cgroup, or at
   *  ingress by a learned local port). */
  hostPodSources: number;
  /** Records whose destination became a hostNetwork pod's endpoint (by a learned local port). */
  hostPodDestinations: number;
  /** Learned local ports displaced while fresh (the table was too small). */
  localPortEvictions: number;
}

/**
 * Names the hostNetwork pod behind a sending socket's cgroup (src/k8s/cgroup-ids.ts). Called for
 * every record with a non-zero cgroup ID, on the hot path: lookups only, no I/O, no allocation.
 */
export interface CgroupSourceResolver {
  /**
   * The HostPod address words (endpoints.ts hostPodAddress, AddressFamily.HostPod) of the
   * hostNetwork pod owning cgroup `(hi << 32) | lo`, or null when it is not one (unknown cgroup,
   * not a container, a pod on the pod network): the record keeps its IP source.
   */
  hostPodAddress(cgroupLo: number, cgroupHi: number): Uint32Array | null;
}

export interface SignatureBatchDecoderOptions {
  /** hostNetwork attribution; null or absent: sources are always the record's address. */
  cgroupSources?: CgroupSourceResolver | null;
  /** Local ports of hostNetwork pods remembered at most (power of two). Default 4096. */
  localPortCapacity?: number;
  /** How long a learned local port names its pod after the pod last sent from it; the agent
   *  passes FLOW_TIMEOUT_MS. Default 30 000 ms. */
  localPortTtlMs?: number;
}

export class SignatureBatchDecoder {
  private readonly endpoints: EndpointTable;
  private readonly observer: SignatureObserver;
  private readonly cgroupSources: CgroupSourceResolver | null;
  private readonly localPorts: LocalPortTable | null;
  /** Copy target for batches whose buffer is not 4-byte aligned (grown on demand, reused). */
  private scratch = new Uint32Array(0);
  private batchCount = 0;
  private recordCount = 0;
  private badFamilyCount = 0;
  private endpointsFullCount = 0;
  private hostPodSourceCount = 0;
  private hostPodDestinationCount = 0;
  /** Endpoint ids of the current chunk: [src, dst] per record (BAD_FAMILY, or -1: none). */
  private readonly ids = new Int32Array(CHUNK * 2);
  /** Sum of the prefetch touches, kept so the loads are never optimised away. */
  private touched = 0;

  constructor(
    endpoints: EndpointTable,
    observer: SignatureObserver,
    options: SignatureBatchDecoderOptions = {},
  ) {
    this.endpoints = endpoints;
    this.observer = observer;
    this.cgroupSources = options.cgroupSources ?? null;
    this.localPorts =
      this.cgroupSources === null
        ? null
        : new LocalPortTable(options.localPortCapacity, options.localPortTtlMs);
  }

  /**
   * Decodes `count` records from `records` (valid only during this call) and feeds each to the
   * observer. Throws RangeError when the buffer is shorter than `count` records.
   */
  decode(records: Uint8Array, count: number): void {
    if (!Number.isInteger(count) || count < 0) {
      throw new RangeError(`SignatureBatchDecoder.decode: bad record count ${count}`);
    }
    if (records.byteLength < count * SIG_RECORD_SIZE) {
      throw new RangeError(
        `SignatureBatchDecoder.decode: ${count} records need ${count * SIG_RECORD_SIZE} bytes, ` +
          `buffer has ${records.byteLength}`,
      );
    }
    this.batchCount++;
    if (count === 0) return;
    const words = this.wordView(records, count);
    const bytes = new Uint8Array(words.buffer, words.byteOffset, count * SIG_RECORD_SIZE);
    for (let start = 0; start < count; start += CHUNK) {
      const end = start + CHUNK < count ? start + CHUNK : count;
      this.internChunk(words, bytes, start, end);
      this.observeChunk(words, bytes, start, end);
    }
    this.recordCount += count;
  }

  /**
   * Pass 1 over a chunk: endpoint ids, and a touch of the correlator table buckets each record
   * will need. The touches are independent loads, so the CPU overlaps their cache misses
   * instead of taking them one after another in pass 2. (An id interned here is used in pass 2
   * of the same chunk: with minIdleNs > 0 no later record of the chunk can reclaim it.)
   */
  private internChunk(words: Uint32Array, bytes: Uint8Array, start: number, end: number): void {
    const observer = this.observer;
    const ids = this.ids;
    let touched = 0;
    let latestNs = 0;
    for (let i = start; i < end; i++) {
      const w = i * RECORD_WORDS;
      const k = (i - start) * 2;
      const family = bytes[i * SIG_RECORD_SIZE + SigRecordLayout.family];
      if (family !== AddressFamily.Inet && family !== AddressFamily.Inet6) {
        ids[k] = BAD_FAMILY;
        continue;
      }
      const tsNs = words[w + W_TS_LO] + words[w + W_TS_HI] * 4294967296;
      if (tsNs > latestNs) latestNs = tsNs;
      const protocol = bytes[i * SIG_RECORD_SIZE + SigRecordLayout.protocol];
      const ingress = bytes[i * SIG_RECORD_SIZE + SigRecordLayout.direction] === Direction.Ingress;
      const src = this.source(family, protocol, ingress, words, w, tsNs);
      const dst = this.destination(family, protocol, words, w, tsNs);
      ids[k] = src;
      ids[k + 1] = dst;
      if (src >= 0 && dst >= 0) {
        touched += observer.prefetch(words[w + W_SIG_HI], words[w + W_SIG_LO], src, dst);
      }
    }
    this.touched = touched + observer.prefetchRemovals(latestNs, end - start);
  }

  /**
   * The source endpoint of the record at word `w`: its hostNetwork pod, else its address. A pod's
   * record teaches the table its local port; a non-pod cgroup sending from a learned port takes
   * the port away from the pod (reused by another process). At ingress (no socket) a source that
   * is a learned local port is the pod's: its own packets seen again on loopback, which must stay
   * the flow its egress sighting started.
   */
  private source(
    family: number,
    protocol: number,
    ingress: boolean,
    words: Uint32Array,
    w: number,
    tsNs: number,
  ): number {
    const resolver = this.cgroupSources;
    const ports = this.localPorts;
    if (resolver !== null && ports !== null) {
      const lo = words[w + W_CGROUP_LO];
      const hi = words[w + W_CGROUP_HI];
      const head = portKeyHead(family, protocol, (words[w + W_PORTS] >>> SPORT_SHIFT) & 0xffff);
      if ((lo | hi) !== 0) {
        const pod = resolver.hostPodAddress(lo, hi);
        if (pod !== null) {
          this.hostPodSourceCount++;
          ports.learn(head, words, w + W_SADDR, lo, hi, tsNs);
          return this.endpoints.intern(AddressFamily.HostPod, pod, 0, tsNs);
        }
        if (!ports.empty) ports.forgetUnlessOwner(head, words, w + W_SADDR, lo, hi);
      } else if (ingress && !ports.empty) {
        const id = this.learnedPod(ports, resolver, head, words, w + W_SADDR, tsNs);
        if (id !== NO_POD) {
          this.hostPodSourceCount++;
          return id;
        }
      }
    }
    return this.endpoints.intern(family, words, w + W_SADDR, tsNs);
  }

  /**
   * The destination endpoint of the record at word `w`: the hostNetwork pod whose socket has
   * that (protocol, address, port) as its local end, else the address. In either direction: on
   * loopback the same packet is seen at egress and at ingress and must stay one flow.
   */
  private destination(
    family: number,
    protocol: number,
    words: Uint32Array,
    w: number,
    tsNs: number,
  ): number {
    const ports = this.localPorts;
    const resolver = this.cgroupSources;
    if (ports !== null && resolver !== null && !ports.empty) {
      const head = portKeyHead(family, protocol, (words[w + W_PORTS] >>> DPORT_SHIFT) & 0xffff);
      const id = this.learnedPod(ports, resolver, head, words, w + W_DADDR, tsNs);
      if (id !== NO_POD) {
        this.hostPodDestinationCount++;
        return id;
      }
    }
    return this.endpoints.intern(family, words, w + W_DADDR, tsNs);
  }

  /** The endpoint id of the pod owning the learned local port, or NO_POD. */
  private learnedPod(
    ports: LocalPortTable,
    resolver: CgroupSourceResolver,
    head: number,
    words: Uint32Array,
    at: number,
    tsNs: number,
  ): number {
    const slot = ports.lookup(head, words, at, tsNs);
    if (slot < 0) return NO_POD;
    // Asked again each time: a pod deleted since stops being named at once.
    const pod = resolver.hostPodAddress(ports.ownerLo(slot), ports.ownerHi(slot));
    if (pod === null) return NO_POD;
    return this.endpoints.intern(AddressFamily.HostPod, pod, 0, tsNs);
  }

  /** Pass 2 over a chunk: one observe() per record with valid endpoints. */
  private observeChunk(words: Uint32Array, bytes: Uint8Array, start: number, end: number): void {
    const observer = this.observer;
    const ids = this.ids;
    for (let i = start; i < end; i++) {
      const w = i * RECORD_WORDS;
      const b = i * SIG_RECORD_SIZE;
      const k = (i - start) * 2;
      const src = ids[k];
      const dst = ids[k + 1];
      if (src < 0 || dst < 0) {
        if (src === BAD_FAMILY) this.badFamilyCount++;
        else this.endpointsFullCount++;
        continue;
      }
      // ifindex is a positive C int, so (ifindex << 1 | direction) fits 32 bits unsigned.
      const point =
        ((words[w + W_IFINDEX] << 1) | (bytes[b + SigRecordLayout.direction] & 1)) >>> 0;
      observer.observe(
        words[w + W_TS_LO] + words[w + W_TS_HI] * 4294967296,
        words[w + W_SIG_HI],
        words[w + W_SIG_LO],
        src,
        dst,
        words[w + W_PORTS],
        bytes[b + SigRecordLayout.protocol],
        point,
      );
    }
  }

  /** Sum of the values touched by prefetching (meaningless; reading it keeps the loads). */
  get prefetchChecksum(): number {
    return this.touched;
  }

  get stats(): SignatureBatchStats {
    return {
      batches: this.batchCount,
      records: this.recordCount,
      badFamily: this.badFamilyCount,
      endpointsFull: this.endpointsFullCount,
      hostPodSources: this.hostPodSourceCount,
      hostPodDestinations: this.hostPodDestinationCount,
      localPortEvictions: this.localPorts?.evictions ?? 0,
    };
  }

  private wordView(records: Uint8Array, count: number): Uint32Array {
    const length = count * RECORD_WORDS;
    if ((records.byteOffset & 3) === 0) {
      return new Uint32Array(records.buffer, records.byteOffset, length);
    }
    if (this.scratch.length < length) this.scratch = new Uint32Array(length);
    new Uint8Array(this.scratch.buffer, 0, count * SIG_RECORD_SIZE).set(
      records.subarray(0, count * SIG_RECORD_SIZE),
    );
    return this.scratch;
  }
}

/** Slots probed from a key's home slot: a lookup costs at most this many compares. */
const PORT_PROBE = 8;
const DEFAULT_LOCAL_PORT_CAPACITY = 4096;
/** FLOW_TIMEOUT_MS's default (src/config.ts). */
const DEFAULT_LOCAL_PORT_TTL_MS = 30_000;
// Words per key: (family << 24 | protocol << 16 | port), then the 4 address words.
const KEY_WORDS = 5;

/**
 * The local (family, protocol, address, port) of hostNetwork pods' sockets, learned from their
 * own egress records (the source of a record whose cgroup ID resolved to a pod), so that audio
 * addressed to such a socket can be given the pod as its destination (docs/kubernetes.md).
 *
 * Open addressing over typed arrays, nothing allocated after construction: a key lives in one
 * of the PORT_PROBE slots from its hash. A slot once used never becomes empty again (a forgotten
 * key keeps its slot with cgroup 0, an expired one stays until reused), so a lookup stops at the
 * first empty slot. Insertion reuses an expired or forgotten slot, else evicts the least recently
 * refreshed key of the window (counted).
 */
export class LocalPortTable {
  private readonly mask: number;
  private readonly ttlNs: number;
  private readonly keys: Uint32Array;
  /** cgroup ID (lo, hi) of the socket's owner; (0, 0): forgotten. */
  private readonly owners: Uint32Array;
  /** Timestamp (ns) of the key's latest egress; 0: never used. */
  private readonly seen: Float64Array;
  private used = 0;
  private evictionCount = 0;

  constructor(capacity = DEFAULT_LOCAL_PORT_CAPACITY, ttlMs = DEFAULT_LOCAL_PORT_TTL_MS) {
    if (!Number.isInteger(capacity) || capacity < PORT_PROBE || (capacity & (capacity - 1)) !== 0) {
      throw new RangeError(`LocalPortTable: capacity ${capacity} is not a power of two >= 8`);
    }
    if (!(ttlMs > 0)) throw new RangeError(`LocalPortTable: bad ttlMs ${ttlMs}`);
    this.mask = capacity - 1;
    this.ttlNs = ttlMs * 1e6;
    this.keys = new Uint32Array(capacity * KEY_WORDS);
    this.owners = new Uint32Array(capacity * 2);
    this.seen = new Float64Array(capacity);
  }

  /** True when nothing was ever learned: the decoder skips lookups entirely. */
  get empty(): boolean {
    return this.used === 0;
  }

  /** Keys displaced by a newer one while still fresh (the table was too small). */
  get evictions(): number {
    return this.evictionCount;
  }

  /**
   * Records that the socket at `(family, protocol, words[at..at+4], port)` sent at `tsNs` from
   * cgroup `(lo, hi)` (non-zero). A key owned by another cgroup is taken over: the port was
   * reused by another process.
   */
  learn(head: number, words: Uint32Array, at: number, lo: number, hi: number, tsNs: number): void {
    const slot = this.find(head, words, at);
    if (slot >= 0) {
      this.owners[slot * 2] = lo;
      this.owners[slot * 2 + 1] = hi;
      if (tsNs > this.seen[slot] || this.impossiblyAhead(this.seen[slot], tsNs)) {
        this.seen[slot] = tsNs > 0 ? tsNs : 1;
      }
      return;
    }
    const home = hashKey(head, words, at);
    const seen = this.seen;
    let free = -1;
    let oldest = -1;
    for (let p = 0; p < PORT_PROBE; p++) {
      const s = (home + p) & this.mask;
      const t = seen[s];
      const stale = tsNs - t > this.ttlNs || this.impossiblyAhead(t, tsNs);
      if (t === 0 || this.owners[s * 2] + this.owners[s * 2 + 1] === 0 || stale) {
        free = s;
        break;
      }
      if (oldest < 0 || t < seen[oldest]) oldest = s;
    }
    if (free < 0) {
      free = oldest;
      this.evictionCount++;
    }
    if (seen[free] === 0) this.used++;
    const k = free * KEY_WORDS;
    const keys = this.keys;
    keys[k] = head;
    keys[k + 1] = words[at];
    keys[k + 2] = words[at + 1];
    keys[k + 3] = words[at + 2];
    keys[k + 4] = words[at + 3];
    this.owners[free * 2] = lo;
    this.owners[free * 2 + 1] = hi;
    seen[free] = tsNs > 0 ? tsNs : 1; // 0 marks a never used slot
  }

  /**
   * The socket at the key was last seen sending from another cgroup that is no pod's (a process
   * of the node reusing the port): forget its owner unless it is `(lo, hi)` itself.
   */
  forgetUnlessOwner(head: number, words: Uint32Array, at: number, lo: number, hi: number): void {
    const slot = this.find(head, words, at);
    if (slot < 0) return;
    if (this.owners[slot * 2] === lo && this.owners[slot * 2 + 1] === hi) return;
    this.owners[slot * 2] = 0;
    this.owners[slot * 2 + 1] = 0;
  }

  /**
   * The slot of the live key (learned within the TTL before `tsNs`, owner not forgotten), or -1.
   * Read the owner with ownerLo/ownerHi.
   */
  lookup(head: number, words: Uint32Array, at: number, tsNs: number): number {
    const slot = this.find(head, words, at);
    if (slot < 0) return -1;
    if (this.owners[slot * 2] + this.owners[slot * 2 + 1] === 0) return -1;
    const seen = this.seen[slot];
    return tsNs - seen > this.ttlNs || this.impossiblyAhead(seen, tsNs) ? -1 : slot;
  }

  /**
   * Records are stamped by one monotonic clock and arrive at most slightly out of order: a key
   * seen more than the TTL after the record at hand was learned from a bogus timestamp, and is
   * stale (else it would name its pod for ever).
   */
  private impossiblyAhead(seenNs: number, tsNs: number): boolean {
    return seenNs - tsNs > this.ttlNs;
  }

  ownerLo(slot: number): number {
    return this.owners[slot * 2];
  }

  ownerHi(slot: number): number {
    return this.owners[slot * 2 + 1];
  }

  /** The slot holding the key (live or not), or -1. */
  private find(head: number, words: Uint32Array, at: number): number {
    const home = hashKey(head, words, at);
    const keys = this.keys;
    const seen = this.seen;
    for (let p = 0; p < PORT_PROBE; p++) {
      const s = (home + p) & this.mask;
      if (seen[s] === 0) return -1;
      const k = s * KEY_WORDS;
      if (
        keys[k] === head &&
        keys[k + 1] === words[at] &&
        keys[k + 2] === words[at + 1] &&
        keys[k + 3] === words[at + 2] &&
        keys[k + 4] === words[at + 3]
      ) {
        return s;
      }
    }
    return -1;
  }
}

/** The head word of a local port key. */
function portKeyHead(family: number, protocol: number, port: number): number {
  return ((family << 24) | (protocol << 16) | port) >>> 0;
}

function hashKey(head: number, words: Uint32Array, at: number): number {
  let h = Math.imul(head ^ 0x9e3779b9, 0x85ebca6b);
  h = Math.imul(h ^ words[at], 0xc2b2ae35);
  h = Math.imul(h ^ words[at + 1], 0x85ebca6b);
  h = Math.imul(h ^ words[at + 2], 0xc2b2ae35);
  h = Math.imul(h ^ words[at + 3], 0x85ebca6b);
  return (h ^ (h >>> 15)) >>> 0;
}

/** The fields of one sig_record, for producing records outside the addon (tests, benches). */
export interface SigRecordFields {
  tsNs: bigint | number;
  sigLo: number;
  sigHi: number;
  saddr: string;
  daddr: string;
  sport: number;
  dport: number;
  ifindex: number;
  direction: number;
  protocol?: number;
  encoding?: number;
  /** The sending socket's cgroup ID (egress); default 0 (none). */
  cgroupId?: bigint | number;
}

/**
 * Writes one record at index `index` of `target` exactly as the addon lays it out (host byte
 * order; both addresses must be of the same family). Allocates: not for the hot path.
 */
export function writeSigRecord(target: Uint8Array, index: number, fields: SigRecordFields): void {
  const at = index * SIG_RECORD_SIZE;
  if (at + SIG_RECORD_SIZE > target.byteLength) {
    throw new RangeError(
      `writeSigRecord: record ${index} does not fit in ${target.byteLength} bytes`,
    );
  }
  const source = parseAddress(fields.saddr);
  const dest = parseAddress(fields.daddr);
  if (source.family !== dest.family) {
    throw new Error(`writeSigRecord: mixed families ${fields.saddr} -> ${fields.daddr}`);
  }
  const view = new DataView(target.buffer, target.byteOffset + at, SIG_RECORD_SIZE);
  const L = SigRecordLayout;
  target.fill(0, at, at + SIG_RECORD_SIZE);
  view.setBigUint64(L.tsNs, BigInt(fields.tsNs), LITTLE_ENDIAN);
  view.setUint32(L.sigLo, fields.sigLo >>> 0, LITTLE_ENDIAN);
  view.setUint32(L.sigHi, fields.sigHi >>> 0, LITTLE_ENDIAN);
  target.set(source.bytes, at + L.saddr);
  target.set(dest.bytes, at + L.daddr);
  view.setUint16(L.sport, fields.sport, LITTLE_ENDIAN);
  view.setUint16(L.dport, fields.dport, LITTLE_ENDIAN);
  view.setUint32(L.ifindex, fields.ifindex, LITTLE_ENDIAN);
  view.setUint8(L.direction, fields.direction);
  view.setUint8(L.family, source.family);
  view.setUint8(L.protocol, fields.protocol ?? 17);
  view.setUint8(L.encoding, fields.encoding ?? 0);
  view.setBigUint64(L.cgroupId, BigInt(fields.cgroupId ?? 0), LITTLE_ENDIAN);
}
