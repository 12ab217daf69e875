/**
 * The kernel suite runs only inside a VM started by vm/kernel-run, which sets IO_FLUSHER_KERNEL_MODE. It checks
 * that the guest really is what the mode claims, so a misconfigured VM fails instead of testing the wrong thing.
 */
import * as fs from 'node:fs';
import { holdsCapSysResource } from '../helpers';

export { holdsCapSysResource };

export type KernelMode = 'full' | 'nocap' | 'oldkernel';

export const MODE = process.env.IO_FLUSHER_KERNEL_MODE as KernelMode | undefined;
export const KERNEL_NAME = process.env.IO_FLUSHER_KERNEL_NAME ?? 'unknown';

export function statusField(name: string): string {
  const status = fs.readFileSync('/proc/self/status', 'latin1');
  return new RegExp(`^${name}:\\s*(\\S+)`, 'm').exec(status)?.[1] ?? '';
}


export function assertKernelSuiteEnvironment(): KernelMode {
  if (MODE !== 'full' && MODE !== 'nocap' && MODE !== 'oldkernel') {
    throw new Error('the kernel suite runs inside a VM: use `npm run test:kernel` or vm/kernel-run (IO_FLUSHER_KERNEL_MODE is unset)');
  }
  if (process.getuid?.() !== 0) throw new Error('the kernel suite expects uid 0 in the guest');
  const capable = holdsCapSysResource();
  if (MODE === 'nocap' && capable) throw new Error('mode nocap, but CAP_SYS_RESOURCE is in the effective set');
  if (MODE !== 'nocap' && !capable) throw new Error(`mode ${MODE}, but CAP_SYS_RESOURCE is missing`);
  if (MODE === 'oldkernel' && statusField('Seccomp') !== '2') throw new Error('mode oldkernel, but no seccomp filter is installed');
  return MODE;
}
