/**
 * From a TCP stream's bytes to its audio bytes (docs/tcp-streams.md, "User space"): sniff what
 * the stream carries, then strip HTTP heads, de-chunk bodies, unmask WebSocket frames and decode
 * audio carried as base64 or hex text. Runs before anchoring, so signatures are those of the
 * audio bytes whatever carries them. native/signature/stream_framing.h is the production twin.
 */
import { Encoding } from '../abi.js';
import {
  BODY_RAW,
  CHUNK_DATA,
  CHUNK_END,
  ChunkedDecoder,
  HttpHead,
  httpStartMatch,
} from './http.js';
import { TextAudioDecoder } from './text-decoder.js';
import type { ByteOut } from './text-decoder.js';
import { WebSocketFrames } from './websocket.js';

/** Bytes looked at to tell text from binary on a stream that is not HTTP. */
export const SNIFF_BYTES = 256;
/** A gap before SNIFF_BYTES: the bytes held decide if there are at least this many. */
export const SNIFF_MIN_ON_GAP = 16;

export const Mode = {
  Sniff: 0,
  Raw: 1,
  Text: 2,
  HttpHead: 3,
  HttpBody: 4,
  WebSocket: 5,
} as const;
export type Mode = (typeof Mode)[keyof typeof Mode];

const CHUNKED = 0;
const LENGTH = 1;
const TO_END = 2;

/** Where decoded bytes go: the audio stream, with the encoding the silence gate reads them by. */
export type AudioOut = (encoding: number, b: number) => void;

/** At least 90% printable ASCII (or tab, CR, LF): text. */
export function mostlyPrintable(bytes: Uint8Array, n: number): boolean {
  let printable = 0;
  for (let i = 0; i < n; i++) {
    const c = bytes[i];
    if ((c >= 0x20 && c <= 0x7e) || c === 0x09 || c === 0x0a || c === 0x0d) printable++;
  }
  return printable * 10 >= n * 9;
}

export class StreamFraming {
  mode: Mode = Mode.Sniff;
  private readonly held = new Uint8Array(SNIFF_BYTES);
  private heldLen = 0;
  private notHttp = false;
  private readonly head = new HttpHead();
  private readonly chunked = new ChunkedDecoder();
  private bodyFraming = TO_END;
  private bodyRaw = false;
  private bodyRemaining = 0;
  private readonly text = new TextAudioDecoder();
  private ws: WebSocketFrames = new WebSocketFrames(true);
  // Per event: where bytes go (set by push(); the closures below read them).
  private out: AudioOut = () => undefined;
  private rawEncoding = Encoding.RawLe16 as number;
  private readonly textOut: ByteOut = (b) => this.out(Encoding.Opaque, b);
  private readonly rawOut: ByteOut = (b) => this.out(this.rawEncoding, b);
  private readonly decodeText: ByteOut = (c) => this.text.push(c, this.textOut);

  reset(): void {
    this.mode = Mode.Sniff;
    this.heldLen = 0;
    this.notHttp = false;
    this.head.reset();
    this.chunked.reset();
    this.text.reset();
  }

  /** One event's bytes. chunk: the event continues a packet (not a segment start). */
  push(data: Uint8Array, encoding: number, chunk: boolean, out: AudioOut): void {
    this.out = out;
    this.rawEncoding = encoding;
    if (this.mode === Mode.WebSocket && this.ws.hunting && !chunk)
      this.ws.resyncAt(data, data.length);
    for (let i = 0; i < data.length; i++) this.byte(data[i]);
  }

  /** The stream ends: bytes still held for sniffing are decided on, a last base64 quad flushed. */
  end(out: AudioOut): void {
    this.out = out;
    if (this.mode === Mode.Sniff && this.heldLen > 0) this.decide(true);
    this.text.end(this.textOut);
  }

