// See thread_broadcast.h. The handler is async-signal-safe: raw system calls and lock-free atomics only.
#include "thread_broadcast.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/futex.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>

#include "prctl_io_flusher.h"
#include "process_exec.h"

namespace {

constexpr int kSlots = IOF_BROADCAST_SLOTS;
constexpr uint32_t kPending = 0xFFFFFFFFu;  // a slot's state while its thread has not answered
constexpr long kFirstLookNs = 2000000;      // silent this long: read the thread's status
constexpr long kLongestLookNs = 50000000;   // looks again at doubling intervals, up to this
// A look's finding not reported (a timed-out thread seen so at the last look is reported IOF_SEEN_TAKEN): the signal
// was taken while the thread sleeps, once; a second look alike makes it the program's.
constexpr int IOF_SEEN_TAKEN_BY_PROGRAM = 100;
static_assert(sizeof(std::atomic<int>) == sizeof(int), "futex word");
static_assert(std::atomic<uint64_t>::is_always_lock_free, "the handler needs a lock-free 64-bit atomic");

// A slot's word: the generation of the call that sent the signal (high 32 bits) and the state (low 32): kPending, or
// the answer (PR_SET's errno in bits 0-15, PR_GET's result as a 16-bit signed number in bits 16-31).
uint64_t Pack(uint32_t generation, uint32_t state) { return (static_cast<uint64_t>(generation) << 32) | state; }
uint32_t StateOf(uint64_t word) { return static_cast<uint32_t>(word); }
uint32_t EncodeAnswer(long set_result, long get_result) {
  return (static_cast<uint32_t>(-set_result) & 0xFFFFu) | (static_cast<uint32_t>(static_cast<uint16_t>(get_result)) << 16);
}
long SetResultOf(uint32_t state) { return -static_cast<long>(state & 0xFFFFu); }
long GetResultOf(uint32_t state) { return static_cast<int16_t>(state >> 16); }

struct Slot {
  std::atomic<uint64_t> word{0};
};
Slot g_slots[kSlots];

// What the handler reads: the state most recently asked for, the count of answers recorded (a futex word) and when
// the waiting caller wants to be woken (and g_cached_pid below, which tags our signals).
std::atomic<unsigned long> g_desired{0};
std::atomic<int> g_answers{0};
std::atomic<int> g_wake_at{0};
std::atomic<bool> g_waiting{false};

// Everything below is guarded by CallLock, which the handler never takes. A futex word of its own (0 free, 1 held, 2
// held with waiters: Drepper, "Futexes Are Tricky") rather than a pthread mutex: pthread_mutex_trylock has been
// versioned GLIBC_2.34 since libpthread moved into libc, and the prebuilds must load on glibc 2.28.
std::atomic<int> g_call_lock{0};

void Futex(std::atomic<int>* word, int op, int value) {
  syscall(SYS_futex, reinterpret_cast<int*>(word), op, value, nullptr, nullptr, 0);
}

void CallLock() {
  int c = 0;
  if (g_call_lock.compare_exchange_strong(c, 1, std::memory_order_acquire)) return;
  if (c != 2) c = g_call_lock.exchange(2, std::memory_order_acquire);
  while (c != 0) {
    Futex(&g_call_lock, FUTEX_WAIT_PRIVATE, 2);
    c = g_call_lock.exchange(2, std::memory_order_acquire);
  }
}

bool CallTryLock() {
  int c = 0;
  return g_call_lock.compare_exchange_strong(c, 1, std::memory_order_acquire);
}

void CallUnlock() {
  if (g_call_lock.exchange(0, std::memory_order_release) == 2) Futex(&g_call_lock, FUTEX_WAKE_PRIVATE, 1);
}
uint32_t g_generation = 0;
bool g_slot_busy[kSlots];
int g_lowest_free = 0;  // no free slot below this one
// A slot whose signal has not been answered when its call ended: the thread, the signal, and whether it was found
// to block the signal (then its pending signal is discarded before the previous action comes back).
struct Outstanding {
  int slot;
  int tid;
  unsigned long long start_time;  // with the tid, names the thread for good (0: unknown)
  int signo;
  bool blocker;
};
// Never destroyed (like the rest of this state): a call may still be running on another thread when the process exits.
std::vector<Outstanding>& g_outstanding = *new std::vector<Outstanding>;
// Threads found to block the broadcast signal (tid and start time, which together name one thread for good): not
// sent it again while they live. A thread that blocks every signal (Node's signal watchdog) keeps doing so; its
// coverage is what it inherited, read from its stat.
struct Blocker {
  int tid;
  unsigned long long start_time;
  bool waits_for_it;  // takes the signal as its own (sigwaitinfo, signalfd): its mask cannot tell, so not checked
};
std::vector<Blocker>& g_blockers = *new std::vector<Blocker>;
struct Installed {
  bool on = false;
  struct sigaction previous;
};
Installed g_installed[_NSIG];

struct Locked {
  Locked() { CallLock(); }
  ~Locked() { CallUnlock(); }
};

// A child forked while another thread held the lock would find it held forever: it starts with it free (only the
// forking thread exists there, so no call can be in progress in the child).
// The ids a call needs, cached (glibc caches neither getpid nor gettid; each is a system call): this process's, and
// the calling thread's. A forked child has new ones, and /proc/self must be checked again there.
std::atomic<int> g_cached_pid{0};
thread_local int t_cached_tid = 0;
bool g_proc_checked = false;  // /proc/self was this process at a call's start (guarded by g_call_lock)

void ChildAfterFork();  // below
struct ForkSafety {
  ForkSafety() { pthread_atfork(nullptr, nullptr, ChildAfterFork); }
} g_fork_safety;

pid_t CachedPid() {
  int pid = g_cached_pid.load(std::memory_order_relaxed);
  if (pid == 0) {
    pid = getpid();
    g_cached_pid.store(pid, std::memory_order_relaxed);
  }
  return pid;
}

int CachedTid() {
  if (t_cached_tid == 0) t_cached_tid = static_cast<int>(iof_gettid());
  return t_cached_tid;
}

long Sys(long rc) { return rc < 0 ? -errno : rc; }

void BroadcastHandler(int, siginfo_t* info, void*) {
  int saved_errno = errno;  // a handler must not change errno under the interrupted code
  // Whoever sent it, the thread takes the state most recently asked for: a late signal never undoes a later call.
  long set_result = iof_set_io_flusher(g_desired.load(std::memory_order_acquire));
  long get_result = iof_get_io_flusher();
  if (info && info->si_code == SI_QUEUE && info->si_pid == g_cached_pid.load(std::memory_order_relaxed)) {
    uint64_t tag = reinterpret_cast<uintptr_t>(info->si_value.sival_ptr);
    uint32_t slot = static_cast<uint32_t>(tag);
    uint64_t expected = Pack(static_cast<uint32_t>(tag >> 32), kPending);
    // Only the slot's own signal, while the slot still waits for it, records an answer.
    if (slot < static_cast<uint32_t>(kSlots) &&
        g_slots[slot].word.compare_exchange_strong(expected, Pack(static_cast<uint32_t>(tag >> 32), EncodeAnswer(set_result, get_result)),
                                                   std::memory_order_acq_rel)) {
      // Counted modulo 2^32: "reached" is the difference read as signed.
      unsigned answers = static_cast<unsigned>(g_answers.fetch_add(1)) + 1u;
      if (g_waiting.load() && static_cast<int>(answers - static_cast<unsigned>(g_wake_at.load())) >= 0) {
        syscall(SYS_futex, reinterpret_cast<int*>(&g_answers), FUTEX_WAKE_PRIVATE, INT_MAX, nullptr, nullptr, 0);
      }
    }
  }
  errno = saved_errno;
}

long NowNs() {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1000000000L + ts.tv_nsec;
}

bool Has(uint64_t mask, int signo) { return (mask >> (signo - 1)) & 1; }

// The C library's own signals, 32 and 33 (glibc: SIGCANCEL, SIGSETXID; musl uses 32-34). sigfillset() leaves them out,
// so a program that blocks every signal itself (Node's signal watchdog thread: SigBlk fffffffe7ffbfeff) never blocks
// these. Only the C library does, around a thread's start and end: such a thread takes its signals in a moment.
bool InLibcWindow(uint64_t blocked) { return Has(blocked, 32) || Has(blocked, 33); }

// /proc/self/task/TID/status, the parts the broadcast looks at. error: 0, or the errno of opening or reading it
// (ENOENT and ESRCH: the thread is gone; an entry that opens but reads nothing is gone too).
struct TaskStatus {
  int error = 0;
  uint64_t pending = 0;
  uint64_t blocked = 0;
  bool stopped = false;  // State T (stopped) or t (tracing stop)
  bool sleeping = false; // State S or D: waiting in the kernel (never true inside the broadcast's own handler)
  int tracer = 0;        // TracerPid: a debugger or strace holds the thread
};

uint64_t Field(const char* text, const char* key) {
  const char* at = strstr(text, key);
  return at ? strtoull(at + strlen(key), nullptr, 16) : 0;
}

TaskStatus ReadStatus(int task_dir, int tid) {
  TaskStatus status;
  char path[32];
  char text[8192];
  snprintf(path, sizeof path, "%d/status", tid);
  int fd = openat(task_dir, path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    status.error = errno;
    return status;
  }
  size_t length = 0;
  for (;;) {
    ssize_t n = read(fd, text + length, sizeof text - 1 - length);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) status.error = errno;
    if (n <= 0) break;
    length += static_cast<size_t>(n);
    // The kernel makes the file in one go (one seq_file record): a read with room left has returned all of it.
    if (length < sizeof text - 1) break;
    if (length == sizeof text - 1) break;
  }
  close(fd);
  if (status.error == 0 && length == 0) status.error = ESRCH;
  if (status.error) return status;
  text[length] = '\0';
  status.pending = Field(text, "\nSigPnd:");
  status.blocked = Field(text, "\nSigBlk:");
  const char* tracer = strstr(text, "\nTracerPid:");
  if (tracer) status.tracer = atoi(tracer + strlen("\nTracerPid:"));
  const char* state = strstr(text, "\nState:");
  if (state) {
    state += strlen("\nState:");
    while (*state == ' ' || *state == '\t') state++;
    status.stopped = *state == 'T' || *state == 't';
    status.sleeping = *state == 'S' || *state == 'D';
  }
  return status;
}

