/**
 * G.711 (ITU-T G.711, as Sun's g711.c): expansion to 16-bit linear for the
 * silence gate, and compression for test and demo traffic. G.711 silence
 * is 0xFF (mu-law) / 0xD5 (A-law): loud if misread as PCM.
 */

export function ulawToLinear(byte: number): number {
  const u = ~byte & 0xff;
  let t = ((u & 0x0f) << 3) + 0x84;
  t <<= (u & 0x70) >> 4;
  return u & 0x80 ? 0x84 - t : t - 0x84;
}

export function alawToLinear(byte: number): number {
  const a = (byte ^ 0x55) & 0xff;
  let t = (a & 0x0f) << 4;
  const seg = (a & 0x70) >> 4;
  if (seg === 0) t += 8;
  else if (seg === 1) t += 0x108;
  else t = (t + 0x108) << (seg - 1);
  return a & 0x80 ? t : -t;
}

export const ULAW_TO_LINEAR: Int16Array = Int16Array.from({ length: 256 }, (_, i) =>
  ulawToLinear(i),
);
export const ALAW_TO_LINEAR: Int16Array = Int16Array.from({ length: 256 }, (_, i) =>
  alawToLinear(i),
);

const SEG_UEND = [0x3f, 0x7f, 0xff, 0x1ff, 0x3ff, 0x7ff, 0xfff, 0x1fff];
const SEG_AEND = [0x1f, 0x3f, 0x7f, 0xff, 0x1ff, 0x3ff, 0x7ff, 0xfff];

function segment(value: number, ends: readonly number[]): number {
  for (let i = 0; i < ends.length; i++) if (value <= ends[i]) return i;
  return ends.length;
}

/** 16-bit linear sample -> mu-law byte. */
export function linearToUlaw(sample: number): number {
  let v = sample >> 2; // 14-bit magnitude scale
  let mask = 0xff;
  if (v < 0) {
    v = -v;
    mask = 0x7f;
  }
  v = Math.min(v, 8159) + (0x84 >> 2);
  const seg = segment(v, SEG_UEND);
  if (seg >= 8) return 0x7f ^ mask;
  return ((seg << 4) | ((v >> (seg + 1)) & 0x0f)) ^ mask;
}

/** 16-bit linear sample -> A-law byte. */
export function linearToAlaw(sample: number): number {
  let v = sample >> 3; // 13-bit scale
  let mask = 0xd5;
  if (v < 0) {
    mask = 0x55;
    v = -v - 1;
  }
  const seg = segment(v, SEG_AEND);
  if (seg >= 8) return 0x7f ^ mask;
  const mantissa = seg < 2 ? (v >> 1) & 0x0f : (v >> seg) & 0x0f;
  return ((seg << 4) | mantissa) ^ mask;
}
