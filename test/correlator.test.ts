import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { Direction, SIG_RECORD_SIZE } from '../src/abi.js';
import { Correlator, type CorrelatorSink } from '../src/correlate/correlator.js';
import { EndpointTable, formatAddress, parseAddress } from '../src/endpoints.js';
import {
  SignatureBatchDecoder,
  writeSigRecord,
  type SigRecordFields,
} from '../src/signature-batch.js';

const MS = 1e6;
const US = 1e3;
const T0 = 5_000_000 * MS; // about 83 minutes of uptime, in ns
const TIMEOUT_MS = 1000;

interface HopSample {
  source: string;
  dest: string;
  seconds: number;
  tsNs: number;
  sigHi: number;
  sigLo: number;
}

interface TransitSample {
  source: string;
  dest: string;
  seconds: number;
}

/** Records every sink call with labels resolved, so assertions read like the metrics. */
class RecordingSink implements CorrelatorSink {
  readonly hops: HopSample[] = [];
  readonly transits: TransitSample[] = [];
  readonly signatures = new Map<string, number>();
  collisions = 0;
  constructor(private readonly endpoints: EndpointTable) {}
  hop(source: number, dest: number, seconds: number, tsNs: number, sigHi: number, sigLo: number) {
    const e = this.endpoints;
    this.hops.push({ source: e.label(source), dest: e.label(dest), seconds, tsNs, sigHi, sigLo });
  }
  transit(source: number, dest: number, seconds: number) {
    this.transits.push({
      source: this.endpoints.label(source),
      dest: this.endpoints.label(dest),
      seconds,
    });
  }
  signature(sender: number) {
    const label = this.endpoints.label(sender);
    this.signatures.set(label, (this.signatures.get(label) ?? 0) + 1);
  }
  collision() {
    this.collisions++;
  }
}

/** An observation point: the host side of a pod's veth. */
interface Point {
  ifindex: number;
  direction: number;
}
const egressOf = (ifindex: number): Point => ({ ifindex, direction: Direction.Egress });
const ingressOf = (ifindex: number): Point => ({ ifindex, direction: Direction.Ingress });

/** Pods by IP, each with its veth ifindex. */
const pods = {
  A: { ip: '10.1.0.1', veth: 11 },
  R: { ip: '10.1.0.2', veth: 12 },
  B: { ip: '10.1.0.3', veth: 13 },
  B2: { ip: '10.1.0.4', veth: 14 },
  Y1: { ip: '10.1.0.5', veth: 15 },
  Y2: { ip: '10.1.0.6', veth: 16 },
} as const;
type Pod = keyof typeof pods;

class Harness {
  readonly endpoints: EndpointTable;
  readonly sink: RecordingSink;
  readonly correlator: Correlator;
  readonly decoder: SignatureBatchDecoder;

  constructor(options: { maxPending?: number; maxCandidates?: number; sampleRate?: number } = {}) {
    this.endpoints = new EndpointTable({ capacity: 64 });
    this.sink = new RecordingSink(this.endpoints);
    this.correlator = new Correlator(this.sink, {
      timeoutMs: TIMEOUT_MS,
      maxPending: options.maxPending ?? 1024,
      maxCandidates: options.maxCandidates,
      sampleRate: options.sampleRate,
    });
    this.decoder = new SignatureBatchDecoder(this.endpoints, this.correlator);
  }

  feed(records: SigRecordFields[]): void {
    const buffer = new Uint8Array(records.length * SIG_RECORD_SIZE);
    records.forEach((r, i) => writeSigRecord(buffer, i, r));
    this.decoder.decode(buffer, records.length);
  }

  /** One sighting of signature `sig` on flow from -> to at `point`. */
  see(tsNs: number, sig: number, from: Pod, to: Pod, point: Point, sport = 40000): void {
    this.feed([record(tsNs, sig, from, to, point, sport)]);
  }

  /**
   * A packet from -> to crossing both veths: the sender's (ingress on the host side) at tsNs,
   * the receiver's (egress on the host side) `wireNs` later.
   */
  send(tsNs: number, sig: number, from: Pod, to: Pod, wireNs = 50 * US, sport = 40000): void {
    this.feed([
      record(tsNs, sig, from, to, ingressOf(pods[from].veth), sport),
      record(tsNs + wireNs, sig, from, to, egressOf(pods[to].veth), sport),
    ]);
  }
}

