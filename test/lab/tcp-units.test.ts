/**
 * The TCP lab's own parts, no root needed: WebSocket framing, SSE parsing, the relay's chunking,
 * the L16 16 kHz source, and — the link between the lab and the agent — that the exact bytes the
 * lab's sources and relays put on the wire, signed by the TypeScript reference as TCP streams,
 * give the signatures the e2e test predicts from the audio bytes alone.
 */
import assert from 'node:assert/strict';
import { randomBytes, randomUUID } from 'node:crypto';
import { test } from 'node:test';
import { Encoding, EventFlag } from '../../src/abi.js';
import { signPackets, StreamSigner, type SignerConfig } from '../../src/signature/index.js';
import { Prng } from './audio-source.js';
import { formatEvent, SseParser } from './sse-events.js';
import { jsonEscapedSlashes, RandomChunker, StreamAudio, streamFrames } from './tcp-audio.js';
import {
  acceptKey,
  clientHandshake,
  encodeFrame,
  FrameParser,
  Opcode,
  serverHandshake,
} from './ws-frame.js';

const CFG: SignerConfig = { algorithm: 'xxhash', windowSize: 256, silenceThreshold: 256 };
const IPPROTO_TCP = 6;

/** Cuts bytes at random places, as TCP may deliver them. */
function randomCuts(data: Uint8Array, rng: Prng, max: number): Uint8Array[] {
  const out: Uint8Array[] = [];
  for (let off = 0; off < data.length; ) {
    const n = 1 + Math.floor(rng.next() * max);
    out.push(data.subarray(off, Math.min(data.length, off + n)));
    off += n;
  }
  return out;
}

/** The reference's signatures of one direction of a TCP stream, cut into segments. */
function signTcpWire(segments: Uint8Array[]): bigint[] {
  const signer = new StreamSigner(CFG);
  const out: bigint[] = [];
  segments.forEach((s, i) => {
    const flags = i === 0 ? EventFlag.StreamStart : 0;
    for (const sig of signer.push(Encoding.RawLe16, s, i, { protocol: IPPROTO_TCP, flags })) {
      out.push(sig.sig);
    }
  });
  return out;
}

function signAudio(frames: Uint8Array[], encoding: Encoding): bigint[] {
  return signPackets(
    CFG,
    frames.map((audio) => ({ encoding, audio })),
  ).map((s) => s.sig);
}

test('WebSocket frames round-trip through any cuts, masked and not, all length forms', () => {
  const rng = new Prng(1);
  for (const masked of [true, false]) {
    const payloads = [0, 1, 125, 126, 640, 65535, 65536, 70000].map((n) => randomBytes(n));
    const wire = Buffer.concat(
      payloads.map((p, i) =>
        encodeFrame(i % 2 ? Opcode.Text : Opcode.Binary, p, masked ? randomBytes(4) : null),
      ),
    );
    const parser = new FrameParser(masked);
    const got = randomCuts(wire, rng, 3000).flatMap((c) => parser.push(Buffer.from(c)));
    assert.equal(got.length, payloads.length);
    got.forEach((f, i) => {
      assert.deepEqual(f.payload, payloads[i]);
      assert.equal(f.masked, masked);
      assert.equal(f.fin, true);
    });
    assert.equal(parser.pending, 0);
  }
  // A server must refuse unmasked client frames.
  assert.throws(() => new FrameParser(true).push(encodeFrame(Opcode.Binary, randomBytes(4), null)));
});

test('WebSocket handshake: RFC 6455 example accept key, request and response agree', () => {
  assert.equal(acceptKey('dGhlIHNhbXBsZSBub25jZQ=='), 's3pPLMBiTxaQ9kYGzzhZRbK+xOo=');
  const { request, key } = clientHandshake('10.0.0.1:1', '/x');
  assert.match(serverHandshake(request), new RegExp(acceptKey(key).replace(/[+/]/g, '\\$&')));
  assert.throws(() => serverHandshake('GET / HTTP/1.1\r\nHost: x\r\n\r\n'));
});

