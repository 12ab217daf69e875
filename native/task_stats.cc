// See task_stats.h.
#include "task_stats.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <unistd.h>

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
