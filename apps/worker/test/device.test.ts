import { describe, expect, it } from 'vitest';

import { settingsFromEnv } from '../src/settings.js';

describe('the worker reads EXPERTUNE_DEVICE', () => {
  it('trains on the CPU unless told otherwise', () => {
    expect(settingsFromEnv({}).device).toBe('cpu');
  });

  it('passes cuda:<n> through, normalised', () => {
    expect(settingsFromEnv({ EXPERTUNE_DEVICE: 'cuda:1' }).device).toBe('cuda:1');
    expect(settingsFromEnv({ EXPERTUNE_DEVICE: 'cuda' }).device).toBe('cuda:0');
  });

  it('refuses a value it does not know, at start, with the accepted forms', () => {
    expect(() => settingsFromEnv({ EXPERTUNE_DEVICE: 'gpu0' })).toThrow(
      'EXPERTUNE_DEVICE="gpu0": expected "cpu" or "cuda:<ordinal>" (e.g. cuda:0)',
    );
  });
});
