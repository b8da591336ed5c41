/**
 * HTTP/1.x on a TCP stream (docs/tcp-streams.md): the head is skipped, remembering what decides
 * the body (WebSocket upgrade, status, Content-Type, Content-Length, chunked); chunked bodies are
 * de-chunked so a relay's different chunking leaves the body bytes alone. Bounded state: the
 * first HTTP_LINE_KEEP characters of the current line. native/signature/http.h is the twin.
 */

/** Characters of a head line kept (lower-cased): enough for every header we read. */
export const HTTP_LINE_KEEP = 64;
/** A head longer than this is not HTTP after all. */
export const HTTP_MAX_HEAD = 16384;

/** Request methods and the response prefix that make a stream HTTP, as they start it. */
export const HTTP_STARTS: readonly Uint8Array[] = [
  'GET ',
  'POST ',
  'PUT ',
  'PATCH ',
  'DELETE ',
  'HEAD ',
  'OPTIONS ',
  'HTTP/1.',
].map((s) => new TextEncoder().encode(s));

export const BODY_TEXT = 0;
export const BODY_RAW = 1;

/** -1: no stream of HTTP_STARTS starts with prefix[0..n); 0: some might; 1: one does. */
export function httpStartMatch(prefix: Uint8Array, n: number): number {
  let possible = 0;
  for (const s of HTTP_STARTS) {
    const k = Math.min(n, s.length);
    let same = true;
    for (let i = 0; i < k && same; i++) same = prefix[i] === s[i];
    if (!same) continue;
    if (n >= s.length) return 1;
    possible = 1;
  }
  return possible ? 0 : -1;
}

function startsWith(line: Uint8Array, len: number, s: string): boolean {
  if (len < s.length) return false;
  for (let i = 0; i < s.length; i++) if (line[i] !== s.charCodeAt(i)) return false;
  return true;
}

function contains(line: Uint8Array, from: number, len: number, s: string): boolean {
  for (let at = from; at + s.length <= len; at++) {
    let i = 0;
    while (i < s.length && line[at + i] === s.charCodeAt(i)) i++;
    if (i === s.length) return true;
  }
  return false;
}

/** Index of the first non-blank character at or after from. */
function skipBlanks(line: Uint8Array, from: number, len: number): number {
  while (from < len && (line[from] === 0x20 || line[from] === 0x09)) from++;
  return from;
}

export class HttpHead {
  request = false;
  status = 0;
  upgradeWebSocket = false;
  chunked = false;
  contentLength = -1;
  bodyKind = BODY_TEXT;
  private readonly line = new Uint8Array(HTTP_LINE_KEEP);
  private lineLen = 0;
  private broken = false; // bytes of the current line were lost
  private lines = 0;
  private total = 0;

  reset(): void {
    this.broken = false;
    this.request = false;
    this.status = 0;
    this.upgradeWebSocket = false;
    this.chunked = false;
    this.contentLength = -1;
    this.bodyKind = BODY_TEXT;
    this.lineLen = 0;
    this.lines = 0;
    this.total = 0;
  }

  /** Bytes were lost inside the head: the line in progress is not what it seems. */
  gap(): void {
    this.broken = true;
  }

  /** 1: the head ended with this byte; 0: more head; -1: too long to be a head. */
  push(c: number): number {
    if (++this.total > HTTP_MAX_HEAD) return -1;
    if (c === 0x0d) return 0; // CR: lines end at LF, with or without it
    if (c !== 0x0a) {
      if (this.lineLen < HTTP_LINE_KEEP) {
        this.line[this.lineLen] = c >= 0x41 && c <= 0x5a ? c + 0x20 : c;
      }
      this.lineLen++;
      return 0;
    }
    const len = this.lineLen;
    const broken = this.broken;
    this.lineLen = 0;
    this.broken = false;
    if (len === 0) return this.lines > 0 && !broken ? 1 : 0; // blank: the end (or a stray CRLF)
    if (!broken) this.headerLine(Math.min(len, HTTP_LINE_KEEP));
    this.lines++;
    return 0;
  }

  /** Whether the message has a body and how it ends: 'chunked', a length, or the stream's end. */
  bodyLength(): number {
    if (this.request) return this.contentLength >= 0 ? this.contentLength : 0;
    if ((this.status >= 100 && this.status < 200) || this.status === 204 || this.status === 304)
      return 0;
    return this.contentLength; // -1: to the end of the stream
  }

