import { defineConfig } from 'vitest/config';

// The real-kernel suite, run inside a VM by scripts/test-kernel.mjs through vm/kernel-run, which sets
// IO_FLUSHER_KERNEL_MODE. Each mode runs the conformance table, the seeded differential test and its own file. In `full` and `nocap` the host
// suite's native API file runs too, so its capability-dependent cases take the other branch here. The rest of the
// host suite stays on the host: under software emulation every Node start costs seconds.
const mode = process.env.IO_FLUSHER_KERNEL_MODE ?? 'unset';
// memory-scopes starts every Node major itself, so it runs once per kernel: in the run on the host's own Node, not
// again in each `kernel-run --node` run. broadcast-faults too: the faults it makes (tracers, descriptor limits, /proc)
// are the kernel's business, not Node's, and each costs seconds of process starts under software emulation.
const onHostNode = (process.env.IO_FLUSHER_KERNEL_NODE ?? 'system') === 'system';
// broadcast-faults proves its success path in mode full, on every kernel; without the capability (nocap) it is what the
// host suite runs.
const hostSuite = mode === 'oldkernel' ? [] : ['test/native-api.test.ts', ...(mode === 'full' && onHostNode ? ['test/broadcast-faults.test.ts'] : [])];
// Memory locking needs CAP_IPC_LOCK only: mode full runs it (memory-scopes: no abort on each Node major;
// memory-residency: locked code stays resident under a memory hog).
const memorySuite = mode === 'full' ? ['test/kernel/memory-residency.test.ts', ...(onHostNode ? ['test/kernel/memory-scopes.test.ts'] : [])] : [];
// The systemd unit of docs/deployment.md: its non-root, ambient-capability daemon needs CAP_SYS_RESOURCE to grant.
// Capabilities are the kernel's business: once per kernel, on the host's Node.
const deploymentSuite = mode === 'full' && onHostNode ? ['test/kernel/deployment.test.ts'] : [];
// The process-wide scenario's Worker counts: 64 Workers cost minutes under software emulation, so they run on the
// default kernel (bookworm) with the host's Node only (in a `kernel-run --node` run Node 24 took over 240 s).
const workerCounts =
  process.env.IO_FLUSHER_KERNEL_WORKERS ?? (process.env.IO_FLUSHER_KERNEL_NAME === 'bookworm' && onHostNode ? '8,64' : '8');

export default defineConfig({
  test: {
    include: [
      'test/kernel/conformance.test.ts',
      'test/kernel/differential.test.ts',
      'test/kernel/process-wide.test.ts',
      `test/kernel/${mode}.test.ts`,
      'test/node-runtime.test.ts',
      ...hostSuite,
      ...memorySuite,
      ...deploymentSuite,
    ],
    globalSetup: ['test/global-setup.ts'],
    env: { IO_FLUSHER_KERNEL_WORKERS: workerCounts },
    testTimeout: 300_000,
    hookTimeout: 300_000,
    pool: 'forks',
    fileParallelism: false,
  },
});
