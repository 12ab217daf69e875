// See process_exec.h.
#include "process_exec.h"

#include <errno.h>
#include <fcntl.h>
#include <unistd.h>

long iof_execve(const char* path, char* const argv[], char* const envp[]) {
  execve(path, argv, envp);
  return -errno;
}

long iof_get_fd_flags(int fd) {
  int flags = fcntl(fd, F_GETFL);
  return flags < 0 ? -errno : flags;
}

long iof_set_fd_flags(int fd, long flags) {
  return fcntl(fd, F_SETFL, static_cast<int>(flags)) == 0 ? 0 : -errno;
}

long iof_get_fd_cloexec(int fd) {
  int flags = fcntl(fd, F_GETFD);
  return flags < 0 ? -errno : (flags & FD_CLOEXEC ? 1 : 0);
}

long iof_set_fd_cloexec(int fd, long cloexec) {
  int flags = fcntl(fd, F_GETFD);
  if (flags < 0) return -errno;
  flags = cloexec ? (flags | FD_CLOEXEC) : (flags & ~FD_CLOEXEC);
  return fcntl(fd, F_SETFD, flags) == 0 ? 0 : -errno;
}