function record(
  tsNs: number,
  sig: number,
  from: Pod,
  to: Pod,
  point: Point,
  sport: number,
): SigRecordFields {
  return {
    tsNs,
    sigLo: sig,
    sigHi: 0xabc00000 + (sig & 0xfff),
    saddr: pods[from].ip,
    daddr: pods[to].ip,
    sport,
    dport: 5004,
    ifindex: point.ifindex,
    direction: point.direction,
  };
}

const close = (actual: number, expected: number, what: string) =>
  assert.ok(Math.abs(actual - expected) < 1e-12, `${what}: ${actual} != ${expected}`);

describe('correlator: chain A -> R -> B, two observation points per flow', () => {
  it('yields one hop per signature with the exact latency, and a transit per flow', () => {
    const h = new Harness();
    const signatures = 20;
    for (let k = 0; k < signatures; k++) {
      const t = T0 + k * 20 * MS;
      h.send(t, 1000 + k, 'A', 'R', 50 * US);
      h.send(t + 2 * MS + k * US, 1000 + k, 'R', 'B', 70 * US);
    }
    const { hops, transits } = h.sink;
    assert.equal(hops.length, signatures);
    hops.forEach((hop, k) => {
      assert.equal(hop.source, pods.A.ip);
      assert.equal(hop.dest, pods.R.ip);
      close(hop.seconds, (2 * MS + k * US) / 1e9, `hop ${k}`);
      assert.equal(hop.tsNs, T0 + k * 20 * MS + 2 * MS + k * US);
      assert.equal(hop.sigLo, 1000 + k);
      assert.equal(hop.sigHi, 0xabc00000 + ((1000 + k) & 0xfff));
    });
    assert.equal(transits.length, 2 * signatures);
    const ar = transits.filter((t) => t.source === pods.A.ip && t.dest === pods.R.ip);
    const rb = transits.filter((t) => t.source === pods.R.ip && t.dest === pods.B.ip);
    assert.equal(ar.length, signatures);
    assert.equal(rb.length, signatures);
    ar.forEach((t) => close(t.seconds, 50e-6, 'A->R transit'));
    rb.forEach((t) => close(t.seconds, 70e-6, 'R->B transit'));
    assert.equal(h.sink.signatures.get(pods.A.ip), signatures);
    assert.equal(h.sink.signatures.get(pods.R.ip), signatures);
    assert.equal(h.sink.signatures.get(pods.B.ip), undefined);
    assert.equal(h.sink.collisions, 0);
    const stats = h.correlator.stats;
    assert.equal(stats.hops, signatures);
    assert.equal(stats.transits, 2 * signatures);
    assert.equal(stats.occurrences, 2 * signatures);
    assert.equal(stats.sightings, 4 * signatures);
  });

  it('records the transit once: a third observation point is ignored', () => {
    const h = new Harness();
    h.see(T0, 7, 'A', 'R', ingressOf(11));
    h.see(T0 + 10 * US, 7, 'A', 'R', egressOf(2)); // e.g. the node's uplink
    h.see(T0 + 30 * US, 7, 'A', 'R', egressOf(12));
    assert.equal(h.sink.transits.length, 1);
    close(h.sink.transits[0].seconds, 10e-6, 'first transit');
    assert.equal(h.correlator.stats.occurrences, 1);
  });

  it('treats a sighting at an observation point already seen as a new occurrence', () => {
    const h = new Harness();
    h.see(T0, 7, 'A', 'R', ingressOf(11));
    h.see(T0 + 20 * MS, 7, 'A', 'R', ingressOf(11));
    assert.equal(h.correlator.stats.occurrences, 2);
    assert.equal(h.sink.transits.length, 0);
    assert.equal(h.sink.signatures.get(pods.A.ip), 2);
  });
});

