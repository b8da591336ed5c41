/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * Attaching the classifier to an interface, ingress and egress: a TCX link
 * where the kernel has TCX (6.6+), else a direct-action filter on the
 * clsact qdisc at a fixed handle/priority. Detaching touches only what we
 * attached; stale filters of a crashed instance are found by that fixed
 * position and our program names.
 */
#ifndef ALT_ATTACH_H
#define ALT_ATTACH_H

#include <cstdint>
#include <string>
#include <vector>

namespace alt {

class LibbpfLog;

/*
 * tc fallback position, the same on both clsact hooks: handle 0xa17 ("alt")
 * at priority 0xa17 (2583). Fixed, so removeStale can find what an earlier
 * instance left (tc filters outlive their process; TCX links do not).
 * Away from priority 1, where CNIs put their own bpf filters, and below
 * tc's default 49152. Trade-off: a filter at a lower priority that returns
 * a final verdict hides packets from us; TCX avoids that by prepending.
 */
constexpr uint32_t kTcHandle = 0xa17;
constexpr uint32_t kTcPriority = 0xa17;

enum class AttachMode { Auto, Tcx, Tc };

struct Attachment {
	int ifindex;
	std::string name;
	bool tcx;
	int link_fd[2];	    // TCX links: ingress, egress
	bool created_qdisc; // tc: clsact created by us, removed by us when left empty
};

class Attacher {
public:
	// Program fds and ids of tc_ingress and tc_egress; the fds stay owned by the caller.
	Attacher(const int prog_fd[2], const uint32_t prog_id[2]);
	~Attacher();
	Attacher(const Attacher &) = delete;
	Attacher &operator=(const Attacher &) = delete;

	// Idempotent: an interface already attached returns its attachment.
	const Attachment &attach(const std::string &name, AttachMode mode); // throws SysError
	void detach(const std::string &name); // idempotent; the interface may be gone
	void detach_all() noexcept;
	const std::vector<Attachment> &list() const { return attached_; }
	// Our-named programs at our tc position on `name`, not attached by this instance.
	int remove_stale(const std::string &name); // throws SysError

private:
	int try_tcx(Attachment &a); // 0 or -errno; nothing left attached on failure
	void attach_tc(Attachment &a, const LibbpfLog &log);
	void detach_one(Attachment &a) noexcept;
	void detach_tc(Attachment &a) noexcept;

	int prog_fd_[2];
	uint32_t prog_id_[2];
	std::vector<Attachment> attached_;
};

} // namespace alt

#endif /* ALT_ATTACH_H */
