/**
 * The tfjs forward pass against a naive scalar implementation of docs/engine.md written here
 * with explicit loops in float64, and decode sessions against the forward pass.
 */
import { afterAll, describe, expect, it } from 'vitest';
import type { LlamaConfig } from '@expertune/formats';
import type { LoraConfig } from '../types.js';
import { randomAdapterWeights, randomLlamaConfig, randomTrainBatch, randomWeights } from '../testing/random-model.js';
import { createTfjsModel, type TfjsModel } from './tfjs-model.js';
import { maxAbs, maxAbsDifference } from './model-fixtures.test-util.js';

// ---- the naive reference ---------------------------------------------------------------------

type Weights = Map<string, Float32Array>;

function get(weights: Weights, name: string): Float32Array {
  const values = weights.get(name);
  if (values === undefined) throw new Error(`missing ${name}`);
  return values;
}

/** `W x` for `W` row-major `[out, in]`. */
function matVec(matrix: Float32Array, x: number[], outFeatures: number): number[] {
  const inFeatures = x.length;
  const y: number[] = [];
  for (let o = 0; o < outFeatures; o++) {
    let sum = 0;
    for (let i = 0; i < inFeatures; i++) sum += matrix[o * inFeatures + i]! * x[i]!;
    y.push(sum);
  }
  return y;
}

function naiveRmsNorm(x: number[], weight: Float32Array, eps: number): number[] {
  const meanSquare = x.reduce((a, v) => a + v * v, 0) / x.length;
  const inverse = 1 / Math.sqrt(meanSquare + eps);
  return x.map((v, i) => weight[i]! * v * inverse);
}

function naiveFrequencies(config: LlamaConfig): number[] {
  const frequencies: number[] = [];
  for (let i = 0; i < config.headDim / 2; i++) {
    let f = Math.pow(config.ropeTheta, -(2 * i) / config.headDim);
    const scaling = config.ropeScaling;
    if (scaling?.type === 'linear') f /= scaling.factor;
    if (scaling?.type === 'llama3') {
      const L = scaling.originalMaxPositionEmbeddings;
      const wavelength = (2 * Math.PI) / f;
      if (wavelength > L / scaling.lowFreqFactor) f /= scaling.factor;
      else if (wavelength >= L / scaling.highFreqFactor) {
        const s = (L / wavelength - scaling.lowFreqFactor) / (scaling.highFreqFactor - scaling.lowFreqFactor);
        f = ((1 - s) * f) / scaling.factor + s * f;
      }
    }
    frequencies.push(f);
  }
  return frequencies;
}

interface NaiveAdapter {
  config: LoraConfig;
  weights: Weights;
}