describe('correlator: pairing rules', () => {
  it('fan-out: each outbound flow gets its own pair with the same arrival', () => {
    const h = new Harness();
    h.send(T0, 42, 'A', 'R');
    h.send(T0 + 3 * MS, 42, 'R', 'B');
    h.send(T0 + 5 * MS, 42, 'R', 'B2');
    assert.equal(h.sink.hops.length, 2);
    assert.deepEqual(
      h.sink.hops.map((x) => [x.source, x.dest]),
      [
        [pods.A.ip, pods.R.ip],
        [pods.A.ip, pods.R.ip],
      ],
    );
    close(h.sink.hops[0].seconds, 3e-3, 'to B');
    close(h.sink.hops[1].seconds, 5e-3, 'to B2');
  });

  it('identical content on unrelated flows never pairs (one prompt played to many callers)', () => {
    const h = new Harness();
    // A plays the same prompt to R, B and B2; Y1 plays it to Y2. Nobody forwards anything.
    h.send(T0, 99, 'A', 'R');
    h.send(T0 + 1 * MS, 99, 'A', 'B');
    h.send(T0 + 2 * MS, 99, 'A', 'B2');
    h.send(T0 + 3 * MS, 99, 'Y1', 'Y2');
    assert.equal(h.sink.hops.length, 0);
    assert.equal(h.sink.collisions, 0);
    assert.equal(h.sink.signatures.get(pods.A.ip), 3);
    assert.equal(h.sink.signatures.get(pods.Y1.ip), 1);
    // R then sends the prompt on: that is causal through A -> R, and only that pairs.
    h.send(T0 + 4 * MS, 99, 'R', 'Y2');
    assert.equal(h.sink.hops.length, 1);
    assert.equal(h.sink.hops[0].source, pods.A.ip);
    assert.equal(h.sink.hops[0].dest, pods.R.ip);
  });

  it('repeats on one outbound flow pair with successive arrivals, then stop', () => {
    const h = new Harness();
    h.send(T0, 5, 'A', 'R');
    h.send(T0 + 1 * MS, 5, 'A', 'R');
    h.send(T0 + 10 * MS, 5, 'R', 'B');
    h.send(T0 + 12 * MS, 5, 'R', 'B');
    h.send(T0 + 14 * MS, 5, 'R', 'B');
    assert.equal(h.sink.hops.length, 2);
    close(h.sink.hops[0].seconds, 10e-3, 'first repeat');
    close(h.sink.hops[1].seconds, 11e-3, 'second repeat');
    assert.equal(h.sink.signatures.get(pods.R.ip), 3);
  });

  it('does not pair an arrival older than the timeout, and pairs one just inside it', () => {
    const h = new Harness({});
    h.send(T0, 8, 'A', 'R');
    h.send(T0 + TIMEOUT_MS * MS + 1, 8, 'R', 'B');
    assert.equal(h.sink.hops.length, 0);
    h.send(T0 + 10_000 * MS, 9, 'A', 'R');
    h.send(T0 + 10_000 * MS + TIMEOUT_MS * MS, 9, 'R', 'B');
    assert.equal(h.sink.hops.length, 1);
    close(h.sink.hops[0].seconds, TIMEOUT_MS / 1000, 'edge of the window');
  });

  it('does not pair with an arrival later than the departure', () => {
    const h = new Harness();
    // Out-of-order delivery: the arrival is received first but stamped after the departure.
    h.see(T0 + 5 * MS, 3, 'A', 'R', ingressOf(11));
    h.see(T0 + 4 * MS, 3, 'R', 'B', ingressOf(12));
    assert.equal(h.sink.hops.length, 0);
  });

  it('drops an ambiguous departure (arrivals from two sources) as one collision', () => {
    const h = new Harness();
    h.send(T0, 77, 'Y1', 'R');
    h.send(T0 + 1 * MS, 77, 'Y2', 'R');
    h.send(T0 + 5 * MS, 77, 'R', 'B');
    assert.equal(h.sink.hops.length, 0);
    assert.equal(h.sink.collisions, 1);
    assert.equal(h.correlator.stats.collisions, 1);
  });

  it('is not ambiguous when the candidates share one source: the earliest pairs', () => {
    const h = new Harness();
    h.send(T0, 78, 'Y1', 'R', 50 * US, 40000);
    h.send(T0 + 1 * MS, 78, 'Y1', 'R', 50 * US, 40002); // a second flow from the same pod
    h.send(T0 + 5 * MS, 78, 'R', 'B');
    assert.equal(h.sink.collisions, 0);
    assert.equal(h.sink.hops.length, 1);
    close(h.sink.hops[0].seconds, 5e-3, 'earliest candidate');
  });

  it('pairs unambiguously once the other source has been consumed or aged out', () => {
    const h = new Harness();
    h.send(T0, 79, 'Y1', 'R');
    h.send(T0 + 1 * MS, 79, 'R', 'B'); // pairs Y1's arrival
    h.send(T0 + 2 * MS, 79, 'Y2', 'R');
    h.send(T0 + 3 * MS, 79, 'R', 'B'); // only Y2's arrival is unpaired on R -> B
    assert.equal(h.sink.collisions, 0);
    assert.deepEqual(
      h.sink.hops.map((x) => x.source),
      [pods.Y1.ip, pods.Y2.ip],
    );
  });

  it('never pairs a flow with its own earlier occurrence (source and dest share an address)', () => {
    const h = new Harness();
    // Two host-network pods on one node: both ends have the node address.
    const node = pods.R.ip;
    const flow = (ts: number, sport: number) => ({
      tsNs: ts,
      sigLo: 11,
      sigHi: 1,
      saddr: node,
      daddr: node,
      sport,
      dport: 5004,
      ifindex: 1,
      direction: Direction.Egress,
    });
    h.feed([flow(T0, 30000), flow(T0 + 1 * MS, 30000)]);
    assert.equal(h.sink.hops.length, 0);
    // A different flow between the same address does pair: node -> node is a hop.
    h.feed([flow(T0 + 2 * MS, 30002)]);
    assert.equal(h.sink.hops.length, 1);
  });

  it('bounds the candidates kept per (signature, endpoint)', () => {
    const h = new Harness({ maxCandidates: 3 });
    for (let i = 0; i < 5; i++) h.send(T0 + i * MS, 12, 'A', 'R');
    assert.equal(h.correlator.stats.candidatesDropped, 2);
    h.send(T0 + 10 * MS, 12, 'R', 'B');
    assert.equal(h.sink.hops.length, 1);
    // The two oldest arrivals are no longer candidates: the earliest kept one pairs.
    close(h.sink.hops[0].seconds, 8e-3, 'earliest kept');
  });

  it('consistent sampling keeps the same signatures at every point', () => {
    const h = new Harness({ sampleRate: 0.5 });
    const low = 0x10;
    const high = 0x90000000;
    h.send(T0, low, 'A', 'R');
    h.send(T0 + 1 * MS, low, 'R', 'B');
    h.send(T0, high, 'A', 'R');
    h.send(T0 + 1 * MS, high, 'R', 'B');
    assert.equal(h.sink.hops.length, 1);
    assert.equal(h.sink.hops[0].sigLo, low);
    assert.equal(h.correlator.stats.sampledOut, 4);
  });
});

