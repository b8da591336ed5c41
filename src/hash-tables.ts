/** Shared pieces of the allocation-free open-addressing tables (endpoints, correlator, recorder). */

/** MurmurHash3's 32-bit finaliser: spreads every input bit over the whole result. */
export function mix32(h: number): number {
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}

/** Smallest power of two >= n (table sizes, so a mask replaces the modulo). */
export function nextPowerOfTwo(n: number): number {
  let p = 1;
  while (p < n) p *= 2;
  return p;
}
