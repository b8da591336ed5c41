/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * Gear rolling hash (FastCDC): h = (h << 1) + GEAR[b] mod 2^64. Bit k of h
 * depends only on the last k + 1 bytes, so after 64 bytes the whole state
 * is a function of the last 64 bytes alone: every observer of the same
 * bytes agrees, whatever came before or how the bytes were cut.
 */
#ifndef ALT_SIGNATURE_GEAR_H
#define ALT_SIGNATURE_GEAR_H

#include <array>
#include <cstdint>

namespace alt {

/* Bytes a Gear state depends on: anchors are only trusted after this many. */
constexpr uint32_t kGearSpan = 64;

/* splitmix64 seeded with "alt-gear": a fixed, documented table both the
 * C++ engine and the TypeScript reference can regenerate. */
constexpr uint64_t kGearSeed = 0x616c742d67656172ULL;

constexpr std::array<uint64_t, 256> make_gear_table()
{
	std::array<uint64_t, 256> t{};
	uint64_t state = kGearSeed;

	for (unsigned i = 0; i < 256; i++) {
		state += 0x9E3779B97F4A7C15ULL;
		uint64_t z = state;
		z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
		z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
		t[i] = z ^ (z >> 31);
	}
	return t;
}

inline constexpr std::array<uint64_t, 256> kGear = make_gear_table();

/* ANCHOR_BITS = floor(log2(window)): about one anchor per window of audio. */
constexpr uint32_t anchor_bits(uint32_t window_size)
{
	uint32_t bits = 0;

	while ((window_size >> (bits + 1)) != 0)
		bits++;
	return bits;
}

/* The top bits of a Gear state depend on the most bytes, so the mask
 * takes them rather than the low ones. */
constexpr uint64_t anchor_mask(uint32_t window_size)
{
	uint32_t bits = anchor_bits(window_size);

	return bits == 0 ? 0 : ~0ULL << (64 - bits);
}

} // namespace alt

#endif /* ALT_SIGNATURE_GEAR_H */
