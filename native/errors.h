/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * Errors of the native layer: the failed operation, its errno and any
 * libbpf output (verifier log) captured while it ran. The binding turns
 * them into JavaScript errors; src/native.ts decides what to tell the user.
 */
#ifndef ALT_ERRORS_H
#define ALT_ERRORS_H

#include <stdexcept>
#include <string>

namespace alt {

class SysError : public std::runtime_error {
public:
	// err: errno, either sign (libbpf returns -errno).
	SysError(std::string op, int err, std::string detail = {});
	const std::string &op() const { return op_; }
	int err() const { return err_; } // positive errno
	const std::string &detail() const { return detail_; }

private:
	std::string op_;
	int err_;
	std::string detail_;
};

[[noreturn]] void throw_sys(const std::string &op, int err, std::string detail = {});

/*
 * libbpf prints through one process-wide callback, installed by
 * install_libbpf_print() (idempotent; called at module load, before
 * libbpf's default could print to stderr). While a LibbpfLog is alive on
 * the calling thread, warnings and info are captured for the error text;
 * otherwise they are dropped. Nothing goes to stderr.
 */
void install_libbpf_print();

class LibbpfLog {
public:
	LibbpfLog();
	~LibbpfLog();
	LibbpfLog(const LibbpfLog &) = delete;
	LibbpfLog &operator=(const LibbpfLog &) = delete;
	// The captured text, trimmed to its tail (verifier logs end with the reason).
	std::string text() const;
	void append(const char *s, size_t n);

private:
	std::string buf_;
	LibbpfLog *prev_;
};

} // namespace alt

#endif /* ALT_ERRORS_H */