describe('correlator: bounds', () => {
  it('evicts the oldest occurrence when maxPending is reached, and counts it', () => {
    const h = new Harness({ maxPending: 4 });
    h.see(T0, 1, 'A', 'R', ingressOf(11)); // will be evicted
    for (let i = 0; i < 5; i++) h.see(T0 + (i + 1) * MS, 100 + i, 'Y1', 'Y2', ingressOf(15));
    const stats = h.correlator.stats;
    assert.equal(stats.pending, 4);
    assert.equal(stats.evictions, 2);
    assert.equal(stats.expired, 0);
    // The evicted arrival of signature 1 at R can no longer pair.
    h.see(T0 + 7 * MS, 1, 'R', 'B', ingressOf(12));
    assert.equal(h.sink.hops.length, 0);
    assert.equal(h.correlator.stats.evictions, 3);
    // Nothing evicted is still indexed: the newest occurrences still join their sightings.
    h.see(T0 + 8 * MS, 104, 'Y1', 'Y2', egressOf(16));
    assert.equal(h.sink.transits.length, 1);
  });

  it('expires occurrences by event time and by expire(now)', () => {
    const h = new Harness();
    h.see(T0, 1, 'A', 'R', ingressOf(11));
    h.see(T0 + 1 * MS, 2, 'A', 'R', ingressOf(11));
    assert.equal(h.correlator.pending, 2);
    // An event later than the timeout drains the older state.
    h.see(T0 + TIMEOUT_MS * MS + 500 * US, 3, 'A', 'R', ingressOf(11));
    assert.equal(h.correlator.stats.expired, 1);
    assert.equal(h.correlator.pending, 2);
    // Idle: the agent's periodic call drains the rest.
    assert.equal(h.correlator.expire(T0 + 3 * TIMEOUT_MS * MS), 2);
    assert.equal(h.correlator.pending, 0);
    assert.equal(h.correlator.stats.expired, 3);
    // Time never goes backwards: an earlier expire() changes nothing.
    assert.equal(h.correlator.expire(T0), 0);
    // An expired occurrence neither joins a later sighting nor pairs.
    h.see(T0 + 3 * TIMEOUT_MS * MS + 1, 3, 'A', 'R', egressOf(12));
    assert.equal(h.sink.transits.length, 0);
  });

  it('matches a plain reference model of the semantics through heavy churn', () => {
    // Small tables, few signatures/endpoints/points and jittered time: every path (resend,
    // join, transit, pairing, collision, trim, eviction, expiry) runs thousands of times.
    const options = { timeoutMs: 5, maxPending: 64, maxCandidates: 4 };
    const actual = new LoggingSink();
    const expected = new LoggingSink();
    const correlator = new Correlator(actual, options);
    const model = new ReferenceCorrelator(expected, options);
    let seed = 12345;
    const rand = (n: number) => {
      seed = (Math.imul(seed, 1103515245) + 12345) >>> 0;
      return (seed >>> 8) % n;
    };
    let clock = T0;
    for (let i = 0; i < 200_000; i++) {
      // Mostly dense traffic (the table fills), sometimes a pause (event time expires state),
      // and a little jitter (events slightly out of order).
      clock += rand(100) < 2 ? rand(4) * MS : 10 * US;
      const ts = clock + rand(40) * US - 20 * US;
      const args = [ts, rand(2), rand(12), rand(5), rand(5), rand(2), 17, rand(3)] as const;
      correlator.observe(...args);
      model.observe(...args);
      if (i % 50_000 === 49_999) {
        const now = ts + rand(2) * 10 * MS;
        assert.equal(correlator.expire(now), model.expire(now));
      }
    }
    assert.deepEqual(actual.log.length, expected.log.length);
    for (let i = 0; i < expected.log.length; i++)
      assert.equal(actual.log[i], expected.log[i], `call ${i}`);
    const stats = correlator.stats;
    assert.ok(stats.pending <= 64);
    assert.ok(stats.evictions > 0 && stats.expired > 0, 'both bounds exercised');
    assert.ok(stats.hops > 1000 && stats.collisions > 100 && stats.candidatesDropped > 100);
    assert.equal(stats.occurrences, stats.pending + stats.evictions + stats.expired);
    assert.deepEqual(
      [stats.pending, stats.evictions, stats.expired, stats.candidatesDropped],
      [model.live.length, model.evictions, model.expired, model.dropped],
    );
  });
});

