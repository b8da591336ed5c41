/**
 * The correlator: turns signature sightings into transit and hop latencies.
 * Semantics are specified in docs/correlation.md; this file implements them.
 *
 * Hot path (`observe`) allocates nothing: occurrences live in one ring of fixed 64-byte slots
 * (a typed array), indexed by one open-addressing hash table keyed by (signature, dest
 * endpoint) whose entry is the chain, oldest first, of the occurrences of that signature
 * arriving at that endpoint. The same chain answers both questions the correlator asks:
 *   - is this sighting part of an occurrence already seen on this flow? (its newest member on
 *     the same flow: all members share signature and destination)
 *   - which arrivals at pod X can a departure from X pair with? (the chain of (signature, X))
 * One table means one cache miss per lookup, insertion and removal. The ring is FIFO: eviction
 * and expiry remove the oldest occurrence, which is always the head of its chain, so removal
 * never searches a chain.
 */

import { mix32, nextPowerOfTwo } from '../hash-tables.js';

/** Where the correlator reports what it found. Endpoint ids come from EndpointTable. */
export interface CorrelatorSink {
  /** A hop: audio from `source` entered `dest` and left it `seconds` later. */
  hop(
    source: number,
    dest: number,
    seconds: number,
    tsNs: number,
    sigHi: number,
    sigLo: number,
  ): void;
  /** A transit: one occurrence on flow source -> dest seen at a second observation point. */
  transit(source: number, dest: number, seconds: number): void;
  /** A new occurrence sent by `sender`. */
  signature(sender: number): void;
  /** A departure whose candidate arrivals came from two or more sources: no hop recorded. */
  collision(): void;
}

/** Consumes decoded signature records (the correlator, or a test double). */
export interface SignatureObserver {
  /**
   * One signature record. `ports` is an opaque 32-bit identity of (sport, dport); `point` the
   * observation point `(ifindex << 1 | direction) >>> 0`.
   */
  observe(
    tsNs: number,
    sigHi: number,
    sigLo: number,
    src: number,
    dst: number,
    ports: number,
    protocol: number,
    point: number,
  ): void;
  /**
   * Touches the memory observe() will need for this record, ahead of time (a software
   * prefetch). Returns a value only so the loads are not optimised away.
   */
  prefetch(sigHi: number, sigLo: number, src: number, dst: number): number;
  /**
   * Touches the memory that removing the oldest state will need while records up to `untilNs`
   * are observed, at most `max` occurrences ahead. Returns a value only to keep the loads.
   */
  prefetchRemovals(untilNs: number, max: number): number;
}

export interface CorrelatorOptions {
  /** FLOW_TIMEOUT_MS: the longest an occurrence waits for a partner sighting. */
  timeoutMs: number;
  /** MAX_PENDING_SIGNATURES: occurrences held at most; the oldest is evicted when full. */
  maxPending: number;
  /** Arrivals of one signature at one endpoint kept as hop candidates (default 64). */
  maxCandidates?: number;
  /**
   * Consistent sampling: keep a signature iff sigLo < sampleRate * 2^32 (default 1 = all).
   * Every observation point keeps the same subset, so sampling never breaks a pair.
   */
  sampleRate?: number;
}

export interface CorrelatorStats {
  /** Occurrences held now. */
  pending: number;
  /** Occurrences removed because the table was full (oldest first). */
  evictions: number;
  /** Occurrences removed because they were older than the timeout. */
  expired: number;
  hops: number;
  transits: number;
  collisions: number;
  /** New occurrences (what audio_signatures_total counts). */
  occurrences: number;
  /** Records observed (after sampling). */
  sightings: number;
  /** Records dropped by consistent sampling. */
  sampledOut: number;
  /** Arrivals dropped as hop candidates because their (signature, endpoint) had too many. */
  candidatesDropped: number;
}

/** CLOCK_MONOTONIC in ns as a number (same clock as bpf_ktime_get_ns), for `expire()`. */
export function monotonicNowNs(): number {
  const [s, ns] = process.hrtime();
  return s * 1e9 + ns;
}

