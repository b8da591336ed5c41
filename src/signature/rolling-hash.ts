/**
 * Rabin-Karp polynomial hash mod 2^64: h = h * P + b + 1, P = 0x100000001B3
 * (the + 1 keeps leading zero bytes significant). P = 2^40 + 0x1B3, so
 * h * P = (h << 40) + h * 0x1B3, which two u32 halves compute exactly.
 */
import { toBigInt } from './u64.js';

export const ROLLING_PRIME = 0x100000001b3n;
const P_LOW = 0x1b3;

export function rollingHash(data: Uint8Array): bigint {
  let hi = 0;
  let lo = 0;
  for (let i = 0; i < data.length; i++) {
    const t = lo * P_LOW + data[i] + 1; // < 2^41, exact
    hi = (Math.imul(hi, P_LOW) + Math.floor(t / 4294967296) + (lo << 8)) >>> 0;
    lo = t >>> 0;
  }
  return toBigInt(hi, lo);
}
