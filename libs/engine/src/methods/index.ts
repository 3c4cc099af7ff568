/**
 * The adapter-method registry (docs/methods.md): defaults per method, validation against a model,
 * the adapted sites and the ordered adapter tensors (names, shapes, trainable or not), and their
 * initial values. Both engines follow these layouts; nothing here depends on tfjs.
 */
import type { LlamaConfig } from '@expertune/formats';
import {
  ADAPTER_METHODS,
  PROJECTIONS,
  type AdapterConfig,
  type AdapterMethod,
  type DynmoleAdapterConfig,
  type LoramoeAdapterConfig,
  type MolaAdapterConfig,
  type Projection,
} from '../types.js';
import { loraInitA, routerInit } from '../rng.js';
import { inputGroupKey, loraScale, loraSite, projectionModule, projectionShape } from '../tfjs/tensor-layout.js';
import { dynmoleDefaults } from './dynmole/index.js';
import { flyloraDefaults, flyloraNonZerosPerRow, flyloraSparseA } from './flylora/index.js';
import { loraDefaults } from './lora/index.js';
import { loramoeDefaults } from './loramoe/index.js';
import { molaDefaults } from './mola/index.js';

export type RouterAdapterConfig = MolaAdapterConfig | LoramoeAdapterConfig | DynmoleAdapterConfig;
export type AdapterConfigOf<M extends AdapterMethod> = Extract<AdapterConfig, { method: M }>;

/** Whether the method has routers (mola, loramoe, dynmole). */
export function hasRouter(adapter: AdapterConfig): adapter is RouterAdapterConfig {
  return adapter.method === 'mola' || adapter.method === 'loramoe' || adapter.method === 'dynmole';
}

/** Whether the method produces routing statistics (every method but lora). */
export function hasRouting(adapter: AdapterConfig): boolean {
  return adapter.method !== 'lora';
}

/**
 * The defaults of a method (see each method's folder for their sources), for a model of
 * `numLayers` layers, with `overrides` applied on top.
 */
export function defaultAdapterConfig<M extends AdapterMethod>(
  method: M,
  numLayers: number,
  overrides: Partial<AdapterConfigOf<M>> = {},
): AdapterConfigOf<M> {
  let base: AdapterConfig;
  switch (method) {
    case 'lora':
      base = loraDefaults();
      break;
    case 'mola':
      base = molaDefaults(numLayers);
      break;
    case 'loramoe':
      base = loramoeDefaults(numLayers);
      break;
    case 'dynmole':
      base = dynmoleDefaults(numLayers);
      break;
    case 'flylora':
      base = flyloraDefaults();
      break;
    default:
      throw new RangeError(`unknown adapter method '${String(method)}': use ${ADAPTER_METHODS.join(', ')}`);
  }
  return { ...base, ...overrides, method } as AdapterConfigOf<M>;
}

/** Experts at a layer: `numExperts[l]` for the mixtures, `r` rank-1 experts for FlyLoRA, 1 for LoRA. */
export function expertsAt(adapter: AdapterConfig, layer: number): number {
  if (hasRouter(adapter)) return adapter.numExperts[layer]!;
  return adapter.method === 'flylora' ? adapter.rank : 1;
}

function fail(message: string): never {
  throw new RangeError(`adapter config: ${message}`);
}

function checkPerLayer(name: string, values: unknown, numLayers: number): asserts values is number[] {
  if (!Array.isArray(values) || values.length !== numLayers)
    fail(`${name} needs one entry per layer (${numLayers}), got ${Array.isArray(values) ? values.length : 'none'}`);
}

function checkNonNegative(name: string, value: number): void {
  if (!(Number.isFinite(value) && value >= 0)) fail(`${name} must be a finite number ≥ 0, got ${value}`);
}

