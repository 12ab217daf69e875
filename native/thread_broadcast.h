// Process-wide IO_FLUSHER, the way glibc's setxid and libcap's libpsx reach every thread: prctl changes only the
// calling thread, so every other thread is sent a real-time signal whose handler makes the prctl itself, reads the
// state back with PR_GET_IO_FLUSHER (the kernel's own answer for that thread) and records both. The whole call is one
// native call, iof_broadcast_run; lib/thread-broadcast.ts chooses the signal and says what each outcome means, and
// lib/process-wide.ts builds the report.
//
// What the design guarantees, and why (the cases are tested in test/broadcast-faults.test.ts and the kernel suite):
// - Each thread answers for itself. Nothing is checked from outside before the signal is sent; only threads still
//   silent after about 2 ms get a /proc/self/task/TID/status read: gone means exited; the signal both blocked and
//   pending (outside the C library's start/exit window, or in one of io_uring's threads) means the thread blocks it;
//   anything else (pending, being delivered, held by a tracer, an unreadable file) means keep waiting, up to the
//   caller's timeout. A thread whose status cannot be read is never taken for one that exited.
// - The signal carries a slot and a generation (rt_tgsigqueueinfo's si_value). A slot stays reserved until its
//   thread answered, is gone, or was found to block the signal, so a late handler (a thread a tracer held past the
//   timeout) writes its answer into its own slot and nowhere else. Every handler applies the state most recently
//   asked for, so a late one never undoes a later call.
// - The previous action of the signal is put back only when every signal sent on it was answered, its thread is
//   gone, or it is still pending in a thread that blocks it and that no debugger holds (then it is discarded first, by
//   setting SIG_IGN: restoring SIG_DFL with it pending would kill the process once the thread unblocked it; a signal a
//   debugger has dequeued is out of SIG_IGN's reach). Otherwise the handler stays installed (it is harmless) until a
//   later call or iof_broadcast_settle finds every signal accounted for.
// - Threads found blocking the signal are remembered (thread id and start time, which name one thread for good) and
//   not sent it again while their status still shows it blocked (one that blocked it for a moment, around a fork say,
//   is signalled again once it does not); their coverage is their /proc stat flags (they keep what they inherited).
// - A signal the calling thread blocks is refused as in use: a program waiting for it with sigwaitinfo or signalfd
//   blocks it in every thread, and its waiting thread would take the broadcast's signal as its own. A thread that
//   takes it anyway (it blocks the signal alone) is found at two looks asleep with no answer and nothing pending, no
//   debugger on it: it gets the signal once, and is then treated as a thread that blocks it.
// - Calls are serialized by a mutex held only inside iof_broadcast_run (and iof_broadcast_settle, and
//   iof_execve_between_broadcasts), so no call ever fails because of an earlier one, and a Worker terminated while
//   inside the call still finishes the native part (Node stops a Worker's JavaScript, not its native call).
// - /proc/self/task is the only listing used, and /proc/self must be this process (not PID 1 of a parent PID
//   namespace whose /proc was kept): checked before anything changes.
// What a thread can observe: it runs a short handler (two prctl calls and an atomic store). SA_RESTART restarts read,
// write and most blocking calls, but never poll, epoll_wait, select, nanosleep, clock_nanosleep or sigtimedwait-style
// waits with a timeout, which return EINTR (man 7 signal): glibc's setxid broadcast does the same.
// See: man 7 signal, man 2 rt_tgsigqueueinfo, man 2 sigaction, man 2 futex; glibc nptl/nptl_setxid.c; libcap psx/psx.c.
#ifndef IO_FLUSHER_THREAD_BROADCAST_H
#define IO_FLUSHER_THREAD_BROADCAST_H

#include <stdint.h>

