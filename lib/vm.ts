/**
 * `io-flusher vm`: run a command as root in a VM booted from a real Debian kernel, for the user's own project.
 *
 * CI machines and containers lack CAP_SYS_RESOURCE, so a daemon's success path (setIoFlusher(true) succeeding) can
 * only be tested under a kernel one boots oneself. The runner is a shell script (it drives QEMU, apt and cpio) that
 * ships in the package at vm/kernel-run, with its guest files beside it in vm/; this is only the door to it, so
 * that `npx io-flusher vm -- npm test` works from an installed copy. Its options, output and exit statuses are the
 * script's own (`io-flusher vm --help`).
 */
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { constants } from 'node:os';

/** The runner, beside dist/ in the repository and in an installed package alike. */
export const KERNEL_RUN = path.join(__dirname, '..', 'vm', 'kernel-run');

/** Exit statuses of the runner besides COMMAND's own (documented in its --help). */
export const VM_EXIT = { TIMEOUT: 124, VM: 125, SETUP: 126, USAGE: 2 } as const;

export function vm(argv: string[]): number {
  if (process.platform !== 'linux') {
    process.stderr.write(`io-flusher vm: needs a Linux host with QEMU (this is ${process.platform})\n`);
    return VM_EXIT.SETUP;
  }
  if (!fs.existsSync(KERNEL_RUN)) {
    process.stderr.write(`io-flusher vm: ${KERNEL_RUN} is missing from this installation of io-flusher\n`);
    return VM_EXIT.SETUP;
  }
  // Through bash, so that a package manager that drops the executable bit cannot break it.
  const r = spawnSync('bash', [KERNEL_RUN, ...argv], { stdio: 'inherit', env: { ...process.env, KERNEL_RUN_NAME: 'io-flusher vm' } });
  if (r.error) {
    process.stderr.write(`io-flusher vm: cannot run bash: ${r.error.message} (install bash)\n`);
    return VM_EXIT.SETUP;
  }
  if (r.signal) return 128 + (constants.signals[r.signal] ?? 0);
  return r.status ?? VM_EXIT.VM;
}
