/**
 * The TypeScript reference of the signature scheme (docs/signatures.md):
 * hash vectors, G.711, the silence gate, and the properties the scheme
 * exists for (framing invariance, late joiners, density). No root needed.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import { Encoding } from '../src/abi.js';
import {
  ALAW_TO_LINEAR,
  alawToLinear,
  anchorBits,
  crc32,
  GEAR,
  GEAR_SEED,
  GearHash,
  isSilentWindow,
  linearToAlaw,
  linearToUlaw,
  rollingHash,
  signPackets,
  splitmix64,
  StreamSigner,
  ULAW_TO_LINEAR,
  ulawToLinear,
  xxh64,
} from '../src/signature/index.js';
import type {
  ReferenceSignature,
  SignatureAlgorithm,
  SignerConfig,
} from '../src/signature/index.js';
import {
  chunk,
  chunkRandom,
  createRng,
  encodeL16Be,
  encodePcma,
  encodePcmu,
  encodeRawLe16,
  noise,
  sineTone,
  speechLike,
} from './support/audio-fixtures.js';

const ALGORITHMS: SignatureAlgorithm[] = ['xxhash', 'crc32', 'rolling_hash'];
const M64 = (1n << 64n) - 1n;
const text = (s: string): Uint8Array => new TextEncoder().encode(s);

function cfg(
  algorithm: SignatureAlgorithm,
  windowSize = 256,
  silenceThreshold = 256,
): SignerConfig {
  return { algorithm, windowSize, silenceThreshold };
}

function sign(c: SignerConfig, encoding: Encoding, packets: Uint8Array[]): ReferenceSignature[] {
  return signPackets(
    c,
    packets.map((audio) => ({ encoding, audio })),
  );
}

/** What must not depend on framing: the value, the window's place and its encoding. */
function framingFree(sigs: ReferenceSignature[]): string[] {
  return sigs.map((s) => `${s.windowStart}:${s.encoding}:${s.sig.toString(16)}`);
}

/** XXH64 straight from the spec in BigInt: slow, obviously right, an independent check. */
function xxh64BigInt(d: Uint8Array, seed = 0n): bigint {
  const P1 = 0x9e3779b185ebca87n;
  const P2 = 0xc2b2ae3d27d4eb4fn;
  const P3 = 0x165667b19e3779f9n;
  const P4 = 0x85ebca77c2b2ae63n;
  const P5 = 0x27d4eb2f165667c5n;
  const rotl = (x: bigint, r: bigint): bigint => ((x << r) | (x >> (64n - r))) & M64;
  const round = (acc: bigint, v: bigint): bigint => (rotl((acc + v * P2) & M64, 31n) * P1) & M64;
  const merge = (acc: bigint, v: bigint): bigint => (((acc ^ round(0n, v)) * P1) & M64) + P4;
  const view = new DataView(d.buffer, d.byteOffset, d.byteLength);
  let p = 0;
  let h: bigint;
  if (d.length >= 32) {
    const v = [(seed + P1 + P2) & M64, (seed + P2) & M64, seed, (seed - P1) & M64];
    for (; p + 32 <= d.length; p += 32)
      for (let k = 0; k < 4; k++) v[k] = round(v[k], view.getBigUint64(p + 8 * k, true));
    h = (rotl(v[0], 1n) + rotl(v[1], 7n) + rotl(v[2], 12n) + rotl(v[3], 18n)) & M64;
    for (const x of v) h = merge(h, x) & M64;
  } else {
    h = (seed + P5) & M64;
  }
  h = (h + BigInt(d.length)) & M64;
  for (; p + 8 <= d.length; p += 8)
    h = (rotl(h ^ round(0n, view.getBigUint64(p, true)), 27n) * P1 + P4) & M64;
  if (p + 4 <= d.length) {
    h = (rotl(h ^ ((BigInt(view.getUint32(p, true)) * P1) & M64), 23n) * P2 + P3) & M64;
    p += 4;
  }
  for (; p < d.length; p++) h = (rotl(h ^ ((BigInt(d[p]) * P5) & M64), 11n) * P1) & M64;
  h ^= h >> 33n;
  h = (h * P2) & M64;
  h ^= h >> 29n;
  h = (h * P3) & M64;
  return h ^ (h >> 32n);
}