// Slot layout, in 32-bit words (16 words = 64 bytes per occurrence).
const SLOT_WORDS = 16;
const W_SIG_LO = 4;
const W_SIG_HI = 5;
const W_SRC = 6;
const W_DST = 7;
const W_PORTS = 8;
const W_META = 9;
const W_POINTS = 10; // 4 words
const W_NEXT = 14; // next arrival in chain, slot + 1 (0 = end)
const W_TAIL = 15; // chain tail slot, valid on the chain head
// Float64 layout of the same slot (2 doubles in words 0..3).
const SLOT_DOUBLES = 8;
const D_TS = 0; // first sighting time, ns
const D_CURSOR = 1; // sequence number of the arrival last paired on this flow (-1: none)

// Meta word: protocol, number of observation points remembered, flags, chain length.
const META_PROTO_MASK = 0xff;
const META_POINTS_SHIFT = 8;
const META_POINTS_MASK = 0x7;
const META_LINKED = 1 << 12; // in its arrival chain
const META_LEN_SHIFT = 16; // chain length, valid on the chain head
const MAX_POINTS = 4;
const MAX_CANDIDATES_LIMIT = 0xffff;

const NONE = -1;
const TWO_POW_32 = 4294967296;

function chainHash(sigLo: number, sigHi: number, endpoint: number): number {
  let h = Math.imul(sigLo ^ 0x2545f491, 0x9e3779b1);
  h = Math.imul(h ^ sigHi, 0x85ebca77);
  return mix32(Math.imul(h ^ endpoint, 0xc2b2ae3d));
}

export class Correlator implements SignatureObserver {
  private readonly sink: CorrelatorSink;
  private readonly timeoutNs: number;
  private readonly capacity: number;
  private readonly maxCandidates: number;
  private readonly sampleThreshold: number;

  private readonly words: Uint32Array;
  private readonly doubles: Float64Array;
  /** Open addressing, linear probing: 2 words per bucket, [head slot + 1 (0 = empty), hash]. */
  private readonly table: Uint32Array;
  private readonly tableMask: number;

  private headSlot = 0;
  private headSeq = 0;
  private count = 0;
  private nowNs = -Infinity;
  /** Set by findChain when the key is absent: the empty bucket to insert into. */
  private freeBucket = 0;

  private evictions = 0;
  private expiredCount = 0;
  private hops = 0;
  private transits = 0;
  private collisions = 0;
  private occurrences = 0;
  private sightings = 0;
  private sampledOut = 0;
  private candidatesDropped = 0;

  constructor(sink: CorrelatorSink, options: CorrelatorOptions) {
    const { timeoutMs, maxPending } = options;
    const maxCandidates = options.maxCandidates ?? 64;
    const sampleRate = options.sampleRate ?? 1;
    if (!(timeoutMs > 0) || !Number.isFinite(timeoutMs)) {
      throw new RangeError(`Correlator: timeoutMs must be a positive number, got ${timeoutMs}`);
    }
    if (!Number.isInteger(maxPending) || maxPending < 1 || maxPending > 1 << 26) {
      throw new RangeError(
        `Correlator: maxPending must be an integer in 1..2^26, got ${maxPending}`,
      );
    }
    if (
      !Number.isInteger(maxCandidates) ||
      maxCandidates < 1 ||
      maxCandidates > MAX_CANDIDATES_LIMIT
    ) {
      throw new RangeError(
        `Correlator: maxCandidates must be an integer in 1..${MAX_CANDIDATES_LIMIT}, got ${maxCandidates}`,
      );
    }
    if (!(sampleRate > 0 && sampleRate <= 1)) {
      throw new RangeError(`Correlator: sampleRate must be in (0, 1], got ${sampleRate}`);
    }
    this.sink = sink;
    this.timeoutNs = timeoutMs * 1e6;
    this.capacity = maxPending;
    this.maxCandidates = maxCandidates;
    // 2^32 keeps every signature without a branch on the rate.
    this.sampleThreshold = sampleRate === 1 ? TWO_POW_32 : Math.floor(sampleRate * TWO_POW_32);
    const ring = new ArrayBuffer(maxPending * SLOT_WORDS * 4);
    this.words = new Uint32Array(ring);
    this.doubles = new Float64Array(ring);
    // Load factor at most 1/2: every occurrence heads at most one chain.
    const buckets = nextPowerOfTwo(maxPending * 2);
    this.table = new Uint32Array(buckets * 2);
    this.tableMask = buckets - 1;
  }

