/* Anchors for the process-wide benchmarks, measured in the same run as io-flusher: a process of THREADS threads (the
 * main one and THREADS-1 that sleep in pause()), and in it
 *  - glibc's own setxid broadcast: setresuid() with the ids unchanged, which glibc makes on every thread by sending
 *    each one SIGSETXID and waiting for all to answer (nptl/nptl_setxid.c), the mechanism setProcessIoFlusher() copies;
 *  - setProcessIoFlusher()'s guarantees done in C with nothing else, as io-flusher's native pass does them: the calling
 *    thread's own prctl; per other thread, read its SigBlk from /proc/self/task/TID/status (no signal to a thread that
 *    blocks it; /proc is the only place another thread's mask can be read) and tgkill it; wait on a futex the handler
 *    (prctl PR_SET_IO_FLUSHER, count, wake the caller once all have answered) wakes; then read every thread's stat,
 *    as io-flusher reads it to verify coverage. Also the same without that read-back, and the status reads alone;
 *  - listing the threads: read every /proc/self/task/TID/stat file, as listThreads() does.
 * Usage: broadcast-anchor THREADS REPEATS ITERATIONS -> one JSON line: median us per setresuid call and per thread,
 * the C versions per thread (divided by THREADS, as glibc's figure is), median ms per listing. Exits 1, saying why,
 * if a sleeper could not be read or signalled, or did not answer within 10 s. */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/futex.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "timing.h"

#define MAX_THREADS 8192
static int tids[MAX_THREADS];
static atomic_int claimed; /* slots of tids[] taken */
static atomic_int ready;   /* slots written */
/* Answers made, modulo 2^32, and the count at which the handler wakes the waiting caller (io-flusher's scheme). */
static atomic_uint answers;
static atomic_uint wake_at;
static atomic_int waiting;

static void* sleeper(void* arg) {
  (void)arg;
  tids[atomic_fetch_add(&claimed, 1)] = (int)syscall(SYS_gettid);
  atomic_fetch_add_explicit(&ready, 1, memory_order_release);
  for (;;) pause();
  return NULL;
}

/* The handler io-flusher installs, reduced to its work: the prctl on this thread, count, and wake the caller only
 * once every thread it waits for has answered. */
static void answer(int signo, siginfo_t* info, void* context) {
  (void)signo, (void)info, (void)context;
  int saved_errno = errno;
  prctl(57 /* PR_SET_IO_FLUSHER */, 0, 0, 0, 0);
  unsigned reached = atomic_fetch_add(&answers, 1) + 1u;
  if (atomic_load(&waiting) && (int)(reached - atomic_load(&wake_at)) >= 0)
    syscall(SYS_futex, &answers, FUTEX_WAKE_PRIVATE, INT_MAX, NULL, NULL, 0);
  errno = saved_errno;
}

static void fail(const char* what, int tid) {
  fprintf(stderr, "broadcast-anchor: %s (thread %d)\n", what, tid);
  exit(1);
}

/* Reads /proc/self/task/TID/FILE (relative to the open task directory) into buf; exits if it cannot. */
static void read_task_file(int task_dir, int tid, const char* file, char* buf, int size) {
  char path[64];
  snprintf(path, sizeof path, "%d/%s", tid, file);
  int fd = openat(task_dir, path, O_RDONLY | O_CLOEXEC);
  int n = fd < 0 ? -1 : (int)read(fd, buf, size - 1);
  if (fd >= 0) close(fd);
  if (n <= 0) fail("cannot read its /proc file", tid);
  buf[n] = '\0';
}

enum step { STATUS_ONLY, CHECK_AND_SIGNAL, ALL_GUARANTEES };

/* One broadcast as setProcessIoFlusher() makes it, over the main thread and the `count` sleepers. */
static void guaranteed_broadcast(pid_t pid, int task_dir, int signo, int count, enum step upto) {
  char buf[4096];
  unsigned base = atomic_load(&answers), sent = 0;
  if (upto != STATUS_ONLY) prctl(57 /* PR_SET_IO_FLUSHER */, 0, 0, 0, 0); /* the calling thread, directly */
  for (int i = 0; i < count; i++) {
    read_task_file(task_dir, tids[i], "status", buf, sizeof buf);
    if (upto == STATUS_ONLY) continue;
    const char* at = strstr(buf, "\nSigBlk:");
    if (!at) fail("no SigBlk line", tids[i]);
    if ((strtoull(at + 8, NULL, 16) >> (signo - 1)) & 1) continue; /* blocks it: never sent (no sleeper does) */
    if (syscall(SYS_tgkill, pid, tids[i], signo) != 0) fail("tgkill failed", tids[i]);
    sent++;
  }
  atomic_store(&wake_at, base + sent);
  atomic_store(&waiting, 1);
  double deadline = now_ns() + 10e9;
  for (unsigned seen; (seen = atomic_load(&answers)) - base < sent;) {
    if (now_ns() > deadline) fail("a signalled thread did not answer within 10 s", 0);
    struct timespec slice = {0, 100000000};
    syscall(SYS_futex, &answers, FUTEX_WAIT_PRIVATE, seen, &slice, NULL, 0);
  }
  atomic_store(&waiting, 0);
  if (upto == ALL_GUARANTEES)
    for (int i = 0; i < count; i++) read_task_file(task_dir, tids[i], "stat", buf, sizeof buf);
}

