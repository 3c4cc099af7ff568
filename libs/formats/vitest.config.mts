import { defineProject } from 'vitest/config';

export default defineProject({
  resolve: { conditions: ['source'] },
  ssr: { resolve: { conditions: ['source'] } },
  test: { name: 'formats', include: ['src/**/*.test.ts'], testTimeout: 120_000, hookTimeout: 120_000 },
});
