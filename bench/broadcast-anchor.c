/* Anchors for the process-wide benchmarks, measured in the same run as io-flusher: a process of THREADS threads (the
 * main one and THREADS-1 that sleep in pause()), and in it
 *  - glibc's own setxid broadcast: setresuid() with the ids unchanged, which glibc makes on every thread by sending
 *    each one SIGSETXID and waiting for all to answer (nptl/nptl_setxid.c), the mechanism setProcessIoFlusher() copies;
 *  - the floor of setProcessIoFlusher()'s guarantees: the same broadcast done the way io-flusher must do it, in C and
 *    nothing else. Per thread: read its SigBlk from /proc/self/task/TID/status (no signal to a thread that blocks it;
 *    /proc is the only place another thread's mask can be read), tgkill it; wait until every handler (prctl
 *    PR_SET_IO_FLUSHER) has answered; then read every thread's stat back (coverage verified, not believed). Also the
 *    same without the read-back, to show what the SigBlk check alone costs;
 *  - listing the threads: read every /proc/self/task/TID/stat file, as listThreads() does.
 * Usage: broadcast-anchor THREADS REPEATS ITERATIONS -> one JSON line: median us per setresuid call and per thread,
 * the floors per thread, median ms per listing. */
#define _GNU_SOURCE
#include <dirent.h>
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
static atomic_int started;
static atomic_int answers;

static void* sleeper(void* arg) {
  (void)arg;
  tids[atomic_fetch_add(&started, 1)] = (int)syscall(SYS_gettid);
  for (;;) pause();
  return NULL;
}

/* The handler io-flusher installs, reduced to its work: the prctl on this thread, then count and wake the caller. */
static void answer(int signo, siginfo_t* info, void* context) {
  (void)signo, (void)info, (void)context;
  prctl(57 /* PR_SET_IO_FLUSHER */, 0, 0, 0, 0);
  atomic_fetch_add(&answers, 1);
  syscall(SYS_futex, &answers, FUTEX_WAKE_PRIVATE, INT_MAX, NULL, NULL, 0);
}

/* Reads /proc/self/task/TID/FILE (relative to the open task directory) into buf; the bytes read. */
static int read_task_file(int task_dir, int tid, const char* file, char* buf, int size) {
  char path[64];
  snprintf(path, sizeof path, "%d/%s", tid, file);
  int fd = openat(task_dir, path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return 0;
  int n = (int)read(fd, buf, size - 1);
  close(fd);
  buf[n > 0 ? n : 0] = '\0';
  return n;
}

/* One broadcast as setProcessIoFlusher() makes it, over the THREADS-1 sleepers; read_back: verify from stat too. */
static void guaranteed_broadcast(int task_dir, int signo, int count, int read_back) {
  char buf[4096];
  int base = atomic_load(&answers), sent = 0;
  for (int i = 0; i < count; i++) {
    read_task_file(task_dir, tids[i], "status", buf, sizeof buf);
    const char* at = strstr(buf, "\nSigBlk:");
    unsigned long long blocked = at ? strtoull(at + 8, NULL, 16) : ~0ULL;
    if ((blocked >> (signo - 1)) & 1) continue;
    syscall(SYS_tgkill, getpid(), tids[i], signo);
    sent++;
  }
  for (int seen; (seen = atomic_load(&answers)) - base < sent;) syscall(SYS_futex, &answers, FUTEX_WAIT_PRIVATE, seen, NULL, NULL, 0);
  if (read_back)
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
  while (atomic_load(&started) < threads - 1) usleep(1000);
  int signo = SIGRTMAX;
  struct sigaction action;
  memset(&action, 0, sizeof action);
  action.sa_sigaction = answer;
  action.sa_flags = SA_SIGINFO | SA_RESTART;
  sigaction(signo, &action, NULL);
  int task_dir = open("/proc/self/task", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  uid_t ruid, euid, suid;
  getresuid(&ruid, &euid, &suid);
  double setxid[64], listing[64], floor_checked[64], floor_verified[64];
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
    for (int i = 0; i < iterations; i++) guaranteed_broadcast(task_dir, signo, threads - 1, 0);
    floor_checked[r] = (now_ns() - t0) / iterations / 1e3;
    t0 = now_ns();
    for (int i = 0; i < iterations; i++) guaranteed_broadcast(task_dir, signo, threads - 1, 1);
    floor_verified[r] = (now_ns() - t0) / iterations / 1e3;
    t0 = now_ns();
    for (int i = 0; i < iterations; i++) listed = list_threads();
    listing[r] = (now_ns() - t0) / iterations / 1e6;
  }
  qsort(setxid, repeats, sizeof(double), cmp);
  qsort(listing, repeats, sizeof(double), cmp);
  qsort(floor_checked, repeats, sizeof(double), cmp);
  qsort(floor_verified, repeats, sizeof(double), cmp);
  double call_us = setxid[repeats / 2];
  printf("{\"threads\":%d,\"listed\":%d,\"setxidCallUs\":%.3f,\"setxidPerThreadUs\":%.4f,\"checkedFloorPerThreadUs\":%.4f,"
         "\"guaranteedFloorPerThreadUs\":%.4f,\"listMs\":%.4f}\n",
         threads, listed, call_us, call_us / threads, floor_checked[repeats / 2] / threads, floor_verified[repeats / 2] / threads,
         listing[repeats / 2]);
  return 0;
}
