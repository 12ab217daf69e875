import { defineConfig } from 'vitest/config';

// The host suite, with the example NBD server's tests (they live with the example). The real-kernel suite
// (test/kernel/) runs inside a VM through `npm run test:kernel`.
export default defineConfig({
  test: {
    include: ['test/*.test.ts', 'examples/nbd-server/test/*.test.ts'],
    globalSetup: ['test/global-setup.ts'],
    testTimeout: 60_000,
    pool: 'forks',
  },
});
