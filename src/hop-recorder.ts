/**
 * Records what the correlator finds into OpenTelemetry instruments (created by otel/).
 *
 * Each (source, dest) label pair and each sender gets one frozen attribute object (pod names and
 * namespaces), built on first use and reused for every later sample, so recording allocates
 * nothing of ours per sample. A cached object is rebuilt when EndpointTable reports that a label
 * may have changed (its generation moved: id reclaimed, relabel(), invalidate(), which the agent
 * calls when the pod cache reports an IP changing hands).
 *
 * Latency samples go to the histograms one by one. Signature counts are summed per sender and
 * added to the counter by flush(): one SDK call per sender and flush instead of one per
 * occurrence (an SDK call sorts and serialises its attributes: it costs more than correlating
 * a record). While counts keep arriving, flush() runs by itself within about
 * FLUSH_INTERVAL_MS of the oldest held count (the clock is read every 64th count); the agent
 * calls it before every collection and whenever it expires correlator state, so no count is
 * held back from an export.
 */

import type { Attributes, Counter, Histogram } from '@opentelemetry/api';
import {
  ATTR_DEST_NAMESPACE,
  ATTR_DEST_POD,
  ATTR_NAMESPACE,
  ATTR_POD,
  ATTR_SOURCE_NAMESPACE,
  ATTR_SOURCE_POD,
} from '../otel/metric-names.js';
import type { CorrelatorSink } from './correlate/correlator.js';
import type { EndpointTable } from './endpoints.js';
import { nextPowerOfTwo } from './hash-tables.js';

/** SAMPLE_LOG hook: one call per hop sample, with the labels the metric carried. */
export type HopSampleListener = (
  tsNs: number,
  sigHi: number,
  sigLo: number,
  sourceLabel: string,
  destLabel: string,
  seconds: number,
) => void;

export interface HopRecorderOptions {
  /** audio_latency_seconds {source_pod, source_namespace, dest_pod, dest_namespace} */
  hopLatency: Histogram;
  /** audio_transit_latency_seconds {source_pod, source_namespace, dest_pod, dest_namespace} */
  transitLatency: Histogram;
  /** audio_signatures {pod, namespace} */
  signatures: Counter;
  /** audio_signature_collisions */
  collisions: Counter;
  endpoints: EndpointTable;
  onSample?: HopSampleListener;
  /** Label pairs cached at once (default 65536); the cache is cleared when it fills. */
  pairCacheCapacity?: number;
}

export interface HopRecorderStats {
  /** Attribute pairs cached now. */
  cachedPairs: number;
  /** Attribute objects built (first use or label change). */
  attributeBuilds: number;
  /** Times the pair cache filled and was cleared. */
  cacheResets: number;
  /** Signature counts held until the next flush(). */
  unflushedSignatures: number;
}

type PairAttributes = Readonly<{
  [ATTR_SOURCE_POD]: string;
  [ATTR_SOURCE_NAMESPACE]: string;
  [ATTR_DEST_POD]: string;
  [ATTR_DEST_NAMESPACE]: string;
}>;
type PodAttributes = Readonly<{ [ATTR_POD]: string; [ATTR_NAMESPACE]: string }>;

const NO_ATTRIBUTES: Attributes = Object.freeze({});
/** Longest a signature count is held while counts keep arriving. */
export const FLUSH_INTERVAL_MS = 1000;

export class HopRecorder implements CorrelatorSink {
  private readonly hopLatency: Histogram;
  private readonly transitLatency: Histogram;
  private readonly signatureCounter: Counter;
  private readonly collisionCounter: Counter;
  private readonly endpoints: EndpointTable;
  private readonly onSample: HopSampleListener | undefined;

  // Pair cache: open addressing over (source, dest) -> entry index + 1.
  private readonly pairCapacity: number;
  private readonly pairIndex: Int32Array;
  private readonly pairMask: number;
  private readonly pairSource: Int32Array;
  private readonly pairDest: Int32Array;
  private readonly pairSourceGen: Uint32Array;
  private readonly pairDestGen: Uint32Array;
  private readonly pairAttributes: (PairAttributes | undefined)[];
  private pairCount = 0;

  // Sender cache and unflushed signature counts, by endpoint id.
  private readonly senderAttributes: (PodAttributes | undefined)[];
  private readonly senderGen: Uint32Array;
  private readonly unflushed: Float64Array;
  private readonly dirty: Int32Array;
  private dirtyCount = 0;
  private unflushedTotal = 0;
  /** Date.now() by which held counts must be flushed (Infinity: none held). */
  private flushDeadline = Infinity;

  private attributeBuilds = 0;
  private cacheResets = 0;

  constructor(options: HopRecorderOptions) {
    this.hopLatency = options.hopLatency;
    this.transitLatency = options.transitLatency;
    this.signatureCounter = options.signatures;
    this.collisionCounter = options.collisions;
    // A counter has no series until its first add(): export a zero from the first scrape, so
    // dashboards and alerts see 0 rather than no data.
    this.collisionCounter.add(0, NO_ATTRIBUTES);
    this.endpoints = options.endpoints;
    this.onSample = options.onSample;
    const capacity = options.pairCacheCapacity ?? 65536;
    if (!Number.isInteger(capacity) || capacity < 1) {
      throw new RangeError(
        `HopRecorder: pairCacheCapacity must be a positive integer, got ${capacity}`,
      );
    }
    this.pairCapacity = capacity;
    const buckets = nextPowerOfTwo(capacity * 2);
    this.pairIndex = new Int32Array(buckets);
    this.pairMask = buckets - 1;
    this.pairSource = new Int32Array(capacity);
    this.pairDest = new Int32Array(capacity);
    this.pairSourceGen = new Uint32Array(capacity);
    this.pairDestGen = new Uint32Array(capacity);
    this.pairAttributes = new Array<PairAttributes | undefined>(capacity).fill(undefined);
    const endpointCapacity = this.endpoints.capacity;
    this.senderAttributes = new Array<PodAttributes | undefined>(endpointCapacity).fill(undefined);
    this.senderGen = new Uint32Array(endpointCapacity);
    this.unflushed = new Float64Array(endpointCapacity);
    this.dirty = new Int32Array(endpointCapacity);
  }