  /**
   * missing bytes (-1: unknown) are gone before the next event. Returns how many audio bytes
   * are known to have been skipped (for sample alignment), or -1.
   */
  gap(missing: number): number {
    switch (this.mode) {
      case Mode.Sniff:
        if (this.heldLen >= SNIFF_MIN_ON_GAP) this.decide(false);
        this.heldLen = 0;
        return -1;
      case Mode.Raw:
        return missing > 0 ? missing : -1;
      case Mode.Text:
        this.text.gap();
        return -1;
      case Mode.HttpHead:
        this.head.gap();
        return -1;
      case Mode.HttpBody:
        this.text.gap();
        return this.bodyGap(missing);
      default:
        this.text.gap();
        return this.ws.gap(missing);
    }
  }

  private bodyGap(missing: number): number {
    const audio = this.bodyRaw ? missing : -1;
    if (this.bodyFraming === CHUNKED) return this.chunked.gap(missing) ? audio : -1;
    if (this.bodyFraming === TO_END) return missing > 0 ? audio : -1;
    if (missing > 0 && missing <= this.bodyRemaining) {
      this.bodyRemaining -= missing;
      if (this.bodyRemaining === 0) this.nextMessage();
      return audio;
    }
    this.bodyFraming = TO_END; // the next head is lost: the rest is this body's kind
    return -1;
  }

  private byte(c: number): void {
    switch (this.mode) {
      case Mode.Sniff:
        return this.sniff(c);
      case Mode.Raw:
        return this.rawOut(c);
      case Mode.Text:
        return this.text.push(c, this.textOut);
      case Mode.HttpHead: {
        const r = this.head.push(c);
        if (r > 0) this.headDone();
        else if (r < 0) this.mode = Mode.Text; // no blank line in 16 KB: not an HTTP head
        return;
      }
      case Mode.HttpBody:
        return this.bodyByte(c);
      default:
        return this.ws.push(c, this.rawOut, this.decodeText);
    }
  }

  private sniff(c: number): void {
    this.held[this.heldLen++] = c;
    if (!this.notHttp) {
      const m = httpStartMatch(this.held, this.heldLen);
      if (m > 0) {
        this.mode = Mode.HttpHead;
        this.head.reset();
        this.replay();
        return;
      }
      if (m < 0) this.notHttp = true;
    }
    if (this.heldLen === SNIFF_BYTES) this.decide(true);
  }

  private decide(replay: boolean): void {
    this.mode = mostlyPrintable(this.held, this.heldLen) ? Mode.Text : Mode.Raw;
    if (replay) this.replay();
  }

  private replay(): void {
    const n = this.heldLen;
    this.heldLen = 0;
    for (let i = 0; i < n; i++) this.byte(this.held[i]);
  }

  private headDone(): void {
    const h = this.head;
    if (h.upgradeWebSocket && (h.request || h.status === 101)) {
      this.ws = new WebSocketFrames(h.request);
      this.mode = Mode.WebSocket;
      return;
    }
    if (!h.request && h.status === 101) {
      this.mode = Mode.Raw; // switched to some other protocol: bytes are bytes
      return;
    }
    this.bodyRaw = h.bodyKind === BODY_RAW;
    this.text.reset();
    if (h.chunked) {
      this.bodyFraming = CHUNKED;
      this.chunked.reset();
      this.mode = Mode.HttpBody;
      return;
    }
    const len = h.bodyLength();
    if (len === 0) return this.nextMessage();
    this.bodyFraming = len > 0 ? LENGTH : TO_END;
    this.bodyRemaining = len;
    this.mode = Mode.HttpBody;
  }

  private bodyByte(c: number): void {
    if (this.bodyFraming === CHUNKED) {
      const r = this.chunked.push(c);
      if (r === CHUNK_DATA) this.bodyOut(c);
      else if (r === CHUNK_END) this.bodyEnd();
      return;
    }
    this.bodyOut(c);
    if (this.bodyFraming === LENGTH && --this.bodyRemaining === 0) this.bodyEnd();
  }

  private bodyOut(c: number): void {
    if (this.bodyRaw) this.rawOut(c);
    else this.text.push(c, this.textOut);
  }

  /** The body ended: a run in progress ends with it (the next head must not extend it). */
  private bodyEnd(): void {
    this.text.end(this.textOut);
    this.nextMessage();
  }

  private nextMessage(): void {
    this.text.reset();
    this.head.reset();
    this.mode = Mode.HttpHead;
  }
}
