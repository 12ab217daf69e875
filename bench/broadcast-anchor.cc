// Anchors for the process-wide benchmarks, measured in the same run as io-flusher: a process of THREADS threads (the
// main one and THREADS-1 that sleep in pause()), and in it
//  - glibc's own setxid broadcast: setresuid() with the ids unchanged, which glibc makes on every thread by sending
//    each one SIGSETXID and waiting for all to answer (nptl/nptl_setxid.c), the mechanism setProcessIoFlusher() copies;
//  - io-flusher's native core over the same threads: iof_broadcast_run (native/thread_broadcast.cc, linked in), the
//    whole process-wide set with every guarantee it keeps, without Node and without JavaScript. Its distance from
//    glibc is what the guarantees cost (the listing of /proc/self/task and again after the wait, the check of the
//    signal's action and of the calling thread's mask, the read-back with PR_GET_IO_FLUSHER in each handler); its
//    samples alternate with glibc's;
//  - listing the threads: read every /proc/self/task/TID/stat file, as listThreads() does.
// Usage: broadcast-anchor THREADS REPEATS ITERATIONS -> one JSON line: median us per call and per thread of each,
// median ms per listing.
#include <dirent.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <vector>

#include "../native/thread_broadcast.h"
#include "timing.h"

namespace {

std::atomic<int> ready{0};

void* Sleeper(void*) {
  ready.fetch_add(1, std::memory_order_release);
  for (;;) pause();
  return nullptr;
}

// Opens /proc/self/task, and per entry opens, reads and closes its stat file. Returns the number read.
int ListThreads() {
  char path[300], buf[1024];
  int n = 0;
  DIR* dir = opendir("/proc/self/task");
  if (!dir) return -1;
  struct dirent* entry;
  while ((entry = readdir(dir)) != nullptr) {
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

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

}  // namespace

int main(int argc, char** argv) {
  int threads = argc > 1 ? atoi(argv[1]) : 12;
  int repeats = argc > 2 ? atoi(argv[2]) : 7;
  int iterations = argc > 3 ? atoi(argv[3]) : 50;
  if (threads < 2 || threads > 8192 || repeats < 1 || iterations < 1) return 2;
  pthread_attr_t attr;
  pthread_attr_init(&attr);
  pthread_attr_setstacksize(&attr, 64 * 1024);
  for (int i = 1; i < threads; i++) {
    pthread_t t;
    if (pthread_create(&t, &attr, Sleeper, nullptr) != 0) {
      perror("pthread_create");
      return 1;
    }
  }
  while (ready.load(std::memory_order_acquire) < threads - 1) usleep(1000);
  uid_t ruid, euid, suid;
  getresuid(&ruid, &euid, &suid);
  std::vector<iof_thread_answer> answers;
  iof_broadcast_summary summary;
  if (iof_broadcast_run(SIGRTMAX, 0, 1000, 16, &answers, &summary) < 0) {
    fprintf(stderr, "broadcast-anchor: iof_broadcast_run failed\n");
    return 1;
  }
  std::vector<double> setxid, core, listing;
  int listed = 0;
  for (int r = 0; r < repeats; r++) {
    double t0 = now_ns();
    for (int i = 0; i < iterations; i++) {
      if (setresuid(ruid, euid, suid) != 0) {
        perror("setresuid");
        return 1;
      }
    }
    setxid.push_back((now_ns() - t0) / iterations / 1e3);
    t0 = now_ns();
    for (int i = 0; i < iterations; i++) {
      if (iof_broadcast_run(SIGRTMAX, i & 1, 1000, 16, &answers, &summary) != threads) {
        fprintf(stderr, "broadcast-anchor: iof_broadcast_run did not answer for %d threads\n", threads);
        return 1;
      }
    }
    core.push_back((now_ns() - t0) / iterations / 1e3);
    t0 = now_ns();
    for (int i = 0; i < iterations; i++) listed = ListThreads();
    listing.push_back((now_ns() - t0) / iterations / 1e6);
  }
  double setxid_us = Median(setxid), core_us = Median(core);
  printf("{\"threads\":%d,\"listed\":%d,\"setxidCallUs\":%.3f,\"setxidPerThreadUs\":%.4f,\"nativeCorePerThreadUs\":%.4f,"
         "\"listMs\":%.4f}\n",
         threads, listed, setxid_us, setxid_us / threads, core_us / threads, Median(listing));
  return 0;
}
