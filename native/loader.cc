// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
#include "loader.h"

#include <bpf/bpf.h>
#include <bpf/btf.h>
#include <bpf/libbpf.h>
#include <cerrno>
#include <cstring>
#include <unistd.h>
#include <vector>

#include "errors.h"

namespace alt {

const char *const kProgNames[kProgCount] = {"tc_ingress", "tc_egress", "tc_empty"};

namespace {

/* Must match struct aev_stats in bpf/audio_tc.bpf.c: one entry, all counters. */
struct KernelStats {
	uint64_t count[AEV_STAT_MAX];
};

uint32_t ring_size(uint32_t pages)
{
	uint64_t want = static_cast<uint64_t>(pages ? pages : 1) * 4096;
	uint64_t page = static_cast<uint64_t>(sysconf(_SC_PAGESIZE));
	uint64_t size = page;

	/* The kernel wants a power of two and a multiple of the page size. */
	while (size < want)
		size <<= 1;
	if (size > (1ULL << 30))
		throw_sys("ring buffer size " + std::to_string(want) + " bytes", E2BIG);
	return static_cast<uint32_t>(size);
}

uint32_t prog_id_of(int fd)
{
	struct bpf_prog_info info = {};
	__u32 len = sizeof(info);
	int err = bpf_obj_get_info_by_fd(fd, &info, &len);

	if (err)
		throw_sys("bpf_obj_get_info_by_fd", err);
	return info.id;
}

/* Sets a `const volatile` global of the object before load, found by name
 * through the object's BTF (its offset in .rodata is the compiler's choice). */
void set_rodata_u64(struct bpf_object *obj, const char *var, uint64_t value)
{
	struct bpf_map *rodata = bpf_object__find_map_by_name(obj, ".rodata");
	const struct btf *btf = bpf_object__btf(obj);
	int sec_id = btf ? btf__find_by_name_kind(btf, ".rodata", BTF_KIND_DATASEC) : -ENOENT;
	size_t size = 0;
	const char *init =
		rodata ? static_cast<const char *>(bpf_map__initial_value(rodata, &size)) : nullptr;

	if (sec_id < 0 || !init)
		throw_sys(std::string("find .rodata for ") + var, ENOENT);
	const struct btf_type *sec = btf__type_by_id(btf, sec_id);
	const struct btf_var_secinfo *vs = btf_var_secinfos(sec);

	for (int i = 0; i < btf_vlen(sec); i++, vs++) {
		const struct btf_type *t = btf__type_by_id(btf, vs->type);

		if (strcmp(btf__name_by_offset(btf, t->name_off), var))
			continue;
		if (vs->size != sizeof(value) || vs->offset + sizeof(value) > size)
			throw_sys(std::string("set ") + var, EINVAL);
		std::vector<char> data(init, init + size);
		memcpy(data.data() + vs->offset, &value, sizeof(value));
		int err = bpf_map__set_initial_value(rodata, data.data(), size);
		if (err)
			throw_sys(std::string("set ") + var, err);
		return;
	}
	throw_sys(std::string("find variable ") + var, ENOENT);
}

void set_max_entries(struct bpf_object *obj, const char *name, uint32_t entries)
{
	struct bpf_map *map = bpf_object__find_map_by_name(obj, name);
	int err;

	if (!map)
		throw_sys(std::string("find map ") + name, ENOENT);
	if (!entries)
		throw_sys(std::string("size map ") + name + " to 0 entries", EINVAL);
	err = bpf_map__set_max_entries(map, entries);
	if (err)
		throw_sys(std::string("size map ") + name + " to " + std::to_string(entries) +
				  " entries",
			  err);
}

int map_fd(struct bpf_object *obj, const char *name)
{
	int fd = bpf_object__find_map_fd_by_name(obj, name);

	if (fd < 0)
		throw_sys(std::string("find map ") + name, fd);
	return fd;
}

} // namespace

BpfClassifier::BpfClassifier(const LoadOptions &opts)
{
	LibbpfLog log;

	obj_ = bpf_object__open_file(opts.object_path.c_str(), nullptr);
	if (!obj_) {
		int err = errno;

		throw_sys("open " + opts.object_path, err, log.text());
	}
	try {
		struct bpf_map *events = bpf_object__find_map_by_name(obj_, "events");
		int err;

		if (!events)
			throw_sys("find map events", ENOENT);
		ring_bytes_ = ring_size(opts.ring_pages);
		err = bpf_map__set_max_entries(events, ring_bytes_);
		if (err)
			throw_sys("set ring buffer size", err);
		set_rodata_u64(obj_, "wakeup_bytes", ring_bytes_ / 4);
		set_rodata_u64(obj_, "flow_timeout_ns", opts.flow_timeout_ms * 1000000ULL);
		set_max_entries(obj_, "rtp_flows", opts.max_flows);
		set_max_entries(obj_, "tcp_flows", opts.max_flows);
		err = bpf_object__load(obj_);
		if (err)
			throw_sys("load " + opts.object_path, err, log.text());
		for (int i = 0; i < kProgCount; i++) {
			struct bpf_program *p = bpf_object__find_program_by_name(obj_, kProgNames[i]);

			if (!p)
				throw_sys(std::string("find program ") + kProgNames[i], ENOENT);
			prog_fd_[i] = bpf_program__fd(p);
			prog_id_[i] = prog_id_of(prog_fd_[i]);
		}
		events_fd_ = map_fd(obj_, "events");
		stats_fd_ = map_fd(obj_, "stats");
		tcp_flows_fd_ = map_fd(obj_, "tcp_flows");
		ncpus_ = libbpf_num_possible_cpus();
		if (ncpus_ <= 0)
			throw_sys("libbpf_num_possible_cpus", ncpus_ ? ncpus_ : EINVAL);
		fill_maps(opts);
	} catch (...) {
		bpf_object__close(obj_);
		throw;
	}
	/* Run-time statistics for stats().progs: held for our lifetime, and
	 * optional (needs CAP_SYS_ADMIN; the classifier works without). */
	if (opts.run_stats)
		stats_enable_fd_ = bpf_enable_stats(BPF_STATS_RUN_TIME);
}

BpfClassifier::~BpfClassifier()
{
	if (stats_enable_fd_ >= 0)
		close(stats_enable_fd_);
	bpf_object__close(obj_);
}

void BpfClassifier::fill_maps(const LoadOptions &opts)
{
	struct aev_config cfg = {};
	__u32 key = 0;
	int fd = map_fd(obj_, "config");
	int err;

	cfg.all_ports = opts.all_ports ? 1 : 0;
	err = bpf_map_update_elem(fd, &key, &cfg, BPF_ANY);
	if (err)
		throw_sys("fill config map", err);
	fd = map_fd(obj_, "ports");
	/* The array starts zeroed: only set words need writing. */
	for (key = 0; key < PORT_MAP_WORDS; key++) {
		if (!opts.port_words[key])
			continue;
		err = bpf_map_update_elem(fd, &key, &opts.port_words[key], BPF_ANY);
		if (err)
			throw_sys("fill ports map", err);
	}
}

void BpfClassifier::kernel_stats(uint64_t *out) const
{
	std::vector<KernelStats> per_cpu(ncpus_);
	__u32 key = 0;
	int err = bpf_map_lookup_elem(stats_fd_, &key, per_cpu.data());

	if (err)
		throw_sys("read stats map", err);
	for (int s = 0; s < AEV_STAT_MAX; s++) {
		out[s] = 0;
		for (const KernelStats &c : per_cpu)
			out[s] += c.count[s];
	}
}

ProgRunStats BpfClassifier::run_stats() const
{
	ProgRunStats total = {0, 0};

	for (Prog p : {Prog::Ingress, Prog::Egress}) {
		struct bpf_prog_info info = {};
		__u32 len = sizeof(info);
		int err = bpf_obj_get_info_by_fd(prog_fd(p), &info, &len);

		if (err)
			throw_sys("bpf_obj_get_info_by_fd", err);
		total.run_time_ns += info.run_time_ns;
		total.run_cnt += info.run_cnt;
	}
	return total;
}

TestRunResult BpfClassifier::test_run(Prog p, const uint8_t *pkt, size_t len,
				      uint32_t repeat) const
{
	struct bpf_test_run_opts o = {};
	int err;

	o.sz = sizeof(o);
	o.data_in = pkt;
	o.data_size_in = static_cast<__u32>(len);
	o.repeat = repeat;
	err = bpf_prog_test_run_opts(prog_fd(p), &o);
	if (err)
		throw_sys(std::string("test run ") + kProgNames[static_cast<int>(p)], err);
	return {static_cast<int32_t>(o.retval), o.duration};
}

std::vector<TcpFlowEntry> BpfClassifier::tcp_flows() const
{
	std::vector<TcpFlowEntry> out;
	struct aev_tcp_key key, next;
	const void *prev = nullptr;
	int err;

	/* Entries may come and go while we walk (the programs run): the walk is
	 * a snapshot of no single instant, which diagnostics can live with. */
	while ((err = bpf_map_get_next_key(tcp_flows_fd_, prev, &next)) == 0) {
		TcpFlowEntry e;

		e.key = next;
		if (bpf_map_lookup_elem(tcp_flows_fd_, &next, &e.value) == 0)
			out.push_back(e);
		key = next;
		prev = &key;
	}
	if (err != -ENOENT)
		throw_sys("walk tcp_flows map", err);
	return out;
}

} // namespace alt
