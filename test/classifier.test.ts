/**
 * The TC classifier, end to end through the addon: crafted frames go in with BPF_PROG_TEST_RUN,
 * events come out of the real ring buffer (onRawEvents), counters out of the per-CPU stats map.
 * Every case checks the verdict (always TC_ACT_UNSPEC: the classifier only observes), the events
 * and the counter deltas.
 */
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { after, test, type TestContext } from 'node:test';
import {
  AEV_MAX_CAPTURE,
  AudioEventLayout as L,
  Direction,
  Encoding,
  EventFlag,
  KERNEL_STAT_COUNT,
  KernelStat,
  SIG_RECORD_SIZE,
  SigRecordLayout,
} from '../src/abi.js';
import {
  Classifier,
  NativeError,
  splitRawEvents,
  type ClassifierOptions,
  type TestProgram,
} from '../src/native.js';
import {
  audioBytes,
  buildUdpPacket,
  buildUdpPacketLayout,
  rtcpPayload,
  RtpFlowRule,
  type BuiltPacket,
  type PayloadVerdict,
  type UdpPacketOptions,
} from './support/packets.js';
import { chunk, encodeRawLe16, noise, speechLike } from './support/audio-fixtures.js';
import { requireRoot } from './support/root.js';
import { decodeAudioEvent, type AudioEventRecord } from './support/audio-event.js';
import {
  cgroupDirectory,
  cgroupIdOf,
  readCgroupMounts,
  readProcessCgroup,
} from '../src/k8s/cgroup.js';

const TC_ACT_UNSPEC = -1;
const AUDIO_PORT = 5004;
const OTHER_PORT = 6000;
const DEFAULT_SSRC = 0x11223344; // rtpHeader()'s

interface RunResult {
  retval: number;
  events: AudioEventRecord[];
  delta: number[];
}

/** A classifier with a raw-event tap, opened on first use and closed after the file. */
class Harness {
  readonly events: Uint8Array[] = [];
  sigRecords = 0;
  sigBatches: { records: Uint8Array; count: number }[] = [];
  readonly classifier: Classifier;

  constructor(overrides: Partial<ClassifierOptions> = {}) {
    this.classifier = Classifier.open({
      ringBufferPages: 256,
      audioPorts: [{ from: AUDIO_PORT, to: AUDIO_PORT }],
      algorithm: 'xxhash',
      windowSize: 256,
      silenceThreshold: 10,
      maxFlows: 1024,
      flowTimeoutMs: 60_000,
      onSignatures: (records, count) => {
        this.sigRecords += count;
        this.sigBatches.push({ records: records.slice(), count });
      },
      onRawEvents: (buf, count) => this.events.push(...splitRawEvents(buf, count)),
      ...overrides,
    });
  }

  /** Runs `packet` through a program; returns its verdict, the events and the counter deltas. */
  async run(packet: Uint8Array, prog: TestProgram = 'ingress', repeat = 1): Promise<RunResult> {
    await this.classifier.drain();
    this.events.length = 0;
    const before = this.classifier.stats().kernel;
    const { retval } = this.classifier.testRun(prog, packet, repeat);
    await this.classifier.drain();
    const afterStats = this.classifier.stats().kernel;
    return {
      retval,
      events: this.events.splice(0).map(decodeAudioEvent),
      delta: afterStats.map((v, i) => v - before[i]),
    };
  }
}

const harnesses: Harness[] = [];
let shared: Harness | undefined;

function harness(t: TestContext): Harness | undefined {
  if (!requireRoot(t)) return undefined;
  if (!shared) {
    shared = new Harness();
    harnesses.push(shared);
  }
  return shared;
}

after(() => {
  for (const h of harnesses) h.classifier.close();
});

/** Counter deltas as a sparse record, for readable assertions. */
function counters(delta: number[]): Partial<Record<keyof typeof KernelStat, number>> {
  const out: Partial<Record<keyof typeof KernelStat, number>> = {};
  for (const [name, index] of Object.entries(KernelStat) as [keyof typeof KernelStat, number][]) {
    if (delta[index] !== 0) out[name] = delta[index];
  }
  return out;
}

const AUDIO_COUNTERS = { Packets: 1, Udp: 1, Audio: 1, Events: 1 };

/** Raw PCM whose first byte cannot be mistaken for an RTP version-2 header. */
function rawAudio(length: number, seed = 7): Uint8Array {
  const b = audioBytes(length, seed);
  if (length > 0) b[0] = 0x11;
  return b;
}

function addr4(s: string): Uint8Array {
  const out = new Uint8Array(16);
  out.set(s.split('.').map(Number));
  return out;
}

