/**
 * The adapter methods of the tfjs engine against direct computations written here (docs/methods.md):
 * the gates (through single-token batches, where a mixture is a plain LoRA with gated B), the
 * auxiliary loss values and routing statistics (from router probabilities recomputed in float64 on
 * one-layer models, whose q/k/v routers read `rmsnorm(E[id])`), the global-batch balance over
 * micro-batches, FlyLoRA's frozen A and bias update, auxScale, token masks and the group dropout.
 */
import * as tf from '@tensorflow/tfjs';
import { afterAll, describe, expect, it } from 'vitest';
import type { LlamaConfig } from '@expertune/formats';
import { PROJECTIONS, type AdapterConfig, type Projection, type StepStats, type TrainBatch } from '../types.js';
import { dropoutKeepMask } from '../rng.js';
import { localizedBalancingConstraint } from '../methods/loramoe/index.js';
import { tsallisEntropy } from '../methods/dynmole/index.js';
import { randomLlamaConfig, randomTrainBatch, randomWeights } from '../testing/random-model.js';
import type { TfjsModel } from './tfjs-model.js';
import { loadMethodModel, loadRandomModel, maxAbs, maxAbsDifference, relativeL2 } from './model-fixtures.test-util.js';

const models: TfjsModel[] = [];
afterAll(() => models.forEach((model) => model.dispose()));
async function track(model: Promise<TfjsModel>): Promise<TfjsModel> {
  const loaded = await model;
  models.push(loaded);
  return loaded;
}

const common = { rank: 2, alpha: 4, useRslora: false, dropout: 0, seed: 5 } as const;
const noBalance = { coef: 0, form: 'layer', scope: 'micro' } as const;
const oneLayer = randomLlamaConfig({ hiddenSize: 16, numLayers: 1 });
const twoLayers = randomLlamaConfig({ hiddenSize: 16 });
const QKV: Projection[] = ['q_proj', 'k_proj', 'v_proj'];
const BASE_SEED = 1; // loadMethodModel's base weights

// ---- direct computations ---------------------------------------------------------------------

/** `rmsnorm(E[id], w_in)` of layer 0, in float64: the input of the q/k/v routers. */
function layer0Inputs(config: LlamaConfig, ids: ArrayLike<number>): number[][] {
  const weights = randomWeights(config, BASE_SEED);
  const d = config.hiddenSize;
  const table = weights.get('model.embed_tokens.weight')!;
  const norm = weights.get('model.layers.0.input_layernorm.weight')!;
  return Array.from(ids, (id) => {
    const x = Array.from(table.subarray(id * d, (id + 1) * d));
    const inverse = 1 / Math.sqrt(x.reduce((s, v) => s + v * v, 0) / d + config.rmsNormEps);
    return x.map((v, i) => norm[i]! * v * inverse);
  });
}

function matVec(matrix: Float32Array, x: number[]): number[] {
  const n = x.length;
  return Array.from({ length: matrix.length / n }, (_, o) => x.reduce((s, v, i) => s + matrix[o * n + i]! * v, 0));
}

function softmax(z: number[]): number[] {
  const max = Math.max(...z);
  const exps = z.map((v) => Math.exp(v - max));
  const sum = exps.reduce((a, b) => a + b, 0);
  return exps.map((v) => v / sum);
}

function lse(z: number[]): number {
  const max = Math.max(...z);
  return max + Math.log(z.reduce((s, v) => s + Math.exp(v - max), 0));
}

/** Expert order by descending probability, ties toward the lower index. */
function ranking(p: number[]): number[] {
  return p.map((_, e) => e).sort((a, b) => p[b]! - p[a]! || a - b);
}

/** Gates of one probability row, as docs/methods.md's table says. */
function referenceGates(adapter: AdapterConfig, layer: number, p: number[]): { gates: number[]; broadcast: boolean } {
  switch (adapter.method) {
    case 'mola': {
      const kept = ranking(p).slice(0, adapter.topK[layer]!);
      const sum = kept.reduce((s, e) => s + p[e]!, 0);
      return { gates: p.map((v, e) => (kept.includes(e) ? v / sum : 0)), broadcast: false };
    }
    case 'loramoe':
      return { gates: [...p], broadcast: false };
    case 'dynmole': {
      const q = adapter.entropyIndex;
      const shifted = p.map((v) => v + adapter.entropyEps);
      const entropy =
        q === 1
          ? -shifted.reduce((s, v) => s + v * Math.log(v), 0) / Math.log(p.length)
          : (1 - shifted.reduce((s, v) => s + v ** q, 0)) / (1 - p.length ** (1 - q));
      if (entropy > adapter.entropyThreshold) return { gates: [...p], broadcast: true };
      const keep = new Set<number>();
      let cumulative = 0;
      ranking(p).forEach((e, j) => {
        cumulative += p[e]!;
        if (cumulative <= adapter.topP || j < adapter.keepTopK) keep.add(e);
      });
      return { gates: p.map((v, e) => (keep.has(e) ? v : 0)), broadcast: false };
    }
    default:
      throw new Error('not a router method');
  }
}

