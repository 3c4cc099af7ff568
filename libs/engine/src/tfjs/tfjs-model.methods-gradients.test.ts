/**
 * Gradients of every adapter method (docs/methods.md) against central finite differences of the
 * objective `lossScale·ΣCE + auxScale·L_aux`, with the auxiliary losses switched on: A, B and the
 * routers (adapter tensors), and the input embeddings (through `inputGrad`). Gate masks are
 * constants of the gradient, so a probe whose perturbation flips a routing decision (seen in
 * `lastRouting`) is discarded rather than compared.
 */
import { afterAll, describe, expect, it } from 'vitest';
import type { LlamaConfig } from '@expertune/formats';
import type { AdapterConfig, ForwardBackwardOptions, TrainBatch } from '../types.js';
import { hash3, uniform } from '../rng.js';
import { randomLlamaConfig, randomTrainBatch } from '../testing/random-model.js';
import type { SiteRoutingRecord, TfjsModel } from './tfjs-model.js';
import { loadMethodModel, maxAbs, type MethodFixtureOptions } from './model-fixtures.test-util.js';

const models: TfjsModel[] = [];
afterAll(() => models.forEach((model) => model.dispose()));

const common = { alpha: 4, useRslora: false, seed: 3 } as const;

interface MethodCase {
  title: string;
  config: LlamaConfig;
  adapter: AdapterConfig;
  fixture: MethodFixtureOptions;
  /** A micro-batch run before each evaluation, so the global-scope buffer holds more than this batch. */
  prefill?: boolean;
  padding?: boolean;
  taskTypes?: boolean;
}

const config = randomLlamaConfig({ hiddenSize: 16, numHeads: 4, numKvHeads: 2 });

const cases: MethodCase[] = [
  {
    title: 'lora (dropout shared by the q/k/v and gate/up groups)',
    config,
    adapter: { ...common, method: 'lora', rank: 2, dropout: 0.2, targetModules: ['q_proj', 'v_proj', 'up_proj'] },
    fixture: { adapterSeed: 5 },
  },
  {
    title: 'mola: top-k renormalised gates, per-layer Switch balance and z-loss, padding',
    config,
    adapter: {
      ...common,
      method: 'mola',
      rank: 2,
      dropout: 0.1,
      targetModules: ['q_proj', 'k_proj', 'o_proj', 'gate_proj', 'down_proj'],
      numExperts: [3, 2],
      topK: [2, 1],
      balance: { coef: 0.5, form: 'layer', scope: 'micro' },
      zLossCoef: 0.05,
    },
    fixture: { adapterSeed: 6, routerScale: 2 },
    padding: true,
  },
  {
    title: 'mola: pooled global-scope balance over a step buffer filled by an earlier micro-batch',
    config,
    adapter: {
      ...common,
      method: 'mola',
      rank: 2,
      dropout: 0,
      targetModules: ['v_proj', 'up_proj'],
      numExperts: [4, 4],
      topK: [2, 3],
      balance: { coef: 0.5, form: 'pooled', scope: 'global' },
      zLossCoef: 0,
    },
    fixture: { adapterSeed: 7, routerScale: 2 },
    prefill: true,
  },
  {
    title: 'loramoe: dense gates, argmax balance, z-loss and the localized balancing constraint',
    config,
    adapter: {
      ...common,
      method: 'loramoe',
      rank: 2,
      dropout: 0.1,
      targetModules: ['gate_proj', 'up_proj', 'down_proj'],
      numExperts: [2, 4],
      balance: { coef: 0.3, form: 'layer', scope: 'micro' },
      zLossCoef: 0.05,
      blcAlpha: 0.2,
      blcWeight: 0.5,
    },
    fixture: { adapterSeed: 8, routerScale: 2 },
    padding: true,
    taskTypes: true,
  },
  {
    title: 'dynmole: hybrid routing, Tsallis entropy loss (q = 1.1), prob-based pooled balance',
    config,
    adapter: {
      ...common,
      method: 'dynmole',
      rank: 2,
      dropout: 0.1,
      targetModules: ['q_proj', 'o_proj', 'up_proj', 'down_proj'],
      numExperts: [4, 4],
      balance: { coef: 0.5, form: 'pooled', scope: 'micro' },
      zLossCoef: 0.05,
      topP: 0.6,
      keepTopK: 1,
      entropyIndex: 1.1,
      entropyThreshold: 0.8,
      entropyEps: 1e-5,
      entropyCoef: 0.5,
    },
    fixture: { adapterSeed: 9, routerScale: 5 },
    padding: true,
  },
  {
    title: 'dynmole: Shannon entropy (q = 1), per-layer global-scope balance',
    config,
    adapter: {
      ...common,
      method: 'dynmole',
      rank: 2,
      dropout: 0,
      targetModules: ['k_proj', 'gate_proj'],
      numExperts: [3, 2],
      balance: { coef: 0.5, form: 'layer', scope: 'global' },
      zLossCoef: 0,
      topP: 0.5,
      keepTopK: 1,
      entropyIndex: 1,
      entropyThreshold: 0.85,
      entropyEps: 1e-5,
      entropyCoef: 0.5,
    },
    fixture: { adapterSeed: 10, routerScale: 5 },
    prefill: true,
  },
  {
    title: 'flylora: frozen sparse A, abs selection with a bias, only B trains, exact input gradient',
    config,
    adapter: {
      ...common,
      method: 'flylora',
      rank: 4,
      topK: 2,
      select: 'abs',
      biasRate: 0.01,
      dropout: 0.1,
      targetModules: ['q_proj', 'v_proj', 'gate_proj', 'down_proj'],
    },
    fixture: { adapterSeed: 11, biasStd: 0.05 },
    padding: true,
  },
];

