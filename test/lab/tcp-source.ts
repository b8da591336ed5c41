/**
 * Lab audio source over TCP (runs inside a pod namespace): streams speech-like audio in real time,
 * one frame per --frame-ms, in one of the ways audio reaches speech services over TCP:
 *
 *   --mode tcp      raw bytes on a TCP connection to --dest (AudioSocket, audio forks)
 *   --mode ws       WebSocket client to --dest: one masked binary frame per audio frame
 *   --mode ws-json  WebSocket client to --dest: masked text frames of JSON carrying base64 audio
 *                   (`{"event":"media",...,"media":{"payload":"<base64>"}}`, telephony media streams)
 *   --mode sse      HTTP server on --listen: GET answers `text/event-stream`, one event per frame,
 *                   `{"seq":N,"id":"<uuid>","audio":"<hex>"}`; streaming starts at the request
 *   --mode bulk     not audio: random bytes to --dest as fast as TCP takes them (a backup, a
 *                   model download) for --duration seconds
 *
 *   node dist/test/lab/tcp-source.js --mode tcp --dest 10.213.5.3:41000 [--sport 41010]
 *        [--format le16k|pcmu] [--frame-ms 20] [--seed 1] [--duration 10]
 *
 * Sockets have TCP_NODELAY. The audio depends only on --seed, --format and --frame-ms (see
 * tcp-audio.ts), so the parent can regenerate it. Report on exit: frames, audio bytes, their
 * SHA-256, bytes on the wire (framing included) and the pacing lateness.
 */