interface SiteRouting {
  projection: Projection;
  probs: number[][];
  logits: number[][];
  gates: number[][];
  broadcast: boolean[];
}

/** Router probabilities and gates of the layer-0 q/k/v sites of a one-layer model, per token. */
function referenceRouting(model: TfjsModel, adapter: AdapterConfig, ids: ArrayLike<number>): SiteRouting[] {
  const inputs = layer0Inputs(model.config, ids);
  return adapter.targetModules.map((projection) => {
    const router = model.getTensor(`model.layers.0.self_attn.${projection}.router.weight`);
    const logits = inputs.map((x) => matVec(router, x));
    const probs = logits.map(softmax);
    const routed = probs.map((p) => referenceGates(adapter, 0, p));
    return { projection, probs, logits, gates: routed.map((r) => r.gates), broadcast: routed.map((r) => r.broadcast) };
  });
}

/** Switch (counts of `selected`) or DynMoLE (Σ m G) load balance of one pool: `N Σ f P`. */
function referenceBalance(
  sites: SiteRouting[],
  mask: number[],
  byGates: boolean,
  selected?: (p: number[]) => number[],
): number {
  const N = sites[0]!.probs[0]!.length;
  const f = new Array<number>(N).fill(0);
  const P = new Array<number>(N).fill(0);
  let tokens = 0;
  for (const site of sites) {
    site.probs.forEach((p, t) => {
      if (mask[t] === 0) return;
      tokens++;
      p.forEach((v, e) => (P[e] = P[e]! + v));
      if (byGates) site.gates[t]!.forEach((g, e) => (f[e] = f[e]! + g));
      else for (const e of selected!(p)) f[e] = f[e]! + 1;
    });
  }
  const fTotal = byGates ? tokens : f.reduce((a, b) => a + b, 0);
  return N * f.reduce((s, fe, e) => s + (fe / fTotal) * (P[e]! / tokens), 0);
}

function withMask(batch: TrainBatch, mask: number[]): TrainBatch {
  batch.tokenMask = Uint8Array.from(mask);
  mask.forEach((m, t) => {
    if (m === 0) batch.targets[t] = -1;
  });
  return batch;
}

// ---- gates -----------------------------------------------------------------------------------

describe('gates: a single-token mixture equals a plain LoRA with gated B', () => {
  const routerCommon = { numExperts: [4], balance: noBalance, zLossCoef: 0 };
  const cases: AdapterConfig[] = [
    { ...common, ...routerCommon, method: 'mola', targetModules: ['q_proj', 'v_proj'], topK: [2] },
    { ...common, ...routerCommon, method: 'loramoe', targetModules: ['q_proj', 'v_proj'], blcAlpha: 0, blcWeight: 0 },
    {
      ...common,
      ...routerCommon,
      method: 'dynmole',
      targetModules: ['q_proj', 'v_proj'],
      topP: 0.5,
      keepTopK: 1,
      entropyIndex: 1.1,
      entropyThreshold: 0.75,
      entropyEps: 1e-5,
      entropyCoef: 0,
    },
    {
      ...common,
      method: 'flylora',
      rank: 4,
      topK: 2,
      select: 'signed',
      biasRate: 0,
      targetModules: ['q_proj', 'v_proj'],
    },
    { ...common, method: 'flylora', rank: 4, topK: 2, select: 'abs', biasRate: 0, targetModules: ['q_proj', 'v_proj'] },
  ];

  for (const adapter of cases) {
    const title = adapter.method === 'flylora' ? `flylora (${adapter.select})` : adapter.method;
    it(title, async () => {
      const config = oneLayer;
      const model = await track(loadMethodModel(config, adapter, { adapterSeed: 3, routerScale: 4, biasStd: 0.2 }));
      const E = adapter.method === 'flylora' ? adapter.rank : 4;
      const r = adapter.method === 'flylora' ? 1 : adapter.rank;
      const plain = await track(loadRandomModel(config, { seed: BASE_SEED }));
      // A plain LoRA of rank E·r with the same scale alpha / r.
      plain.attachLora({
        ...common,
        rank: E * r,
        alpha: (adapter.alpha * E * r) / adapter.rank,
        targetModules: adapter.targetModules,
      });
      const bare = await track(loadRandomModel(config, { seed: BASE_SEED }));
      let broadcasts = 0;
      let partial = 0;
      for (const id of [3, 17, 29, 42, 55, 71, 88]) {
        const [x] = layer0Inputs(config, [id]);
        for (const projection of adapter.targetModules) {
          const module = `model.layers.0.self_attn.${projection}`;
          let A: Float32Array;
          let B: Float32Array;
          let gates: number[];
          if (adapter.method === 'flylora') {
            A = model.getTensor(`${module}.lora_A.weight`);
            B = model.getTensor(`${module}.lora_B.weight`);
            const bias = model.getTensor(`${module}.topk_bias`);
            const scores = matVec(A, x!).map((a, i) =>
              adapter.select === 'abs' ? Math.abs(a + bias[i]!) : a + bias[i]!,
            );
            const kept = ranking(scores).slice(0, adapter.topK);
            gates = scores.map((_, i) => (kept.includes(i) ? 1 : 0));
          } else {
            const names = (kind: 'A' | 'B') =>
              Array.from({ length: E }, (_, e) => model.getTensor(`${module}.experts.${e}.lora_${kind}.weight`));
            A = Float32Array.from(names('A').flatMap((a) => Array.from(a)));
            const out = model.tensorShape(`${module}.experts.0.lora_B.weight`)[0]!;
            const experts = names('B');
            B = Float32Array.from({ length: out * E * r }, (_, i) => {
              const [o, j] = [Math.floor(i / (E * r)), i % (E * r)];
              return experts[Math.floor(j / r)]![o * r + (j % r)]!;
            });
            const p = softmax(matVec(model.getTensor(`${module}.router.weight`), x!));
            const routed = referenceGates(adapter, 0, p);
            gates = routed.gates;
            if (routed.broadcast) broadcasts++;
            if (gates.some((g) => g === 0)) partial++;
          }
          const out = B.length / (E * r);
          plain.setTensor(`${module}.lora_A.weight`, A);
          plain.setTensor(
            `${module}.lora_B.weight`,
            B.map((b, i) => b * gates[Math.floor((i % (E * r)) / r)]!),
          );
          expect(out).toBeGreaterThan(0);
        }
        const batch = { ids: Int32Array.from([id]), batch: 1, seqLen: 1 };
        const expected = await plain.forward(batch);
        const actual = await model.forward(batch);
        expect(maxAbsDifference(actual, expected)).toBeLessThan(2e-5);
        expect(maxAbsDifference(actual, await bare.forward(batch)), 'the adapter changes the logits').toBeGreaterThan(
          1e-3,
        );
      }
      if (adapter.method === 'dynmole') {
        expect(broadcasts, 'some tokens broadcast').toBeGreaterThan(0);
        expect(partial, 'some tokens use the top-p mask').toBeGreaterThan(0);
      }
    });
  }
});

