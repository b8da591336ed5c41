/**
 * Lab relay for TCP audio (runs inside a pod namespace): what a media gateway, a speech pipeline
 * stage or an event relay does to audio carried over TCP. Receives on --listen (or, for SSE,
 * from --from), holds each received batch exactly --hold-ms after its arrival, and writes it on:
 *
 *   --in tcp      raw bytes on a TCP connection             --out tcp      raw bytes, re-chunked:
 *   --in rtp      RTP over UDP (payload kept: a gateway)                   random writes of
 *   --in ws       WebSocket server, masked binary frames                   --chunk-min..--chunk-max
 *   --in ws-json  WebSocket server, masked text frames of                  bytes (TCP_NODELAY)
 *                 JSON with base64 audio (media.payload)   --out ws       WebSocket client: masked
 *   --in sse      HTTP client of an SSE source (--from):                   binary frames, new keys,
 *                 JSON events with hex audio                               some split in two
 *                                                                          (binary + continuation)
 *   --out sse      SSE server: each event's JSON re-built (other keys, another order, added fields),
 *                  the hex audio string passed through
 *   --out ws-json  WebSocket server: each event's audio re-encoded in base64 in two chunks of
 *                  other sizes, JSON with escaped slashes (`\/`), unmasked text frames
 *
 *   node dist/test/lab/tcp-relay.js --in tcp --out tcp --listen 41000 --to 10.213.5.4:41002
 *        --hold-ms 20 [--sport 41001] [--chunk-min 100 --chunk-max 3000] [--seed 7]
 *   node dist/test/lab/tcp-relay.js --in sse --out sse --from 10.213.5.2:41300 --listen 41301
 *        --hold-ms 2000
 *
 * Every byte leaves exactly --hold-ms after the read that brought it: a write never mixes bytes
 * of two reads (a write holding later bytes would send the earlier ones late), so the re-chunked
 * output carries each window of audio exactly the hold later than the input. This thread
 * receives, timestamps (process.hrtime), parses and frames; a worker (tcp-relay-out.ts) holds
 * and writes. Report: audio bytes in and out with their SHA-256, writes and their sizes, and the
 * achieved hold error (from the receipt timestamp).
 */
import { createHash, randomBytes } from 'node:crypto';
import { createSocket } from 'node:dgram';
import { request } from 'node:http';
import { createServer, type Socket } from 'node:net';
import { parseArgs } from 'node:util';
import { Worker } from 'node:worker_threads';
import { Prng } from './audio-source.js';
import {
  emit,
  fail,
  type Json,
  nowNs,
  onStopAsync,
  parseHostPort,
  parseNumber,
  parsePort,
} from './cli.js';
import { parseRtp } from './rtp.js';
import { SseParser, formatEvent } from './sse-events.js';
import { jsonEscapedSlashes, randInt, RandomChunker } from './tcp-audio.js';
import type { RelayOutMode, TcpRelayOutConfig, TcpRelayOutMessage } from './tcp-relay-out.js';
import { encodeFrame, FrameParser, HeadReader, Opcode, serverHandshake } from './ws-frame.js';

const ROLE = 'tcp-relay';
const IN_MODES = ['tcp', 'rtp', 'ws', 'ws-json', 'sse'] as const;
const OUT_MODES: readonly RelayOutMode[] = ['tcp', 'ws', 'sse', 'ws-json'];
type InMode = (typeof IN_MODES)[number];
/** Base64 runs shorter than 64 characters carry no audio for the agent: keep chunks >= 48 bytes. */
const MIN_B64_CHUNK = 48;

/** What one input read/frame/event brought: the audio bytes and what the JSON said about them. */
interface Batch {
  audio: Uint8Array;
  seq: number;
  id: string;
  /** The audio as the input encoded it (hex for SSE), passed through where the output can. */
  text: string;
}

type Framer = (b: Batch) => Uint8Array[];

