// Thin, syscall-shaped C API for io-flusher. Every function makes exactly one system call and returns its
// result, or -errno on failure. No policy, defaults or messages live here: lib/ (TypeScript) gives them meaning.
// See: man 2 prctl (PR_SET_IO_FLUSHER, PR_GET_IO_FLUSHER), kernel/sys.c.
#ifndef IO_FLUSHER_PRCTL_IO_FLUSHER_H
#define IO_FLUSHER_PRCTL_IO_FLUSHER_H

#include <stdint.h>
#include <sys/prctl.h>

// Older uapi headers (before Linux 5.6, which added both together) lack these. Define them here so a missing header
// can never compile the call out (a real failure in the field: a build that silently did nothing). Values:
// include/uapi/linux/prctl.h, and PR_SET_IO_FLUSHER / PR_GET_IO_FLUSHER in lib/kernel-constants.ts.
#if !defined(PR_SET_IO_FLUSHER) || !defined(PR_GET_IO_FLUSHER)
#undef PR_SET_IO_FLUSHER
#undef PR_GET_IO_FLUSHER
#define PR_SET_IO_FLUSHER 57
#define PR_GET_IO_FLUSHER 58
#endif

#ifdef __cplusplus
extern "C" {
#endif

// prctl(option, arg2..arg5) with every argument passed through unchanged. Returns prctl's value or -errno.
// For the conformance tests only; not part of the public API.
long iof_prctl_raw(int option, unsigned long arg2, unsigned long arg3, unsigned long arg4, unsigned long arg5);

// prctl(PR_SET_IO_FLUSHER, value, 0, 0, 0) on the calling thread. Returns 0 or -errno.
long iof_set_io_flusher(unsigned long value);

// prctl(PR_GET_IO_FLUSHER, 0, 0, 0, 0) on the calling thread. Returns 0, 1 or -errno.
long iof_get_io_flusher(void);

// gettid(2) of the calling thread.
long iof_gettid(void);

// capget(2) of the calling thread: its effective capability set, bit n = capability n. Returns 0 or -errno. What
// PR_SET/GET_IO_FLUSHER check (CAP_SYS_RESOURCE), read in one system call to explain a refusal.
long iof_cap_effective(uint64_t* effective);

#ifdef __cplusplus
}
#endif

#endif
