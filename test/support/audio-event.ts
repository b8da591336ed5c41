/**
 * Ring-buffer records (struct audio_event, bpf/audio_event.h) for tests: decoded from what the
 * classifier emits, or written as the kernel would (or as it never would, for the fuzzers). The
 * layout comes from src/abi.ts, the one TypeScript mirror of the ABI.
 */
import { AEV_HEADER_SIZE, AudioEventLayout as L } from '../../src/abi.js';

const U64_MAX = (1n << 64n) - 1n;

/** The header fields of struct audio_event. */
export interface AudioEventHeader {
  tsNs: bigint;
  ifindex: number;
  direction: number;
  family: number;
  protocol: number;
  encoding: number;
  saddr: Uint8Array;
  daddr: Uint8Array;
  sport: number;
  dport: number;
  payloadOff: number;
  payloadLen: number;
  capturedLen: number;
  flags: number;
  seq: number;
  cgroupId: bigint;
}

/** One decoded record: its header, its captured bytes, and the record's own length. */
export interface AudioEventRecord extends AudioEventHeader {
  data: Uint8Array;
  byteLength: number;
}

/** Decodes one record; the data is cut at the record's end if captured_len claims more. */
export function decodeAudioEvent(b: Uint8Array): AudioEventRecord {
  if (b.byteLength < AEV_HEADER_SIZE) {
    throw new Error(`ring-buffer record of ${b.byteLength} bytes: shorter than its header`);
  }
  const v = new DataView(b.buffer, b.byteOffset, b.byteLength);
  const capturedLen = v.getUint16(L.capturedLen, true);
  return {
    tsNs: v.getBigUint64(L.tsNs, true),
    ifindex: v.getUint32(L.ifindex, true),
    direction: b[L.direction],
    family: b[L.family],
    protocol: b[L.protocol],
    encoding: b[L.encoding],
    saddr: b.slice(L.saddr, L.saddr + 16),
    daddr: b.slice(L.daddr, L.daddr + 16),
    sport: v.getUint16(L.sport, true),
    dport: v.getUint16(L.dport, true),
    payloadOff: v.getUint16(L.payloadOff, true),
    payloadLen: v.getUint16(L.payloadLen, true),
    capturedLen,
    flags: v.getUint16(L.flags, true),
    seq: v.getUint32(L.seq, true),
    cgroupId: v.getBigUint64(L.cgroupId, true),
    data: b.slice(L.data, Math.min(b.byteLength, L.data + capturedLen)),
    byteLength: b.byteLength,
  };
}

/**
 * One record of exactly `length` bytes (default: header + data), as the ring buffer hands it
 * over: the header cut short when `length` is below AEV_HEADER_SIZE, the data cut or zero-padded.
 */
export function writeAudioEvent(
  h: AudioEventHeader,
  data: Uint8Array,
  length = AEV_HEADER_SIZE + data.length,
): Uint8Array {
  const full = new Uint8Array(Math.max(length, AEV_HEADER_SIZE));
  const v = new DataView(full.buffer);
  v.setBigUint64(L.tsNs, h.tsNs & U64_MAX, true);
  v.setUint32(L.ifindex, h.ifindex >>> 0, true);
  full[L.direction] = h.direction;
  full[L.family] = h.family;
  full[L.protocol] = h.protocol;
  full[L.encoding] = h.encoding;
  full.set(h.saddr.subarray(0, 16), L.saddr);
  full.set(h.daddr.subarray(0, 16), L.daddr);
  v.setUint16(L.sport, h.sport, true);
  v.setUint16(L.dport, h.dport, true);
  v.setUint16(L.payloadOff, h.payloadOff, true);
  v.setUint16(L.payloadLen, h.payloadLen & 0xffff, true);
  v.setUint16(L.capturedLen, h.capturedLen & 0xffff, true);
  v.setUint16(L.flags, h.flags & 0xffff, true);
  v.setUint32(L.seq, h.seq >>> 0, true);
  v.setBigUint64(L.cgroupId, h.cgroupId & U64_MAX, true);
  full.set(data.subarray(0, Math.max(0, length - AEV_HEADER_SIZE)), L.data);
  return length < AEV_HEADER_SIZE ? full.slice(0, length) : full;
}
