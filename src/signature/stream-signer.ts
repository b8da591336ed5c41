/**
 * The reference signer for one stream (docs/signatures.md): the bytes of one
 * flow at one observation point, in order. native/signature/engine.cc is the
 * production path and must produce the same values; this one favours
 * clarity (one byte at a time) while staying fast enough for tests.
 */
import { EventFlag } from '../abi.js';
import type { Encoding } from '../abi.js';
import { crc32 } from './crc32.js';
import { anchorBits, GEAR_HI, GEAR_LO, GEAR_SPAN } from './gear.js';
import { rollingHash } from './rolling-hash.js';
import { isSilentWindow } from './silence.js';
import { StreamFraming } from './stream-framing.js';
import { xxh64 } from './xxh64.js';

export type SignatureAlgorithm = 'xxhash' | 'crc32' | 'rolling_hash';

export interface SignerConfig {
  algorithm: SignatureAlgorithm;
  windowSize: number; // SIGNATURE_WINDOW_SIZE, 32..4096
  silenceThreshold: number; // SILENCE_THRESHOLD (RMS on the 16-bit scale)
}

export interface ReferenceSignature {
  sig: bigint;
  tsNs: number; // timestamp of the packet that completed the window
  encoding: Encoding; // encoding of the packet holding the anchor byte
  windowStart: number; // stream position of the window's first byte
}

export interface SignerStats {
  bytes: number;
  windows: number;
  windowsSilent: number;
  signatures: number;
  anchorsDropped: number;
  /** TCP: restarts after a gap (AEV_F_GAP or a sequence number other than the expected one). */
  restarts: number;
}

export const IPPROTO_TCP = 6;

/** What an event says beyond its bytes (struct audio_event). Without protocol: UDP. */
export interface PushOptions {
  protocol?: number;
  flags?: number; // EventFlag bits
  /**
   * TCP sequence number of the first byte. Optional: with it, bytes missing before a gap are
   * counted (a gap inside a WebSocket or chunked payload is skipped exactly) and an event that
   * does not continue the previous one is a gap even without AEV_F_GAP (a lost ring-buffer event).
   */
  seq?: number;
}

export const MIN_WINDOW_SIZE = 32;
export const MAX_WINDOW_SIZE = 4096;
export const MAX_OPEN_WINDOWS = 16;

interface OpenWindow {
  anchor: number; // stream position of the anchor byte; the window is anchor+1 .. anchor+W
  encoding: Encoding;
  align: number;
}

export function signWindow(algorithm: SignatureAlgorithm, w: Uint8Array): bigint {
  switch (algorithm) {
    case 'xxhash':
      return xxh64(w, 0n);
    case 'crc32':
      return BigInt(crc32(w));
    case 'rolling_hash':
      return rollingHash(w);
  }
}

function validate(cfg: SignerConfig): void {
  const { windowSize, silenceThreshold, algorithm } = cfg;
  if (!Number.isInteger(windowSize) || windowSize < MIN_WINDOW_SIZE || windowSize > MAX_WINDOW_SIZE)
    throw new RangeError(`signature windowSize ${windowSize}: want an integer in 32..4096`);
  if (!Number.isInteger(silenceThreshold) || silenceThreshold < 0)
    throw new RangeError(`silenceThreshold ${silenceThreshold}: want a non-negative integer`);
  if (algorithm !== 'xxhash' && algorithm !== 'crc32' && algorithm !== 'rolling_hash')
    throw new RangeError(
      `signature algorithm ${String(algorithm)}: want xxhash, crc32 or rolling_hash`,
    );
}

export class StreamSigner {
  readonly stats: SignerStats = {
    bytes: 0,
    windows: 0,
    windowsSilent: 0,
    signatures: 0,
    anchorsDropped: 0,
    restarts: 0,
  };
  private readonly cfg: SignerConfig;
  private readonly bits: number;
  // The last ringMask + 1 bytes of the stream, indexed by position: enough to
  // gather any window when its last byte arrives, whatever the framing.
  private readonly ring: Uint8Array;
  private readonly ringMask: number;
  private readonly window: Uint8Array;
  private readonly open: OpenWindow[] = [];
  private hHi = 0;
  private hLo = 0;
  private pos = 0; // bytes consumed = position of the next byte
  // TCP (docs/tcp-streams.md): the framing layer, created on the first TCP event.
  private framing: StreamFraming | null = null;
  private fresh = true; // no TCP event since the start (or the end) of the stream
  private nextSeq = 0;
  private seqKnown = false;
  private alignBase = 0; // parity of the audio offset of stream position 0 after a restart

  constructor(cfg: SignerConfig) {
    validate(cfg);
    this.cfg = { ...cfg };
    this.bits = anchorBits(cfg.windowSize);
    const cap = 1 << Math.ceil(Math.log2(cfg.windowSize));
    this.ring = new Uint8Array(cap);
    this.ringMask = cap - 1;
    this.window = new Uint8Array(cfg.windowSize);
  }

  /**
   * Consume one event's bytes; returns the signatures of the windows it completed. UDP (no
   * options, or a protocol other than TCP): the bytes are audio, as they are. TCP: they go through
   * the stream's framing first, and the flags restart or end the stream.
   */
  push(
    encoding: Encoding,
    audio: Uint8Array,
    tsNs: number,
    opts?: PushOptions,
  ): ReferenceSignature[] {
    const out: ReferenceSignature[] = [];
    this.stats.bytes += audio.length;
    if (opts?.protocol === IPPROTO_TCP) this.pushTcp(encoding, audio, tsNs, opts, out);
    else this.consume(encoding, audio, tsNs, this.pos & 1, out);
    return out;
  }