// ---- auxiliary losses and routing statistics ---------------------------------------------------

describe('auxiliary loss values and routing statistics against direct computations', () => {
  const mask = [1, 1, 1, 0, 0, 1, 1, 1, 1, 0]; // two rows of 5, right-padded
  const routerCommon = { numExperts: [4], zLossCoef: 0.25 };
  const adapters: AdapterConfig[] = [
    {
      ...common,
      ...routerCommon,
      method: 'mola',
      targetModules: QKV,
      topK: [2],
      balance: { coef: 0.5, form: 'layer', scope: 'micro' },
    },
    {
      ...common,
      ...routerCommon,
      method: 'loramoe',
      targetModules: QKV,
      balance: { coef: 0.5, form: 'pooled', scope: 'micro' },
      blcAlpha: 0.3,
      blcWeight: 2,
    },
    {
      ...common,
      ...routerCommon,
      method: 'dynmole',
      targetModules: QKV,
      balance: { coef: 0.5, form: 'pooled', scope: 'micro' },
      topP: 0.6,
      keepTopK: 1,
      entropyIndex: 1.1,
      entropyThreshold: 0.7,
      entropyEps: 1e-5,
      entropyCoef: 0.125,
    },
  ];

  for (const adapter of adapters) {
    it(adapter.method, async () => {
      const model = await track(loadMethodModel(oneLayer, adapter, { adapterSeed: 4, routerScale: 4 }));
      const batch = withMask(randomTrainBatch(oneLayer, { batch: 2, seqLen: 5, seed: 8 }), mask);
      batch.taskTypes = Int32Array.from([0, 1]);
      const stats = await model.forwardBackward(batch, { lossScale: 0.1, dropoutSeed: 1, auxScale: 0.5 });
      const sites = referenceRouting(model, adapter, batch.ids);
      const real = mask.filter((m) => m === 1).length;
      if (!('balance' in adapter)) throw new Error('router methods only');

      // Load balance: MoLA counts its top-k sets, LoRAMoE its argmax, DynMoLE sums its gates.
      const selected =
        adapter.method === 'mola' ? (p: number[]) => ranking(p).slice(0, 2) : (p: number[]) => [ranking(p)[0]!];
      const balance = referenceBalance(sites, mask, adapter.method === 'dynmole', selected);
      expect(stats.aux.balance).toBeCloseTo(balance, 5);
      expect(stats.balanceStep).toBeCloseTo(balance, 5); // the step is this one micro-batch

      let zLoss = 0;
      for (const site of sites) site.logits.forEach((z, t) => (zLoss += mask[t]! * lse(z) ** 2));
      zLoss /= 3 * real;
      expect(zLoss).toBeGreaterThan(0.01);
      expect(stats.aux.zLoss).toBeCloseTo(zLoss, 5);

      let expectedTotal = 0.5 * balance + 0.25 * zLoss;
      if (adapter.method === 'dynmole') {
        let entropy = 0;
        for (const site of sites) site.probs.forEach((p, t) => (entropy += mask[t]! * tsallisEntropy(p, 1.1, 1e-5)));
        entropy /= 3 * real;
        expect(stats.aux.entropy).toBeCloseTo(entropy, 5);
        expectedTotal += 0.125 * entropy;
      } else expect(stats.aux.entropy).toBe(0);
      if (adapter.method === 'loramoe') {
        let lbc = 0;
        for (const site of sites)
          lbc += localizedBalancingConstraint({
            probs: site.probs.flat(),
            batch: 2,
            seqLen: 5,
            experts: 4,
            taskTypes: [0, 1],
            delta: 0.3,
            tokenMask: mask,
          });
        expect(lbc).toBeGreaterThan(0.01);
        expect(stats.aux.lbc).toBeCloseTo(lbc, 5);
        expectedTotal += 2 * lbc;
      } else expect(stats.aux.lbc).toBe(0);
      expect(stats.aux.total).toBeCloseTo(expectedTotal, 5);

      // Routing statistics over the real tokens only.
      const routing = model.routingStats();
      expect(routing.map((s) => s.projection)).toEqual(QKV);
      let broadcasts = 0;
      routing.forEach((siteStats, i) => {
        const site = sites[i]!;
        const realRows = site.gates.filter((_, t) => mask[t] === 1);
        expect(siteStats).toMatchObject({ layer: 0, experts: 4, tokens: real });
        for (let e = 0; e < 4; e++) {
          expect(siteStats.load[e]).toBeCloseTo(realRows.filter((g) => g[e]! > 0).length / real, 12);
          expect(siteStats.meanGate[e]).toBeCloseTo(realRows.reduce((s, g) => s + g[e]!, 0) / real, 5);
        }
        const entropy =
          site.probs.reduce((s, p, t) => s + mask[t]! * -p.reduce((h, v) => h + v * Math.log(v), 0), 0) /
          (real * Math.log(4));
        expect(siteStats.entropy).toBeCloseTo(entropy, 5);
        const broadcast = site.broadcast.filter((b, t) => b && mask[t] === 1).length;
        broadcasts += broadcast;
        expect(siteStats.broadcast).toBeCloseTo(broadcast / real, 12);
      });
      if (adapter.method === 'dynmole') {
        expect(broadcasts, 'some tokens broadcast').toBeGreaterThan(0);
        expect(broadcasts, 'some tokens do not').toBeLessThan(3 * real);
      }
      expect(
        model.routingStats().every((s) => s.tokens === 0),
        'reading resets',
      ).toBe(true);
    });
  }
});