  get pending(): number {
    return this.count;
  }

  get stats(): CorrelatorStats {
    return {
      pending: this.count,
      evictions: this.evictions,
      expired: this.expiredCount,
      hops: this.hops,
      transits: this.transits,
      collisions: this.collisions,
      occurrences: this.occurrences,
      sightings: this.sightings,
      sampledOut: this.sampledOut,
      candidatesDropped: this.candidatesDropped,
    };
  }

  observe(
    tsNs: number,
    sigHi: number,
    sigLo: number,
    src: number,
    dst: number,
    ports: number,
    protocol: number,
    point: number,
  ): void {
    if (sigLo >= this.sampleThreshold) {
      this.sampledOut++;
      return;
    }
    this.sightings++;
    if (tsNs > this.nowNs) {
      this.nowNs = tsNs;
      this.expireBefore(tsNs - this.timeoutNs);
    }
    const hash = chainHash(sigLo, sigHi, dst);
    let bucket = this.findChain(hash, sigLo, sigHi, dst);
    let cursor = NONE;
    if (bucket !== NONE) {
      const latest = this.latestOnFlow(this.table[bucket * 2] - 1, src, ports, protocol);
      if (latest !== NONE) {
        const delta = tsNs - this.doubles[latest * SLOT_DOUBLES + D_TS];
        if (delta <= this.timeoutNs && delta >= -this.timeoutNs) {
          if (this.joinSighting(latest, point, delta, src, dst)) return;
        }
        // Resent (or too late to be the same packet): a new occurrence, which continues the
        // pairing of this flow where the previous occurrence left it.
        cursor = this.doubles[latest * SLOT_DOUBLES + D_CURSOR];
      }
    }
    if (this.count === this.capacity) {
      this.evictHead();
      this.evictions++;
      // Eviction may have moved the bucket, or emptied the chain.
      bucket = this.findChain(hash, sigLo, sigHi, dst);
    }
    // Only meaningful when bucket is NONE; read now, before other lookups overwrite it.
    const insertAt = this.freeBucket;
    this.newOccurrence(tsNs, sigHi, sigLo, src, dst, ports, protocol, point, cursor);
    this.linkArrival(hash, bucket, insertAt);
  }

  prefetch(sigHi: number, sigLo: number, src: number, dst: number): number {
    const table = this.table;
    const mask = this.tableMask;
    return (
      table[(chainHash(sigLo, sigHi, dst) & mask) * 2] +
      table[(chainHash(sigLo, sigHi, src) & mask) * 2]
    );
  }

  prefetchRemovals(untilNs: number, max: number): number {
    const w = this.words;
    const d = this.doubles;
    const table = this.table;
    const mask = this.tableMask;
    // When full, every new occurrence evicts one; otherwise only those about to expire go.
    const full = this.count + max >= this.capacity;
    const oldest = untilNs - this.timeoutNs;
    const n = max < this.count ? max : this.count;
    let touched = 0;
    let slot = this.headSlot;
    for (let i = 0; i < n; i++) {
      if (!full && d[slot * SLOT_DOUBLES + D_TS] >= oldest) break;
      const base = slot * SLOT_WORDS;
      const hash = chainHash(w[base + W_SIG_LO], w[base + W_SIG_HI], w[base + W_DST]);
      touched += table[(hash & mask) * 2];
      slot = slot + 1 === this.capacity ? 0 : slot + 1;
    }
    return touched;
  }