function randomBytes(n: number, seed: number): Uint8Array {
  const rng = createRng(seed);
  return Uint8Array.from({ length: n }, () => Math.floor(rng() * 256));
}

describe('xxh64', () => {
  it('matches the published vectors for strings', () => {
    const vectors: Array<[string, bigint]> = [
      ['', 0xef46db3751d8e999n],
      ['a', 0xd24ec4f1a98c6e5bn],
      ['abc', 0x44bc2cf5ad770999n],
      ['message digest', 0x066ed728fceeb3ben],
      ['abcdefghijklmnopqrstuvwxyz', 0xcfe1f278fa89835cn],
      ['Nobody inspects the spammish repetition', 0xfbcea83c8a378bf1n],
    ];
    for (const [input, want] of vectors)
      assert.equal(xxh64(text(input)), want, `xxh64("${input}")`);
  });

  it("matches xxHash's own sanity vectors (seeded, multi-stripe)", () => {
    // xxHash cli/xsum_sanity_check.c: buffer[i] = byteGen >> 56; byteGen *= PRIME64, from PRIME32.
    const PRIME32 = 2654435761n;
    const buf = new Uint8Array(222);
    let gen = PRIME32;
    for (let i = 0; i < buf.length; i++) {
      buf[i] = Number(gen >> 56n);
      gen = (gen * 11400714785074694797n) & M64;
    }
    const vectors: Array<[number, bigint, bigint]> = [
      [0, 0n, 0xef46db3751d8e999n],
      [0, PRIME32, 0xac75fda2929b17efn],
      [1, 0n, 0xe934a84adb052768n],
      [1, PRIME32, 0x5014607643a9b4c3n],
      [4, 0n, 0x9136a0dca57457een],
      [14, 0n, 0x8282dcc4994e35c8n],
      [14, PRIME32, 0xc3bd6bf63deb6df0n],
      [222, 0n, 0xb641ae8cb691c174n],
      [222, PRIME32, 0x20cb8ab7ae10c14an],
    ];
    for (const [len, seed, want] of vectors)
      assert.equal(xxh64(buf.subarray(0, len), seed), want, `len ${len} seed ${seed}`);
  });

  it('agrees with a BigInt transcription on every length up to 300 and on long inputs', () => {
    const data = randomBytes(5000, 7);
    for (let len = 0; len <= 300; len++)
      assert.equal(xxh64(data.subarray(0, len)), xxh64BigInt(data.subarray(0, len)), `len ${len}`);
    for (const len of [1024, 4096, 4999])
      assert.equal(
        xxh64(data.subarray(1, 1 + len), 99n),
        xxh64BigInt(data.subarray(1, 1 + len), 99n),
      );
  });
});

describe('crc32 and rolling hash', () => {
  it('crc32 is CRC-32/ISO-HDLC', () => {
    assert.equal(crc32(text('123456789')), 0xcbf43926);
    assert.equal(crc32(new Uint8Array(0)), 0);
    assert.equal(crc32(text('The quick brown fox jumps over the lazy dog')), 0x414fa339);
  });

  it('rolling hash is h = h * 0x100000001B3 + b + 1 mod 2^64', () => {
    assert.equal(rollingHash(new Uint8Array(0)), 0n);
    assert.equal(rollingHash(Uint8Array.of(0)), 1n);
    assert.equal(rollingHash(Uint8Array.of(0, 0)), 0x100000001b3n + 1n);
    const data = randomBytes(4096, 3);
    let want = 0n;
    for (const b of data) want = (want * 0x100000001b3n + BigInt(b) + 1n) & M64;
    assert.equal(rollingHash(data), want);
  });
});

