import { describe, expect, it } from 'vitest';
import { z } from 'zod';

import { ConfigError, adapterSection, parseTrainConfig, trainConfigSchema } from '../train-config.js';
import { dynmoleSchema } from './dynmole.js';
import { flyloraSchema } from './flylora.js';
import { loraSchema } from './lora.js';
import { loramoeSchema } from './loramoe.js';
import { molaPresetExperts, molaSchema, resolveMolaExperts, resolvePerLayer } from './mola.js';

const base = { model: 'm', data: { train: 'd.jsonl' }, output_dir: 'out' };

function issuesOf(input: unknown): string[] {
  try {
    parseTrainConfig(input);
  } catch (error) {
    expect(error).toBeInstanceOf(ConfigError);
    return (error as ConfigError).issues.map((i) => `${i.path}: ${i.message}`);
  }
  throw new Error('expected the config to be rejected');
}

describe('method sections', () => {
  it('MoLA: inverted triangle, top-2, r 8, alpha 16, balance on (layer form)', () => {
    const config = parseTrainConfig({ ...base, method: 'mola' });
    expect(config.mola).toEqual({
      rank: 8,
      alpha: 16,
      dropout: 0.05,
      use_rslora: false,
      target_modules: ['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj'],
      num_experts: { preset: 'inverted_triangle', scale: 1 },
      top_k: 2,
      balance: { coef: 1e-3, form: 'layer', scope: 'micro' },
      z_loss_coef: 0,
    });
    expect(adapterSection(config)).toEqual({ method: 'mola', section: config.mola });
  });

  it('LoRAMoE: FFN only, 6 experts of r 24, the localized constraint off as in the released script', () => {
    const config = parseTrainConfig({ ...base, method: 'loramoe' });
    expect(config.loramoe).toEqual({
      rank: 24,
      alpha: 48,
      dropout: 0.05,
      use_rslora: false,
      target_modules: ['gate_proj', 'up_proj', 'down_proj'],
      num_experts: 6,
      blc_alpha: 0,
      blc_weight: 0,
      balance: { coef: 0, form: 'layer', scope: 'micro' },
      z_loss_coef: 0,
    });
  });

  it("DynMoLE: the reference template's defaults", () => {
    const config = parseTrainConfig({ ...base, method: 'dynmole' });
    expect(config.dynmole).toEqual({
      rank: 24,
      alpha: 48,
      dropout: 0.05,
      use_rslora: false,
      target_modules: ['gate_proj', 'up_proj', 'down_proj'],
      num_experts: 6,
      top_p: 0.75,
      keep_top_k: 2,
      entropy_index: 1.1,
      entropy_threshold: 0.9,
      entropy_eps: 1e-5,
      entropy_coef: 0.01,
      balance: { coef: 1e-3, form: 'pooled', scope: 'micro' },
      z_loss_coef: 0,
    });
  });

  it('FlyLoRA: r 32, alpha 64, top-8, signed selection, u = 1e-3, no dropout', () => {
    const config = parseTrainConfig({ ...base, method: 'flylora' });
    expect(config.flylora).toEqual({
      rank: 32,
      alpha: 64,
      dropout: 0,
      use_rslora: false,
      target_modules: ['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj'],
      top_k: 8,
      select: 'signed',
      bias_rate: 1e-3,
    });
  });

  it('keeps what is given and fills the rest, deep into nested objects', () => {
    const config = parseTrainConfig({
      ...base,
      method: 'mola',
      mola: { num_experts: [2, 8], top_k: [1, 2], balance: { scope: 'global' } },
    });
    expect(config.mola).toMatchObject({
      num_experts: [2, 8],
      top_k: [1, 2],
      balance: { coef: 1e-3, form: 'layer', scope: 'global' },
    });
    const preset = parseTrainConfig({ ...base, method: 'mola', mola: { num_experts: { preset: 'hourglass' } } });
    expect(preset.mola!.num_experts).toEqual({ preset: 'hourglass', scale: 1 });
  });

  it('leaves the sections of other methods alone and adds none for lora or full', () => {
    const config = parseTrainConfig({ ...base, method: 'lora', dynmole: { num_experts: 4 } });
    expect(config.mola).toBeUndefined();
    expect(config.dynmole!.num_experts).toBe(4);
    expect(adapterSection(config)).toEqual({ method: 'lora', section: config.lora });
    expect(adapterSection(parseTrainConfig({ ...base, method: 'full' }))).toBeNull();
  });

  it('rejects bad values, each with its path', () => {
    expect(
      issuesOf({
        ...base,
        method: 'mola',
        mola: { num_experts: { preset: 'diamond' }, top_k: 0, balance: { form: 'global', coef: -1 }, rank: 0 },
        dynmole: { top_p: 1.5, entropy_index: 2.5, keep_top_k: 7, colour: 1 },
        flylora: { rank: 32, top_k: 5, select: 'sign' },
        loramoe: { num_experts: 3, target_modules: ['mlp'] },
      }).sort(),
    ).toEqual([
      'dynmole.entropy_index: Too big: expected number to be <=2',
      'dynmole.keep_top_k: must be at most num_experts (6), got 7',
      'dynmole.top_p: Too big: expected number to be <=1',
      'dynmole: Unrecognized key: "colour"',
      'flylora.select: Invalid option: expected one of "signed"|"abs"',
      'loramoe.target_modules.0: Invalid option: expected one of "q_proj"|"k_proj"|"v_proj"|"o_proj"|"gate_proj"|"up_proj"|"down_proj"',
      'mola.balance.coef: Too small: expected number to be >=0',
      'mola.balance.form: Invalid option: expected one of "layer"|"pooled"',
      'mola.num_experts: Invalid input',
      'mola.rank: Too small: expected number to be >0',
      'mola.top_k: Too small: expected number to be >0',
    ]);
  });

  it('checks the rules between fields once the fields themselves are valid', () => {
    expect(issuesOf({ ...base, flylora: { rank: 32, top_k: 5 } })).toEqual([
      'flylora.top_k: must divide rank (32), got 5',
    ]);
    expect(issuesOf({ ...base, flylora: { rank: 4, top_k: 8 } })).toEqual([
      'flylora.top_k: must be at most rank (4), got 8',
    ]);
    expect(issuesOf({ ...base, loramoe: { num_experts: 3 } })).toEqual([
      'loramoe.num_experts: must be even (LoRAMoE splits its experts into two groups), got 3',
    ]);
    expect(issuesOf({ ...base, dynmole: { num_experts: 1 } })).toEqual([
      'dynmole.keep_top_k: must be at most num_experts (1), got 2',
    ]);
  });

  it('accepts every method name and rejects others', () => {
    for (const method of ['lora', 'full', 'mola', 'loramoe', 'dynmole', 'flylora'])
      expect(parseTrainConfig({ ...base, method }).method).toBe(method);
    expect(issuesOf({ ...base, method: 'mixlora' })[0]).toMatch(/^method: Invalid option/);
  });

  it('describes every field of every method section (the console builds its forms from them)', () => {
    const undescribed: string[] = [];
    const visit = (schema: z.ZodType, path: string): void => {
      let inner: z.ZodType = schema;
      // Unwrap defaults, prefaults and optionals, keeping the outermost description.
      const described = Boolean(schema.description);
      for (;;) {
        const def = (inner as unknown as { _zod: { def: { type: string; innerType?: z.ZodType } } })._zod.def;
        if (def.innerType && ['default', 'prefault', 'optional'].includes(def.type)) {
          if (!described && inner.description) break;
          inner = def.innerType;
        } else break;
      }
      if (!described && !inner.description) undescribed.push(path);
      if (inner instanceof z.ZodObject)
        for (const [key, field] of Object.entries(inner.shape as Record<string, z.ZodType>))
          visit(field, `${path}.${key}`);
    };
    const sections = {
      lora: loraSchema,
      mola: molaSchema,
      loramoe: loramoeSchema,
      dynmole: dynmoleSchema,
      flylora: flyloraSchema,
    };
    for (const [name, schema] of Object.entries(sections)) visit(schema, name);
    expect(undescribed).toEqual([]);
    // The whole config converts to JSON Schema (what a form generator reads), descriptions included.
    const json = z.toJSONSchema(trainConfigSchema, { io: 'input' }) as {
      properties: Record<string, { description?: string }>;
    };
    expect(json.properties.mola!.description).toMatch(/MoLA/);
  });
});

