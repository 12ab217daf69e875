/**
 * The OOM score of this process: /proc/self/oom_score_adj, read and written back. See: man 5 proc (oom_score_adj).
 */
import * as fs from 'node:fs';
import { IoFlusherError, systemError } from './errors';
import { EACCES, OOM_SCORE_ADJ_MAX, OOM_SCORE_ADJ_MIN } from './kernel-constants';
import { oomScoreAdjPath, readOomScoreAdj } from './procfs';
import { assertInteger } from './validate';

/** /proc/self/oom_score_adj: -1000 (never OOM-killed) to 1000. */
export function getOomScoreAdj(): number {
  return readOomScoreAdj('self');
}

/** Writes /proc/self/oom_score_adj and reads it back. Going below the lowest value set before needs CAP_SYS_RESOURCE. */
export function setOomScoreAdj(value: number): number {
  assertInteger(value, 'value', OOM_SCORE_ADJ_MIN, OOM_SCORE_ADJ_MAX);
  const path = oomScoreAdjPath('self');
  try {
    fs.writeFileSync(path, String(value));
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    const errno = typeof e.errno === 'number' ? e.errno : -EACCES;
    const denied = Math.abs(errno) === EACCES;
    throw systemError({
      syscall: 'write',
      errno,
      path,
      detail: `oom_score_adj ${value}`,
      reason: denied ? 'missing-capability' : 'unexpected-errno',
      hint: denied
        ? `lowering oom_score_adj below the lowest value this process had (now ${getOomScoreAdj()}) needs CAP_SYS_RESOURCE; or set it before start: systemd \`OOMScoreAdjust=${value}\`, \`docker run --oom-score-adj ${value}\`, \`choom -n ${value} -- COMMAND\``
        : 'writing oom_score_adj failed',
    });
  }
  const after = getOomScoreAdj();
  if (after !== value) {
    throw new IoFlusherError({
      code: 'ERR_IO_FLUSHER_VERIFY',
      syscall: 'write',
      path,
      reason: 'verification-failed',
      message: `ERR_IO_FLUSHER_VERIFY: oom_score_adj reads back as ${after}, not ${value}`,
      hint: 'something else wrote it concurrently',
    });
  }
  return after;
}
