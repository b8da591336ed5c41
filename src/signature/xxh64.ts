/**
 * XXH64 (xxHash, 64-bit), one-shot, on u32 halves (see u64.ts): the
 * published vectors are checked in test/signature.test.ts.
 */
import * as u64 from './u64.js';

// The five primes, as [hi, lo].
const P1H = 0x9e3779b1,
  P1L = 0x85ebca87;
const P2H = 0xc2b2ae3d,
  P2L = 0x27d4eb4f;
const P3H = 0x165667b1,
  P3L = 0x9e3779f9;
const P4H = 0x85ebca77,
  P4L = 0xc2b2ae63;
const P5H = 0x27d4eb2f,
  P5L = 0x165667c5;

function read32(d: Uint8Array, p: number): number {
  return (d[p] | (d[p + 1] << 8) | (d[p + 2] << 16) | (d[p + 3] << 24)) >>> 0;
}

/** round(acc, input) = rotl(acc + input * P2, 31) * P1; result in u64.hi/lo. */
function round(accH: number, accL: number, inH: number, inL: number): void {
  u64.mul(inH, inL, P2H, P2L);
  u64.add(accH, accL, u64.hi, u64.lo);
  u64.rotl(u64.hi, u64.lo, 31);
  u64.mul(u64.hi, u64.lo, P1H, P1L);
}

/** merge(acc, v) = (acc ^ round(0, v)) * P1 + P4; result in u64.hi/lo. */
function merge(accH: number, accL: number, vH: number, vL: number): void {
  round(0, 0, vH, vL);
  u64.mul((accH ^ u64.hi) >>> 0, (accL ^ u64.lo) >>> 0, P1H, P1L);
  u64.add(u64.hi, u64.lo, P4H, P4L);
}

export function xxh64(data: Uint8Array, seed: bigint = 0n): bigint {
  const sH = u64.highOf(seed);
  const sL = u64.lowOf(seed);
  const len = data.length;
  let p = 0;
  let hH: number;
  let hL: number;

  if (len >= 32) {
    u64.add(sH, sL, P1H, P1L);
    u64.add(u64.hi, u64.lo, P2H, P2L);
    let v1H = u64.hi,
      v1L = u64.lo;
    u64.add(sH, sL, P2H, P2L);
    let v2H = u64.hi,
      v2L = u64.lo;
    let v3H = sH,
      v3L = sL;
    u64.add(sH, sL, ~P1H >>> 0, ~P1L >>> 0); // seed - P1 = seed + ~P1 + 1
    u64.add(u64.hi, u64.lo, 0, 1);
    let v4H = u64.hi,
      v4L = u64.lo;

    for (; p + 32 <= len; p += 32) {
      round(v1H, v1L, read32(data, p + 4), read32(data, p));
      v1H = u64.hi;
      v1L = u64.lo;
      round(v2H, v2L, read32(data, p + 12), read32(data, p + 8));
      v2H = u64.hi;
      v2L = u64.lo;
      round(v3H, v3L, read32(data, p + 20), read32(data, p + 16));
      v3H = u64.hi;
      v3L = u64.lo;
      round(v4H, v4L, read32(data, p + 28), read32(data, p + 24));
      v4H = u64.hi;
      v4L = u64.lo;
    }

    u64.rotl(v1H, v1L, 1);
    let aH = u64.hi,
      aL = u64.lo;
    u64.rotl(v2H, v2L, 7);
    u64.add(aH, aL, u64.hi, u64.lo);
    aH = u64.hi;
    aL = u64.lo;
    u64.rotl(v3H, v3L, 12);
    u64.add(aH, aL, u64.hi, u64.lo);
    aH = u64.hi;
    aL = u64.lo;
    u64.rotl(v4H, v4L, 18);
    u64.add(aH, aL, u64.hi, u64.lo);
    merge(u64.hi, u64.lo, v1H, v1L);
    merge(u64.hi, u64.lo, v2H, v2L);
    merge(u64.hi, u64.lo, v3H, v3L);
    merge(u64.hi, u64.lo, v4H, v4L);
    hH = u64.hi;
    hL = u64.lo;
  } else {
    u64.add(sH, sL, P5H, P5L);
    hH = u64.hi;
    hL = u64.lo;
  }

  u64.add(hH, hL, Math.floor(len / 4294967296), len >>> 0);
  hH = u64.hi;
  hL = u64.lo;

  for (; p + 8 <= len; p += 8) {
    round(0, 0, read32(data, p + 4), read32(data, p));
    u64.rotl((hH ^ u64.hi) >>> 0, (hL ^ u64.lo) >>> 0, 27);
    u64.mul(u64.hi, u64.lo, P1H, P1L);
    u64.add(u64.hi, u64.lo, P4H, P4L);
    hH = u64.hi;
    hL = u64.lo;
  }
  if (p + 4 <= len) {
    u64.mul(0, read32(data, p), P1H, P1L);
    u64.rotl((hH ^ u64.hi) >>> 0, (hL ^ u64.lo) >>> 0, 23);
    u64.mul(u64.hi, u64.lo, P2H, P2L);
    u64.add(u64.hi, u64.lo, P3H, P3L);
    hH = u64.hi;
    hL = u64.lo;
    p += 4;
  }
  for (; p < len; p++) {
    u64.mul(0, data[p], P5H, P5L);
    u64.rotl((hH ^ u64.hi) >>> 0, (hL ^ u64.lo) >>> 0, 11);
    u64.mul(u64.hi, u64.lo, P1H, P1L);
    hH = u64.hi;
    hL = u64.lo;
  }

  // Avalanche: h ^= h >> 33; h *= P2; h ^= h >> 29; h *= P3; h ^= h >> 32.
  hL = (hL ^ (hH >>> 1)) >>> 0;
  u64.mul(hH, hL, P2H, P2L);
  hH = u64.hi;
  hL = (u64.lo ^ ((u64.lo >>> 29) | (hH << 3))) >>> 0;
  hH = (hH ^ (hH >>> 29)) >>> 0;
  u64.mul(hH, hL, P3H, P3L);
  hH = u64.hi;
  hL = (u64.lo ^ hH) >>> 0;
  return u64.toBigInt(hH, hL);
}
