/*
 * seccomp-old-kernel: run a command as if on a kernel older than Linux 5.6.
 *
 * Why: PR_SET_IO_FLUSHER (57) and PR_GET_IO_FLUSHER (58) arrived in 5.6 (commit 8d19f1c8e193). An older kernel
 * answers EINVAL to any prctl option it does not know (the default case of the switch in kernel/sys.c), and no
 * kernel that old can still be fetched from the Debian archive (buster is gone). vm/kernel-run --mode oldkernel
 * wraps the command in this program, which installs a seccomp filter making exactly those two options fail with
 * EINVAL and leaves every other system call alone. The filter is inherited by every child and survives execve.
 *
 * Usage: seccomp-old-kernel COMMAND [ARGS...]
 * Build: cc -O2 -static -o seccomp-old-kernel seccomp-old-kernel.c   (plain C, no libseccomp; kernel-run does it)
 */
#include <errno.h>
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#ifndef PR_SET_NO_NEW_PRIVS
#define PR_SET_NO_NEW_PRIVS 38
#endif

int main(int argc, char **argv) {
  if (argc < 2) {
    fprintf(stderr, "usage: %s COMMAND [ARGS...]\n", argv[0]);
    return 126;
  }

  struct sock_filter filter[] = {
    /* Only judge native x86-64 calls; anything else (x32, i386 ABI) is allowed through untouched. */
    BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, arch)),
    BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, AUDIT_ARCH_X86_64, 1, 0),
    BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
    /* prctl? */
    BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
    BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_prctl, 1, 0),
    BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
    /* option (arg0, an int: the low 32 bits on little-endian x86-64) == 57 or 58 -> EINVAL. */
    BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, args[0])),
    BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, 57 /* PR_SET_IO_FLUSHER */, 2, 0),
    BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, 58 /* PR_GET_IO_FLUSHER */, 1, 0),
    BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
    BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | (EINVAL & SECCOMP_RET_DATA)),
  };
  struct sock_fprog prog = {
    .len = (unsigned short)(sizeof(filter) / sizeof(filter[0])),
    .filter = filter,
  };

  /* Required to install a filter without CAP_SYS_ADMIN; harmless as root. */
  if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) {
    fprintf(stderr, "seccomp-old-kernel: PR_SET_NO_NEW_PRIVS: %s\n", strerror(errno));
    return 126;
  }
  if (prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog, 0, 0) != 0) {
    fprintf(stderr, "seccomp-old-kernel: PR_SET_SECCOMP: %s\n", strerror(errno));
    return 126;
  }

  execvp(argv[1], argv + 1);
  fprintf(stderr, "seccomp-old-kernel: %s: %s\n", argv[1], strerror(errno));
  return errno == ENOENT ? 127 : 126;
}
