// The native core (native/*.cc without the Node-API glue of native/binding.cc) run on its own, by
// scripts/prebuild.mjs: built by the toolchain that builds a musl prebuild (zig c++, its libc++ linked in statically,
// musl's libc.so dynamically, as in the addon) and run by Debian's musl loader, natively or under qemu-aarch64. No
// Node for musl can be had here, so this is how the system calls the addon makes are shown to work through musl.
//
// Each wrapper is compared with the same system call made here directly (syscall(2) or libc), and its -errno
// convention with errors the kernel is made to return. Results hold on any machine: with or without
// CAP_SYS_RESOURCE, with or without a memlock limit. One line per check, "ok NAME", "FAIL NAME: why" or
// "skip NAME: why" (only for what qemu-user cannot emulate); then "sigrtmin N sigrtmax M" (which libc answered: 35 on
// musl, 34 on glibc) and "core-check: N passed, M failed". Exit status 0 when every check passed.
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "memory_lock.h"
#include "prctl_io_flusher.h"
#include "process_exec.h"
#include "thread_broadcast.h"

static int passed, failed;

static void check(int ok, const char* name, const char* fmt, ...) __attribute__((format(printf, 3, 4)));
static void check(int ok, const char* name, const char* fmt, ...) {
  if (ok) {
    passed++;
    printf("ok %s\n", name);
    return;
  }
  failed++;
  printf("FAIL %s: ", name);
  va_list ap;
  va_start(ap, fmt);
  vprintf(fmt, ap);
  va_end(ap);
  printf("\n");
}

// Under qemu-user (IOF_CORE_CHECK_QEMU names it) a system call it does not emulate answers ENOSYS before reaching any
// kernel (qemu 7.2 has no mlock2): said as a skip, with the reason, rather than taken for the kernel's answer.
static int emulator_lacks(long rc, const char* name) {
  const char* qemu = getenv("IOF_CORE_CHECK_QEMU");
  if (rc != -ENOSYS || !qemu) return 0;
  printf("skip %s: ENOSYS from %s, which does not emulate this system call\n", name, qemu);
  return 1;
}

// A direct system call's answer in the wrappers' convention: the result, or -errno.
static long direct(long rc) { return rc < 0 ? -errno : rc; }

static long thread_self_id(void) {
  char link[64];
  ssize_t n = readlink("/proc/thread-self", link, sizeof link - 1);
  if (n <= 0) return -1;
  link[n] = '\0';
  const char* slash = strrchr(link, '/');
  return slash ? atol(slash + 1) : -1;
}

static long vm_locked_kib(void) {
  FILE* f = fopen("/proc/self/status", "r");
  if (!f) return -1;
  char line[256];
  long kib = -1;
  while (fgets(line, sizeof line, f)) {
    if (sscanf(line, "VmLck: %ld kB", &kib) == 1) break;
  }
  fclose(f);
  return kib;
}

static void* other_thread(void* out) {
  long* ids = out;
  ids[0] = iof_gettid();
  ids[1] = thread_self_id();
  return NULL;
}