// ---- global-batch balance ----------------------------------------------------------------------

describe('global-batch load balance over the micro-batches of a step', () => {
  const hyper = { lr: 1e-3, beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0, maxGradNorm: 0 };
  const routerCommon = { numExperts: [4], zLossCoef: 0, targetModules: QKV };
  const cases: AdapterConfig[] = [
    { ...common, ...routerCommon, method: 'mola', topK: [2], balance: { coef: 1, form: 'pooled', scope: 'global' } },
    {
      ...common,
      ...routerCommon,
      method: 'dynmole',
      balance: { coef: 1, form: 'layer', scope: 'global' },
      topP: 0.6,
      keepTopK: 1,
      entropyIndex: 1.1,
      entropyThreshold: 0.7,
      entropyEps: 1e-5,
      entropyCoef: 0,
    },
    // The step value is reported with micro scope too.
    {
      ...common,
      ...routerCommon,
      method: 'loramoe',
      balance: { coef: 1, form: 'layer', scope: 'micro' },
      blcAlpha: 0,
      blcWeight: 0,
    },
  ];

  for (const adapter of cases) {
    it(`${adapter.method} (${'balance' in adapter ? adapter.balance.scope : ''}): 4 micro-batches give the one-batch loss of their concatenation`, async () => {
      const model = await track(loadMethodModel(oneLayer, adapter, { adapterSeed: 6, routerScale: 4 }));
      const selected =
        adapter.method === 'mola' ? (p: number[]) => ranking(p).slice(0, 2) : (p: number[]) => [ranking(p)[0]!];
      const byGates = adapter.method === 'dynmole';
      const micro = [0, 1, 2, 3].map((i) => {
        const mask = [1, 1, 1, 1, i % 2 === 0 ? 0 : 1];
        return withMask(randomTrainBatch(oneLayer, { batch: 1, seqLen: 5, seed: 40 + i }), mask);
      });
      const allIds = micro.flatMap((b) => Array.from(b.ids));
      const allMask = micro.flatMap((b) => Array.from(b.tokenMask!));
      const all = referenceRouting(model, adapter, allIds);
      const slice = (i: number) =>
        all.map((site) => ({
          ...site,
          probs: site.probs.slice(5 * i, 5 * i + 5),
          gates: site.gates.slice(5 * i, 5 * i + 5),
        }));

      let stats: StepStats | undefined;
      for (const [i, batch] of micro.entries()) {
        stats = await model.forwardBackward(batch, { lossScale: 0.05, dropoutSeed: i, auxScale: 0.25 });
        const soFar = all.map((site) => ({
          ...site,
          probs: site.probs.slice(0, 5 * i + 5),
          gates: site.gates.slice(0, 5 * i + 5),
        }));
        expect(stats.balanceStep).toBeCloseTo(
          referenceBalance(soFar, allMask.slice(0, 5 * i + 5), byGates, selected),
          5,
        );
        if (adapter.method !== 'loramoe') {
          // This micro-batch's loss: f from the step so far (this one included), P from this micro-batch.
          const N = 4;
          const f = new Array<number>(N).fill(0);
          let fTotal = 0;
          soFar.forEach((site) =>
            site.probs.forEach((p, t) => {
              if (allMask[t] === 0) return;
              if (byGates) {
                site.gates[t]!.forEach((g, e) => (f[e] = f[e]! + g));
                fTotal += 1;
              } else {
                for (const e of selected(p)) f[e] = f[e]! + 1;
                fTotal += selected(p).length;
              }
            }),
          );
          const P = new Array<number>(N).fill(0);
          let tokens = 0;
          slice(i).forEach((site) =>
            site.probs.forEach((p, t) => {
              if (micro[i]!.tokenMask![t] === 0) return;
              tokens++;
              p.forEach((v, e) => (P[e] = P[e]! + v));
            }),
          );
          const expected = N * f.reduce((s, fe, e) => s + (fe / fTotal) * (P[e]! / tokens), 0);
          expect(stats.aux.balance).toBeCloseTo(expected, 5);
        } else {
          expect(stats.aux.balance).toBeCloseTo(
            referenceBalance(slice(i), Array.from(micro[i]!.tokenMask!), false, selected),
            5,
          );
        }
      }
      const concatenated = referenceBalance(all, allMask, byGates, selected);
      expect(stats!.balanceStep).toBeCloseTo(concatenated, 5);
      // The concatenation's loss is not the mean of the micro-batch losses (the test would be vacuous otherwise).
      const microMean =
        [0, 1, 2, 3].reduce(
          (s, i) => s + referenceBalance(slice(i), Array.from(micro[i]!.tokenMask!), byGates, selected),
          0,
        ) / 4;
      expect(Math.abs(concatenated - microMean)).toBeGreaterThan(1e-3);

      // The optimizer step empties the buffers: the next micro-batch starts a new step.
      await model.optimizerStep(hyper);
      const next = await model.forwardBackward(micro[1]!, { lossScale: 0.05, dropoutSeed: 9 });
      const fresh = referenceRouting(model, adapter, micro[1]!.ids);
      expect(next.balanceStep).toBeCloseTo(
        referenceBalance(fresh, Array.from(micro[1]!.tokenMask!), byGates, selected),
        5,
      );
      expect(next.aux.balance).toBeCloseTo(next.balanceStep, 5);
    });
  }

  it('is 0 without a router', async () => {
    const model = await track(
      loadMethodModel(oneLayer, { ...common, method: 'lora', targetModules: QKV }, { adapterSeed: 1 }),
    );
    const stats = await model.forwardBackward(randomTrainBatch(oneLayer, { batch: 1, seqLen: 4, seed: 1 }), {
      lossScale: 1,
      dropoutSeed: 0,
    });
    expect(stats.balanceStep).toBe(0);
    expect(stats.aux).toEqual({ balance: 0, zLoss: 0, entropy: 0, lbc: 0, total: 0 });
    expect(model.routingStats()).toEqual([]);
  });
});

