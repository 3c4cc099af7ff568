import { describe, expect, it } from 'vitest';

import { baseParameters, formatCount, llamaShape, trainableParameters, type LlamaShape } from './params';

/** models/expertune-tiny-en: hidden 256, intermediate 704, 4 layers, 8 heads / 4 KV heads (head 32). */
const tiny: LlamaShape = {
  hidden_size: 256,
  intermediate_size: 704,
  num_hidden_layers: 4,
  num_attention_heads: 8,
  num_key_value_heads: 4,
  vocab_size: 4096,
  tie_word_embeddings: true,
};
const ALL = ['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj'] as const;
const MLP = ['gate_proj', 'up_proj', 'down_proj'] as const;

describe('trainableParameters (Llama shapes, by hand)', () => {
  // in + out per projection: q 512, k 384, v 384, o 512, gate 960, up 960, down 960 = 4672 per layer;
  // inputs: 256 × 6 + 704 (down) = 2240; outputs: 256 + 128 + 128 + 256 + 704 + 704 + 256 = 2432.
  it('LoRA r16 on all seven projections: 16 · 4672 · 4 = 299,008', () => {
    expect(trainableParameters(tiny, 'lora', { rank: 16, target_modules: [...ALL] })).toBe(299_008);
  });

  it('MoLA r3, 2-4-6-8 experts, top-2, all seven: 3 · 4672 · 20 + 2240 · 20 = 325,120', () => {
    expect(trainableParameters(tiny, 'mola', { rank: 3, target_modules: [...ALL], num_experts: [2, 4, 6, 8] })).toBe(
      325_120,
    );
    // the inverted_triangle preset on 4 layers is the same 2-4-6-8
    expect(trainableParameters(tiny, 'mola', { rank: 3, num_experts: { preset: 'inverted_triangle', scale: 1 } })).toBe(
      325_120,
    );
  });

  it('LoRAMoE 6 × r4 on gate/up/down: (6 · 4 · 2880 + 6 · 1216) · 4 = 305,664; DynMoLE counts alike', () => {
    expect(trainableParameters(tiny, 'loramoe', { rank: 4, num_experts: 6, target_modules: [...MLP] })).toBe(305_664);
    expect(trainableParameters(tiny, 'dynmole', { rank: 4, num_experts: 6, target_modules: [...MLP] })).toBe(305_664);
  });

  it('FlyLoRA r32 on all seven trains B only: 32 · 2432 · 4 = 311,296', () => {
    expect(trainableParameters(tiny, 'flylora', { rank: 32, target_modules: [...ALL] })).toBe(311_296);
  });

  it('full fine-tuning counts every base weight: 4,000,000 for the tiny model (tied head)', () => {
    // embeddings 4096·256 = 1,048,576; per layer 737,280 weights + 512 norm; final norm 256
    expect(trainableParameters(tiny, 'full')).toBe(4_000_000);
    expect(baseParameters({ ...tiny, tie_word_embeddings: false })).toBe(4_000_000 + 4096 * 256);
  });

  it('names the field when the section does not fit the model', () => {
    expect(() => trainableParameters(tiny, 'mola', { rank: 8, num_experts: [2, 4] })).toThrow(
      /num_experts has 2 entries/,
    );
    expect(() => trainableParameters(tiny, 'lora', { rank: 0 })).toThrow(/rank must be a positive integer/);
  });
});

describe('llamaShape and formatCount', () => {
  it('reads a config.json or says what is missing', () => {
    expect(llamaShape({ ...tiny })).toMatchObject({ hidden_size: 256 });
    expect(llamaShape({ hidden_size: 256 })).toBe('config.json has no positive integer intermediate_size');
    expect(llamaShape(undefined)).toBe('the model has no config');
  });

  it('groups digits by three', () => {
    expect(formatCount(325120)).toBe('325,120');
    expect(formatCount(999)).toBe('999');
    expect(formatCount(4_000_000)).toBe('4,000,000');
  });
});
