/**
 * Lab sink (runs inside a pod namespace): receives UDP on --listen and counts what arrives, until
 * SIGTERM/SIGINT; then prints {"event":"report"} with packets, payload bytes and the SHA-256 of the
 * concatenated payloads (RTP headers stripped with --in rtp), so the parent can check the relays
 * forwarded every byte.
 *
 *   node dist/test/lab/sink.js --listen 40002 [--in rtp|raw]
 */
import { createHash } from 'node:crypto';
import { createSocket } from 'node:dgram';
import { parseArgs } from 'node:util';
import { emit, fail, onStop, parsePort } from './cli.js';
import { parseRtp } from './rtp.js';

const ROLE = 'sink';

function main(): void {
  const { values } = parseArgs({
    options: {
      listen: { type: 'string' },
      in: { type: 'string', default: 'raw' },
    },
  });
  if (!values.listen) fail(ROLE, '--listen port is required');
  const port = parsePort(ROLE, values.listen);
  const inRtp = values.in === 'rtp';
  if (!inRtp && values.in !== 'raw') fail(ROLE, `--in rtp|raw, got ${values.in}`);

  const hash = createHash('sha256');
  const counts = { packets: 0, bytes: 0, datagramBytes: 0, notRtp: 0 };
  const sock = createSocket('udp4');
  sock.on('message', (msg: Buffer) => {
    counts.datagramBytes += msg.length;
    let payload = msg;
    if (inRtp) {
      const rtp = parseRtp(msg);
      if (!rtp) {
        counts.notRtp++;
        return;
      }
      payload = msg.subarray(rtp.payloadOffset, rtp.payloadOffset + rtp.payloadLength);
    }
    counts.packets++;
    counts.bytes += payload.length;
    hash.update(payload);
  });
  onStop(() => ({ role: ROLE, ...counts, sha256: hash.copy().digest('hex') }));
  sock.on('error', (err) => fail(ROLE, `socket error: ${err.message}`));
  sock.bind(port, () => emit('ready', { role: ROLE, port }));
}

main();
