/**
 * The TypeScript reference's TCP layer (docs/tcp-streams.md, "User space"): whatever carries the
 * audio over TCP (raw, WebSocket frames masked or not, HTTP chunked bodies, hex or base64 inside
 * SSE or WebSocket JSON), the signatures are those of the audio bytes, and a relay that re-frames
 * or re-builds the carrier changes none of them. No root needed.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import { Encoding, EventFlag } from '../src/abi.js';
import {
  IPPROTO_TCP,
  MIN_TEXT_RUN,
  signPackets,
  StreamSigner,
  TextAudioDecoder,
} from '../src/signature/index.js';
import type { ReferenceSignature, SignerConfig } from '../src/signature/index.js';
import {
  chunk,
  chunkRandom,
  createRng,
  encodePcmu,
  encodeRawLe16,
  speechLike,
} from './support/audio-fixtures.js';
import {
  chunkedBody,
  concat,
  cutRandom,
  tcpEvents,
  te,
  toHex,
  uuid,
  WS_UPGRADE_REQUEST,
  WS_UPGRADE_RESPONSE,
  mediaStream,
  sseStream,
  wsBinaryStream,
  wsFrame,
} from './support/tcp-streams.js';
import type { TcpEvent } from './support/tcp-streams.js';

const CFG: SignerConfig = { algorithm: 'xxhash', windowSize: 256, silenceThreshold: 256 };

function signTcp(
  events: TcpEvent[],
  cfg = CFG,
): { sigs: ReferenceSignature[]; signer: StreamSigner } {
  const signer = new StreamSigner(cfg);
  const sigs: ReferenceSignature[] = [];
  events.forEach((e, i) => {
    const opts = { protocol: IPPROTO_TCP, flags: e.flags, seq: e.seq };
    for (const s of signer.push(Encoding.RawLe16, e.audio, i, opts)) sigs.push(s);
  });
  return { sigs, signer };
}

/** Value, place in the audio stream and encoding: what must not depend on the carrier. */
function keyOf(sigs: ReferenceSignature[]): string[] {
  return sigs.map((s) => `${s.windowStart}:${s.encoding}:${s.sig.toString(16)}`);
}

function valuesOf(sigs: ReferenceSignature[]): string[] {
  return sigs.map((s) => s.sig.toString(16));
}

/** The audio signed as UDP packets of whole samples: the carrier-free truth. */
function signAudio(audio: Uint8Array, encoding: Encoding, cfg = CFG): ReferenceSignature[] {
  return signPackets(
    cfg,
    chunk(audio, 320).map((a) => ({ encoding, audio: a })),
  );
}

const speech = speechLike({ seconds: 8, sampleRate: 16000, seed: 33 });
const l16 = encodeRawLe16(speech.samples);
const pcmu = encodePcmu(speechLike({ seconds: 8, seed: 34 }).samples);

