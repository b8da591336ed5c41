/**
 * What every fuzzer shares: its run settings (FUZZ_SEED, FUZZ_ITERATIONS, printed first so a
 * failing run can be replayed) and one seeded PRNG with the draws the mutators need.
 *
 *   FUZZ_SEED=0x1234abcd   replay a run (decimal or 0x-prefixed hex; default: random)
 *   FUZZ_ITERATIONS=N      run longer (default: each fuzzer's CI budget)
 */
import { randomBytes } from 'node:crypto';

export interface FuzzSettings {
  readonly seed: number;
  readonly iterations: number;
  /** The environment that replays this run, e.g. `FUZZ_SEED=0x0000002a FUZZ_ITERATIONS=3000`. */
  readonly replay: string;
}

/** The seed of this run: FUZZ_SEED when set, else random. */
export function fuzzSeed(env: NodeJS.ProcessEnv = process.env): number {
  const raw = env.FUZZ_SEED;
  if (raw === undefined || raw === '') return randomBytes(4).readUInt32LE(0);
  const v = Number(raw);
  if (!Number.isInteger(v) || v < 0 || v > 0xffffffff) {
    throw new RangeError(`FUZZ_SEED: expected an integer 0..0xffffffff, got ${raw}`);
  }
  return v;
}

/** FUZZ_ITERATIONS when set, else `defaultIterations`. */
export function fuzzIterations(
  defaultIterations: number,
  env: NodeJS.ProcessEnv = process.env,
): number {
  const raw = env.FUZZ_ITERATIONS;
  if (raw === undefined || raw === '') return defaultIterations;
  const v = Number(raw);
  if (!Number.isInteger(v) || v < 1) {
    throw new RangeError(`FUZZ_ITERATIONS: expected a positive integer, got ${raw}`);
  }
  return v;
}

/** Seed and iterations of a fuzzer's run, printed under `label`. */
export function fuzzSettings(label: string, defaultIterations: number): FuzzSettings {
  const seed = fuzzSeed();
  const iterations = fuzzIterations(defaultIterations);
  const replay = `FUZZ_SEED=0x${seed.toString(16).padStart(8, '0')} FUZZ_ITERATIONS=${iterations}`;
  console.log(`${label}: ${replay}`);
  return { seed, iterations, replay };
}

/** xoshiro128** (Blackman, Vigna): 32-bit state words, seeded through splitmix32. */
export class FuzzRng {
  private readonly s = new Uint32Array(4);

  constructor(readonly seed: number) {
    let x = seed >>> 0;
    for (let i = 0; i < 4; i++) {
      x = (x + 0x9e3779b9) >>> 0;
      let z = x;
      z = Math.imul(z ^ (z >>> 16), 0x85ebca6b) >>> 0;
      z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35) >>> 0;
      this.s[i] = (z ^ (z >>> 16)) >>> 0;
    }
    if (this.s.every((w) => w === 0)) this.s[0] = 1;
  }

  /** A uniform u32. */
  u32(): number {
    const s = this.s;
    const r = Math.imul(rotl(Math.imul(s[1], 5) >>> 0, 7), 9) >>> 0;
    const t = (s[1] << 9) >>> 0;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 11);
    return r;
  }

  /** 0 <= float() < 1. */
  float(): number {
    return this.u32() / 0x100000000;
  }

  /** 0 <= int(n) < n, for n up to 2^32 (0 when n <= 1). */
  int(n: number): number {
    return n <= 1 ? 0 : Math.floor(this.float() * n);
  }

  /** lo <= range(lo, hi) <= hi. */
  range(lo: number, hi: number): number {
    return lo + this.int(hi - lo + 1);
  }

  chance(p: number): boolean {
    return this.float() < p;
  }

  pick<T>(xs: readonly T[]): T {
    if (xs.length === 0) throw new RangeError('FuzzRng.pick: empty list');
    return xs[this.int(xs.length)];
  }

  u8(): number {
    return this.u32() & 0xff;
  }

  u16(): number {
    return this.u32() & 0xffff;
  }

  u64(): bigint {
    return (BigInt(this.u32()) << 32n) | BigInt(this.u32());
  }

  bytes(n: number): Uint8Array {
    const out = new Uint8Array(n);
    for (let i = 0; i < n; i++) out[i] = this.u8();
    return out;
  }

  /** `chars` lowercase hex digits. */
  hex(chars: number): string {
    let out = '';
    while (out.length < chars) out += this.u32().toString(16).padStart(8, '0');
    return out.slice(0, chars);
  }
}

function rotl(x: number, k: number): number {
  return ((x << k) | (x >>> (32 - k))) >>> 0;
}