/** This process's cgroup v2 ID: the inode of its directory under the cgroup2 mount. */
async function ownCgroupId(): Promise<bigint> {
  const mounts = await readCgroupMounts('self');
  const proc = await readProcessCgroup('self');
  assert.ok(mounts?.unified && proc?.unifiedPath !== undefined, 'a cgroup2 mount and 0:: line');
  const dir = cgroupDirectory(mounts.unified, proc.unifiedPath);
  assert.ok(dir !== undefined, `our cgroup ${proc.unifiedPath} under the cgroup2 mount`);
  const id = await cgroupIdOf(dir);
  assert.ok(id !== undefined);
  return id;
}

/** Classifies one packet expected to yield one event, and checks the event against the layout. */
async function expectEvent(
  h: Harness,
  opts: UdpPacketOptions,
  expected: { encoding: number; flags: number; prog?: TestProgram },
  mutate?: (built: BuiltPacket) => void,
): Promise<AudioEventRecord> {
  const built = buildUdpPacketLayout(opts);
  mutate?.(built);
  const { retval, events, delta } = await h.run(built.bytes, expected.prog ?? 'ingress');
  assert.equal(retval, TC_ACT_UNSPEC);
  assert.deepEqual(counters(delta), AUDIO_COUNTERS);
  assert.equal(events.length, 1);
  const ev = events[0];
  assert.equal(ev.family, opts.family ?? 4);
  assert.equal(ev.protocol, 17);
  assert.equal(ev.encoding, expected.encoding, 'encoding');
  assert.equal(ev.flags, expected.flags, 'flags');
  assert.equal(ev.sport, opts.sport ?? 40000);
  assert.equal(ev.dport, opts.dport ?? AUDIO_PORT);
  assert.equal(ev.payloadOff, built.audioOffset, 'payload offset');
  assert.equal(ev.payloadLen, built.audioLength, 'payload length');
  assert.equal(ev.capturedLen, Math.min(built.audioLength, AEV_MAX_CAPTURE));
  assert.equal(ev.byteLength, L.data + ev.capturedLen, 'record is header + captured bytes');
  // BPF_PROG_TEST_RUN gives its skb a socket made in the caller's cgroup: egress reports that
  // cgroup (ours), ingress never reads one.
  const prog = expected.prog ?? 'ingress';
  assert.equal(ev.cgroupId, prog === 'egress' ? await ownCgroupId() : 0n, 'sender cgroup ID');
  assert.deepEqual(
    ev.data,
    built.bytes.slice(built.audioOffset, built.audioOffset + ev.capturedLen),
    'data bytes are the packet payload',
  );
  assert.ok(ev.ifindex > 0);
  return ev;
}

test('IPv4 raw UDP: RAW_LE16 over the whole payload, addresses and ports', async (t) => {
  const h = harness(t);
  if (!h) return;
  const ev = await expectEvent(
    h,
    { src: '10.1.2.3', dst: '10.4.5.6', sport: 40010, payload: rawAudio(320) },
    { encoding: Encoding.RawLe16, flags: 0 },
  );
  assert.deepEqual(ev.saddr, addr4('10.1.2.3'));
  assert.deepEqual(ev.daddr, addr4('10.4.5.6'));
  assert.equal(ev.direction, Direction.Ingress);
});

test('egress program reports the egress direction; a source-port match is audio too', async (t) => {
  const h = harness(t);
  if (!h) return;
  const ev = await expectEvent(
    h,
    { sport: AUDIO_PORT, dport: 33333, payload: rawAudio(160) },
    { encoding: Encoding.RawLe16, flags: 0, prog: 'egress' },
  );
  assert.equal(ev.direction, Direction.Egress);
});

test('IPv6 UDP with RTP: addresses in full, payload after the RTP header', async (t) => {
  const h = harness(t);
  if (!h) return;
  const ev = await expectEvent(
    h,
    {
      family: 6,
      src: 'fd00:a17::1',
      dst: '2001:db8::42',
      rtp: { payloadType: 0 },
      payload: audioBytes(160, 3),
    },
    { encoding: Encoding.Pcmu, flags: EventFlag.Rtp },
  );
  assert.equal(Buffer.from(ev.saddr).toString('hex'), 'fd000a17000000000000000000000001');
  assert.equal(Buffer.from(ev.daddr).toString('hex'), '20010db8000000000000000000000042');
});