describe('TCP streams: raw and framed audio', () => {
  const truth = signAudio(l16, Encoding.RawLe16);

  it('raw L16 over TCP, cut at random (odd) sizes, signs as the audio does', () => {
    assert.ok(truth.length > 100, `${truth.length} signatures`);
    for (const seed of [1, 2, 3]) {
      const { sigs } = signTcp(tcpEvents(cutRandom(l16, seed, 1, 2900)));
      assert.deepEqual(keyOf(sigs), keyOf(truth), `seed ${seed}`);
    }
  });

  it('WebSocket client stream (upgrade, masked binary frames) signs as the audio does', () => {
    for (const seed of [4, 5]) {
      const stream = concat([WS_UPGRADE_REQUEST, wsBinaryStream(l16, seed, true)]);
      const { sigs } = signTcp(tcpEvents(cutRandom(stream, seed + 10, 1, 3000)));
      assert.deepEqual(keyOf(sigs), keyOf(truth), `seed ${seed}`);
    }
  });

  it('WebSocket server stream (101, unmasked frames) signs as the audio does', () => {
    const stream = concat([WS_UPGRADE_RESPONSE, wsBinaryStream(l16, 6, false)]);
    const { sigs } = signTcp(tcpEvents(cutRandom(stream, 16, 1, 1448)));
    assert.deepEqual(keyOf(sigs), keyOf(truth));
  });

  it('compressed (permessage-deflate) WebSocket messages are dropped, not signed', () => {
    const frames = cutRandom(l16, 7, 100, 3000).map((p) => wsFrame(p, 2, { rsv1: true }));
    const { sigs, signer } = signTcp(
      tcpEvents(cutRandom(concat([WS_UPGRADE_RESPONSE, ...frames]), 8, 500, 1448)),
    );
    assert.equal(sigs.length, 0);
    assert.equal(signer.stats.windows, 0);
  });

  it('HTTP POST with a chunked octet-stream body signs as the audio does', () => {
    for (const [seed, type] of [
      [9, 'application/octet-stream'],
      [10, 'audio/l16; rate=16000'],
    ] as const) {
      const head = te(
        `POST /v1/recognize HTTP/1.1\r\nHost: stt\r\nContent-Type: ${type}\r\n` +
          'Transfer-Encoding: chunked\r\n\r\n',
      );
      const stream = concat([head, chunkedBody(l16, seed, 1, 4000)]);
      const { sigs } = signTcp(tcpEvents(cutRandom(stream, seed, 1, 1448)));
      assert.deepEqual(keyOf(sigs), keyOf(truth), type);
    }
  });

  it('HTTP response with Content-Length, then a second one on the same connection', () => {
    const half = l16.length / 2;
    const a = l16.subarray(0, half);
    const b = l16.subarray(half);
    const resp = (body: Uint8Array): Uint8Array =>
      concat([
        te(`HTTP/1.1 200 OK\r\nContent-Type: audio/wav\r\nContent-Length: ${body.length}\r\n\r\n`),
        body,
      ]);
    const { sigs } = signTcp(tcpEvents(cutRandom(concat([resp(a), resp(b)]), 11, 1, 1448)));
    // The second body continues the audio stream: its windows are the audio's, shifted by nothing.
    assert.deepEqual(keyOf(sigs), keyOf(truth));
  });
});

