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

  it('reports every bad dataset row with its line and field, and trains on the good ones', () => {
    writeFileSync(
      join(work.path, 'bad.jsonl'),
      [
        '{"text": "fine"}',
        '{"txt": "typo"}',
        'not json',
        '',
        '{"ids": [1, 2, 99999]}',
        '{"text": ""}',
        '{"instruction": "Add 1 and 1"}',
        '{"prompt": "Capital of France?", "completion": ""}',
        '{"prompt": 42, "completion": "no"}',
        '{"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]}',
      ].join('\n'),
    );
    const runDir = join(work.path, 'bad-run');
    const result = runCli([
      'train',
      '--config',
      trainConfig('bad-data', [
        'data: { train: ./bad.jsonl }',
        'training: { max_steps: 2, micro_batch_size: 2 }',
        `output_dir: ${runDir}`,
      ]),
    ]);
    expect(result.status, result.stderr).toBe(0);
    expect(result.stderr).toMatch(/7 bad row\(s\) in .*bad\.jsonl left out/);
    expect(result.stderr).toMatch(/line 2, \(row\): no known format: .*\(fields found: txt\)/);
    expect(result.stderr).toMatch(/line 3, \(row\): not valid JSON/);
    expect(result.stderr).toMatch(/line 5, ids\[2\]: 99999 is not a token id in \[0, 258\)/);
    expect(result.stderr).toMatch(/line 6, text: empty text/);
    expect(result.stderr).toMatch(/line 7, output: missing/);
    expect(result.stderr).toMatch(/line 8, completion: empty completion/);
    expect(result.stderr).toMatch(/line 9, prompt: must be a string, got a number/);
    // The two good rows (lines 1 and 10) train.
    expect(result.stderr).toMatch(/· 2 rows, \d+ tokens/);
    expect(result.stdout).toMatch(/finished after 2\/2 steps/);
    expect(readFileSync(join(runDir, 'metrics.jsonl'), 'utf8').trim().split('\n')).toHaveLength(2);
  });

  it('refuses bad rows with data.on_bad_rows: fail', () => {
    const result = runCli([
      'train',
      '--config',
      trainConfig('bad-data-fail', [
        'data: { train: ./bad.jsonl, on_bad_rows: fail }',
        `output_dir: ${join(work.path, 'bad-run-fail')}`,
      ]),
    ]);
    expect(result.status).toBe(1);
    expect(result.stderr).toMatch(/7 bad row\(s\):\n {2}line 2, \(row\)/);
  });

  it('validates a data file: every bad row by line and field, token statistics, non-zero exit', () => {
    const file = join(work.path, 'validate.jsonl');
    writeFileSync(
      file,
      [
        '{"prompt": "ab", "completion": "c", "task": "x"}',
        '{"instruction": "d", "output": ""}',
        '{"conversations": [{"from": "human", "value": "e"}, {"from": "robot", "value": "f"}]}',
        '{"ids": [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]}',
      ].join('\n'),
    );
    const bad = runCli(['data', 'validate', file, '--model', modelDir]);
    expect(bad.status).toBe(1);
    expect(bad.stdout).toMatch(/2 good row\(s\), 2 bad row\(s\)/);
    expect(bad.stderr).toMatch(/has bad rows/);
    expect(bad.stdout).toMatch(/line 2, output: empty completion/);
    expect(bad.stdout).toMatch(/line 3, conversations\[1\]\.from: unknown role "robot"/);
    const good = join(work.path, 'validate-good.jsonl');
    writeFileSync(
      good,
      [
        '{"prompt": "ab", "completion": "c", "task": "x"}',
        '{"ids": [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]}',
        '{"ids": [1, 2], "task": "x"}',
        JSON.stringify({ ids: Array.from({ length: 40 }, () => 7) }),
      ].join('\n'),
    );
    const ok = runCliOk(['data', 'validate', good, '--model', modelDir, '--max-seq-len', '32']);
    expect(ok.stdout).toMatch(/4 good row\(s\), 0 bad row\(s\)/);
    // Row 1: <s> + "<|user|>\nab\n<|assistant|>\n" (26 bytes) + "c" + </s> = 29 tokens, 2 with loss;
    // then 10 (9 with loss), 2 (1) and 40 cut to 32 (31). Lengths 2, 10, 29, 40: p50 10, p90 = p99 = max = 40.
    expect(ok.stdout).toMatch(
      /tokens: 73 \(43 with loss\) · row length p50 10 · p90 40 · p99 40 · max 40 · 1 truncated at max_seq_len 32/,
    );
    expect(ok.stdout).toMatch(/rows per task: x: 2 · \(no task\): 2/);
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

describe('evaluation', () => {
  interface EvalLine {
    step: number;
    loss: number;
    perplexity: number;
    token_accuracy: number;
    tokens: number;
    exact_match: number | null;
    generated: number;
    per_task: Record<string, { rows: number; exact_match: number }>;
  }
  const capitals = [
    ['France', 'Paris'],
    ['Italy', 'Rome'],
    ['Spain', 'Madrid'],
    ['Peru', 'Lima'],
  ];
  const rows = (task: string) =>
    capitals.map(([country, city]) => ({ prompt: `Capital of ${country}?`, completion: city, task }));

  it('evaluates the validation file every N steps and after the last; expertune eval agrees on the export', () => {
    writeJsonl(join(work.path, 'eval-train.jsonl'), [...rows('capitals'), ...rows('other')]);
    writeJsonl(join(work.path, 'eval-valid.jsonl'), [
      ...rows('capitals').slice(0, 2),
      ...rows('other').slice(2),
      { prompt: 'Say a long sentence', completion: 'This answer is much longer than sixteen tokens.' },
    ]);
    const runDir = join(work.path, 'eval-run');
    const settings = {
      method: 'lora',
      data: { train: './eval-train.jsonl', validation: './eval-valid.jsonl', max_seq_len: 64 },
      training: { max_steps: 4, micro_batch_size: 2, eval_every: 2 },
      optimizer: { lr: 0.01 },
      output_dir: runDir,
    };
    const configLines = Object.entries(settings).map(([key, value]) => `${key}: ${JSON.stringify(value)}`);
    const result = runCliOk(['train', '--config', trainConfig('eval', configLines)]);
    expect(result.stderr).toMatch(
      /5 validation sequence\(s\) held out, evaluated every 2 steps and after the last step/,
    );
    expect(result.stderr).toMatch(
      /eval at step 2\/4: loss \d+\.\d{4} · perplexity [\d.]+ · token accuracy [\d.]+ · exact match [\d.]+ \(4 rows\) · capitals [\d.]+ \(2 rows\) · other [\d.]+ \(2 rows\)/,
    );
    expect(result.stderr).toMatch(/eval at step 4\/4: /);
    const lines = readFileSync(join(runDir, 'eval.jsonl'), 'utf8')
      .trim()
      .split('\n')
      .map((line) => JSON.parse(line) as EvalLine);
    expect(lines.map((l) => l.step)).toEqual([2, 4]);
    for (const line of lines) {
      expect(line.perplexity).toBeCloseTo(Math.exp(line.loss), 6);
      expect(line.token_accuracy).toBeGreaterThanOrEqual(0);
      expect(line.token_accuracy).toBeLessThanOrEqual(1);
      expect(line.generated).toBe(4); // the long answer is not generated
      expect(Object.keys(line.per_task)).toEqual(['capitals', 'other']);
    }
    expect(lines[1]!.loss).not.toBe(lines[0]!.loss);
    const record = JSON.parse(readFileSync(join(runDir, 'run.json'), 'utf8')) as {
      final_metrics: Record<string, number>;
    };
    expect(record.final_metrics.eval_loss).toBe(lines[1]!.loss);
    expect(record.final_metrics.eval_token_accuracy).toBe(lines[1]!.token_accuracy);

    // The exported adapter on the same file: the metrics of the last in-training evaluation.
    const validation = join(work.path, 'eval-valid.jsonl');
    const evalArgs = ['eval', '--model', modelDir, '--data', validation, '--max-seq-len', '64'];
    const exported = JSON.parse(runCliOk([...evalArgs, '--adapter', join(runDir, 'export')]).stdout) as EvalLine;
    expect(exported.loss).toBeCloseTo(lines[1]!.loss, 5);
    expect(exported.tokens).toBe(lines[1]!.tokens);
    expect(exported.token_accuracy).toBe(lines[1]!.token_accuracy);
    expect(exported.exact_match).toBe(lines[1]!.exact_match);
    // The base model alone scores differently.
    const base = JSON.parse(runCliOk(evalArgs).stdout) as EvalLine;
    expect(base.tokens).toBe(exported.tokens);
    expect(Math.abs(base.loss - exported.loss)).toBeGreaterThan(1e-3);
  });

  it('refuses eval without --data', () => {
    const result = runCli(['eval', '--model', modelDir]);
    expect(result.status).toBe(2);
    expect(result.stderr).toMatch(/--data is required/);
  });
});

describe('pretraining', () => {
  it('pretrains from a recipe with relative paths, and refuses unknown recipe keys by name', () => {
    const dir = join(work.path, 'pretrain');
    mkdirSync(dir, { recursive: true });
    writeFileSync(
      join(dir, 'book.txt'),
      Array.from({ length: 20 }, (_, i) => `Chapter ${i}. The sea is wide.`).join('\n\n'),
    );
    const recipe = join(dir, 'recipe.yaml');
    writeFileSync(
      recipe,
      [
        'text: [./book.txt]',
        'output_dir: ./run',
        'model_dir: ./model',
        'tokenizer: { vocab_size: 270 }',
        'model: { hidden_size: 32, intermediate_size: 64, num_hidden_layers: 1, num_attention_heads: 2, num_key_value_heads: 1 }',
        'data: { max_seq_len: 32 }',
        'training: { max_steps: 3, micro_batch_size: 2 }',
      ].join('\n'),
    );
    const out = runCliOk(['pretrain', '--config', recipe]);
    expect(out.stdout).toMatch(/model saved in .*model/);
    const info = JSON.parse(runCliOk(['info', '--model', join(dir, 'model')]).stdout);
    expect(info.config.vocabSize).toBe(270);
    expect(info.config.tieWordEmbeddings).toBe(true);

    const failure = (name: string, text: string) => {
      writeFileSync(join(dir, name), text);
      const result = runCli(['pretrain', '--config', join(dir, name)]);
      expect(result.status).toBe(1);
      return result.stderr;
    };
    expect(failure('bad.yaml', 'text: [./book.txt]\noutput_dir: ./run\nmodel: { hidden: 32 }\n')).toMatch(
      /model: Unrecognized key: "hidden"/,
    );
    expect(failure('missing.yaml', 'text: [./nowhere.txt]\noutput_dir: ./run\n')).toMatch(
      /text file not found: .*nowhere\.txt/,
    );
  });
});