test('single 802.1Q and double 802.1ad+802.1Q tags', async (t) => {
  const h = harness(t);
  if (!h) return;
  await expectEvent(
    h,
    { vlans: [{ vid: 100 }], rtp: { payloadType: 8 }, payload: audioBytes(160, 4) },
    { encoding: Encoding.Pcma, flags: EventFlag.Rtp | EventFlag.Vlan },
  );
  await expectEvent(
    h,
    {
      family: 6,
      vlans: [{ tpid: 0x88a8, vid: 10 }, { vid: 20 }],
      sport: 40101, // its own flow: raw PCM first would make the default flow's next RTP raw
      payload: rawAudio(200),
    },
    { encoding: Encoding.RawLe16, flags: EventFlag.Vlan },
  );
});

test('three VLAN tags are deeper than parsed: passed, no event', async (t) => {
  const h = harness(t);
  if (!h) return;
  const pkt = buildUdpPacket({
    vlans: [{ tpid: 0x88a8, vid: 1 }, { vid: 2 }, { vid: 3 }],
    payload: rawAudio(64),
  });
  const r = await h.run(pkt);
  assert.equal(r.retval, TC_ACT_UNSPEC);
  assert.equal(r.events.length, 0);
  assert.deepEqual(counters(r.delta), { Packets: 1 });
});

test('IPv4 options of every length (IHL 6..15)', async (t) => {
  const h = harness(t);
  if (!h) return;
  for (let words = 1; words <= 10; words++) {
    // NOPs (1) then an end-of-list padding: the classifier only needs IHL.
    await expectEvent(
      h,
      {
        ipv4Options: new Uint8Array(words * 4).fill(1),
        rtp: { payloadType: 10 },
        payload: audioBytes(64, words),
      },
      { encoding: Encoding.L16Be, flags: EventFlag.Rtp },
    );
  }
});

test('IPv6 extension header chains', async (t) => {
  const h = harness(t);
  if (!h) return;
  const chains: UdpPacketOptions['ipv6Ext'][] = [
    [{ type: 'hop' }],
    [
      { type: 'hop', length: 16 },
      { type: 'routing', length: 24 },
      { type: 'dest', length: 8 },
    ],
    [{ type: 'dest' }, { type: 'fragment' }], // atomic fragment: offset 0, M = 0
    [
      { type: 'hop' },
      { type: 'dest' },
      { type: 'routing' },
      { type: 'dest' },
      { type: 'fragment' },
      { type: 'dest', length: 2048 },
    ],
  ];
  for (const ipv6Ext of chains) {
    await expectEvent(
      h,
      { family: 6, ipv6Ext, rtp: { payloadType: 11 }, payload: audioBytes(100, 9) },
      { encoding: Encoding.L16Be, flags: EventFlag.Rtp },
    );
  }
});

test('IPv6 chains deeper than six extension headers are malformed', async (t) => {
  const h = harness(t);
  if (!h) return;
  const ipv6Ext = Array.from({ length: 7 }, () => ({ type: 'dest' as const }));
  const r = await h.run(buildUdpPacket({ family: 6, ipv6Ext, payload: rawAudio(32) }));
  assert.equal(r.retval, TC_ACT_UNSPEC);
  assert.equal(r.events.length, 0);
  assert.deepEqual(counters(r.delta), { Packets: 1, Malformed: 1 });
});

test('RTP with CSRCs, header extension and padding: audio offset and length exact', async (t) => {
  const h = harness(t);
  if (!h) return;
  const cases: { pt: number; encoding: number }[] = [
    { pt: 0, encoding: Encoding.Pcmu },
    { pt: 8, encoding: Encoding.Pcma },
    { pt: 10, encoding: Encoding.L16Be },
    { pt: 11, encoding: Encoding.L16Be },
    { pt: 96, encoding: Encoding.Opaque },
    { pt: 111, encoding: Encoding.Opaque },
  ];
  for (const { pt, encoding } of cases) {
    for (const family of [4, 6] as const) {
      await expectEvent(
        h,
        {
          family,
          rtp: {
            payloadType: pt,
            marker: true,
            csrcs: [1, 2, 3],
            extension: { words: [0xdeadbeef, 0x01020304] },
            padding: 5,
          },
          payload: audioBytes(160, pt + 1),
        },
        { encoding, flags: EventFlag.Rtp },
      );
    }
  }
  // Fifteen CSRCs, an empty extension, one byte of padding.
  await expectEvent(
    h,
    {
      rtp: {
        payloadType: 0,
        csrcs: Array.from({ length: 15 }, (_, i) => i),
        extension: { words: [] },
        padding: 1,
      },
      payload: audioBytes(40, 5),
    },
    { encoding: Encoding.Pcmu, flags: EventFlag.Rtp },
  );
});

