/**
 * WebSocket frames (RFC 6455) in one direction of a TCP stream (docs/tcp-streams.md): headers
 * (2-14 bytes) stripped, payloads unmasked with the frame's key, continuing across segments.
 * Binary messages are audio bytes, text messages go to the text decoder, control frames and
 * compressed (RSV1, permessage-deflate) messages are dropped. State is a few bytes whatever the
 * frame length. native/signature/websocket.h is the production twin.
 */
import type { ByteOut } from './text-decoder.js';

export const WS_MAX_HEADER = 14;
/** Payload lengths at or beyond 2^53 are taken as garbage (no real frame is that long). */
const MAX_LENGTH_HI = 0x1fffff;

const DROP = 0;
const BINARY = 1;
const TEXT = 2;

const HEADER = 0;
const PAYLOAD = 1;

/** Header bytes announced by the first two: 2, + 2 or 8 of extended length, + 4 of mask key. */
export function wsHeaderSize(b1: number): number {
  const len7 = b1 & 0x7f;
  return 2 + (len7 === 126 ? 2 : len7 === 127 ? 8 : 0) + (b1 & 0x80 ? 4 : 0);
}

/** The payload length of a complete header, or -1 if the header breaks RFC 6455's rules. */
export function wsPayloadLength(h: Uint8Array, at = 0): number {
  const b0 = h[at];
  const op = b0 & 0x0f;
  const len7 = h[at + 1] & 0x7f;
  if (b0 & 0x30) return -1; // RSV2/RSV3: no extension we know
  if (op >= 8) {
    // Control frames: close, ping, pong; never fragmented, at most 125 bytes.
    if (op > 10 || !(b0 & 0x80) || b0 & 0x40 || len7 > 125) return -1;
    return len7;
  }
  if (op > 2 || (op === 0 && b0 & 0x40)) return -1;
  if (len7 < 126) return len7;
  if (len7 === 126) {
    const len = (h[at + 2] << 8) | h[at + 3];
    return len >= 126 ? len : -1; // lengths use the shortest form
  }
  const hi = ((h[at + 2] << 24) | (h[at + 3] << 16) | (h[at + 4] << 8) | h[at + 5]) >>> 0;
  const lo = ((h[at + 6] << 24) | (h[at + 7] << 16) | (h[at + 8] << 8) | h[at + 9]) >>> 0;
  if (hi > MAX_LENGTH_HI || (hi === 0 && lo < 65536)) return -1;
  return hi * 4294967296 + lo;
}

export class WebSocketFrames {
  /** Lost the frame boundaries (a gap, a malformed header): waiting for a header at an event start. */
  hunting = false;
  private state = HEADER;
  private readonly hdr = new Uint8Array(WS_MAX_HEADER);
  private hdrLen = 0;
  private hdrNeed = 2;
  private remaining = 0;
  private readonly key = new Uint8Array(4);
  private masked = false;
  private phase = 0; // payload bytes unmasked so far, mod 4
  private frameKind = DROP;
  private msgKind = DROP; // kind of the message a continuation frame continues

  /** client: this direction carries client frames, which must be masked. */
  constructor(private readonly client: boolean) {}

  reset(): void {
    this.hunting = false;
    this.state = HEADER;
    this.hdrLen = 0;
    this.hdrNeed = 2;
    this.remaining = 0;
    this.frameKind = DROP;
    this.msgKind = DROP;
  }

  /**
   * While hunting, at the start of an event: does data[0..n) begin with a plausible frame header
   * (the direction's mask bit, RFC 6455's rules)? Senders write a frame per write, so after a
   * gap a frame starts a segment far more often than it starts anywhere else.
   */
  resyncAt(data: Uint8Array, n: number): boolean {
    if (n < 2 || Boolean(data[1] & 0x80) !== this.client) return false;
    const size = wsHeaderSize(data[1]);
    if (n < size || wsPayloadLength(data) < 0) return false;
    // A continuation frame continues the message in progress before the gap.
    this.hunting = false;
    this.state = HEADER;
    this.hdrLen = 0;
    this.hdrNeed = 2;
    return true;
  }

  /**
   * missing bytes (-1: unknown) are gone before the next one. Inside a payload they are skipped
   * exactly; returns how many audio (binary payload) bytes were skipped, or -1 if not known.
   */
  gap(missing: number): number {
    if (!this.hunting && this.state === PAYLOAD && missing > 0 && missing <= this.remaining) {
      this.remaining -= missing;
      this.phase = (this.phase + missing) & 3;
      const kind = this.frameKind;
      if (this.remaining === 0) this.state = HEADER;
      return kind === BINARY ? missing : -1;
    }
    this.hunting = true;
    return -1;
  }

  push(b: number, raw: ByteOut, text: ByteOut): void {
    if (this.hunting) return;
    if (this.state === PAYLOAD) {
      if (this.masked) b ^= this.key[this.phase];
      this.phase = (this.phase + 1) & 3;
      if (--this.remaining === 0) this.state = HEADER;
      if (this.frameKind === BINARY) raw(b);
      else if (this.frameKind === TEXT) text(b);
      return;
    }
    this.hdr[this.hdrLen++] = b;
    if (this.hdrLen === 2) this.hdrNeed = wsHeaderSize(b);
    if (this.hdrLen === this.hdrNeed) this.startFrame();
  }

  private startFrame(): void {
    const h = this.hdr;
    const len = wsPayloadLength(h);
    this.hdrLen = 0;
    this.hdrNeed = 2;
    if (len < 0) {
      this.hunting = true;
      return;
    }
    const op = h[0] & 0x0f;
    const compressed = (h[0] & 0x40) !== 0;
    if (op === 1 || op === 2) this.msgKind = compressed ? DROP : op === 1 ? TEXT : BINARY;
    this.frameKind = op === 0 ? this.msgKind : op >= 8 ? DROP : this.msgKind;
    this.masked = (h[1] & 0x80) !== 0;
    if (this.masked) this.key.set(h.subarray(this.hdrNeedOf(h) - 4, this.hdrNeedOf(h)));
    this.phase = 0;
    this.remaining = len;
    this.state = len > 0 ? PAYLOAD : HEADER;
  }

  private hdrNeedOf(h: Uint8Array): number {
    return wsHeaderSize(h[1]);
  }
}
