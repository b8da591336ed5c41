/**
 * What the agent must find, computed with the TypeScript reference of the signature scheme
 * (src/signature/): the senders' exact payload bytes, signed as one stream per flow.
 *
 * A relay forwards the same bytes, so its input and output streams carry the same non-silent
 * windows and every one of them can pair: the number of windows is the number of hop samples to
 * expect. Re-framing (3 x 20 ms in, 60 ms out) does not change that: anchors are content-defined
 * and PCM packets hold whole samples, so the windows, their alignment and their silence verdicts
 * are the same whatever the packet sizes. What re-framing changes is when a window is seen on the
 * output: with the packet holding its last byte, i.e. at the third input's arrival + hold, so the
 * re-framed hop's latency is hold + 0, 20 or 40 ms depending on where the window ends.
 */
import { createHash } from 'node:crypto';
import { Encoding } from '../../src/abi.js';
import {
  signPackets,
  type ReferenceSignature,
  type SignerConfig,
} from '../../src/signature/index.js';
import { generateSpeech, senderPayloads, speechSeconds, type AudioFormat } from './audio-source.js';

export interface Prediction {
  packets: number;
  bytes: number;
  sha256: string;
  /** Non-silent windows of the stream: signatures each observation point must produce. */
  signatures: number;
  /** Seconds of audible speech (20 ms frames at or above the silence threshold). */
  speechSeconds: number;
  /** The signatures themselves, for framing comparisons. */
  sigs: ReferenceSignature[];
}

export function encodingOf(format: AudioFormat): Encoding {
  return format === 'pcmu' ? Encoding.Pcmu : Encoding.RawLe16;
}

/** Groups consecutive payloads by `gather`, as the re-framing relay does (the rest in one packet). */
export function reframe(payloads: Uint8Array[], gather: number): Uint8Array[] {
  const out: Uint8Array[] = [];
  for (let i = 0; i < payloads.length; i += gather) {
    out.push(Buffer.concat(payloads.slice(i, i + gather)));
  }
  return out;
}

/** Signs `payloads` (one packet each) as one stream with the reference. */
export function signStream(
  cfg: SignerConfig,
  format: AudioFormat,
  payloads: Uint8Array[],
): ReferenceSignature[] {
  const encoding = encodingOf(format);
  return signPackets(
    cfg,
    payloads.map((audio) => ({ encoding, audio })),
  );
}

/** The prediction for a sender with this seed and format streaming for `durationS` seconds. */
export function predictSender(
  cfg: SignerConfig,
  seed: number,
  format: AudioFormat,
  durationS: number,
): Prediction {
  const payloads = senderPayloads(seed, format, durationS);
  const hash = createHash('sha256');
  let bytes = 0;
  for (const p of payloads) {
    hash.update(p);
    bytes += p.length;
  }
  const sigs = signStream(cfg, format, payloads);
  return {
    packets: payloads.length,
    bytes,
    sha256: hash.digest('hex'),
    signatures: sigs.length,
    speechSeconds: speechSeconds(generateSpeech(seed, durationS), cfg.silenceThreshold),
    sigs,
  };
}