test('RTCP, comfort noise and empty payloads are not audio', async (t) => {
  const h = harness(t);
  if (!h) return;
  const notAudio: UdpPacketOptions[] = [
    { rtp: { payloadType: 13 }, payload: audioBytes(10) }, // CN
    { rtp: { payloadType: 19 }, payload: audioBytes(10) }, // old CN
    // RTCP (rtcp-mux) from the same sender: its packet types read as marker bit + PT 72..76.
    ...[200, 201, 202, 203, 204].map((packetType) => ({
      payload: rtcpPayload({ packetType, ssrc: DEFAULT_SSRC, words: [1, 2, 3, 4, 5] }),
    })),
    { rtp: { payloadType: 0 } }, // header only
    { rtp: { payloadType: 0, padding: 4 } }, // padding only
    { payload: new Uint8Array(0) }, // empty UDP
  ];
  for (const opts of notAudio) {
    const r = await h.run(buildUdpPacket(opts));
    assert.equal(r.retval, TC_ACT_UNSPEC);
    assert.equal(r.events.length, 0, JSON.stringify(opts.rtp));
    assert.deepEqual(counters(r.delta), { Packets: 1, Udp: 1, NotAudio: 1 });
  }
});

test('non-audio ports: no event, PORT_MISS counted, payload never read', async (t) => {
  const h = harness(t);
  if (!h) return;
  for (const family of [4, 6] as const) {
    const r = await h.run(
      buildUdpPacket({ family, sport: OTHER_PORT, dport: OTHER_PORT + 1, payload: rawAudio(100) }),
    );
    assert.equal(r.retval, TC_ACT_UNSPEC);
    assert.equal(r.events.length, 0);
    assert.deepEqual(counters(r.delta), { Packets: 1, Udp: 1, PortMiss: 1 });
  }
});

test('non-IP and non-UDP/TCP frames pass uncounted beyond PACKETS', async (t) => {
  const h = harness(t);
  if (!h) return;
  const arp = buildUdpPacket({ payload: rawAudio(28) });
  arp[12] = 0x08;
  arp[13] = 0x06;
  // TCP is parsed too (test/classifier-tcp.test.ts): SCTP and ICMP stand for the rest.
  const sctp = buildUdpPacket({ payload: rawAudio(28) });
  sctp[14 + 9] = 132;
  const icmp = buildUdpPacket({ payload: rawAudio(28) });
  icmp[14 + 9] = 1;
  for (const pkt of [arp, sctp, icmp]) {
    const r = await h.run(pkt);
    assert.equal(r.retval, TC_ACT_UNSPEC);
    assert.equal(r.events.length, 0);
    assert.deepEqual(counters(r.delta), { Packets: 1 });
  }
});

test('truncated at every offset of a valid RTP/IPv6 packet: never an event', async (t) => {
  const h = harness(t);
  if (!h) return;
  const pkt = buildUdpPacket({
    family: 6,
    vlans: [{ vid: 7 }],
    ipv6Ext: [{ type: 'hop' }, { type: 'fragment' }],
    rtp: { payloadType: 0, csrcs: [9], extension: { words: [1] }, padding: 3 },
    payload: audioBytes(48),
  });
  const ETH_HLEN = 14;
  // The kernel refuses to build an skb shorter than an Ethernet header.
  for (let len = 0; len < ETH_HLEN; len++) {
    assert.throws(
      () => h.classifier.testRun('ingress', pkt.subarray(0, len)),
      (e: unknown) => e instanceof NativeError && e.code === 'EINVAL',
    );
  }
  for (let len = ETH_HLEN; len < pkt.length; len++) {
    const r: RunResult = await h.run(pkt.slice(0, len));
    assert.equal(r.retval, TC_ACT_UNSPEC, `length ${len}`);
    assert.equal(r.events.length, 0, `length ${len}`);
    assert.deepEqual(counters(r.delta), { Packets: 1, Malformed: 1 }, `length ${len}`);
  }
});

