// See thread_broadcast.h. The handler is async-signal-safe: raw system calls and lock-free atomics only.
#include "thread_broadcast.h"

#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <atomic>
#include <mutex>

#include "prctl_io_flusher.h"

namespace {

constexpr int kSlots = 8192;  // threads one broadcast can record; far above any Node process we have seen
constexpr long kUnanswered = LONG_MIN;

struct Slot {
  std::atomic<int> tid;
  std::atomic<long> result;
};

Slot g_slots[kSlots];
std::atomic<unsigned long> g_value{0};
// One broadcast at a time per process (Workers share this library). Guarded by g_state_lock (never taken by the
// handler). g_owner is the thread inside the call that installed the handler, 0 once that call has returned with the
// handler still installed (a signalled thread had not taken the signal yet): the next call may then restore it.
std::mutex g_state_lock;
bool g_installed = false;
int g_signo = 0;
int g_owner = 0;
struct sigaction g_previous;

int CurrentTid() { return static_cast<int>(syscall(SYS_gettid)); }

// Open addressing keyed by tid, linear probing: O(1) for the handler and for the reader, whatever the thread count.
void Record(int tid, long result) {
  for (int i = 0; i < kSlots; i++) {
    Slot& slot = g_slots[(static_cast<unsigned>(tid) + i) % kSlots];
    int owner = slot.tid.load(std::memory_order_acquire);
    if (owner == 0) {
      int expected = 0;
      if (slot.tid.compare_exchange_strong(expected, tid, std::memory_order_acq_rel)) owner = tid;
      else owner = expected;
    }
    if (owner == tid) {
      slot.result.store(result, std::memory_order_release);
      return;
    }
  }
}

void BroadcastHandler(int, siginfo_t*, void*) {
  int saved_errno = errno;  // a handler must not change errno under the interrupted code
  int tid = CurrentTid();
  Record(tid, iof_set_io_flusher(g_value.load(std::memory_order_acquire)));
  errno = saved_errno;
}

}  // namespace

long iof_signal_disposition(int signo) {
  struct sigaction current;
  if (sigaction(signo, nullptr, &current) != 0) return -errno;
  if (!(current.sa_flags & SA_SIGINFO) && current.sa_handler == SIG_DFL) return 0;
  if (!(current.sa_flags & SA_SIGINFO) && current.sa_handler == SIG_IGN) return 1;
  return 2;
}

long iof_broadcast_install(int signo, unsigned long value) {
  // A handler on a signal the process may use for something else (SIGSEGV, SIGCHLD, ...) is never installed here.
  if (signo < SIGRTMIN || signo > SIGRTMAX) return -EINVAL;
  std::lock_guard<std::mutex> lock(g_state_lock);
  if (g_installed) return -EBUSY;
  for (Slot& slot : g_slots) {
    slot.result.store(kUnanswered, std::memory_order_relaxed);
    slot.tid.store(0, std::memory_order_relaxed);
  }
  g_value.store(value, std::memory_order_release);
  struct sigaction action;
  memset(&action, 0, sizeof action);
  action.sa_sigaction = BroadcastHandler;
  action.sa_flags = SA_SIGINFO | SA_RESTART;
  sigemptyset(&action.sa_mask);
  if (sigaction(signo, &action, &g_previous) != 0) return -errno;
  g_installed = true;
  g_signo = signo;
  g_owner = CurrentTid();
  return 0;
}

long iof_broadcast_restore(int signo, int owner) {
  std::lock_guard<std::mutex> lock(g_state_lock);
  if (!g_installed || signo != g_signo) return -EINVAL;
  if (owner != g_owner) return -EBUSY;  // someone else restored it and installed again meanwhile
  if (sigaction(signo, &g_previous, nullptr) != 0) return -errno;
  g_installed = false;
  g_signo = 0;
  g_owner = 0;
  return 0;
}

long iof_broadcast_leave(void) {
  std::lock_guard<std::mutex> lock(g_state_lock);
  if (!g_installed || g_owner != CurrentTid()) return -EINVAL;
  g_owner = 0;
  return 0;
}

long iof_broadcast_signal(void) {
  std::lock_guard<std::mutex> lock(g_state_lock);
  return g_installed ? g_signo : 0;
}

long iof_broadcast_owner(void) {
  std::lock_guard<std::mutex> lock(g_state_lock);
  return g_installed ? g_owner : 0;
}

long iof_tgkill(int tid, int signo) {
  return syscall(SYS_tgkill, getpid(), tid, signo) == 0 ? 0 : -errno;
}

long iof_broadcast_result(int tid) {
  for (int i = 0; i < kSlots; i++) {
    Slot& slot = g_slots[(static_cast<unsigned>(tid) + i) % kSlots];
    int owner = slot.tid.load(std::memory_order_acquire);
    if (owner == 0) return IOF_BROADCAST_PENDING;  // the probe sequence ends at the first free slot: not recorded (yet)
    if (owner == tid) {
      long result = slot.result.load(std::memory_order_acquire);
      return result == kUnanswered ? IOF_BROADCAST_PENDING : result;
    }
  }
  // Every slot is taken by other threads: this thread's answer cannot be recorded (it is still made). Say so rather
  // than look pending forever.
  return -ENOSPC;
}

long iof_sigrtmin(void) { return SIGRTMIN; }
long iof_sigrtmax(void) { return SIGRTMAX; }
