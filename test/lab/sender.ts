/**
 * Lab sender (runs inside a pod namespace): streams speech-like audio in real time, one packet per
 * 20 ms, to ip:port over UDP, as RTP PCMU (PT 0, 160-byte payloads) or raw 16-bit LE PCM
 * (320 bytes). The audio depends only on --seed, so the parent can regenerate the exact bytes.
 *
 *   node dist/test/lab/sender.js --dest 10.213.5.3:40000 --encoding pcmu --transport rtp
 *        [--seed 1] [--duration 18] [--sport 40000] [--ssrc 0x1234]
 *
 * --duration 0 streams until SIGTERM/SIGINT. Prints {"event":"report"} with packet/byte counts
 * and the SHA-256 of the concatenated payloads on exit.
 */
import { createHash } from 'node:crypto';
import { createSocket } from 'node:dgram';
import { parseArgs } from 'node:util';
import { type AudioFormat, encode, SAMPLES_PER_20MS, SpeechSource } from './audio-source.js';
import {
  blockUntil,
  emit,
  ErrorHistogram,
  fail,
  nowNs,
  onStop,
  parseHostPort,
  parseNumber,
  parsePort,
} from './cli.js';
import { PT_PCMU, RtpPacketizer } from './rtp.js';

const ROLE = 'sender';
const PTIME_NS = 20_000_000;
const EARLY_NS = 2_000_000; // the timer wakes this early; blockUntil() does the rest

function main(): void {
  const { values } = parseArgs({
    options: {
      dest: { type: 'string' },
      encoding: { type: 'string', default: 'pcmu' },
      transport: { type: 'string', default: 'rtp' },
      seed: { type: 'string', default: '1' },
      duration: { type: 'string', default: '0' },
      sport: { type: 'string', default: '0' },
      ssrc: { type: 'string', default: '0x5e4d0001' },
    },
  });
  if (!values.dest) fail(ROLE, '--dest ip:port is required');
  const dest = parseHostPort(ROLE, values.dest);
  const encoding = values.encoding;
  if (encoding !== 'pcmu' && encoding !== 'le16')
    fail(ROLE, `--encoding pcmu|le16, got ${encoding}`);
  const transport = values.transport;
  if (transport !== 'rtp' && transport !== 'raw')
    fail(ROLE, `--transport rtp|raw, got ${transport}`);
  const format: AudioFormat = encoding;
  const seed = parseNumber(ROLE, 'seed', values.seed, 0);
  const durationS = parseNumber(ROLE, 'duration', values.duration, 0);
  const sport = values.sport === '0' ? 0 : parsePort(ROLE, values.sport);
  const totalPackets = durationS > 0 ? Math.floor((durationS * 1e9) / PTIME_NS) : Infinity;

  const source = new SpeechSource(seed);
  const pcm = new Int16Array(SAMPLES_PER_20MS);
  // The PCMU stream is RTP PT 0; a raw 16-bit stream over RTP would be L16 (PT 11), but
  // L16 is big-endian on the wire, so raw LE16 is only sent bare.
  const rtp =
    transport === 'rtp'
      ? new RtpPacketizer({ payloadType: PT_PCMU, ssrc: Number(values.ssrc), sequence: 1000 })
      : null;
  if (rtp && format !== 'pcmu') fail(ROLE, 'RTP transport carries PCMU only in the lab');

  const hash = createHash('sha256');
  const lateness = new ErrorHistogram();
  let packets = 0;
  let bytes = 0;
  let startNs = 0;

  const sock = createSocket('udp4');
  const report = (): Record<string, string | number | ReturnType<ErrorHistogram['toJson']>> => ({
    role: ROLE,
    packets,
    bytes,
    sha256: hash.copy().digest('hex'),
    elapsedMs: startNs ? Math.round((nowNs() - startNs) / 1e6) : 0,
    pacingLateness: lateness.toJson(),
  });
  const stop = onStop(report);

  const sendNext = (): void => {
    if (packets >= totalPackets) {
      stop();
      return;
    }
    const due = startNs + packets * PTIME_NS;
    // The timer brought us to ~2 ms before: finish precisely, like a real-time media stack.
    blockUntil(due);
    lateness.add((nowNs() - due) / 1000);
    source.read(pcm);
    const payload = encode(format, pcm);
    hash.update(payload);
    const pkt = rtp ? rtp.packetize(payload, SAMPLES_PER_20MS) : payload;
    sock.send(pkt, dest.port, dest.host);
    packets++;
    bytes += payload.length;
    // Drift correction: aim at the absolute due time of the next packet, not now + 20 ms.
    const nextDue = startNs + packets * PTIME_NS;
    setTimeout(sendNext, Math.max(0, (nextDue - nowNs() - EARLY_NS) / 1e6));
  };

  sock.on('error', (err) => fail(ROLE, `socket error: ${err.message}`));
  sock.bind(sport, () => {
    emit('ready', { role: ROLE, port: sock.address().port });
    startNs = nowNs();
    sendNext();
  });
}

main();