// ---- MoLA, FlyLoRA, auxScale, inference, dropout ------------------------------------------------

describe('MoLA routing', () => {
  it('uses exactly k_l experts per token, with gates summing to 1, in every site of both layers', async () => {
    const adapter: AdapterConfig = {
      ...common,
      method: 'mola',
      targetModules: [...PROJECTIONS],
      numExperts: [5, 3],
      topK: [3, 1],
      balance: { coef: 0.01, form: 'layer', scope: 'micro' },
      zLossCoef: 0,
    };
    const model = await track(loadMethodModel(twoLayers, adapter, { adapterSeed: 2, routerScale: 3 }));
    const batch = randomTrainBatch(twoLayers, { batch: 2, seqLen: 6, seed: 3 });
    await model.forwardBackward(batch, { lossScale: 0.1, dropoutSeed: 4 });
    const records = model.lastRouting();
    expect(records.length).toBe(14);
    for (const record of records) {
      const k = adapter.topK[record.layer]!;
      const E = record.experts;
      for (let t = 0; t < 12; t++) {
        const selection = Array.from(record.selection.subarray(t * E, (t + 1) * E));
        const gates = Array.from(record.gates.subarray(t * E, (t + 1) * E));
        const probs = Array.from(record.probs!.subarray(t * E, (t + 1) * E));
        expect(selection.reduce((a, b) => a + b, 0)).toBe(k);
        expect(gates.filter((g) => g > 0).length).toBe(k);
        expect(Math.abs(gates.reduce((a, b) => a + b, 0) - 1)).toBeLessThan(1e-6);
        // The kept ones are the largest probabilities.
        const kept = ranking(probs).slice(0, k);
        expect(selection.map((s, e) => (s === 1) === kept.includes(e)).every(Boolean)).toBe(true);
      }
    }
    for (const stats of model.routingStats()) {
      expect(stats.load.reduce((a, b) => a + b, 0)).toBeCloseTo(adapter.topK[stats.layer]!, 12);
      expect(stats.meanGate.reduce((a, b) => a + b, 0)).toBeCloseTo(1, 6);
    }
  });
});