function framerOf(mode: RelayOutMode, seed: number, chunkMin: number, chunkMax: number): Framer {
  const rng = new Prng(seed ^ 0x2545f491);
  switch (mode) {
    case 'tcp': {
      const chunker = new RandomChunker(seed, chunkMin, chunkMax);
      return (b) => chunker.cut(b.audio);
    }
    case 'ws':
      return (b) => {
        // About half the messages go out as a binary frame + a continuation frame.
        if (b.audio.length < 2 || rng.next() < 0.5) {
          return [encodeFrame(Opcode.Binary, b.audio, randomBytes(4))];
        }
        const cut = randInt(rng, 1, b.audio.length - 1);
        return [
          encodeFrame(Opcode.Binary, b.audio.subarray(0, cut), randomBytes(4), false),
          encodeFrame(Opcode.Continuation, b.audio.subarray(cut), randomBytes(4), true),
        ];
      };
    case 'ws-json':
      return (b) => {
        const n = b.audio.length;
        const cut = n >= 2 * MIN_B64_CHUNK ? randInt(rng, MIN_B64_CHUNK, n - MIN_B64_CHUNK) : n;
        const parts = cut < n ? [b.audio.subarray(0, cut), b.audio.subarray(cut)] : [b.audio];
        return parts.map((p, k) =>
          encodeFrame(
            Opcode.Text,
            Buffer.from(
              jsonEscapedSlashes({
                streamSid: 'MZrelay',
                event: 'media',
                media: {
                  chunk: 2 * b.seq + k,
                  payload: Buffer.from(p).toString('base64'),
                  track: 'outbound',
                },
                relayedAt: Date.now(),
              }),
            ),
            null,
          ),
        );
      };
    case 'sse':
      return (b) => [
        Buffer.from(
          formatEvent(
            JSON.stringify({
              type: 'audio.chunk',
              eventId: b.id,
              encoding: 'audio/L16;rate=16000',
              audio: b.text,
              sequence: b.seq,
              relayedAt: new Date().toISOString(),
            }),
            'audio',
            b.id,
          ),
        ),
      ];
  }
}

function main(): void {
  const { values } = parseArgs({
    options: {
      in: { type: 'string', default: 'tcp' },
      out: { type: 'string', default: 'tcp' },
      listen: { type: 'string' },
      from: { type: 'string' },
      to: { type: 'string', default: '0.0.0.0:1' },
      'out-listen': { type: 'string', default: '0' },
      'hold-ms': { type: 'string', default: '20' },
      sport: { type: 'string', default: '0' },
      'chunk-min': { type: 'string', default: '100' },
      'chunk-max': { type: 'string', default: '3000' },
      seed: { type: 'string', default: '7' },
    },
  });
  const inMode = values.in as InMode;
  if (!IN_MODES.includes(inMode)) fail(ROLE, `--in ${IN_MODES.join('|')}, got ${values.in}`);
  const outMode = values.out as RelayOutMode;
  if (!OUT_MODES.includes(outMode)) fail(ROLE, `--out ${OUT_MODES.join('|')}, got ${values.out}`);
  const holdNs = parseNumber(ROLE, 'hold-ms', values['hold-ms'], 0) * 1e6;
  const chunkMin = parseNumber(ROLE, 'chunk-min', values['chunk-min'], 1);
  const chunkMax = parseNumber(ROLE, 'chunk-max', values['chunk-max'], chunkMin);
  const seed = parseNumber(ROLE, 'seed', values.seed, 0);
  const to = parseHostPort(ROLE, values.to);
  const serverOut = outMode === 'sse' || outMode === 'ws-json';
  const outCfg: TcpRelayOutConfig = {
    mode: outMode,
    host: to.host,
    port: to.port,
    sport: values.sport === '0' ? 0 : parsePort(ROLE, values.sport),
    listen: serverOut ? parsePort(ROLE, values['out-listen']) : 0,
  };
  const framer = framerOf(outMode, seed, chunkMin, chunkMax);

  const out = new Worker(new URL('./tcp-relay-out.js', import.meta.url), { workerData: outCfg });
  out.on('error', (err) => fail(ROLE, `sender thread: ${err.message}`));

  const hashIn = createHash('sha256');
  const counts = {
    batchesIn: 0,
    bytesIn: 0,
    wireBytesIn: 0,
    connectionsIn: 0,
    notAudio: 0,
    inputErrors: 0,
  };

  const forward = (b: Batch, received: number): void => {
    counts.batchesIn++;
    counts.bytesIn += b.audio.length;
    hashIn.update(b.audio);
    const msg: TcpRelayOutMessage = {
      type: 'item',
      writes: framer(b),
      audio: b.audio,
      due: received + holdNs,
    };
    out.postMessage(msg);
  };

  onStopAsync(
    () =>
      new Promise((resolve) => {
        out.once('message', (r: { [k: string]: Json }) => {
          const { type: _type, ...outCounts } = r;
          void _type;
          resolve({ role: ROLE, ...counts, ...outCounts, sha256In: hashIn.copy().digest('hex') });
        });
        out.postMessage({ type: 'report' } satisfies TcpRelayOutMessage);
      }),
  );

  let seq = 0;
  const rawBatch = (audio: Uint8Array): Batch => ({ audio, seq: seq++, id: '', text: '' });

  const startInput = (): void => {
    if (inMode === 'rtp') {
      const sock = createSocket('udp4');
      sock.on('message', (msg: Buffer) => {
        const received = nowNs();
        counts.wireBytesIn += msg.length;
        const rtp = parseRtp(msg);
        if (!rtp) {
          counts.notAudio++;
          return;
        }
        const p = msg.subarray(rtp.payloadOffset, rtp.payloadOffset + rtp.payloadLength);
        forward(rawBatch(new Uint8Array(p)), received);
      });
      sock.on('error', (err) => fail(ROLE, `udp: ${err.message}`));
      sock.bind(listenPort(), () => emit('ready', { role: ROLE, in: inMode, out: outMode }));
      return;
    }
    if (inMode === 'sse') {
      sseInput(values.from, (b, t) => forward(b, t), counts);
      return;
    }
    const server = createServer({ noDelay: true }, (sock) => {
      counts.connectionsIn++;
      // The source going away ends the input; the report must still come.
      sock.on('error', () => counts.inputErrors++);
      if (inMode === 'tcp') {
        sock.on('data', (d: Buffer) => {
          const received = nowNs();
          counts.wireBytesIn += d.length;
          forward(rawBatch(new Uint8Array(d)), received);
        });
      } else {
        wsInput(sock, inMode, forward, counts);
      }
    });
    server.on('error', (err) => fail(ROLE, `listen: ${err.message}`));
    server.listen(listenPort(), () => emit('ready', { role: ROLE, in: inMode, out: outMode }));
  };
  const listenPort = (): number => {
    if (!values.listen) fail(ROLE, `--listen port is required with --in ${inMode}`);
    return parsePort(ROLE, values.listen);
  };

  out.on('message', (m: { type: string }) => {
    if (m.type === 'ready') {
      // SSE pulls from its source: it starts once the sink is there to take the events.
      if (inMode === 'sse') emit('ready', { role: ROLE, in: inMode, out: outMode });
      else startInput();
    } else if (m.type === 'client' && inMode === 'sse') {
      startInput();
    }
  });
}

