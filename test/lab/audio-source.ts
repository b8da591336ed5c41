/**
 * Deterministic speech-like audio for the lab: voiced syllables grouped in phrases, separated by
 * near-silent gaps, 8 kHz mono int16. Same seed, same samples, on every machine: the e2e test
 * regenerates what a sender process sent to predict how many signatures the agent must see.
 *
 * Not speech, but it has what matters to the tracker: a varying spectrum (harmonics of a drifting
 * pitch under moving formants) so windows differ, energy that rises and falls (the RMS gate sees
 * both loud and quiet windows), and real pauses with a low noise floor (no signature there).
 */
import { linearToUlaw } from '../../src/signature/g711.js';

export const SAMPLE_RATE = 8000;
/** Samples per 20 ms packet at 8 kHz. */
export const SAMPLES_PER_20MS = 160;

/** splitmix32: small, fast, and identical wherever it runs (integer arithmetic only). */
export class Prng {
  private state: number;

  constructor(seed: number) {
    this.state = seed >>> 0;
  }

  /** Uniform in [0, 1). */
  next(): number {
    this.state = (this.state + 0x9e3779b9) >>> 0;
    let z = this.state;
    z = Math.imul(z ^ (z >>> 16), 0x85ebca6b) >>> 0;
    z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35) >>> 0;
    z = (z ^ (z >>> 16)) >>> 0;
    return z / 0x100000000;
  }

  uniform(lo: number, hi: number): number {
    return lo + (hi - lo) * this.next();
  }

  /** Approximately normal(0, 1): sum of four uniforms, cheap and bounded. */
  gaussish(): number {
    return (this.next() + this.next() + this.next() + this.next() - 2) * 1.732;
  }
}

/** One stretch of the signal: a voiced syllable or a pause. */
interface Segment {
  length: number; // samples
  voiced: boolean;
  f0Start: number;
  f0End: number;
  f1Start: number;
  f1End: number;
  f2Start: number;
  f2End: number;
  amplitude: number; // peak, int16 units
}

const MAX_HARMONIC_HZ = 3400; // telephone band
const NOISE_FLOOR = 3; // int16 units of background noise, always present
const ASPIRATION = 0.04; // breath noise relative to the voiced amplitude

/** Resonance bump around a formant frequency: 1 at the centre, falling off beyond +-bw. */
function formantGain(f: number, centre: number, bw: number): number {
  const x = (f - centre) / bw;
  return 1 / (1 + x * x);
}

/**
 * Endless speech-like signal. read() fills the next samples; the sequence depends only on the
 * seed, never on how the caller chunks its reads.
 */
export class SpeechSource {
  private readonly rng: Prng;
  private segment: Segment;
  private segPos = 0;
  private syllablesLeftInPhrase = 0;
  private phase = 0; // fundamental phase, radians
  private readonly harmonicGains = new Float64Array(64);
  private harmonicNorm = 1;
  private gainsAtSample = -1;
  private produced = 0;
  private voicedProduced = 0;

  constructor(seed: number) {
    this.rng = new Prng(seed);
    // Open with a pause, as a caller does before speaking.
    this.segment = this.pause(0.2, 0.4);
  }

  /** Samples produced so far. */
  get position(): number {
    return this.produced;
  }

  /** Samples produced so far that belong to a voiced syllable. */
  get voicedSamples(): number {
    return this.voicedProduced;
  }

  read(out: Int16Array): void {
    for (let i = 0; i < out.length; i++) {
      if (this.segPos >= this.segment.length) this.advance();
      out[i] = this.sample();
      this.segPos++;
      this.produced++;
      if (this.segment.voiced) this.voicedProduced++;
    }
  }

  private pause(minS: number, maxS: number): Segment {
    const length = Math.round(this.rng.uniform(minS, maxS) * SAMPLE_RATE);
    return {
      length,
      voiced: false,
      f0Start: 0,
      f0End: 0,
      f1Start: 0,
      f1End: 0,
      f2Start: 0,
      f2End: 0,
      amplitude: 0,
    };
  }

  private syllable(): Segment {
    const r = this.rng;
    const f0Start = r.uniform(90, 250);
    // Pitch drifts within a syllable (intonation), bounded to the speech range.
    const f0End = Math.min(250, Math.max(90, f0Start * r.uniform(0.8, 1.2)));
    return {
      length: Math.round(r.uniform(0.12, 0.3) * SAMPLE_RATE),
      voiced: true,
      f0Start,
      f0End,
      f1Start: r.uniform(300, 900),
      f1End: r.uniform(300, 900),
      f2Start: r.uniform(900, 2500),
      f2End: r.uniform(900, 2500),
      amplitude: r.uniform(0.35, 1) * 11000,
    };
  }

  /** Syllables come in phrases of 3..8; short pauses inside a phrase, 200-600 ms between. */
  private advance(): void {
    const wasVoiced = this.segment.voiced;
    this.segPos = 0;
    this.gainsAtSample = -1;
    if (wasVoiced && this.syllablesLeftInPhrase === 0) {
      this.segment = this.pause(0.2, 0.6);
      return;
    }
    if (wasVoiced && this.rng.next() < 0.4) {
      this.segment = this.pause(0.01, 0.06);
      return;
    }
    if (this.syllablesLeftInPhrase === 0) {
      this.syllablesLeftInPhrase = 3 + Math.floor(this.rng.next() * 6);
    }
    this.syllablesLeftInPhrase--;
    this.segment = this.syllable();
  }