test('inconsistent lengths are malformed', async (t) => {
  const h = harness(t);
  if (!h) return;
  const payload = audioBytes(64);
  // The flow is RTP already (SSRC seen): its header checks decide. On a flow's very first packet
  // an inconsistent header is not RTP at all (see the RTP recognition tests below).
  const prime = await h.run(buildUdpPacket({ rtp: { payloadType: 0 }, payload }));
  assert.equal(prime.events[0]?.flags, EventFlag.Rtp);
  const udpLen = 8 + 12 + payload.length;
  const malformed: [string, UdpPacketOptions][] = [
    ['IHL < 5', { ipv4Ihl: 4, payload }],
    ['IHL beyond the packet', { ipv4Ihl: 15, payload: payload.subarray(0, 8) }],
    ['UDP length too long', { rtp: { payloadType: 0 }, payload, udpLength: udpLen + 4 }],
    ['UDP length too short', { rtp: { payloadType: 0 }, payload, udpLength: udpLen - 4 }],
    ['UDP length below its header', { payload, udpLength: 7 }],
    ['IPv4 total length beyond the frame', { payload, ipTotalLength: 20 + udpLen + 100 }],
    ['IPv6 payload length zero (jumbogram)', { family: 6, payload, ipTotalLength: 0 }],
    [
      'RTP CC beyond the payload',
      { rtp: { payloadType: 0, ccOverride: 15 }, payload: payload.subarray(0, 40) },
    ],
    [
      'RTP padding larger than the payload',
      { rtp: { payloadType: 0, padding: 4, paddingCountOverride: 200 }, payload },
    ],
    [
      'RTP padding count zero',
      { rtp: { payloadType: 0, padding: 4, paddingCountOverride: 0 }, payload },
    ],
  ];
  for (const [what, opts] of malformed) {
    const r = await h.run(buildUdpPacket(opts));
    assert.equal(r.retval, TC_ACT_UNSPEC, what);
    assert.equal(r.events.length, 0, what);
    const c = counters(r.delta);
    assert.equal(c.Malformed, 1, what);
    assert.equal(c.Events, undefined, what);
  }
  // X set but no room for the extension header; an extension length overrunning the payload.
  const noExt = buildUdpPacketLayout({ rtp: { payloadType: 0 }, payload: payload.subarray(0, 2) });
  noExt.bytes[noExt.udpPayloadOffset] |= 0x10;
  const longExt = buildUdpPacketLayout({
    rtp: { payloadType: 0, extension: { words: [1] } },
    payload,
  });
  longExt.bytes[longExt.udpPayloadOffset + 12 + 2] = 0xff;
  for (const b of [noExt, longExt]) {
    const r = await h.run(b.bytes);
    assert.deepEqual(counters(r.delta), { Packets: 1, Udp: 1, Malformed: 1 });
  }
});

test('fragments: non-first passed and counted, first fragment carries its bytes', async (t) => {
  const h = harness(t);
  if (!h) return;
  const payload = audioBytes(64);
  for (const opts of [
    { fragmentOffset: 185, payload },
    { fragmentOffset: 1, moreFragments: true, payload },
    { family: 6 as const, ipv6Ext: [{ type: 'fragment' as const, fragmentOffset: 185 }], payload },
    {
      family: 6 as const,
      ipv6Ext: [
        { type: 'hop' as const },
        { type: 'fragment' as const, fragmentOffset: 3, moreFragments: true },
      ],
      payload,
    },
  ]) {
    const r = await h.run(buildUdpPacket(opts));
    assert.equal(r.retval, TC_ACT_UNSPEC);
    assert.equal(r.events.length, 0);
    assert.deepEqual(counters(r.delta), { Packets: 1, Fragments: 1 });
  }
  // A first fragment: the UDP length covers the whole datagram, the packet only its start.
  for (const family of [4, 6] as const) {
    const frag =
      family === 4
        ? { moreFragments: true }
        : { ipv6Ext: [{ type: 'fragment' as const, moreFragments: true }] };
    await expectEvent(
      h,
      { family, ...frag, rtp: { payloadType: 8 }, payload, udpLength: 8 + 12 + 1400 },
      { encoding: Encoding.Pcma, flags: EventFlag.Rtp },
      (b) => {
        // P set, as in the first fragment of a padded packet: the padding count sits in the
        // last fragment, so nothing may be trimmed here.
        b.bytes[b.udpPayloadOffset] |= 0x20;
      },
    );
  }
});

test('payloads longer than AEV_MAX_CAPTURE are truncated and flagged', async (t) => {
  const h = harness(t);
  if (!h) return;
  const built = buildUdpPacketLayout({ sport: 40102, payload: rawAudio(3000) });
  const r = await h.run(built.bytes);
  assert.deepEqual(counters(r.delta), { ...AUDIO_COUNTERS, Truncated: 1 });
  const [ev] = r.events;
  assert.equal(ev.flags, EventFlag.Truncated);
  assert.equal(ev.payloadLen, 3000);
  assert.equal(ev.capturedLen, AEV_MAX_CAPTURE);
  assert.deepEqual(
    ev.data,
    built.bytes.slice(built.audioOffset, built.audioOffset + AEV_MAX_CAPTURE),
  );
});