/** WebSocket server side of the input: handshake, then masked frames (binary or JSON text). */
function wsInput(
  sock: Socket,
  mode: InMode,
  forward: (b: Batch, received: number) => void,
  counts: { wireBytesIn: number; notAudio: number },
): void {
  const head = new HeadReader();
  const frames = new FrameParser(true);
  let upgraded = false;
  let seq = 0;
  const onFrames = (data: Buffer, received: number): void => {
    for (const f of frames.push(data)) {
      if (mode === 'ws' && (f.opcode === Opcode.Binary || f.opcode === Opcode.Continuation)) {
        forward({ audio: new Uint8Array(f.payload), seq: seq++, id: '', text: '' }, received);
      } else if (mode === 'ws-json' && f.opcode === Opcode.Text) {
        const msg = JSON.parse(f.payload.toString('utf8')) as {
          event?: string;
          sequenceNumber?: string;
          media?: { payload?: string };
        };
        const b64 = msg.media?.payload;
        if (msg.event !== 'media' || !b64) {
          counts.notAudio++;
          continue;
        }
        const audio = new Uint8Array(Buffer.from(b64, 'base64'));
        forward({ audio, seq: Number(msg.sequenceNumber ?? seq), id: '', text: b64 }, received);
        seq++;
      } else {
        counts.notAudio++;
      }
    }
  };
  sock.on('data', (d: Buffer) => {
    const received = nowNs();
    counts.wireBytesIn += d.length;
    if (upgraded) {
      onFrames(d, received);
      return;
    }
    const got = head.push(d);
    if (!got) return;
    upgraded = true;
    sock.write(serverHandshake(got[0]));
    if (got[1].length > 0) onFrames(got[1], received);
  });
}

/** SSE client of the source: each event's JSON `{"seq","id","audio":"<hex>"}`. */
function sseInput(
  from: string | undefined,
  forward: (b: Batch, received: number) => void,
  counts: { wireBytesIn: number; connectionsIn: number; notAudio: number; inputErrors: number },
): void {
  if (!from) fail(ROLE, '--from ip:port (the SSE source) is required with --in sse');
  const src = parseHostPort(ROLE, from);
  const parser = new SseParser();
  const req = request(
    {
      host: src.host,
      port: src.port,
      path: '/events',
      headers: { Accept: 'text/event-stream' },
      agent: false,
    },
    (res) => {
      counts.connectionsIn++;
      if (res.statusCode !== 200) fail(ROLE, `SSE source answered ${res.statusCode}`);
      res.socket.setNoDelay(true);
      res.on('error', () => counts.inputErrors++);
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => {
        const received = nowNs();
        counts.wireBytesIn += chunk.length;
        for (const ev of parser.push(chunk)) {
          const msg = JSON.parse(ev.data) as { seq?: number; id?: string; audio?: string };
          if (typeof msg.audio !== 'string') {
            counts.notAudio++;
            continue;
          }
          const audio = new Uint8Array(Buffer.from(msg.audio, 'hex'));
          forward({ audio, seq: msg.seq ?? -1, id: msg.id ?? '', text: msg.audio }, received);
        }
      });
    },
  );
  req.on('error', (err) => fail(ROLE, `SSE source ${from}: ${err.message}`));
  req.end();
}

main();
