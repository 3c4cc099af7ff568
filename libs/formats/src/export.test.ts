import { createHash } from 'node:crypto';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { afterEach, describe, expect, it } from 'vitest';

import { readPeftLoraAdapter, verifyExportDirectory, writePeftLoraExport, type PeftLoraExport } from './export.js';
import { SafetensorsFile } from './safetensors.js';

const dirs: string[] = [];
function scratch(): string {
  const dir = mkdtempSync(join(tmpdir(), 'expertune-export-'));
  dirs.push(dir);
  return dir;
}
afterEach(() => dirs.splice(0).forEach((d) => rmSync(d, { recursive: true, force: true })));

function adapter(overrides: Partial<PeftLoraExport> = {}): PeftLoraExport {
  return {
    baseModel: '/models/tiny',
    rank: 2,
    alpha: 4,
    dropout: 0.05,
    useRslora: false,
    targetModules: ['q_proj'],
    tensors: new Map([
      ['model.layers.0.self_attn.q_proj.lora_A.weight', { shape: [2, 3], data: Float32Array.from([1, 2, 3, 4, 5, 6]) }],
      [
        'model.layers.0.self_attn.q_proj.lora_B.weight',
        { shape: [4, 2], data: Float32Array.from([0.5, -1, 0, 2, 1.5, 0.25, -3, 8]) },
      ],
    ]),
    manifest: { runId: 'run-1', datasetHash: 'abc', finalMetrics: { train_loss: 1.25 } },
    card: { steps: 10 },
    ...overrides,
  };
}

describe('PEFT LoRA export', () => {
  it('writes the strict PEFT layout: config fields, prefixed keys, pt metadata, manifest hashes', () => {
    const dir = join(scratch(), 'export');
    writePeftLoraExport(dir, adapter());
    expect(readdirSync(dir).sort()).toEqual([
      'README.md',
      'adapter_config.json',
      'adapter_model.safetensors',
      'manifest.json',
    ]);
    expect(JSON.parse(readFileSync(join(dir, 'adapter_config.json'), 'utf8'))).toMatchObject({
      peft_type: 'LORA',
      task_type: 'CAUSAL_LM',
      base_model_name_or_path: '/models/tiny',
      r: 2,
      lora_alpha: 4,
      lora_dropout: 0.05,
      target_modules: ['q_proj'],
      bias: 'none',
      use_rslora: false,
      use_dora: false,
      modules_to_save: null,
      fan_in_fan_out: false,
      inference_mode: true,
    });
    const file = SafetensorsFile.open(join(dir, 'adapter_model.safetensors'));
    expect(file.metadata).toEqual({ format: 'pt' });
    expect(file.names().sort()).toEqual([
      'base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight',
      'base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight',
    ]);
    expect([...file.readFloat32('base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight')]).toEqual([
      0.5, -1, 0, 2, 1.5, 0.25, -3, 8,
    ]);
    file.close();
    const manifest = JSON.parse(readFileSync(join(dir, 'manifest.json'), 'utf8'));
    const bytes = readFileSync(join(dir, 'adapter_model.safetensors'));
    expect(manifest.files['adapter_model.safetensors']).toEqual({
      sha256: createHash('sha256').update(bytes).digest('hex'),
      bytes: bytes.length,
    });
    expect(manifest).toMatchObject({
      run_id: 'run-1',
      base_model: '/models/tiny',
      method: 'lora',
      dataset_hash: 'abc',
      final_metrics: { train_loss: 1.25 },
    });
    expect(readFileSync(join(dir, 'README.md'), 'utf8')).toContain('Trainable parameters: 14');
    verifyExportDirectory(dir);
  });

  it('round-trips through readPeftLoraAdapter, in BF16 too', () => {
    const dir = join(scratch(), 'export');
    writePeftLoraExport(dir, adapter({ dtype: 'BF16', useRslora: true }));
    const loaded = readPeftLoraAdapter(dir);
    expect(loaded).toMatchObject({
      rank: 2,
      alpha: 4,
      useRslora: true,
      targetModules: ['q_proj'],
      baseModel: '/models/tiny',
    });
    // All values above are exact in bfloat16.
    expect([...loaded.tensors.get('model.layers.0.self_attn.q_proj.lora_A.weight')!]).toEqual([1, 2, 3, 4, 5, 6]);
  });

  it('replaces an existing export whole, leaving no staging directory behind', () => {
    const parent = scratch();
    const dir = join(parent, 'export');
    writePeftLoraExport(dir, adapter());
    writePeftLoraExport(dir, adapter({ rank: 2, alpha: 8 }));
    expect(JSON.parse(readFileSync(join(dir, 'adapter_config.json'), 'utf8')).lora_alpha).toBe(8);
    expect(readdirSync(parent)).toEqual(['export']);
  });

  it('detects a file changed after export', () => {
    const dir = join(scratch(), 'export');
    writePeftLoraExport(dir, adapter());
    const path = join(dir, 'adapter_config.json');
    writeFileSync(path, readFileSync(path, 'utf8').replace('"r": 2', '"r": 3'));
    expect(() => verifyExportDirectory(dir)).toThrow(/adapter_config\.json does not match manifest\.json/);
  });

  it('refuses adapters it cannot apply exactly, naming the reason', () => {
    const dir = join(scratch(), 'export');
    writePeftLoraExport(dir, adapter());
    const configPath = join(dir, 'adapter_config.json');
    const config = JSON.parse(readFileSync(configPath, 'utf8'));
    for (const [patch, message] of [
      [{ use_dora: true }, /DoRA/],
      [{ peft_type: 'IA3' }, /peft_type/],
      [{ fan_in_fan_out: true }, /fan_in_fan_out/],
      [{ bias: 'all' }, /bias/],
      [{ r: 0 }, /r must be a positive integer/],
      [{ target_modules: 'q_proj|v_proj' }, /target_modules/],
    ] as const) {
      writeFileSync(configPath, JSON.stringify({ ...config, ...patch }));
      expect(() => readPeftLoraAdapter(dir)).toThrow(message);
    }
    writeFileSync(configPath, JSON.stringify(config));
    rmSync(join(dir, 'adapter_model.safetensors'));
    writeFileSync(join(dir, 'adapter_model.bin'), 'pickle');
    expect(() => readPeftLoraAdapter(dir)).toThrow(/pickle/);
    expect(existsSync(join(dir, 'adapter_model.bin'))).toBe(true);
  });
});
