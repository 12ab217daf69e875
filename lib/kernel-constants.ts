/**
 * The one table of kernel facts the code depends on. Values are from the uapi and kernel headers; they have not
 * changed from Linux 5.6 to 6.18, but the PF_* task flags are kernel-internal, so every use goes through here.
 * See: include/uapi/linux/prctl.h, include/linux/sched.h, include/uapi/linux/capability.h, man 2 prctl.
 */

/** prctl option 57: put the calling thread in IO_FLUSHER state (1) or take it out (0). Added in Linux 5.6, commit 8d19f1c8e193 (include/uapi/linux/prctl.h). */
export const PR_SET_IO_FLUSHER = 57;
/** prctl option 58: 1 when the calling thread is in IO_FLUSHER state (both of {@link IO_FLUSHER_FLAGS}), else 0. Linux 5.6+. */
export const PR_GET_IO_FLUSHER = 58;
/** prctl(PR_GET_SECCOMP): 0 no filter, 2 a filter (man 2 prctl). */
export const PR_GET_SECCOMP = 21;

/** Names of the prctl options we make, for errors. */
export const PRCTL_OPTION_NAMES: Readonly<Record<number, string>> = {
  [PR_SET_IO_FLUSHER]: 'PR_SET_IO_FLUSHER',
  [PR_GET_IO_FLUSHER]: 'PR_GET_IO_FLUSHER',
};

/** The first kernel release with the prctl pair. */
export const IO_FLUSHER_MIN_KERNEL: readonly [number, number] = [5, 6];

/** "5.10.0-28-amd64" -> [5, 10]; undefined when it does not look like a Linux release. */
export function parseKernelRelease(release: string): [number, number] | undefined {
  const match = /^(\d+)\.(\d+)/.exec(release);
  return match ? [Number(match[1]), Number(match[2])] : undefined;
}

/** Whether a kernel release is new enough for the prctl pair; undefined when the release cannot be read. */
export function kernelHasIoFlusher(release: string): boolean | undefined {
  const version = parseKernelRelease(release);
  if (!version) return undefined;
  const [major, minor] = IO_FLUSHER_MIN_KERNEL;
  return version[0] > major || (version[0] === major && version[1] >= minor);
}

/** The highest process or thread id on 64-bit Linux: PID_MAX_LIMIT, 4 * 1024 * 1024 (include/linux/threads.h). */
export const PID_MAX_LIMIT = 4194304;

/**
 * Task flags shown in field 9 of /proc/PID/task/TID/stat (include/linux/sched.h). Bits can be transient
 * (PF_MEMALLOC during reclaim): always test with a mask.
 */
export const PF_SUPERPRIV = 0x00000100;
/** Task flag: the thread may dip into memory reserves and never enters reclaim itself (set while it reclaims). */
export const PF_MEMALLOC = 0x00000800;
/** Task flag: every allocation of the thread is GFP_NOFS (no filesystem reclaim); set by memalloc_nofs_save(). */
export const PF_MEMALLOC_NOFS = 0x00040000;
/** Task flag: every allocation of the thread is GFP_NOIO (reclaim starts no I/O); one half of IO_FLUSHER. */
export const PF_MEMALLOC_NOIO = 0x00080000;
/**
 * Task flag: the thread's writes are throttled against its own device's dirty pages only, not the global dirty limit;
 * the other half of IO_FLUSHER. Named PF_LESS_THROTTLE before Linux 5.8; same bit.
 */
export const PF_LOCAL_THROTTLE = 0x00100000;
/** Task flag: allocations come only from zones that allow long-term pinning (not movable, not CMA). Named PF_MEMALLOC_NOCMA before about Linux 5.13; same bit. */
export const PF_MEMALLOC_PIN = 0x10000000;

/** What PR_SET_IO_FLUSHER sets and clears; PR_GET_IO_FLUSHER answers 1 only when both bits are set. */
export const IO_FLUSHER_FLAGS = PF_MEMALLOC_NOIO | PF_LOCAL_THROTTLE;

/** The memalloc flags we report, by the name users see. */
export const MEMALLOC_FLAG_TABLE = [
  { key: 'memalloc', name: 'PF_MEMALLOC', bit: PF_MEMALLOC },
  { key: 'memallocNofs', name: 'PF_MEMALLOC_NOFS', bit: PF_MEMALLOC_NOFS },
  { key: 'memallocNoio', name: 'PF_MEMALLOC_NOIO', bit: PF_MEMALLOC_NOIO },
  { key: 'localThrottle', name: 'PF_LOCAL_THROTTLE', bit: PF_LOCAL_THROTTLE },
  { key: 'memallocPin', name: 'PF_MEMALLOC_PIN', bit: PF_MEMALLOC_PIN },
] as const;