  private pushTcp(
    encoding: Encoding,
    data: Uint8Array,
    tsNs: number,
    opts: PushOptions,
    out: ReferenceSignature[],
  ): void {
    const flags = opts.flags ?? 0;
    const framing = (this.framing ??= new StreamFraming());
    if (flags & EventFlag.StreamStart || this.fresh) {
      framing.reset();
      this.restart(0);
      this.fresh = false;
    } else {
      let gap = (flags & EventFlag.Gap) !== 0;
      let missing = -1;
      if (opts.seq !== undefined && this.seqKnown) {
        const d = (opts.seq - this.nextSeq) | 0;
        if (d !== 0) gap = true;
        if (d > 0) missing = d;
      }
      if (gap) {
        const skipped = framing.gap(missing);
        this.restart(skipped >= 0 ? (this.alignBase + this.pos + skipped) & 1 : 0);
        this.stats.restarts++;
      }
    }
    this.seqKnown = opts.seq !== undefined;
    if (opts.seq !== undefined) this.nextSeq = (opts.seq + data.length) >>> 0;

    const pieces = new Pieces();
    framing.push(data, encoding, (flags & EventFlag.Chunk) !== 0, pieces.add);
    if (flags & EventFlag.StreamEnd) {
      framing.end(pieces.add);
      this.fresh = true; // the stream's state is dropped: what follows is a new stream
    }
    for (const p of pieces.list)
      this.consume(p.encoding as Encoding, Uint8Array.from(p.bytes), tsNs, this.alignBase, out);
  }

  /** The audio stream starts over: Gear warm-up from zero, open windows dropped. */
  private restart(alignBase: number): void {
    this.hHi = 0;
    this.hLo = 0;
    this.pos = 0;
    this.open.length = 0;
    this.alignBase = alignBase;
  }

  /**
   * Anchor and sign audio bytes. An anchor at stream position q gets the sample alignment
   * (q + 1 + alignBase) & 1: for UDP alignBase is the packet's start position (so the alignment
   * counts from the packet), for TCP the parity of the stream's audio offset.
   */
  private consume(
    encoding: Encoding,
    audio: Uint8Array,
    tsNs: number,
    alignBase: number,
    out: ReferenceSignature[],
  ): void {
    const W = this.cfg.windowSize;
    const shift = 32 - this.bits;
    let hi = this.hHi;
    let lo = this.hLo;

    for (let i = 0; i < audio.length; i++) {
      const b = audio[i];
      const q = this.pos++;
      // Gear step on two u32 halves: h = (h << 1) + GEAR[b] mod 2^64.
      const l = ((lo << 1) >>> 0) + GEAR_LO[b];
      hi = (((hi << 1) | (lo >>> 31)) + GEAR_HI[b] + (l >= 4294967296 ? 1 : 0)) >>> 0;
      lo = l >>> 0;
      this.ring[q & this.ringMask] = b;

      // Byte q is consumed: the window it completes is settled before q's own anchor test.
      if (this.open.length > 0 && this.open[0].anchor + W === q) {
        const sig = this.complete(this.open.shift() as OpenWindow, q, tsNs);
        if (sig) out.push(sig);
      }
      if (hi >>> shift === 0 && q + 1 >= GEAR_SPAN)
        this.anchor(q, encoding, (q + 1 + alignBase) & 1);
    }

    this.hHi = hi;
    this.hLo = lo;
  }

  private anchor(q: number, encoding: Encoding, align: number): void {
    if (this.open.length >= MAX_OPEN_WINDOWS) {
      this.stats.anchorsDropped++;
      return;
    }
    this.open.push({ anchor: q, encoding, align });
  }

  private complete(w: OpenWindow, last: number, tsNs: number): ReferenceSignature | null {
    const W = this.cfg.windowSize;
    for (let k = 0; k < W; k++) this.window[k] = this.ring[(last - W + 1 + k) & this.ringMask];
    this.stats.windows++;
    if (isSilentWindow(this.window, w.encoding, w.align, this.cfg.silenceThreshold)) {
      this.stats.windowsSilent++;
      return null;
    }
    this.stats.signatures++;
    return {
      sig: signWindow(this.cfg.algorithm, this.window),
      tsNs,
      encoding: w.encoding,
      windowStart: w.anchor + 1,
    };
  }
}

/** One event's decoded bytes, in runs of one encoding. */
class Pieces {
  readonly list: Array<{ encoding: number; bytes: number[] }> = [];
  readonly add = (encoding: number, b: number): void => {
    const last = this.list[this.list.length - 1];
    if (last && last.encoding === encoding) last.bytes.push(b);
    else this.list.push({ encoding, bytes: [b] });
  };
}

/**
 * Sign a sequence of packets of one stream. A packet without tsNs is stamped
 * with its index in the sequence, so tests can tell which packet completed a window.
 */
export function signPackets(
  cfg: SignerConfig,
  packets: ReadonlyArray<{ encoding: Encoding; audio: Uint8Array; tsNs?: number } & PushOptions>,
): ReferenceSignature[] {
  const signer = new StreamSigner(cfg);
  const out: ReferenceSignature[] = [];
  packets.forEach((p, index) => {
    const opts = { protocol: p.protocol, flags: p.flags, seq: p.seq };
    for (const s of signer.push(p.encoding, p.audio, p.tsNs ?? index, opts)) out.push(s);
  });
  return out;
}