/** Logits `[T][V]` of one sequence. */
function naiveSequenceLogits(
  config: LlamaConfig,
  weights: Weights,
  adapter: NaiveAdapter | null,
  ids: number[],
): number[][] {
  const { hiddenSize: d, numHeads: H, numKvHeads: KV, headDim: hd, intermediateSize: F, rmsNormEps: eps } = config;
  const T = ids.length;
  const frequencies = naiveFrequencies(config);

  const project = (
    x: number[],
    layer: number,
    block: string,
    name: string,
    outFeatures: number,
    hasBias: boolean,
  ): number[] => {
    const module = `model.layers.${layer}.${block}.${name}`;
    const y = matVec(get(weights, `${module}.weight`), x, outFeatures);
    if (hasBias) {
      const bias = get(weights, `${module}.bias`);
      for (let o = 0; o < outFeatures; o++) y[o]! += bias[o]!;
    }
    if (adapter !== null && (adapter.config.targetModules as string[]).includes(name)) {
      const { rank, alpha, useRslora } = adapter.config;
      const scale = useRslora ? alpha / Math.sqrt(rank) : alpha / rank;
      const down = matVec(get(adapter.weights, `${module}.lora_A.weight`), x, rank);
      const up = matVec(get(adapter.weights, `${module}.lora_B.weight`), down, outFeatures);
      for (let o = 0; o < outFeatures; o++) y[o]! += scale * up[o]!;
    }
    return y;
  };

  const rotate = (vector: number[], heads: number, pos: number): number[] => {
    const out = [...vector];
    for (let head = 0; head < heads; head++) {
      for (let i = 0; i < hd / 2; i++) {
        const angle = pos * frequencies[i]!;
        const x1 = vector[head * hd + i]!;
        const x2 = vector[head * hd + i + hd / 2]!;
        out[head * hd + i] = x1 * Math.cos(angle) - x2 * Math.sin(angle);
        out[head * hd + i + hd / 2] = x2 * Math.cos(angle) + x1 * Math.sin(angle);
      }
    }
    return out;
  };

  const embedding = get(weights, 'model.embed_tokens.weight');
  let h: number[][] = ids.map((id) => Array.from(embedding.subarray(id * d, (id + 1) * d)));

  for (let layer = 0; layer < config.numLayers; layer++) {
    const prefix = `model.layers.${layer}`;
    const a = h.map((x) => naiveRmsNorm(x, get(weights, `${prefix}.input_layernorm.weight`), eps));
    const q = a.map((x, t) => rotate(project(x, layer, 'self_attn', 'q_proj', H * hd, config.qkvBias), H, t));
    const k = a.map((x, t) => rotate(project(x, layer, 'self_attn', 'k_proj', KV * hd, config.qkvBias), KV, t));
    const v = a.map((x) => project(x, layer, 'self_attn', 'v_proj', KV * hd, config.qkvBias));

    const attended: number[][] = [];
    for (let i = 0; i < T; i++) {
      const row: number[] = [];
      for (let head = 0; head < H; head++) {
        const kvHead = Math.floor(head / (H / KV));
        const visible: number[] = [];
        for (let j = 0; j <= i; j++) if (config.slidingWindow === null || i - j < config.slidingWindow) visible.push(j);
        const scores = visible.map((j) => {
          let dot = 0;
          for (let c = 0; c < hd; c++) dot += q[i]![head * hd + c]! * k[j]![kvHead * hd + c]!;
          return dot / Math.sqrt(hd);
        });
        const max = Math.max(...scores);
        const exps = scores.map((s) => Math.exp(s - max));
        const total = exps.reduce((sum, e) => sum + e, 0);
        for (let c = 0; c < hd; c++) {
          let value = 0;
          visible.forEach((j, n) => (value += (exps[n]! / total) * v[j]![kvHead * hd + c]!));
          row.push(value);
        }
      }
      attended.push(row);
    }
    h = h.map((x, t) => {
      const o = project(attended[t]!, layer, 'self_attn', 'o_proj', d, config.oBias);
      return x.map((value, c) => value + o[c]!);
    });

    const m = h.map((x) => naiveRmsNorm(x, get(weights, `${prefix}.post_attention_layernorm.weight`), eps));
    h = h.map((x, t) => {
      const gate = project(m[t]!, layer, 'mlp', 'gate_proj', F, config.mlpBias);
      const up = project(m[t]!, layer, 'mlp', 'up_proj', F, config.mlpBias);
      const product = gate.map((z, n) => (z / (1 + Math.exp(-z))) * up[n]!);
      const down = project(product, layer, 'mlp', 'down_proj', d, config.mlpBias);
      return x.map((value, c) => value + down[c]!);
    });
  }

  const head = config.tieWordEmbeddings ? embedding : get(weights, 'lm_head.weight');
  return h.map((x) => matVec(head, naiveRmsNorm(x, get(weights, 'model.norm.weight'), eps), config.vocabSize));
}

// ---- the cases ---------------------------------------------------------------------------------

interface ForwardCase {
  title: string;
  config: LlamaConfig;
  lora?: LoraConfig;
}

const cases: ForwardCase[] = [
  {
    title: 'Llama, all biases, llama3 RoPE scaling, LoRA (rsLoRA) on four projections',
    config: randomLlamaConfig({
      numLayers: 1,
      qkvBias: true,
      oBias: true,
      mlpBias: true,
      ropeScaling: {
        type: 'llama3',
        factor: 8,
        lowFreqFactor: 1,
        highFreqFactor: 4,
        originalMaxPositionEmbeddings: 64,
      },
    }),
    lora: {
      rank: 4,
      alpha: 8,
      useRslora: true,
      dropout: 0.2,
      targetModules: ['q_proj', 'v_proj', 'gate_proj', 'down_proj'],
      seed: 3,
    },
  },
  {
    title: 'Mistral, sliding window 2, one key/value head, linear RoPE scaling, tied embeddings',
    config: randomLlamaConfig({
      architecture: 'MistralForCausalLM',
      modelType: 'mistral',
      numLayers: 1,
      numKvHeads: 1,
      slidingWindow: 2,
      tieWordEmbeddings: true,
      ropeScaling: { type: 'linear', factor: 2 },
    }),
  },
  {
    title: 'Qwen2, q/k/v biases, tied embeddings, two layers, LoRA on every projection',
    config: randomLlamaConfig({
      architecture: 'Qwen2ForCausalLM',
      modelType: 'qwen2',
      qkvBias: true,
      tieWordEmbeddings: true,
      ropeTheta: 1e6,
    }),
    lora: {
      rank: 2,
      alpha: 4,
      useRslora: false,
      dropout: 0,
      targetModules: ['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj'],
      seed: 9,
    },
  },
];

