// execve(2) and the stdio descriptor flags to restore before it, for `io-flusher exec` and reexecWithIoFlusher():
// the state set on the calling thread survives execve, so every thread of the new program inherits it.
// Each function makes the system call its name says (iof_set_fd_cloexec makes two: F_GETFD, then F_SETFD); -errno on
// failure. See: man 2 execve, man 2 fcntl.
#ifndef IO_FLUSHER_PROCESS_EXEC_H
#define IO_FLUSHER_PROCESS_EXEC_H

#ifdef __cplusplus
extern "C" {
#endif

// execve(path, argv, envp). Returns only on failure, with -errno.
long iof_execve(const char* path, char* const argv[], char* const envp[]);

// fcntl(fd, F_GETFL) / fcntl(fd, F_SETFL, flags). Return the flags (or 0) or -errno.
long iof_get_fd_flags(int fd);
long iof_set_fd_flags(int fd, long flags);

// fcntl(fd, F_GETFD) / fcntl(fd, F_SETFD, flags): the descriptor flags (FD_CLOEXEC). Node marks the descriptors it
// inherited close-on-exec at start-up (libuv uv_disable_stdio_inheritance), so exec must clear it on those it passes on.
long iof_get_fd_cloexec(int fd);
long iof_set_fd_cloexec(int fd, long cloexec);

#ifdef __cplusplus
}
#endif

#endif