describe('TCP streams: audio carried as text', () => {
  it('SSE with hex PCM (100 ms events) and its relay re-built JSON sign alike, as the PCM does', () => {
    const head = te(
      'HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n',
    );
    const source = concat([head, chunkedBody(sseStream(l16, [3200], 40, false), 41, 200, 9000)]);
    const relayHead = te(
      'HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n\r\n',
    );
    const relay = concat([relayHead, sseStream(l16, [1000, 5400, 2222, 64], 42, true)]);
    const a = signTcp(tcpEvents(cutRandom(source, 43, 1, 2000))).sigs;
    const b = signTcp(tcpEvents(cutRandom(relay, 44, 1, 1448))).sigs;
    const pcm = signAudio(l16, Encoding.Opaque);
    assert.ok(pcm.length > 100);
    assert.deepEqual(keyOf(a), keyOf(pcm), 'source');
    assert.deepEqual(keyOf(b), keyOf(pcm), 'relay');
  });

  it('WebSocket JSON with base64 mu-law (160 per event) and 480-byte re-encoding sign alike', () => {
    const source = concat([WS_UPGRADE_REQUEST, mediaStream(pcmu, 160, 50, true)]);
    const relay = concat([WS_UPGRADE_RESPONSE, mediaStream(pcmu, 480, 51, false)]);
    const a = signTcp(tcpEvents(cutRandom(source, 52, 1, 1448))).sigs;
    const b = signTcp(tcpEvents(cutRandom(relay, 53, 1, 700))).sigs;
    const truth = signAudio(pcmu, Encoding.Opaque);
    assert.ok(truth.length > 100);
    assert.deepEqual(keyOf(a), keyOf(truth), 'source');
    assert.deepEqual(keyOf(b), keyOf(truth), 'relay');
  });

  it('JSON with only keys, UUIDs, numbers and timestamps yields no signature', () => {
    const rng = createRng(60);
    const lines: string[] = [];
    for (let n = 0; n < 3000; n++) {
      lines.push(
        `data: {"seq":${n},"id":"${uuid(rng)}","trace":"${toHex(Uint8Array.from({ length: 16 }, () => Math.floor(rng() * 256)))}",` +
          `"ts":"2024-05-01T12:${(n % 60).toString().padStart(2, '0')}:00.000Z","level":${Math.floor(rng() * 1e9)},"text":"hello world"}\n\n`,
      );
    }
    const head = te('HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n\r\n');
    const { sigs, signer } = signTcp(
      tcpEvents(cutRandom(concat([head, te(lines.join(''))]), 61, 1, 1448)),
    );
    assert.equal(sigs.length, 0);
    assert.equal(signer.stats.windows, 0, 'not a byte decoded');
    // The same without HTTP: a stream of JSON lines is text by its first bytes.
    const bare = signTcp(tcpEvents(cutRandom(te(lines.join('')), 62, 1, 1448)));
    assert.equal(bare.signer.stats.windows, 0);
  });

  it('text decoder: runs under 64 characters yield nothing; hex, base64, "\\/" and "=" decode', () => {
    const decode = (s: string): number[] => {
      const d = new TextAudioDecoder();
      const out: number[] = [];
      for (const c of te(s)) d.push(c, (b) => out.push(b));
      d.end((b) => out.push(b));
      return out;
    };
    const bytes = Uint8Array.from({ length: 200 }, (_, i) => (i * 37 + 11) & 0xff);
    assert.deepEqual(decode(`"${toHex(bytes.subarray(0, 31))}"`), []); // 62 characters
    assert.deepEqual(decode(`"${toHex(bytes.subarray(0, 32))}"`), [...bytes.subarray(0, 32)]);
    assert.deepEqual(decode(`x:${toHex(bytes, true)},`), [...bytes]);
    const b64 = Buffer.from(bytes).toString('base64');
    assert.ok(b64.includes('/') && b64.endsWith('='));
    assert.deepEqual(decode(`"${b64.replaceAll('/', '\\/')}"`), [...bytes]);
    // '=' ends a run: two encodings back to back are two runs, each decoded whole.
    const b64b = Buffer.from(bytes.subarray(0, 100)).toString('base64');
    assert.deepEqual(decode(b64 + b64b), [...bytes, ...bytes.subarray(0, 100)]);
    // Base64 of digital silence is all hex letters: still base64.
    assert.deepEqual(decode(Buffer.alloc(96).toString('base64')), new Array(96).fill(0));
    assert.equal(MIN_TEXT_RUN, 64);
  });
});

