/* Anchors for the process-wide benchmarks, measured in the same run as io-flusher: a process of THREADS threads (the
 * main one and THREADS-1 that sleep in pause()), and in it
 *  - glibc's own setxid broadcast: setresuid() with the ids unchanged, which glibc makes on every thread by sending
 *    each one SIGSETXID and waiting for all to answer (nptl/nptl_setxid.c), the mechanism setProcessIoFlusher() copies;
 *  - listing the threads: read every /proc/self/task/TID/stat file, as listThreads() does.
 * Usage: broadcast-anchor THREADS REPEATS ITERATIONS -> one JSON line: median us per setresuid call and per thread,
 * median ms per listing. */
#define _GNU_SOURCE
#include <dirent.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "timing.h"

#define MAX_THREADS 8192
static int tids[MAX_THREADS];
static atomic_int claimed; /* slots of tids[] taken */
static atomic_int ready;   /* slots written */
static void* sleeper(void* arg) {
  (void)arg;
  tids[atomic_fetch_add(&claimed, 1)] = (int)syscall(SYS_gettid);
  atomic_fetch_add_explicit(&ready, 1, memory_order_release);
  for (;;) pause();
  return NULL;
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
  uid_t ruid, euid, suid;
  getresuid(&ruid, &euid, &suid);
  double setxid[64], listing[64];
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
    for (int i = 0; i < iterations; i++) listed = list_threads();
    listing[r] = (now_ns() - t0) / iterations / 1e6;
  }
  qsort(setxid, repeats, sizeof(double), cmp);
  qsort(listing, repeats, sizeof(double), cmp);
  double call_us = setxid[repeats / 2];
  printf("{\"threads\":%d,\"listed\":%d,\"setxidCallUs\":%.3f,\"setxidPerThreadUs\":%.4f,\"listMs\":%.4f}\n",
         threads, listed, call_us, call_us / threads, listing[repeats / 2]);
  return 0;
}
