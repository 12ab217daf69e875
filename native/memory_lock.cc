// See memory_lock.h.
#include "memory_lock.h"

#include <errno.h>
#include <sys/mman.h>
#include <sys/resource.h>

long iof_mlockall(int flags) { return mlockall(flags) == 0 ? 0 : -errno; }

long iof_munlockall(void) { return munlockall() == 0 ? 0 : -errno; }

long iof_getrlimit(int resource, uint64_t limits[2]) {
  struct rlimit rl;
  if (getrlimit(resource, &rl) != 0) return -errno;
  limits[0] = rl.rlim_cur == RLIM_INFINITY ? UINT64_MAX : static_cast<uint64_t>(rl.rlim_cur);
  limits[1] = rl.rlim_max == RLIM_INFINITY ? UINT64_MAX : static_cast<uint64_t>(rl.rlim_max);
  return 0;
}

long iof_setrlimit(int resource, uint64_t soft, uint64_t hard) {
  struct rlimit rl;
  rl.rlim_cur = soft == UINT64_MAX ? RLIM_INFINITY : static_cast<rlim_t>(soft);
  rl.rlim_max = hard == UINT64_MAX ? RLIM_INFINITY : static_cast<rlim_t>(hard);
  return setrlimit(resource, &rl) == 0 ? 0 : -errno;
}
