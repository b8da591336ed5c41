// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
#include "attach.h"

#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <cerrno>
#include <cstring>
#include <linux/netlink.h>
#include <linux/pkt_sched.h>
#include <linux/rtnetlink.h>
#include <net/if.h>
#include <sys/socket.h>
#include <unistd.h>

#include "errors.h"
#include "loader.h"

namespace alt {

namespace {

/* Not in the uapi headers of libbpf 1.1's era (Linux 6.6). */
constexpr int kBpfTcxIngress = 46;
constexpr int kBpfTcxEgress = 47;
constexpr uint32_t kBpfFBefore = 1U << 3; /* prepend: see packets before others decide */
constexpr int kEnotsupp = 524;		  /* kernel-internal ENOTSUPP */

const enum bpf_tc_attach_point kTcPoints[2] = {BPF_TC_INGRESS, BPF_TC_EGRESS};
const uint32_t kClsactParents[2] = {TC_H_MAKE(TC_H_CLSACT, TC_H_MIN_INGRESS),
				    TC_H_MAKE(TC_H_CLSACT, TC_H_MIN_EGRESS)};
const char *const kDirNames[2] = {"ingress", "egress"};

struct bpf_tc_hook tc_hook(int ifindex, enum bpf_tc_attach_point point)
{
	struct bpf_tc_hook h = {};

	h.sz = sizeof(h);
	h.ifindex = ifindex;
	h.attach_point = point;
	return h;
}

struct bpf_tc_opts tc_position()
{
	struct bpf_tc_opts o = {};

	o.sz = sizeof(o);
	o.handle = kTcHandle;
	o.priority = kTcPriority;
	return o;
}

/* Program id of the filter at our position, 0 if none (no filter, no
 * clsact, no interface). */
uint32_t filter_at_our_position(int ifindex, int dir)
{
	struct bpf_tc_hook h = tc_hook(ifindex, kTcPoints[dir]);
	struct bpf_tc_opts o = tc_position();

	return bpf_tc_query(&h, &o) ? 0 : o.prog_id;
}

bool is_ours_by_name(uint32_t prog_id)
{
	struct bpf_prog_info info = {};
	__u32 len = sizeof(info);
	int fd = bpf_prog_get_fd_by_id(prog_id);
	bool ours = false;

	if (fd < 0)
		return false;
	if (!bpf_obj_get_info_by_fd(fd, &info, &len))
		ours = !strcmp(info.name, kProgNames[static_cast<int>(Prog::Ingress)]) ||
		       !strcmp(info.name, kProgNames[static_cast<int>(Prog::Egress)]);
	close(fd);
	return ours;
}

/* Filters on one clsact hook, by an RTM_GETTFILTER dump (libbpf can query
 * only a known handle/priority). -errno on failure. */
int count_tc_filters(int ifindex, uint32_t parent)
{
	struct {
		struct nlmsghdr nh;
		struct tcmsg tc;
	} req = {};
	std::vector<char> buf(64 * 1024);
	int fd = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_ROUTE);
	int count = 0, err = 0;
	bool done = false;

	if (fd < 0)
		return -errno;
	req.nh.nlmsg_len = NLMSG_LENGTH(sizeof(req.tc));
	req.nh.nlmsg_type = RTM_GETTFILTER;
	req.nh.nlmsg_flags = NLM_F_REQUEST | NLM_F_DUMP;
	req.nh.nlmsg_seq = 1;
	req.tc.tcm_family = AF_UNSPEC;
	req.tc.tcm_ifindex = ifindex;
	req.tc.tcm_parent = parent;
	if (send(fd, &req, req.nh.nlmsg_len, 0) < 0)
		done = true, err = -errno;
	while (!done) {
		ssize_t n = recv(fd, buf.data(), buf.size(), 0);

		if (n < 0) {
			if (errno == EINTR)
				continue;
			err = -errno;
			break;
		}
		if (n == 0)
			break;
		for (struct nlmsghdr *nh = reinterpret_cast<struct nlmsghdr *>(buf.data());
		     NLMSG_OK(nh, static_cast<unsigned int>(n)); nh = NLMSG_NEXT(nh, n)) {
			if (nh->nlmsg_type == NLMSG_DONE) {
				done = true;
				break;
			}
			if (nh->nlmsg_type == NLMSG_ERROR) {
				err = static_cast<struct nlmsgerr *>(NLMSG_DATA(nh))->error;
				done = true;
				break;
			}
			if (nh->nlmsg_type == RTM_NEWTFILTER)
				count++;
		}
	}
	close(fd);
	return err ? err : count;
}

int interface_index(const std::string &name)
{
	unsigned int ifindex = if_nametoindex(name.c_str());

	if (!ifindex)
		throw_sys("find interface " + name, errno);
	return static_cast<int>(ifindex);
}

bool tcx_unsupported(int err)
{
	return err == -EINVAL || err == -EOPNOTSUPP || err == -kEnotsupp;
}

} // namespace

Attacher::Attacher(const int prog_fd[2], const uint32_t prog_id[2])
	: prog_fd_{prog_fd[0], prog_fd[1]}, prog_id_{prog_id[0], prog_id[1]}
{
}

Attacher::~Attacher()
{
	detach_all();
}