describe('TCP streams: gaps and ends', () => {
  // Segments of whole samples, as a sender writing 16-bit PCM cuts them.
  const segs = chunkRandom(l16, 70, 300, 1448, 2);
  const events = tcpEvents(segs);
  const full = signTcp(events).sigs;

  /** The stream without event `hole`, the next one flagged as a gap. */
  function withHole(evs: TcpEvent[], hole: number): TcpEvent[] {
    return evs
      .filter((_, i) => i !== hole)
      .map((e, i) => (i === hole ? { ...e, flags: EventFlag.Gap } : e));
  }

  it('after a gap, signatures equal those of a fresh stream started there', () => {
    const hole = 40;
    const { sigs, signer } = signTcp(withHole(events, hole));
    assert.equal(signer.stats.restarts, 1);
    assert.deepEqual(
      keyOf(sigs.filter((s) => s.tsNs < hole)),
      keyOf(full.filter((s) => s.tsNs < hole)),
    );
    const after = sigs.filter((s) => s.tsNs >= hole);
    const fresh = signTcp(tcpEvents(segs.slice(hole + 1))).sigs;
    assert.deepEqual(keyOf(after), keyOf(fresh));
    // Warmed up (64 bytes, and a window's reach of open anchors), they are the uncut stream's.
    const offset = segs.slice(0, hole + 1).reduce((n, s) => n + s.length, 0);
    const warm = full.filter((s) => s.windowStart >= offset + 64 + 256);
    assert.ok(warm.length > 50);
    assert.deepEqual(valuesOf(fresh.filter((s) => s.windowStart >= 64 + 256)), valuesOf(warm));
  });

  it('a gap of an odd number of bytes keeps the sample alignment (from sequence numbers)', () => {
    const odd = cutRandom(l16, 74, 301, 1447);
    const evs = tcpEvents(odd);
    const clean = signTcp(evs).sigs;
    const hole = odd.findIndex((s, i) => i > 30 && s.length % 2 === 1);
    const after = signTcp(withHole(evs, hole)).sigs.filter((s) => s.tsNs >= hole);
    const offset = odd.slice(0, hole + 1).reduce((n, s) => n + s.length, 0);
    const warm = clean.filter((s) => s.windowStart >= offset + 64 + 256);
    assert.ok(warm.length > 50);
    assert.deepEqual(
      keyOf(
        after
          .filter((s) => s.windowStart >= 64 + 256)
          .map((s) => ({ ...s, windowStart: s.windowStart + offset })),
      ),
      keyOf(warm),
    );
  });

  it('a sequence number other than the expected one is a gap, even without the flag', () => {
    const gapped = events.filter((_, i) => i !== 40);
    const flagged = gapped.map((e, i) => (i === 40 ? { ...e, flags: EventFlag.Gap } : e));
    assert.deepEqual(keyOf(signTcp(gapped).sigs), keyOf(signTcp(flagged).sigs));
  });

  it('a gap inside a WebSocket payload is skipped exactly (mask phase kept)', () => {
    const payloads = cutRandom(l16, 71, 6000, 9000);
    const key = Uint8Array.of(0x12, 0x34, 0x56, 0x78);
    const stream = concat([WS_UPGRADE_REQUEST, ...payloads.map((p) => wsFrame(p, 2, { key }))]);
    const evs = tcpEvents(cutRandom(stream, 72, 1000, 1448));
    const cleanSigs = signTcp(evs).sigs;
    const hole = 20; // inside a payload: frames are 4-6 segments long
    const { sigs, signer } = signTcp(withHole(evs, hole));
    assert.equal(signer.stats.restarts, 1);
    const after = sigs.filter((s) => s.tsNs >= hole && s.windowStart >= 64 + 256);
    const cleanValues = new Set(valuesOf(cleanSigs));
    assert.ok(after.length > 100, `${after.length} signatures after the gap`);
    for (const v of valuesOf(after))
      assert.ok(cleanValues.has(v), "a signature after the gap is the clean stream's");
  });

  it('a gap that hides a WebSocket header resynchronises at a frame that starts a segment', () => {
    const payloads = chunkRandom(l16, 73, 600, 1400, 2); // frames of whole samples
    const key = Uint8Array.of(9, 8, 7, 6);
    // One frame per segment, as a sender that writes a frame at a time with TCP_NODELAY.
    const segments = [WS_UPGRADE_REQUEST, ...payloads.map((p) => wsFrame(p, 2, { key }))];
    const evs = tcpEvents(segments);
    const clean = new Set(valuesOf(signTcp(evs).sigs));
    const gapped = evs.filter((_, i) => i !== 30);
    const { sigs } = signTcp(gapped);
    const after = sigs.filter((s) => s.tsNs >= 30);
    assert.ok(after.length > 100);
    for (const v of valuesOf(after)) assert.ok(clean.has(v));
  });

  it('STREAM_END drops the stream: what follows is a new stream', () => {
    const head = events.slice(0, 30);
    const ended = head.map((e, i) => (i === 29 ? { ...e, flags: EventFlag.StreamEnd } : e));
    const next = tcpEvents(segs.slice(30), 777).map((e) => ({ ...e, flags: 0 }));
    const { sigs } = signTcp([...ended, ...next]);
    const fresh = signTcp(tcpEvents(segs.slice(30))).sigs;
    assert.deepEqual(keyOf(sigs.filter((s) => s.tsNs >= 30)), keyOf(fresh.map((s) => ({ ...s }))));
  });

  it('UDP events are unchanged by the options argument', () => {
    const packets = chunk(l16, 320);
    const a = signPackets(
      CFG,
      packets.map((audio) => ({ encoding: Encoding.RawLe16, audio })),
    );
    const b = signPackets(
      CFG,
      packets.map((audio) => ({
        encoding: Encoding.RawLe16,
        audio,
        protocol: 17,
        flags: EventFlag.Gap,
      })),
    );
    assert.deepEqual(keyOf(a), keyOf(b));
  });
});
