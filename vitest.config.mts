import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    projects: ['libs/*/vitest.config.mts', 'apps/*/vitest.config.mts', 'tests/vitest.config.mts'],
    // The native engine runs its own thread pool; parallel test files would fight over two cores.
    fileParallelism: false,
  },
});
