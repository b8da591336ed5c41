/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * HTTP/1.x on a TCP stream: the head is skipped, remembering what decides
 * the body (WebSocket upgrade, status, Content-Type, Content-Length,
 * chunked); chunked bodies are de-chunked. Bounded: the first
 * kHttpLineKeep characters of the current line. Twin of src/signature/http.ts.
 */
#ifndef ALT_SIGNATURE_HTTP_H
#define ALT_SIGNATURE_HTTP_H

#include <cstddef>
#include <cstdint>
#include <cstring>

namespace alt {

constexpr uint32_t kHttpLineKeep = 64;
constexpr uint32_t kHttpMaxHead = 16384;

/* -1: no HTTP start has prefix p[0..n); 0: one might; 1: one does. */
static inline int http_start_match(const uint8_t *p, size_t n)
{
	static const char *const starts[] = { "GET ",  "POST ", "PUT ",	    "PATCH ",
					      "DELETE ", "HEAD ", "OPTIONS ", "HTTP/1." };
	bool possible = false;

	for (const char *s : starts) {
		size_t len = strlen(s);
		size_t k = n < len ? n : len;

		if (memcmp(p, s, k))
			continue;
		if (n >= len)
			return 1;
		possible = true;
	}
	return possible ? 0 : -1;
}

class HttpHead {
public:
	bool request = false;
	uint32_t status = 0;
	bool upgrade_websocket = false;
	bool chunked = false;
	int64_t content_length = -1;
	bool body_raw = false;

	void reset()
	{
		request = false;
		status = 0;
		upgrade_websocket = false;
		chunked = false;
		content_length = -1;
		body_raw = false;
		line_len_ = 0;
		broken_ = false;
		lines_ = 0;
		total_ = 0;
	}

	void gap() { broken_ = true; }

	/* 1: the head ended with this byte; 0: more head; -1: too long to be a head. */
	int push(uint8_t c)
	{
		if (++total_ > kHttpMaxHead)
			return -1;
		if (c == '\r')
			return 0;
		if (c != '\n') {
			if (line_len_ < kHttpLineKeep)
				line_[line_len_] = (c >= 'A' && c <= 'Z') ? (uint8_t)(c + 0x20) : c;
			line_len_++;
			return 0;
		}
		uint32_t len = line_len_;
		bool broken = broken_;

		line_len_ = 0;
		broken_ = false;
		if (len == 0)
			return lines_ > 0 && !broken ? 1 : 0;
		if (!broken)
			header_line(len < kHttpLineKeep ? len : kHttpLineKeep);
		lines_++;
		return 0;
	}

	/* Body length: 0 none, -1 to the end of the stream (chunked aside). */
	int64_t body_length() const
	{
		if (request)
			return content_length >= 0 ? content_length : 0;
		if ((status >= 100 && status < 200) || status == 204 || status == 304)
			return 0;
		return content_length;
	}

private:
	bool starts(uint32_t from, uint32_t len, const char *s) const
	{
		size_t n = strlen(s);

		return len >= from && len - from >= n && !memcmp(line_ + from, s, n);
	}

	bool contains(uint32_t from, uint32_t len, const char *s) const
	{
		size_t n = strlen(s);

		for (uint32_t at = from; at + n <= len; at++)
			if (!memcmp(line_ + at, s, n))
				return true;
		return false;
	}

	uint32_t skip_blanks(uint32_t from, uint32_t len) const
	{
		while (from < len && (line_[from] == ' ' || line_[from] == '\t'))
			from++;
		return from;
	}

