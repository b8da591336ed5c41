/**
 * The TCP relay's sending side, on its own thread (as relay-out.ts for UDP, and for the same
 * reason: a thread waiting precisely for a due time cannot timestamp what arrives meanwhile).
 * The main thread receives, timestamps, parses and frames; this thread owns the output
 * connection and writes each item's pre-framed writes, one write() each, at the item's due time.
 *
 * Output connections:
 *   tcp      client: connects to host:port (TCP_NODELAY)
 *   ws       client: connects, WebSocket upgrade, then the (masked) frames the main thread built
 *   sse      server: listens; the sink's GET gets `200 text/event-stream` (chunked), then events
 *   ws-json  server: listens; the sink's WebSocket upgrade gets 101, then (unmasked) frames
 * A server posts {type:'client'} once the sink is connected: the main thread starts its input then.
 *
 * Messages in:  {type:'item', writes, audioBytes, audio, due}  |  {type:'report'}
 * Messages out: {type:'ready'}  |  {type:'client'}  |  {type:'report', ...counts}
 */
import { createHash } from 'node:crypto';
import { createServer as createHttpServer } from 'node:http';
import { createServer, type Socket } from 'node:net';
import { parentPort, workerData } from 'node:worker_threads';
import { blockUntil, ErrorHistogram, nowNs } from './cli.js';
import { connectTcp } from './tcp-audio.js';
import { checkServerResponse, clientHandshake, HeadReader, serverHandshake } from './ws-frame.js';

export type RelayOutMode = 'tcp' | 'ws' | 'sse' | 'ws-json';

export interface TcpRelayOutConfig {
  mode: RelayOutMode;
  /** Client modes: where the sink listens. */
  host: string;
  port: number;
  sport: number;
  /** Server modes: the port the sink connects to. */
  listen: number;
}

export type TcpRelayOutMessage =
  | { type: 'item'; writes: Uint8Array[]; audio: Uint8Array; due: number }
  | { type: 'report' };

const SPIN_NS = 2_000_000; // a timer to this long before the due time, then blockUntil()

type Writer = (data: Uint8Array) => void;

interface Pending {
  writes: Uint8Array[];
  audio: Uint8Array;
  due: number;
}

function clientUpgrade(sock: Socket, host: string): Promise<void> {
  const { request, key } = clientHandshake(host, '/stream');
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

/** Opens the output; resolves with the writer once the sink is there (server modes: later). */
function openOutput(
  cfg: TcpRelayOutConfig,
  ready: () => void,
  connected: (w: Writer) => void,
): void {
  const fail = (err: Error): never => {
    throw new Error(`tcp-relay-out (${cfg.mode}): ${err.message}`);
  };
  if (cfg.mode === 'tcp' || cfg.mode === 'ws') {
    void (async () => {
      const sock = await connectTcp(cfg.host, cfg.port, cfg.sport);
      sock.on('error', fail);
      if (cfg.mode === 'ws') await clientUpgrade(sock, `${cfg.host}:${cfg.port}`);
      connected((d) => sock.write(d));
      ready();
    })().catch(fail);
    return;
  }
  if (cfg.mode === 'sse') {
    const server = createHttpServer((_req, res) => {
      res.writeHead(200, {
        'Content-Type': 'text/event-stream',
        'Cache-Control': 'no-cache',
        Connection: 'keep-alive',
      });
      res.flushHeaders();
      res.socket?.setNoDelay(true);
      connected((d) => res.write(d));
    });
    server.on('error', fail);
    server.listen(cfg.listen, ready);
    return;
  }
  const server = createServer({ noDelay: true }, (sock) => {
    const head = new HeadReader();
    sock.on('error', fail);
    const onData = (d: Buffer): void => {
      const got = head.push(d);
      if (!got) return;
      sock.off('data', onData);
      sock.write(serverHandshake(got[0]));
      sock.on('data', () => {}); // the sink sends nothing we need
      connected((x) => sock.write(x));
    };
    sock.on('data', onData);
  });
  server.on('error', fail);
  server.listen(cfg.listen, ready);
}

function run(cfg: TcpRelayOutConfig): void {
  const port = parentPort;
  if (!port) throw new Error('tcp-relay-out: must run as a worker thread');
  const hash = createHash('sha256');
  const holdError = new ErrorHistogram();
  const queue: Pending[] = [];
  const counts = { itemsOut: 0, bytesOut: 0, writesOut: 0, wireBytesOut: 0, itemsDropped: 0 };
  let minWrite = Infinity;
  let maxWrite = 0;
  let writer: Writer | null = null;
  let timer: NodeJS.Timeout | null = null;

  const send = (item: Pending): void => {
    holdError.add((nowNs() - item.due) / 1000);
    if (!writer) {
      counts.itemsDropped++;
      return;
    }
    for (const w of item.writes) {
      writer(w);
      counts.writesOut++;
      counts.wireBytesOut += w.length;
      if (w.length < minWrite) minWrite = w.length;
      if (w.length > maxWrite) maxWrite = w.length;
    }
    hash.update(item.audio);
    counts.itemsOut++;
    counts.bytesOut += item.audio.length;
  };

  // Sends everything due within SPIN_NS at its exact due time; re-arms a timer for the rest.
  const drain = (): void => {
    timer = null;
    while (queue.length > 0) {
      const wait = queue[0].due - nowNs();
      if (wait > SPIN_NS) {
        timer = setTimeout(drain, (wait - SPIN_NS) / 1e6);
        return;
      }
      blockUntil(queue[0].due);
      send(queue.shift() as Pending);
    }
  };

  port.on('message', (m: TcpRelayOutMessage) => {
    if (m.type === 'item') {
      queue.push({ writes: m.writes, audio: m.audio, due: m.due });
      if (!timer) drain();
    } else {
      port.postMessage({
        type: 'report',
        ...counts,
        writeSize: { min: counts.writesOut ? minWrite : 0, max: maxWrite },
        sha256Out: hash.copy().digest('hex'),
        holdError: holdError.toJson(),
      });
    }
  });
  openOutput(
    cfg,
    () => port.postMessage({ type: 'ready' }),
    (w) => {
      writer = w;
      port.postMessage({ type: 'client' });
    },
  );
}

run(workerData as TcpRelayOutConfig);
