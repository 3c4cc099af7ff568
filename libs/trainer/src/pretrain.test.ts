import { describe, expect, it } from 'vitest';

import { paragraphRows } from './pretrain.js';

describe('paragraphRows', () => {
  it('makes one row per paragraph, whitespace collapsed', () => {
    const text = 'CHAPTER 1. Loomings.\n\nCall me\nIshmael.  Some years ago.\n \n\nLast  one.\n';
    expect(paragraphRows(text, 100)).toEqual(['CHAPTER 1. Loomings.', 'Call me Ishmael. Some years ago.', 'Last one.']);
  });

  it('cuts a long paragraph at sentence ends, and a too-long sentence at spaces', () => {
    const text = 'One two three. Four five six! Seven eight? Nine.';
    expect(paragraphRows(text, 30)).toEqual(['One two three. Four five six!', 'Seven eight? Nine.']);
    const long = 'alpha beta gamma delta epsilon zeta eta theta iota kappa';
    const rows = paragraphRows(long, 20);
    expect(rows.every((row) => row.length <= 20)).toBe(true);
    expect(rows.join(' ')).toBe(long);
  });

  it('keeps closing quotes with their sentence', () => {
    expect(paragraphRows('He said "Stop." Then he left.', 18)).toEqual(['He said "Stop."', 'Then he left.']);
  });
});

describe('runPretraining', () => {
  it('learns a tokenizer, trains a Llama from scratch and saves it in Hugging Face layout', async () => {
    const { mkdtempSync, readFileSync, writeFileSync, existsSync } = await import('node:fs');
    const { tmpdir } = await import('node:os');
    const { join } = await import('node:path');
    const { parsePretrainConfig } = await import('@expertune/contracts');
    const { Engine } = await import('@expertune/engine');
    const { SafetensorsFile, loadTokenizer } = await import('@expertune/formats');
    const { runPretraining } = await import('./pretrain.js');

    const dir = mkdtempSync(join(tmpdir(), 'pretrain-'));
    const sentences = [
      'The whale rose at dawn.',
      'The ship sailed north.',
      'The crew sang at night.',
      'The sea was calm and grey.',
    ];
    writeFileSync(join(dir, 'a.txt'), Array.from({ length: 30 }, () => sentences.join(' ')).join('\n\n'));
    const config = parsePretrainConfig({
      text: [join(dir, 'a.txt')],
      output_dir: join(dir, 'run'),
      model_dir: join(dir, 'model'),
      tokenizer: { vocab_size: 300 },
      model: {
        hidden_size: 32,
        intermediate_size: 64,
        num_hidden_layers: 2,
        num_attention_heads: 4,
        num_key_value_heads: 2,
      },
      data: { max_seq_len: 64, validation_fraction: 0.1 },
      training: { max_steps: 40, micro_batch_size: 4 },
      optimizer: { lr: 0.01 },
      schedule: { warmup_steps: 4 },
    });
    const result = await runPretraining(config);

    const model = join(dir, 'model');
    for (const name of ['config.json', 'model.safetensors', 'tokenizer.json', 'tokenizer_config.json', 'README.md'])
      expect(existsSync(join(model, name)), name).toBe(true);
    const configJson = JSON.parse(readFileSync(join(model, 'config.json'), 'utf8'));
    const tokenizer = loadTokenizer(model);
    expect(configJson.vocab_size).toBe(tokenizer.vocabSize);
    expect(configJson.tie_word_embeddings).toBe(true);
    expect(configJson.bos_token_id).toBe(tokenizer.bosTokenId);
    const weights = SafetensorsFile.open(join(model, 'model.safetensors'));
    expect(weights.info('model.embed_tokens.weight').dtype).toBe('BF16');
    expect(weights.names()).not.toContain('lm_head.weight');

    // Every weight trained: none is still equal to the initial one.
    const init = SafetensorsFile.open(join(dir, 'run', 'init', 'model.safetensors'));
    for (const name of ['model.embed_tokens.weight', 'model.layers.1.mlp.down_proj.weight', 'model.norm.weight']) {
      const before = init.readFloat32(name);
      const after = weights.readFloat32(name);
      expect(
        after.some((v, i) => Math.abs(v - before[i]!) > 1e-3),
        name,
      ).toBe(true);
    }

    // It learned the text: held-out loss far below a uniform guess over the vocabulary.
    const record = JSON.parse(readFileSync(join(model, 'pretrain.json'), 'utf8'));
    expect(record.training.final_metrics.eval_loss).toBeLessThan(Math.log(tokenizer.vocabSize) / 3);
    expect(record.training.loss_curve.at(-1).step).toBe(40);
    expect(record.recipe.text).toEqual(['../a.txt']);
    expect(record.corpus.rows).toBe(30);
    expect(result.training.losses).toHaveLength(40);

    // The saved model loads and continues a training sentence greedily.
    const engine = Engine.create('native', { threads: 1 });
    const loaded = await engine.loadModel(model);
    try {
      const { generate } = await import('@expertune/engine');
      const prompt = tokenizer.encode('The whale');
      const out = await generate(loaded, prompt, { maxNewTokens: 4, greedy: true });
      expect(tokenizer.decode(out)).toBe(' rose at dawn.');
    } finally {
      loaded.dispose();
    }
  }, 60_000);
});
