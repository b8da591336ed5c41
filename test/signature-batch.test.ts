import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { SIG_RECORD_SIZE } from '../src/abi.js';
import { Correlator, type SignatureObserver } from '../src/correlate/correlator.js';
import { AddressFamily, EndpointTable, hostPodAddress } from '../src/endpoints.js';
import {
  type CgroupSourceResolver,
  LocalPortTable,
  SignatureBatchDecoder,
  writeSigRecord,
} from '../src/signature-batch.js';

interface Observed {
  tsNs: number;
  sigHi: number;
  sigLo: number;
  src: string;
  dst: string;
  ports: number;
  protocol: number;
  point: number;
}

class CollectingObserver implements SignatureObserver {
  readonly seen: Observed[] = [];
  prefetches = 0;
  constructor(private readonly endpoints: EndpointTable) {}
  prefetch(): number {
    this.prefetches++;
    return 0;
  }
  prefetchRemovals(): number {
    return 0;
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
    const e = this.endpoints;
    this.seen.push({
      tsNs,
      sigHi,
      sigLo,
      src: e.address(src),
      dst: e.address(dst),
      ports,
      protocol,
      point,
    });
  }
}

/**
 * Writes a record by the byte offsets of struct sig_record in bpf/audio_event.h, spelled out
 * here independently of src/abi.ts and writeSigRecord().
 */
function handWritten(
  target: Uint8Array,
  index: number,
  r: {
    ts: bigint;
    sigLo: number;
    sigHi: number;
    saddr: number[];
    daddr: number[];
    sport: number;
    dport: number;
    ifindex: number;
    direction: number;
    family: number;
    protocol: number;
    encoding: number;
    cgroupId?: bigint;
  },
): void {
  const at = index * 72;
  const v = new DataView(target.buffer, target.byteOffset + at, 72);
  v.setBigUint64(0, r.ts, true);
  v.setUint32(8, r.sigLo, true);
  v.setUint32(12, r.sigHi, true);
  r.saddr.forEach((b, i) => v.setUint8(16 + i, b));
  r.daddr.forEach((b, i) => v.setUint8(32 + i, b));
  v.setUint16(48, r.sport, true);
  v.setUint16(50, r.dport, true);
  v.setUint32(52, r.ifindex, true);
  v.setUint8(56, r.direction);
  v.setUint8(57, r.family);
  v.setUint8(58, r.protocol);
  v.setUint8(59, r.encoding);
  v.setUint32(60, 0xdeadbeef, true); // padding must be ignored
  v.setBigUint64(64, r.cgroupId ?? 0n, true);
}

function setup(capacity = 16) {
  const endpoints = new EndpointTable({ capacity });
  const observer = new CollectingObserver(endpoints);
  const decoder = new SignatureBatchDecoder(endpoints, observer);
  return { endpoints, observer, decoder };
}

