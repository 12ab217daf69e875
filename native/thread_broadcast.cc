// See thread_broadcast.h. The handler is async-signal-safe: raw system calls and lock-free atomics only.
#include "thread_broadcast.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/futex.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <mutex>
#include <vector>

#include "prctl_io_flusher.h"

namespace {

constexpr int kSlots = IOF_BROADCAST_SLOTS;  // threads one broadcast can record; far above any Node process we have seen
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

// Answers made since the process started (any broadcast), and the count at which the thread inside
// iof_broadcast_pass wants to be woken (futex on g_answers) while g_waiting is set.
std::atomic<int> g_answers{0};
std::atomic<int> g_wake_at{0};
std::atomic<bool> g_waiting{false};
static_assert(sizeof(std::atomic<int>) == sizeof(int), "futex word");

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
  // Counted modulo 2^32: "reached" is the difference read as signed.
  unsigned answers = static_cast<unsigned>(g_answers.fetch_add(1)) + 1u;
  if (g_waiting.load() && static_cast<int>(answers - static_cast<unsigned>(g_wake_at.load())) >= 0) {
    syscall(SYS_futex, reinterpret_cast<int*>(&g_answers), FUTEX_WAKE_PRIVATE, INT_MAX, nullptr, nullptr, 0);
  }
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

namespace {
long Tgkill(pid_t pid, int tid, int signo) { return syscall(SYS_tgkill, pid, tid, signo) == 0 ? 0 : -errno; }
}  // namespace

long iof_tgkill(int tid, int signo) { return Tgkill(getpid(), tid, signo); }

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

namespace {

long NowNs() {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1000000000L + ts.tv_nsec;
}

// A signal mask field ("SigBlk", "SigPnd") of /proc/self/task/TID/status, read relative to the open task directory:
// true and *mask set, or false when the thread is gone (or its status cannot be read: treated alike, as in JS).
bool ReadMask(int task_dir, int tid, const char* field, uint64_t* mask) {
  char path[32];
  char text[4096];
  snprintf(path, sizeof path, "%d/status", tid);
  int fd = openat(task_dir, path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return false;
  size_t length = 0;
  for (;;) {
    ssize_t n = read(fd, text + length, sizeof text - 1 - length);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    length += static_cast<size_t>(n);
    if (length == sizeof text - 1) break;
  }
  close(fd);
  if (length == 0) return false;  // an exiting thread's entry can still open but read nothing
  text[length] = '\0';
  char key[16];
  snprintf(key, sizeof key, "\n%s:", field);
  const char* at = strstr(text, key);
  if (!at) return false;
  char* end = nullptr;
  *mask = strtoull(at + strlen(key), &end, 16);
  return end != at + strlen(key);
}

bool Has(uint64_t mask, int signo) { return (mask >> (signo - 1)) & 1; }

// The C library's own signals, 32 and 33 (glibc: SIGCANCEL, SIGSETXID; musl uses 32-34). sigfillset() leaves them
// out, so a program that blocks every signal itself (Node's signal watchdog thread: SigBlk fffffffe7ffbfeff) never
// blocks these. Only the C library does, around a thread's start and end: pthread_create() blocks every signal in the
// new thread until start_thread() has set it up, and a thread blocks them all again on its way out. A thread that
// blocks them is in that window: it will take signals (or be gone) in a moment.
bool InLibcWindow(uint64_t blocked) { return Has(blocked, 32) || Has(blocked, 33); }

}  // namespace

long iof_broadcast_pass(int signo, const int* tids, int count, const int* no_wait, int no_wait_count, long wait_ms,
                        int* outcomes) {
  if (count < 1 || count > kSlots || no_wait_count < 0 || no_wait_count > kSlots || wait_ms < 0) return -EINVAL;
  {
    std::lock_guard<std::mutex> lock(g_state_lock);
    if (!g_installed || g_signo != signo) return -EINVAL;
  }
  int task_dir = open("/proc/self/task", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (task_dir < 0) return -errno;
  auto set = [outcomes](int i, int code, long value) {
    outcomes[2 * i] = code;
    outcomes[2 * i + 1] = static_cast<int>(value);
  };
  std::vector<int> waiting;  // indexes of threads sent the signal, not answered yet
  std::vector<int> newborn;  // indexes of threads in the C library's window, looked at again
  const pid_t pid = getpid();  // once: glibc does not cache it, and each call is a system call
  auto send = [&](int i) {
    long sent = Tgkill(pid, tids[i], signo);
    if (sent == 0) {
      set(i, IOF_PASS_SIGNALLED, 0);
      waiting.push_back(i);
    } else {
      set(i, sent == -ESRCH ? IOF_PASS_EXITED : IOF_PASS_SEND_FAILED, sent);
    }
  };
  for (int i = 0; i < count; i++) {
    int code = outcomes[2 * i];
    if (code == IOF_PASS_SIGNALLED) {
      waiting.push_back(i);
    } else if (code == IOF_PASS_NEWBORN) {
      newborn.push_back(i);
    } else if (code == IOF_PASS_NEW) {
      uint64_t blocked = 0;
      if (!ReadMask(task_dir, tids[i], "SigBlk", &blocked)) set(i, IOF_PASS_EXITED, 0);
      else if (!Has(blocked, signo)) send(i);
      else if (InLibcWindow(blocked) && std::find(no_wait, no_wait + no_wait_count, tids[i]) == no_wait + no_wait_count) {
        set(i, IOF_PASS_NEWBORN, 0);
        newborn.push_back(i);
      } else {
        set(i, IOF_PASS_BLOCKS_SIGNAL, 0);
      }
    }  // any other code: settled by an earlier call
  }
  long deadline = NowNs() + wait_ms * 1000000L;
  long backoff_ns = 50000;  // for newborn threads: 50 us, doubling up to 5 ms
  for (;;) {
    int seen = g_answers.load();
    bool unrecorded_pending = false;
    size_t kept = 0;
    for (int i : waiting) {
      long result = iof_broadcast_result(tids[i]);
      if (result == IOF_BROADCAST_PENDING) {
        waiting[kept++] = i;
      } else if (result == -ENOSPC) {
        // The table is full: the answer cannot be recorded. Once the signal is no longer pending, the handler has
        // made the prctl there (the /proc read-back decides coverage).
        uint64_t pending = 0;
        if (ReadMask(task_dir, tids[i], "SigPnd", &pending) && Has(pending, signo)) {
          waiting[kept++] = i;
          unrecorded_pending = true;
        } else {
          set(i, IOF_PASS_UNRECORDED, 0);
        }
      } else {
        set(i, IOF_PASS_ANSWERED, result);
      }
    }
    waiting.resize(kept);
    kept = 0;
    for (int i : newborn) {
      uint64_t blocked = 0;
      if (!ReadMask(task_dir, tids[i], "SigBlk", &blocked)) set(i, IOF_PASS_EXITED, 0);
      else if (Has(blocked, signo)) newborn[kept++] = i;
      else send(i);  // it has started running
    }
    newborn.resize(kept);
    long now = NowNs();
    if ((waiting.empty() && newborn.empty()) || now >= deadline) break;
    // Sleep until the handler has answered for every thread still waited for (it wakes this thread), a newborn
    // thread is due another look, or the end of the wait.
    long slice = deadline - now;
    if (!newborn.empty() || unrecorded_pending) {
      slice = std::min(slice, backoff_ns);
      backoff_ns = std::min(backoff_ns * 2, 5000000L);
    }
    g_wake_at.store(static_cast<int>(static_cast<unsigned>(seen) + static_cast<unsigned>(waiting.size())));
    g_waiting.store(true);
    struct timespec wait = {slice / 1000000000L, slice % 1000000000L};
    syscall(SYS_futex, reinterpret_cast<int*>(&g_answers), FUTEX_WAIT_PRIVATE, seen, &wait, nullptr, 0);
    g_waiting.store(false);
  }
  close(task_dir);
  return static_cast<long>(waiting.size() + newborn.size());
}

long iof_read_task_stats(const int* tids, int count, char* out, size_t size) {
  if (count < 0 || size < static_cast<size_t>(count) * (IOF_STAT_MAX + 1)) return -EINVAL;
  int task_dir = open("/proc/self/task", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (task_dir < 0) return -errno;
  size_t at = 0;
  for (int i = 0; i < count; i++) {
    char path[32];
    snprintf(path, sizeof path, "%d/stat", tids[i]);
    int fd = openat(task_dir, path, O_RDONLY | O_CLOEXEC);
    ssize_t n = 0;
    if (fd >= 0) {
      // A stat file is made whole in one go (one seq_file record): one read with room for it returns all of it.
      do n = read(fd, out + at, IOF_STAT_MAX); while (n < 0 && errno == EINTR);
      close(fd);
    }
    if (n > 0 && n < IOF_STAT_MAX) at += static_cast<size_t>(n);  // else: gone, or too long to be sure it is whole
    out[at++] = '\0';
  }
  close(task_dir);
  return static_cast<long>(at);
}

long iof_sigrtmin(void) { return SIGRTMIN; }
long iof_sigrtmax(void) { return SIGRTMAX; }
