// One system call per function; -errno on failure. See prctl_io_flusher.h.
#include "prctl_io_flusher.h"

#include <errno.h>
#include <linux/capability.h>
#include <sys/syscall.h>
#include <unistd.h>

long iof_prctl_raw(int option, unsigned long arg2, unsigned long arg3, unsigned long arg4, unsigned long arg5) {
  // prctl(2) is variadic in glibc: every argument is passed as a real unsigned long so no register garbage reaches
  // arg3..arg5, which the kernel would answer with EINVAL (indistinguishable from "kernel too old").
  int rc = prctl(option, arg2, arg3, arg4, arg5);
  return rc < 0 ? -static_cast<long>(errno) : rc;
}

long iof_set_io_flusher(unsigned long value) {
  return iof_prctl_raw(PR_SET_IO_FLUSHER, value, 0UL, 0UL, 0UL);
}

long iof_get_io_flusher(void) {
  return iof_prctl_raw(PR_GET_IO_FLUSHER, 0UL, 0UL, 0UL, 0UL);
}

long iof_gettid(void) {
  // syscall(2) rather than gettid(3): glibc gained the wrapper only in 2.30 and musl later.
  return syscall(SYS_gettid);
}

long iof_cap_effective(uint64_t* effective) {
  struct __user_cap_header_struct header = {_LINUX_CAPABILITY_VERSION_3, 0};
  struct __user_cap_data_struct data[2];
  if (syscall(SYS_capget, &header, data) != 0) return -static_cast<long>(errno);
  *effective = data[0].effective | (static_cast<uint64_t>(data[1].effective) << 32);
  return 0;
}
