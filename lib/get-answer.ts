/**
 * What an answer of PR_GET_IO_FLUSHER means: the one reading of it, for backend selection, probe() and
 * `io-flusher check`. The kernel checks CAP_SYS_RESOURCE before anything else (kernel/sys.c), so EPERM is a real
 * answer from a kernel that has the feature; EINVAL to valid arguments means it lacks it (or a filter says so).
 */
import { EINVAL, EPERM } from './kernel-constants';

export interface GetAnswer {
  /** Whether the kernel offers IO_FLUSHER to this process. */
  feature: 'present' | 'absent' | 'unknown';
  /** The capability check passed: set and clear will pass it too. */
  canSet: boolean;
  /** The calling thread's state, when the answer is one (0 or 1); null when refused. */
  ioFlusher: boolean | null;
  /** How `feature` was decided, for people. */
  detail: string;
}

/** Reads prctl(PR_GET_IO_FLUSHER)'s result: 0, 1, or -errno. */
export function interpretGetAnswer(rc: number): GetAnswer {
  if (rc >= 0) return { feature: 'present', canSet: true, ioFlusher: rc === 1, detail: `PR_GET_IO_FLUSHER answered ${rc}` };
  if (rc === -EPERM) {
    return { feature: 'present', canSet: false, ioFlusher: null, detail: 'PR_GET_IO_FLUSHER answered EPERM: the kernel has it, the capability check failed' };
  }
  if (rc === -EINVAL) {
    return {
      feature: 'absent',
      canSet: false,
      ioFlusher: null,
      detail: 'PR_GET_IO_FLUSHER answered EINVAL: the kernel lacks it (Linux < 5.6) or a filter hides it',
    };
  }
  return { feature: 'unknown', canSet: false, ioFlusher: null, detail: `PR_GET_IO_FLUSHER answered errno ${-rc}` };
}