describe('gear', () => {
  it('is built from splitmix64, whose published outputs from seed 0 it reproduces', () => {
    assert.deepEqual(
      [...splitmix64(0n, 3)],
      [0xe220a8397b1dcdafn, 0x6e789e6aa1b965f4n, 0x06c45d188009454fn],
    );
    assert.deepEqual([...GEAR], [...splitmix64(GEAR_SEED, 256)]);
    assert.equal(new Set(GEAR).size, 256);
  });

  it('forgets everything older than 64 bytes', () => {
    const tail = randomBytes(64, 11);
    const a = new GearHash();
    const b = new GearHash();
    for (const x of randomBytes(500, 12)) a.push(x);
    for (const x of tail) {
      a.push(x);
      b.push(x);
    }
    assert.equal(a.value(), b.value());
  });

  it('picks floor(log2(W)) anchor bits', () => {
    assert.equal(anchorBits(256), 8);
    assert.equal(anchorBits(32), 5);
    assert.equal(anchorBits(300), 8);
    assert.equal(anchorBits(4096), 12);
  });
});

describe('G.711', () => {
  it('expands the known points', () => {
    assert.equal(ulawToLinear(0xff), 0);
    assert.equal(ulawToLinear(0x7f), 0);
    assert.equal(ulawToLinear(0x00), -32124);
    assert.equal(ulawToLinear(0x80), 32124);
    assert.equal(alawToLinear(0xd5), 8);
    assert.equal(alawToLinear(0x55), -8);
    assert.equal(alawToLinear(0xaa), 32256);
    assert.equal(alawToLinear(0x2a), -32256);
  });

  it('tables equal the functions, are sign-symmetric and round-trip through the compressors', () => {
    for (let b = 0; b < 256; b++) {
      assert.equal(ULAW_TO_LINEAR[b], ulawToLinear(b));
      assert.equal(ALAW_TO_LINEAR[b], alawToLinear(b));
      assert.equal(ULAW_TO_LINEAR[b] + ULAW_TO_LINEAR[b ^ 0x80], 0);
      assert.equal(ALAW_TO_LINEAR[b] + ALAW_TO_LINEAR[b ^ 0x80], 0);
      assert.equal(linearToAlaw(alawToLinear(b)), b, `A-law 0x${b.toString(16)}`);
      if (b !== 0x7f) assert.equal(linearToUlaw(ulawToLinear(b)), b, `mu-law 0x${b.toString(16)}`);
    }
  });

  it('compresses within one quantisation step', () => {
    for (let x = -32768; x <= 32767; x += 7) {
      const u = ulawToLinear(linearToUlaw(x));
      const a = alawToLinear(linearToAlaw(x));
      assert.ok(Math.abs(u - x) <= Math.max(16, Math.abs(x) / 16), `mu-law ${x} -> ${u}`);
      assert.ok(Math.abs(a - x) <= Math.max(16, Math.abs(x) / 16), `A-law ${x} -> ${a}`);
    }
  });
});