/* Opens /proc/self/task, and per entry opens, reads and closes its stat file. Returns the number read. */
static int list_threads(void) {
  char path[300], buf[1024];
  int n = 0;
  DIR* dir = opendir("/proc/self/task");
  if (!dir) return -1;
  struct dirent* entry;
  while ((entry = readdir(dir)) != NULL) {
    if (entry->d_name[0] == '.') continue;
    snprintf(path, sizeof path, "/proc/self/task/%s/stat", entry->d_name);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) continue;
    if (read(fd, buf, sizeof buf) > 0) n++;
    close(fd);
  }
  closedir(dir);
  return n;
}

int main(int argc, char** argv) {
  int threads = argc > 1 ? atoi(argv[1]) : 12;
  int repeats = argc > 2 ? atoi(argv[2]) : 7;
  int iterations = argc > 3 ? atoi(argv[3]) : 50;
  if (threads < 2 || threads > MAX_THREADS || repeats < 1 || repeats > 64 || iterations < 1) return 2;
  pthread_attr_t attr;
  pthread_attr_init(&attr);
  pthread_attr_setstacksize(&attr, 64 * 1024);
  for (int i = 1; i < threads; i++) {
    pthread_t t;
    if (pthread_create(&t, &attr, sleeper, NULL) != 0) {
      perror("pthread_create");
      return 1;
    }
  }
  while (atomic_load_explicit(&ready, memory_order_acquire) < threads - 1) usleep(1000);
  int signo = SIGRTMAX;
  struct sigaction action;
  memset(&action, 0, sizeof action);
  action.sa_sigaction = answer;
  action.sa_flags = SA_SIGINFO | SA_RESTART;
  sigaction(signo, &action, NULL);
  int task_dir = open("/proc/self/task", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  uid_t ruid, euid, suid;
  getresuid(&ruid, &euid, &suid);
  pid_t pid = getpid();
  double setxid[64], listing[64], status_only[64], floor_checked[64], floor_verified[64];
  int listed = 0;
  for (int r = 0; r < repeats; r++) {
    double t0 = now_ns();
    for (int i = 0; i < iterations; i++) {
      if (setresuid(ruid, euid, suid) != 0) {
        perror("setresuid");
        return 1;
      }
    }
    setxid[r] = (now_ns() - t0) / iterations / 1e3;
    t0 = now_ns();
    for (int i = 0; i < iterations; i++) guaranteed_broadcast(pid, task_dir, signo, threads - 1, STATUS_ONLY);
    status_only[r] = (now_ns() - t0) / iterations / 1e3;
    t0 = now_ns();
    for (int i = 0; i < iterations; i++) guaranteed_broadcast(pid, task_dir, signo, threads - 1, CHECK_AND_SIGNAL);
    floor_checked[r] = (now_ns() - t0) / iterations / 1e3;
    t0 = now_ns();
    for (int i = 0; i < iterations; i++) guaranteed_broadcast(pid, task_dir, signo, threads - 1, ALL_GUARANTEES);
    floor_verified[r] = (now_ns() - t0) / iterations / 1e3;
    t0 = now_ns();
    for (int i = 0; i < iterations; i++) listed = list_threads();
    listing[r] = (now_ns() - t0) / iterations / 1e6;
  }
  qsort(setxid, repeats, sizeof(double), cmp);
  qsort(listing, repeats, sizeof(double), cmp);
  qsort(status_only, repeats, sizeof(double), cmp);
  qsort(floor_checked, repeats, sizeof(double), cmp);
  qsort(floor_verified, repeats, sizeof(double), cmp);
  double call_us = setxid[repeats / 2];
  printf("{\"threads\":%d,\"listed\":%d,\"setxidCallUs\":%.3f,\"setxidPerThreadUs\":%.4f,\"statusReadPerThreadUs\":%.4f,"
         "\"checkedFloorPerThreadUs\":%.4f,\"guaranteedFloorPerThreadUs\":%.4f,\"listMs\":%.4f}\n",
         threads, listed, call_us, call_us / threads, status_only[repeats / 2] / threads, floor_checked[repeats / 2] / threads,
         floor_verified[repeats / 2] / threads, listing[repeats / 2]);
  return 0;
}
