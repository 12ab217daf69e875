// Preloaded into the pressure lab's observer (bash running scripts/lab/pressure-run.sh; scripts/lab-pressure.mjs
// builds this file and sets LD_PRELOAD for it, the script unsets it for everything it starts).
//
// Why: the observer has to keep sampling on a guest whose memory is exhausted by the swap variant's hog. It runs with
// IO_FLUSHER, so its allocations may not start I/O, and the kernel never calls the OOM killer for an allocation that
// may not enter the filesystem (out_of_memory() returns early without __GFP_FS): a page it needs then is waited for
// until something else frees one, which on a hung guest is never. Its pages come from three places: the program and
// libraries (page cache of the 9p root, dropped under pressure and read back on the next fault), its heap, and the
// files it appends to (tmpfs; the script allocates those ahead). So, before bash runs: the heap is grown by 16 MiB and
// kept (malloc never gives it back, large blocks come from it too), then every page mapped now or later is faulted in
// and locked (mlockall). bash's children do not inherit the locks (fork and execve drop them).
//
// A failure is not fatal here: the script reads VmLck from /proc/self/status and refuses to run unlocked.
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

__attribute__((constructor)) static void observer_lock(void) {
  mallopt(M_MMAP_THRESHOLD, 32 << 20);  // blocks up to 32 MiB from the heap, which is locked and kept
  mallopt(M_TRIM_THRESHOLD, 1 << 30);   // freed memory stays in the heap
  mallopt(M_TOP_PAD, 16 << 20);         // each growth of the heap takes 16 MiB more
  void *grow = malloc(1 << 20);
  free(grow);
  if (mlockall(MCL_CURRENT | MCL_FUTURE) != 0) perror("observer-lock: mlockall");
}
