/* The floor for the io-flusher benchmarks: the same prctl calls the addon makes, from a C loop, no JavaScript.
 * Usage: prctl-floor ITERATIONS REPEATS  -> prints one JSON line: median ns/call for GET and SET (and their result). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/prctl.h>
#include <time.h>

#include "timing.h"

#ifndef PR_SET_IO_FLUSHER
#define PR_SET_IO_FLUSHER 57
#endif
#ifndef PR_GET_IO_FLUSHER
#define PR_GET_IO_FLUSHER 58
#endif

int main(int argc, char** argv) {
  long iterations = argc > 1 ? atol(argv[1]) : 200000;
  int repeats = argc > 2 ? atoi(argv[2]) : 7;
  double get[64], set[64];
  int get_rc = 0, set_rc = 0, get_errno = 0, set_errno = 0;
  if (repeats > 64) repeats = 64;
  for (int r = 0; r < repeats; r++) {
    double t0 = now_ns();
    for (long i = 0; i < iterations; i++) get_rc = prctl(PR_GET_IO_FLUSHER, 0UL, 0UL, 0UL, 0UL);
    get_errno = errno;
    double t1 = now_ns();
    for (long i = 0; i < iterations; i++) set_rc = prctl(PR_SET_IO_FLUSHER, 0UL, 0UL, 0UL, 0UL);
    set_errno = errno;
    double t2 = now_ns();
    get[r] = (t1 - t0) / iterations;
    set[r] = (t2 - t1) / iterations;
  }
  qsort(get, repeats, sizeof get[0], cmp);
  qsort(set, repeats, sizeof set[0], cmp);
  printf("{\"getNs\":%.1f,\"setNs\":%.1f,\"getResult\":%d,\"setResult\":%d}\n", get[repeats / 2], set[repeats / 2],
         get_rc < 0 ? -get_errno : get_rc, set_rc < 0 ? -set_errno : set_rc);
  return 0;
}
