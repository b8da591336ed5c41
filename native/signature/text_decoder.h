/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * Audio carried as text (docs/tcp-streams.md, "Text decoder"): maximal
 * runs of base64 or hex characters decoded back to bytes as they stream;
 * runs shorter than kMinTextRun characters (JSON keys, numbers, UUIDs,
 * timestamps) yield nothing. Bounded: the first kMinTextRun characters
 * of a run are held until it is long enough. Twin of
 * src/signature/text-decoder.ts.
 */
#ifndef ALT_SIGNATURE_TEXT_DECODER_H
#define ALT_SIGNATURE_TEXT_DECODER_H

#include <array>
#include <cstdint>

#include "../../bpf/audio_event.h"
#include "audio_sink.h"

namespace alt {

constexpr uint32_t kMinTextRun = 64;

constexpr std::array<int8_t, 256> make_base64_table()
{
	std::array<int8_t, 256> t{};

	for (unsigned i = 0; i < 256; i++)
		t[i] = -1;
	for (int i = 0; i < 26; i++) {
		t['A' + i] = (int8_t)i;
		t['a' + i] = (int8_t)(26 + i);
	}
	for (int i = 0; i < 10; i++)
		t['0' + i] = (int8_t)(52 + i);
	t['+'] = 62;
	t['/'] = 63;
	return t;
}

constexpr std::array<int8_t, 256> make_hex_table()
{
	std::array<int8_t, 256> t{};

	for (unsigned i = 0; i < 256; i++)
		t[i] = -1;
	for (int i = 0; i < 10; i++)
		t['0' + i] = (int8_t)i;
	for (int i = 0; i < 6; i++) {
		t['a' + i] = (int8_t)(10 + i);
		t['A' + i] = (int8_t)(10 + i);
	}
	return t;
}

inline constexpr std::array<int8_t, 256> kBase64Value = make_base64_table();
inline constexpr std::array<int8_t, 256> kHexValue = make_hex_table();

class TextAudioDecoder {
public:
	void reset()
	{
		kind_ = kNone;
		held_len_ = 0;
		backslash_ = false;
		acc_ = 0;
		chars_ = 0;
	}

	/* Bytes are missing: a run in progress can not be decoded in phase. */
	void gap()
	{
		bool in_run = kind_ != kNone;

		reset();
		if (in_run)
			kind_ = kSkip;
	}

	/* The text ends (end of an HTTP body): a run in progress ends, its last quad flushed. */
	void end(AudioSink &out)
	{
		backslash_ = false;
		end_run(out);
	}

	void push(uint8_t c, AudioSink &out)
	{
		if (backslash_) {
			backslash_ = false;
			/* JSON's escaped slash "\/": the backslash is not part of the run. */
			if (c == '/') {
				run_char(c, out);
				return;
			}
			end_run(out);
		}
		if (c == '\\')
			backslash_ = true;
		else if (kBase64Value[c] >= 0)
			run_char(c, out);
		else
			end_run(out);
	}

private:
	enum : uint8_t { kNone, kPending, kHex, kBase64, kSkip };

	static void emit(AudioSink &out, uint32_t b) { out.put(AEV_ENC_OPAQUE, (uint8_t)b); }

	void run_char(uint8_t c, AudioSink &out)
	{
		if (kind_ == kNone) {
			kind_ = kPending;
			held_len_ = 0;
			all_hex_ = true;
			digit_ = false;
		}
		switch (kind_) {
		case kSkip:
			return;
		case kPending:
			hold(c, out);
			return;
		case kHex:
			if (kHexValue[c] < 0) {
				/* A hex run ends at the first other character, which may begin a run. */
				end_run(out);
				run_char(c, out);
				return;
			}
			hex(c, out);
			return;
		default:
			base64(c, out);
		}
	}

	void hold(uint8_t c, AudioSink &out)
	{
		held_[held_len_++] = c;
		if (kHexValue[c] < 0)
			all_hex_ = false;
		else if (c <= '9')
			digit_ = true;
		if (held_len_ < kMinTextRun)
			return;
		/* Hex needs a digit: base64 of silence ("AAAA...") is all hex letters. */
		kind_ = all_hex_ && digit_ ? kHex : kBase64;
		acc_ = 0;
		chars_ = 0;
		for (uint32_t i = 0; i < kMinTextRun; i++) {
			if (kind_ == kHex)
				hex(held_[i], out);
			else
				base64(held_[i], out);
		}
	}

	void hex(uint8_t c, AudioSink &out)
	{
		if (chars_ == 0) {
			acc_ = (uint32_t)kHexValue[c];
			chars_ = 1;
		} else {
			emit(out, (acc_ << 4) | (uint32_t)kHexValue[c]);
			chars_ = 0;
		}
	}

	void base64(uint8_t c, AudioSink &out)
	{
		acc_ = (acc_ << 6) | (uint32_t)kBase64Value[c];
		if (++chars_ < 4)
			return;
		emit(out, (acc_ >> 16) & 0xff);
		emit(out, (acc_ >> 8) & 0xff);
		emit(out, acc_ & 0xff);
		acc_ = 0;
		chars_ = 0;
	}

	void end_run(AudioSink &out)
	{
		if (kind_ == kBase64) {
			/* An unpadded or '='-padded tail: 2 characters hold 1 byte, 3 hold 2. */
			if (chars_ == 2) {
				emit(out, (acc_ >> 4) & 0xff);
			} else if (chars_ == 3) {
				emit(out, (acc_ >> 10) & 0xff);
				emit(out, (acc_ >> 2) & 0xff);
			}
		}
		kind_ = kNone;
		held_len_ = 0;
		acc_ = 0;
		chars_ = 0;
	}

	uint8_t kind_ = kNone;
	bool all_hex_ = true;
	bool digit_ = false;
	bool backslash_ = false;
	uint32_t held_len_ = 0;
	uint32_t acc_ = 0;
	uint32_t chars_ = 0;
	uint8_t held_[kMinTextRun];
};

} // namespace alt

#endif /* ALT_SIGNATURE_TEXT_DECODER_H */
