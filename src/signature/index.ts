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
  MAX_OPEN_WINDOWS,
  MAX_WINDOW_SIZE,
  MIN_WINDOW_SIZE,
  signPackets,
  signWindow,
  StreamSigner,
} from './stream-signer.js';
export type {
  ReferenceSignature,
  SignatureAlgorithm,
  SignerConfig,
  SignerStats,
} from './stream-signer.js';
export { xxh64 } from './xxh64.js';
