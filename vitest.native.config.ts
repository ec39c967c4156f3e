import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['native-tests/**/*.test.ts'],
    // The netlink native binding crashes under worker threads; namespaces and
    // etcd are heavy, so native files run one at a time.
    pool: 'forks',
    fileParallelism: false,
    testTimeout: 60_000,
    hookTimeout: 60_000,
  },
});
