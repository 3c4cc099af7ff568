/**
 * Every mixture method end to end on the CLI: a few training steps on the tiny model, the export
 * checked key by key against docs/adapter-format.md (the contract is written out here by hand),
 * `logits --adapter` on the export reproducing the trained model (rebuilt in-process from the
 * run's own tensors and adapter config) on both engines, the per-step aux losses and routing
 * statistics, and both plain-LoRA fallbacks.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

import { Engine, hash3, relativeL2, uniform, type AdapterConfig } from '@expertune/engine';
import { SafetensorsFile, verifyExportDirectory } from '@expertune/formats';
import { crossEntropySum, initRandomModel, makeBatch, readRunRecord } from '@expertune/trainer';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { runCli, runCliOk, temporaryDirectory, writeJsonl } from './helpers.js';

const work = temporaryDirectory('mixtures');
const modelDir = join(work.path, 'tiny');
const dataPath = join(work.path, 'data.jsonl');
const IDS = [256, 104, 101, 108, 108, 111, 32, 119, 111, 114, 108, 100];

// The tiny preset: d = 64, F = 176, 4 heads of 16 (q: 64 out), 2 KV heads (k, v: 32 out), 2 layers.
const DIMS: Record<string, { in: number; out: number; group: string }> = {
  q_proj: { in: 64, out: 64, group: 'self_attn' },
  k_proj: { in: 64, out: 32, group: 'self_attn' },
  v_proj: { in: 64, out: 32, group: 'self_attn' },
  o_proj: { in: 64, out: 64, group: 'self_attn' },
  gate_proj: { in: 64, out: 176, group: 'mlp' },
  up_proj: { in: 64, out: 176, group: 'mlp' },
  down_proj: { in: 176, out: 64, group: 'mlp' },
};
const ALL = Object.keys(DIMS);
const FFN = ['gate_proj', 'up_proj', 'down_proj'];

interface Case {
  method: 'mola' | 'loramoe' | 'dynmole' | 'flylora';
  section: string;
  targets: string[];
  /** Experts per layer as the export must record them. */
  numExperts: number[];
  rank: number;
  alpha: number;
  routing: Record<string, unknown>;
}

const CASES: Case[] = [
  {
    method: 'mola',
    section:
      'mola: { rank: 4, alpha: 8, num_experts: { preset: inverted_triangle }, top_k: [1, 2], z_loss_coef: 0.001 }',
    targets: ALL,
    numExperts: [2, 6],
    rank: 4,
    alpha: 8,
    routing: { top_k: [1, 2] },
  },
  {
    method: 'loramoe',
    section: 'loramoe: { rank: 4, alpha: 8, num_experts: 4, blc_alpha: 0.1, blc_weight: 0.1 }',
    targets: FFN,
    numExperts: [4, 4],
    rank: 4,
    alpha: 8,
    routing: { groups: 2 },
  },
  {
    method: 'dynmole',
    section: 'dynmole: { rank: 4, alpha: 8, num_experts: 4, entropy_threshold: 0.95, balance: { scope: global } }',
    targets: FFN,
    numExperts: [4, 4],
    rank: 4,
    alpha: 8,
    routing: { entropy_index: 1.1, entropy_threshold: 0.95, top_p: 0.75, keep_top_k: 2, eps: 1e-5 },
  },
  {
    method: 'flylora',
    section: 'flylora: { rank: 8, alpha: 16, top_k: 2, select: abs, bias_rate: 0.01 }',
    targets: ALL,
    numExperts: [8, 8],
    rank: 8,
    alpha: 16,
    routing: { top_k: 2, select: 'abs' },
  },
];

/** The contract's tensor table for a case: key → shape. */
function contract(c: Case): Map<string, number[]> {
  const keys = new Map<string, number[]>();
  for (let l = 0; l < 2; l++)
    for (const t of c.targets) {
      const { in: inF, out, group } = DIMS[t]!;
      const P = `base_model.model.model.layers.${l}.${group}.${t}`;
      if (c.method === 'flylora') {
        keys.set(`${P}.lora_A.weight`, [c.rank, inF]);
        keys.set(`${P}.lora_B.weight`, [out, c.rank]);
        keys.set(`${P}.topk_bias`, [c.rank]);
      } else {
        keys.set(`${P}.router.weight`, [c.numExperts[l]!, inF]);
        for (let e = 0; e < c.numExperts[l]!; e++) {
          keys.set(`${P}.experts.${e}.lora_A.weight`, [c.rank, inF]);
          keys.set(`${P}.experts.${e}.lora_B.weight`, [out, c.rank]);
        }
      }
    }
  return keys;
}

