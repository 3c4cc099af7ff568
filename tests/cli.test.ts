/**
 * The `expertune` CLI end to end: full fine-tuning and its Hugging Face export, text prompts
 * through the tokenizer, BF16 exports, and the clear errors promised for bad models, bad
 * checkpoints, bad data and bad arguments.
 */
import { copyFileSync, mkdirSync, readFileSync, truncateSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

import { Engine, maxAbsDifference } from '@expertune/engine';
import { SafetensorsFile, verifyExportDirectory } from '@expertune/formats';
import { initRandomModel } from '@expertune/trainer';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { runCli, runCliOk, temporaryDirectory, writeJsonl } from './helpers.js';

const work = temporaryDirectory('cli');
const modelDir = join(work.path, 'tiny');

beforeAll(() => initRandomModel(modelDir, 'tiny', 1));
afterAll(() => work.remove());

function trainConfig(name: string, lines: string[]): string {
  const path = join(work.path, `${name}.yaml`);
  writeFileSync(path, [`model: ${modelDir}`, ...lines].join('\n'));
  return path;
}

describe('full fine-tuning', () => {
  it('trains every weight and exports a Hugging Face model that reproduces the trained logits', async () => {
    writeJsonl(join(work.path, 'text.jsonl'), [
      { text: 'The whale surfaced at dawn.' },
      { text: 'Ropes creak and sails fill with wind.' },
      { text: 'Every map hides a second coast.' },
    ]);
    const runDir = join(work.path, 'full-run');
    runCliOk([
      'train',
      '--config',
      trainConfig('full', [
        'method: full',
        'data: { train: ./text.jsonl }',
        'training: { max_steps: 6, micro_batch_size: 3 }',
        'optimizer: { lr: 0.001, weight_decay: 0.01 }',
        'export_dtype: BF16',
        `output_dir: ${runDir}`,
      ]),
    ]);
    const exportDir = join(runDir, 'export');
    verifyExportDirectory(exportDir);
    const config = JSON.parse(readFileSync(join(exportDir, 'config.json'), 'utf8'));
    expect(config.torch_dtype).toBe('bfloat16');
    expect(config.architectures).toEqual(['LlamaForCausalLM']);
    const file = SafetensorsFile.open(join(exportDir, 'model.safetensors'));
    expect(file.info('model.layers.1.mlp.down_proj.weight').dtype).toBe('BF16');
    file.close();
    expect(readFileSync(join(exportDir, 'tokenizer.json'))).toEqual(readFileSync(join(modelDir, 'tokenizer.json')));

    // The exported model differs from the base, and matches the run's float32 weights up to BF16 rounding.
    const ids = Int32Array.from([256, 84, 104, 101, 32, 119]);
    const batch = { ids, batch: 1, seqLen: ids.length };
    const engine = Engine.create('native');
    const exported = await engine.loadModel(exportDir);
    const base = await engine.loadModel(modelDir);
    const trained = await engine.loadModel(modelDir);
    const saved = SafetensorsFile.open(join(runDir, 'final', 'trainable.safetensors'));
    for (const name of saved.names()) trained.backend.setTensor(name, saved.readFloat32(name));
    saved.close();
    const [a, b, c] = [await exported.logits(batch), await trained.logits(batch), await base.logits(batch)];
    expect(maxAbsDifference(b, c)).toBeGreaterThan(1e-3);
    expect(maxAbsDifference(a, b)).toBeLessThan(0.05);
    for (const m of [exported, base, trained]) m.dispose();
  });
});

describe('generation from text', () => {
  it('encodes the prompt with the model tokenizer and prints ids and text', () => {
    const result = runCliOk(['generate', '--model', modelDir, '--prompt', 'Hello', '--max-new-tokens', '5', '--json']);
    const out = JSON.parse(result.stdout) as { prompt_ids: number[]; ids: number[]; text: string };
    expect(out.prompt_ids).toEqual([256, 72, 101, 108, 108, 111]); // <s> then the UTF-8 bytes
    expect(out.ids.length).toBeGreaterThan(0);
    expect(out.ids.length).toBeLessThanOrEqual(5);
    const sampling = [
      '--ids',
      '256,72',
      '--max-new-tokens',
      '4',
      '--temperature',
      '0.8',
      '--top-p',
      '0.9',
      '--seed',
      '7',
    ];
    const sampled = runCliOk(['generate', '--model', modelDir, ...sampling, '--json']);
    const again = runCliOk(['generate', '--model', modelDir, ...sampling, '--json']);
    expect(sampled.stdout).toBe(again.stdout); // seeded sampling is reproducible
  });
});

describe('clear errors', () => {
  function expectFailure(args: string[], pattern: RegExp, status = 1): void {
    const result = runCli(args);
    expect(result.status).toBe(status);
    expect(result.stderr).toMatch(pattern);
    expect(result.stderr).not.toMatch(/\n\s+at /); // no stack trace
  }

  /** A copy of the tiny model's config.json, edited, in a directory of its own. */
  function modelWithConfig(name: string, edit: (config: Record<string, unknown>) => void): string {
    const dir = join(work.path, name);
    mkdirSync(dir);
    const config = JSON.parse(readFileSync(join(modelDir, 'config.json'), 'utf8')) as Record<string, unknown>;
    edit(config);
    writeFileSync(join(dir, 'config.json'), JSON.stringify(config));
    return dir;
  }

  it('names an unsupported architecture', () => {
    const dir = modelWithConfig('mixtral', (c) =>
      Object.assign(c, { architectures: ['MixtralForCausalLM'], model_type: 'mixtral' }),
    );
    expectFailure(['info', '--model', dir], /MixtralForCausalLM/);
  });

  it('names a missing config field', () => {
    const dir = modelWithConfig('no-heads', (c) => delete c.num_attention_heads);
    expectFailure(['info', '--model', dir], /num_attention_heads/);
  });

  it('refuses a truncated checkpoint', () => {
    const dir = join(work.path, 'truncated');
    mkdirSync(dir);
    copyFileSync(join(modelDir, 'config.json'), join(dir, 'config.json'));
    copyFileSync(join(modelDir, 'model.safetensors'), join(dir, 'model.safetensors'));
    truncateSync(join(dir, 'model.safetensors'), 5000);
    expectFailure(['info', '--model', dir], /model\.safetensors/);
  });

  it('reports every bad dataset row with its line and field', () => {
    writeFileSync(
      join(work.path, 'bad.jsonl'),
      ['{"text": "fine"}', '{"txt": "typo"}', 'not json', '', '{"ids": [1, 2, 99999]}', '{"text": ""}'].join('\n'),
    );
    const result = runCli([
      'train',
      '--config',
      trainConfig('bad-data', ['data: { train: ./bad.jsonl }', `output_dir: ${join(work.path, 'bad-run')}`]),
    ]);
    expect(result.status).toBe(1);
    expect(result.stderr).toMatch(/4 bad row/);
    expect(result.stderr).toMatch(/line 2, \(row\): needs a "text" string or an "ids" array \(fields found: txt\)/);
    expect(result.stderr).toMatch(/line 3, \(row\): not valid JSON/);
    expect(result.stderr).toMatch(/line 5, ids\[2\]: 99999 is not a token id in \[0, 258\)/);
    expect(result.stderr).toMatch(/line 6, text: must be a non-empty string/);
  });

  it('reports bad config fields by path, and bad arguments with the usage', () => {
    expectFailure(
      [
        'train',
        '--config',
        trainConfig('bad-config', ['lora: { rank: 0 }', 'data: { train: ./x.jsonl }', `output_dir: ${work.path}/o`]),
      ],
      /lora\.rank/,
    );
    expectFailure(
      ['logits', '--model', modelDir, '--ids', '1,x', '--out', join(work.path, 'x.safetensors')],
      /--ids must be comma-separated/,
      2,
    );
    expectFailure(['generate', '--model', modelDir, '--max-new-tokens', '3'], /exactly one of --ids or --prompt/, 2);
    expectFailure(['frobnicate'], /unknown command 'frobnicate'/, 2);
    expectFailure(
      ['logits', '--model', modelDir, '--ids', '1,300', '--out', join(work.path, 'y.safetensors')],
      /ids\[1\] = 300 is outside the vocabulary/,
    );
  });
});