  /**
   * Expires occurrences older than the timeout relative to `nowNs` (CLOCK_MONOTONIC ns, e.g.
   * monotonicNowNs()), so state drains while no events arrive. Time moves backwards only when
   * event time ran more than the timeout ahead of `nowNs`: records are stamped by the same clock
   * before they are observed, so only a record with a bogus timestamp puts event time there, and
   * left alone it would expire all state at every later call (or, as the ring's head, block all
   * expiry). The clock wins, and occurrences stamped that far ahead of it are dropped as expired.
   * Returns the number expired by this call.
   */
  expire(nowNs: number): number {
    if (nowNs > this.nowNs || this.nowNs - nowNs > this.timeoutNs) this.nowNs = nowNs;
    const before = this.expiredCount;
    const latest = this.nowNs + this.timeoutNs;
    const d = this.doubles;
    for (;;) {
      this.expireBefore(this.nowNs - this.timeoutNs);
      // A NaN timestamp (only a direct caller can pass one) fails the test and goes too.
      if (this.count === 0 || d[this.headSlot * SLOT_DOUBLES + D_TS] <= latest) break;
      this.evictHead();
      this.expiredCount++;
    }
    return this.expiredCount - before;
  }

  /** The newest occurrence on flow (src, ports, protocol) in a chain, or NONE. */
  private latestOnFlow(head: number, src: number, ports: number, protocol: number): number {
    const w = this.words;
    let latest = NONE;
    for (let e = head; e !== NONE; ) {
      const base = e * SLOT_WORDS;
      if (
        w[base + W_SRC] === src &&
        w[base + W_PORTS] === ports &&
        (w[base + W_META] & META_PROTO_MASK) === protocol
      ) {
        latest = e;
      }
      e = w[base + W_NEXT] - 1;
    }
    return latest;
  }

  /**
   * Adds `point` to an occurrence when it is new to it (the packet crossing another interface).
   * Returns false when the occurrence was already seen there: the sender sent the audio again.
   */
  private joinSighting(
    slot: number,
    point: number,
    delta: number,
    src: number,
    dst: number,
  ): boolean {
    const w = this.words;
    const base = slot * SLOT_WORDS;
    const meta = w[base + W_META];
    const points = (meta >>> META_POINTS_SHIFT) & META_POINTS_MASK;
    for (let i = 0; i < points; i++) {
      if (w[base + W_POINTS + i] === point) return false;
    }
    if (points === 1) {
      this.transits++;
      // Events from different CPUs may arrive slightly out of order: the transit is the
      // distance between the two sightings.
      this.sink.transit(src, dst, (delta < 0 ? -delta : delta) / 1e9);
    }
    if (points < MAX_POINTS) {
      w[base + W_POINTS + points] = point;
      w[base + W_META] = meta + (1 << META_POINTS_SHIFT);
    }
    return true;
  }

  /** Writes a new occurrence into the ring's tail slot, reports it and pairs it as a departure. */
  private newOccurrence(
    tsNs: number,
    sigHi: number,
    sigLo: number,
    src: number,
    dst: number,
    ports: number,
    protocol: number,
    point: number,
    cursor: number,
  ): void {
    const w = this.words;
    let slot = this.headSlot + this.count;
    if (slot >= this.capacity) slot -= this.capacity;
    const base = slot * SLOT_WORDS;
    w[base + W_SIG_LO] = sigLo;
    w[base + W_SIG_HI] = sigHi;
    w[base + W_SRC] = src;
    w[base + W_DST] = dst;
    w[base + W_PORTS] = ports;
    w[base + W_META] = (protocol & META_PROTO_MASK) | (1 << META_POINTS_SHIFT);
    w[base + W_POINTS] = point;
    w[base + W_NEXT] = 0;
    w[base + W_TAIL] = slot;
    this.doubles[slot * SLOT_DOUBLES + D_TS] = tsNs;
    this.count++;
    this.occurrences++;
    this.sink.signature(src);
    // Paired before it is linked as an arrival, so it can never pair with itself.
    const paired = this.pairDeparture(tsNs, sigHi, sigLo, src, dst, ports, protocol, cursor);
    this.doubles[slot * SLOT_DOUBLES + D_CURSOR] = paired !== NONE ? paired : cursor;
  }