function runDir(c: Case): string {
  return join(work.path, `run-${c.method}`);
}

function readTensors(path: string): Map<string, Float32Array> {
  const file = SafetensorsFile.open(path);
  try {
    return new Map(file.names().map((name) => [name, file.readFloat32(name)]));
  } finally {
    file.close();
  }
}

function jsonl<T>(path: string): T[] {
  return readFileSync(path, 'utf8')
    .trim()
    .split('\n')
    .map((line) => JSON.parse(line) as T);
}

/** Logits of the trained model rebuilt in-process from the run's adapter config and tensors. */
async function trainedLogits(dir: string, engineName: 'native' | 'tfjs' = 'native'): Promise<Float32Array> {
  const record = readRunRecord(dir);
  const model = await Engine.create(engineName).loadModel(modelDir);
  try {
    model.attachAdapter(record.adapter as AdapterConfig).load(readTensors(join(dir, 'final', 'trainable.safetensors')));
    return await model.logits({ ids: Int32Array.from(IDS), batch: 1, seqLen: IDS.length });
  } finally {
    model.dispose();
  }
}

function cliLogits(adapter: string, engineName: 'native' | 'tfjs'): Float32Array {
  const out = join(work.path, `logits-${Math.random().toString(36).slice(2)}.safetensors`);
  runCliOk([
    'logits',
    '--model',
    modelDir,
    '--adapter',
    adapter,
    '--ids',
    IDS.join(','),
    '--out',
    out,
    '--engine',
    engineName,
  ]);
  return readTensors(out).get('logits')!;
}

let baseLogits: Float32Array;

beforeAll(async () => {
  initRandomModel(modelDir, 'tiny', 5);
  // 24 rows of 6 to 14 lowercase letters, alternating task types (LoRAMoE's constraint).
  let k = 0;
  const rows = Array.from({ length: 24 }, (_, i) => {
    const length = 6 + Math.floor(uniform(hash3(9, 1, i)) * 9);
    return { ids: Array.from({ length }, () => 97 + Math.floor(uniform(hash3(9, 2, k++)) * 26)), task_type: i % 2 };
  });
  writeJsonl(dataPath, rows);
  for (const c of CASES) {
    const config = join(work.path, `${c.method}.yaml`);
    writeFileSync(
      config,
      [
        `model: ${modelDir}`,
        `method: ${c.method}`,
        'seed: 4',
        c.section,
        `data: { train: ${dataPath} }`,
        'training: { max_steps: 4, micro_batch_size: 6, grad_accumulation: 2 }',
        'optimizer: { lr: 0.02 }',
        'schedule: { kind: constant }',
        `output_dir: ${runDir(c)}`,
      ].join('\n'),
    );
    const { stderr } = runCliOk(['train', '--config', config]);
    expect(stderr).toMatch(/trainable parameters per layer · 0: /);
  }
  const base = await Engine.create('native').loadModel(modelDir);
  baseLogits = await base.logits({ ids: Int32Array.from(IDS), batch: 1, seqLen: IDS.length });
  base.dispose();
});
afterAll(() => work.remove());