  hop(
    source: number,
    dest: number,
    seconds: number,
    tsNs: number,
    sigHi: number,
    sigLo: number,
  ): void {
    const attributes = this.pair(source, dest);
    this.hopLatency.record(seconds, attributes);
    if (this.onSample !== undefined) {
      this.onSample(
        tsNs,
        sigHi,
        sigLo,
        attributes[ATTR_SOURCE_POD],
        attributes[ATTR_DEST_POD],
        seconds,
      );
    }
  }

  transit(source: number, dest: number, seconds: number): void {
    this.transitLatency.record(seconds, this.pair(source, dest));
  }

  signature(sender: number): void {
    const gen = this.endpoints.generation(sender);
    const held = this.unflushed[sender];
    if (held === 0) {
      if (this.senderGen[sender] !== gen || this.senderAttributes[sender] === undefined) {
        this.buildSender(sender, gen);
      }
      if (this.dirtyCount === 0) this.flushDeadline = Date.now() + FLUSH_INTERVAL_MS;
      this.dirty[this.dirtyCount++] = sender;
    } else if (this.senderGen[sender] !== gen) {
      // The label changed while counts were held: they belong to the label they were counted
      // under. (The sender stays in the dirty list; flush() skips a zero count.)
      this.signatureCounter.add(held, this.senderAttributes[sender]);
      this.unflushed[sender] = 0;
      this.buildSender(sender, gen);
    }
    this.unflushed[sender]++;
    // Checking the clock once in 64 counts keeps its cost off the per-occurrence path.
    if ((++this.unflushedTotal & 63) === 0 && Date.now() >= this.flushDeadline) this.flush();
  }

  /** Adds the signature counts held so far to the counter: one add() per sender. */
  flush(): void {
    const dirty = this.dirty;
    for (let i = 0; i < this.dirtyCount; i++) {
      const sender = dirty[i];
      const count = this.unflushed[sender];
      if (count === 0) continue;
      this.signatureCounter.add(count, this.senderAttributes[sender]);
      this.unflushed[sender] = 0;
    }
    this.dirtyCount = 0;
    this.unflushedTotal = 0;
    this.flushDeadline = Infinity;
  }

  collision(): void {
    this.collisionCounter.add(1, NO_ATTRIBUTES);
  }

  get stats(): HopRecorderStats {
    return {
      cachedPairs: this.pairCount,
      attributeBuilds: this.attributeBuilds,
      cacheResets: this.cacheResets,
      unflushedSignatures: this.unflushedTotal,
    };
  }

  /** The attribute object of (source, dest), current with the endpoints' labels. */
  private pair(source: number, dest: number): PairAttributes {
    const endpoints = this.endpoints;
    const sourceGen = endpoints.generation(source);
    const destGen = endpoints.generation(dest);
    const mask = this.pairMask;
    let b = Math.imul(source, 0x9e3779b1) ^ Math.imul(dest + 0x632be5ab, 0x85ebca77);
    b = (b ^ (b >>> 15)) & mask;
    for (;;) {
      const e = this.pairIndex[b];
      if (e === 0) break;
      const i = e - 1;
      if (this.pairSource[i] === source && this.pairDest[i] === dest) {
        const cached = this.pairAttributes[i];
        if (
          cached !== undefined &&
          this.pairSourceGen[i] === sourceGen &&
          this.pairDestGen[i] === destGen
        ) {
          return cached;
        }
        return this.buildPair(i, source, dest, sourceGen, destGen);
      }
      b = (b + 1) & mask;
    }
    if (this.pairCount === this.pairCapacity) {
      // More live pairs than the cache holds: start over rather than track recency per sample.
      this.pairIndex.fill(0);
      this.pairAttributes.fill(undefined);
      this.pairCount = 0;
      this.cacheResets++;
      return this.pair(source, dest);
    }
    const i = this.pairCount++;
    this.pairIndex[b] = i + 1;
    this.pairSource[i] = source;
    this.pairDest[i] = dest;
    return this.buildPair(i, source, dest, sourceGen, destGen);
  }

  private buildPair(
    i: number,
    source: number,
    dest: number,
    sourceGen: number,
    destGen: number,
  ): PairAttributes {
    const s = this.endpoints.endpointLabel(source);
    const d = this.endpoints.endpointLabel(dest);
    const attributes: PairAttributes = Object.freeze({
      [ATTR_SOURCE_POD]: s.name,
      [ATTR_SOURCE_NAMESPACE]: s.namespace,
      [ATTR_DEST_POD]: d.name,
      [ATTR_DEST_NAMESPACE]: d.namespace,
    });
    this.pairAttributes[i] = attributes;
    this.pairSourceGen[i] = sourceGen;
    this.pairDestGen[i] = destGen;
    this.attributeBuilds++;
    return attributes;
  }

  private buildSender(id: number, gen: number): void {
    const label = this.endpoints.endpointLabel(id);
    this.senderAttributes[id] = Object.freeze({
      [ATTR_POD]: label.name,
      [ATTR_NAMESPACE]: label.namespace,
    });
    this.senderGen[id] = gen;
    this.attributeBuilds++;
  }
}
