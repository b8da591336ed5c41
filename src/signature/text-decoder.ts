/**
 * Audio carried as text (docs/tcp-streams.md, "Text decoder"): maximal runs of base64 or hex
 * characters are decoded back to bytes as they stream; a run shorter than MIN_TEXT_RUN characters
 * (JSON keys, numbers, UUIDs, timestamps) yields nothing. A relay that re-builds the JSON around
 * an audio string, or re-encodes the same bytes in other chunks, leaves the decoded bytes alone.
 * native/signature/text_decoder.h is the production twin and must decode identically.
 */

/** Characters a run must reach before it counts as audio (and is decoded). */
export const MIN_TEXT_RUN = 64;

const SLASH = 0x2f;
const BACKSLASH = 0x5c;

/** Base64 value of a character, -1 outside the alphabet (`=` included: it ends a run). */
export const BASE64_VALUE: Int8Array = (() => {
  const t = new Int8Array(256).fill(-1);
  const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/';
  for (let i = 0; i < alphabet.length; i++) t[alphabet.charCodeAt(i)] = i;
  return t;
})();

/** Hex value of a character, -1 for anything else. */
export const HEX_VALUE: Int8Array = (() => {
  const t = new Int8Array(256).fill(-1);
  for (let i = 0; i < 10; i++) t[0x30 + i] = i;
  for (let i = 0; i < 6; i++) {
    t[0x41 + i] = 10 + i;
    t[0x61 + i] = 10 + i;
  }
  return t;
})();

const NONE = 0; // between runs
const PENDING = 1; // in a run shorter than MIN_TEXT_RUN: held, not yet decoded
const HEX = 2;
const BASE64 = 3;
const SKIP = 4; // the rest of a run cut by a gap: its phase is unknown

export type ByteOut = (b: number) => void;

export class TextAudioDecoder {
  private kind = NONE;
  private readonly held = new Uint8Array(MIN_TEXT_RUN);
  private heldLen = 0;
  private allHex = true;
  private digit = false;
  private backslash = false;
  private acc = 0; // base64: bits of the open quad; hex: the pending high nibble
  private chars = 0; // characters in acc

  /** Forget everything (a new stream). */
  reset(): void {
    this.kind = NONE;
    this.heldLen = 0;
    this.backslash = false;
    this.acc = 0;
    this.chars = 0;
  }

  /** Bytes are missing before the next one: a run in progress can not be decoded in phase. */
  gap(): void {
    const inRun = this.kind !== NONE;
    this.reset();
    if (inRun) this.kind = SKIP;
  }

  /** The text ends here (end of an HTTP body): a run in progress ends, its last quad flushed. */
  end(out: ByteOut): void {
    this.backslash = false;
    this.endRun(out);
  }

  push(c: number, out: ByteOut): void {
    if (this.backslash) {
      this.backslash = false;
      // JSON may escape '/' (a base64 character) as "\/": the backslash is not part of the run.
      if (c === SLASH) return this.runChar(c, out);
      this.endRun(out);
    }
    if (c === BACKSLASH) this.backslash = true;
    else if (BASE64_VALUE[c] >= 0) this.runChar(c, out);
    else this.endRun(out); // '=' (padding), quotes, separators, anything else
  }

  private runChar(c: number, out: ByteOut): void {
    if (this.kind === NONE) {
      this.kind = PENDING;
      this.heldLen = 0;
      this.allHex = true;
      this.digit = false;
    }
    switch (this.kind) {
      case SKIP:
        return;
      case PENDING:
        this.hold(c, out);
        return;
      case HEX:
        if (HEX_VALUE[c] < 0) {
          // A hex run ends at the first other character, which may begin a run of its own.
          this.endRun(out);
          this.runChar(c, out);
          return;
        }
        this.hex(c, out);
        return;
      default:
        this.base64(c, out);
    }
  }

  private hold(c: number, out: ByteOut): void {
    this.held[this.heldLen++] = c;
    if (HEX_VALUE[c] < 0) this.allHex = false;
    else if (c <= 0x39) this.digit = true;
    if (this.heldLen < MIN_TEXT_RUN) return;
    // Long enough to be audio. Hex needs a digit: base64 of silence ("AAAA...") is all hex letters.
    this.kind = this.allHex && this.digit ? HEX : BASE64;
    this.acc = 0;
    this.chars = 0;
    for (let i = 0; i < MIN_TEXT_RUN; i++) {
      if (this.kind === HEX) this.hex(this.held[i], out);
      else this.base64(this.held[i], out);
    }
  }

  private hex(c: number, out: ByteOut): void {
    if (this.chars === 0) {
      this.acc = HEX_VALUE[c];
      this.chars = 1;
    } else {
      out((this.acc << 4) | HEX_VALUE[c]);
      this.chars = 0;
    }
  }

  private base64(c: number, out: ByteOut): void {
    this.acc = (this.acc << 6) | BASE64_VALUE[c];
    if (++this.chars < 4) return;
    out((this.acc >>> 16) & 0xff);
    out((this.acc >>> 8) & 0xff);
    out(this.acc & 0xff);
    this.acc = 0;
    this.chars = 0;
  }

  private endRun(out: ByteOut): void {
    if (this.kind === BASE64) {
      // An unpadded or '='-padded tail: 2 characters hold 1 byte, 3 hold 2.
      if (this.chars === 2) out((this.acc >>> 4) & 0xff);
      else if (this.chars === 3) {
        out((this.acc >>> 10) & 0xff);
        out((this.acc >>> 2) & 0xff);
      }
    }
    this.kind = NONE;
    this.heldLen = 0;
    this.acc = 0;
    this.chars = 0;
  }
}