/** Capability numbers (include/uapi/linux/capability.h), index = bit. */
export const CAPABILITY_NAMES: readonly string[] = [
  'CAP_CHOWN', 'CAP_DAC_OVERRIDE', 'CAP_DAC_READ_SEARCH', 'CAP_FOWNER', 'CAP_FSETID', 'CAP_KILL', 'CAP_SETGID',
  'CAP_SETUID', 'CAP_SETPCAP', 'CAP_LINUX_IMMUTABLE', 'CAP_NET_BIND_SERVICE', 'CAP_NET_BROADCAST', 'CAP_NET_ADMIN',
  'CAP_NET_RAW', 'CAP_IPC_LOCK', 'CAP_IPC_OWNER', 'CAP_SYS_MODULE', 'CAP_SYS_RAWIO', 'CAP_SYS_CHROOT',
  'CAP_SYS_PTRACE', 'CAP_SYS_PACCT', 'CAP_SYS_ADMIN', 'CAP_SYS_BOOT', 'CAP_SYS_NICE', 'CAP_SYS_RESOURCE',
  'CAP_SYS_TIME', 'CAP_SYS_TTY_CONFIG', 'CAP_MKNOD', 'CAP_LEASE', 'CAP_AUDIT_WRITE', 'CAP_AUDIT_CONTROL',
  'CAP_SETFCAP', 'CAP_MAC_OVERRIDE', 'CAP_MAC_ADMIN', 'CAP_SYSLOG', 'CAP_WAKE_ALARM', 'CAP_BLOCK_SUSPEND',
  'CAP_AUDIT_READ', 'CAP_PERFMON', 'CAP_BPF', 'CAP_CHECKPOINT_RESTORE',
];
export const CAP_IPC_LOCK = 14;
export const CAP_SYS_RESOURCE = 24;

/** errno values the code branches on (asm-generic/errno-base.h; the same on every Linux architecture). */
export const EPERM = 1;
export const ENOENT = 2;
export const ESRCH = 3;
export const ENOMEM = 12;
export const EACCES = 13;
export const EBUSY = 16;
export const EINVAL = 22;
export const ENOSPC = 28;
export const EXDEV = 18;
export const E2BIG = 7;

/** mlock2(2) flag (asm-generic/mman-common.h): lock pages once they are faulted in. Linux 4.4. */
export const MLOCK_ONFAULT = 1;

/** getrlimit(2) resource (asm-generic/resource.h). */
export const RLIMIT_MEMLOCK = 8;
/** RLIM_INFINITY as the binding passes it: (rlim_t)~0, 2^64 - 1 (include/uapi/linux/resource.h). */
export const RLIM_INFINITY = 2n ** 64n - 1n;

/** /proc/PID/oom_score_adj range (include/uapi/linux/oom.h); -1000 exempts the process from the OOM killer. */
export const OOM_SCORE_ADJ_MIN = -1000;
export const OOM_SCORE_ADJ_MAX = 1000;

/**
 * SIGRTMIN..SIGRTMAX as glibc defines them for programs (34..64; it keeps 32 and 33 for itself, nptl/pthreadP.h): for
 * when the addon that asks the C library is not loaded.
 */
export const GLIBC_SIGRTMIN = 34;
export const GLIBC_SIGRTMAX = 64;

/**
 * The thread broadcast's native side (native/thread_broadcast.h, mirrored here; test/broadcast-codes.test.ts checks the
 * two agree): the most threads one call reaches (IOF_BROADCAST_SLOTS), the per-thread outcomes of broadcastRun
 * (IOF_THREAD_*) and what a timed-out thread's status showed (IOF_SEEN_*). The meaning of `a` and `b` is in the header.
 */
export const BROADCAST_SLOTS = 65536;
export const BROADCAST_OUTCOME = {
  /** The calling thread, set directly: a = PR_SET result, b = PR_GET answer. */
  direct: 1,
  /** Its handler ran: a = PR_SET result (0 or -errno), b = PR_GET answer (0, 1 or -errno). */
  answered: 2,
  /** Blocks the signal, never ran the handler: a = 0 or -errno of reading its stat, b = its flags word. */
  blocksSignal: 3,
  /** Gone before it answered. */
  exited: 4,
  /** Sent the signal, no answer by the deadline: a = BROADCAST_SEEN, b = -errno when its status could not be read. */
  timedOut: 5,
  /** rt_tgsigqueueinfo failed (not ESRCH): a = -errno. */
  sendFailed: 6,
  /** Never sent: listed after the last pass (a = 0) or the table was full (a = -E2BIG). */
  notReached: 7,
} as const;
export const BROADCAST_SEEN = {
  nothing: 0,
  pending: 1,
  inHandler: 2,
  taken: 3,
  newborn: 4,
} as const;
/** The most threads one readTaskStats call reads (native/task_stats.h, IOF_STAT_BATCH). */
export const STAT_BATCH = 8192;
