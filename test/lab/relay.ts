/**
 * Lab relay (runs inside a pod namespace): what a media relay or B2BUA does to audio. Receives UDP
 * on --listen, holds each payload exactly --hold-ms, and forwards it to --to:
 *   - RTP in, RTP out: a new SSRC, its own sequence numbers and timestamps (payload kept);
 *   - --gather N: N input payloads go out as one packet (20 ms in, N x 20 ms out: re-framing),
 *     sent hold-ms after the N-th arrives;
 *   - --in rtp --out raw: the RTP header is stripped, the payload goes out bare.
 *
 *   node dist/test/lab/relay.js --listen 40000 --to 10.213.5.4:40002 --hold-ms 20
 *        [--in rtp|raw] [--out rtp|raw] [--gather 1] [--sport 40001] [--ssrc 0x...]
 *
 * This thread only receives and timestamps; a worker thread (relay-out.ts) holds and sends, to
 * the exact due time (a timer to 2 ms before it, then a futex sleep and a short spin). The report
 * gives the achieved hold error (send time - receipt time - hold) as p50/p99/max.
 */
import { createHash } from 'node:crypto';
import { createSocket } from 'node:dgram';
import { parseArgs } from 'node:util';
import { Worker } from 'node:worker_threads';
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
import type { RelayOutConfig, RelayOutMessage } from './relay-out.js';
import { parseRtp, PT_PCMU } from './rtp.js';

const ROLE = 'relay';

function main(): void {
  const { values } = parseArgs({
    options: {
      listen: { type: 'string' },
      to: { type: 'string' },
      'hold-ms': { type: 'string', default: '20' },
      in: { type: 'string', default: 'rtp' },
      out: { type: 'string', default: '' },
      gather: { type: 'string', default: '1' },
      sport: { type: 'string', default: '0' },
      ssrc: { type: 'string', default: '0x7e1a0001' },
      'idle-flush-ms': { type: 'string', default: '200' },
    },
  });
  if (!values.listen || !values.to) fail(ROLE, '--listen port and --to ip:port are required');
  const listenPort = parsePort(ROLE, values.listen);
  const to = parseHostPort(ROLE, values.to);
  const holdNs = parseNumber(ROLE, 'hold-ms', values['hold-ms'], 0) * 1e6;
  const inRtp = values.in === 'rtp';
  if (!inRtp && values.in !== 'raw') fail(ROLE, `--in rtp|raw, got ${values.in}`);
  const outMode = values.out || values.in;
  if (outMode !== 'rtp' && outMode !== 'raw') fail(ROLE, `--out rtp|raw, got ${outMode}`);
  if (outMode === 'rtp' && !inRtp) fail(ROLE, 'raw in, RTP out is not supported (no payload type)');
  const gather = parseNumber(ROLE, 'gather', values.gather, 1);
  if (!Number.isInteger(gather)) fail(ROLE, `--gather must be an integer, got ${values.gather}`);
  const idleFlushMs = parseNumber(ROLE, 'idle-flush-ms', values['idle-flush-ms'], 1);
  const sport = values.sport === '0' ? 0 : parsePort(ROLE, values.sport);

  const outCfg: RelayOutConfig = {
    host: to.host,
    port: to.port,
    sport,
    rtp: outMode === 'rtp',
    ssrc: Number(values.ssrc),
  };
  const out = new Worker(new URL('./relay-out.js', import.meta.url), { workerData: outCfg });
  out.on('error', (err) => fail(ROLE, `sender thread: ${err.message}`));

  let payloadType = PT_PCMU;
  const hashIn = createHash('sha256');
  const counts = { packetsIn: 0, bytesIn: 0, notRtp: 0 };
  const group: Uint8Array[] = [];
  let idleTimer: NodeJS.Timeout | null = null;

  const flushGroup = (due: number): void => {
    if (group.length === 0) return;
    const payload = group.length === 1 ? group[0] : Buffer.concat(group);
    group.length = 0;
    const msg: RelayOutMessage = { type: 'item', payload, due, pt: payloadType };
    out.postMessage(msg);
  };

  const inSock = createSocket('udp4');
  inSock.on('message', (msg: Buffer) => {
    const received = nowNs();
    let payload: Uint8Array = msg;
    if (inRtp) {
      const rtp = parseRtp(msg);
      if (!rtp) {
        counts.notRtp++;
        return;
      }
      payloadType = rtp.payloadType;
      payload = msg.subarray(rtp.payloadOffset, rtp.payloadOffset + rtp.payloadLength);
    }
    counts.packetsIn++;
    counts.bytesIn += payload.length;
    hashIn.update(payload);
    group.push(new Uint8Array(payload)); // a copy: the receive buffer is not ours to keep
    if (group.length >= gather) flushGroup(received + holdNs);
    if (gather > 1) {
      if (idleTimer) clearTimeout(idleTimer);
      // End of stream with a partial group: send what is left rather than keep it forever.
      idleTimer = setTimeout(() => flushGroup(nowNs()), idleFlushMs);
    }
  });

  onStopAsync(
    () =>
      new Promise((resolve) => {
        out.once('message', (r: { [k: string]: Json }) => {
          const { type: _type, ...outCounts } = r;
          void _type;
          resolve({
            role: ROLE,
            ...counts,
            ...outCounts,
            sha256In: hashIn.copy().digest('hex'),
          });
        });
        out.postMessage({ type: 'report' } satisfies RelayOutMessage);
      }),
  );

  inSock.on('error', (err) => fail(ROLE, `listen socket error: ${err.message}`));
  out.once('message', (m: { type: string; sport: number }) => {
    if (m.type !== 'ready') fail(ROLE, `sender thread said ${m.type} before ready`);
    inSock.bind(listenPort, () => {
      emit('ready', { role: ROLE, port: listenPort, sport: m.sport });
    });
  });
}

main();
