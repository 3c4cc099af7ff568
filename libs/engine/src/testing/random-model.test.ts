import { describe, expect, it } from 'vitest';
import { randomAdapterWeights, randomLlamaConfig, randomTrainBatch, randomWeights } from './random-model.js';

function std(values: Float32Array): number {
  const mean = values.reduce((a, b) => a + b, 0) / values.length;
  return Math.sqrt(values.reduce((a, b) => a + (b - mean) ** 2, 0) / values.length);
}

describe('randomLlamaConfig', () => {
  it('is a tiny GQA Llama, with derived sizes following overrides', () => {
    const config = randomLlamaConfig();
    expect(config).toMatchObject({
      vocabSize: 96,
      hiddenSize: 32,
      intermediateSize: 88,
      numLayers: 2,
      numHeads: 4,
      numKvHeads: 2,
      headDim: 8,
    });
    expect(randomLlamaConfig({ hiddenSize: 64 })).toMatchObject({ headDim: 16, intermediateSize: 176 });
    expect(randomLlamaConfig({ hiddenSize: 64, headDim: 8 }).headDim).toBe(8);
  });
});

describe('randomWeights', () => {
  it('has the names and sizes of docs/engine.md: biases when flagged, lm_head only when untied', () => {
    const config = randomLlamaConfig({ numLayers: 1, qkvBias: true });
    const weights = randomWeights(config, 1);
    expect([...weights.keys()]).toEqual([
      'model.embed_tokens.weight',
      'model.layers.0.input_layernorm.weight',
      'model.layers.0.self_attn.q_proj.weight',
      'model.layers.0.self_attn.q_proj.bias',
      'model.layers.0.self_attn.k_proj.weight',
      'model.layers.0.self_attn.k_proj.bias',
      'model.layers.0.self_attn.v_proj.weight',
      'model.layers.0.self_attn.v_proj.bias',
      'model.layers.0.self_attn.o_proj.weight',
      'model.layers.0.post_attention_layernorm.weight',
      'model.layers.0.mlp.gate_proj.weight',
      'model.layers.0.mlp.up_proj.weight',
      'model.layers.0.mlp.down_proj.weight',
      'model.norm.weight',
      'lm_head.weight',
    ]);
    expect(weights.get('model.layers.0.self_attn.k_proj.weight')!.length).toBe(16 * 32);
    expect(weights.get('model.layers.0.mlp.down_proj.weight')!.length).toBe(32 * 88);
    const tied = randomWeights(randomLlamaConfig({ tieWordEmbeddings: true, oBias: true, mlpBias: true }), 1);
    expect(tied.has('lm_head.weight')).toBe(false);
    expect(tied.has('model.layers.1.self_attn.o_proj.bias')).toBe(true);
    expect(tied.has('model.layers.1.mlp.down_proj.bias')).toBe(true);
  });

  it('is deterministic per seed, and scaled: matrices 1/sqrt(fan-in), norms about 1', () => {
    const config = randomLlamaConfig();
    const a = randomWeights(config, 5);
    expect(randomWeights(config, 5)).toEqual(a);
    expect(randomWeights(config, 6).get('model.norm.weight')).not.toEqual(a.get('model.norm.weight'));
    expect(std(a.get('model.layers.0.mlp.down_proj.weight')!)).toBeCloseTo(1 / Math.sqrt(88), 2);
    expect(std(a.get('model.embed_tokens.weight')!)).toBeCloseTo(1 / Math.sqrt(32), 2);
    const norm = a.get('model.layers.1.input_layernorm.weight')!;
    expect(norm.every((w) => w > 0.8 && w < 1.2)).toBe(true);
    expect(std(norm)).toBeGreaterThan(0.05);
    expect(std(randomWeights(config, 5, { weightStd: 0.02 }).get('lm_head.weight')!)).toBeCloseTo(0.02, 3);
  });
});

describe('randomAdapterWeights and randomTrainBatch', () => {
  it('gives non-zero B and next-token targets with −1 at the ends', () => {
    const config = randomLlamaConfig();
    const adapter = randomAdapterWeights(config, { rank: 4, targetModules: ['v_proj'] }, 3);
    expect([...adapter.keys()]).toEqual([
      'model.layers.0.self_attn.v_proj.lora_A.weight',
      'model.layers.0.self_attn.v_proj.lora_B.weight',
      'model.layers.1.self_attn.v_proj.lora_A.weight',
      'model.layers.1.self_attn.v_proj.lora_B.weight',
    ]);
    expect(adapter.get('model.layers.0.self_attn.v_proj.lora_B.weight')!.some((b) => b !== 0)).toBe(true);

    const batch = randomTrainBatch(config, { batch: 2, seqLen: 5, seed: 1, ignoredFraction: 0 });
    expect(batch.ids.every((id) => id >= 0 && id < config.vocabSize)).toBe(true);
    expect(Array.from(batch.targets.subarray(0, 5))).toEqual([...Array.from(batch.ids.subarray(1, 5)), -1]);
    expect(batch.targets[9]).toBe(-1);
  });
});