  /**
   * Pairs a new occurrence on flow X -> Z (X = src) with the earliest arrival of the signature
   * at X received after the one this flow last paired with, within [ts - timeout, ts].
   * Returns the sequence number of the paired arrival, or NONE.
   */
  private pairDeparture(
    tsNs: number,
    sigHi: number,
    sigLo: number,
    src: number,
    dst: number,
    ports: number,
    protocol: number,
    cursor: number,
  ): number {
    const bucket = this.findChain(chainHash(sigLo, sigHi, src), sigLo, sigHi, src);
    if (bucket === NONE) return NONE;
    const w = this.words;
    const d = this.doubles;
    const oldest = tsNs - this.timeoutNs;
    let chosen = NONE;
    let chosenSource = 0;
    let chosenSeq = NONE;
    let ambiguous = false;
    for (let e = this.table[bucket * 2] - 1; e !== NONE; ) {
      const base = e * SLOT_WORDS;
      const seq = this.seqOf(e);
      const t = d[e * SLOT_DOUBLES + D_TS];
      if (seq > cursor && t >= oldest && t <= tsNs) {
        const source = w[base + W_SRC];
        // A flow never pairs with its own earlier occurrences (possible only when src == dst,
        // e.g. two host-network pods sharing the node's address).
        const sameFlow =
          source === src &&
          dst === src &&
          w[base + W_PORTS] === ports &&
          (w[base + W_META] & META_PROTO_MASK) === protocol;
        if (!sameFlow) {
          if (chosen === NONE) {
            chosen = e;
            chosenSource = source;
            chosenSeq = seq;
          } else if (source !== chosenSource) {
            ambiguous = true;
            break;
          }
        }
      }
      e = w[base + W_NEXT] - 1;
    }
    if (chosen === NONE) return NONE;
    if (ambiguous) {
      this.collisions++;
      this.sink.collision();
      return NONE;
    }
    this.hops++;
    const seconds = (tsNs - d[chosen * SLOT_DOUBLES + D_TS]) / 1e9;
    this.sink.hop(chosenSource, src, seconds, tsNs, sigHi, sigLo);
    return chosenSeq;
  }

  /**
   * Appends the newest occurrence (the ring's tail) to its chain (`bucket`, or a new chain at
   * `insertAt`), dropping the chain's oldest member when it grows past maxCandidates.
   */
  private linkArrival(hash: number, bucket: number, insertAt: number): void {
    const w = this.words;
    const table = this.table;
    let slot = this.headSlot + this.count - 1;
    if (slot >= this.capacity) slot -= this.capacity;
    const sb = slot * SLOT_WORDS;
    if (bucket === NONE) {
      table[insertAt * 2] = slot + 1;
      table[insertAt * 2 + 1] = hash;
      w[sb + W_META] |= META_LINKED | (1 << META_LEN_SHIFT);
      return;
    }
    w[sb + W_META] |= META_LINKED;
    const head = table[bucket * 2] - 1;
    const hb = head * SLOT_WORDS;
    const tail = w[hb + W_TAIL];
    w[tail * SLOT_WORDS + W_NEXT] = slot + 1;
    w[hb + W_TAIL] = slot;
    const length = (w[hb + W_META] >>> META_LEN_SHIFT) + 1;
    if (length <= this.maxCandidates) {
      w[hb + W_META] = (w[hb + W_META] & 0xffff) | (length << META_LEN_SHIFT);
      return;
    }
    // Too many arrivals of one signature at one endpoint (a looping tone, a replayed prompt):
    // the oldest leaves the chain, which bounds every chain walk.
    const newHead = w[hb + W_NEXT] - 1;
    const nb = newHead * SLOT_WORDS;
    w[hb + W_META] &= 0xffff & ~META_LINKED;
    w[nb + W_TAIL] = slot;
    w[nb + W_META] = (w[nb + W_META] & 0xffff) | ((length - 1) << META_LEN_SHIFT);
    table[bucket * 2] = newHead + 1;
    this.candidatesDropped++;
  }