	void header_line(uint32_t len)
	{
		if (lines_ == 0) {
			request = !starts(0, len, "http/1.");
			if (!request && len >= 12) {
				bool digits = true;
				for (uint32_t i = 9; i < 12; i++)
					digits = digits && line_[i] >= '0' && line_[i] <= '9';
				if (digits)
					status = (line_[9] - '0') * 100 + (line_[10] - '0') * 10 +
						 (line_[11] - '0');
			}
			return;
		}
		if (starts(0, len, "upgrade:")) {
			if (contains(8, len, "websocket"))
				upgrade_websocket = true;
		} else if (starts(0, len, "transfer-encoding:")) {
			if (contains(18, len, "chunked"))
				chunked = true;
		} else if (starts(0, len, "content-length:")) {
			uint32_t at = skip_blanks(15, len);
			int64_t v = 0;
			uint32_t digits = 0;
			for (; at < len && line_[at] >= '0' && line_[at] <= '9' && digits < 15;
			     at++, digits++)
				v = v * 10 + (line_[at] - '0');
			if (digits)
				content_length = v;
		} else if (starts(0, len, "content-type:")) {
			uint32_t at = skip_blanks(13, len);
			body_raw = starts(at, len, "audio/") ||
				   starts(at, len, "application/octet-stream");
		}
	}

	uint8_t line_[kHttpLineKeep];
	uint32_t line_len_ = 0;
	bool broken_ = false;
	uint32_t lines_ = 0;
	uint32_t total_ = 0;
};

/* Transfer-Encoding: chunked. */
class ChunkedDecoder {
public:
	enum : int { kFraming = 0, kData = 1, kEnd = 2 };

	uint64_t remaining = 0; /* data bytes left in the current chunk */

	void reset()
	{
		state_ = kSize;
		size_ = 0;
		digits_ = 0;
		line_len_ = 0;
		remaining = 0;
	}

	bool in_data() const { return state_ == kStData; }

	/* Data bytes taken from d (n >= 1, in_data()): the caller emits them. */
	size_t take_data(size_t n)
	{
		size_t k = n < remaining ? n : (size_t)remaining;

		remaining -= k;
		if (!remaining)
			state_ = kDataEnd;
		return k;
	}

	bool gap(int64_t missing)
	{
		if (state_ == kStData && missing > 0 && (uint64_t)missing <= remaining) {
			remaining -= (uint64_t)missing;
			if (!remaining)
				state_ = kDataEnd;
			return true;
		}
		state_ = kHunt;
		return false;
	}

	/* One byte outside chunk data. */
	int push(uint8_t c)
	{
		switch (state_) {
		case kSize:
			return size_char(c);
		case kExt:
			if (c == '\n')
				return size_line_end();
			return kFraming;
		case kDataEnd:
			if (c == '\n')
				to_size();
			else if (c != '\r')
				state_ = kHunt;
			return kFraming;
		case kTrailer:
			if (c == '\n') {
				if (line_len_ == 0) {
					reset();
					return kEnd;
				}
				line_len_ = 0;
			} else if (c != '\r') {
				line_len_++;
			}
			return kFraming;
		default: /* kHunt (kStData is handled by take_data) */
			if (c == '\n')
				to_size();
			return kFraming;
		}
	}

private:
	enum : uint8_t { kSize, kExt, kStData, kDataEnd, kTrailer, kHunt };

	static int hex_digit(uint8_t c)
	{
		if (c >= '0' && c <= '9')
			return c - '0';
		if (c >= 'a' && c <= 'f')
			return c - 'a' + 10;
		if (c >= 'A' && c <= 'F')
			return c - 'A' + 10;
		return -1;
	}

	void to_size()
	{
		state_ = kSize;
		size_ = 0;
		digits_ = 0;
	}

	int size_char(uint8_t c)
	{
		int v = hex_digit(c);

		if (v >= 0 && digits_ < 8) {
			size_ = size_ * 16 + (uint64_t)v;
			digits_++;
		} else if (c == '\n') {
			return size_line_end();
		} else if (c == ';' || c == ' ' || c == '\t') {
			state_ = digits_ ? kExt : kHunt;
		} else if (c != '\r') {
			state_ = kHunt;
		}
		return kFraming;
	}

	int size_line_end()
	{
		if (!digits_) {
			to_size();
		} else if (!size_) {
			state_ = kTrailer;
			line_len_ = 0;
		} else {
			state_ = kStData;
			remaining = size_;
		}
		return kFraming;
	}

	uint8_t state_ = kSize;
	uint32_t digits_ = 0;
	uint32_t line_len_ = 0;
	uint64_t size_ = 0;
};

} // namespace alt

#endif /* ALT_SIGNATURE_HTTP_H */
