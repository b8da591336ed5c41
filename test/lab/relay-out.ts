/**
 * The relay's sending side, on its own thread. Waiting precisely for the due time blocks the
 * thread that waits; if that were the receiving thread, a packet arriving meanwhile would be
 * timestamped late and held too long (with a 20 ms hold and 20 ms packets, the next packet
 * arrives right while the previous one is being sent). So the main thread only receives and
 * timestamps, and this worker holds and sends.
 *
 * Messages in:  {type:'item', payload: Uint8Array, due: ns, pt}  |  {type:'report'}
 * Messages out: {type:'ready', sport}  |  {type:'report', ...counts}
 */
import { createHash } from 'node:crypto';
import { createSocket } from 'node:dgram';
import { parentPort, workerData } from 'node:worker_threads';
import { blockUntil, ErrorHistogram, nowNs } from './cli.js';
import { RtpPacketizer } from './rtp.js';

export interface RelayOutConfig {
  host: string;
  port: number;
  sport: number;
  rtp: boolean;
  ssrc: number;
}

export type RelayOutMessage =
  | { type: 'item'; payload: Uint8Array; due: number; pt: number }
  | { type: 'report' };

const SPIN_NS = 2_000_000; // a timer to this long before the due time, then blockUntil()

interface Pending {
  payload: Uint8Array;
  due: number;
  pt: number;
}

function run(cfg: RelayOutConfig): void {
  const port = parentPort;
  if (!port) throw new Error('relay-out: must run as a worker thread');
  const sock = createSocket('udp4');
  const hash = createHash('sha256');
  const holdError = new ErrorHistogram();
  const queue: Pending[] = [];
  let packetizer: RtpPacketizer | null = null;
  let timer: NodeJS.Timeout | null = null;
  let packetsOut = 0;
  let bytesOut = 0;

  const send = (item: Pending): void => {
    holdError.add((nowNs() - item.due) / 1000);
    let pkt: Uint8Array = item.payload;
    if (cfg.rtp) {
      // A new stream identity, as rtpengine or a B2BUA gives the other leg: only the payload
      // survives.
      packetizer ??= new RtpPacketizer({
        payloadType: item.pt,
        ssrc: cfg.ssrc,
        sequence: 20000,
        timestamp: 123456,
      });
      const samples = item.pt === 0 || item.pt === 8 ? pkt.length : pkt.length / 2;
      pkt = packetizer.packetize(item.payload, samples);
    }
    sock.send(pkt, cfg.port, cfg.host);
    hash.update(item.payload);
    packetsOut++;
    bytesOut += item.payload.length;
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
      // Timers are only millisecond-accurate: finish the wait precisely.
      blockUntil(queue[0].due);
      send(queue.shift() as Pending);
    }
  };

  port.on('message', (m: RelayOutMessage) => {
    if (m.type === 'item') {
      queue.push({ payload: m.payload, due: m.due, pt: m.pt });
      if (!timer) drain();
    } else {
      port.postMessage({
        type: 'report',
        packetsOut,
        bytesOut,
        sha256Out: hash.copy().digest('hex'),
        holdError: holdError.toJson(),
      });
    }
  });
  sock.on('error', (err) => {
    throw new Error(`relay-out: send socket error: ${err.message}`);
  });
  sock.bind(cfg.sport, () => port.postMessage({ type: 'ready', sport: sock.address().port }));
}

run(workerData as RelayOutConfig);