describe('silence gate', () => {
  const W = 256;
  const window = (bytes: Uint8Array): Uint8Array => bytes.subarray(0, W);
  const loud = sineTone(1, 440, 8000);
  const quiet = noise(1, 120, 5); // RMS about 70: below the default 256

  it('calls digital silence, constant bytes and G.711 idle bytes silent', () => {
    assert.ok(isSilentWindow(new Uint8Array(W), Encoding.RawLe16, 0, 256));
    assert.ok(isSilentWindow(new Uint8Array(W).fill(0x37), Encoding.Opaque, 0, 256));
    assert.ok(isSilentWindow(new Uint8Array(W).fill(0xff), Encoding.Pcmu, 0, 256));
    assert.ok(isSilentWindow(new Uint8Array(W).fill(0xd5), Encoding.Pcma, 0, 256));
    // Seven distinct values, however loud, is still a constant-ish run.
    const seven = Uint8Array.from(
      { length: W },
      (_, i) => [0, 0x80, 0x10, 0x90, 0x20, 0xa0, 0x30][i % 7],
    );
    assert.ok(isSilentWindow(seven, Encoding.Pcmu, 0, 256));
  });

  it('calls low-level noise silent in every encoding, by energy', () => {
    for (const [enc, bytes] of [
      [Encoding.RawLe16, encodeRawLe16(quiet)],
      [Encoding.L16Be, encodeL16Be(quiet)],
      [Encoding.Pcmu, encodePcmu(quiet)],
      [Encoding.Pcma, encodePcma(quiet)],
    ] as const) {
      const w = window(bytes);
      assert.ok(new Set(w).size >= 8, `encoding ${enc}: noise has byte variety`);
      assert.ok(isSilentWindow(w, enc, 0, 256), `encoding ${enc}`);
      assert.ok(!isSilentWindow(w, enc, 0, 20), `encoding ${enc} above a lower threshold`);
    }
  });

  it('passes a loud tone in every encoding, and opaque bytes with variety', () => {
    assert.ok(!isSilentWindow(window(encodeRawLe16(loud)), Encoding.RawLe16, 0, 256));
    assert.ok(!isSilentWindow(window(encodeL16Be(loud)), Encoding.L16Be, 0, 256));
    assert.ok(!isSilentWindow(window(encodePcmu(loud)), Encoding.Pcmu, 0, 256));
    assert.ok(!isSilentWindow(window(encodePcma(loud)), Encoding.Pcma, 0, 256));
    assert.ok(!isSilentWindow(randomBytes(W, 1), Encoding.Opaque, 0, 32767));
  });

  it('compares RMS with the threshold exactly, on the aligned samples', () => {
    const mix = Int16Array.from(
      { length: W / 2 },
      (_, i) => [200, -312, -200, 312, 201, -311, 150][i % 7],
    );
    const bytes = encodeRawLe16(mix);
    assert.ok(new Set(bytes).size >= 8);
    let sum = 0;
    for (const x of mix) sum += x * x;
    const rmsFloor = Math.floor(Math.sqrt(sum / mix.length));
    assert.ok(rmsFloor > 200 && rmsFloor < 300);
    assert.ok(!isSilentWindow(bytes, Encoding.RawLe16, 0, rmsFloor));
    assert.ok(isSilentWindow(bytes, Encoding.RawLe16, 0, rmsFloor + 1));
    // Shifted by one byte with align 1: the same samples, the same verdicts.
    const shifted = new Uint8Array(W);
    shifted.set(bytes.subarray(0, W - 1), 1);
    shifted[0] = 0x5a;
    const lastSample = mix[mix.length - 1];
    const sumShifted = sum - lastSample * lastSample; // one sample fewer fits
    const floorShifted = Math.floor(Math.sqrt(sumShifted / (mix.length - 1)));
    assert.ok(!isSilentWindow(shifted, Encoding.RawLe16, 1, floorShifted));
    assert.ok(isSilentWindow(shifted, Encoding.RawLe16, 1, floorShifted + 1));
    // The same bytes read at the wrong alignment are different, much louder samples.
    assert.ok(!isSilentWindow(shifted, Encoding.RawLe16, 0, 5000));
  });
});