/** Throws a RangeError naming the first problem of `adapter` for a model of `config`. */
export function validateAdapterConfig(adapter: AdapterConfig, config: LlamaConfig): void {
  if (!(ADAPTER_METHODS as readonly string[]).includes(adapter.method))
    fail(`unknown method '${String(adapter.method)}': use ${ADAPTER_METHODS.join(', ')}`);
  if (!Number.isInteger(adapter.rank) || adapter.rank <= 0)
    fail(`rank must be a positive integer, got ${adapter.rank}`);
  if (!Number.isFinite(adapter.alpha)) fail(`alpha must be a finite number, got ${adapter.alpha}`);
  if (!(adapter.dropout >= 0 && adapter.dropout < 1)) fail(`dropout must be in [0, 1), got ${adapter.dropout}`);
  if (!Number.isFinite(adapter.seed)) fail(`seed must be a finite number, got ${adapter.seed}`);
  if (!Array.isArray(adapter.targetModules)) fail('targetModules must be a list of projections');
  for (const module of adapter.targetModules) {
    if (!PROJECTIONS.includes(module))
      fail(`unknown target module '${String(module)}'; expected one of ${PROJECTIONS.join(', ')}`);
  }
  if (new Set(adapter.targetModules).size !== adapter.targetModules.length) fail('targetModules has duplicates');
  const L = config.numLayers;

  if (hasRouter(adapter)) {
    checkPerLayer('numExperts', adapter.numExperts, L);
    adapter.numExperts.forEach((E, l) => {
      if (!Number.isInteger(E) || E < 1) fail(`numExperts[${l}] must be an integer ≥ 1, got ${E}`);
    });
    const { balance } = adapter;
    if (balance === undefined || balance === null) fail('balance is required');
    checkNonNegative('balance.coef', balance.coef);
    if (balance.form !== 'layer' && balance.form !== 'pooled')
      fail(`balance.form must be 'layer' or 'pooled', got '${String(balance.form)}'`);
    if (balance.scope !== 'micro' && balance.scope !== 'global')
      fail(`balance.scope must be 'micro' or 'global', got '${String(balance.scope)}'`);
    if (balance.form === 'pooled' && new Set(adapter.numExperts).size > 1)
      fail(
        `the pooled balance form needs the same number of experts on every layer, got ${adapter.numExperts.join(',')}`,
      );
    checkNonNegative('zLossCoef', adapter.zLossCoef);
  }

  switch (adapter.method) {
    case 'mola':
      checkPerLayer('topK', adapter.topK, L);
      adapter.topK.forEach((k, l) => {
        const E = adapter.numExperts[l]!;
        if (!Number.isInteger(k) || k < 1 || k > E) fail(`topK[${l}] must be an integer in [1, ${E}], got ${k}`);
      });
      break;
    case 'loramoe':
      adapter.numExperts.forEach((E, l) => {
        if (E % 2 !== 0) fail(`loramoe needs an even number of experts (two groups), numExperts[${l}] = ${E}`);
      });
      if (!Number.isFinite(adapter.blcAlpha)) fail(`blcAlpha must be a finite number, got ${adapter.blcAlpha}`);
      checkNonNegative('blcWeight', adapter.blcWeight);
      break;
    case 'dynmole':
      if (!(adapter.topP > 0 && adapter.topP <= 1)) fail(`topP must be in (0, 1], got ${adapter.topP}`);
      if (!Number.isInteger(adapter.keepTopK) || adapter.keepTopK < 1)
        fail(`keepTopK must be an integer ≥ 1, got ${adapter.keepTopK}`);
      if (!(adapter.entropyIndex > 0 && adapter.entropyIndex <= 2))
        fail(`entropyIndex (Tsallis q) must be in (0, 2], got ${adapter.entropyIndex}`);
      if (!Number.isFinite(adapter.entropyThreshold))
        fail(`entropyThreshold must be a finite number, got ${adapter.entropyThreshold}`);
      checkNonNegative('entropyEps', adapter.entropyEps);
      checkNonNegative('entropyCoef', adapter.entropyCoef);
      break;
    case 'flylora': {
      const { rank, topK } = adapter;
      if (!Number.isInteger(topK) || topK < 1 || topK > rank)
        fail(`flylora topK must be an integer in [1, rank = ${rank}], got ${topK}`);
      if (rank % topK !== 0) fail(`flylora rank (${rank}) must be a multiple of topK (${topK})`);
      if (adapter.select !== 'signed' && adapter.select !== 'abs')
        fail(`flylora select must be 'signed' or 'abs', got '${String(adapter.select)}'`);
      checkNonNegative('biasRate', adapter.biasRate);
      for (const projection of adapter.targetModules) {
        const inFeatures = projectionShape(config, projection)[1];
        if (flyloraNonZerosPerRow(inFeatures, rank, topK) < 1)
          fail(`flylora: ${projection} has ${inFeatures} inputs, fewer than rank / topK = ${rank / topK}`);
      }
      break;
    }
  }
}

