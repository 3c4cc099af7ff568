import { chmodSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { parseTrainConfig } from '@expertune/contracts';
import { describe, expect, it } from 'vitest';

import { checkJobResources, estimateTrainingMemory, freeDiskBytes, freeGpuBytes } from './resources.js';

// A Llama-7B-shaped config: 32 layers of width 4096, MLP 11008, vocabulary 32000.
const LLAMA_7B = {
  hidden_size: 4096,
  intermediate_size: 11008,
  num_hidden_layers: 32,
  vocab_size: 32000,
  num_attention_heads: 32,
  num_key_value_heads: 32,
};
const PARAMETERS_7B = 6.74e9;
const config = (extra: Record<string, unknown> = {}) =>
  parseTrainConfig({ model: '/m', data: { train: '/t.jsonl' }, output_dir: '/o', ...extra }, 'test');

describe('resource estimates', () => {
  it("counts LoRA's trainable values from the targeted projections, and full fine-tuning's as every weight", () => {
    // rank 16 on all seven projections: 32 layers × 16 × (4·(4096+4096) + 3·(4096+11008)) = 39,976,960.
    const lora = estimateTrainingMemory(config({ lora: { rank: 16 } }), LLAMA_7B, PARAMETERS_7B);
    expect(lora.trainableParameters).toBe(39_976_960);
    expect(lora.weights).toBe(PARAMETERS_7B * 4);
    const full = estimateTrainingMemory(config({ method: 'full' }), LLAMA_7B, PARAMETERS_7B);
    expect(full.trainableParameters).toBe(PARAMETERS_7B);
    expect(full.total).toBeGreaterThan(4 * PARAMETERS_7B * 4); // weights, gradients, m and v
  });

  it('grows activations with micro-batch and sequence length', () => {
    const small = estimateTrainingMemory(config(), LLAMA_7B, PARAMETERS_7B);
    const large = estimateTrainingMemory(
      config({ training: { micro_batch_size: 8 }, data: { train: '/t.jsonl', max_seq_len: 1024 } }),
      LLAMA_7B,
      PARAMETERS_7B,
    );
    expect(large.activations).toBe(small.activations * 4);
  });

  it('checks GPU memory on a cuda device, host memory and disk otherwise; a config without sizes is not guessed at', () => {
    const check = { dataDir: '/tmp', memory: 'configured' as const, device: 'cpu' };
    expect(
      checkJobResources(config(), LLAMA_7B, PARAMETERS_7B, { ...check, env: { EXPERTUNE_MEMORY_LIMIT_BYTES: '1e9' } })
        ?.code,
    ).toBe('insufficient_memory');
    expect(
      checkJobResources(config(), LLAMA_7B, PARAMETERS_7B, {
        ...check,
        device: 'cuda:0',
        env: { EXPERTUNE_GPU_MEMORY_BYTES: String(16 * 2 ** 30) },
      })?.code,
    ).toBe('insufficient_gpu_memory');
    expect(
      checkJobResources(config(), LLAMA_7B, PARAMETERS_7B, { ...check, env: { EXPERTUNE_DISK_FREE_BYTES: '0' } })?.code,
    ).toBe('insufficient_disk');
    expect(checkJobResources(config(), LLAMA_7B, PARAMETERS_7B, { ...check, env: {} })).toBeNull();
    expect(checkJobResources(config(), { architectures: ['x'] }, 1000, { ...check, env: {} })).toBeNull();
  });

  it('reads free disk space from the nearest existing directory, or the override', () => {
    expect(freeDiskBytes('/tmp/does/not/exist/yet', {})).toBeGreaterThan(0);
    expect(freeDiskBytes('/tmp', { EXPERTUNE_DISK_FREE_BYTES: '123' })).toBe(123);
  });

  it("asks nvidia-smi for the worker's free GPU memory (the setting wins; the API never asks)", () => {
    const bin = mkdtempSync(join(tmpdir(), 'expertune-nvidia-smi-'));
    try {
      // A stand-in that answers like nvidia-smi: MiB free of the GPU asked for with -i.
      writeFileSync(
        join(bin, 'nvidia-smi'),
        '#!/bin/sh\nfor a; do last=$a; done\n[ "$last" = 1 ] && echo 8192 || echo 40960\n',
      );
      chmodSync(join(bin, 'nvidia-smi'), 0o755);
      const env = { PATH: `${bin}:/usr/bin:/bin` };
      expect(freeGpuBytes('cuda:1', 'host', env)).toBe(8192 * 2 ** 20);
      expect(freeGpuBytes('cuda:0', 'host', env)).toBe(40960 * 2 ** 20);
      expect(freeGpuBytes('cuda:1', 'host', { ...env, EXPERTUNE_GPU_MEMORY_BYTES: '7' })).toBe(7);
      expect(freeGpuBytes('cuda:1', 'configured', env)).toBeNull();
      expect(freeGpuBytes('cuda:0', 'host', { PATH: '/nonexistent' })).toBeNull();
      const onSmallGpu = checkJobResources(config(), LLAMA_7B, PARAMETERS_7B, {
        dataDir: '/tmp',
        memory: 'host',
        device: 'cuda:1',
        env: { ...env, EXPERTUNE_DISK_FREE_BYTES: String(2 ** 40) },
      });
      expect(onSmallGpu?.code).toBe('insufficient_gpu_memory');
      expect(onSmallGpu?.message).toContain('8.00 GiB is free on cuda:1');
    } finally {
      rmSync(bin, { recursive: true, force: true });
    }
  });
});
