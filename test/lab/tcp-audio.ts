/**
 * Audio and byte-stream helpers of the TCP lab pipelines (docs/lab.md, "TCP pipelines"): the
 * 16 kHz L16 stream voice-AI stages pass to each other, frames of any duration, the relays'
 * random re-chunking, hex/base64 text encodings, and TCP sockets bound to a known local port.
 *
 * The L16 16 kHz stream is the lab's 8 kHz speech upsampled by 2 (each new sample is the mean of
 * its neighbours), computed sample by sample with carried state, so a source streaming 20 ms or
 * 100 ms frames and the test generating the whole stream at once produce the same bytes.
 */
import { connect, type Socket } from 'node:net';
import {
  encodePcmu,
  generateSpeech,
  Prng,
  SAMPLE_RATE,
  SpeechSource,
  speechSeconds,
} from './audio-source.js';

/** Audio formats of the TCP pipelines: L16 16 kHz little-endian, or G.711 mu-law 8 kHz. */
export type StreamFormat = 'le16k' | 'pcmu';

export function bytesPerMs(format: StreamFormat): number {
  return format === 'le16k' ? 32 : 8;
}

/** Endless audio bytes of one format from one seed, independent of how reads are chunked. */
export class StreamAudio {
  private readonly speech: SpeechSource;
  private readonly format: StreamFormat;
  private prev = 0;
  private pcm = new Int16Array(0);

  constructor(seed: number, format: StreamFormat) {
    this.speech = new SpeechSource(seed);
    this.format = format;
  }

  /** The next `ms` milliseconds of audio (ms * 8 source samples: a whole number of samples). */
  next(ms: number): Uint8Array {
    const n = ms * (SAMPLE_RATE / 1000);
    if (this.pcm.length !== n) this.pcm = new Int16Array(n);
    this.speech.read(this.pcm);
    return this.format === 'pcmu' ? encodePcmu(this.pcm) : this.upsampleLe16(this.pcm);
  }

  private upsampleLe16(src: Int16Array): Uint8Array {
    const out = Buffer.alloc(src.length * 4);
    for (let i = 0; i < src.length; i++) {
      const s = src[i];
      out.writeInt16LE((this.prev + s) >> 1, i * 4);
      out.writeInt16LE(s, i * 4 + 2);
      this.prev = s;
    }
    return out;
  }
}

/** The frames a source with this seed sends in `durationS` seconds (whole frames only). */
export function streamFrames(
  seed: number,
  format: StreamFormat,
  frameMs: number,
  durationS: number,
): Uint8Array[] {
  const audio = new StreamAudio(seed, format);
  const count = Math.floor((durationS * 1000) / frameMs);
  const out: Uint8Array[] = [];
  for (let i = 0; i < count; i++) out.push(audio.next(frameMs));
  return out;
}

/** Seconds of audible speech in that stream (the 8 kHz source judged in 20 ms frames). */
export function streamSpeechSeconds(seed: number, durationS: number, threshold: number): number {
  return speechSeconds(generateSpeech(seed, durationS), threshold);
}

/**
 * Cuts a byte stream into writes of random sizes in [min, max], but never across a batch: each
 * batch is due at one instant (its arrival + the hold), and a write holding bytes of a later
 * batch would send this batch's bytes late. A write is cut short at the end of its batch.
 */
export class RandomChunker {
  private readonly rng: Prng;

  constructor(
    seed: number,
    private readonly min: number,
    private readonly max: number,
  ) {
    this.rng = new Prng(seed);
  }

  cut(batch: Uint8Array): Uint8Array[] {
    const out: Uint8Array[] = [];
    for (let off = 0; off < batch.length; ) {
      const size = this.min + Math.floor(this.rng.next() * (this.max - this.min + 1));
      const end = Math.min(batch.length, off + size);
      out.push(batch.subarray(off, end));
      off = end;
    }
    return out;
  }
}

/** Random integer in [lo, hi] from a lab PRNG. */
export function randInt(rng: Prng, lo: number, hi: number): number {
  return lo + Math.floor(rng.next() * (hi - lo + 1));
}

/**
 * JSON with every `/` escaped as `\/` (what PHP's json_encode and some Java encoders emit): base64
 * audio then carries backslashes the agent's text decoder must skip.
 */
export function jsonEscapedSlashes(value: unknown): string {
  return JSON.stringify(value).replaceAll('/', '\\/');
}

/**
 * Connects to host:port from `localPort` (0: any) with TCP_NODELAY: each write leaves at once as
 * its own segment(s), as real-time audio stacks configure their sockets.
 */
export function connectTcp(host: string, port: number, localPort: number): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const sock = connect({
      host,
      port,
      ...(localPort > 0 ? { localPort, localAddress: '0.0.0.0' } : {}),
      noDelay: true,
    });
    const onError = (err: Error): void =>
      reject(new Error(`connect ${host}:${port} from port ${localPort}: ${err.message}`));
    sock.once('error', onError);
    sock.once('connect', () => {
      sock.off('error', onError);
      resolve(sock);
    });
  });
}

/** Parses `--format`. */
export function parseFormat(value: string): StreamFormat | undefined {
  return value === 'le16k' || value === 'pcmu' ? value : undefined;
}
