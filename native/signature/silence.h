/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * The silence gate of a completed window (docs/signatures.md): too few
 * distinct byte values, or RMS of the decoded samples below the
 * threshold. Silence plays on many unrelated calls at once, so a
 * signature of it would only produce false matches.
 */
#ifndef ALT_SIGNATURE_SILENCE_H
#define ALT_SIGNATURE_SILENCE_H

#include <cstddef>
#include <cstdint>

#include "../../bpf/audio_event.h"
#include "g711.h"

namespace alt {

/* Fewer distinct byte values than this: digital silence, constant runs,
 * comfort noise. */
constexpr unsigned kMinDistinctBytes = 8;

/* RMS can not exceed 32768: any larger threshold silences everything, and
 * clamping keeps threshold^2 * n far inside 64 bits (and 2^53). */
constexpr uint32_t kMaxSilenceThreshold = 65535;

static inline bool too_few_distinct(const uint8_t *w, size_t len)
{
	uint64_t seen[4] = { 0, 0, 0, 0 };
	unsigned distinct = 0;

	for (size_t i = 0; i < len; i++) {
		uint64_t bit = 1ULL << (w[i] & 63);
		uint64_t &word = seen[w[i] >> 6];

		if (!(word & bit)) {
			word |= bit;
			if (++distinct >= kMinDistinctBytes)
				return false;
		}
	}
	return true;
}

static inline uint64_t g711_energy(const uint8_t *w, size_t len, const int16_t *table)
{
	uint64_t sum = 0;

	for (size_t i = 0; i < len; i++) {
		int64_t x = table[w[i]];

		sum += (uint64_t)(x * x);
	}
	return sum;
}

static inline uint64_t pcm16_energy(const uint8_t *w, size_t n, bool big_endian)
{
	uint64_t sum = 0;
	int hi = big_endian ? 0 : 1;

	for (size_t i = 0; i < n; i++) {
		int64_t x = (int16_t)(uint16_t)((w[2 * i + hi] << 8) | w[2 * i + 1 - hi]);

		sum += (uint64_t)(x * x);
	}
	return sum;
}

/* window: the W bytes; encoding and align: remembered from the anchor. */
static inline bool window_is_silent(const uint8_t *w, size_t len, uint8_t encoding,
				    uint32_t align, uint32_t threshold)
{
	uint64_t sum, n;

	if (too_few_distinct(w, len))
		return true;

	switch (encoding) {
	case AEV_ENC_PCMU:
		n = len;
		sum = g711_energy(w, len, kUlaw.data());
		break;
	case AEV_ENC_PCMA:
		n = len;
		sum = g711_energy(w, len, kAlaw.data());
		break;
	case AEV_ENC_L16_BE:
	case AEV_ENC_RAW_LE16:
		n = (len - align) / 2;
		sum = pcm16_energy(w + align, n, encoding == AEV_ENC_L16_BE);
		break;
	default: /* OPAQUE and unknown: bytes only, no energy to judge */
		return false;
	}

	uint64_t thr = threshold > kMaxSilenceThreshold ? kMaxSilenceThreshold : threshold;

	return n == 0 || sum < thr * thr * n;
}

} // namespace alt

#endif /* ALT_SIGNATURE_SILENCE_H */