/** Sink that logs every call as text, for exact comparison. */
class LoggingSink implements CorrelatorSink {
  readonly log: string[] = [];
  hop(source: number, dest: number, seconds: number, tsNs: number, sigHi: number, sigLo: number) {
    this.log.push(`hop ${source}->${dest} ${seconds} @${tsNs} ${sigHi}:${sigLo}`);
  }
  transit(source: number, dest: number, seconds: number) {
    this.log.push(`transit ${source}->${dest} ${seconds}`);
  }
  signature(sender: number) {
    this.log.push(`signature ${sender}`);
  }
  collision() {
    this.log.push('collision');
  }
}

interface ModelOccurrence {
  seq: number;
  ts: number;
  sig: string;
  src: number;
  dst: number;
  flow: string;
  points: number[];
  cursor: number;
  candidate: boolean;
}

/**
 * docs/correlation.md written as the most obvious code: arrays and string keys, linear scans.
 */
class ReferenceCorrelator {
  live: ModelOccurrence[] = [];
  evictions = 0;
  expired = 0;
  dropped = 0;
  private seq = 0;
  private now = -Infinity;
  private readonly timeoutNs: number;
  constructor(
    private readonly sink: CorrelatorSink,
    private readonly options: { timeoutMs: number; maxPending: number; maxCandidates: number },
  ) {
    this.timeoutNs = options.timeoutMs * 1e6;
  }

