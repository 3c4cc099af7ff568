import { describe, expect, it } from 'vitest';

import { deviceError, deviceFromEnv, deviceName, nativeDeviceOrdinal, parseDevice } from './device.js';
import { Engine } from './engine.js';
import { assertNativeDevice } from './native-model.js';
import { randomLlamaConfig } from './testing/random-model.js';

describe('EXPERTUNE_DEVICE', () => {
  it('defaults to the CPU when unset or empty', () => {
    expect(deviceFromEnv({})).toEqual({ kind: 'cpu' });
    expect(deviceFromEnv({ EXPERTUNE_DEVICE: '' })).toEqual({ kind: 'cpu' });
    expect(deviceFromEnv({ EXPERTUNE_DEVICE: 'cpu' })).toEqual({ kind: 'cpu' });
  });

  it('reads cuda:<n>, with cuda alone meaning cuda:0', () => {
    expect(parseDevice('cuda:0')).toEqual({ kind: 'cuda', index: 0 });
    expect(parseDevice(' CUDA:3 ')).toEqual({ kind: 'cuda', index: 3 });
    expect(parseDevice('cuda')).toEqual({ kind: 'cuda', index: 0 });
    expect(nativeDeviceOrdinal(parseDevice('cuda:2'))).toBe(2);
    expect(nativeDeviceOrdinal(parseDevice('cpu'))).toBe(-1);
    expect(deviceName(parseDevice('cuda:1'))).toBe('cuda:1');
  });

  it('refuses anything else, naming the variable, the value and the accepted forms', () => {
    for (const bad of ['gpu', 'cuda:', 'cuda:-1', 'cuda:x', 'cuda0', 'mps'])
      expect(() => deviceFromEnv({ EXPERTUNE_DEVICE: bad })).toThrow(
        `EXPERTUNE_DEVICE=${JSON.stringify(bad)}: expected "cpu" or "cuda:<ordinal>" (e.g. cuda:0)`,
      );
  });
});

describe('a CUDA device the native core cannot give', () => {
  it('explains a CPU-only build and the ways out', () => {
    const error = deviceError({ kind: 'cuda', index: 0 }, 'CUDA backend not built');
    expect(error.message).toContain('EXPERTUNE_DEVICE=cuda:0 asks for the CUDA backend');
    expect(error.message).toContain('CPU-only');
    expect(error.message).toContain('EXPERTUNE_DEVICE=cpu');
  });

  it('checks the ordinal against the visible devices', () => {
    expect(() => assertNativeDevice({ kind: 'cuda', index: 1 }, () => 1)).toThrow(
      'cuda:1: CUDA device 1 does not exist (1 visible)',
    );
    expect(() => assertNativeDevice({ kind: 'cuda', index: 0 }, () => 1)).not.toThrow();
    expect(() => assertNativeDevice({ kind: 'cpu' }, () => 0)).not.toThrow();
  });

  // This machine's addon is built without CUDA (no cuBLASLt here): the real core answers.
  it('fails clearly from the real addon in a CPU-only build, at the check and at model creation', async () => {
    let built = true;
    try {
      assertNativeDevice({ kind: 'cuda', index: 0 });
    } catch (error) {
      built = false;
      expect((error as Error).message).toContain('this build of @expertune/native is CPU-only');
    }
    if (built) return; // a CUDA build: nothing to refuse
    const engine = Engine.create('native', { device: 'cuda:0' });
    await expect(engine.createModel(randomLlamaConfig())).rejects.toThrow(/CPU-only/);
    expect(() => Engine.create('native', { device: 'tpu' })).toThrow('device="tpu"');
  });
});
