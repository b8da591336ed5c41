/**
 * Decodes batches of packed struct sig_record (bpf/audio_event.h, mirrored by src/abi.ts) as the
 * addon hands them over, interns their endpoints and feeds the correlator.
 *
 * The addon writes records in host byte order, so the fields are read through typed-array views
 * (host order by definition) created once per batch; nothing is allocated per record.
 *
 * hostNetwork attribution: a record carrying a cgroup ID (egress, from the sending socket) whose
 * cgroup belongs to a hostNetwork pod gets that pod's HostPod endpoint as its source instead of
 * the node address it shares with every other hostNetwork process (docs/kubernetes.md).
 */

import { SIG_RECORD_SIZE, SigRecordLayout } from './abi.js';
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
const W_IFINDEX = SigRecordLayout.ifindex / 4;
const W_CGROUP_LO = SigRecordLayout.cgroupId / 4 + (LITTLE_ENDIAN ? 0 : 1);
const W_CGROUP_HI = SigRecordLayout.cgroupId / 4 + (LITTLE_ENDIAN ? 1 : 0);

/** Records per chunk: pass 1 touches what pass 2 needs; a chunk's lines stay in L1/L2. */
const CHUNK = 64;
const BAD_FAMILY = -2;

export interface SignatureBatchStats {
  batches: number;
  records: number;
  /** Records dropped: address family neither 4 nor 6. */
  badFamily: number;
  /** Records dropped: the endpoint table was full of active endpoints. */
  endpointsFull: number;
  /** Records whose source became a hostNetwork pod's endpoint (by the sender's cgroup). */
  hostPodSources: number;
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
}

export class SignatureBatchDecoder {
  private readonly endpoints: EndpointTable;
  private readonly observer: SignatureObserver;
  private readonly cgroupSources: CgroupSourceResolver | null;
  /** Copy target for batches whose buffer is not 4-byte aligned (grown on demand, reused). */
  private scratch = new Uint32Array(0);
  private batchCount = 0;
  private recordCount = 0;
  private badFamilyCount = 0;
  private endpointsFullCount = 0;
  private hostPodSourceCount = 0;
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
    const endpoints = this.endpoints;
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
      const src = this.source(family, words, w, tsNs);
      const dst = endpoints.intern(family, words, w + W_DADDR, tsNs);
      ids[k] = src;
      ids[k + 1] = dst;
      if (src >= 0 && dst >= 0) {
        touched += observer.prefetch(words[w + W_SIG_HI], words[w + W_SIG_LO], src, dst);
      }
    }
    this.touched = touched + observer.prefetchRemovals(latestNs, end - start);
  }

  /** The source endpoint of the record at word `w`: its hostNetwork pod, else its address. */
  private source(family: number, words: Uint32Array, w: number, tsNs: number): number {
    const resolver = this.cgroupSources;
    if (resolver !== null) {
      const lo = words[w + W_CGROUP_LO];
      const hi = words[w + W_CGROUP_HI];
      if ((lo | hi) !== 0) {
        const pod = resolver.hostPodAddress(lo, hi);
        if (pod !== null) {
          this.hostPodSourceCount++;
          return this.endpoints.intern(AddressFamily.HostPod, pod, 0, tsNs);
        }
      }
    }
    return this.endpoints.intern(family, words, w + W_SADDR, tsNs);
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
