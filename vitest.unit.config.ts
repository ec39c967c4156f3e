import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    // The netlink native binding crashes under worker threads.
    pool: 'forks',
  },
});