/** One adapted projection and its tensors. */
export interface AdapterSite {
  layer: number;
  projection: Projection;
  /** `l·7 + p`. */
  site: number;
  /** The dropout key of its input group, `l·7 + p₀`. */
  inputGroupKey: number;
  /** The module path, e.g. `model.layers.0.mlp.gate_proj`. */
  module: string;
  inFeatures: number;
  outFeatures: number;
  /** `E`: experts (1 for lora, `r` rank-1 experts for flylora). */
  experts: number;
  /** Rank of each expert's block of the stacked `A`/`B` (r; 1 for flylora). */
  expertRank: number;
  /** `s = alpha / r` (`alpha / sqrt(r)` with rsLoRA). */
  scale: number;
  /** `<module>.router.weight` `[E, in]`, or null. */
  router: string | null;
  /** Per expert, the `A` name (`[r, in]`); one name (the whole `[r, in]`) for lora and flylora. */
  aNames: string[];
  /** Per expert, the `B` name (`[out, r]`); one name for lora and flylora. */
  bNames: string[];
  /** FlyLoRA's `<module>.topk_bias` `[r]`, or null. */
  bias: string | null;
}

/** The adapted sites, layer by layer and in projection order within a layer. */
export function adapterSites(config: LlamaConfig, adapter: AdapterConfig): AdapterSite[] {
  const sites: AdapterSite[] = [];
  for (let layer = 0; layer < config.numLayers; layer++) {
    for (const projection of PROJECTIONS) {
      if (!adapter.targetModules.includes(projection)) continue;
      const module = projectionModule(layer, projection);
      const [outFeatures, inFeatures] = projectionShape(config, projection);
      const experts = expertsAt(adapter, layer);
      const mixture = hasRouter(adapter);
      sites.push({
        layer,
        projection,
        site: loraSite(layer, projection),
        inputGroupKey: inputGroupKey(layer, projection),
        module,
        inFeatures,
        outFeatures,
        experts,
        expertRank: adapter.method === 'flylora' ? 1 : adapter.rank,
        scale: loraScale(adapter),
        router: mixture ? `${module}.router.weight` : null,
        aNames: mixture
          ? Array.from({ length: experts }, (_, e) => `${module}.experts.${e}.lora_A.weight`)
          : [`${module}.lora_A.weight`],
        bNames: mixture
          ? Array.from({ length: experts }, (_, e) => `${module}.experts.${e}.lora_B.weight`)
          : [`${module}.lora_B.weight`],
        bias: adapter.method === 'flylora' ? `${module}.topk_bias` : null,
      });
    }
  }
  return sites;
}

export interface AdapterTensorInfo {
  shape: number[];
  /** Trained by the optimizer (FlyLoRA's `A` and `topk_bias` are not). */
  trainable: boolean;
  layer: number;
}

/**
 * Every adapter tensor in order: site by site; within a site lora `A, B`; mixtures the router,
 * then per expert `A, B`; flylora `A` (frozen), `B`, `topk_bias` (not trained).
 */