describe('stream signer', () => {
  const speech = speechLike({ seconds: 30, seed: 42 });
  const streams: Array<[string, Encoding, Uint8Array, number]> = [
    ['PCMU', Encoding.Pcmu, encodePcmu(speech.samples), 1],
    ['PCMA', Encoding.Pcma, encodePcma(speech.samples), 1],
    ['L16 BE', Encoding.L16Be, encodeL16Be(speech.samples), 2],
    ['raw LE16', Encoding.RawLe16, encodeRawLe16(speech.samples), 2],
  ];

  for (const algorithm of ALGORITHMS) {
    it(`${algorithm}: the same audio cut differently gives the same signatures`, () => {
      for (const [name, enc, bytes, unit] of streams) {
        const base = framingFree(sign(cfg(algorithm), enc, chunk(bytes, 160)));
        assert.ok(base.length > 100, `${name}: ${base.length} signatures`);
        for (const packets of [
          chunk(bytes, 80),
          chunk(bytes, 480),
          chunk(bytes, 1984),
          chunkRandom(bytes, 9, 1, 900, unit),
          chunkRandom(bytes, 10, 2, 40, unit),
        ])
          assert.deepEqual(framingFree(sign(cfg(algorithm), enc, packets)), base, name);
      }
    });
  }

  it('each algorithm signs exactly the W bytes after the anchor', () => {
    const [, enc, bytes] = streams[0];
    for (const algorithm of ALGORITHMS) {
      const sigs = sign(cfg(algorithm), enc, chunk(bytes, 160));
      for (const s of sigs) {
        const w = bytes.subarray(s.windowStart, s.windowStart + 256);
        const want =
          algorithm === 'xxhash'
            ? xxh64BigInt(w)
            : algorithm === 'crc32'
              ? BigInt(crc32(w))
              : rollingHash(w);
        assert.equal(s.sig, want);
      }
      if (algorithm === 'crc32') assert.ok(sigs.every((s) => s.sig < 1n << 32n));
    }
  });

  it('opens windows exactly where the Gear state (recomputed in BigInt) has its top bits clear', () => {
    const bytes = randomBytes(20000, 77);
    const windowSize = 128;
    const mask =
      ((1n << BigInt(anchorBits(windowSize))) - 1n) << BigInt(64 - anchorBits(windowSize));
    const starts: number[] = [];
    let h = 0n;
    let open: number[] = [];
    bytes.forEach((b, p) => {
      h = ((h << 1n) + GEAR[b]) & M64;
      open = open.filter((a) => a + windowSize > p);
      if (p >= 63 && (h & mask) === 0n && p + windowSize < bytes.length) {
        assert.ok(open.length < 16);
        open.push(p);
        starts.push(p + 1);
      }
    });
    const sigs = sign(cfg('xxhash', windowSize, 0), Encoding.Opaque, chunk(bytes, 333));
    assert.deepEqual(
      sigs.map((s) => s.windowStart),
      starts,
    );
    assert.ok(starts.length > 100);
  });

  it('stamps a window with the packet that completed it and the encoding of its anchor', () => {
    const [, enc, bytes] = streams[2];
    const sigs = sign(cfg('xxhash'), enc, chunk(bytes, 320));
    for (const s of sigs) {
      assert.equal(s.tsNs, Math.floor((s.windowStart + 255) / 320));
      assert.equal(s.encoding, Encoding.L16Be);
    }
    // A switch of encoding mid-stream, inside a window: it keeps the encoding of its anchor.
    const straddler = sigs[Math.floor(sigs.length / 2)];
    const cut = straddler.windowStart + 100;
    const signer = new StreamSigner(cfg('xxhash'));
    const first = signer.push(Encoding.L16Be, bytes.subarray(0, cut), 1);
    const second = signer.push(Encoding.Opaque, bytes.subarray(cut), 2);
    const again = second.find((s) => s.windowStart === straddler.windowStart);
    assert.deepEqual(again, { ...straddler, tsNs: 2 });
    assert.ok(second.some((s) => s.encoding === Encoding.Opaque));
    assert.ok(first.every((s) => s.encoding === Encoding.L16Be && s.tsNs === 1));
  });

  for (const [name, enc, bytes, unit] of streams) {
    it(`${name}: an observer joining 1000 bytes late agrees from 64 bytes on`, () => {
      const late = 1000;
      const full = sign(cfg('xxhash'), enc, chunk(bytes, 160));
      const joined = sign(cfg('xxhash'), enc, chunkRandom(bytes.subarray(late), 4, 100, 700, unit));
      const fromFull = framingFree(
        full
          .filter((s) => s.windowStart >= late + 64)
          .map((s) => ({ ...s, windowStart: s.windowStart - late })),
      );
      assert.deepEqual(framingFree(joined.filter((s) => s.windowStart >= 64)), fromFull);
      assert.ok(fromFull.length > 100);
    });
  }

  it('gives at least 10 signatures per second of speech at 8 kB/s (G.711)', () => {
    const voicedSeconds = speech.voicedSamples / speech.sampleRate;
    for (const [name, enc, bytes] of streams.slice(0, 2)) {
      const n = sign(cfg('xxhash'), enc, chunk(bytes, 160)).length;
      const rate = n / voicedSeconds;
      console.log(`density ${name}: ${n} signatures, ${rate.toFixed(1)} per voiced second`);
      assert.ok(rate >= 10, `${name}: ${rate.toFixed(1)} signatures per second of speech`);
    }
  });

  it('signs nothing in silence, comfort noise or constant runs', () => {
    const silentStreams: Array<[Encoding, Uint8Array]> = [
      [Encoding.Pcmu, new Uint8Array(80000).fill(0xff)],
      [Encoding.Pcma, new Uint8Array(80000).fill(0xd5)],
      [Encoding.RawLe16, new Uint8Array(160000)],
      [Encoding.Pcmu, encodePcmu(noise(10, 100, 3))],
      [Encoding.RawLe16, encodeRawLe16(noise(10, 100, 4))],
      [Encoding.Opaque, new Uint8Array(80000).fill(0x42)],
    ];
    for (const [enc, bytes] of silentStreams) {
      const signer = new StreamSigner(cfg('xxhash'));
      let n = 0;
      for (const p of chunk(bytes, 160)) n += signer.push(enc, p, 0).length;
      assert.equal(n, 0, `encoding ${enc}`);
      assert.equal(signer.stats.signatures, 0);
      assert.equal(signer.stats.windows, signer.stats.windowsSilent);
    }
  });

  it('drops anchors beyond 16 open windows and counts them', () => {
    // Find a byte whose constant run anchors at every position: -GEAR[b] has its top bits clear.
    const bits = anchorBits(64);
    const dense = [...GEAR.keys()].find((b) => (-GEAR[b] & M64) >> BigInt(64 - bits) === 0n);
    assert.ok(dense !== undefined, 'some byte anchors densely at W = 64');
    const signer = new StreamSigner(cfg('xxhash', 64, 0));
    signer.push(Encoding.Opaque, new Uint8Array(1000).fill(dense), 0);
    const { anchorsDropped, windows, signatures } = signer.stats;
    // Every byte from position 63 anchors: each is a window (done or still open) or a drop.
    const stillOpen = 1000 - 63 - anchorsDropped - windows;
    assert.equal(stillOpen, 16);
    assert.ok(anchorsDropped > 600, `${anchorsDropped} dropped`);
    assert.equal(signatures, 0);
  });

  it('rejects a bad configuration', () => {
    assert.throws(() => new StreamSigner(cfg('xxhash', 16)), RangeError);
    assert.throws(() => new StreamSigner(cfg('xxhash', 8192)), RangeError);
    assert.throws(() => new StreamSigner(cfg('xxhash', 256, -1)), RangeError);
    assert.throws(
      () => new StreamSigner({ ...cfg('xxhash'), algorithm: 'md5' as SignatureAlgorithm }),
      RangeError,
    );
  });

  it('signs minutes of audio well under a second', () => {
    const long = speechLike({ seconds: 180, seed: 5 });
    const bytes = encodeL16Be(long.samples);
    for (const algorithm of ALGORITHMS) {
      const packets = chunk(bytes, 320);
      const t0 = performance.now();
      const n = sign(cfg(algorithm), Encoding.L16Be, packets).length;
      const ms = performance.now() - t0;
      const mbps = bytes.length / 1e6 / (ms / 1000);
      console.log(
        `reference ${algorithm}: 180 s of L16 (${(bytes.length / 1e6).toFixed(2)} MB) in ${ms.toFixed(0)} ms, ${mbps.toFixed(0)} MB/s, ${n} signatures`,
      );
      assert.ok(ms < 1000, `${algorithm}: ${ms.toFixed(0)} ms`);
    }
  });
});