describe.each(CASES)('$method', (c) => {
  it('exports adapter_config.json and tensors exactly as the format page says', () => {
    const exportDir = join(runDir(c), 'export');
    verifyExportDirectory(exportDir);
    expect(JSON.parse(readFileSync(join(exportDir, 'adapter_config.json'), 'utf8'))).toEqual({
      format: 'expertune-mole',
      format_version: 1,
      peft_type: 'MOLE',
      task_type: 'CAUSAL_LM',
      method: c.method,
      base_model_name_or_path: modelDir,
      target_modules: c.targets,
      r: c.rank,
      lora_alpha: c.alpha,
      use_rslora: false,
      num_experts: c.numExperts,
      routing: c.routing,
    });
    const file = SafetensorsFile.open(join(exportDir, 'adapter_model.safetensors'));
    const expected = contract(c);
    expect(file.metadata).toEqual({ format: 'pt' });
    expect(file.names().sort()).toEqual([...expected.keys()].sort());
    for (const [key, shape] of expected) {
      expect(file.info(key).shape, key).toEqual(shape);
      expect(file.info(key).dtype, key).toBe('F32');
    }
    // The values are the run's own tensors (frozen ones included), under the PEFT prefix.
    const saved = readTensors(join(runDir(c), 'final', 'trainable.safetensors'));
    expect(saved.size).toBe(expected.size);
    for (const [name, values] of saved) expect(file.readFloat32(`base_model.model.${name}`), name).toEqual(values);
    file.close();
    const readme = readFileSync(join(exportDir, 'README.md'), 'utf8');
    expect(readme).toMatch(new RegExp(`- Method: ${c.method}`));
    expect(readme).toMatch(/## Parameters per layer/);
  });

  it('logits --adapter on the export reproduces the trained model, on both engines', async () => {
    const expected = await trainedLogits(runDir(c));
    expect(relativeL2(baseLogits, expected)).toBeGreaterThan(1e-3); // training did change the model
    const exportDir = join(runDir(c), 'export');
    expect(relativeL2(cliLogits(exportDir, 'native'), expected)).toBeLessThan(1e-5);
    const tfjs = await trainedLogits(runDir(c), 'tfjs');
    expect(relativeL2(cliLogits(exportDir, 'tfjs'), tfjs)).toBeLessThan(1e-5);
    expect(relativeL2(tfjs, expected)).toBeLessThan(1e-4);
  });

  it('logs the aux losses and the routing statistics of every step', () => {
    const metrics = jsonl<Record<string, number>>(join(runDir(c), 'metrics.jsonl'));
    expect(metrics).toHaveLength(4);
    const routed = c.method !== 'flylora';
    for (const line of metrics) {
      expect('aux_total' in line).toBe(routed);
      if (routed) {
        expect(Number.isFinite(line.aux_balance!)).toBe(true);
        expect(line.aux_total).toBeGreaterThan(0);
      }
    }
    if (c.method === 'loramoe') expect(metrics.every((m) => m.aux_lbc! > 0)).toBe(true);
    if (c.method === 'dynmole') expect(metrics.every((m) => m.aux_entropy! > 0)).toBe(true);
    const routing = jsonl<{
      step: number;
      sites: Array<{
        layer: number;
        projection: string;
        experts: number;
        tokens: number;
        load: number[];
        mean_gate: number[];
      }>;
    }>(join(runDir(c), 'routing.jsonl'));
    expect(routing.map((r) => r.step)).toEqual([1, 2, 3, 4]);
    for (const { sites } of routing) {
      expect(sites.map((s) => `${s.layer}.${s.projection}`)).toEqual(
        [0, 1].flatMap((l) => c.targets.map((t) => `${l}.${t}`)),
      );
      for (const site of sites) {
        expect(site.experts).toBe(c.numExperts[site.layer]);
        expect(site.tokens).toBeGreaterThan(0);
        const gateSum = site.mean_gate.reduce((a, b) => a + b, 0);
        if (c.method === 'mola' || c.method === 'loramoe') expect(gateSum).toBeCloseTo(1, 5);
        if (c.method === 'flylora') expect(site.load.reduce((a, b) => a + b, 0)).toBeCloseTo(2, 5); // top_k ranks
      }
    }
  });
});

describe('plain-LoRA fallbacks', () => {
  it('expert split: one PEFT LoRA per MoLA expert, over the layers that have it', () => {
    const c = CASES[0]!;
    const out = join(work.path, 'split');
    const result = runCliOk(['export', '--run', runDir(c), '--out', out, '--fallback', 'split']);
    expect(result.stdout).toMatch(/routing is lost/);
    verifyExportDirectory(out);
    expect(readFileSync(join(out, 'README.md'), 'utf8')).toMatch(/Routing is lost/);
    const saved = readTensors(join(runDir(c), 'final', 'trainable.safetensors'));
    for (let e = 0; e < 6; e++) {
      const dir = join(out, `expert-${e}`);
      verifyExportDirectory(dir);
      const config = JSON.parse(readFileSync(join(dir, 'adapter_config.json'), 'utf8'));
      expect(config).toMatchObject({
        peft_type: 'LORA',
        r: 4,
        lora_alpha: 8,
        target_modules: ALL,
        layers_to_transform: e < 2 ? null : [1],
      });
      const file = SafetensorsFile.open(join(dir, 'adapter_model.safetensors'));
      const layers = e < 2 ? [0, 1] : [1];
      expect(file.names()).toHaveLength(layers.length * 7 * 2);
      for (const l of layers)
        for (const t of ALL) {
          const module = `model.layers.${l}.${DIMS[t]!.group}.${t}`;
          expect(file.readFloat32(`base_model.model.${module}.lora_B.weight`)).toEqual(
            saved.get(`${module}.experts.${e}.lora_B.weight`),
          );
          expect(file.info(`base_model.model.${module}.lora_A.weight`).shape).toEqual([4, DIMS[t]!.in]);
        }
      file.close();
      // An expert loads as a LoRA (layers it lacks are left unadapted).
      if (e === 0 || e === 5) expect(cliLogits(dir, 'native')).toHaveLength(IDS.length * 258);
    }
    const fly = runCli(['export', '--run', runDir(CASES[3]!), '--out', join(work.path, 'x'), '--fallback', 'split']);
    expect(fly.status).toBe(1);
    expect(fly.stderr).toMatch(/use the collapse fallback/);
  });

  it('collapse: a rank-r PEFT LoRA whose README states the measured eval change', async () => {
    const c = CASES[2]!; // DynMoLE
    const out = join(work.path, 'collapsed');
    const { stdout } = runCliOk(['export', '--run', runDir(c), '--out', out, '--fallback', 'collapse']);
    const match = /eval loss ([\d.]+) \(mixture\) → ([\d.]+) \(collapsed\)/.exec(stdout);
    expect(match).not.toBeNull();
    verifyExportDirectory(out);
    const config = JSON.parse(readFileSync(join(out, 'adapter_config.json'), 'utf8'));
    expect(config).toMatchObject({ peft_type: 'LORA', r: 4, lora_alpha: 8, target_modules: FFN });
    const manifest = JSON.parse(readFileSync(join(out, 'manifest.json'), 'utf8'));
    const { eval_loss_mixture: mixtureLoss, eval_loss_collapsed: collapsedLoss } = manifest.final_metrics;
    expect(mixtureLoss.toFixed(4)).toBe(match![1]);
    expect(collapsedLoss.toFixed(4)).toBe(match![2]);
    const readme = readFileSync(join(out, 'README.md'), 'utf8');
    expect(readme).toContain(`| mixture | ${mixtureLoss.toFixed(6)} |`);
    expect(readme).toContain(`| collapsed LoRA | ${collapsedLoss.toFixed(6)} |`);
    expect(readme).toMatch(/\| change \| [+-][\d.]+ \([+-]?[\d.]+ %\) \|/);

    // The mixture loss is the trained model's mean cross-entropy over the training data.
    const record = readRunRecord(runDir(c));
    const model = await Engine.create('native').loadModel(modelDir);
    model
      .attachAdapter(record.adapter as AdapterConfig)
      .load(readTensors(join(runDir(c), 'final', 'trainable.safetensors')));
    const rows = jsonl<{ ids: number[] }>(dataPath);
    let sum = 0;
    let count = 0;
    for (let i = 0; i < rows.length; i += 6) {
      const batch = makeBatch(
        rows.slice(i, i + 6).map((r, k) => ({ ids: Int32Array.from(r.ids), line: i + k + 1 })),
        257,
      );
      const ce = crossEntropySum(await model.logits(batch), batch.targets, 258);
      sum += ce.sum;
      count += ce.count;
    }
    model.dispose();
    expect(sum / count).toBeCloseTo(mixtureLoss, 4);
    // The collapsed LoRA changes the base model, and loads wherever a LoRA does.
    expect(relativeL2(cliLogits(out, 'native'), baseLogits)).toBeGreaterThan(1e-4);
  });
});
