import * as fs from 'node:fs';
import * as path from 'node:path';

const root = path.resolve(__dirname, '..');

export function setup(): void {
  // The tests exercise the compiled package (dist/), as users get it.
  if (!fs.existsSync(path.join(root, 'dist/index.js'))) {
    throw new Error('dist/ is missing: run `npm run build` first (npm test does it for you)');
  }
}

export function teardown(): void {
  if (process.env.IO_FLUSHER_KERNEL_MODE) return;
  process.stdout.write(
    '\nNOTE: this was the host suite only. On this kind of machine every prctl answers EPERM (no CAP_SYS_RESOURCE),\n' +
      'so the success path was NOT exercised here. The real-kernel suite boots Debian kernels under QEMU:\n' +
      '  npm run test:kernel        (needs qemu-system-x86 and busybox-static; .ci/run installs them)\n\n',
  );
}
