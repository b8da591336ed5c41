/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * The classifier's BPF object: open, size the ring buffer and the RTP and
 * TCP state maps, set the flow timeout, load (verify), fill the config and
 * ports maps. Also what is read from the loaded
 * programs: statistics, BPF_PROG_TEST_RUN.
 */
#ifndef ALT_LOADER_H
#define ALT_LOADER_H

#include <linux/types.h>
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "../bpf/audio_event.h"

struct bpf_object;

namespace alt {

enum class Prog { Ingress = 0, Egress = 1, Empty = 2 };
constexpr int kProgCount = 3;

/* The kernel's names for our programs (BPF_OBJ_NAME_LEN-safe): how stale
 * filters left by an earlier instance are recognised. */
extern const char *const kProgNames[kProgCount];

struct LoadOptions {
	std::string object_path;
	uint32_t ring_pages;	    // rounded up to a power-of-two byte size
	bool all_ports;
	const uint64_t *port_words; // PORT_MAP_WORDS words
	uint32_t max_flows;	    // MAX_FLOWS: entries of the RTP and TCP state maps, at least 1
	uint32_t flow_timeout_ms;   // FLOW_TIMEOUT_MS: a TCP stream idle longer starts again
	bool run_stats;		    // hold BPF_ENABLE_STATS (costs every BPF program two clock reads)
};

struct TestRunResult {
	int32_t retval;
	uint32_t duration_ns; // per run, averaged by the kernel over `repeat`
};

/* One entry of the tcp_flows map, as the kernel holds it. */
struct TcpFlowEntry {
	struct aev_tcp_key key;
	struct aev_tcp_flow value;
};

struct ProgRunStats {
	uint64_t run_time_ns;
	uint64_t run_cnt;
};

class BpfClassifier {
public:
	explicit BpfClassifier(const LoadOptions &opts); // throws SysError
	~BpfClassifier();
	BpfClassifier(const BpfClassifier &) = delete;
	BpfClassifier &operator=(const BpfClassifier &) = delete;

	int prog_fd(Prog p) const { return prog_fd_[static_cast<int>(p)]; }
	uint32_t prog_id(Prog p) const { return prog_id_[static_cast<int>(p)]; }
	int events_fd() const { return events_fd_; }
	uint32_t ring_bytes() const { return ring_bytes_; }

	// Sums the per-CPU counters into out[AEV_STAT_MAX].
	void kernel_stats(uint64_t *out) const;
	// tc_ingress + tc_egress; zero unless BPF stats could be enabled.
	ProgRunStats run_stats() const;
	TestRunResult test_run(Prog p, const uint8_t *pkt, size_t len, uint32_t repeat) const;
	// Every TCP stream state (diagnostics and tests: walks the whole map).
	std::vector<TcpFlowEntry> tcp_flows() const;

private:
	void fill_maps(const LoadOptions &opts);

	struct bpf_object *obj_ = nullptr;
	int prog_fd_[kProgCount] = {-1, -1, -1};
	uint32_t prog_id_[kProgCount] = {0, 0, 0};
	int events_fd_ = -1;
	int stats_fd_ = -1;
	int tcp_flows_fd_ = -1;
	int stats_enable_fd_ = -1;
	uint32_t ring_bytes_ = 0;
	int ncpus_ = 0;
};

} // namespace alt

#endif /* ALT_LOADER_H */
