/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * G.711 expansion to 16-bit linear (ITU-T G.711, as Sun's ulaw2linear /
 * alaw2linear). G.711 silence is 0xFF / 0xD5, loud if read as PCM, so the
 * silence gate must decode first. Tables are built at compile time.
 */
#ifndef ALT_SIGNATURE_G711_H
#define ALT_SIGNATURE_G711_H

#include <array>
#include <cstdint>

namespace alt {

constexpr int16_t ulaw_to_linear(uint8_t byte)
{
	int u = (uint8_t)~byte;
	int t = ((u & 0x0f) << 3) + 0x84;

	t <<= (u & 0x70) >> 4;
	return (int16_t)((u & 0x80) ? 0x84 - t : t - 0x84);
}

constexpr int16_t alaw_to_linear(uint8_t byte)
{
	int a = byte ^ 0x55;
	int t = (a & 0x0f) << 4;
	int seg = (a & 0x70) >> 4;

	if (seg == 0)
		t += 8;
	else if (seg == 1)
		t += 0x108;
	else
		t = (t + 0x108) << (seg - 1);
	return (int16_t)((a & 0x80) ? t : -t);
}

template <int16_t (*Expand)(uint8_t)> constexpr std::array<int16_t, 256> make_g711_table()
{
	std::array<int16_t, 256> t{};

	for (unsigned i = 0; i < 256; i++)
		t[i] = Expand((uint8_t)i);
	return t;
}

inline constexpr std::array<int16_t, 256> kUlaw = make_g711_table<ulaw_to_linear>();
inline constexpr std::array<int16_t, 256> kAlaw = make_g711_table<alaw_to_linear>();

} // namespace alt

#endif /* ALT_SIGNATURE_G711_H */
