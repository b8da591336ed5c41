/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * Where the TCP framing layer puts audio bytes: runs of one encoding,
 * gathered in a fixed buffer and handed to the anchoring step when the
 * encoding changes, the buffer fills or the event ends. Raw spans go
 * straight through without a copy. Splitting a run changes nothing
 * downstream: anchoring depends on stream positions only.
 */
#ifndef ALT_SIGNATURE_AUDIO_SINK_H
#define ALT_SIGNATURE_AUDIO_SINK_H

#include <cstddef>
#include <cstdint>

namespace alt {

struct AudioSink {
	typedef void (*FlushFn)(void *ctx, const uint8_t *d, size_t n, uint8_t enc);

	uint8_t *buf;
	size_t cap;
	size_t len;
	uint8_t enc;
	FlushFn fn;
	void *ctx;

	void flush()
	{
		if (len)
			fn(ctx, buf, len, enc);
		len = 0;
	}

	void put(uint8_t e, uint8_t b)
	{
		if (e != enc || len == cap) {
			flush();
			enc = e;
		}
		buf[len++] = b;
	}

	/* Bytes already in memory: no copy. */
	void put_span(uint8_t e, const uint8_t *p, size_t n)
	{
		if (!n)
			return;
		flush();
		enc = e;
		fn(ctx, p, n, e);
	}

	/* Contiguous room for up to want bytes of encoding e; commit() what was written. */
	uint8_t *reserve(uint8_t e, size_t want, size_t *got)
	{
		if (e != enc || len == cap) {
			flush();
			enc = e;
		}
		*got = want < cap - len ? want : cap - len;
		return buf + len;
	}

	void commit(size_t n) { len += n; }
};

} // namespace alt

#endif /* ALT_SIGNATURE_AUDIO_SINK_H */
