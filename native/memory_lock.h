// Memory locking and its limit, for the forward-progress kit (lib/code-lock.ts, lib/locked-buffers.ts,
// lib/memlock-limit.ts). IO_FLUSHER keeps a daemon's allocations out of reclaim recursion but does not make them
// succeed; storage daemons also lock their memory.
// One system call per function; 0 (or the result) or -errno. See: man 2 mlock, man 2 mmap, man 2 getrlimit.
#ifndef IO_FLUSHER_MEMORY_LOCK_H
#define IO_FLUSHER_MEMORY_LOCK_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

// mlockall(flags) with MCL_* flags as given. Returns 0 or -errno. Not used by the public API: V8 aborts when it
// gives back locked heap pages (lib/code-lock.ts); kept so a test can show that hazard.
long iof_mlockall(int flags);

// munlockall(). Returns 0 or -errno.
long iof_munlockall(void);

// mlock(address, length) when flags is 0, else mlock2(address, length, flags) (MLOCK_ONFAULT, Linux 4.4) through
// syscall(2), so an old libc does not matter. Returns 0 or -errno.
long iof_mlock2(uintptr_t address, size_t length, unsigned int flags);

// munlock(address, length). Returns 0 or -errno.
long iof_munlock(uintptr_t address, size_t length);

// mmap(NULL, length, PROT_READ|PROT_WRITE, MAP_PRIVATE|MAP_ANONYMOUS, -1, 0): memory no allocator shares, so
// locking it locks nothing else. Stores the address in *address; returns 0 or -errno.
long iof_map_anonymous(size_t length, void** address);

// munmap(address, length). Returns 0 or -errno.
long iof_munmap(void* address, size_t length);

// sysconf(_SC_PAGESIZE).
long iof_page_size(void);

// getrlimit(resource) into limits[0] (soft) and limits[1] (hard), RLIM_INFINITY as UINT64_MAX. Returns 0 or -errno.
long iof_getrlimit(int resource, uint64_t limits[2]);

// setrlimit(resource, {soft, hard}), UINT64_MAX meaning RLIM_INFINITY. Returns 0 or -errno.
long iof_setrlimit(int resource, uint64_t soft, uint64_t hard);

#ifdef __cplusplus
}
#endif

#endif
