// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
#include "errors.h"

#include <bpf/libbpf.h>
#include <cstdarg>
#include <cstdio>
#include <cstring>
#include <mutex>
#include <string>

namespace alt {

namespace {

/* Enough for the end of a verifier log, where the rejection is explained. */
constexpr size_t kMaxLogTail = 8192;
/* Bounds memory if something logs in a loop while capturing. */
constexpr size_t kMaxCapture = 1 << 20;

thread_local LibbpfLog *active_capture = nullptr;
std::once_flag print_installed;

/*
 * Never stderr: the agent logs JSON on stdout, and libbpf warns about
 * things we expect (probing a hook without clsact: "Parent Qdisc doesn't
 * exists"; an existing qdisc). Inside a LibbpfLog the text is kept and
 * reaches the user only if that operation fails, as the error's detail;
 * outside one nothing fails on it, so there is nothing to say.
 */
int print_fn(enum libbpf_print_level level, const char *fmt, va_list args)
{
	if (level == LIBBPF_DEBUG || !active_capture)
		return 0;

	/* One message can be a whole verifier log: size it first. */
	va_list copy;
	va_copy(copy, args);
	int n = vsnprintf(nullptr, 0, fmt, copy);
	va_end(copy);
	if (n <= 0)
		return n;
	std::string line(n + 1, '\0');
	vsnprintf(line.data(), line.size(), fmt, args);
	active_capture->append(line.data(), n);
	return n;
}

} // namespace

SysError::SysError(std::string op, int err, std::string detail)
	: std::runtime_error(op + ": " + strerror(err < 0 ? -err : err)), op_(std::move(op)),
	  err_(err < 0 ? -err : err), detail_(std::move(detail))
{
}

void throw_sys(const std::string &op, int err, std::string detail)
{
	throw SysError(op, err, std::move(detail));
}

void install_libbpf_print()
{
	std::call_once(print_installed, [] { libbpf_set_print(print_fn); });
}

LibbpfLog::LibbpfLog() : prev_(active_capture)
{
	install_libbpf_print();
	active_capture = this;
}

LibbpfLog::~LibbpfLog()
{
	active_capture = prev_;
}

void LibbpfLog::append(const char *s, size_t n)
{
	if (buf_.size() + n <= kMaxCapture)
		buf_.append(s, n);
}

std::string LibbpfLog::text() const
{
	if (buf_.size() <= kMaxLogTail)
		return buf_;
	size_t from = buf_.size() - kMaxLogTail;
	size_t nl = buf_.find('\n', from);
	return "...\n" + buf_.substr(nl == std::string::npos ? from : nl + 1);
}

} // namespace alt