  private headerLine(len: number): void {
    const l = this.line;
    if (this.lines === 0) {
      this.request = !startsWith(l, len, 'http/1.');
      if (!this.request && len >= 12) {
        const d = (i: number): number => l[i] - 0x30;
        if ([9, 10, 11].every((i) => d(i) >= 0 && d(i) <= 9))
          this.status = d(9) * 100 + d(10) * 10 + d(11);
      }
      return;
    }
    if (startsWith(l, len, 'upgrade:')) {
      if (contains(l, 8, len, 'websocket')) this.upgradeWebSocket = true;
    } else if (startsWith(l, len, 'transfer-encoding:')) {
      if (contains(l, 18, len, 'chunked')) this.chunked = true;
    } else if (startsWith(l, len, 'content-length:')) {
      let at = skipBlanks(l, 15, len);
      let v = 0;
      let digits = 0;
      for (; at < len && l[at] >= 0x30 && l[at] <= 0x39 && digits < 15; at++, digits++)
        v = v * 10 + (l[at] - 0x30);
      if (digits > 0) this.contentLength = v;
    } else if (startsWith(l, len, 'content-type:')) {
      const at = skipBlanks(l, 13, len);
      const rest = l.subarray(at, len);
      const raw =
        startsWith(rest, rest.length, 'audio/') ||
        startsWith(rest, rest.length, 'application/octet-stream');
      this.bodyKind = raw ? BODY_RAW : BODY_TEXT;
    }
  }
}

const SIZE = 0; // chunk-size hex digits
const EXT = 1; // chunk extension: skipped to LF
const DATA = 2;
const DATA_END = 3; // the CRLF after chunk data
const TRAILER = 4; // trailer lines after the last chunk
const HUNT = 5; // lost: skip to LF, then read a size line

export const CHUNK_FRAMING = 0; // the byte belongs to the chunked framing
export const CHUNK_DATA = 1; // the byte is body data
export const CHUNK_END = 2; // the body ended with this byte

/** Transfer-Encoding: chunked, one byte at a time. */
export class ChunkedDecoder {
  private state = SIZE;
  private size = 0;
  private digits = 0;
  private lineLen = 0;
  /** Data bytes left in the current chunk. */
  remaining = 0;

  reset(): void {
    this.state = SIZE;
    this.size = 0;
    this.digits = 0;
    this.lineLen = 0;
    this.remaining = 0;
  }

  inData(): boolean {
    return this.state === DATA;
  }

  /** missing bytes (-1: unknown) are gone: skipped inside chunk data, else lost until a size line. */
  gap(missing: number): boolean {
    if (this.state === DATA && missing > 0 && missing <= this.remaining) {
      this.remaining -= missing;
      if (this.remaining === 0) this.state = DATA_END;
      return true;
    }
    this.state = HUNT;
    return false;
  }

  push(c: number): number {
    switch (this.state) {
      case DATA:
        if (--this.remaining === 0) this.state = DATA_END;
        return CHUNK_DATA;
      case SIZE:
        return this.sizeChar(c);
      case EXT:
        if (c === 0x0a) return this.sizeLineEnd();
        return CHUNK_FRAMING;
      case DATA_END:
        if (c === 0x0a) this.toSize();
        else if (c !== 0x0d) this.state = HUNT;
        return CHUNK_FRAMING;
      case TRAILER:
        if (c === 0x0a) {
          if (this.lineLen === 0) {
            this.reset();
            return CHUNK_END;
          }
          this.lineLen = 0;
        } else if (c !== 0x0d) this.lineLen++;
        return CHUNK_FRAMING;
      default: // HUNT
        if (c === 0x0a) this.toSize();
        return CHUNK_FRAMING;
    }
  }

  private toSize(): void {
    this.state = SIZE;
    this.size = 0;
    this.digits = 0;
  }

  private sizeChar(c: number): number {
    const v = hexDigit(c);
    if (v >= 0 && this.digits < 8) {
      this.size = this.size * 16 + v;
      this.digits++;
    } else if (c === 0x0a) {
      return this.sizeLineEnd();
    } else if (c === 0x3b || c === 0x20 || c === 0x09) {
      if (this.digits > 0) this.state = EXT;
      else this.state = HUNT;
    } else if (c !== 0x0d) {
      this.state = HUNT; // not a size line: we are lost in data
    }
    return CHUNK_FRAMING;
  }

  private sizeLineEnd(): number {
    if (this.digits === 0) {
      this.toSize(); // a blank line: keep looking for the size
    } else if (this.size === 0) {
      this.state = TRAILER;
      this.lineLen = 0;
    } else {
      this.state = DATA;
      this.remaining = this.size;
    }
    return CHUNK_FRAMING;
  }
}

function hexDigit(c: number): number {
  if (c >= 0x30 && c <= 0x39) return c - 0x30;
  if (c >= 0x61 && c <= 0x66) return c - 0x57;
  if (c >= 0x41 && c <= 0x46) return c - 0x37;
  return -1;
}
