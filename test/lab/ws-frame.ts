/**
 * Minimal WebSocket (RFC 6455) for the lab: the opening handshake on both sides and the frame
 * format, with masking. Enough to stream audio the way speech services are fed: binary frames
 * (with continuations) and text frames, client frames masked with a fresh key each.
 *
 * No extensions, no fragmentation of control frames, payloads below 2^31 bytes.
 */
import { createHash, randomBytes } from 'node:crypto';

const WS_GUID = '258EAFA5-E914-47DA-95CA-C5AB0DC85B11';

export const Opcode = { Continuation: 0, Text: 1, Binary: 2, Close: 8, Ping: 9, Pong: 10 } as const;
export type Opcode = (typeof Opcode)[keyof typeof Opcode];

/** The Sec-WebSocket-Accept value for a client key. */
export function acceptKey(clientKey: string): string {
  return createHash('sha1')
    .update(clientKey + WS_GUID)
    .digest('base64');
}

/** The client's upgrade request, and the key its response must accept. */
export function clientHandshake(host: string, path: string): { request: string; key: string } {
  const key = randomBytes(16).toString('base64');
  const request =
    `GET ${path} HTTP/1.1\r\nHost: ${host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n` +
    `Sec-WebSocket-Key: ${key}\r\nSec-WebSocket-Version: 13\r\n\r\n`;
  return { request, key };
}

/** The server's 101 response to a request head, or an error naming what is missing. */
export function serverHandshake(requestHead: string): string {
  const key = /^sec-websocket-key:\s*(\S+)\s*$/im.exec(requestHead)?.[1];
  if (!/^GET /.test(requestHead) || !/^upgrade:\s*websocket\s*$/im.test(requestHead) || !key) {
    throw new Error(
      `not a WebSocket upgrade request: ${JSON.stringify(requestHead.slice(0, 200))}`,
    );
  }
  return (
    'HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n' +
    `Sec-WebSocket-Accept: ${acceptKey(key)}\r\n\r\n`
  );
}

/** Checks a server's response head against the key the client sent. */
export function checkServerResponse(responseHead: string, key: string): void {
  const accept = /^sec-websocket-accept:\s*(\S+)\s*$/im.exec(responseHead)?.[1];
  if (!/^HTTP\/1\.1 101 /.test(responseHead) || accept !== acceptKey(key)) {
    throw new Error(`bad WebSocket response: ${JSON.stringify(responseHead.slice(0, 200))}`);
  }
}

/**
 * One frame. `mask` (4 bytes) masks the payload, as every client frame must be; null for server
 * frames. `fin` false leaves the message open for continuation frames.
 */
export function encodeFrame(
  opcode: Opcode,
  payload: Uint8Array,
  mask: Uint8Array | null,
  fin = true,
): Buffer {
  const len = payload.length;
  const extLen = len < 126 ? 0 : len < 65536 ? 2 : 8;
  const head = 2 + extLen + (mask ? 4 : 0);
  const out = Buffer.alloc(head + len);
  out[0] = (fin ? 0x80 : 0) | opcode;
  out[1] = (mask ? 0x80 : 0) | (extLen === 0 ? len : extLen === 2 ? 126 : 127);
  if (extLen === 2) out.writeUInt16BE(len, 2);
  else if (extLen === 8) out.writeBigUInt64BE(BigInt(len), 2);
  if (mask) {
    out.set(mask, 2 + extLen);
    for (let i = 0; i < len; i++) out[head + i] = payload[i] ^ mask[i & 3];
  } else {
    out.set(payload, head);
  }
  return out;
}

export interface Frame {
  fin: boolean;
  opcode: number;
  masked: boolean;
  payload: Buffer; // unmasked
}

/**
 * Incremental frame parser: push() the bytes as they come, in any cuts; it returns the frames
 * completed by them. `requireMask` enforces the direction: a server must reject unmasked client
 * frames, a client masked server frames.
 */
export class FrameParser {
  private buf: Buffer = Buffer.alloc(0);

  constructor(private readonly requireMask: boolean) {}

  push(data: Buffer): Frame[] {
    this.buf = this.buf.length === 0 ? data : Buffer.concat([this.buf, data]);
    const frames: Frame[] = [];
    for (;;) {
      const f = this.next();
      if (!f) break;
      frames.push(f);
    }
    return frames;
  }

  private next(): Frame | null {
    const b = this.buf;
    if (b.length < 2) return null;
    const masked = (b[1] & 0x80) !== 0;
    if (masked !== this.requireMask) {
      throw new Error(`WebSocket frame ${masked ? 'masked' : 'unmasked'}, against the direction`);
    }
    let len = b[1] & 0x7f;
    let off = 2;
    if (len === 126) {
      if (b.length < 4) return null;
      len = b.readUInt16BE(2);
      off = 4;
    } else if (len === 127) {
      if (b.length < 10) return null;
      len = Number(b.readBigUInt64BE(2));
      off = 10;
    }
    const maskOff = off;
    if (masked) off += 4;
    if (b.length < off + len) return null;
    const payload = Buffer.from(b.subarray(off, off + len)); // a copy we may unmask in place
    if (masked) {
      for (let i = 0; i < len; i++) payload[i] ^= b[maskOff + (i & 3)];
    }
    this.buf = b.subarray(off + len);
    return { fin: (b[0] & 0x80) !== 0, opcode: b[0] & 0x0f, masked, payload };
  }

  /** Bytes received past the last complete frame. */
  get pending(): number {
    return this.buf.length;
  }
}

/** Splits an HTTP head (up to the blank line) off the front of a buffer, once it is complete. */
export class HeadReader {
  private buf: Buffer = Buffer.alloc(0);

  /** Returns [head, rest] once the blank line arrived, else null. */
  push(data: Buffer): [string, Buffer] | null {
    this.buf = Buffer.concat([this.buf, data]);
    const end = this.buf.indexOf('\r\n\r\n');
    if (end < 0) {
      if (this.buf.length > 16384) throw new Error('HTTP head longer than 16 KB');
      return null;
    }
    return [this.buf.subarray(0, end + 4).toString('latin1'), this.buf.subarray(end + 4)];
  }
}
