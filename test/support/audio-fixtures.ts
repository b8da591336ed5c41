/**
 * Deterministic, speech-like test audio: voiced syllables (a glottal
 * fundamental with decaying harmonics, a little breath noise, a smooth
 * amplitude envelope) separated by silence, from a seeded PRNG so every
 * run and every observer sees the same bytes. Plus the encoders that turn
 * 16-bit samples into the byte streams the classifier reports.
 */
import { linearToAlaw, linearToUlaw } from '../../src/signature/g711.js';

/** mulberry32: small, fast, and good enough for test signals. */
export function createRng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

export interface SpeechOptions {
  seconds: number;
  sampleRate?: number; // default 8000
  seed?: number; // default 1
  peak?: number; // loudest syllable peak, default 12000
  gapMs?: [number, number]; // silence between syllables, default [60, 300]
  syllableMs?: [number, number]; // default [120, 320]
}

export interface SpeechAudio {
  samples: Int16Array;
  sampleRate: number;
  voicedSamples: number; // samples inside syllables (for per-second-of-speech rates)
}

function clamp16(x: number): number {
  return Math.max(-32768, Math.min(32767, Math.round(x)));
}

function between(rng: () => number, [lo, hi]: [number, number]): number {
  return lo + (hi - lo) * rng();
}

/** One syllable into out[start..start+len): harmonics of a gliding f0 under a raised-cosine envelope. */
function writeSyllable(
  out: Int16Array,
  start: number,
  len: number,
  sampleRate: number,
  peak: number,
  rng: () => number,
): void {
  const f0Start = between(rng, [95, 230]);
  const f0End = f0Start * between(rng, [0.8, 1.2]);
  const formant = between(rng, [400, 1200]); // crude vowel colour: harmonics near it are louder
  const level = peak * between(rng, [0.35, 1]);
  const attack = Math.floor(len * 0.15);
  let phase = 0;
  for (let i = 0; i < len && start + i < out.length; i++) {
    const f0 = f0Start + ((f0End - f0Start) * i) / len;
    phase += (2 * Math.PI * f0) / sampleRate;
    let v = 0;
    for (let k = 1; k <= 10; k++) {
      const f = k * f0;
      if (f >= sampleRate / 2) break;
      const emphasis = 1 / (1 + Math.abs(f - formant) / 300);
      v += (emphasis / k) * Math.sin(k * phase);
    }
    v += (rng() - 0.5) * 0.15; // breath
    const env =
      i < attack
        ? 0.5 - 0.5 * Math.cos((Math.PI * i) / attack)
        : Math.cos((0.5 * Math.PI * (i - attack)) / (len - attack));
    out[start + i] = clamp16(level * 0.6 * v * env);
  }
}

/** Speech-like audio: syllables and pauses, digital silence (zero) in the pauses. */
export function speechLike(opts: SpeechOptions): SpeechAudio {
  const sampleRate = opts.sampleRate ?? 8000;
  const rng = createRng(opts.seed ?? 1);
  const peak = opts.peak ?? 12000;
  const total = Math.round(opts.seconds * sampleRate);
  const samples = new Int16Array(total);
  let at = Math.round((between(rng, opts.gapMs ?? [60, 300]) * sampleRate) / 1000);
  let voiced = 0;
  while (at < total) {
    const len = Math.round((between(rng, opts.syllableMs ?? [120, 320]) * sampleRate) / 1000);
    writeSyllable(samples, at, len, sampleRate, peak, rng);
    voiced += Math.min(len, total - at);
    at += len + Math.round((between(rng, opts.gapMs ?? [60, 300]) * sampleRate) / 1000);
  }
  return { samples, sampleRate, voicedSamples: voiced };
}

export function sineTone(
  seconds: number,
  freq: number,
  amplitude: number,
  sampleRate = 8000,
): Int16Array {
  const n = Math.round(seconds * sampleRate);
  const out = new Int16Array(n);
  for (let i = 0; i < n; i++)
    out[i] = clamp16(amplitude * Math.sin((2 * Math.PI * freq * i) / sampleRate));
  return out;
}

/** Uniform noise in [-amplitude, amplitude]: comfort-noise-like when amplitude is small. */
export function noise(
  seconds: number,
  amplitude: number,
  seed: number,
  sampleRate = 8000,
): Int16Array {
  const rng = createRng(seed);
  const n = Math.round(seconds * sampleRate);
  const out = new Int16Array(n);
  for (let i = 0; i < n; i++) out[i] = clamp16((rng() * 2 - 1) * amplitude);
  return out;
}

export function encodePcmu(samples: Int16Array): Uint8Array {
  return Uint8Array.from(samples, (s) => linearToUlaw(s));
}

export function encodePcma(samples: Int16Array): Uint8Array {
  return Uint8Array.from(samples, (s) => linearToAlaw(s));
}

/** RTP L16: network byte order. */
export function encodeL16Be(samples: Int16Array): Uint8Array {
  const out = new Uint8Array(samples.length * 2);
  const view = new DataView(out.buffer);
  samples.forEach((s, i) => view.setInt16(2 * i, s, false));
  return out;
}

/** Raw UDP PCM: little-endian. */
export function encodeRawLe16(samples: Int16Array): Uint8Array {
  const out = new Uint8Array(samples.length * 2);
  const view = new DataView(out.buffer);
  samples.forEach((s, i) => view.setInt16(2 * i, s, true));
  return out;
}

/** Cut a byte stream into packets of `size` bytes (the last may be shorter). */
export function chunk(bytes: Uint8Array, size: number): Uint8Array[] {
  const out: Uint8Array[] = [];
  for (let at = 0; at < bytes.length; at += size) out.push(bytes.subarray(at, at + size));
  return out;
}

/**
 * Cut a byte stream into packets of random sizes in [min, max], each a multiple
 * of `multipleOf` (2 for 16-bit PCM: packets carry whole samples).
 */
export function chunkRandom(
  bytes: Uint8Array,
  seed: number,
  min: number,
  max: number,
  multipleOf = 1,
): Uint8Array[] {
  const rng = createRng(seed);
  const out: Uint8Array[] = [];
  let at = 0;
  while (at < bytes.length) {
    const raw = min + Math.floor(rng() * (max - min + 1));
    const size = Math.max(multipleOf, raw - (raw % multipleOf));
    out.push(bytes.subarray(at, at + size));
    at += size;
  }
  return out;
}