export function adapterTensorShapes(config: LlamaConfig, adapter: AdapterConfig): Map<string, AdapterTensorInfo> {
  const shapes = new Map<string, AdapterTensorInfo>();
  const r = adapter.rank;
  for (const site of adapterSites(config, adapter)) {
    const { layer, inFeatures, outFeatures } = site;
    if (site.router !== null) shapes.set(site.router, { shape: [site.experts, inFeatures], trainable: true, layer });
    site.aNames.forEach((aName, e) => {
      const frozen = adapter.method === 'flylora';
      shapes.set(aName, { shape: [r, inFeatures], trainable: !frozen, layer });
      shapes.set(site.bNames[e]!, { shape: [outFeatures, r], trainable: true, layer });
    });
    if (site.bias !== null) shapes.set(site.bias, { shape: [r], trainable: false, layer });
  }
  return shapes;
}

/** Trainable adapter parameters of each layer (routers included; FlyLoRA's frozen `A` and bias not). */
export function trainableParametersPerLayer(config: LlamaConfig, adapter: AdapterConfig): number[] {
  const perLayer = new Array<number>(config.numLayers).fill(0);
  for (const info of adapterTensorShapes(config, adapter).values()) {
    if (info.trainable) perLayer[info.layer] = perLayer[info.layer]! + info.shape.reduce((a, b) => a * b, 1);
  }
  return perLayer;
}

/**
 * The initial values of every adapter tensor (docs/methods.md "Initialisation"): stacked `A` from
 * the LoRA hash over the flat index of `[E·r, in]`, routers from `2·site + 1`, `B = 0`, FlyLoRA's
 * sparse `A` and a zero bias.
 */
export function initialAdapterTensors(config: LlamaConfig, adapter: AdapterConfig): Map<string, Float32Array> {
  const values = new Map<string, Float32Array>();
  const r = adapter.rank;
  for (const site of adapterSites(config, adapter)) {
    const { inFeatures, outFeatures, experts } = site;
    if (site.router !== null) values.set(site.router, routerInit(adapter.seed, site.site, experts, inFeatures));
    if (adapter.method === 'flylora') {
      values.set(site.aNames[0]!, flyloraSparseA(adapter.seed, site.site, r, adapter.topK, inFeatures).dense);
      values.set(site.bNames[0]!, new Float32Array(outFeatures * r));
      values.set(site.bias!, new Float32Array(r));
      continue;
    }
    const stacked = loraInitA(adapter.seed, site.site, site.aNames.length * r, inFeatures);
    site.aNames.forEach((aName, e) => {
      values.set(aName, stacked.slice(e * r * inFeatures, (e + 1) * r * inFeatures));
      values.set(site.bNames[e]!, new Float32Array(outFeatures * r));
    });
  }
  return values;
}

export { loraDefaults } from './lora/index.js';
export { molaDefaults, molaGates, molaGateRows, type MolaGates } from './mola/index.js';
export {
  loramoeDefaults,
  loramoeExpertGroup,
  loramoeGroupMultiplier,
  loramoeImportance,
  localizedBalancingConstraint,
  coefficientOfVariationSquared,
  type LbcInput,
} from './loramoe/index.js';
export {
  dynmoleDefaults,
  tsallisEntropy,
  dynmoleTopPMask,
  dynmoleRoute,
  dynmoleRouteRows,
  type DynmoleRoute,
  type DynmoleRouting,
} from './dynmole/index.js';
export {
  flyloraDefaults,
  flyloraNonZerosPerRow,
  flyloraSparseA,
  flyloraScore,
  flyloraSelect,
  flyloraSelectRows,
  flyloraBiasUpdate,
  type FlyloraSparseA,
  type FlyloraSelectMode,
} from './flylora/index.js';
export {
  rankDescending,
  topKIndices,
  argmax as argmaxIndex,
  softmax,
  logSumExp,
  normalisedShannonEntropy,
  switchBalanceFromSums,
  poolSums,
  switchLoadBalance,
  dynmoleLoadBalance,
  zLoss,
  rowOf,
  type RouterPool,
} from './routing.js';