test('a stream of audio packets yields signature records for its flow', async (t) => {
  const h = harness(t);
  if (!h) return;
  const before = h.classifier.stats();
  const recordsBefore = h.sigRecords;
  h.sigBatches = [];
  for (let i = 0; i < 40; i++) {
    h.classifier.testRun(
      'ingress',
      buildUdpPacket({
        sport: 41000,
        rtp: { payloadType: 11, seq: i },
        payload: audioBytes(320, 100 + i),
      }),
    );
  }
  await h.classifier.drain();
  const stats = h.classifier.stats();
  const delivered = h.sigRecords - recordsBefore;
  assert.ok(delivered > 0, 'some windows completed');
  assert.equal(delivered, stats.engine.signatures - before.engine.signatures);
  assert.equal(stats.engine.bytes - before.engine.bytes, 40 * 320);
  for (const { records, count } of h.sigBatches) {
    assert.equal(records.byteLength, count * SIG_RECORD_SIZE);
    const v = new DataView(records.buffer, records.byteOffset, records.byteLength);
    for (let i = 0; i < count; i++) {
      const at = i * SIG_RECORD_SIZE;
      assert.equal(v.getUint16(at + SigRecordLayout.sport, true), 41000);
      assert.equal(v.getUint16(at + SigRecordLayout.dport, true), AUDIO_PORT);
      assert.equal(records[at + SigRecordLayout.family], 4);
      assert.equal(records[at + SigRecordLayout.encoding], Encoding.L16Be);
    }
  }
  assert.ok(stats.ringbuf.records >= 40);
  assert.equal(stats.kernel.length, KERNEL_STAT_COUNT);
});

test("AUDIO_PORTS 'all' makes every UDP port an audio port", async (t) => {
  if (!requireRoot(t)) return;
  const h = new Harness({ audioPorts: 'all' });
  harnesses.push(h);
  const r = await h.run(buildUdpPacket({ sport: 1, dport: 65535, payload: rawAudio(32) }));
  assert.deepEqual(counters(r.delta), AUDIO_COUNTERS);
  assert.equal(r.events.length, 1);
});

test('a full ring buffer loses events, counted: EVENTS + LOST == AUDIO', async (t) => {
  if (!requireRoot(t)) return;
  const h = new Harness({ ringBufferPages: 1 });
  harnesses.push(h);
  const pkt = buildUdpPacket({ rtp: { payloadType: 0 }, payload: audioBytes(160) });
  const r = await h.run(pkt, 'ingress', 5000);
  const c = counters(r.delta);
  assert.equal(c.Audio, 5000);
  assert.ok((c.Lost ?? 0) > 0, `expected losses with a 4 KiB ring, got ${JSON.stringify(c)}`);
  assert.equal((c.Events ?? 0) + (c.Lost ?? 0), c.Audio);
  assert.equal(r.events.length, c.Events, 'every submitted event was consumed');
});

// RTP recognition is per flow (docs/signatures.md, "What counts as RTP"): the SSRC decides, not the
// first byte alone. Each test below uses flows of its own: the state outlives a test.

/** One second of speech over noise as raw LE16, 50 packets of 20 ms, each starting 0b10xxxxxx. */
function rtpLookingPcm(seed: number): Uint8Array[] {
  const speech = speechLike({ seconds: 1, seed }).samples;
  const hiss = noise(1, 400, seed);
  const mixed = Int16Array.from(speech, (v, i) => Math.max(-32768, Math.min(32767, v + hiss[i])));
  return chunk(encodeRawLe16(mixed), 320).map((p) => {
    const out = Uint8Array.from(p);
    out[0] = 0x80 | (out[0] & 0x3f); // version 2, any P/X/CC
    return out;
  });
}

/** PCMU over RTP, 20 ms packets, SSRC per packet. */
function rtpFlow(sport: number, count: number, ssrcOf: (i: number) => number): BuiltPacket[] {
  return Array.from({ length: count }, (_, i) =>
    buildUdpPacketLayout({
      sport,
      rtp: { payloadType: 0, seq: i, timestamp: i * 160, ssrc: ssrcOf(i) },
      payload: audioBytes(160, 200 + i),
    }),
  );
}

/** Each packet through `prog`, one at a time, in order. */
async function classifyAll(
  h: Harness,
  built: readonly BuiltPacket[],
  prog: TestProgram = 'ingress',
): Promise<RunResult[]> {
  const out: RunResult[] = [];
  for (const b of built) {
    const r = await h.run(b.bytes, prog);
    assert.equal(r.retval, TC_ACT_UNSPEC);
    out.push(r);
  }
  return out;
}

