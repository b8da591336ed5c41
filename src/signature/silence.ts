/**
 * The silence gate of a completed window (docs/signatures.md). Silence
 * plays on many unrelated calls at once, so its signatures would only
 * make false matches: too few distinct byte values, or RMS of the decoded
 * samples below the threshold, means no signature.
 */
import { Encoding } from '../abi.js';
import { ALAW_TO_LINEAR, ULAW_TO_LINEAR } from './g711.js';

export const MIN_DISTINCT_BYTES = 8;
/** RMS can not exceed 32768: larger thresholds silence everything anyway. */
export const MAX_SILENCE_THRESHOLD = 65535;

const seen = new Uint8Array(256);

export function distinctByteCountAtLeast(w: Uint8Array, want: number): boolean {
  seen.fill(0);
  let distinct = 0;
  for (let i = 0; i < w.length; i++) {
    if (seen[w[i]] === 0) {
      seen[w[i]] = 1;
      if (++distinct >= want) return true;
    }
  }
  return false;
}

function tableEnergy(w: Uint8Array, table: Int16Array): number {
  let sum = 0;
  for (let i = 0; i < w.length; i++) sum += table[w[i]] * table[w[i]];
  return sum; // <= 4096 * 2^30 < 2^53: exact
}

function pcm16Energy(w: Uint8Array, align: number, n: number, bigEndian: boolean): number {
  let sum = 0;
  for (let k = 0; k < n; k++) {
    const a = w[align + 2 * k];
    const b = w[align + 2 * k + 1];
    const u = bigEndian ? (a << 8) | b : (b << 8) | a;
    const x = u >= 0x8000 ? u - 0x10000 : u;
    sum += x * x;
  }
  return sum;
}

/** window: the W bytes; encoding and align: remembered from the anchor. */
export function isSilentWindow(
  w: Uint8Array,
  encoding: number,
  align: number,
  threshold: number,
): boolean {
  if (!distinctByteCountAtLeast(w, MIN_DISTINCT_BYTES)) return true;

  let n: number;
  let sum: number;
  switch (encoding) {
    case Encoding.Pcmu:
      n = w.length;
      sum = tableEnergy(w, ULAW_TO_LINEAR);
      break;
    case Encoding.Pcma:
      n = w.length;
      sum = tableEnergy(w, ALAW_TO_LINEAR);
      break;
    case Encoding.L16Be:
    case Encoding.RawLe16:
      n = Math.floor((w.length - align) / 2);
      sum = pcm16Energy(w, align, n, encoding === Encoding.L16Be);
      break;
    default: // Opaque and unknown: bytes only, no energy to judge
      return false;
  }
  const thr = Math.min(threshold, MAX_SILENCE_THRESHOLD);
  return n === 0 || sum < thr * thr * n;
}
