// The stat files of this process's threads in one call, for listThreads() (lib/procfs.ts parses them): one open and
// one read per thread, without a JavaScript round trip per thread. See: man 5 proc (/proc/pid/task/tid/stat).
#ifndef IO_FLUSHER_TASK_STATS_H
#define IO_FLUSHER_TASK_STATS_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

// The most bytes of one stat file kept; a longer one (it cannot be, with a 64-byte name) is left for one read on its own.
#define IOF_STAT_MAX 2047
// The most threads one call reads.
#define IOF_STAT_BATCH 8192

// /proc/self/task/TID/stat of each of `count` threads, each file's text followed by a NUL byte in `out` (nothing but
// the NUL for a thread that is gone, or whose text does not fit IOF_STAT_MAX bytes). `size` must be at least
// count * (IOF_STAT_MAX + 1). Returns the bytes written, or -EINVAL, or -errno of opening /proc/self/task.
long iof_read_task_stats(const int* tids, int count, char* out, size_t size);

#ifdef __cplusplus
}
#endif

#endif