bool IsGone(int error) { return error == ENOENT || error == ESRCH; }

// A thread's flags word and start time, /proc/self/task/TID/stat fields 9 and 22 (after the last ')', the 7th and
// 20th tokens: the name before it may hold spaces and ')'). Returns 0 or -errno.
struct TaskStat {
  uint32_t flags = 0;
  unsigned long long start_time = 0;
};

long ReadStat(int task_dir, int tid, TaskStat* stat) {
  char path[32];
  char text[2048];
  snprintf(path, sizeof path, "%d/stat", tid);
  int fd = openat(task_dir, path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return -errno;
  ssize_t n;
  do n = read(fd, text, sizeof text - 1); while (n < 0 && errno == EINTR);
  int read_errno = errno;
  close(fd);
  if (n < 0) return -read_errno;
  if (n == 0) return -ESRCH;
  text[n] = '\0';
  const char* at = strrchr(text, ')');
  for (int token = 0; at && token < 20; token++) {
    at = strchr(at + 1, ' ');
    if (at && token == 6) stat->flags = static_cast<uint32_t>(strtoul(at + 1, nullptr, 10));
    if (at && token == 19) stat->start_time = strtoull(at + 1, nullptr, 10);
  }
  return at ? 0 : -EIO;
}

// The thread ids in /proc/self/task, read from the start of the open directory (getdents64).
// `rewind`: false for a directory just opened (already at its start).
long ListTasks(int task_dir, std::vector<int>* tids, bool rewind = true) {
  tids->clear();
  if (rewind && lseek(task_dir, 0, SEEK_SET) < 0) return -errno;
  alignas(8) char buffer[32768];
  for (;;) {
    // Only 0 is the end: a read also stops short when the calling thread gets a signal, or a thread just listed exits.
    long n = syscall(SYS_getdents64, task_dir, buffer, sizeof buffer);
    if (n < 0) return -errno;
    if (n == 0) return 0;
    for (long at = 0; at < n;) {
      // struct linux_dirent64: d_ino (8), d_off (8), d_reclen (2), d_type (1), d_name
      unsigned short reclen;
      memcpy(&reclen, buffer + at + 16, sizeof reclen);
      const char* name = buffer + at + 19;
      if (name[0] >= '1' && name[0] <= '9') tids->push_back(atoi(name));
      at += reclen;
    }
  }
}

// /proc/self must be this process. With a /proc mounted for another PID namespace (unshare --pid --fork without
// remounting /proc), /proc/self names this process by its id THERE, and thread ids read from it mean nothing to
// rt_tgsigqueueinfo, which takes ids of this process's own namespace.
bool ProcIsOurs(pid_t pid) {
  char link[32];
  ssize_t n = readlink("/proc/self", link, sizeof link - 1);
  if (n <= 0) return false;
  link[n] = '\0';
  return atoi(link) == pid;
}

int AllocateSlot() {
  for (int i = g_lowest_free; i < kSlots; i++) {
    if (!g_slot_busy[i]) {
      g_slot_busy[i] = true;
      g_lowest_free = i + 1;
      return i;
    }
  }
  return -1;
}

void FreeSlot(int slot) {
  // A handler still to come for this slot (a thread whose signal the program took, then ran ours late after all) must
  // find it no longer waiting, even if this call gives the slot to another thread with the same generation.
  g_slots[slot].word.store(0, std::memory_order_release);
  g_slot_busy[slot] = false;
  g_lowest_free = std::min(g_lowest_free, slot);
}

bool IsOurs(const struct sigaction& action) {
  return (action.sa_flags & SA_SIGINFO) && action.sa_sigaction == BroadcastHandler;
}

long Install(int signo) {
  // A signal the calling thread blocks is one the program waits for (sigwaitinfo, signalfd: they need it blocked in
  // every thread): its waiting thread would take the broadcast's signal as its own. In use, so refused. (sigprocmask is
  // the calling thread's mask on Linux, as pthread_sigmask is; the latter is versioned GLIBC_2.32, past our 2.28.)
  sigset_t mask;
  if (sigprocmask(SIG_BLOCK, nullptr, &mask) == 0 && sigismember(&mask, signo)) return -EBUSY;
  struct sigaction current;
  if (sigaction(signo, nullptr, &current) != 0) return -errno;
  if (g_installed[signo].on) {
    if (IsOurs(current)) return 0;  // left installed by an earlier call
    g_installed[signo].on = false;  // the program has put its own action there since: it is not ours to touch
  }
  // Never over an action someone else chose: only SIG_DFL is replaced (and put back later).
  if ((current.sa_flags & SA_SIGINFO) || current.sa_handler != SIG_DFL) return -EBUSY;
  struct sigaction action;
  memset(&action, 0, sizeof action);
  action.sa_sigaction = BroadcastHandler;
  action.sa_flags = SA_SIGINFO | SA_RESTART;
  sigemptyset(&action.sa_mask);
  if (sigaction(signo, &action, &g_installed[signo].previous) != 0) return -errno;
  g_installed[signo].on = true;
  return 0;
}

// Discards signo wherever it is pending (setting SIG_IGN does that, man 2 sigaction), then puts the previous action
// back. Only called once no signal sent on signo can still be delivered except to threads that block it.
// `checked`: the action is known to be ours still (it was installed by the call now ending); otherwise it is read first.
void Restore(int signo, bool discard_pending, bool checked) {
  struct sigaction current;
  if (!checked && (sigaction(signo, nullptr, &current) != 0 || !IsOurs(current))) {
    g_installed[signo].on = false;  // the program has put its own action there since: left as it is
    return;
  }
  if (discard_pending) {
    struct sigaction ignore;
    memset(&ignore, 0, sizeof ignore);
    ignore.sa_handler = SIG_IGN;
    sigaction(signo, &ignore, nullptr);
  }
  sigaction(signo, &g_installed[signo].previous, nullptr);
  g_installed[signo].on = false;
}

void RememberBlocker(int tid, unsigned long long start_time, bool waits_for_it = false) {
  for (Blocker& b : g_blockers) {
    if (b.tid == tid) {
      b = {tid, start_time, waits_for_it};
      return;
    }
  }
  g_blockers.push_back({tid, start_time, waits_for_it});
}

// Whether a thread that has the signal pending and blocked blocks it for good: not a thread the C library is starting
// or ending (32 or 33 blocked too), unless it is one of io_uring's (PF_IO_WORKER: the kernel blocks every signal in
// them, 32 and 33 included, for their whole life). Reads the thread's stat for the latter; `stat` is filled when read.
bool BlocksForGood(int task_dir, int tid, const TaskStatus& status, TaskStat* stat, long* stat_read) {
  *stat_read = 1;  // not read
  if (!InLibcWindow(status.blocked)) return true;
  *stat_read = ReadStat(task_dir, tid, stat);
  return *stat_read == 0 && (stat->flags & IOF_PF_IO_WORKER);
}

// Accounts for the slots earlier calls (and this one) left outstanding, then restores the action of every installed
// signal with nothing outstanding but threads that block it. `task_dir` is an open /proc/self/task.
void Settle(int task_dir, int installed_now) {
  size_t kept = 0;
  for (Outstanding o : g_outstanding) {
    bool settled = StateOf(g_slots[o.slot].word.load(std::memory_order_acquire)) != kPending;  // answered late
    if (!settled) {
      TaskStatus status = ReadStatus(task_dir, o.tid);
      TaskStat stat;
      if (IsGone(status.error)) {
        settled = true;
      } else if (status.error == 0 && o.start_time != 0 && ReadStat(task_dir, o.tid, &stat) == 0 && stat.start_time != o.start_time) {
        settled = true;  // gone, and its id taken by a new thread
      } else {
        // Its signal may be discarded only while it is still pending and blocked there, with no tracer: a signal a
        // debugger has already dequeued is out of SIG_IGN's reach, and would kill the process under SIG_DFL once the
        // debugger lets it go. Anything else is waited for like any late thread.
        long stat_read;
        o.blocker = status.error == 0 && status.tracer == 0 && Has(status.pending, o.signo) && Has(status.blocked, o.signo) &&
                    BlocksForGood(task_dir, o.tid, status, &stat, &stat_read);
      }
    }
    if (settled) FreeSlot(o.slot);
    else g_outstanding[kept++] = o;
  }
  g_outstanding.resize(kept);
  for (int signo = 1; signo < _NSIG; signo++) {
    if (!g_installed[signo].on) continue;
    bool unsettled = false, blocked = false;
    for (const Outstanding& o : g_outstanding) {
      if (o.signo != signo) continue;
      (o.blocker ? blocked : unsettled) = true;
    }
    if (unsettled) continue;  // a thread may still run the handler: it stays
    Restore(signo, blocked, signo == installed_now);
    if (!blocked) continue;
    kept = 0;
    for (Outstanding o : g_outstanding) {
      if (o.signo == signo) FreeSlot(o.slot);  // its signal was discarded
      else g_outstanding[kept++] = o;
    }
    g_outstanding.resize(kept);
  }
}

// A child forked while another thread of the parent was inside a call (or with a handler left for a late thread) has
// one thread, none of the parent's outstanding signals, and maybe the handler installed (fork copies the actions):
// it starts afresh, with every action of the broadcast's back to SIG_DFL (the only action it ever replaces).
void ChildAfterFork() {
  g_call_lock.store(0);
  g_cached_pid.store(0);
  t_cached_tid = 0;
  g_proc_checked = false;
  for (int signo = SIGRTMIN; signo <= SIGRTMAX; signo++) {
    struct sigaction current;
    if (sigaction(signo, nullptr, &current) == 0 && IsOurs(current)) {
      struct sigaction dfl;
      memset(&dfl, 0, sizeof dfl);
      dfl.sa_handler = SIG_DFL;
      sigaction(signo, &dfl, nullptr);
    }
    g_installed[signo].on = false;
  }
  g_outstanding.clear();  // keeps its memory: nothing is freed in a child of a threaded process
  g_blockers.clear();
  memset(g_slot_busy, 0, sizeof g_slot_busy);
  g_lowest_free = 0;
}

struct Sent {
  size_t record;  // index in the answers
  int slot;
  int tid;
  int seen;
  int status_error;
};

}  // namespace