  expire(now: number): number {
    this.now = Math.max(this.now, now);
    return this.drain();
  }

  private drain(): number {
    let n = 0;
    while (this.live.length > 0 && this.live[0].ts < this.now - this.timeoutNs) {
      this.live.shift();
      this.expired++;
      n++;
    }
    return n;
  }

  observe(
    ts: number,
    sigHi: number,
    sigLo: number,
    src: number,
    dst: number,
    ports: number,
    protocol: number,
    point: number,
  ) {
    const T = this.timeoutNs;
    if (ts > this.now) {
      this.now = ts;
      this.drain();
    }
    const sig = `${sigHi}:${sigLo}`;
    const flow = `${sig}/${src}/${dst}/${ports}/${protocol}`;
    // Only occurrences still among their (signature, dest) candidates are remembered.
    const latest = this.live.filter((o) => o.candidate && o.flow === flow).at(-1);
    let cursor = -1;
    if (latest !== undefined) {
      const delta = ts - latest.ts;
      if (Math.abs(delta) <= T && !latest.points.includes(point)) {
        if (latest.points.length === 1) this.sink.transit(src, dst, Math.abs(delta) / 1e9);
        if (latest.points.length < 4) latest.points.push(point);
        return;
      }
      cursor = latest.cursor;
    }
    if (this.live.length === this.options.maxPending) {
      this.live.shift();
      this.evictions++;
    }
    this.sink.signature(src);
    const candidates = this.live.filter(
      (o) =>
        o.candidate &&
        o.sig === sig &&
        o.dst === src &&
        o.seq > cursor &&
        o.ts >= ts - T &&
        o.ts <= ts &&
        o.flow !== flow,
    );
    let paired = -1;
    if (candidates.length > 0) {
      if (candidates.some((o) => o.src !== candidates[0].src)) {
        this.sink.collision();
      } else {
        const first = candidates[0];
        this.sink.hop(first.src, src, (ts - first.ts) / 1e9, ts, sigHi, sigLo);
        paired = first.seq;
      }
    }
    const occurrence: ModelOccurrence = {
      seq: this.seq++,
      ts,
      sig,
      src,
      dst,
      flow,
      points: [point],
      cursor: paired >= 0 ? paired : cursor,
      candidate: true,
    };
    this.live.push(occurrence);
    const chain = this.live.filter((o) => o.candidate && o.sig === sig && o.dst === dst);
    if (chain.length > this.options.maxCandidates) {
      chain[0].candidate = false;
      this.dropped++;
    }
  }
}