describe('FlyLoRA', () => {
  const adapter: AdapterConfig = {
    ...common,
    method: 'flylora',
    rank: 8,
    topK: 2,
    select: 'signed',
    biasRate: 0.01,
    dropout: 0.1,
    targetModules: ['k_proj', 'o_proj', 'up_proj', 'down_proj'],
  };
  const hyper = { lr: 1e-2, beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0.1, maxGradNorm: 1 };

  it('keeps A frozen (in // (r/k) non-zeros per row) while B trains, in either train mode', async () => {
    const model = await track(loadMethodModel(twoLayers, adapter, { adapterSeed: 3 }));
    const aNames = model.tensorNames('adapter').filter((name) => name.endsWith('lora_A.weight'));
    expect(aNames.length).toBe(8);
    const before = new Map(aNames.map((name) => [name, model.getTensor(name)]));
    for (const name of aNames) {
      const [r, inFeatures] = model.tensorShape(name) as [number, number];
      const values = before.get(name)!;
      for (let i = 0; i < r; i++)
        expect(values.subarray(i * inFeatures, (i + 1) * inFeatures).filter((v) => v !== 0).length).toBe(
          Math.floor(inFeatures / (8 / 2)),
        );
    }
    expect(model.tensorNames('trainable').every((name) => name.endsWith('lora_B.weight'))).toBe(true);
    expect(() => model.getGrad(aNames[0]!)).toThrow(/not trainable/);
    const bBefore = model.getTensor('model.layers.1.mlp.down_proj.lora_B.weight');
    for (const mode of ['lora', 'full'] as const) {
      model.setTrainMode(mode);
      expect(
        model.tensorNames('trainable').some((name) => name.endsWith('lora_A.weight') || name.endsWith('topk_bias')),
      ).toBe(false);
      for (let step = 0; step < 2; step++) {
        await model.forwardBackward(randomTrainBatch(twoLayers, { batch: 2, seqLen: 5, seed: step }), {
          lossScale: 0.1,
          dropoutSeed: step,
          needInputGrad: true,
        });
        await model.optimizerStep(hyper);
      }
    }
    for (const [name, values] of before) expect(model.getTensor(name)).toEqual(values);
    expect(maxAbsDifference(model.getTensor('model.layers.1.mlp.down_proj.lora_B.weight'), bBefore)).toBeGreaterThan(
      1e-4,
    );
  });

  it('moves its bias after each training micro-batch by the counts of real tokens, never in forward', async () => {
    const model = await track(loadMethodModel(twoLayers, adapter, { adapterSeed: 4 }));
    const biasNames = model.tensorNames('adapter').filter((name) => name.endsWith('topk_bias'));
    const biases = () => biasNames.map((name) => model.getTensor(name));
    const batch = withMask(
      randomTrainBatch(twoLayers, { batch: 2, seqLen: 6, seed: 5 }),
      [1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0],
    );
    const start = biases();
    expect(start.every((d) => d.every((v) => v === 0))).toBe(true);
    await model.forward(batch);
    await model.forward(batch, { collectRouting: true, tokenMask: batch.tokenMask! });
    expect(biases()).toEqual(start);
    expect(model.routingStats()[0]!.tokens).toBe(10); // forward with collectRouting counted only real tokens

    for (let step = 0; step < 3; step++) {
      const before = biases();
      await model.forwardBackward(batch, { lossScale: 0.1, dropoutSeed: step });
      const records = model.lastRouting();
      const after = biases();
      records.forEach((record, s) => {
        const r = record.experts;
        const counts = new Array<number>(r).fill(0);
        for (let t = 0; t < 12; t++) {
          if (batch.tokenMask![t] === 0) continue;
          expect(record.selection.subarray(t * r, (t + 1) * r).reduce((a, b) => a + b, 0)).toBe(2);
          for (let i = 0; i < r; i++) counts[i] = counts[i]! + record.selection[t * r + i]!;
        }
        const mean = counts.reduce((a, b) => a + b, 0) / r;
        const expected = before[s]!.map((d, i) => Math.fround(d + Math.fround(0.01) * Math.sign(mean - counts[i]!)));
        expect(after[s]).toEqual(expected);
      });
    }
    expect(maxAbs(biases().flatMap((d) => Array.from(d)))).toBeGreaterThan(0);
    const stats = model.routingStats();
    expect(stats.every((s) => s.entropy === null && s.broadcast === 0 && s.experts === 8)).toBe(true);
    expect(stats[0]!.tokens).toBe(30);
    stats.forEach((s) => expect(s.load.reduce((a, b) => a + b, 0)).toBeCloseTo(2, 12));
  });

  it('selects by magnitude with abs: a large negative score wins there and never with signed', async () => {
    const selectWith = async (select: 'signed' | 'abs') => {
      const model = await track(
        loadMethodModel(oneLayer, { ...adapter, select, biasRate: 0, targetModules: ['q_proj'] }),
      );
      model.setTensor('model.layers.0.self_attn.q_proj.topk_bias', Float32Array.from([0, -10, 0, 0, 0, 0, 0, 0]));
      await model.forward(randomTrainBatch(oneLayer, { batch: 2, seqLen: 4, seed: 6 }), { collectRouting: true });
      return model.routingStats()[0]!.load;
    };
    expect((await selectWith('abs'))[1]).toBe(1);
    expect((await selectWith('signed'))[1]).toBe(0);
  });
});