describe('MoLA presets', () => {
  it('splits 32 layers into the paper’s four groups of 8', () => {
    const groups = (experts: number[]) => [0, 8, 16, 24].map((start) => [...new Set(experts.slice(start, start + 8))]);
    expect(groups(molaPresetExperts('inverted_triangle', 32))).toEqual([[2], [4], [6], [8]]);
    expect(groups(molaPresetExperts('triangle', 32))).toEqual([[8], [6], [4], [2]]);
    expect(groups(molaPresetExperts('hourglass', 32))).toEqual([[8], [2], [2], [8]]);
    expect(groups(molaPresetExperts('rectangle', 32))).toEqual([[5], [5], [5], [5]]);
    // Every preset spends the same number of experts (160 on 32 layers).
    for (const preset of ['inverted_triangle', 'triangle', 'hourglass', 'rectangle'] as const)
      expect(molaPresetExperts(preset, 32).reduce((a, b) => a + b)).toBe(160);
  });

  it('scales to any depth: layer l is in group floor(4l / L)', () => {
    expect(molaPresetExperts('inverted_triangle', 2)).toEqual([2, 6]);
    expect(molaPresetExperts('inverted_triangle', 4)).toEqual([2, 4, 6, 8]);
    expect(molaPresetExperts('inverted_triangle', 6)).toEqual([2, 2, 4, 6, 6, 8]);
    expect(molaPresetExperts('hourglass', 10)).toEqual([8, 8, 8, 2, 2, 2, 2, 2, 8, 8]);
    expect(molaPresetExperts('triangle', 1)).toEqual([8]);
    expect(molaPresetExperts('triangle', 4, 2)).toEqual([16, 12, 8, 4]);
    expect(() => molaPresetExperts('triangle', 0)).toThrow(/numLayers/);
    expect(() => molaPresetExperts('diamond' as never, 4)).toThrow(/unknown MoLA preset/);
  });

  it('resolves every form of num_experts and top_k against the depth', () => {
    expect(resolveMolaExperts(3, 4)).toEqual([3, 3, 3, 3]);
    expect(resolveMolaExperts([1, 2, 3], 3)).toEqual([1, 2, 3]);
    expect(resolveMolaExperts({ preset: 'rectangle', scale: 2 }, 3)).toEqual([10, 10, 10]);
    expect(() => resolveMolaExperts([1, 2], 3)).toThrow(/2 entries but the model has 3 layers/);
    expect(resolvePerLayer(2, 3)).toEqual([2, 2, 2]);
    expect(() => resolvePerLayer([2], 3)).toThrow(/1 entries/);
  });
});
