/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * The ring-buffer thread: consumes kernel events, runs the signature
 * engine on them and hands the resulting records to JavaScript in
 * batches, one thread-safe-function call per batch. Batches come from a
 * small fixed pool: when JavaScript falls behind, the thread waits for a
 * free batch, the ring buffer fills and the kernel counts the loss.
 */
#ifndef ALT_POLLER_H
#define ALT_POLLER_H

#include <napi.h>

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "signature/engine.h"

struct ring_buffer;

namespace alt {

struct PollerStats {
	EngineStats engine;
	uint64_t batches; // batches handed to JavaScript
	uint64_t records; // events consumed from the ring buffer
};

class RingPoller : public std::enable_shared_from_this<RingPoller> {
public:
	struct Batch;

	// on_raw may be empty (no raw tap). Throws SysError.
	static std::shared_ptr<RingPoller> start(Napi::Env env, int ring_fd,
						 const EngineConfig &cfg, Napi::Function on_sigs,
						 Napi::Function on_raw);
	~RingPoller();
	RingPoller(const RingPoller &) = delete;
	RingPoller &operator=(const RingPoller &) = delete;

	// JavaScript thread. Stops and joins the thread, frees the ring buffer;
	// batches still queued are dropped, pending drains resolve. Idempotent.
	void stop();
	// JavaScript thread. Resolves once every event submitted before the call
	// has been consumed and its records delivered.
	Napi::Promise drain(Napi::Env env);
	PollerStats stats() const;

private:
	RingPoller(const EngineConfig &cfg, bool raw_tap);
	void open_ring(int ring_fd);
	void run();
	static int on_event(void *ctx, void *data, size_t size);
	int ingest(const void *data, size_t size);
	bool hand_off(Batch *b);
	Batch *acquire();
	void release(Batch *b);
	void wake();
	static void call_js(Napi::Env env, Napi::Function, RingPoller *self, Batch *b);
	void deliver(Napi::Env env, Batch *b);
	void resolve_drains(Napi::Env env, uint64_t upto);
	Napi::Uint8Array view(Napi::Env env, Napi::Reference<Napi::ArrayBuffer> &ab,
			      const void *data, size_t len);

	using Tsfn = Napi::TypedThreadSafeFunction<RingPoller, Batch, call_js>;

	/* Ring-buffer thread only. */
	SignatureEngine engine_;
	Batch *cur_ = nullptr;
	uint64_t flushed_seq_ = 0;

	/* Shared. */
	const bool raw_tap_;
	struct ring_buffer *rb_ = nullptr;
	int epoll_fd_ = -1;
	int wake_fd_ = -1;
	std::thread thread_;
	std::atomic<bool> stop_{false};
	std::atomic<uint64_t> drain_requested_{0};
	std::atomic<uint64_t> batches_{0};
	std::atomic<uint64_t> records_{0};
	mutable std::mutex stats_mu_;
	EngineStats engine_stats_ = {};
	std::mutex pool_mu_;
	std::condition_variable pool_cv_;
	std::vector<std::unique_ptr<Batch>> pool_;
	std::vector<Batch *> free_;

	/* JavaScript thread only. */
	Tsfn tsfn_;
	bool stopped_ = false;
	Napi::FunctionReference on_sigs_;
	Napi::FunctionReference on_raw_;
	Napi::Reference<Napi::ArrayBuffer> sig_ab_;
	Napi::Reference<Napi::ArrayBuffer> raw_ab_;
	uint64_t drain_seq_ = 0;
	std::deque<std::pair<uint64_t, Napi::Promise::Deferred>> drains_;
};

} // namespace alt

#endif /* ALT_POLLER_H */