test('SSE parser: events across any cuts, comments skipped, fields read', () => {
  const events = [formatEvent('{"a":1}'), ': keep-alive\n\n', formatEvent('{"b":2}', 'audio', 'x')];
  const text = events.join('');
  const parser = new SseParser();
  const got = randomCuts(Buffer.from(text), new Prng(2), 7).flatMap((c) =>
    parser.push(Buffer.from(c).toString()),
  );
  assert.deepEqual(got, [
    { event: 'message', id: '', data: '{"a":1}' },
    { event: 'audio', id: 'x', data: '{"b":2}' },
  ]);
});

test('RandomChunker: sizes within bounds, never across a batch, every byte once', () => {
  const chunker = new RandomChunker(3, 100, 3000);
  const sizes: number[] = [];
  for (let i = 0; i < 200; i++) {
    const batch = randomBytes(3200);
    const parts = chunker.cut(batch);
    assert.deepEqual(Buffer.concat(parts), batch);
    parts.slice(0, -1).forEach((p) => sizes.push(p.length));
  }
  assert.ok(Math.min(...sizes) >= 100 && Math.max(...sizes) <= 3000);
  assert.ok(Math.max(...sizes) > 2500, 'large writes happen');
});

test('L16 16 kHz source: the same bytes whatever the frame duration', () => {
  const a = Buffer.concat(streamFrames(9, 'le16k', 20, 2));
  const b = Buffer.concat(streamFrames(9, 'le16k', 100, 2));
  assert.equal(a.length, 2 * 32000);
  assert.deepEqual(a, b);
  const c = new StreamAudio(9, 'pcmu').next(20);
  assert.equal(c.length, 160);
});

test('lab wire formats, signed by the reference as TCP, give the predicted signatures', () => {
  const rng = new Prng(4);
  const le16 = streamFrames(11, 'le16k', 20, 4);
  const pcmu = streamFrames(12, 'pcmu', 20, 4);

  // Raw L16, re-chunked: the audio's own signatures (raw bytes, judged as 16-bit PCM).
  const raw = Buffer.concat(le16);
  assert.deepEqual(signTcpWire(randomCuts(raw, rng, 3000)), signAudio(le16, Encoding.RawLe16));

  // WebSocket client stream: upgrade request, then masked binary frames (some split).
  const ws = Buffer.concat([
    Buffer.from(clientHandshake('10.0.0.1:1', '/media').request),
    ...le16.map((f) => encodeFrame(Opcode.Binary, f, randomBytes(4))),
  ]);
  assert.deepEqual(signTcpWire(randomCuts(ws, rng, 1500)), signAudio(le16, Encoding.RawLe16));

  // SSE response, chunked: JSON events with hex audio (decoded text: judged by bytes only).
  const chunks = le16.map((f, seq) => {
    const ev = formatEvent(
      JSON.stringify({ seq, id: randomUUID(), audio: Buffer.from(f).toString('hex') }),
    );
    return `${Buffer.byteLength(ev).toString(16)}\r\n${ev}\r\n`;
  });
  const sse = Buffer.from(
    'HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n' +
      `Transfer-Encoding: chunked\r\n\r\n${chunks.join('')}`,
  );
  assert.deepEqual(signTcpWire(randomCuts(sse, rng, 3000)), signAudio(le16, Encoding.Opaque));

  // WebSocket server stream (the relay's ws-json output): 101, then unmasked text frames of JSON
  // with base64 mu-law in chunks of 48-112 bytes and escaped slashes.
  const frames = pcmu.flatMap((f, k) => {
    const cut = 48 + Math.floor(rng.next() * 65);
    return [f.subarray(0, cut), f.subarray(cut)].map((p) =>
      encodeFrame(
        Opcode.Text,
        Buffer.from(
          jsonEscapedSlashes({
            event: 'media',
            media: { chunk: k, payload: Buffer.from(p).toString('base64') },
          }),
        ),
        null,
      ),
    );
  });
  const wsJson = Buffer.concat([
    Buffer.from(serverHandshake(clientHandshake('10.0.0.1:1', '/x').request)),
    ...frames,
  ]);
  assert.deepEqual(signTcpWire(randomCuts(wsJson, rng, 1500)), signAudio(pcmu, Encoding.Opaque));
});
