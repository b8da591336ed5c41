/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * XXH64 (Yann Collet's xxHash, 64-bit variant), one-shot over a
 * contiguous buffer. Written out here so the addon needs no library;
 * the published test vectors are checked by test/signature.test.ts
 * through the TypeScript reference and by the parity test through this.
 */
#ifndef ALT_SIGNATURE_XXH64_H
#define ALT_SIGNATURE_XXH64_H

#include <cstddef>
#include <cstdint>
#include <cstring>

namespace alt {

namespace xxh64_detail {

constexpr uint64_t P1 = 0x9E3779B185EBCA87ULL;
constexpr uint64_t P2 = 0xC2B2AE3D27D4EB4FULL;
constexpr uint64_t P3 = 0x165667B19E3779F9ULL;
constexpr uint64_t P4 = 0x85EBCA77C2B2AE63ULL;
constexpr uint64_t P5 = 0x27D4EB2F165667C5ULL;

static inline uint64_t rotl(uint64_t x, int r)
{
	return (x << r) | (x >> (64 - r));
}

/* Little-endian loads; memcpy keeps unaligned access defined. */
static inline uint64_t read64(const uint8_t *p)
{
	uint64_t v;

	memcpy(&v, p, sizeof(v));
#if __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
	v = __builtin_bswap64(v);
#endif
	return v;
}

static inline uint32_t read32(const uint8_t *p)
{
	uint32_t v;

	memcpy(&v, p, sizeof(v));
#if __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
	v = __builtin_bswap32(v);
#endif
	return v;
}

static inline uint64_t round(uint64_t acc, uint64_t input)
{
	acc += input * P2;
	acc = rotl(acc, 31);
	return acc * P1;
}

static inline uint64_t merge(uint64_t acc, uint64_t val)
{
	acc ^= round(0, val);
	return acc * P1 + P4;
}

} // namespace xxh64_detail

static inline uint64_t xxh64(const uint8_t *p, size_t len, uint64_t seed = 0)
{
	using namespace xxh64_detail;
	const uint8_t *end = p + len;
	uint64_t h;

	if (len >= 32) {
		const uint8_t *limit = end - 32;
		uint64_t v1 = seed + P1 + P2;
		uint64_t v2 = seed + P2;
		uint64_t v3 = seed;
		uint64_t v4 = seed - P1;

		do {
			v1 = round(v1, read64(p));
			v2 = round(v2, read64(p + 8));
			v3 = round(v3, read64(p + 16));
			v4 = round(v4, read64(p + 24));
			p += 32;
		} while (p <= limit);

		h = rotl(v1, 1) + rotl(v2, 7) + rotl(v3, 12) + rotl(v4, 18);
		h = merge(h, v1);
		h = merge(h, v2);
		h = merge(h, v3);
		h = merge(h, v4);
	} else {
		h = seed + P5;
	}

	h += (uint64_t)len;

	while (p + 8 <= end) {
		h ^= round(0, read64(p));
		h = rotl(h, 27) * P1 + P4;
		p += 8;
	}
	if (p + 4 <= end) {
		h ^= (uint64_t)read32(p) * P1;
		h = rotl(h, 23) * P2 + P3;
		p += 4;
	}
	while (p < end) {
		h ^= (uint64_t)(*p) * P5;
		h = rotl(h, 11) * P1;
		p++;
	}

	h ^= h >> 33;
	h *= P2;
	h ^= h >> 29;
	h *= P3;
	h ^= h >> 32;
	return h;
}

} // namespace alt

#endif /* ALT_SIGNATURE_XXH64_H */
