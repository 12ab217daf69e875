// Process-wide IO_FLUSHER, the libpsx / glibc-setxid way: prctl changes only the calling thread, so every other
// thread is sent a real-time signal whose handler makes the prctl itself and records the result.
// Each function below is one system call (or a read of the recorded results); the sequencing, waiting, retries,
// refusal of signals already in use and the report are TypeScript's (lib/process-wide.ts).
// See: man 7 signal, man 2 tgkill, man 2 sigaction; glibc nptl/nptl_setxid.c; libcap psx/psx.c.
#ifndef IO_FLUSHER_THREAD_BROADCAST_H
#define IO_FLUSHER_THREAD_BROADCAST_H

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

// SIGRTMIN and SIGRTMAX as the C library defines them (glibc reserves the first few real-time signals).
long iof_sigrtmin(void);
long iof_sigrtmax(void);

#ifdef __cplusplus
}
#endif

#endif
