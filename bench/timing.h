/* Timing helpers shared by the C programs of the io-flusher benchmarks (bench/run.mjs compiles them). */
#ifndef IO_FLUSHER_BENCH_TIMING_H
#define IO_FLUSHER_BENCH_TIMING_H

#include <time.h>

static double now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1e9 + ts.tv_nsec;
}

/* qsort comparator for doubles (medians). */
static int cmp(const void* a, const void* b) {
  double x = *(const double*)a, y = *(const double*)b;
  return x < y ? -1 : x > y;
}

#endif