  /** Harmonic weights change slowly: recompute every 80 samples (10 ms), not per sample. */
  private updateGains(f0: number, f1: number, f2: number): void {
    let norm = 0;
    const n = Math.min(this.harmonicGains.length, Math.floor(MAX_HARMONIC_HZ / f0));
    for (let k = 1; k <= this.harmonicGains.length; k++) {
      let g = 0;
      if (k <= n) {
        const f = k * f0;
        // Glottal source falls ~12 dB/octave; the vocal tract adds two resonances.
        g = (1 / (k * k)) * 0.3 + formantGain(f, f1, 120) + 0.6 * formantGain(f, f2, 200);
      }
      this.harmonicGains[k - 1] = g;
      norm += g;
    }
    this.harmonicNorm = norm > 0 ? 1 / norm : 0;
  }

  private sample(): number {
    const s = this.segment;
    let v = NOISE_FLOOR * this.rng.gaussish();
    if (s.voiced) {
      const t = this.segPos / s.length;
      const f0 = s.f0Start + (s.f0End - s.f0Start) * t;
      if (this.gainsAtSample < 0 || this.segPos - this.gainsAtSample >= 80) {
        this.updateGains(
          f0,
          s.f1Start + (s.f1End - s.f1Start) * t,
          s.f2Start + (s.f2End - s.f2Start) * t,
        );
        this.gainsAtSample = this.segPos;
      }
      this.phase += (2 * Math.PI * f0) / SAMPLE_RATE;
      if (this.phase > 2 * Math.PI) this.phase -= 2 * Math.PI;
      let voiced = 0;
      for (let k = 0; k < this.harmonicGains.length; k++) {
        const g = this.harmonicGains[k];
        if (g === 0) break;
        voiced += g * Math.sin((k + 1) * this.phase);
      }
      // Syllable envelope: quick raised-cosine attack (25%), slower decay (40%).
      const env =
        t < 0.25
          ? 0.5 - 0.5 * Math.cos((Math.PI * t) / 0.25)
          : t > 0.6
            ? 0.5 + 0.5 * Math.cos((Math.PI * (t - 0.6)) / 0.4)
            : 1;
      const a = s.amplitude * env;
      v += a * (voiced * this.harmonicNorm * 2.2 + ASPIRATION * this.rng.gaussish());
    }
    const r = Math.round(v);
    return r > 32767 ? 32767 : r < -32768 ? -32768 : r;
  }
}

/** `durationS` seconds of speech from `seed`, rounded down to whole 20 ms frames. */
export function generateSpeech(seed: number, durationS: number): Int16Array {
  const frames = Math.floor((durationS * SAMPLE_RATE) / SAMPLES_PER_20MS);
  const out = new Int16Array(frames * SAMPLES_PER_20MS);
  new SpeechSource(seed).read(out);
  return out;
}

/**
 * Seconds of audible speech: 20 ms frames whose RMS reaches `threshold` (the agent's
 * SILENCE_THRESHOLD), the time in which the tracker can produce samples at all.
 */
export function speechSeconds(samples: Int16Array, threshold: number): number {
  let loud = 0;
  for (let off = 0; off + SAMPLES_PER_20MS <= samples.length; off += SAMPLES_PER_20MS) {
    let sum = 0;
    for (let i = off; i < off + SAMPLES_PER_20MS; i++) sum += samples[i] * samples[i];
    if (sum >= threshold * threshold * SAMPLES_PER_20MS) loud++;
  }
  return (loud * SAMPLES_PER_20MS) / SAMPLE_RATE;
}

export function encodePcmu(samples: Int16Array): Uint8Array {
  const out = new Uint8Array(samples.length);
  for (let i = 0; i < samples.length; i++) out[i] = linearToUlaw(samples[i]);
  return out;
}

export function encodeLe16(samples: Int16Array): Uint8Array {
  const out = new Uint8Array(samples.length * 2);
  const view = new DataView(out.buffer);
  for (let i = 0; i < samples.length; i++) view.setInt16(i * 2, samples[i], true);
  return out;
}

/** Wire encodings the lab's senders can produce. */
export type AudioFormat = 'pcmu' | 'le16';

/** Bytes per 20 ms packet: one byte per sample for PCMU, two for 16-bit PCM. */
export function bytesPer20ms(format: AudioFormat): number {
  return format === 'pcmu' ? SAMPLES_PER_20MS : SAMPLES_PER_20MS * 2;
}

export function encode(format: AudioFormat, samples: Int16Array): Uint8Array {
  return format === 'pcmu' ? encodePcmu(samples) : encodeLe16(samples);
}

/**
 * The exact 20 ms payloads a sender with this seed sends in `durationS` seconds: what the test
 * signs with the reference to predict the agent's sample count.
 */
export function senderPayloads(seed: number, format: AudioFormat, durationS: number): Uint8Array[] {
  const encoded = encode(format, generateSpeech(seed, durationS));
  const per = bytesPer20ms(format);
  const out: Uint8Array[] = [];
  for (let off = 0; off + per <= encoded.length; off += per) {
    out.push(encoded.subarray(off, off + per));
  }
  return out;
}
