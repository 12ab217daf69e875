import { defineConfig } from 'vitest/config';

// The host suite. The real-kernel suite (test/kernel/) runs inside a VM through `npm run test:kernel`.
export default defineConfig({
  test: {
    include: ['test/*.test.ts'],
    globalSetup: ['test/global-setup.ts'],
    testTimeout: 60_000,
    pool: 'forks',
  },
});
