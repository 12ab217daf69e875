// Process-wide IO_FLUSHER, the libpsx / glibc-setxid way: prctl changes only the calling thread, so every other
// thread is sent a real-time signal whose handler makes the prctl itself and records the result.
// Each function below is one system call (or a read of the recorded results), except iof_read_task_stats (one read of
// each listed thread's stat file) and iof_broadcast_pass, which makes one pass over a list of threads (check,
// signal, wait, collect) without a JavaScript round trip per thread. The listing of threads between passes, the
// refusal of signals already in use and what each outcome means are TypeScript's (lib/thread-broadcast.ts); the report
// is lib/process-wide.ts's.
// See: man 7 signal, man 2 tgkill, man 2 sigaction; glibc nptl/nptl_setxid.c; libcap psx/psx.c.
#ifndef IO_FLUSHER_THREAD_BROADCAST_H
#define IO_FLUSHER_THREAD_BROADCAST_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

// What the handler answers for a thread that has not run it yet.
#define IOF_BROADCAST_PENDING 1

// sigaction(signo, NULL, &old): 0 when the disposition is SIG_DFL, 1 SIG_IGN, 2 a handler; -errno on failure.
long iof_signal_disposition(int signo);

// Clears the recorded results, sets the value the handler passes to PR_SET_IO_FLUSHER, and installs the handler
// (SA_SIGINFO | SA_RESTART, so interrupted system calls restart) with sigaction, keeping the previous action.
// Returns 0 or -errno; -EBUSY while another broadcast in this process has not been restored; -EINVAL for a signo
// outside SIGRTMIN..SIGRTMAX. Records the calling thread as the owner.
long iof_broadcast_install(int signo, unsigned long value);

// sigaction(signo, previous action saved by iof_broadcast_install), only while `owner` is the recorded owner (the
// calling thread's tid in the call that installed it, or 0 once that call has left). Returns 0, -EINVAL (nothing
// installed on signo), -EBUSY (another owner) or -errno.
long iof_broadcast_restore(int signo, int owner);

// The owning call returns with the handler still installed (a signalled thread still has the signal pending):
// owner becomes 0, so a later call may restore it once nothing is pending. 0, or -EINVAL when the caller is not the owner.
long iof_broadcast_leave(void);

// The signal whose handler is installed, or 0; and its owner's tid (0 when the owning call has left, or none).
long iof_broadcast_signal(void);
long iof_broadcast_owner(void);

// tgkill(getpid(), tid, signo). Returns 0 or -errno (-ESRCH: the thread is gone).
long iof_tgkill(int tid, int signo);

// The handler's prctl result for tid (0 or -errno), or IOF_BROADCAST_PENDING if it has not run there yet, or
// -ENOSPC when the result table is full (more threads answered than it holds): the answer was not recorded.
long iof_broadcast_result(int tid);

// The most threads one iof_broadcast_pass takes (the size of the result table).
#define IOF_BROADCAST_SLOTS 8192

// Per-thread states of iof_broadcast_pass (mirrored in lib/kernel-constants.ts, BROADCAST_OUTCOME). The first three
// are not final: a later call with the same outcomes carries on from them.
#define IOF_PASS_NEW 0             // not looked at yet
#define IOF_PASS_SIGNALLED 1       // sent the signal, no answer yet (it may be pending there)
#define IOF_PASS_NEWBORN 2         // blocks every signal, the C library's 32/33 too (starting or ending): not sent it yet
#define IOF_PASS_ANSWERED 3        // the handler ran there; the value is its prctl result (0 or -errno)
#define IOF_PASS_EXITED 4          // gone before it could be signalled (no /proc entry, or tgkill ESRCH)
#define IOF_PASS_BLOCKS_SIGNAL 5   // blocks the signal itself: never sent it
#define IOF_PASS_UNRECORDED 6      // took the signal, but the result table was full: the answer was not recorded
#define IOF_PASS_SEND_FAILED 7     // tgkill failed otherwise; the value is its -errno

// One pass of the broadcast installed on signo (by iof_broadcast_install) over `count` threads of this process,
// without a round trip to the caller per thread. outcomes[2i] is thread i's IOF_PASS_* state, outcomes[2i+1] its
// value. A NEW thread's SigBlk is read from /proc/self/task/TID/status: one that blocks signo is never sent it (a
// NEWBORN one, blocking the C library's signals too, is looked at again until it unblocks or exits, unless its tid
// is in no_wait); every other one is sent signo with tgkill (SIGNALLED). Then waits up to wait_ms for the answers of
// SIGNALLED threads and for NEWBORN ones to unblock. A caller with a longer deadline calls again with the same
// outcomes (a bounded wait keeps a Worker terminated inside the call from being held up for longer than wait_ms).
// Returns how many threads are still SIGNALLED or NEWBORN; -EINVAL when signo is not the installed broadcast's or
// count is not 1..IOF_BROADCAST_SLOTS; -errno when /proc/self/task cannot be opened.
long iof_broadcast_pass(int signo, const int* tids, int count, const int* no_wait, int no_wait_count, long wait_ms,
                        int* outcomes);

// The read-back after a broadcast: /proc/self/task/TID/stat of each of `count` threads, each file's text followed by a
// NUL byte in `out` (nothing but the NUL for a thread that is gone, or whose text does not fit IOF_STAT_MAX bytes).
// `size` must be at least count * (IOF_STAT_MAX + 1). Returns the bytes written, or -EINVAL, or -errno.
#define IOF_STAT_MAX 2047
long iof_read_task_stats(const int* tids, int count, char* out, size_t size);

// SIGRTMIN and SIGRTMAX as the C library defines them (glibc reserves the first few real-time signals).
long iof_sigrtmin(void);
long iof_sigrtmax(void);

#ifdef __cplusplus
}
#endif

#endif
