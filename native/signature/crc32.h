/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * CRC-32/ISO-HDLC (zlib's crc32: reflected 0xEDB88320, init and final
 * xor 0xFFFFFFFF), slicing-by-8: eight 256-entry tables built at compile
 * time, eight bytes per step instead of one.
 */
#ifndef ALT_SIGNATURE_CRC32_H
#define ALT_SIGNATURE_CRC32_H

#include <array>
#include <cstddef>
#include <cstdint>
#include <cstring>

namespace alt {

namespace crc32_detail {

using Tables = std::array<std::array<uint32_t, 256>, 8>;

constexpr Tables make_tables()
{
	Tables t{};

	for (uint32_t i = 0; i < 256; i++) {
		uint32_t c = i;

		for (int k = 0; k < 8; k++)
			c = (c & 1) ? (c >> 1) ^ 0xEDB88320u : c >> 1;
		t[0][i] = c;
	}
	/* t[k][i]: CRC of byte i followed by k zero bytes. */
	for (uint32_t i = 0; i < 256; i++)
		for (int k = 1; k < 8; k++)
			t[k][i] = (t[k - 1][i] >> 8) ^ t[0][t[k - 1][i] & 0xff];
	return t;
}

inline constexpr Tables kTables = make_tables();

} // namespace crc32_detail

static inline uint32_t crc32(const uint8_t *p, size_t len)
{
	const auto &t = crc32_detail::kTables;
	uint32_t c = 0xFFFFFFFFu;

#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
	while (len >= 8) {
		uint32_t lo, hi;

		memcpy(&lo, p, 4);
		memcpy(&hi, p + 4, 4);
		lo ^= c;
		c = t[7][lo & 0xff] ^ t[6][(lo >> 8) & 0xff] ^ t[5][(lo >> 16) & 0xff] ^
		    t[4][lo >> 24] ^ t[3][hi & 0xff] ^ t[2][(hi >> 8) & 0xff] ^
		    t[1][(hi >> 16) & 0xff] ^ t[0][hi >> 24];
		p += 8;
		len -= 8;
	}
#endif
	while (len--)
		c = (c >> 8) ^ t[0][(c ^ *p++) & 0xff];
	return c ^ 0xFFFFFFFFu;
}

} // namespace alt

#endif /* ALT_SIGNATURE_CRC32_H */
