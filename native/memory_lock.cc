// See memory_lock.h.
#include "memory_lock.h"

#include <errno.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

// Old kernel headers (before 4.4) lack the number; it is fixed per architecture.
#if !defined(SYS_mlock2) && defined(__x86_64__)
#define SYS_mlock2 325
#elif !defined(SYS_mlock2) && defined(__aarch64__)
#define SYS_mlock2 284
#endif

long iof_mlockall(int flags) { return mlockall(flags) == 0 ? 0 : -errno; }

long iof_munlockall(void) { return munlockall() == 0 ? 0 : -errno; }

long iof_mlock2(uintptr_t address, size_t length, unsigned int flags) {
  const void* start = reinterpret_cast<const void*>(address);
  if (flags == 0) return mlock(start, length) == 0 ? 0 : -errno;
  return syscall(SYS_mlock2, start, length, flags) == 0 ? 0 : -errno;
}

long iof_munlock(uintptr_t address, size_t length) {
  return munlock(reinterpret_cast<const void*>(address), length) == 0 ? 0 : -errno;
}

long iof_map_anonymous(size_t length, void** address) {
  void* mapped = mmap(nullptr, length, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (mapped == MAP_FAILED) return -errno;
  *address = mapped;
  return 0;
}

long iof_munmap(void* address, size_t length) { return munmap(address, length) == 0 ? 0 : -errno; }

long iof_page_size(void) { return sysconf(_SC_PAGESIZE); }

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
