/**
 * Lab sink for TCP audio (runs inside a pod namespace): takes what a relay sends and counts the
 * audio bytes in it (framing removed, text decoded), until SIGTERM/SIGINT; then prints
 * {"event":"report"} with the audio bytes and their SHA-256, so the parent can check that every
 * byte the source produced came out of the relay.
 *
 *   --mode tcp      listen on --listen, raw bytes
 *   --mode ws       listen on --listen, WebSocket server: masked binary + continuation frames
 *   --mode ws-json  WebSocket client of --from: unmasked text frames, JSON media.payload base64
 *   --mode sse      HTTP client of --from: text/event-stream, JSON `audio` hex
 *   --mode bulk     listen on --listen, count bytes (not audio)
 *
 *   node dist/test/lab/tcp-sink.js --mode tcp --listen 41002
 *   node dist/test/lab/tcp-sink.js --mode sse --from 10.213.5.3:41301
 */
import { createHash } from 'node:crypto';
import { request } from 'node:http';
import { createServer, type Socket } from 'node:net';
import { parseArgs } from 'node:util';
import { emit, fail, type Json, onStop, parseHostPort, parsePort } from './cli.js';
import { SseParser } from './sse-events.js';
import { connectTcp } from './tcp-audio.js';
import {
  checkServerResponse,
  clientHandshake,
  FrameParser,
  HeadReader,
  Opcode,
  serverHandshake,
} from './ws-frame.js';

const ROLE = 'tcp-sink';
const MODES = ['tcp', 'ws', 'ws-json', 'sse', 'bulk'] as const;
type Mode = (typeof MODES)[number];

function main(): void {
  const { values } = parseArgs({
    options: {
      mode: { type: 'string', default: 'tcp' },
      listen: { type: 'string' },
      from: { type: 'string' },
    },
  });
  const mode = values.mode as Mode;
  if (!MODES.includes(mode)) fail(ROLE, `--mode ${MODES.join('|')}, got ${values.mode}`);

  const hash = createHash('sha256');
  const counts = { messages: 0, bytes: 0, wireBytes: 0, notAudio: 0, connectionErrors: 0 };
  let ready = false;
  // Once streaming, the upstream going away (the relay stopped first) ends the input; it is not
  // a reason to lose the report. Before that, an error means the pipeline cannot run.
  const onError =
    (what: string) =>
    (err: Error): void => {
      if (!ready) fail(ROLE, `${what}: ${err.message}`);
      counts.connectionErrors++;
    };
  const signalReady = (fields: { [k: string]: Json }): void => {
    ready = true;
    emit('ready', { role: ROLE, mode, ...fields });
  };
  const take = (audio: Uint8Array): void => {
    counts.messages++;
    counts.bytes += audio.length;
    if (mode !== 'bulk') hash.update(audio);
  };
  onStop(() => ({ role: ROLE, mode, ...counts, sha256: hash.copy().digest('hex') }));
  // A client sink has nothing left to wait for once its upstream closed: it stays until stopped,
  // so the report is never lost.
  setInterval(() => {}, 1 << 30);

  const onFrames = (frames: FrameParser, d: Buffer): void => {
    for (const f of frames.push(d)) {
      if (mode === 'ws' && (f.opcode === Opcode.Binary || f.opcode === Opcode.Continuation)) {
        take(f.payload);
      } else if (mode === 'ws-json' && f.opcode === Opcode.Text) {
        // JSON.parse undoes the relay's escaped slashes.
        const msg = JSON.parse(f.payload.toString('utf8')) as { media?: { payload?: string } };
        if (typeof msg.media?.payload === 'string') take(Buffer.from(msg.media.payload, 'base64'));
        else counts.notAudio++;
      } else {
        counts.notAudio++;
      }
    }
  };

  if (mode === 'tcp' || mode === 'bulk' || mode === 'ws') {
    if (!values.listen) fail(ROLE, `--listen port is required with --mode ${mode}`);
    const port = parsePort(ROLE, values.listen);
    const server = createServer((sock: Socket) => {
      sock.on('error', (err) => {
        counts.connectionErrors++;
        void err;
      });
      if (mode !== 'ws') {
        sock.on('data', (d: Buffer) => {
          counts.wireBytes += d.length;
          take(d);
        });
        return;
      }
      const head = new HeadReader();
      const frames = new FrameParser(true);
      let upgraded = false;
      sock.on('data', (d: Buffer) => {
        counts.wireBytes += d.length;
        if (upgraded) return onFrames(frames, d);
        const got = head.push(d);
        if (!got) return;
        upgraded = true;
        sock.write(serverHandshake(got[0]));
        if (got[1].length > 0) onFrames(frames, got[1]);
      });
    });
    server.on('error', (err) => fail(ROLE, `listen ${port}: ${err.message}`));
    server.listen(port, () => signalReady({ port }));
    return;
  }

  if (!values.from) fail(ROLE, `--from ip:port is required with --mode ${mode}`);
  const from = parseHostPort(ROLE, values.from);
  if (mode === 'sse') {
    const parser = new SseParser();
    const req = request(
      { host: from.host, port: from.port, path: '/events', agent: false },
      (res) => {
        if (res.statusCode !== 200) fail(ROLE, `SSE relay answered ${res.statusCode}`);
        res.on('error', onError('SSE response'));
        signalReady({});
        res.setEncoding('utf8');
        res.on('data', (chunk: string) => {
          counts.wireBytes += chunk.length;
          for (const ev of parser.push(chunk)) {
            const msg = JSON.parse(ev.data) as { audio?: string };
            if (typeof msg.audio === 'string') take(Buffer.from(msg.audio, 'hex'));
            else counts.notAudio++;
          }
        });
      },
    );
    req.on('error', onError(`SSE relay ${values.from}`));
    req.end();
    return;
  }

  void (async () => {
    const sock = await connectTcp(from.host, from.port, 0);
    sock.on('error', onError('socket'));
    const { request: upgrade, key } = clientHandshake(`${from.host}:${from.port}`, '/listen');
    sock.write(upgrade);
    const head = new HeadReader();
    const frames = new FrameParser(false);
    let upgraded = false;
    sock.on('data', (d: Buffer) => {
      counts.wireBytes += d.length;
      if (upgraded) return onFrames(frames, d);
      const got = head.push(d);
      if (!got) return;
      checkServerResponse(got[0], key);
      upgraded = true;
      signalReady({});
      if (got[1].length > 0) onFrames(frames, got[1]);
    });
  })().catch((err: Error) => fail(ROLE, err.message));
}

main();