import { createHash, randomBytes, randomUUID } from 'node:crypto';
import { createServer, type ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import { parseArgs } from 'node:util';
import {
  blockUntil,
  emit,
  ErrorHistogram,
  fail,
  type Json,
  nowNs,
  onStop,
  parseHostPort,
  parseNumber,
  parsePort,
} from './cli.js';
import { connectTcp, parseFormat, StreamAudio } from './tcp-audio.js';
import { formatEvent } from './sse-events.js';
import {
  checkServerResponse,
  clientHandshake,
  encodeFrame,
  HeadReader,
  Opcode,
} from './ws-frame.js';

const ROLE = 'tcp-source';
const EARLY_NS = 2_000_000; // the timer wakes this early; blockUntil() does the rest
const BULK_WRITE = 65536;

type Mode = 'tcp' | 'ws' | 'ws-json' | 'sse' | 'bulk';
/** Turns one audio frame into the bytes to write (framing included). */
type Framer = (audio: Uint8Array, seq: number) => Uint8Array | string;

const MODES: readonly Mode[] = ['tcp', 'ws', 'ws-json', 'sse', 'bulk'];

function wsUpgrade(sock: Socket, host: string): Promise<void> {
  const { request, key } = clientHandshake(host, '/media');
  sock.write(request);
  const head = new HeadReader();
  return new Promise((resolve, reject) => {
    const onData = (d: Buffer): void => {
      try {
        const got = head.push(d);
        if (!got) return;
        sock.off('data', onData);
        checkServerResponse(got[0], key);
        resolve();
      } catch (err) {
        reject(err as Error);
      }
    };
    sock.on('data', onData);
  });
}

function framerOf(mode: Mode, streamSid: string): Framer {
  switch (mode) {
    case 'ws':
      return (audio) => encodeFrame(Opcode.Binary, audio, randomBytes(4));
    case 'ws-json':
      return (audio, seq) =>
        encodeFrame(
          Opcode.Text,
          Buffer.from(
            JSON.stringify({
              event: 'media',
              sequenceNumber: String(seq + 2),
              media: {
                track: 'inbound',
                chunk: String(seq + 1),
                timestamp: String(seq * 20),
                payload: Buffer.from(audio).toString('base64'),
              },
              streamSid,
            }),
          ),
          randomBytes(4),
        );
    case 'sse':
      return (audio, seq) =>
        formatEvent(
          JSON.stringify({ seq, id: randomUUID(), audio: Buffer.from(audio).toString('hex') }),
        );
    default:
      return (audio) => audio;
  }
}

function main(): void {
  const { values } = parseArgs({
    options: {
      mode: { type: 'string', default: 'tcp' },
      dest: { type: 'string' },
      listen: { type: 'string' },
      sport: { type: 'string', default: '0' },
      format: { type: 'string', default: 'le16k' },
      'frame-ms': { type: 'string', default: '20' },
      seed: { type: 'string', default: '1' },
      duration: { type: 'string', default: '10' },
    },
  });
  const mode = values.mode as Mode;
  if (!MODES.includes(mode)) fail(ROLE, `--mode ${MODES.join('|')}, got ${values.mode}`);
  const format = parseFormat(values.format);
  if (!format) fail(ROLE, `--format le16k|pcmu, got ${values.format}`);
  const frameMs = parseNumber(ROLE, 'frame-ms', values['frame-ms'], 1);
  if (!Number.isInteger(frameMs)) fail(ROLE, `--frame-ms must be an integer`);
  const seed = parseNumber(ROLE, 'seed', values.seed, 0);
  const durationS = parseNumber(ROLE, 'duration', values.duration, 0.1);
  const sport = values.sport === '0' ? 0 : parsePort(ROLE, values.sport);
  const totalFrames = Math.floor((durationS * 1000) / frameMs);
  const frameNs = frameMs * 1e6;

  const audio = new StreamAudio(seed, format);
  const framer = framerOf(mode, `MZ${randomBytes(16).toString('hex')}`);
  const hash = createHash('sha256');
  const lateness = new ErrorHistogram();
  let frames = 0;
  let bytes = 0;
  let wireBytes = 0;
  let startNs = 0;

  const report = (): { [k: string]: Json } => ({
    role: ROLE,
    mode,
    frames,
    bytes,
    wireBytes,
    sha256: hash.copy().digest('hex'),
    elapsedMs: startNs ? Math.round((nowNs() - startNs) / 1e6) : 0,
    pacingLateness: lateness.toJson(),
  });
  const stop = onStop(report);

  /** Real-time pacing with drift correction, as the UDP sender does. */
  const stream = (write: (data: Uint8Array | string) => void, end: () => void): void => {
    startNs = nowNs();
    const sendNext = (): void => {
      if (frames >= totalFrames) {
        end();
        // Let the FIN leave before the report (the relay sees the stream end).
        setTimeout(stop, 200);
        return;
      }
      const due = startNs + frames * frameNs;
      blockUntil(due);
      lateness.add((nowNs() - due) / 1000);
      const a = audio.next(frameMs);
      hash.update(a);
      const data = framer(a, frames);
      wireBytes += typeof data === 'string' ? Buffer.byteLength(data) : data.length;
      write(data);
      frames++;
      bytes += a.length;
      const nextDue = startNs + frames * frameNs;
      setTimeout(sendNext, Math.max(0, (nextDue - nowNs() - EARLY_NS) / 1e6));
    };
    sendNext();
  };

  if (mode === 'sse') {
    if (!values.listen) fail(ROLE, '--listen port is required with --mode sse');
    const port = parsePort(ROLE, values.listen);
    let served = false;
    const server = createServer((req, res: ServerResponse) => {
      if (served || req.method !== 'GET') {
        res.writeHead(409).end();
        return;
      }
      served = true;
      res.writeHead(200, {
        'Content-Type': 'text/event-stream',
        'Cache-Control': 'no-cache',
        Connection: 'keep-alive',
      });
      res.flushHeaders();
      res.socket?.setNoDelay(true);
      stream(
        (d) => res.write(d),
        () => res.end(),
      );
    });
    server.on('error', (err) => fail(ROLE, `listen ${port}: ${err.message}`));
    server.listen(port, () => emit('ready', { role: ROLE, mode, port }));
    return;
  }

  if (!values.dest) fail(ROLE, `--dest ip:port is required with --mode ${mode}`);
  const dest = parseHostPort(ROLE, values.dest);
  void (async () => {
    const sock = await connectTcp(dest.host, dest.port, sport);
    sock.on('error', (err) => fail(ROLE, `socket: ${err.message}`));
    if (mode === 'ws' || mode === 'ws-json') await wsUpgrade(sock, `${dest.host}:${dest.port}`);
    emit('ready', { role: ROLE, mode, sport: sock.localPort ?? 0 });
    if (mode === 'bulk') {
      bulk(sock, durationS, (n) => {
        bytes += n;
        wireBytes += n;
      }).then(stop, (err: Error) => fail(ROLE, err.message));
      return;
    }
    stream(
      (d) => sock.write(d),
      () => sock.end(),
    );
  })().catch((err: Error) => fail(ROLE, err.message));
}

/** Writes random data as fast as the socket drains, for durationS, then closes. */
function bulk(sock: Socket, durationS: number, sent: (n: number) => void): Promise<void> {
  const block = randomBytes(BULK_WRITE);
  const endAt = nowNs() + durationS * 1e9;
  return new Promise((resolve) => {
    const pump = (): void => {
      while (nowNs() < endAt) {
        sent(block.length);
        if (!sock.write(block)) {
          sock.once('drain', pump);
          return;
        }
      }
      sock.end(() => resolve());
    };
    pump();
  });
}

main();
