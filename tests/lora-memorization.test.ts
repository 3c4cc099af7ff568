/**
 * End to end on the CLI: a LoRA run memorises 64 short sequences (loss down at every step, to
 * below 10% of its start), the export is a PEFT directory, and `logits --adapter` on the export
 * reproduces the trained model's logits, computed here in-process from the run's saved tensors.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

import { Engine, hash3, relativeL2, uniform } from '@expertune/engine';
import { SafetensorsFile, verifyExportDirectory } from '@expertune/formats';
import { initRandomModel, readRunRecord } from '@expertune/trainer';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { runCliOk, temporaryDirectory, writeJsonl } from './helpers.js';

describe('LoRA memorisation through the CLI', () => {
  const work = temporaryDirectory('memorise');
  const modelDir = join(work.path, 'base');
  const runDir = join(work.path, 'run');
  let losses: number[] = [];

  beforeAll(() => {
    initRandomModel(modelDir, 'small', 2);
    // 64 sequences of 16 random lowercase letters, as raw token ids (bytes 97-122).
    const letters = Array.from({ length: 64 * 16 }, (_, i) => 97 + Math.floor(uniform(hash3(5, 0, i)) * 26));
    writeJsonl(
      join(work.path, 'memorise.jsonl'),
      Array.from({ length: 64 }, (_, i) => ({ ids: letters.slice(16 * i, 16 * i + 16) })),
    );
    const config = [
      `model: ${modelDir}`,
      'method: lora',
      'seed: 3',
      'lora: { rank: 16, alpha: 32, target_modules: [q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj] }',
      'data: { train: ./memorise.jsonl, max_seq_len: 64 }',
      'training: { max_steps: 50, micro_batch_size: 32, grad_accumulation: 2 }',
      'optimizer: { lr: 0.003, max_grad_norm: 1.0 }',
      'schedule: { kind: cosine, warmup_steps: 0, min_lr_ratio: 0.1 }',
      `output_dir: ${runDir}`,
    ].join('\n');
    const configPath = join(work.path, 'train.yaml');
    writeFileSync(configPath, config);
    const { stderr } = runCliOk(['train', '--config', configPath]);
    expect(stderr).toMatch(/50\/50 \[/); // the progress display reached the last step
    losses = readFileSync(join(runDir, 'metrics.jsonl'), 'utf8')
      .trim()
      .split('\n')
      .map((line) => (JSON.parse(line) as { loss: number }).loss);
  });
  afterAll(() => work.remove());

  it('drives the loss down at every step to below 10% of its start', () => {
    expect(losses).toHaveLength(50);
    for (let i = 1; i < losses.length; i++) expect(losses[i], `step ${i + 1}`).toBeLessThan(losses[i - 1]!);
    expect(losses.at(-1)!).toBeLessThan(0.1 * losses[0]!);
    // The run's record agrees with what was printed.
    const record = readRunRecord(runDir);
    expect(record.steps_completed).toBe(50);
    expect(record.final_metrics.train_loss).toBe(losses.at(-1));
  });

  it('exports a PEFT LoRA directory whose manifest checks out', () => {
    const exportDir = join(runDir, 'export');
    verifyExportDirectory(exportDir);
    const config = JSON.parse(readFileSync(join(exportDir, 'adapter_config.json'), 'utf8'));
    expect(config).toMatchObject({
      peft_type: 'LORA',
      task_type: 'CAUSAL_LM',
      r: 16,
      lora_alpha: 32,
      bias: 'none',
      use_dora: false,
    });
    const file = SafetensorsFile.open(join(exportDir, 'adapter_model.safetensors'));
    expect(file.metadata).toEqual({ format: 'pt' });
    expect(file.names()).toContain('base_model.model.model.layers.3.mlp.down_proj.lora_B.weight');
    expect(file.info('base_model.model.model.layers.0.self_attn.k_proj.lora_A.weight').shape).toEqual([16, 256]);
    expect(file.names()).toHaveLength(4 * 7 * 2);
    file.close();
  });

  it('logits --adapter on the export reproduces the trained model, on both engines', async () => {
    const ids = [104, 101, 108, 108, 111, 32, 119, 111, 114, 108, 100];
    // The trained model, rebuilt in-process from the run's own tensors (not from the export).
    const engine = Engine.create('native');
    const model = await engine.loadModel(modelDir);
    const record = readRunRecord(runDir);
    const adapter = model.attachLora({
      rank: record.config.lora.rank,
      alpha: record.config.lora.alpha,
      dropout: 0,
      useRslora: false,
      targetModules: record.config.lora.target_modules,
      seed: 0,
    });
    const saved = SafetensorsFile.open(join(runDir, 'final', 'trainable.safetensors'));
    adapter.load(new Map(saved.names().map((name) => [name, saved.readFloat32(name)])));
    saved.close();
    const expected = await model.logits({ ids: Int32Array.from(ids), batch: 1, seqLen: ids.length });
    const base = await Engine.create('native').loadModel(modelDir);
    const unadapted = await base.logits({ ids: Int32Array.from(ids), batch: 1, seqLen: ids.length });
    model.dispose();
    base.dispose();
    expect(relativeL2(unadapted, expected)).toBeGreaterThan(0.05); // the adapter does change the model

    for (const engineName of ['native', 'tfjs']) {
      const out = join(work.path, `logits-${engineName}.safetensors`);
      runCliOk([
        'logits',
        '--model',
        modelDir,
        '--adapter',
        join(runDir, 'export'),
        '--ids',
        ids.join(','),
        '--out',
        out,
        '--engine',
        engineName,
      ]);
      const file = SafetensorsFile.open(out);
      expect(file.info('logits').shape).toEqual([ids.length, 258]);
      expect(relativeL2(file.readFloat32('logits'), expected)).toBeLessThan(engineName === 'native' ? 1e-6 : 1e-5);
      file.close();
    }
  });

  it('greedy generation reproduces a memorised sequence, with the same ids on both engines', () => {
    const row = JSON.parse(readFileSync(join(work.path, 'memorise.jsonl'), 'utf8').split('\n')[7]!) as {
      ids: number[];
    };
    const outputs = ['native', 'tfjs'].map((engineName) => {
      const result = runCliOk([
        'generate',
        '--model',
        modelDir,
        '--adapter',
        join(runDir, 'export'),
        '--ids',
        row.ids.slice(0, 4).join(','),
        '--max-new-tokens',
        '12',
        '--greedy',
        '--json',
        '--engine',
        engineName,
      ]);
      return JSON.parse(result.stdout) as { ids: number[] };
    });
    expect(outputs[0]!.ids).toEqual(outputs[1]!.ids);
    expect(outputs[0]!.ids).toEqual(row.ids.slice(4));
  });
});