static void check_prctl(void) {
  long main_tid = iof_gettid();
  check(main_tid == getpid() && main_tid == thread_self_id(), "gettid on the main thread", "%ld, pid %d", main_tid, getpid());
  long ids[2] = {0, 0};
  pthread_t t;
  if (pthread_create(&t, NULL, other_thread, ids) == 0) pthread_join(t, NULL);
  check(ids[0] > 0 && ids[0] != main_tid && ids[0] == ids[1], "gettid on another thread", "%ld, /proc/thread-self %ld", ids[0], ids[1]);

  long get = iof_get_io_flusher();
  long get_direct = direct(syscall(SYS_prctl, PR_GET_IO_FLUSHER, 0UL, 0UL, 0UL, 0UL));
  check(get == get_direct && (get == 0 || get == 1 || get == -EPERM || get == -EINVAL), "PR_GET_IO_FLUSHER", "%ld, direct %ld", get, get_direct);
  // Setting the state it is in changes nothing; without CAP_SYS_RESOURCE both answer EPERM.
  unsigned long same = get == 1 ? 1 : 0;
  long set = iof_set_io_flusher(same);
  long set_direct = direct(syscall(SYS_prctl, PR_SET_IO_FLUSHER, same, 0UL, 0UL, 0UL));
  check(set == set_direct, "PR_SET_IO_FLUSHER to the current state", "%ld, direct %ld", set, set_direct);
  long bad = iof_set_io_flusher(2);
  check(bad == -EPERM || bad == -EINVAL, "PR_SET_IO_FLUSHER 2 is refused", "%ld", bad);

  // Every argument reaches the kernel: PR_SET_NAME takes a pointer in arg2 and needs no capability.
  char name[16] = "";
  long rc = iof_prctl_raw(PR_SET_NAME, (unsigned long)"iof-core-check", 0UL, 0UL, 0UL);
  prctl(PR_GET_NAME, (unsigned long)name, 0UL, 0UL, 0UL);
  check(rc == 0 && strcmp(name, "iof-core-check") == 0, "prctl passes its arguments through", "%ld, name '%s'", rc, name);
  // PR_GET_NO_NEW_PRIVS wants arg2..arg5 all 0: a 1 in any of them must come back as EINVAL.
  long args_zero = iof_prctl_raw(PR_GET_NO_NEW_PRIVS, 0UL, 0UL, 0UL, 0UL);
  long arg3 = iof_prctl_raw(PR_GET_NO_NEW_PRIVS, 0UL, 1UL, 0UL, 0UL);
  long arg5 = iof_prctl_raw(PR_GET_NO_NEW_PRIVS, 0UL, 0UL, 0UL, 1UL);
  check((args_zero == 0 || args_zero == 1) && arg3 == -EINVAL && arg5 == -EINVAL, "prctl passes arg3..arg5 through",
        "%ld, %ld, %ld", args_zero, arg3, arg5);
}

static void check_memory(void) {
  long page = iof_page_size();
  check(page >= 4096 && (page & (page - 1)) == 0 && page == sysconf(_SC_PAGESIZE), "page size", "%ld", page);
  void* mapped = NULL;
  long rc = iof_map_anonymous(2 * page, &mapped);
  check(rc == 0 && mapped && ((uintptr_t)mapped % page) == 0, "anonymous mapping", "%ld at %p", rc, mapped);
  if (rc != 0) return;
  memset(mapped, 0x5a, 2 * page);

  long before = vm_locked_kib();
  rc = iof_mlock2((uintptr_t)mapped, page, 0);
  long during = vm_locked_kib();
  // ENOMEM or EPERM: RLIMIT_MEMLOCK too small for one page, which a process without CAP_IPC_LOCK may have.
  check(rc == 0 ? during - before >= page / 1024 : (rc == -ENOMEM || rc == -EPERM), "mlock", "%ld, VmLck %ld -> %ld kB", rc, before, during);
  long unlocked = iof_munlock((uintptr_t)mapped, page);
  check(unlocked == 0 && vm_locked_kib() == before, "munlock", "%ld, VmLck %ld kB", unlocked, vm_locked_kib());
  rc = iof_mlock2((uintptr_t)mapped, page, MLOCK_ONFAULT);
  if (!emulator_lacks(rc, "mlock2 MLOCK_ONFAULT")) check(rc == 0 || rc == -ENOMEM || rc == -EPERM, "mlock2 MLOCK_ONFAULT", "%ld", rc);
  iof_munlock((uintptr_t)mapped, page);
  rc = iof_mlock2((uintptr_t)mapped, page, 0x100);  // an unknown flag
  if (!emulator_lacks(rc, "mlock2 with an unknown flag")) check(rc == -EINVAL, "mlock2 with an unknown flag (EINVAL)", "%ld", rc);

  rc = iof_munmap(mapped, 2 * page);
  check(rc == 0, "munmap", "%ld", rc);
  rc = iof_munlock((uintptr_t)mapped, page);
  check(rc == -ENOMEM, "munlock of memory no longer mapped (ENOMEM)", "%ld", rc);

  uint64_t limits[2];
  struct rlimit direct_limits;
  rc = iof_getrlimit(RLIMIT_NOFILE, limits);
  getrlimit(RLIMIT_NOFILE, &direct_limits);
  check(rc == 0 && limits[0] == direct_limits.rlim_cur && limits[1] == direct_limits.rlim_max, "getrlimit RLIMIT_NOFILE",
        "%ld: %llu/%llu", rc, (unsigned long long)limits[0], (unsigned long long)limits[1]);
  rc = iof_getrlimit(RLIMIT_AS, limits);
  getrlimit(RLIMIT_AS, &direct_limits);
  check(rc == 0 && (limits[1] == UINT64_MAX) == (direct_limits.rlim_max == RLIM_INFINITY), "getrlimit: RLIM_INFINITY as UINT64_MAX",
        "%ld: %llu", rc, (unsigned long long)limits[1]);
  // Lowering a soft limit needs no privilege; a soft limit above the hard one is EINVAL.
  uint64_t nofile[2];
  iof_getrlimit(RLIMIT_NOFILE, nofile);
  rc = iof_setrlimit(RLIMIT_NOFILE, nofile[0] - 1, nofile[1]);
  getrlimit(RLIMIT_NOFILE, &direct_limits);
  check(rc == 0 && direct_limits.rlim_cur == nofile[0] - 1, "setrlimit lowers RLIMIT_NOFILE", "%ld", rc);
  rc = iof_setrlimit(RLIMIT_NOFILE, nofile[1] + 1, nofile[1]);
  check(rc == -EINVAL, "setrlimit soft above hard (EINVAL)", "%ld", rc);
}