long iof_signal_disposition(int signo) {
  struct sigaction current;
  if (sigaction(signo, nullptr, &current) != 0) return -errno;
  sigset_t mask;
  if (sigprocmask(SIG_BLOCK, nullptr, &mask) == 0 && sigismember(&mask, signo)) return 4;
  if (IsOurs(current)) return 3;
  if (current.sa_flags & SA_SIGINFO) return 2;
  if (current.sa_handler == SIG_DFL) return 0;
  if (current.sa_handler == SIG_IGN) return 1;
  return 2;
}

long iof_sigrtmin(void) { return SIGRTMIN; }
long iof_sigrtmax(void) { return SIGRTMAX; }

long iof_broadcast_settle(void) {
  // Never waits for a call in progress on another thread (it settles at its end): the caller's event loop stays free.
  if (!CallTryLock()) return 1;
  struct Unlock {
    ~Unlock() { CallUnlock(); }
  } unlock;
  if (g_outstanding.empty()) return 0;
  int task_dir = open("/proc/self/task", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (task_dir < 0) return -errno;
  Settle(task_dir, 0);
  close(task_dir);
  long installed = 0;
  for (int signo = 1; signo < _NSIG; signo++) installed += g_installed[signo].on;
  return installed;
}

long iof_broadcast_run(int signo, unsigned long value, long timeout_ms, int max_passes,
                       std::vector<iof_thread_answer>* answers, iof_broadcast_summary* summary) {
  if (signo < SIGRTMIN || signo > SIGRTMAX || value > 1 || timeout_ms < 0 || max_passes < 1) return -EINVAL;
  Locked lock;
  answers->clear();
  *summary = {0, 0};
  const pid_t pid = CachedPid();
  const int self = CachedTid();

  // Everything that can fail before a thread is changed: /proc/self/task, that it is ours, its listing, the table.
  int task_dir = open("/proc/self/task", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (task_dir < 0) return -errno;
  struct Closer {
    int fd;
    ~Closer() { close(fd); }
  } closer{task_dir};
  // Checked once per process: a process does not move to another /proc without unshare(2) or setns(2).
  if (!g_proc_checked && !ProcIsOurs(pid)) return -EXDEV;
  g_proc_checked = true;
  std::vector<int> listed;
  long rc = ListTasks(task_dir, &listed, false);
  if (rc < 0) return rc;
  if (listed.size() > static_cast<size_t>(kSlots) - g_outstanding.size()) return -E2BIG;
  // Remembered blockers no longer listed are gone: forgotten (their ids may come back as new threads).
  g_blockers.erase(std::remove_if(g_blockers.begin(), g_blockers.end(),
                                  [&](const Blocker& b) { return std::find(listed.begin(), listed.end(), b.tid) == listed.end(); }),
                   g_blockers.end());
  const bool installed_by_this_call = !g_installed[signo].on;
  rc = Install(signo);
  if (rc < 0) return rc;

  const uint32_t generation = ++g_generation;
  g_desired.store(value, std::memory_order_release);
  answers->reserve(listed.size() + 1);
  answers->push_back({self, IOF_THREAD_DIRECT, 0, 0});  // the calling thread's own prctl: made once the first signals are out
  bool self_done = false;

  std::vector<int> known = {self};  // sorted
  std::vector<Sent> sent;
  std::vector<int> fresh;
  for (;;) {
    fresh.clear();
    for (int tid : listed) {
      if (!std::binary_search(known.begin(), known.end(), tid)) fresh.push_back(tid);
    }
    if (fresh.empty()) break;
    known.insert(known.end(), fresh.begin(), fresh.end());
    std::sort(known.begin(), known.end());
    if (summary->passes == max_passes) {
      // Threads keep appearing faster than passes end: say so rather than list forever.
      for (int tid : fresh) answers->push_back({tid, IOF_THREAD_NOT_REACHED, 0, 0});
      break;
    }
    summary->passes++;

    // Send. A remembered blocker is looked at after the others have been sent theirs (its two /proc reads would only
    // delay them), and the calling thread makes its own prctl then too, while the others run their handlers.
    sent.clear();
    std::vector<int> deferred;
    auto send_to = [&](int tid) {
      int slot = AllocateSlot();
      if (slot < 0) {
        answers->push_back({tid, IOF_THREAD_NOT_REACHED, -E2BIG, 0});
        return;
      }
      g_slots[slot].word.store(Pack(generation, kPending), std::memory_order_release);
      siginfo_t info;
      memset(&info, 0, sizeof info);
      info.si_signo = signo;
      info.si_code = SI_QUEUE;
      info.si_pid = pid;  // with SI_QUEUE, the handler's sign that the signal is ours
      info.si_value.sival_ptr = reinterpret_cast<void*>(static_cast<uintptr_t>((static_cast<uint64_t>(generation) << 32) | static_cast<uint32_t>(slot)));
      long sent_rc = Sys(syscall(SYS_rt_tgsigqueueinfo, pid, tid, signo, &info));
      if (sent_rc == 0) {
        sent.push_back({answers->size(), slot, tid, IOF_SEEN_NOTHING, 0});
        answers->push_back({tid, IOF_THREAD_TIMED_OUT, IOF_SEEN_NOTHING, 0});
      } else {
        FreeSlot(slot);
        answers->push_back({tid, sent_rc == -ESRCH ? IOF_THREAD_EXITED : IOF_THREAD_SEND_FAILED, static_cast<int32_t>(sent_rc), 0});
      }
    };
    for (int tid : fresh) {
      bool remembered = std::any_of(g_blockers.begin(), g_blockers.end(), [tid](const Blocker& b) { return b.tid == tid; });
      if (remembered) deferred.push_back(tid);
      else send_to(tid);
    }
    if (!self_done) {
      self_done = true;
      long set_result = iof_set_io_flusher(value);
      (*answers)[0] = {self, IOF_THREAD_DIRECT, static_cast<int32_t>(set_result), static_cast<int32_t>(iof_get_io_flusher())};
    }
    // A remembered blocker (the same thread: same start time) that still blocks the signal is not sent it again.
    for (int tid : deferred) {
      auto blocker = std::find_if(g_blockers.begin(), g_blockers.end(), [tid](const Blocker& b) { return b.tid == tid; });
      TaskStatus status = ReadStatus(task_dir, tid);
      TaskStat stat;
      long read = IsGone(status.error) ? -ESRCH : ReadStat(task_dir, tid, &stat);
      if (read == -ENOENT || read == -ESRCH) {
        g_blockers.erase(blocker);
        answers->push_back({tid, IOF_THREAD_EXITED, 0, 0});
        continue;
      }
      if (read == 0 && stat.start_time == blocker->start_time && status.error == 0 &&
          (blocker->waits_for_it || (Has(status.blocked, signo) && (!InLibcWindow(status.blocked) || (stat.flags & IOF_PF_IO_WORKER))))) {
        answers->push_back({tid, IOF_THREAD_BLOCKS_SIGNAL, 0, static_cast<int32_t>(stat.flags)});
        continue;
      }
      // It no longer blocks it (a critical section, a fork, has ended), or a new thread has its id, or it cannot be
      // read: sent the signal like any other.
      g_blockers.erase(blocker);
      send_to(tid);
    }

    // Wait for the answers; look at the silent threads' status from 2 ms on.
    const long started = NowNs();
    const long deadline = started + timeout_ms * 1000000L;
    long look_every = kFirstLookNs;
    long next_look = started + look_every;
    while (!sent.empty()) {
      int seen_answers = g_answers.load();
      size_t kept = 0;
      for (Sent& s : sent) {
        uint32_t state = StateOf(g_slots[s.slot].word.load(std::memory_order_acquire));
        if (state == kPending) {
          sent[kept++] = s;
          continue;
        }
        (*answers)[s.record] = {s.tid, IOF_THREAD_ANSWERED, static_cast<int32_t>(SetResultOf(state)), static_cast<int32_t>(GetResultOf(state))};
        FreeSlot(s.slot);
      }
      sent.resize(kept);
      if (sent.empty()) break;
      long now = NowNs();
      if (now >= deadline) break;
      if (now >= next_look) {
        kept = 0;
        for (Sent& s : sent) {
          TaskStatus status = ReadStatus(task_dir, s.tid);
          // Answered since the wait began? The slot says so; the status read cannot tell.
          if (StateOf(g_slots[s.slot].word.load(std::memory_order_acquire)) != kPending) {
            sent[kept++] = s;
            continue;
          }
          if (IsGone(status.error)) {
            (*answers)[s.record] = {s.tid, IOF_THREAD_EXITED, 0, 0};
            FreeSlot(s.slot);
            continue;
          }
          s.status_error = status.error;
          if (status.error) {
            sent[kept++] = s;  // unreadable (EMFILE, ...): not known to be gone, so waited for
            continue;
          }
          s.status_error = 0;
          bool pending = Has(status.pending, signo), blocked = Has(status.blocked, signo);
          TaskStat stat;
          long read;
          if (pending && blocked && BlocksForGood(task_dir, s.tid, status, &stat, &read)) {
            // It blocks the signal: it stays pending there, to be discarded (if it still is, and no debugger holds the
            // thread) before the previous action is back. Its coverage is its flags: what it inherited.
            if (read == 1) read = ReadStat(task_dir, s.tid, &stat);
            (*answers)[s.record] = {s.tid, IOF_THREAD_BLOCKS_SIGNAL, static_cast<int32_t>(read), static_cast<int32_t>(stat.flags)};
            g_outstanding.push_back({s.slot, s.tid, read == 0 ? stat.start_time : 0, signo, true});
            if (read == 0) RememberBlocker(s.tid, stat.start_time);
            continue;
          }
          int seen = pending ? (InLibcWindow(status.blocked) ? IOF_SEEN_NEWBORN : IOF_SEEN_PENDING)
                             : (blocked ? IOF_SEEN_IN_HANDLER : IOF_SEEN_TAKEN);
          // No longer pending, no answer, no debugger, and asleep in the kernel, at two looks in a row: the program's
          // own sigwaitinfo() (which unblocks the signal while it waits) or signalfd took it as its own. The broadcast's
          // handler never sleeps. Nothing of ours is left to come there: the thread is treated as one that blocks the
          // signal, and not sent it again while it lives.
          const bool taken_by_program = !pending && status.tracer == 0 && status.sleeping;
          if (taken_by_program && s.seen == IOF_SEEN_TAKEN_BY_PROGRAM) {
            long stat_read = ReadStat(task_dir, s.tid, &stat);
            (*answers)[s.record] = {s.tid, IOF_THREAD_BLOCKS_SIGNAL, static_cast<int32_t>(stat_read), static_cast<int32_t>(stat.flags)};
            FreeSlot(s.slot);
            if (stat_read == 0) RememberBlocker(s.tid, stat.start_time, true);
            continue;
          }
          if (taken_by_program) seen = IOF_SEEN_TAKEN_BY_PROGRAM;
          s.seen = seen;
          sent[kept++] = s;
        }
        sent.resize(kept);
        look_every = std::min(look_every * 2, kLongestLookNs);
        next_look = now + look_every;
        continue;  // collect what came meanwhile before sleeping
      }
      // Sleep until every thread still waited for has answered (the handler wakes this thread), the next look, or the
      // deadline.
      long slice = std::min(deadline, next_look) - now;
      g_wake_at.store(static_cast<int>(static_cast<unsigned>(seen_answers) + static_cast<unsigned>(sent.size())));
      g_waiting.store(true);
      struct timespec wait = {slice / 1000000000L, slice % 1000000000L};
      syscall(SYS_futex, reinterpret_cast<int*>(&g_answers), FUTEX_WAIT_PRIVATE, seen_answers, &wait, nullptr, 0);
      g_waiting.store(false);
    }
    for (const Sent& s : sent) {
      uint32_t state = StateOf(g_slots[s.slot].word.load(std::memory_order_acquire));
      if (state != kPending) {  // answered just now, after the last look
        (*answers)[s.record] = {s.tid, IOF_THREAD_ANSWERED, static_cast<int32_t>(SetResultOf(state)), static_cast<int32_t>(GetResultOf(state))};
        FreeSlot(s.slot);
        continue;
      }
      // No answer by the deadline: its slot stays reserved, so a late answer is still recorded there.
      (*answers)[s.record] = {s.tid, IOF_THREAD_TIMED_OUT, s.seen == IOF_SEEN_TAKEN_BY_PROGRAM ? IOF_SEEN_TAKEN : s.seen, -s.status_error};
      TaskStat stat;
      g_outstanding.push_back({s.slot, s.tid, ReadStat(task_dir, s.tid, &stat) == 0 ? stat.start_time : 0, signo, false});
    }
    rc = ListTasks(task_dir, &listed);
    if (rc < 0) break;  // the threads reached so far are reported; no new listing, no new pass
  }
  if (!self_done) {  // a process with no other thread
    long set_result = iof_set_io_flusher(value);
    (*answers)[0] = {self, IOF_THREAD_DIRECT, static_cast<int32_t>(set_result), static_cast<int32_t>(iof_get_io_flusher())};
  }
  Settle(task_dir, installed_by_this_call ? signo : 0);
  summary->handler_restored = !g_installed[signo].on;
  return static_cast<long>(answers->size());
}

long iof_execve_between_broadcasts(const char* path, char* const argv[], char* const envp[]) {
  Locked lock;
  // Drain this thread's own copies only (blocked, then taken with a zero wait): SIG_IGN would also discard other
  // threads' signals, whose slots would then never settle if execve failed. Unblocked again before execve, so the new
  // program does not start with them blocked.
  sigset_t ours, old;
  sigemptyset(&ours);
  for (int signo = SIGRTMIN; signo <= SIGRTMAX; signo++) {
    if (g_installed[signo].on) sigaddset(&ours, signo);
  }
  sigprocmask(SIG_BLOCK, &ours, &old);
  const struct timespec now = {0, 0};
  while (sigtimedwait(&ours, nullptr, &now) > 0) {
  }
  sigprocmask(SIG_SETMASK, &old, nullptr);
  return iof_execve(path, argv, envp);
}
