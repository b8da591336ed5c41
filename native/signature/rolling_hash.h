/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * Rabin-Karp polynomial hash mod 2^64: h = h * P + b + 1 (the + 1 keeps
 * leading zero bytes significant). Unrolled by four with precomputed
 * powers of P so the multiply chain is one step per four bytes.
 */
#ifndef ALT_SIGNATURE_ROLLING_HASH_H
#define ALT_SIGNATURE_ROLLING_HASH_H

#include <cstddef>
#include <cstdint>

namespace alt {

constexpr uint64_t kRollingPrime = 0x100000001B3ULL;

static inline uint64_t rolling_hash(const uint8_t *p, size_t len)
{
	constexpr uint64_t P1 = kRollingPrime;
	constexpr uint64_t P2 = P1 * P1;
	constexpr uint64_t P3 = P2 * P1;
	constexpr uint64_t P4 = P3 * P1;
	uint64_t h = 0;

	while (len >= 4) {
		h = h * P4 + (p[0] + 1ULL) * P3 + (p[1] + 1ULL) * P2 + (p[2] + 1ULL) * P1 +
		    (p[3] + 1ULL);
		p += 4;
		len -= 4;
	}
	while (len--)
		h = h * P1 + *p++ + 1;
	return h;
}

} // namespace alt

#endif /* ALT_SIGNATURE_ROLLING_HASH_H */