function udpPayload(b: BuiltPacket): Uint8Array {
  return b.bytes.subarray(b.udpPayloadOffset);
}

/** The event (or its absence) is what `v` says: kind, encoding, flags, span and bytes. */
function assertVerdict(r: RunResult, b: BuiltPacket, v: PayloadVerdict, what: string): void {
  if (v.kind === 'not-audio' || v.kind === 'malformed') {
    assert.equal(r.events.length, 0, what);
    assert.equal(counters(r.delta)[v.kind === 'malformed' ? 'Malformed' : 'NotAudio'], 1, what);
    return;
  }
  assert.equal(r.events.length, 1, what);
  const ev = r.events[0];
  assert.equal(ev.encoding, v.encoding, `${what}: encoding`);
  assert.equal(ev.flags, v.kind === 'rtp' ? EventFlag.Rtp : 0, `${what}: flags`);
  assert.equal(ev.payloadOff, b.udpPayloadOffset + v.audioOffset, `${what}: offset`);
  assert.equal(ev.payloadLen, v.audioLength, `${what}: length`);
  assert.deepEqual(ev.data, b.bytes.slice(ev.payloadOff, ev.payloadOff + v.audioLength), what);
}

function assertRaw(r: RunResult, b: BuiltPacket, what: string): void {
  const payload = udpPayload(b);
  assertVerdict(
    r,
    b,
    { kind: 'raw', encoding: Encoding.RawLe16, audioOffset: 0, audioLength: payload.length },
    what,
  );
}

function assertRtp(r: RunResult, b: BuiltPacket, encoding: number, what: string): void {
  const v: PayloadVerdict = {
    kind: 'rtp',
    encoding,
    audioOffset: b.audioOffset - b.udpPayloadOffset,
    audioLength: b.audioLength,
  };
  assertVerdict(r, b, v, what);
}

test("raw PCM starting like RTP version 2 is raw, all of it, after the flow's first packet", async (t) => {
  const h = harness(t);
  if (!h) return;
  const built = rtpLookingPcm(11).map((payload) => buildUdpPacketLayout({ sport: 42001, payload }));
  assert.equal(built.length, 50);
  const runs = await classifyAll(h, built);
  // The first packet meets a flow with no state: a consistent header is taken at its word.
  const first = new RtpFlowRule().classify(udpPayload(built[0]));
  assertVerdict(runs[0], built[0], first, 'packet 0');
  for (let i = 1; i < built.length; i++) assertRaw(runs[i], built[i], `packet ${i}`);
});

test('RTP with one SSRC is RTP from its first packet; its comfort noise and RTCP are not audio', async (t) => {
  const h = harness(t);
  if (!h) return;
  const SSRC = 0x5eed0001;
  const built = rtpFlow(42002, 30, () => SSRC);
  // Interleaved by the same sender: comfort noise (PT 13) and an RTCP sender report (rtcp-mux).
  built.splice(
    10,
    0,
    buildUdpPacketLayout({
      sport: 42002,
      rtp: { payloadType: 13, seq: 1000, ssrc: SSRC },
      payload: Uint8Array.of(40),
    }),
  );
  built.splice(
    20,
    0,
    buildUdpPacketLayout({
      sport: 42002,
      payload: rtcpPayload({ packetType: 200, ssrc: SSRC, words: [1, 2, 3, 4, 5] }),
    }),
  );
  const runs = await classifyAll(h, built);
  runs.forEach((r, i) => {
    if (i === 10 || i === 20) {
      assert.equal(r.events.length, 0, `packet ${i}`);
      assert.deepEqual(counters(r.delta), { Packets: 1, Udp: 1, NotAudio: 1 }, `packet ${i}`);
    } else {
      assertRtp(r, built[i], Encoding.Pcmu, `packet ${i}`);
    }
  });
});

test('an SSRC change (a relay restarting) costs exactly one packet, taken as raw', async (t) => {
  const h = harness(t);
  if (!h) return;
  const built = rtpFlow(42003, 40, (i) => (i < 20 ? 0x5eed000a : 0x5eed000b));
  const runs = await classifyAll(h, built);
  const rule = new RtpFlowRule();
  runs.forEach((r, i) => {
    if (i === 20) assertRaw(r, built[i], 'first packet of the new SSRC');
    else assertRtp(r, built[i], Encoding.Pcmu, `packet ${i}`);
    // The tests' mirror of the rule agrees (the parity test relies on it).
    assertVerdict(r, built[i], rule.classify(udpPayload(built[i])), `mirror, packet ${i}`);
  });
});

