// Memory locking and its limit, for the forward-progress kit (lib/memory.ts). IO_FLUSHER keeps a daemon's
// allocations out of reclaim recursion but does not make them succeed; storage daemons also lock their memory.
// One system call per function; 0 or -errno. See: man 2 mlockall, man 2 getrlimit.
#ifndef IO_FLUSHER_MEMORY_LOCK_H
#define IO_FLUSHER_MEMORY_LOCK_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

// mlockall(flags) with MCL_* flags as given. Returns 0 or -errno.
long iof_mlockall(int flags);

// munlockall(). Returns 0 or -errno.
long iof_munlockall(void);

// getrlimit(resource) into limits[0] (soft) and limits[1] (hard), RLIM_INFINITY as UINT64_MAX. Returns 0 or -errno.
long iof_getrlimit(int resource, uint64_t limits[2]);

// setrlimit(resource, {soft, hard}), UINT64_MAX meaning RLIM_INFINITY. Returns 0 or -errno.
long iof_setrlimit(int resource, uint64_t soft, uint64_t hard);

#ifdef __cplusplus
}
#endif

#endif