describe('auxScale, inference and statistics', () => {
  const adapter: AdapterConfig = {
    ...common,
    method: 'dynmole',
    targetModules: ['q_proj', 'up_proj'],
    numExperts: [4, 4],
    balance: { coef: 0.5, form: 'pooled', scope: 'global' },
    zLossCoef: 0.1,
    topP: 0.6,
    keepTopK: 1,
    entropyIndex: 1.1,
    entropyThreshold: 0.8,
    entropyEps: 1e-5,
    entropyCoef: 0.2,
  };

  it('weights the auxiliary gradients by auxScale', async () => {
    const model = await track(loadMethodModel(twoLayers, adapter, { adapterSeed: 7, routerScale: 3 }));
    const batch = randomTrainBatch(twoLayers, { batch: 2, seqLen: 5, seed: 7 });
    const router = 'model.layers.0.self_attn.q_proj.router.weight';
    const gradientAt = async (auxScale: number, lossScale: number) => {
      model.resetStepState();
      model.zeroGrad();
      await model.forwardBackward(batch, { lossScale, dropoutSeed: 1, auxScale });
      return model.getGrad(router);
    };
    const unit = await gradientAt(1, 0);
    expect(maxAbs(unit)).toBeGreaterThan(1e-4);
    expect(
      relativeL2(
        await gradientAt(0.25, 0),
        unit.map((g) => g * 0.25),
      ),
    ).toBeLessThan(1e-5);
    expect(maxAbs(await gradientAt(0, 0))).toBe(0);
    const ce = await gradientAt(0, 0.3);
    expect(
      relativeL2(
        await gradientAt(0.6, 0.3),
        ce.map((g, i) => g + 0.6 * unit[i]!),
      ),
    ).toBeLessThan(1e-5);
  });

  it('leaves statistics, balance buffers and weights alone in inference unless asked to collect', async () => {
    const model = await track(loadMethodModel(twoLayers, adapter, { adapterSeed: 8, routerScale: 3 }));
    const batch = randomTrainBatch(twoLayers, { batch: 2, seqLen: 5, seed: 8 });
    const other = randomTrainBatch(twoLayers, { batch: 2, seqLen: 5, seed: 9 });
    const first = await model.forwardBackward(batch, { lossScale: 0.1, dropoutSeed: 1 });
    const weights = model.tensorNames('adapter').map((name) => model.getTensor(name));
    await model.forward(other);
    await model.forward(other, { collectRouting: true });
    const session = model.createSession(4);
    await session.append([1, 2, 3]);
    session.dispose();
    const stats = model.routingStats();
    expect(stats.map((s) => s.tokens)).toEqual([20, 20, 20, 20]); // the training batch and the collecting forward
    expect(model.routingStats().map((s) => s.tokens)).toEqual([0, 0, 0, 0]);
    expect(model.tensorNames('adapter').map((name) => model.getTensor(name))).toEqual(weights);
    // The step buffer saw only the training micro-batch (not `other`): the same micro-batch again
    // doubles it, which leaves N Σ f̄ P̄ unchanged.
    const second = await model.forwardBackward(batch, { lossScale: 0.1, dropoutSeed: 1 });
    expect(second.balanceStep).toBeCloseTo(first.balanceStep, 6);
    await expect(model.forward(batch, { collectRouting: true, tokenMask: new Uint8Array(3) })).rejects.toThrow(
      /token-mask/,
    );
  });
});

