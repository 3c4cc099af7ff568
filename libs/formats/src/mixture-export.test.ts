/**
 * The mixture layout key by key against docs/adapter-format.md (the contract is restated here by
 * hand, not taken from the library), round trips of every method, and the reader's errors.
 */
import { readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

import { describe, expect, it } from 'vitest';

import { type MixtureSpec } from './adapter-layout.js';
import { contractKeys, model, SPECS, tensorsFor } from './adapter-fixtures.test-util.js';
import { verifyExportDirectory, writePeftLoraExport } from './export.js';
import { tempDir } from './fixtures.test-util.js';
import {
  loraTensorsForAllLayers,
  readAdapterExport,
  writeMixtureExport,
  type AdapterTensors,
} from './mixture-export.js';
import { parseModelConfig } from './model-config.js';
import { SafetensorsFile, writeSafetensors } from './safetensors.js';

const ROUTING: Record<string, unknown> = {
  mola: { top_k: [1, 2] },
  loramoe: { groups: 2 },
  dynmole: { entropy_index: 1.1, entropy_threshold: 0.9, top_p: 0.75, keep_top_k: 2, eps: 1e-5 },
  flylora: { top_k: 2, select: 'abs' },
};

function write(dir: string, spec: MixtureSpec, tensors: AdapterTensors = tensorsFor(spec)): void {
  writeMixtureExport(dir, {
    baseModel: '/models/tiny',
    adapter: spec,
    tensors,
    manifest: { runId: 'run-1', datasetHash: 'abc', finalMetrics: { train_loss: 1.5 } },
    card: { steps: 3 },
  });
}

describe('mixture export', () => {
  for (const spec of SPECS) {
    it(`${spec.method}: follows the contract key by key, and reads back exactly`, () => {
      const dir = join(tempDir(), 'export');
      const tensors = tensorsFor(spec);
      write(dir, spec, tensors);
      expect(readdirSync(dir).sort()).toEqual([
        'README.md',
        'adapter_config.json',
        'adapter_model.safetensors',
        'manifest.json',
      ]);
      verifyExportDirectory(dir);
      const config = JSON.parse(readFileSync(join(dir, 'adapter_config.json'), 'utf8'));
      expect(config).toEqual({
        format: 'expertune-mole',
        format_version: 1,
        peft_type: 'MOLE',
        task_type: 'CAUSAL_LM',
        method: spec.method,
        base_model_name_or_path: '/models/tiny',
        target_modules: spec.targetModules,
        r: spec.rank,
        lora_alpha: spec.alpha,
        use_rslora: spec.useRslora,
        num_experts: spec.method === 'flylora' ? [4, 4] : spec.numExperts,
        routing: ROUTING[spec.method],
      });
      const file = SafetensorsFile.open(join(dir, 'adapter_model.safetensors'));
      expect(file.metadata).toEqual({ format: 'pt' });
      const contract = contractKeys(spec, 2);
      expect(file.names().sort()).toEqual([...contract.keys()].sort());
      for (const [key, shape] of contract) {
        expect(file.info(key).shape, key).toEqual(shape);
        expect(file.info(key).dtype).toBe('F32');
      }
      file.close();
      const manifest = JSON.parse(readFileSync(join(dir, 'manifest.json'), 'utf8'));
      expect(manifest).toMatchObject({ method: spec.method, base_model: '/models/tiny', run_id: 'run-1' });

      for (const options of [{}, { model }]) {
        const loaded = readAdapterExport(dir, options);
        expect(loaded.method).toBe(spec.method);
        expect(loaded.spec).toEqual(spec);
        expect(loaded.numLayers).toBe(2);
        expect(loaded.baseModel).toBe('/models/tiny');
        expect([...loaded.tensors.keys()].sort()).toEqual([...tensors.keys()].sort());
        for (const [name, t] of tensors) expect(loaded.tensors.get(name), name).toEqual(t.data);
      }
    });
  }

  it('states the method, trainable parameters per layer and the routing in the README', () => {
    const dir = join(tempDir(), 'export');
    write(dir, SPECS[3]!); // FlyLoRA: only B is trainable
    const readme = readFileSync(join(dir, 'README.md'), 'utf8');
    // B per site: out·r summed over the 7 projections (8+4+4+8+12+12+8 = 56) · 4 = 224 per layer.
    expect(readme).toContain('Trainable parameters: 448');
    expect(readme).toContain('| 0 | 4 | 224 | 268 |'); // frozen per layer: A (in·r = (8·6 + 12)·4 = 240) + bias (4·7 = 28)
    expect(readme).toMatch(/top 2 ranks of `\|a \+ topk_bias\|`/);
  });

  it('refuses to write tensors that do not match the adapter', () => {
    const spec = SPECS[0]!;
    const tensors = tensorsFor(spec);
    tensors.delete('model.layers.1.mlp.down_proj.experts.3.lora_B.weight');
    expect(() => write(join(tempDir(), 'x'), spec, tensors)).toThrow(
      /1 tensor\(s\) missing: model\.layers\.1\.mlp\.down_proj\.experts\.3\.lora_B\.weight/,
    );
  });
});

describe('reading any export: clear errors', () => {
  function exported(spec: MixtureSpec = SPECS[0]!): string {
    const dir = join(tempDir(), 'export');
    write(dir, spec);
    return dir;
  }
  function patchConfig(dir: string, patch: Record<string, unknown>): void {
    const path = join(dir, 'adapter_config.json');
    writeFileSync(path, JSON.stringify({ ...JSON.parse(readFileSync(path, 'utf8')), ...patch }));
  }

  it('names config problems by field', () => {
    for (const [patch, message] of [
      [{ format_version: 2 }, /format_version 2 is newer than this reader \(1\)/],
      [{ method: 'mixlora' }, /method is "mixlora"/],
      [{ num_experts: [2, 0] }, /num_experts must be a non-empty list of positive integers/],
      [{ routing: { top_k: [1, 5] } }, /routing\.top_k\[1\] = 5 exceeds num_experts\[1\] = 4/],
      [{ routing: { top_k: [1] } }, /routing\.top_k must list one positive integer per layer \(2\)/],
      [{ target_modules: ['qkv'] }, /target_modules must be a non-empty list/],
      [{ use_rslora: 'no' }, /use_rslora must be true or false/],
      [{ peft_type: 'IA3', format: undefined }, /peft_type is "IA3"/],
    ] as const) {
      const dir = exported();
      patchConfig(dir, patch);
      expect(() => readAdapterExport(dir), JSON.stringify(patch)).toThrow(message);
    }
    const fly = exported(SPECS[3]!);
    patchConfig(fly, { num_experts: [4, 3] });
    expect(() => readAdapterExport(fly)).toThrow(/num_experts\[1\] is 3: FlyLoRA has r = 4 rank-1 experts/);
    const dyn = exported(SPECS[2]!);
    patchConfig(dyn, { routing: { ...(ROUTING.dynmole as object), entropy_index: 3 } });
    expect(() => readAdapterExport(dyn)).toThrow(/routing\.entropy_index must be in \(0, 2\], got 3/);
  });

  it('checks keys and shapes, against the model when given', () => {
    const dir = exported();
    patchConfig(dir, { num_experts: [2, 3], routing: { top_k: [1, 2] } });
    expect(() => readAdapterExport(dir)).toThrow(
      /unexpected tensor\(s\).*base_model\.model\.model\.layers\.1\.self_attn\.q_proj\.experts\.3\.lora_A\.weight/,
    );
    // A tensor of the wrong shape, consistent in itself but not with the model.
    const spec = SPECS[1]!;
    const tensors = tensorsFor(spec);
    const wrong = join(tempDir(), 'wrong');
    write(wrong, spec, tensors);
    const weights = join(wrong, 'adapter_model.safetensors');
    const file = SafetensorsFile.open(weights);
    const all = new Map(
      file
        .names()
        .map((n) => [n, { dtype: 'F32' as const, shape: [...file.info(n).shape], data: file.readFloat32(n) }]),
    );
    file.close();
    all.set('base_model.model.model.layers.0.mlp.up_proj.experts.1.lora_A.weight', {
      dtype: 'F32',
      shape: [2, 7],
      data: new Float32Array(14),
    });
    writeSafetensors(weights, all, { format: 'pt' });
    expect(() => readAdapterExport(wrong)).toThrow(
      /base_model\.model\.model\.layers\.0\.mlp\.up_proj\.experts\.1\.lora_A\.weight has shape \[2, 7\], expected \[2, 8 \(in_features\)\]/,
    );
    const other = parseModelConfig({
      architectures: ['LlamaForCausalLM'],
      vocab_size: 16,
      hidden_size: 16,
      intermediate_size: 12,
      num_hidden_layers: 2,
      num_attention_heads: 2,
    });
    expect(() => readAdapterExport(exported(SPECS[1]!), { model: other })).toThrow(
      /expected \[4, 16 \(in_features\)\]/,
    );
    const deeper = { ...model, numLayers: 3 };
    expect(() => readAdapterExport(exported(), { model: deeper })).toThrow(
      /num_experts has 2 entries but the model has 3 layers/,
    );
    expect(() => readAdapterExport(tempDir())).toThrow(/no adapter_config\.json/);
  });

  it('reads a PEFT LoRA, with layers_to_transform filled with zeros for the engine', () => {
    const dir = join(tempDir(), 'lora');
    const A = Float32Array.from({ length: 16 }, (_, i) => i);
    const B = Float32Array.from({ length: 16 }, (_, i) => -i);
    writePeftLoraExport(dir, {
      baseModel: '/models/tiny',
      rank: 2,
      alpha: 4,
      dropout: 0,
      useRslora: false,
      targetModules: ['q_proj'],
      layersToTransform: [1],
      tensors: new Map([
        ['model.layers.1.self_attn.q_proj.lora_A.weight', { shape: [2, 8], data: A }],
        ['model.layers.1.self_attn.q_proj.lora_B.weight', { shape: [8, 2], data: B }],
      ]),
      manifest: { runId: 'r', datasetHash: null, finalMetrics: {} },
      card: {},
    });
    const loaded = readAdapterExport(dir, { model });
    expect(loaded.method).toBe('lora');
    expect(loaded.spec).toEqual({
      method: 'lora',
      rank: 2,
      alpha: 4,
      useRslora: false,
      dropout: 0,
      targetModules: ['q_proj'],
      layers: [1],
    });
    const all = loraTensorsForAllLayers(loaded, model);
    expect([...all.keys()].sort()).toEqual([
      'model.layers.0.self_attn.q_proj.lora_A.weight',
      'model.layers.0.self_attn.q_proj.lora_B.weight',
      'model.layers.1.self_attn.q_proj.lora_A.weight',
      'model.layers.1.self_attn.q_proj.lora_B.weight',
    ]);
    expect(all.get('model.layers.0.self_attn.q_proj.lora_B.weight')).toEqual(new Float32Array(16));
    expect(all.get('model.layers.1.self_attn.q_proj.lora_A.weight')).toEqual(A);
    // A LoRA whose layer is missing without layers_to_transform is refused by name.
    patchLora(dir);
    expect(() => readAdapterExport(dir, { model })).toThrow(
      /2 tensor\(s\) missing: base_model\.model\.model\.layers\.0\.self_attn\.q_proj\.lora_A\.weight/,
    );
  });

  function patchLora(dir: string): void {
    const path = join(dir, 'adapter_config.json');
    writeFileSync(path, JSON.stringify({ ...JSON.parse(readFileSync(path, 'utf8')), layers_to_transform: null }));
  }
});
