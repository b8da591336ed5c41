/**
 * Byte streams as TCP carries audio (docs/tcp-streams.md): WebSocket frames, HTTP heads and
 * chunked bodies, SSE and JSON events with hex or base64 audio; and the events the classifier
 * hands over for a stream cut into segments. Shared by the reference tests and the parity tests.
 */
import { EventFlag } from '../../src/abi.js';
import { createRng } from './audio-fixtures.js';

export const te = (s: string): Uint8Array => new TextEncoder().encode(s);

export function concat(parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

/** One WebSocket frame (RFC 6455); key: a client's masking key (the payload is masked with it). */
export function wsFrame(
  payload: Uint8Array,
  opcode: number,
  o: { fin?: boolean; key?: Uint8Array; rsv1?: boolean } = {},
): Uint8Array {
  const n = payload.length;
  const ext = n < 126 ? 0 : n < 65536 ? 2 : 8;
  const h = new Uint8Array(2 + ext + (o.key ? 4 : 0));
  h[0] = (o.fin === false ? 0 : 0x80) | (o.rsv1 ? 0x40 : 0) | opcode;
  h[1] = (o.key ? 0x80 : 0) | (ext === 0 ? n : ext === 2 ? 126 : 127);
  if (ext === 2) new DataView(h.buffer).setUint16(2, n);
  if (ext === 8) new DataView(h.buffer).setBigUint64(2, BigInt(n));
  if (!o.key) return concat([h, payload]);
  h.set(o.key, 2 + ext);
  const body = payload.map((b, i) => b ^ (o.key as Uint8Array)[i & 3]);
  return concat([h, body]);
}

/** Cut bytes into pieces of random sizes in [min, max] (any size: TCP cuts anywhere). */
export function cutRandom(bytes: Uint8Array, seed: number, min: number, max: number): Uint8Array[] {
  const rng = createRng(seed);
  const out: Uint8Array[] = [];
  for (let at = 0; at < bytes.length; ) {
    const size = min + Math.floor(rng() * (max - min + 1));
    out.push(bytes.subarray(at, at + size));
    at += size;
  }
  return out;
}

/** Audio in WebSocket binary frames of random sizes, masked when key is given (client side). */
export function wsBinaryStream(audio: Uint8Array, seed: number, client: boolean): Uint8Array {
  const rng = createRng(seed);
  const frames: Uint8Array[] = [];
  const pieces = cutRandom(audio, seed + 1, 20, 5000);
  pieces.forEach((p, i) => {
    const key = client ? Uint8Array.from({ length: 4 }, () => Math.floor(rng() * 256)) : undefined;
    // Every 7th message is fragmented (binary + continuation), pings in between now and then.
    if (i % 7 === 3 && p.length > 10) {
      const cut = Math.floor(p.length / 3);
      frames.push(wsFrame(p.subarray(0, cut), 2, { fin: false, key }));
      frames.push(wsFrame(te('ping'), 9, { key }));
      frames.push(wsFrame(p.subarray(cut), 0, { key }));
    } else {
      frames.push(wsFrame(p, 2, { key }));
    }
    if (i % 11 === 5) frames.push(wsFrame(te('{"event":"mark","seq":12}'), 1, { key }));
  });
  return concat(frames);
}

export const WS_UPGRADE_REQUEST = te(
  'GET /media HTTP/1.1\r\nHost: stt.example:8080\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n' +
    'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n',
);
export const WS_UPGRADE_RESPONSE = te(
  'HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n' +
    'Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n',
);

/** HTTP chunked transfer coding of body, in chunks of random sizes. */
export function chunkedBody(body: Uint8Array, seed: number, min: number, max: number): Uint8Array {
  const parts: Uint8Array[] = [];
  for (const c of cutRandom(body, seed, min, max)) {
    parts.push(te(`${c.length.toString(16)}${seed % 2 ? ';ext=1' : ''}\r\n`), c, te('\r\n'));
  }
  parts.push(te('0\r\nX-Trailer: done\r\n\r\n'));
  return concat(parts);
}

export function toHex(bytes: Uint8Array, upper = false): string {
  const s = Buffer.from(bytes).toString('hex');
  return upper ? s.toUpperCase() : s;
}

export function uuid(rng: () => number): string {
  const h = Array.from({ length: 32 }, () => Math.floor(rng() * 16).toString(16)).join('');
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}

export interface TcpEvent {
  audio: Uint8Array;
  flags: number;
  seq: number;
}

/** The classifier's events for a stream cut into segments: the first starts the stream. */
export function tcpEvents(segments: Uint8Array[], isn = 1000): TcpEvent[] {
  let seq = isn;
  return segments.map((audio, i) => {
    const ev = { audio, flags: i === 0 ? EventFlag.StreamStart : 0, seq: seq >>> 0 };
    seq += audio.length;
    return ev;
  });
}

/** SSE events carrying hex PCM, as a source and as a relay that re-builds them. */
export function sseStream(
  audio: Uint8Array,
  chunkBytes: number[],
  seed: number,
  relay: boolean,
): Uint8Array {
  const rng = createRng(seed);
  const events: string[] = [];
  let at = 0;
  for (let n = 0; at < audio.length; n++) {
    const size = chunkBytes[n % chunkBytes.length];
    const hex = toHex(audio.subarray(at, at + size));
    at += size;
    const id = uuid(rng);
    const json = relay
      ? `{"audio":"${hex}","relay":"edge-7","held_ms":2000,"ts":"2024-05-01T12:00:${(n % 60)
          .toString()
          .padStart(2, '0')}.123Z","id":"${id}","seq":${n * 3}}`
      : `{"seq":${n},"id":"${id}","audio":"${hex}"}`;
    events.push(`${relay ? `id: ${n}\n` : ''}data: ${json}\n\n`);
  }
  return te(events.join(''));
}

/** WebSocket JSON text frames with base64 mu-law, as a telephony media stream sends them. */
export function mediaStream(
  audio: Uint8Array,
  chunkBytes: number,
  seed: number,
  client: boolean,
): Uint8Array {
  const rng = createRng(seed);
  const frames: Uint8Array[] = [];
  const sid = `MZ${toHex(Uint8Array.from({ length: 16 }, () => Math.floor(rng() * 256)))}`;
  frames.push(wsFrame(te(`{"event":"start","streamSid":"${sid}","tracks":["inbound"]}`), 1));
  for (let at = 0, n = 1; at < audio.length; at += chunkBytes, n++) {
    const b64 = Buffer.from(audio.subarray(at, at + chunkBytes)).toString('base64');
    // Some relays escape '/' in JSON strings.
    const payload = seed % 2 ? b64.replaceAll('/', '\\/') : b64;
    const json = client
      ? `{"event":"media","sequenceNumber":"${n}","media":{"track":"inbound","chunk":"${n}","timestamp":"${n * 20}","payload":"${payload}"},"streamSid":"${sid}"}`
      : `{"type":"audio","data":"${payload}","n":${n},"sid":"${uuid(rng)}"}`;
    const key = client ? Uint8Array.from({ length: 4 }, () => Math.floor(rng() * 256)) : undefined;
    frames.push(wsFrame(te(json), 1, { key }));
  }
  return concat(frames);
}
