/** The TypeScript reference of the audio signature scheme (docs/signatures.md). */
export { crc32 } from './crc32.js';
export { anchorBits, GEAR, GEAR_SEED, GEAR_SPAN, GearHash, splitmix64 } from './gear.js';
export {
  ALAW_TO_LINEAR,
  alawToLinear,
  linearToAlaw,
  linearToUlaw,
  ULAW_TO_LINEAR,
  ulawToLinear,
} from './g711.js';
export { ROLLING_PRIME, rollingHash } from './rolling-hash.js';
export {
  distinctByteCountAtLeast,
  isSilentWindow,
  MAX_SILENCE_THRESHOLD,
  MIN_DISTINCT_BYTES,
} from './silence.js';
export {
  IPPROTO_TCP,
  MAX_OPEN_WINDOWS,
  MAX_WINDOW_SIZE,
  MIN_WINDOW_SIZE,
  signPackets,
  signWindow,
  StreamSigner,
} from './stream-signer.js';
export type {
  PushOptions,
  ReferenceSignature,
  SignatureAlgorithm,
  SignerConfig,
  SignerStats,
} from './stream-signer.js';
export { xxh64 } from './xxh64.js';
export { MIN_TEXT_RUN, TextAudioDecoder } from './text-decoder.js';
export {
  mostlyPrintable,
  Mode as FramingMode,
  SNIFF_BYTES,
  StreamFraming,
} from './stream-framing.js';
export { WebSocketFrames, wsHeaderSize, wsPayloadLength } from './websocket.js';
export { ChunkedDecoder, HttpHead, HTTP_MAX_HEAD } from './http.js';
