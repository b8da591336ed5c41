/**
 * Gear rolling hash (FastCDC): h = (h << 1) + GEAR[b] mod 2^64. Bit k of h
 * depends only on the last k + 1 bytes, so after GEAR_SPAN bytes the state
 * is a function of the last 64 bytes alone and every observer of the same
 * bytes finds the same anchors, however the stream was cut.
 */

export const GEAR_SPAN = 64;
export const GEAR_SEED = 0x616c742d67656172n; // "alt-gear"

const MASK64 = (1n << 64n) - 1n;

/** The first `count` outputs of splitmix64 (Steele, Lea, Flood) from `seed`. */
export function splitmix64(seed: bigint, count: number): BigUint64Array {
  const out = new BigUint64Array(count);
  let state = seed & MASK64;
  for (let i = 0; i < count; i++) {
    state = (state + 0x9e3779b97f4a7c15n) & MASK64;
    let z = state;
    z = ((z ^ (z >> 30n)) * 0xbf58476d1ce4e5b9n) & MASK64;
    z = ((z ^ (z >> 27n)) * 0x94d049bb133111ebn) & MASK64;
    out[i] = z ^ (z >> 31n);
  }
  return out;
}

/** GEAR[i]: the i-th splitmix64 output from GEAR_SEED; the C++ engine builds the same table. */
export const GEAR: BigUint64Array = splitmix64(GEAR_SEED, 256);
/** The same table split in halves for the per-byte loop. */
export const GEAR_HI: Uint32Array = Uint32Array.from(GEAR, (v) => Number(v >> 32n));
export const GEAR_LO: Uint32Array = Uint32Array.from(GEAR, (v) => Number(v & 0xffffffffn));

/** ANCHOR_BITS = floor(log2(windowSize)): about one anchor per window of audio. */
export function anchorBits(windowSize: number): number {
  return Math.floor(Math.log2(windowSize));
}

/**
 * The Gear state as two u32 halves. Anchors test the top bits (they depend
 * on the most bytes); for windows up to 4096 those all lie in `hi`.
 */
export class GearHash {
  hi = 0;
  lo = 0;

  push(byte: number): void {
    const l = ((this.lo << 1) >>> 0) + GEAR_LO[byte];
    this.hi =
      (((this.hi << 1) | (this.lo >>> 31)) + GEAR_HI[byte] + (l >= 4294967296 ? 1 : 0)) >>> 0;
    this.lo = l >>> 0;
  }

  /** True when the top `bits` bits (1..32) are all zero. */
  topBitsZero(bits: number): boolean {
    return this.hi >>> (32 - bits) === 0;
  }

  value(): bigint {
    return (BigInt(this.hi) << 32n) | BigInt(this.lo);
  }

  reset(): void {
    this.hi = 0;
    this.lo = 0;
  }
}