  private expireBefore(oldestNs: number): void {
    const d = this.doubles;
    while (this.count > 0 && d[this.headSlot * SLOT_DOUBLES + D_TS] < oldestNs) {
      this.evictHead();
      this.expiredCount++;
    }
  }

  /** Removes the oldest occurrence from the ring and from its chain. */
  private evictHead(): void {
    const slot = this.headSlot;
    if ((this.words[slot * SLOT_WORDS + W_META] & META_LINKED) !== 0) this.unlinkHead(slot);
    this.headSlot = slot + 1 === this.capacity ? 0 : slot + 1;
    this.headSeq++;
    this.count--;
  }

  /** The oldest occurrence in the ring is always the head of its chain. */
  private unlinkHead(slot: number): void {
    const w = this.words;
    const table = this.table;
    const base = slot * SLOT_WORDS;
    const sigLo = w[base + W_SIG_LO];
    const sigHi = w[base + W_SIG_HI];
    const dst = w[base + W_DST];
    const bucket = this.findChain(chainHash(sigLo, sigHi, dst), sigLo, sigHi, dst);
    if (bucket === NONE || table[bucket * 2] - 1 !== slot) {
      throw new Error(`Correlator: chain of slot ${slot} has another head (bucket ${bucket})`);
    }
    const next = w[base + W_NEXT] - 1;
    if (next === NONE) {
      this.deleteBucket(bucket);
      return;
    }
    const nb = next * SLOT_WORDS;
    const length = w[base + W_META] >>> META_LEN_SHIFT;
    w[nb + W_TAIL] = w[base + W_TAIL];
    w[nb + W_META] = (w[nb + W_META] & 0xffff) | ((length - 1) << META_LEN_SHIFT);
    table[bucket * 2] = next + 1;
  }

  /** Sequence number (insertion order) of a live slot. */
  private seqOf(slot: number): number {
    let offset = slot - this.headSlot;
    if (offset < 0) offset += this.capacity;
    return this.headSeq + offset;
  }

  private findChain(hash: number, sigLo: number, sigHi: number, endpoint: number): number {
    const table = this.table;
    const w = this.words;
    const mask = this.tableMask;
    let b = hash & mask;
    for (;;) {
      const entry = table[b * 2];
      if (entry === 0) {
        this.freeBucket = b;
        return NONE;
      }
      if (table[b * 2 + 1] === hash) {
        const base = (entry - 1) * SLOT_WORDS;
        if (
          w[base + W_SIG_LO] === sigLo &&
          w[base + W_SIG_HI] === sigHi &&
          w[base + W_DST] === endpoint
        ) {
          return b;
        }
      }
      b = (b + 1) & mask;
    }
  }

  /** Backward-shift deletion: linear probing stays correct without tombstones. */
  private deleteBucket(bucket: number): void {
    const table = this.table;
    const mask = this.tableMask;
    let hole = bucket;
    let j = bucket;
    for (;;) {
      j = (j + 1) & mask;
      const entry = table[j * 2];
      if (entry === 0) break;
      const home = table[j * 2 + 1] & mask;
      const stays = hole < j ? home > hole && home <= j : home > hole || home <= j;
      if (!stays) {
        table[hole * 2] = entry;
        table[hole * 2 + 1] = table[j * 2 + 1];
        hole = j;
      }
    }
    table[hole * 2] = 0;
    table[hole * 2 + 1] = 0;
  }
}