/** Every `step`-th name of a list, starting at `offset`, plus the last. */
function sample(names: string[], count: number): string[] {
  const step = Math.max(1, Math.floor(names.length / count));
  const picked = new Set<string>();
  for (let i = 0; i < names.length && picked.size < count; i += step) picked.add(names[i]!);
  picked.add(names[names.length - 1]!);
  return [...picked];
}

/** The largest-gradient coordinate and one pseudo-random coordinate among the large ones. */
function probeCoordinates(gradient: Float32Array, salt: number): number[] {
  const largest = maxAbs(gradient);
  const candidates: number[] = [];
  gradient.forEach((g, i) => {
    if (Math.abs(g) >= 0.25 * largest) candidates.push(i);
  });
  const top = candidates.reduce((best, i) => (Math.abs(gradient[i]!) > Math.abs(gradient[best]!) ? i : best));
  return [...new Set([top, candidates[Math.floor(uniform(hash3(salt, 1, 0)) * candidates.length)]!])];
}

function routingSignature(model: TfjsModel): string {
  return model
    .lastRouting()
    .map((record) => record.selection.join(''))
    .join('|');
}

describe('mixture-method gradients against central finite differences (aux losses on)', () => {
  for (const testCase of cases) {
    it(testCase.title, async () => {
      const model = await loadMethodModel(testCase.config, testCase.adapter, testCase.fixture);
      models.push(model);
      const d = testCase.config.hiddenSize;
      const batch: TrainBatch = randomTrainBatch(testCase.config, { batch: 2, seqLen: 5, seed: 31 });
      if (testCase.padding) {
        batch.tokenMask = Uint8Array.from({ length: 10 }, (_, t) => (t === 4 || t === 8 || t === 9 ? 0 : 1));
        batch.tokenMask.forEach((m, t) => {
          if (m === 0) batch.targets[t] = -1;
        });
      }
      if (testCase.taskTypes) batch.taskTypes = Int32Array.from([1, 0]);
      const prefill = randomTrainBatch(testCase.config, { batch: 1, seqLen: 6, seed: 32 });
      const options: ForwardBackwardOptions = { lossScale: 0.5, dropoutSeed: 77, auxScale: 0.7 };
      const biasNames = model.tensorNames('adapter').filter((name) => name.endsWith('.topk_bias'));
      const biases = new Map(biasNames.map((name) => [name, model.getTensor(name)]));

      // DynMoLE's global-scope f (Σ m G / Σ m of the step so far, this micro-batch included) is a
      // constant of the gradient although G moves with the weights: the finite differences then
      // replace the reported balance by N Σ f₀ P(θ), with f₀ the step's f at the unperturbed weights.
      const constantF = testCase.adapter.method === 'dynmole' && testCase.adapter.balance.scope === 'global';
      const N = constantF && testCase.adapter.method === 'dynmole' ? testCase.adapter.numExperts : [];
      const poolOf = (layer: number) =>
        testCase.adapter.method === 'dynmole' && testCase.adapter.balance.form === 'layer' ? layer : -1;
      const poolSums = (routing: SiteRoutingRecord[], mask: ArrayLike<number> | undefined, of: 'gates' | 'probs') => {
        const sums = new Map<number, { values: Float64Array; tokens: number }>();
        for (const record of routing) {
          const E = record.experts;
          const key = poolOf(record.layer);
          const entry = sums.get(key) ?? { values: new Float64Array(E), tokens: 0 };
          sums.set(key, entry);
          const values = of === 'gates' ? record.gates : record.probs!;
          for (let t = 0; t < values.length / E; t++) {
            const m = mask === undefined ? 1 : mask[t]!;
            entry.tokens += m;
            for (let e = 0; e < E; e++) entry.values[e] = entry.values[e]! + m * values[t * E + e]!;
          }
        }
        return sums;
      };
      let fixedF: Map<number, Float64Array> | null = null;

      /**
       * The objective from a clean state at the current weights moved by `shift` (applied after
       * the prefill micro-batch, whose buffer the gradient treats as a constant); its routing.
       */
      const evaluate = async (lossScale: number, withGrad: boolean, shift: () => void = () => {}) => {
        for (const [name, values] of biases) model.setTensor(name, values); // undo FlyLoRA's bias updates
        model.resetStepState();
        let prefillRouting: SiteRoutingRecord[] = [];
        if (testCase.prefill) {
          await model.forwardBackward(prefill, { lossScale: 0.5, dropoutSeed: 78 });
          prefillRouting = model.lastRouting();
        }
        model.zeroGrad();
        shift();
        const stats = await model.forwardBackward(batch, { ...options, lossScale, needInputGrad: withGrad });
        const signature = routingSignature(model);
        let value = lossScale * stats.lossSum + options.auxScale! * stats.aux.total;
        if (constantF && testCase.adapter.method === 'dynmole') {
          const routing = model.lastRouting();
          if (fixedF === null) {
            const step = poolSums(routing, batch.tokenMask, 'gates');
            const before = poolSums(prefillRouting, undefined, 'gates');
            fixedF = new Map(
              [...step].map(([key, { values, tokens }]) => {
                const earlier = before.get(key)!;
                return [key, values.map((v, e) => (v + earlier.values[e]!) / (tokens + earlier.tokens))];
              }),
            );
          }
          let balance = 0;
          for (const [key, { values, tokens }] of poolSums(routing, batch.tokenMask, 'probs')) {
            const f = fixedF.get(key)!;
            values.forEach((v, e) => (balance += N[Math.max(key, 0)]! * f[e]! * (v / tokens)));
          }
          value += options.auxScale! * testCase.adapter.balance.coef * (balance - stats.aux.balance);
        }
        if (!withGrad) model.zeroGrad();
        return { value, signature, stats };
      };

      for (const lossScale of testCase.adapter.method === 'lora' || testCase.adapter.method === 'flylora'
        ? [options.lossScale]
        : [options.lossScale, 0]) {
        const base = await evaluate(lossScale, true);
        const trainable = model.tensorNames('trainable');
        // With lossScale 0 only the auxiliary losses remain: their gradients reach the routers.
        const names =
          lossScale === 0 ? trainable.filter((name) => name.endsWith('.router.weight')) : sample(trainable, 8);
        const analytic = new Map(names.map((name) => [name, model.getGrad(name)]));
        const inputGradient = model.inputGrad();
        if (lossScale !== 0) {
          expect(trainable.some((name) => name.endsWith('.lora_A.weight'))).toBe(testCase.adapter.method !== 'flylora');
        } else {
          expect(base.stats.aux.total).toBeGreaterThan(0);
        }

        const report: string[] = [];
        let worst = 0;
        let compared = 0;
        let flipped = 0;
        /** Compares `g` with the fourth-order central difference of the objective along `shift(delta)`. */
        const check = async (
          label: string,
          g: number,
          scale: number,
          shift: (delta: number) => void,
          eps = 2e-2,
        ): Promise<boolean> => {
          const values: number[] = [];
          let stable = true;
          for (const delta of [eps, -eps, 2 * eps, -2 * eps]) {
            const result = await evaluate(lossScale, false, () => shift(delta));
            values.push(result.value);
            if (result.signature !== base.signature) stable = false;
          }
          shift(0);
          if (!stable) {
            flipped++;
            report.push(`${label}: a routing decision flipped, skipped`);
            return false;
          }
          const numeric = (8 * (values[0]! - values[1]!) - (values[2]! - values[3]!)) / (12 * eps);
          const error = Math.abs(numeric - g) / (Math.abs(g) + 1e-2 * scale);
          worst = Math.max(worst, error);
          compared++;
          report.push(
            `${label} analytic ${g.toExponential(4)} numeric ${numeric.toExponential(4)} error ${error.toExponential(2)}`,
          );
          return true;
        };

        // Errors are relative to the gradient plus 1 % of the largest adapter gradient probed (float32 noise floor).
        const withGradient = names.filter((name) => maxAbs(analytic.get(name)!) > 0);
        expect(withGradient.length, 'most probed tensors take part in the loss').toBeGreaterThanOrEqual(
          Math.ceil(names.length / 2),
        );
        const scale = Math.max(...withGradient.map((name) => maxAbs(analytic.get(name)!)));
        for (const [index, name] of withGradient.entries()) {
          const gradient = analytic.get(name)!;
          const original = model.getTensor(name);
          for (const coordinate of probeCoordinates(gradient, index)) {
            await check(`${name}[${coordinate}]`, gradient[coordinate]!, scale, (delta) => {
              const values = Float32Array.from(original);
              values[coordinate] = values[coordinate]! + delta;
              model.setTensor(name, values);
            });
          }
        }

        // Input embeddings, at tokens that occur once: dL/dE[id, c] = inputGrad[t, c]. A smaller step
        // (these gradients are larger), and positions tried until one compares without a flip.
        const embedding = model.getTensor('model.embed_tokens.weight');
        const unique = [...batch.ids.keys()].filter(
          (t) => batch.ids.indexOf(batch.ids[t]!) === batch.ids.lastIndexOf(batch.ids[t]!) && t % 5 < 4,
        );
        let inputCompared = 0;
        for (const position of unique.slice(0, 5)) {
          const id = batch.ids[position]!;
          const row = inputGradient.subarray(position * d, (position + 1) * d);
          expect(maxAbs(row)).toBeGreaterThan(0);
          for (const c of probeCoordinates(Float32Array.from(row), 99)) {
            const shift = (delta: number) => {
              const values = Float32Array.from(embedding);
              values[id * d + c] = values[id * d + c]! + delta;
              model.setTensor('model.embed_tokens.weight', values);
            };
            if (await check(`input[${position}, ${c}]`, row[c]!, maxAbs(row), shift, 5e-3)) inputCompared++;
          }
          if (inputCompared > 0) break;
        }
        expect(inputCompared, report.join('\n')).toBeGreaterThan(0);
        model.setTensor('model.embed_tokens.weight', embedding);

        if (process.env.EXPERTUNE_FD_REPORT)
          console.log(`${testCase.title} (lossScale ${lossScale})\n${report.join('\n')}`);
        expect(compared, report.join('\n')).toBeGreaterThanOrEqual(Math.max(6, flipped));
        expect(worst, report.join('\n')).toBeLessThan(0.02);
      }
    });
  }
});