describe('SignatureBatchDecoder', () => {
  it('decodes records laid out as struct sig_record', () => {
    const { observer, decoder } = setup();
    const buffer = new Uint8Array(3 * SIG_RECORD_SIZE);
    const ts = 0x1_2345_6789_abcdn; // beyond 32 bits, exact in a double
    handWritten(buffer, 0, {
      ts,
      sigLo: 0xfedcba98,
      sigHi: 0x89abcdef,
      saddr: [10, 244, 1, 7],
      daddr: [10, 244, 2, 9],
      sport: 40000,
      dport: 5004,
      ifindex: 17,
      direction: 1,
      family: 4,
      protocol: 17,
      encoding: 1,
    });
    const v6 = [0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x12, 0x34];
    handWritten(buffer, 1, {
      ts: ts + 1n,
      sigLo: 1,
      sigHi: 2,
      saddr: v6,
      daddr: [0xfd, ...new Array<number>(14).fill(0), 1],
      sport: 40001,
      dport: 5004,
      ifindex: 0x7fffffff,
      direction: 0,
      family: 6,
      protocol: 17,
      encoding: 0,
    });
    handWritten(buffer, 2, {
      ts: ts + 2n,
      sigLo: 0xfedcba98,
      sigHi: 0x89abcdef,
      saddr: [10, 244, 1, 7],
      daddr: [10, 244, 2, 9],
      sport: 40000,
      dport: 5004,
      ifindex: 17,
      direction: 0,
      family: 4,
      protocol: 6,
      encoding: 1,
    });
    decoder.decode(buffer, 3);
    const [a, b, c] = observer.seen;
    assert.equal(observer.seen.length, 3);
    assert.equal(a.tsNs, Number(ts));
    assert.equal(a.sigLo, 0xfedcba98);
    assert.equal(a.sigHi, 0x89abcdef);
    assert.equal(a.src, '10.244.1.7');
    assert.equal(a.dst, '10.244.2.9');
    assert.equal(a.protocol, 17);
    assert.equal(a.point, (17 << 1) | 1);
    assert.equal(b.tsNs, Number(ts + 1n));
    assert.equal(b.src, 'fd00::1234');
    assert.equal(b.dst, 'fd00::1');
    assert.equal(b.point, 0xfffffffe, 'largest ifindex, ingress');
    assert.notEqual(b.ports, a.ports, 'different source port, different port identity');
    assert.equal(c.ports, a.ports, 'same ports, same identity');
    assert.equal(c.point, 17 << 1);
    assert.equal(c.protocol, 6);
    assert.deepEqual(decoder.stats, {
      batches: 1,
      records: 3,
      badFamily: 0,
      endpointsFull: 0,
      hostPodSources: 0,
      hostPodDestinations: 0,
      localPortEvictions: 0,
    });
  });

  it('agrees with writeSigRecord and decodes an unaligned buffer identically', () => {
    const records = 200; // several decode chunks
    const aligned = new Uint8Array(records * SIG_RECORD_SIZE);
    for (let i = 0; i < records; i++) {
      writeSigRecord(aligned, i, {
        tsNs: 1_000_000_000_000 + i * 20_000_000,
        sigLo: (i * 0x9e3779b1) >>> 0,
        sigHi: i,
        saddr: `10.0.${i % 3}.1`,
        daddr: `10.0.${i % 5}.2`,
        sport: 30000 + (i % 7),
        dport: 5004,
        ifindex: 3 + (i % 2),
        direction: i % 2,
      });
    }
    const backing = new Uint8Array(aligned.length + 3);
    const unaligned = backing.subarray(1, 1 + aligned.length);
    unaligned.set(aligned);
    const first = setup();
    const second = setup();
    first.decoder.decode(aligned, records);
    second.decoder.decode(unaligned, records);
    second.decoder.decode(unaligned, records); // the scratch copy is reused
    assert.equal(first.observer.seen.length, records);
    assert.deepEqual(second.observer.seen.slice(0, records), first.observer.seen);
    assert.deepEqual(second.observer.seen.slice(records), first.observer.seen);
    first.observer.seen.forEach((o, i) => {
      assert.equal(o.tsNs, 1_000_000_000_000 + i * 20_000_000);
      assert.equal(o.sigHi, i);
      assert.equal(o.src, `10.0.${i % 3}.1`);
      assert.equal(o.point, ((3 + (i % 2)) << 1) | i % 2);
    });
  });

  it('gives the same correlation for one big batch as for records one at a time', () => {
    const records = 3000;
    const buffer = new Uint8Array(records * SIG_RECORD_SIZE);
    let seed = 99;
    const rand = (n: number) => {
      seed = (Math.imul(seed, 1103515245) + 12345) >>> 0;
      return (seed >>> 8) % n;
    };
    for (let i = 0; i < records; i++) {
      writeSigRecord(buffer, i, {
        tsNs: 1e12 + i * 100_000,
        sigLo: rand(20),
        sigHi: 0,
        saddr: `10.0.0.${rand(4)}`,
        daddr: `10.0.0.${rand(4)}`,
        sport: 4000 + rand(2),
        dport: 5004,
        ifindex: 1 + rand(3),
        direction: rand(2),
      });
      if (i % 97 === 5) buffer[i * SIG_RECORD_SIZE + 57] = 0; // a bad family now and then
    }
    const run = (batch: number) => {
      const log: string[] = [];
      const endpoints = new EndpointTable({ capacity: 8 });
      const sink = {
        hop: (s: number, d: number, sec: number) => log.push(`hop ${s} ${d} ${sec}`),
        transit: (s: number, d: number, sec: number) => log.push(`transit ${s} ${d} ${sec}`),
        signature: (s: number) => log.push(`signature ${s}`),
        collision: () => log.push('collision'),
      };
      const correlator = new Correlator(sink, { timeoutMs: 50, maxPending: 200 });
      const decoder = new SignatureBatchDecoder(endpoints, correlator);
      for (let i = 0; i < records; i += batch) {
        decoder.decode(buffer.subarray(i * SIG_RECORD_SIZE), Math.min(batch, records - i));
      }
      return { log, stats: decoder.stats };
    };
    const one = run(1);
    const big = run(records);
    const odd = run(77);
    assert.ok(one.log.filter((l) => l.startsWith('hop')).length > 10);
    assert.deepEqual(big.log, one.log);
    assert.deepEqual(odd.log, one.log);
    assert.equal(big.stats.badFamily, one.stats.badFamily);
    assert.equal(big.stats.badFamily, Math.ceil((records - 5) / 97));
  });

  it('decodes only `count` records of a larger buffer', () => {
    const { observer, decoder } = setup();
    const buffer = new Uint8Array(4 * SIG_RECORD_SIZE);
    for (let i = 0; i < 4; i++) {
      writeSigRecord(buffer, i, {
        tsNs: 10 + i,
        sigLo: i,
        sigHi: 0,
        saddr: '10.0.0.1',
        daddr: '10.0.0.2',
        sport: 1,
        dport: 2,
        ifindex: 1,
        direction: 0,
      });
    }
    decoder.decode(buffer, 2);
    assert.deepEqual(
      observer.seen.map((o) => o.sigLo),
      [0, 1],
    );
  });

  it('rejects a buffer too short for count, and a bad count', () => {
    const { decoder } = setup();
    assert.throws(() => decoder.decode(new Uint8Array(100), 2), /2 records need 144 bytes/);
    assert.throws(() => decoder.decode(new Uint8Array(64), -1), /bad record count/);
    decoder.decode(new Uint8Array(0), 0);
    assert.equal(decoder.stats.batches, 1);
  });

  it('counts records with a bad family or no endpoint id, and skips them', () => {
    const { observer, decoder } = setup(2);
    const buffer = new Uint8Array(3 * SIG_RECORD_SIZE);
    const fields = {
      tsNs: 5,
      sigLo: 1,
      sigHi: 1,
      saddr: '10.0.0.1',
      daddr: '10.0.0.2',
      sport: 1,
      dport: 2,
      ifindex: 1,
      direction: 0,
    };
    writeSigRecord(buffer, 0, fields);
    writeSigRecord(buffer, 1, fields);
    buffer[SIG_RECORD_SIZE + 57] = 9; // family
    // A third address while both ids were used within the default minIdleNs of 0 is fine
    // (reclaimed); make the table refuse by using a table with a long minIdleNs instead.
    writeSigRecord(buffer, 2, { ...fields, daddr: '10.0.0.3' });
    const strict = new EndpointTable({ capacity: 2, minIdleNs: 1e9 });
    const strictDecoder = new SignatureBatchDecoder(strict, new CollectingObserver(strict));
    strictDecoder.decode(buffer, 3);
    assert.deepEqual(strictDecoder.stats, {
      batches: 1,
      records: 3,
      badFamily: 1,
      endpointsFull: 1,
      hostPodSources: 0,
      hostPodDestinations: 0,
      localPortEvictions: 0,
    });
    decoder.decode(buffer, 3);
    assert.equal(decoder.stats.badFamily, 1);
    assert.equal(decoder.stats.endpointsFull, 0);
    assert.equal(observer.seen.length, 2);
  });

  it('gives a record whose cgroup is a hostNetwork pod that pod as its source', () => {
    const POD_UID = '3f2a9c1e-5b7d-4e8f-9a0b-1c2d3e4f5a6b';
    const podAddress = hostPodAddress(POD_UID);
    const asked: string[] = [];
    // A cgroup ID beyond 32 bits: both words must reach the resolver, in order.
    const resolver: CgroupSourceResolver = {
      hostPodAddress: (lo, hi) => {
        asked.push(`${hi}:${lo}`);
        return hi === 1 && lo === 0x2345 ? podAddress : null;
      },
    };
    const endpoints = new EndpointTable({
      capacity: 16,
      podLabeler: (uid) => ({ name: `pod ${uid}`, namespace: 'media' }),
    });
    const observer = new CollectingObserver(endpoints);
    const decoder = new SignatureBatchDecoder(endpoints, observer, { cgroupSources: resolver });
    const buffer = new Uint8Array(4 * SIG_RECORD_SIZE);
    const base = {
      sigLo: 7,
      sigHi: 8,
      saddr: [192, 168, 1, 10],
      daddr: [10, 244, 2, 9],
      sport: 30000,
      dport: 5004,
      ifindex: 2,
      direction: 1,
      family: 4,
      protocol: 17,
      encoding: 1,
    };
    handWritten(buffer, 0, { ...base, ts: 100n, cgroupId: 0x1_0000_2345n });
    handWritten(buffer, 1, { ...base, ts: 101n, cgroupId: 0n }); // ingress, or no socket
    handWritten(buffer, 2, { ...base, ts: 102n, cgroupId: 0x1_0000_9999n }); // not a hostNetwork pod
    handWritten(buffer, 3, { ...base, ts: 103n, cgroupId: 0x1_0000_2345n, sport: 30002 });
    decoder.decode(buffer, 4);
    assert.deepEqual(asked, ['1:9029', '1:39321', '1:9029'], 'zero cgroup IDs are never asked');
    const src = observer.seen.map((o) => o.src);
    assert.deepEqual(src, [POD_UID, '192.168.1.10', '192.168.1.10', POD_UID]);
    assert.ok(
      observer.seen.every((o) => o.dst === '10.244.2.9'),
      'destinations stay addresses',
    );
    const pod = endpoints.lookupHostPod(POD_UID);
    assert.ok(pod >= 0);
    assert.equal(endpoints.familyOf(pod), AddressFamily.HostPod);
    assert.deepEqual(endpoints.endpointLabel(pod), { name: `pod ${POD_UID}`, namespace: 'media' });
    assert.equal(endpoints.lookup('192.168.1.10') >= 0, true);
    assert.equal(decoder.stats.hostPodSources, 2);
  });

  it('writeSigRecord writes the cgroup ID where the decoder reads it', () => {
    const buffer = new Uint8Array(SIG_RECORD_SIZE);
    writeSigRecord(buffer, 0, {
      tsNs: 1,
      sigLo: 1,
      sigHi: 1,
      saddr: '10.0.0.1',
      daddr: '10.0.0.2',
      sport: 1,
      dport: 2,
      ifindex: 1,
      direction: 1,
      cgroupId: 0x2_0000_0007n,
    });
    const seen: number[] = [];
    const endpoints = new EndpointTable({ capacity: 4 });
    const decoder = new SignatureBatchDecoder(endpoints, new CollectingObserver(endpoints), {
      cgroupSources: {
        hostPodAddress: (lo, hi) => {
          seen.push(hi, lo);
          return null;
        },
      },
    });
    decoder.decode(buffer, 1);
    assert.deepEqual(seen, [2, 7]);
  });

  describe('hostNetwork destinations by learned local port', () => {
    const R_UID = '3f2a9c1e-5b7d-4e8f-9a0b-1c2d3e4f5a6b';
    const Q_UID = '0c1d2e3f-4a5b-4c6d-8e7f-901a2b3c4d5e';
    const R_CGROUP = 0x1_0000_2345n;
    const Q_CGROUP = 0x1_0000_7777n;
    const NODE_CGROUP = 0x1_0000_0001n; // a process of the node: no pod
    const NODE = '192.168.1.10';
    const MS = 1_000_000;

    /** Resolves R's and Q's cgroups; `deleted` makes R unknown (pod gone). */
    function resolver(state: { deleted: boolean }): CgroupSourceResolver {
      const r = hostPodAddress(R_UID);
      const q = hostPodAddress(Q_UID);
      return {
        hostPodAddress: (lo, hi) => {
          const id = (BigInt(hi) << 32n) | BigInt(lo);
          if (id === R_CGROUP) return state.deleted ? null : r;
          if (id === Q_CGROUP) return q;
          return null;
        },
      };
    }

    function decoderWith(options: { ttlMs?: number } = {}) {
      const state = { deleted: false };
      const endpoints = new EndpointTable({ capacity: 32 });
      const observer = new CollectingObserver(endpoints);
      const decoder = new SignatureBatchDecoder(endpoints, observer, {
        cgroupSources: resolver(state),
        localPortTtlMs: options.ttlMs,
      });
      const decode = (records: Parameters<typeof writeSigRecord>[2][]) => {
        const buffer = new Uint8Array(records.length * SIG_RECORD_SIZE);
        records.forEach((r, i) => writeSigRecord(buffer, i, r));
        const from = observer.seen.length;
        decoder.decode(buffer, records.length);
        return observer.seen.slice(from);
      };
      return { state, endpoints, observer, decoder, decode };
    }

    const base = { sigLo: 1, sigHi: 2, ifindex: 2, protocol: 17 };
    /** A (UDP) packet from a pod-network pod to R's port 30000 on the node, at ingress. */
    const arrival = (tsNs: number, sigLo = 1) => ({
      ...base,
      sigLo,
      tsNs,
      saddr: '10.244.1.7',
      daddr: NODE,
      sport: 40000,
      dport: 30000,
      direction: 0,
    });
    /** R sending from its port 30000 (symmetric RTP), at egress, with its socket's cgroup. */
    const departure = (tsNs: number, cgroupId = R_CGROUP, sigLo = 1) => ({
      ...base,
      sigLo,
      tsNs,
      saddr: NODE,
      daddr: '10.244.2.9',
      sport: 30000,
      dport: 5004,
      direction: 1,
      cgroupId,
    });

    it('attributes an arrival at a learned port to the pod, not before it was learned', () => {
      const { decode, decoder } = decoderWith();
      const [early] = decode([arrival(1 * MS)]);
      assert.equal(early.dst, NODE, 'before R has sent from the port: the node');
      const [dep, later] = decode([departure(2 * MS), arrival(3 * MS)]);
      assert.equal(dep.src, R_UID);
      assert.equal(later.dst, R_UID, 'after: the pod, the endpoint its departures leave from');
      // Other ports, protocols and addresses of the node stay the node's.
      const others = decode([
        { ...arrival(4 * MS), dport: 30001 },
        { ...arrival(4 * MS), protocol: 6 },
        { ...arrival(4 * MS), daddr: '192.168.1.11' },
      ]);
      assert.deepEqual(
        others.map((o) => o.dst),
        [NODE, NODE, '192.168.1.11'],
      );
      assert.equal(decoder.stats.hostPodDestinations, 1);
    });

    it('forgets a port after the TTL, on reuse by another process, and for a deleted pod', () => {
      const { decode, state } = decoderWith({ ttlMs: 100 });
      decode([departure(1 * MS)]);
      assert.equal(decode([arrival(100 * MS)])[0].dst, R_UID, 'within the TTL');
      assert.equal(decode([arrival(102 * MS)])[0].dst, NODE, 'expired: 101 ms after R sent');
      // TCP: one local port both ways; a fresh departure renews it.
      decode([departure(200 * MS)]);
      assert.equal(decode([arrival(250 * MS)])[0].dst, R_UID);
      // Another pod takes the port over: arrivals are its own.
      decode([departure(260 * MS, Q_CGROUP)]);
      assert.equal(decode([arrival(261 * MS)])[0].dst, Q_UID);
      // A process of the node (a cgroup that is no pod) sends from it: no pod any more.
      const [nodeSend] = decode([departure(262 * MS, NODE_CGROUP)]);
      assert.equal(nodeSend.src, NODE);
      assert.equal(decode([arrival(263 * MS)])[0].dst, NODE);
      // Learned again, then the pod is deleted: the node at once.
      decode([departure(264 * MS)]);
      assert.equal(decode([arrival(265 * MS)])[0].dst, R_UID);
      state.deleted = true;
      assert.equal(decode([arrival(266 * MS)])[0].dst, NODE);
    });

    it('pairs a hop through a hostNetwork relay: A -> R -> B gives dest_pod = R', () => {
      const endpoints = new EndpointTable({ capacity: 32, minIdleNs: 1e12 });
      const samples: { value: number; source: string; dest: string }[] = [];
      const sink = {
        hop: (source: number, dest: number, seconds: number) =>
          samples.push({
            value: Math.round(seconds * 1e6) / 1e6,
            source: endpoints.address(source),
            dest: endpoints.address(dest),
          }),
        transit: () => {},
        signature: () => {},
        collision: () => assert.fail('no collision expected'),
      };
      const correlator = new Correlator(sink, { timeoutMs: 30_000, maxPending: 1024 });
      const decoder = new SignatureBatchDecoder(endpoints, correlator, {
        cgroupSources: resolver({ deleted: false }),
      });
      const records = [
        // The first window: R has not sent yet, so it arrives at the node and pairs with nothing.
        arrival(1 * MS, 100),
        departure(21 * MS, R_CGROUP, 100),
        // Every later window arrives at R and leaves R 20 ms later.
        arrival(41 * MS, 101),
        departure(61 * MS, R_CGROUP, 101),
        arrival(81 * MS, 102),
        departure(101 * MS, R_CGROUP, 102),
      ];
      const buffer = new Uint8Array(records.length * SIG_RECORD_SIZE);
      records.forEach((r, i) => writeSigRecord(buffer, i, r));
      decoder.decode(buffer, records.length);
      assert.deepEqual(samples, [
        { value: 0.02, source: '10.244.1.7', dest: R_UID },
        { value: 0.02, source: '10.244.1.7', dest: R_UID },
      ]);
    });

    it('gives a pod packet seen again at ingress (loopback) the pod as source: one flow', () => {
      const { decode } = decoderWith();
      const lo = { ...base, saddr: '127.0.0.1', daddr: '127.0.0.1', sport: 30000, dport: 5004 };
      const seen = decode([
        // Before R has sent from 30000, nothing is known: the node's address.
        { ...lo, tsNs: 1 * MS, direction: 0 },
        { ...lo, tsNs: 2 * MS, direction: 1, cgroupId: R_CGROUP },
        { ...lo, tsNs: 2 * MS + 5000, direction: 0 },
        // At egress a source without a pod cgroup is never taken from the table.
        { ...lo, tsNs: 3 * MS, direction: 1 },
      ]);
      assert.deepEqual(
        seen.map((o) => o.src),
        ['127.0.0.1', R_UID, R_UID, '127.0.0.1'],
      );
    });

    it('LocalPortTable evicts the stalest key of a full probe window, counted', () => {
      const table = new LocalPortTable(8, 1000);
      const words = new Uint32Array(4);
      for (let port = 1; port <= 9; port++) table.learn(port, words, 0, port, 0, port * 1e6);
      assert.equal(table.evictions, 1, '9 keys in 8 slots');
      assert.equal(table.lookup(1, words, 0, 10e6), -1, 'the oldest went');
      for (let port = 2; port <= 9; port++) {
        const slot = table.lookup(port, words, 0, 10e6);
        assert.ok(slot >= 0, `port ${port} kept`);
        assert.equal(table.ownerLo(slot), port);
      }
      assert.throws(() => new LocalPortTable(100), RangeError);
    });
  });
});
