/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * Content-defined audio signatures (docs/signatures.md), the production
 * path: one engine per ring-buffer thread. Streams are keyed by flow and
 * observation point; each consumed byte advances a Gear hash whose top
 * bits pick anchors; the W bytes after an anchor are gated for silence
 * and hashed. src/signature/ is the TypeScript reference it must match.
 */
#ifndef ALT_SIGNATURE_ENGINE_H
#define ALT_SIGNATURE_ENGINE_H

#include <linux/types.h>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

#include "../../bpf/audio_event.h"

namespace alt {

enum class Algorithm : uint8_t { XxHash = 0, Crc32 = 1, RollingHash = 2 };

struct EngineConfig {
	Algorithm algorithm;
	uint32_t window_size;       // SIGNATURE_WINDOW_SIZE, 32..4096
	uint32_t silence_threshold; // SILENCE_THRESHOLD
	uint32_t max_streams;       // MAX_FLOWS
	uint64_t stream_timeout_ns; // FLOW_TIMEOUT_MS * 1e6
};

struct EngineStats {
	uint64_t streams_active, streams_created, streams_evicted, streams_expired;
	uint64_t bytes, windows, windows_silent, signatures, anchors_dropped;
	/* TCP: restarts after a gap (AEV_F_GAP or an unexpected sequence number),
	 * streams dropped after AEV_F_STREAM_END */
	uint64_t stream_restarts, streams_ended;
};

class SignatureEngine {
public:
	// Out-of-range window sizes are clamped to 32..4096, max_streams to >= 1.
	explicit SignatureEngine(const EngineConfig &cfg);
	~SignatureEngine();
	SignatureEngine(const SignatureEngine &) = delete;
	SignatureEngine &operator=(const SignatureEngine &) = delete;

	// ev: one ring-buffer event (header + captured_len bytes of data, len = bytes available).
	// Appends 0..n records to out (caller reuses the vector: no per-event allocation once warm).
	void ingest(const struct audio_event *ev, size_t len, std::vector<struct sig_record> &out);
	void expire(uint64_t now_ns); // drop streams idle longer than the timeout
	EngineStats stats() const;

	struct Impl; /* public so engine.cc's helpers can name it; opaque elsewhere */

private:
	std::unique_ptr<Impl> impl_;
};

} // namespace alt

#endif /* ALT_SIGNATURE_ENGINE_H */
