/**
 * The embedded default base model (models/expertune-tiny-en, docs/base-model.md) and the demo's
 * method budgets: the committed model matches its recipe, really is pretrained (its loss on the
 * corpus, computed here from the logits, is far below an untrained model's), and every demo method
 * trains a comparable number of parameters on it.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';

import { parseTrainConfig } from '@expertune/contracts';
import { Engine, type Model } from '@expertune/engine';
import { loadTokenizer } from '@expertune/formats';
import { adapterConfigFor } from '@expertune/trainer';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parse as parseYaml } from 'yaml';

import { repoRoot } from './helpers.js';

const modelDir = join(repoRoot, 'models', 'expertune-tiny-en');

/** Mean next-token cross-entropy of `ids` under `model`, from its logits (log-sum-exp in float64). */
async function meanLoss(model: Model, ids: number[]): Promise<number> {
  const logits = await model.logits({ ids: Int32Array.from(ids), batch: 1, seqLen: ids.length });
  const vocab = model.config.vocabSize;
  let total = 0;
  for (let t = 0; t + 1 < ids.length; t++) {
    const row = logits.subarray(t * vocab, (t + 1) * vocab);
    let max = -Infinity;
    for (const v of row) max = Math.max(max, v);
    let sum = 0;
    for (const v of row) sum += Math.exp(v - max);
    total += max + Math.log(sum) - row[ids[t + 1]!]!;
  }
  return total / (ids.length - 1);
}

describe('the embedded default base model', () => {
  let model: Model;
  beforeAll(async () => {
    model = await Engine.create('native', { threads: 2 }).loadModel(modelDir);
  });
  afterAll(() => model?.dispose());

  it('has the shape and tokenizer its committed recipe asks for', () => {
    const recipe = parseYaml(readFileSync(join(repoRoot, 'models', 'recipes', 'expertune-tiny-en.yaml'), 'utf8'));
    const config = JSON.parse(readFileSync(join(modelDir, 'config.json'), 'utf8'));
    for (const key of ['hidden_size', 'intermediate_size', 'num_hidden_layers', 'num_attention_heads'] as const)
      expect(config[key], key).toBe(recipe.model[key]);
    const tokenizer = loadTokenizer(modelDir);
    expect(tokenizer.vocabSize).toBe(recipe.tokenizer.vocab_size);
    expect(config.vocab_size).toBe(tokenizer.vocabSize);
    expect(model.parameterCount('base')).toBeLessThan(5_000_000);
  });

  it('is pretrained: English text costs far less than under a uniform guess, scrambled text far more', async () => {
    const tokenizer = loadTokenizer(modelDir);
    const text =
      'Call me Ishmael. Some years ago, never mind how long precisely, having little or no money in my purse, ' +
      'and nothing particular to interest me on shore, I thought I would sail about a little and see the watery ' +
      'part of the world. The Congress of the United States shall consider the state of the Union.';
    const ids = tokenizer.encode(text);
    const english = await meanLoss(model, ids);
    // The same tokens in a seeded shuffle: a language model must find them much less likely.
    const shuffled = [ids[0]!, ...ids.slice(1).sort((a, b) => ((a * 7919) % 101) - ((b * 7919) % 101))];
    const scrambled = await meanLoss(model, shuffled);
    // A uniform guess costs ln(4096) = 8.3 nats per token; the held-out loss at the end of
    // pretraining was 3.8 (pretrain.json).
    expect(english).toBeLessThan(5);
    expect(scrambled - english, `english ${english}, scrambled ${scrambled}`).toBeGreaterThan(2);
  });

  it('gives every demo method a comparable trainable-parameter budget (within 10% of LoRA)', async () => {
    const demo = await import(pathToFileURL(join(repoRoot, 'scripts', 'demo.mjs')).href);
    const methods = demo.DEMO_METHODS as Record<string, { section: Record<string, unknown> }>;
    expect(Object.keys(methods).sort()).toEqual(['dynmole', 'flylora', 'lora', 'loramoe', 'mola']);
    const counts: Record<string, number> = {};
    for (const [method, { section }] of Object.entries(methods)) {
      const config = parseTrainConfig({
        model: modelDir,
        method,
        [method]: section,
        data: { train: 'x' },
        output_dir: 'x',
      });
      const fresh = await Engine.create('native', { threads: 1 }).loadModel(modelDir);
      try {
        fresh.attachAdapter(adapterConfigFor(config, fresh.config.numLayers)!);
        counts[method] = fresh.parameterCount('trainable');
      } finally {
        fresh.dispose();
      }
    }
    for (const [method, count] of Object.entries(counts))
      expect(count / counts.lora!, `${method}: ${count} vs LoRA ${counts.lora}`).toBeGreaterThan(0.9);
    for (const [method, count] of Object.entries(counts))
      expect(count / counts.lora!, `${method}: ${count} vs LoRA ${counts.lora}`).toBeLessThan(1.1);
  });
});