describe('dropout: one mask per input group', () => {
  it('drops the same input columns for q and k (key l·7 + 0) and for gate and up (key l·7 + 4)', async () => {
    const config = twoLayers;
    const lora: AdapterConfig = {
      ...common,
      method: 'lora',
      dropout: 0.5,
      targetModules: ['q_proj', 'k_proj', 'gate_proj', 'up_proj'],
    };
    const model = await track(loadMethodModel(config, lora, { adapterSeed: 9 }));
    const [batchSize, seqLen] = [2, 4];
    // Only row b = 1, pos = 2 counts: in the last layer only that row's q, gate and up inputs get a
    // gradient, and the keys of positions 0…2 of that row.
    const counted = 1 * seqLen + 2;
    const batch = randomTrainBatch(config, { batch: batchSize, seqLen, seed: 10 });
    batch.targets.fill(-1);
    batch.targets[counted] = 7;
    const layer = config.numLayers - 1;
    const d = config.hiddenSize;
    const dropoutSeed = 321;
    await model.forwardBackward(batch, { lossScale: 1, dropoutSeed });
    const zeroColumns = (projection: Projection) => {
      const module = `model.layers.${layer}.${projection.startsWith('gate') || projection.startsWith('up') ? 'mlp' : 'self_attn'}.${projection}`;
      const g = model.getGrad(`${module}.lora_A.weight`);
      return Array.from({ length: d }, (_, j) => (g[j] === 0 && g[d + j] === 0 ? 0 : 1));
    };
    const keepRow = (key: number, row: number) =>
      Array.from(dropoutKeepMask(dropoutSeed, key, batchSize * seqLen, d, 0.5).subarray(row * d, (row + 1) * d));
    const keep = (key: number) => keepRow(key, counted);
    const attention = keep(layer * 7 + 0);
    const mlp = keep(layer * 7 + 4);
    const keys = [0, 1, 2].map((pos) => keepRow(layer * 7 + 0, 1 * seqLen + pos));
    expect(zeroColumns('q_proj')).toEqual(attention);
    expect(zeroColumns('k_proj')).toEqual(attention.map((_, j) => Math.max(...keys.map((k) => k[j]!))));
    expect(zeroColumns('gate_proj')).toEqual(mlp);
    expect(zeroColumns('up_proj')).toEqual(mlp);
    // The per-site keys of the old scheme would give other masks.
    expect(keep(layer * 7 + 1)).not.toEqual(attention);
    expect(keep(layer * 7 + 5)).not.toEqual(mlp);
    expect(attention.filter((k) => k === 0).length).toBeGreaterThan(2);
  });
});

describe('memory', () => {
  it('keeps the number of tensors stable over steps of every method and frees everything on dispose', async () => {
    const before = tf.memory().numTensors;
    const adapters: AdapterConfig[] = [
      {
        ...common,
        method: 'mola',
        dropout: 0.1,
        targetModules: [...PROJECTIONS],
        numExperts: [3, 2],
        topK: [2, 1],
        balance: { coef: 0.1, form: 'layer', scope: 'global' },
        zLossCoef: 0.01,
      },
      {
        ...common,
        method: 'loramoe',
        targetModules: ['gate_proj', 'down_proj'],
        numExperts: [2, 2],
        balance: noBalance,
        zLossCoef: 0.01,
        blcAlpha: 0.1,
        blcWeight: 0.1,
      },
      { ...common, method: 'flylora', rank: 4, topK: 2, select: 'signed', biasRate: 0.01, targetModules: ['v_proj'] },
    ];
    const hyper = { lr: 1e-3, beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0.01, maxGradNorm: 1 };
    for (const adapter of adapters) {
      const model = await loadMethodModel(twoLayers, adapter, { adapterSeed: 1 });
      const batch = randomTrainBatch(twoLayers, { batch: 2, seqLen: 4, seed: 2 });
      batch.taskTypes = Int32Array.from([0, 1]);
      const counts: number[] = [];
      for (let step = 0; step < 3; step++) {
        await model.forwardBackward(batch, { lossScale: 0.1, dropoutSeed: step, needInputGrad: true });
        await model.optimizerStep(hyper);
        await model.forward(batch, { collectRouting: true });
        const session = model.createSession(3);
        await session.append([1, 2]);
        session.dispose();
        model.routingStats();
        counts.push(tf.memory().numTensors);
      }
      expect(counts[2], adapter.method).toBe(counts[1]);
      model.dispose();
      expect(tf.memory().numTensors, adapter.method).toBe(before);
    }
  });
});