static void check_exec(void) {
  int fds[2];
  if (pipe(fds) != 0) {
    check(0, "pipe", "%s", strerror(errno));
    return;
  }
  long flags = iof_get_fd_flags(fds[0]);
  long rc = iof_set_fd_flags(fds[0], flags | O_NONBLOCK);
  char byte;
  long got = direct(read(fds[0], &byte, 1));
  check(flags >= 0 && !(flags & O_NONBLOCK) && rc == 0 && (fcntl(fds[0], F_GETFL) & O_NONBLOCK) && got == -EAGAIN,
        "F_GETFL/F_SETFL O_NONBLOCK", "flags %ld, set %ld, read %ld", flags, rc, got);
  long before = iof_get_fd_cloexec(fds[1]);
  long set = iof_set_fd_cloexec(fds[1], 1);
  long during = fcntl(fds[1], F_GETFD) & FD_CLOEXEC;
  long cleared = iof_set_fd_cloexec(fds[1], 0);
  check(before == 0 && set == 0 && during && cleared == 0 && iof_get_fd_cloexec(fds[1]) == 0, "FD_CLOEXEC set and cleared",
        "%ld %ld %ld %ld", before, set, during, cleared);
  close(fds[0]);
  close(fds[1]);
  check(iof_get_fd_flags(fds[0]) == -EBADF && iof_set_fd_cloexec(fds[0], 1) == -EBADF, "a closed descriptor (EBADF)", "%ld",
        iof_get_fd_flags(fds[0]));

  char* const argv[] = {(char*)"sh", (char*)"-c", (char*)"exit $IOF_STATUS", NULL};
  char* const envp[] = {(char*)"IOF_STATUS=7", NULL};
  rc = iof_execve("/nonexistent/iof-core-check", argv, envp);
  check(rc == -ENOENT, "execve of a missing file (ENOENT)", "%ld", rc);
  rc = iof_execve("/", argv, envp);
  check(rc == -EACCES, "execve of a directory (EACCES)", "%ld", rc);
  // A real execve, with its arguments and environment: the host's /bin/sh (under qemu-aarch64 too, where the kernel
  // runs the host's binary itself).
  pid_t child = fork();
  if (child == 0) {
    iof_execve("/bin/sh", argv, envp);
    _exit(99);
  }
  int status = 0;
  waitpid(child, &status, 0);
  check(WIFEXITED(status) && WEXITSTATUS(status) == 7, "execve runs the command with its argv and envp", "status 0x%x", status);
}

int main(void) {
  setvbuf(stdout, NULL, _IOLBF, 0);
  check_prctl();
  check_memory();
  check_exec();
  long min = iof_sigrtmin(), max = iof_sigrtmax();
  check(min == SIGRTMIN && max == SIGRTMAX, "SIGRTMIN/SIGRTMAX as this libc has them", "%ld/%ld, libc %d/%d", min, max, SIGRTMIN, SIGRTMAX);
  printf("sigrtmin %ld sigrtmax %ld\n", min, max);
  printf("core-check: %d passed, %d failed\n", passed, failed);
  return failed ? 1 : 0;
}