const models: TfjsModel[] = [];
afterAll(() => models.forEach((model) => model.dispose()));

async function setUp(
  testCase: ForwardCase,
): Promise<{ model: TfjsModel; weights: Weights; adapter: NaiveAdapter | null }> {
  const model = await createTfjsModel(testCase.config);
  models.push(model);
  const weights = randomWeights(testCase.config, 11);
  for (const [name, values] of weights) model.setTensor(name, values);
  let adapter: NaiveAdapter | null = null;
  if (testCase.lora !== undefined) {
    model.attachLora(testCase.lora);
    const adapterWeights = randomAdapterWeights(testCase.config, testCase.lora, 12);
    for (const [name, values] of adapterWeights) model.setTensor(name, values);
    adapter = { config: testCase.lora, weights: adapterWeights };
  }
  return { model, weights, adapter };
}

describe('forward against a naive scalar implementation', () => {
  for (const testCase of cases) {
    it(testCase.title, async () => {
      const { model, weights, adapter } = await setUp(testCase);
      const { config } = testCase;
      const [batch, seqLen] = [2, 6];
      const { ids } = randomTrainBatch(config, { batch, seqLen, seed: 5 });
      const logits = await model.forward({ ids, batch, seqLen });
      expect(logits.length).toBe(batch * seqLen * config.vocabSize);

      const expected: number[] = [];
      for (let b = 0; b < batch; b++) {
        const sequence = Array.from(ids.subarray(b * seqLen, (b + 1) * seqLen));
        for (const row of naiveSequenceLogits(config, weights, adapter, sequence)) expected.push(...row);
      }
      expect(maxAbs(expected)).toBeGreaterThan(0.5); // not a degenerate model
      expect(maxAbsDifference(logits, expected)).toBeLessThan(2e-5);
    });
  }

  it('starts from zero tensors (uniform logits) and from B = 0 adapters (the base model)', async () => {
    const config = randomLlamaConfig({ numLayers: 1 });
    const zeroModel = await createTfjsModel(config);
    models.push(zeroModel);
    expect(maxAbs(await zeroModel.forward({ ids: Int32Array.from([1, 2, 3]), batch: 1, seqLen: 3 }))).toBe(0);

    const { model } = await setUp({ title: '', config });
    const batch = { ids: Int32Array.from([4, 5, 6, 7]), batch: 1, seqLen: 4 };
    const before = await model.forward(batch);
    model.attachLora({
      rank: 4,
      alpha: 16,
      useRslora: false,
      dropout: 0.1,
      targetModules: ['q_proj', 'down_proj'],
      seed: 1,
    });
    expect(await model.forward(batch)).toEqual(before);
  });
});

describe('decode sessions', () => {
  it('return the forward logits at the last position, appended in pieces', async () => {
    const { model } = await setUp(cases[0]!);
    const V = cases[0]!.config.vocabSize;
    const tokens = [5, 17, 3, 44, 9, 60];
    const full = await model.forward({ ids: Int32Array.from(tokens), batch: 1, seqLen: tokens.length });
    const at = (pos: number) => full.subarray(pos * V, (pos + 1) * V);

    const session = model.createSession(8);
    expect(maxAbsDifference(await session.append(tokens.slice(0, 3)), at(2))).toBeLessThan(1e-5);
    expect(maxAbsDifference(await session.append(tokens.slice(3, 4)), at(3))).toBeLessThan(1e-5);
    expect(maxAbsDifference(await session.append(tokens.slice(4)), at(5))).toBeLessThan(1e-5);
    expect(session.length).toBe(6);
    await expect(session.append([1, 2, 3])).rejects.toThrow(/maxLength/);
    session.dispose();
    await expect(session.append([1])).rejects.toThrow(/disposed/);
  });

  it('greedy decoding agrees with the argmax of the forward logits', async () => {
    const { model } = await setUp(cases[1]!);
    const V = cases[1]!.config.vocabSize;
    const argmax = (values: ArrayLike<number>) => {
      let best = 0;
      for (let i = 1; i < values.length; i++) if (values[i]! > values[best]!) best = i;
      return best;
    };
    const session = model.createSession(16);
    const tokens = [1, 30];
    let logits = await session.append(tokens);
    for (let step = 0; step < 5; step++) {
      const next = argmax(logits);
      tokens.push(next);
      logits = await session.append([next]);
    }
    const full = await model.forward({ ids: Int32Array.from(tokens), batch: 1, seqLen: tokens.length });
    for (let pos = 1; pos < tokens.length - 1; pos++)
      expect(argmax(full.subarray(pos * V, (pos + 1) * V))).toBe(tokens[pos + 1]);
    expect(maxAbsDifference(logits, full.subarray((tokens.length - 1) * V))).toBeLessThan(1e-5);
  });
});