#ifdef __cplusplus
#include <vector>
extern "C" {
#endif

// The most threads one call reaches (the size of the answer table: 16 bytes a slot, touched only as used).
#define IOF_BROADCAST_SLOTS 65536

// Per-thread outcomes of iof_broadcast_run (lib/kernel-constants.ts mirrors them as BROADCAST_OUTCOME; a host test
// checks the two agree). The meaning of `a` and `b` in each record:
#define IOF_THREAD_DIRECT 1          // the calling thread, set directly: a = PR_SET result (0 or -errno), b = PR_GET answer
#define IOF_THREAD_ANSWERED 2        // its handler ran: a = PR_SET result, b = PR_GET answer (0, 1 or -errno)
#define IOF_THREAD_BLOCKS_SIGNAL 3   // blocks the signal (never ran the handler): a = 0 or -errno of reading its stat,
                                     // b = its flags word (/proc stat field 9, as 32 bits)
#define IOF_THREAD_EXITED 4          // gone before it answered
#define IOF_THREAD_TIMED_OUT 5       // sent the signal, no answer by the deadline: a = IOF_SEEN_*, b = -errno when its
                                     // status could not be read (EMFILE, ...), else 0
#define IOF_THREAD_SEND_FAILED 6     // rt_tgsigqueueinfo failed (not ESRCH): a = -errno
#define IOF_THREAD_NOT_REACHED 7     // never sent: listed after the last pass (a = 0) or the table was full (a = -E2BIG)

// PF_IO_WORKER (include/linux/sched.h, 5.12+): io_uring's own threads (iou-sqp, iou-wrk). The kernel blocks every
// signal in them, the C library's 32 and 33 too, for their whole life; they never run a handler, and inherit the
// submitting thread's flags. Only the native side reads it (lib/kernel-constants.ts holds the flags the API shows).
#define IOF_PF_IO_WORKER 0x00000010

// What a timed-out thread's status showed at the last look.
#define IOF_SEEN_NOTHING 0    // not looked at (the deadline came first)
#define IOF_SEEN_PENDING 1    // the signal pending: the thread has not run since (stopped, or waiting for a CPU)
#define IOF_SEEN_IN_HANDLER 2 // the signal blocked but not pending: inside the handler
#define IOF_SEEN_TAKEN 3      // neither: dequeued but not handled (held by a tracer in signal-delivery-stop)
#define IOF_SEEN_NEWBORN 4    // pending, with every signal blocked by the C library (a thread starting or exiting)

struct iof_thread_answer {
  int32_t tid;
  int32_t outcome;
  int32_t a;
  int32_t b;
};

struct iof_broadcast_summary {
  int32_t passes;            // listings that found new threads (the last listing found none, or max_passes ran out)
  int32_t handler_restored;  // 1: the signal's previous action is back; 0: the handler stays for a late thread
};

// sigaction(signo, NULL, &old): 0 SIG_DFL, 1 SIG_IGN, 2 another handler, 3 this library's broadcast handler (left
// installed by an earlier call for a late thread), 4 blocked in the calling thread (whatever the action: a program
// waiting for it); -errno on failure.
long iof_signal_disposition(int signo);

// SIGRTMIN and SIGRTMAX as the C library defines them (glibc keeps the first few real-time signals for itself).
long iof_sigrtmin(void);
long iof_sigrtmax(void);

// Settles what earlier calls left behind (answers that came late, threads gone, pending signals of threads that block
// them) and restores each signal's previous action once nothing sent on it is outstanding. Returns how many signals
// still have the handler installed (1 without looking while a call is in progress on another thread), or -errno.
long iof_broadcast_settle(void);

#ifdef __cplusplus
}

// Puts every thread of this process in IO_FLUSHER state `value` (0 or 1): the calling thread directly, every other
// thread listed in /proc/self/task by signal `signo` (a real-time signal whose action is SIG_DFL, or this library's
// handler; not one the calling thread blocks), listing again until a listing finds no new thread or `max_passes`
// listings found some. Waits up to
// `timeout_ms` for the threads of each pass. One record per thread in `answers` (the calling thread first).
// Returns the number of records, or, with nothing changed: -EINVAL (an argument out of range), -EBUSY (signo has a
// handler that is not this library's, or is ignored), -EXDEV (/proc/self is not this process: a /proc of another PID
// namespace), -E2BIG (more threads than IOF_BROADCAST_SLOTS), or -errno of opening or listing /proc/self/task or of
// sigaction.
long iof_broadcast_run(int signo, unsigned long value, long timeout_ms, int max_passes,
                       std::vector<iof_thread_answer>* answers, iof_broadcast_summary* summary);

// execve(path, argv, envp) with no broadcast in progress, after discarding any broadcast signal pending for the
// calling thread: pending signals survive execve while handlers do not, so one arriving in the new program would
// kill it (SIG_DFL). Returns -errno when execve fails (it does not return otherwise).
long iof_execve_between_broadcasts(const char* path, char* const argv[], char* const envp[]);
#endif

#endif
