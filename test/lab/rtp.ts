/**
 * Minimal RTP (RFC 3550) for the lab: a packetiser that owns one SSRC, sequence and timestamp
 * (what a relay that rewrites headers does), and a parser that finds the payload.
 */

export const RTP_HEADER_SIZE = 12;
export const PT_PCMU = 0;

export interface RtpPacketizerOptions {
  payloadType: number;
  ssrc: number;
  /** First sequence number; random in real stacks, fixed here when reproducibility matters. */
  sequence?: number;
  /** First timestamp. */
  timestamp?: number;
}

/** Builds RTP packets of one stream: its own SSRC, a sequence number +1 and a timestamp +samples. */
export class RtpPacketizer {
  private readonly payloadType: number;
  private readonly ssrc: number;
  private sequence: number;
  private timestamp: number;
  private first = true;

  constructor(opts: RtpPacketizerOptions) {
    if (opts.payloadType < 0 || opts.payloadType > 127) {
      throw new RangeError(`RTP payload type ${opts.payloadType} outside 0..127`);
    }
    this.payloadType = opts.payloadType;
    this.ssrc = opts.ssrc >>> 0;
    this.sequence = (opts.sequence ?? 0) & 0xffff;
    this.timestamp = (opts.timestamp ?? 0) >>> 0;
  }

  /** One packet carrying `payload` worth `samples` sampling periods; marker on the first packet. */
  packetize(payload: Uint8Array, samples: number): Buffer {
    const pkt = Buffer.allocUnsafe(RTP_HEADER_SIZE + payload.length);
    pkt[0] = 0x80; // V=2, no padding, no extension, no CSRC
    pkt[1] = (this.first ? 0x80 : 0) | this.payloadType;
    pkt.writeUInt16BE(this.sequence, 2);
    pkt.writeUInt32BE(this.timestamp, 4);
    pkt.writeUInt32BE(this.ssrc, 8);
    pkt.set(payload, RTP_HEADER_SIZE);
    this.first = false;
    this.sequence = (this.sequence + 1) & 0xffff;
    this.timestamp = (this.timestamp + samples) >>> 0;
    return pkt;
  }
}

export interface RtpPacket {
  payloadType: number;
  marker: boolean;
  sequence: number;
  timestamp: number;
  ssrc: number;
  payloadOffset: number;
  payloadLength: number;
}

/** Parses an RTP packet; null when it is not version 2 or its lengths do not add up. */
export function parseRtp(pkt: Uint8Array): RtpPacket | null {
  if (pkt.length < RTP_HEADER_SIZE || pkt[0] >> 6 !== 2) return null;
  const view = new DataView(pkt.buffer, pkt.byteOffset, pkt.byteLength);
  const cc = pkt[0] & 0x0f;
  let off = RTP_HEADER_SIZE + 4 * cc;
  if (pkt[0] & 0x10) {
    if (pkt.length < off + 4) return null;
    off += 4 + 4 * view.getUint16(off + 2);
  }
  let end = pkt.length;
  if (pkt[0] & 0x20) end -= pkt[pkt.length - 1];
  if (end < off) return null;
  return {
    payloadType: pkt[1] & 0x7f,
    marker: (pkt[1] & 0x80) !== 0,
    sequence: view.getUint16(2),
    timestamp: view.getUint32(4),
    ssrc: view.getUint32(8),
    payloadOffset: off,
    payloadLength: end - off,
  };
}
