/**
 * 64-bit unsigned arithmetic on two u32 halves, for the hashes that must
 * match the C++ engine bit for bit. BigInt would be clearer but costs
 * tens of microseconds per window; these run about as fast as plain
 * number arithmetic and allocate nothing.
 *
 * Each operation leaves its result in the `hi` / `lo` registers below
 * (ES module live bindings): read both right after the call.
 */

export let hi = 0;
export let lo = 0;

const TWO_32 = 4294967296;

/** (ah:al) + (bh:bl) mod 2^64. */
export function add(ah: number, al: number, bh: number, bl: number): void {
  const l = al + bl;
  lo = l >>> 0;
  hi = (ah + bh + (l >= TWO_32 ? 1 : 0)) >>> 0;
}

/** (ah:al) * (bh:bl) mod 2^64: the full 64-bit product of the low halves, 16 bits at a time. */
export function mul(ah: number, al: number, bh: number, bl: number): void {
  const a0 = al & 0xffff;
  const a1 = al >>> 16;
  const b0 = bl & 0xffff;
  const b1 = bl >>> 16;
  const mid = a0 * b1 + a1 * b0; // < 2^33, exact
  const low = a0 * b0 + (mid % 65536) * 65536; // < 2^33, exact
  lo = low >>> 0;
  hi =
    (a1 * b1 +
      Math.floor(mid / 65536) +
      Math.floor(low / TWO_32) +
      Math.imul(ah, bl) +
      Math.imul(al, bh)) >>>
    0;
}

/** Rotate (h:l) left by r bits, 0 < r < 64. */
export function rotl(h: number, l: number, r: number): void {
  if (r >= 32) {
    const t = h;
    h = l;
    l = t;
    r -= 32;
  }
  if (r === 0) {
    hi = h >>> 0;
    lo = l >>> 0;
    return;
  }
  hi = ((h << r) | (l >>> (32 - r))) >>> 0;
  lo = ((l << r) | (h >>> (32 - r))) >>> 0;
}

export function toBigInt(h: number, l: number): bigint {
  return (BigInt(h >>> 0) << 32n) | BigInt(l >>> 0);
}

export function highOf(v: bigint): number {
  return Number((v >> 32n) & 0xffffffffn);
}

export function lowOf(v: bigint): number {
  return Number(v & 0xffffffffn);
}