test('a flow that began with a non-RTP payload needs two packets of one SSRC', async (t) => {
  const h = harness(t);
  if (!h) return;
  // A STUN binding request (ICE keep-alive) first: not RTP-shaped (first byte 0x00).
  const stun = Uint8Array.of(0, 1, 0, 0, 0x21, 0x12, 0xa4, 0x42, ...audioBytes(12, 5));
  const built = [
    buildUdpPacketLayout({ sport: 42006, payload: stun }),
    ...rtpFlow(42006, 5, () => 0x5eed0006),
  ];
  const runs = await classifyAll(h, built);
  assertRaw(runs[0], built[0], 'STUN');
  assertRaw(runs[1], built[1], 'first RTP packet');
  for (let i = 2; i < built.length; i++) assertRtp(runs[i], built[i], Encoding.Pcmu, `packet ${i}`);
});

test('one packet seen at two observation points gets one verdict', async (t) => {
  const h = harness(t);
  if (!h) return;
  const flows = [
    rtpLookingPcm(12).map((payload) => buildUdpPacketLayout({ sport: 42004, payload })),
    rtpFlow(42005, 30, (i) => (i < 10 ? 0x5eed0004 : 0x5eed0005)),
  ];
  for (const built of flows) {
    const rule = new RtpFlowRule();
    for (const [i, b] of built.entries()) {
      // Out of one pod's veth (egress), into another's (ingress): one map, one packet, twice.
      const out = await h.run(b.bytes, 'egress');
      const into = await h.run(b.bytes, 'ingress');
      const v = rule.classify(udpPayload(b));
      assertVerdict(out, b, v, `egress, packet ${i}`);
      assertVerdict(into, b, v, `ingress, packet ${i}`);
    }
  }
});

test('libbpf writes nothing to stderr; a failing operation still carries its text', (t) => {
  if (!requireRoot(t)) return;
  // The agent logs JSON on stdout: a stray stderr line from libbpf (it warns about the hooks we
  // probe: "Parent Qdisc doesn't exists", an existing qdisc) is noise. A child process, so its
  // stderr is its own, in a namespace of its own with a veth pair: q0 bare, q1 with clsact.
  const ns = `altq${process.pid % 100000}`;
  const inNs = (...args: string[]): void => {
    execFileSync('ip', ['netns', 'exec', ns, ...args], { stdio: 'ignore' });
  };
  execFileSync('ip', ['netns', 'add', ns]);
  t.after(() => execFileSync('ip', ['netns', 'del', ns]));
  inNs('ip', 'link', 'add', 'q0', 'type', 'veth', 'peer', 'name', 'q1');
  inNs('ip', 'link', 'set', 'q0', 'up');
  inNs('ip', 'link', 'set', 'q1', 'up');
  inNs('tc', 'qdisc', 'add', 'dev', 'q1', 'clsact');
  const script = `
    import { Classifier } from ${JSON.stringify(new URL('../src/native.js', import.meta.url).href)};
    const opts = {
      ringBufferPages: 16, audioPorts: 'all', algorithm: 'xxhash', windowSize: 256,
      silenceThreshold: 10, maxFlows: 64, flowTimeoutMs: 1000, runStats: false,
      onSignatures: () => {},
    };
    const c = Classifier.open(opts);
    const stale = [c.removeStale('q0'), c.removeStale('q1')];
    const modes = [c.attach('q0', { mode: 'tc' }).mode, c.attach('q1', { mode: 'tc' }).mode];
    c.detach('q0');
    c.detach('q1');
    stale.push(c.removeStale('q0'), c.removeStale('q1'));
    let detail = '';
    try {
      Classifier.open({ ...opts, bpfObjectPath: '/dev/null' });
    } catch (e) {
      detail = e.detail;
    }
    c.close();
    console.log(JSON.stringify({ stale, modes, detail }));
  `;
  const child = spawnSync(
    'ip',
    ['netns', 'exec', ns, process.execPath, '--input-type=module', '-e', script],
    { encoding: 'utf8' },
  );
  assert.equal(child.status, 0, child.stderr);
  assert.equal(child.stderr, '', 'nothing on stderr');
  const out = JSON.parse(child.stdout) as { stale: number[]; modes: string[]; detail: string };
  assert.deepEqual(out.stale, [0, 0, 0, 0]);
  assert.deepEqual(out.modes, ['tc', 'tc']);
  assert.match(out.detail, /^libbpf: .*not a proper ELF object/m, 'the failure keeps its text');
});