const Attachment &Attacher::attach(const std::string &name, AttachMode mode)
{
	/* libbpf reports e.g. an existing qdisc as a warning: keep it for errors. */
	LibbpfLog log;

	for (const Attachment &a : attached_)
		if (a.name == name)
			return a;

	Attachment a = {interface_index(name), name, false, {-1, -1}, false};

	if (mode != AttachMode::Tc) {
		int err = try_tcx(a);

		if (!err) {
			attached_.push_back(a);
			return attached_.back();
		}
		if (mode == AttachMode::Tcx || !tcx_unsupported(err))
			throw_sys("attach TCX on " + name, err, log.text());
	}
	attach_tc(a, log);
	attached_.push_back(a);
	return attached_.back();
}

int Attacher::try_tcx(Attachment &a)
{
	const int types[2] = {kBpfTcxIngress, kBpfTcxEgress};

	for (int dir = 0; dir < 2; dir++) {
		struct bpf_link_create_opts o = {};

		o.sz = sizeof(o);
		o.flags = kBpfFBefore;
		a.link_fd[dir] = bpf_link_create(prog_fd_[dir], a.ifindex,
						 static_cast<enum bpf_attach_type>(types[dir]), &o);
		if (a.link_fd[dir] < 0) {
			int err = a.link_fd[dir];

			a.link_fd[dir] = -1;
			if (dir) {
				close(a.link_fd[0]);
				a.link_fd[0] = -1;
			}
			return err;
		}
	}
	a.tcx = true;
	return 0;
}

void Attacher::attach_tc(Attachment &a, const LibbpfLog &log)
{
	struct bpf_tc_hook h = tc_hook(a.ifindex, BPF_TC_INGRESS);
	int err = bpf_tc_hook_create(&h); /* the clsact qdisc serves both hooks */

	if (err && err != -EEXIST)
		throw_sys("create clsact qdisc on " + a.name, err, log.text());
	a.created_qdisc = !err;
	for (int dir = 0; dir < 2; dir++) {
		struct bpf_tc_opts o = tc_position();

		h = tc_hook(a.ifindex, kTcPoints[dir]);
		o.prog_fd = prog_fd_[dir];
		err = bpf_tc_attach(&h, &o);
		if (err == -EEXIST) {
			/* Our position is taken: by a crashed instance of ours we
			 * replace it, anything else we leave alone. */
			uint32_t id = filter_at_our_position(a.ifindex, dir);

			if (id && is_ours_by_name(id)) {
				o = tc_position();
				o.prog_fd = prog_fd_[dir];
				o.flags = BPF_TC_F_REPLACE;
				err = bpf_tc_attach(&h, &o);
			}
		}
		if (err) {
			detach_tc(a);
			throw_sys(std::string("attach tc ") + kDirNames[dir] + " filter on " + a.name,
				  err, log.text());
		}
	}
}

void Attacher::detach(const std::string &name)
{
	LibbpfLog log; /* failures here are tolerated: keep libbpf quiet */

	for (auto it = attached_.begin(); it != attached_.end(); ++it) {
		if (it->name == name) {
			detach_one(*it);
			attached_.erase(it);
			return;
		}
	}
}

void Attacher::detach_all() noexcept
{
	LibbpfLog log;

	for (Attachment &a : attached_)
		detach_one(a);
	attached_.clear();
}

void Attacher::detach_one(Attachment &a) noexcept
{
	if (!a.tcx) {
		detach_tc(a);
		return;
	}
	/* Closing the link detaches; a vanished interface took it already. */
	for (int &fd : a.link_fd) {
		if (fd >= 0)
			close(fd);
		fd = -1;
	}
}

void Attacher::detach_tc(Attachment &a) noexcept
{
	for (int dir = 0; dir < 2; dir++) {
		/* Only if the filter there is still the one we attached. */
		if (filter_at_our_position(a.ifindex, dir) != prog_id_[dir])
			continue;
		struct bpf_tc_hook h = tc_hook(a.ifindex, kTcPoints[dir]);
		struct bpf_tc_opts o = tc_position();

		bpf_tc_detach(&h, &o);
	}
	if (a.created_qdisc && count_tc_filters(a.ifindex, kClsactParents[0]) == 0 &&
	    count_tc_filters(a.ifindex, kClsactParents[1]) == 0) {
		struct bpf_tc_hook h =
			tc_hook(a.ifindex, static_cast<enum bpf_tc_attach_point>(BPF_TC_INGRESS |
										  BPF_TC_EGRESS));

		bpf_tc_hook_destroy(&h);
	}
	a.created_qdisc = false;
}

int Attacher::remove_stale(const std::string &name)
{
	LibbpfLog log;
	int ifindex = interface_index(name);
	int removed = 0;

	for (int dir = 0; dir < 2; dir++) {
		uint32_t id = filter_at_our_position(ifindex, dir);

		if (!id || id == prog_id_[dir] || !is_ours_by_name(id))
			continue;
		struct bpf_tc_hook h = tc_hook(ifindex, kTcPoints[dir]);
		struct bpf_tc_opts o = tc_position();
		int err = bpf_tc_detach(&h, &o);

		if (err && err != -ENOENT)
			throw_sys(std::string("remove stale tc ") + kDirNames[dir] + " filter on " +
					  name,
				  err, log.text());
		removed += !err;
	}
	return removed;
}

} // namespace alt