describe('endpoints', () => {
  it('interns addresses to stable ids and labels them through the resolver', () => {
    const table = new EndpointTable({ capacity: 8 });
    const a = table.internAddress('10.0.0.1');
    const b = table.internAddress('fd00::1:2');
    assert.equal(table.internAddress('10.0.0.1'), a);
    assert.notEqual(a, b);
    assert.equal(table.label(a), '10.0.0.1');
    assert.equal(table.label(b), 'fd00::1:2');
    assert.equal(table.lookup('fd00::1:2'), b);
    assert.equal(table.lookup('10.0.0.9'), -1);
  });

  it('relabel() upgrades labels and moves generations; invalidate() one id', () => {
    const names = new Map([['10.0.0.1', 'frontend-7d9']]);
    let resolver = (ip: string) => ip;
    const table = new EndpointTable({ capacity: 8, resolver: (ip) => resolver(ip) });
    const a = table.internAddress('10.0.0.1');
    const b = table.internAddress('10.0.0.2');
    assert.equal(table.label(a), '10.0.0.1');
    const genA = table.generation(a);
    resolver = (ip) => names.get(ip) ?? ip;
    assert.equal(table.label(a), '10.0.0.1', 'labels stay cached until relabel()');
    table.relabel();
    assert.notEqual(table.generation(a), genA);
    assert.equal(table.label(a), 'frontend-7d9');
    assert.equal(table.label(b), '10.0.0.2');
    names.set('10.0.0.2', 'relay-0');
    const genB = table.generation(b);
    table.invalidate(b);
    assert.equal(table.label(b), 'relay-0');
    assert.notEqual(table.generation(b), genB);
    table.relabel(() => 'x');
    assert.equal(table.label(a), 'x');
  });

  it('falls back to the address when the resolver throws', () => {
    const table = new EndpointTable({
      capacity: 2,
      resolver: () => {
        throw new Error('api down');
      },
    });
    assert.equal(table.label(table.internAddress('10.0.0.3')), '10.0.0.3');
  });

  it('reclaims the least recently used id when full, honouring minIdleNs', () => {
    const S = 1e9;
    const table = new EndpointTable({ capacity: 2, minIdleNs: 30 * S });
    const a = table.internAddress('10.0.0.1', 0);
    const b = table.internAddress('10.0.0.2', 1 * S);
    table.internAddress('10.0.0.1', 2 * S); // a is now the most recently used
    const genB = table.generation(b);
    assert.equal(table.internAddress('10.0.0.3', 20 * S), -1, 'b used 19 s ago: kept');
    assert.equal(table.stats.rejected, 1);
    const c = table.internAddress('10.0.0.3', 32 * S);
    assert.equal(c, b, 'the least recently used id is reused');
    assert.notEqual(table.generation(c), genB);
    assert.equal(table.label(c), '10.0.0.3');
    assert.equal(table.lookup('10.0.0.2'), -1);
    assert.equal(table.lookup('10.0.0.1'), a);
    assert.equal(table.stats.reclaimed, 1);
    // Many reclaims keep the index consistent; plain LRU (minIdleNs 0) never refuses.
    const lru = new EndpointTable({ capacity: 3 });
    for (let i = 0; i < 1000; i++) {
      const ip = `10.0.${i >> 8}.${i & 255}`;
      const id = lru.internAddress(ip, i * S);
      assert.ok(id >= 0 && id < 3);
      assert.equal(lru.lookup(ip), id);
      if (i >= 3) assert.equal(lru.lookup(`10.0.${(i - 3) >> 8}.${(i - 3) & 255}`), -1);
    }
    assert.equal(lru.stats.reclaimed, 997);
  });

  it('formats and parses addresses canonically', () => {
    for (const ip of [
      '10.244.1.7',
      '::',
      '::1',
      'fd00::1:0:0:2',
      '2001:db8::',
      '1:0:0:1::1',
      '1::1:0:0:1:1',
      '::ffff:10.0.0.1',
      'fe80::1:2:3:4',
    ]) {
      const parsed = parseAddress(ip);
      assert.equal(formatAddress(parsed.family, parsed.bytes, 0), ip);
    }
    const p = parseAddress('2001:DB8:0:0:0:0:0:1');
    assert.equal(formatAddress(p.family, p.bytes, 0), '2001:db8::1');
    // WHATWG URL serialises IPv6 the RFC 5952 way (but for IPv4-mapped): use it as an oracle.
    let seed = 7;
    const rand = () => (seed = (Math.imul(seed, 1103515245) + 12345) >>> 0);
    for (let i = 0; i < 500; i++) {
      const groups = Array.from({ length: 8 }, () =>
        rand() % 3 === 0 ? (rand() >>> 16).toString(16) : '0',
      );
      if (groups.slice(0, 5).every((g) => g === '0') && groups[5] === 'ffff') continue;
      const oracle = new URL(`http://[${groups.join(':')}]/`).hostname.slice(1, -1);
      const parsed = parseAddress(groups.join(':'));
      assert.equal(formatAddress(parsed.family, parsed.bytes, 0), oracle);
    }
    assert.throws(() => parseAddress('pod-a'), /not an IP address/);
  });
});
