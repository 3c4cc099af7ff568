/**
 * The adapter of a run, three ways: the training config's method section (snake_case, zod) →
 * the engine's `AdapterConfig` (camelCase, one entry per layer resolved against the model's
 * depth); `AdapterConfig` → the export's `AdapterSpec` (what inference needs); and a loaded export
 * back to an `AdapterConfig` an engine can attach.
 */
import {
  adapterSection,
  ConfigError,
  resolveMolaExperts,
  resolvePerLayer,
  type TrainConfig,
} from '@expertune/contracts';
import type { AdapterConfig, BalanceLossConfig, Projection } from '@expertune/engine';
import type { AdapterSpec, MixtureSpec } from '@expertune/formats';

function configError(path: string, message: string): ConfigError {
  return new ConfigError(`config is not valid for this model:\n  ${path}: ${message}`, [{ path, message }]);
}

/**
 * The engine adapter of a parsed training config on a model of `numLayers` layers (null for full
 * fine-tuning). Per-layer values (MoLA's presets, lists) are resolved here; a list of the wrong
 * length, a top-k above a layer's experts or a pooled balance over unequal layers is a ConfigError
 * naming the config key.
 */
export function adapterConfigFor(config: TrainConfig, numLayers: number): AdapterConfig | null {
  const selected = adapterSection(config);
  if (!selected) return null;
  const { section } = selected;
  const common = {
    rank: section.rank,
    alpha: section.alpha,
    useRslora: section.use_rslora,
    dropout: section.dropout,
    targetModules: [...section.target_modules] as Projection[],
    seed: config.seed,
  };
  const perLayer = (path: string, resolve: () => number[]): number[] => {
    try {
      return resolve();
    } catch (error) {
      throw configError(path, (error as Error).message);
    }
  };
  const balanceOf = (path: string, balance: BalanceLossConfig, numExperts: number[]): BalanceLossConfig => {
    if (balance.form === 'pooled' && new Set(numExperts).size > 1)
      throw configError(
        `${path}.balance.form`,
        `pooled needs the same number of experts in every layer, got ${numExperts.join(', ')}: use layer`,
      );
    return { coef: balance.coef, form: balance.form, scope: balance.scope };
  };
  const uniform = (n: number) => Array.from({ length: numLayers }, () => n);
  switch (selected.method) {
    case 'lora':
      return { method: 'lora', ...common };
    case 'mola': {
      const s = selected.section;
      const numExperts = perLayer('mola.num_experts', () => resolveMolaExperts(s.num_experts, numLayers));
      const topK = perLayer('mola.top_k', () => resolvePerLayer(s.top_k, numLayers));
      const bad = topK.findIndex((k, l) => k > numExperts[l]!);
      if (bad >= 0)
        throw configError(
          'mola.top_k',
          `layer ${bad} keeps ${topK[bad]} experts but has only ${numExperts[bad]} (experts per layer: ${numExperts.join(', ')})`,
        );
      return {
        method: 'mola',
        ...common,
        numExperts,
        topK,
        balance: balanceOf('mola', s.balance, numExperts),
        zLossCoef: s.z_loss_coef,
      };
    }
    case 'loramoe': {
      const s = selected.section;
      const numExperts = uniform(s.num_experts);
      return {
        method: 'loramoe',
        ...common,
        numExperts,
        blcAlpha: s.blc_alpha,
        blcWeight: s.blc_weight,
        balance: balanceOf('loramoe', s.balance, numExperts),
        zLossCoef: s.z_loss_coef,
      };
    }
    case 'dynmole': {
      const s = selected.section;
      const numExperts = uniform(s.num_experts);
      return {
        method: 'dynmole',
        ...common,
        numExperts,
        topP: s.top_p,
        keepTopK: s.keep_top_k,
        entropyIndex: s.entropy_index,
        entropyThreshold: s.entropy_threshold,
        entropyEps: s.entropy_eps,
        entropyCoef: s.entropy_coef,
        balance: balanceOf('dynmole', s.balance, numExperts),
        zLossCoef: s.z_loss_coef,
      };
    }
    case 'flylora': {
      const s = selected.section;
      return { method: 'flylora', ...common, topK: s.top_k, select: s.select, biasRate: s.bias_rate };
    }
  }
}

/** What an export of this adapter records (inference only: no seed, dropout or loss settings). */
export function exportSpecOf(adapter: AdapterConfig, numLayers: number): AdapterSpec {
  const common = {
    rank: adapter.rank,
    alpha: adapter.alpha,
    useRslora: adapter.useRslora,
    targetModules: [...adapter.targetModules],
  };
  switch (adapter.method) {
    case 'lora':
      return { method: 'lora', ...common, dropout: adapter.dropout, layers: null };
    case 'mola':
      return { method: 'mola', ...common, numExperts: [...adapter.numExperts], topK: [...adapter.topK] };
    case 'loramoe':
      return { method: 'loramoe', ...common, numExperts: [...adapter.numExperts], groups: 2 };
    case 'dynmole':
      return {
        method: 'dynmole',
        ...common,
        numExperts: [...adapter.numExperts],
        topP: adapter.topP,
        keepTopK: adapter.keepTopK,
        entropyIndex: adapter.entropyIndex,
        entropyThreshold: adapter.entropyThreshold,
        entropyEps: adapter.entropyEps,
      };
    case 'flylora':
      return { method: 'flylora', ...common, numLayers, topK: adapter.topK, select: adapter.select };
  }
}

const NO_BALANCE: BalanceLossConfig = { coef: 0, form: 'layer', scope: 'micro' };

/**
 * An engine adapter that computes what an export describes. Training-only settings are neutral
 * (seed 0, no dropout, every auxiliary loss off, FlyLoRA's bias frozen): attach it, then load the
 * export's tensors.
 */
export function adapterConfigFromSpec(spec: AdapterSpec): AdapterConfig {
  const common = {
    rank: spec.rank,
    alpha: spec.alpha,
    useRslora: spec.useRslora,
    dropout: 0,
    targetModules: [...spec.targetModules] as Projection[],
    seed: 0,
  };
  switch (spec.method) {
    case 'lora':
      return { method: 'lora', ...common };
    case 'mola':
      return {
        method: 'mola',
        ...common,
        numExperts: [...spec.numExperts],
        topK: [...spec.topK],
        balance: NO_BALANCE,
        zLossCoef: 0,
      };
    case 'loramoe':
      return {
        method: 'loramoe',
        ...common,
        numExperts: [...spec.numExperts],
        blcAlpha: 0,
        blcWeight: 0,
        balance: NO_BALANCE,
        zLossCoef: 0,
      };
    case 'dynmole':
      return {
        method: 'dynmole',
        ...common,
        numExperts: [...spec.numExperts],
        topP: spec.topP,
        keepTopK: spec.keepTopK,
        entropyIndex: spec.entropyIndex,
        entropyThreshold: spec.entropyThreshold,
        entropyEps: spec.entropyEps,
        entropyCoef: 0,
        balance: NO_BALANCE,
        zLossCoef: 0,
      };
    case 'flylora':
      return { method: 'flylora', ...common, topK: spec.topK, select: spec.select, biasRate: 0 };
  }
}

/** Whether an adapter is a mixture (exported in the expertune-mole layout). */
export function isMixture(spec: AdapterSpec): spec is MixtureSpec {
  return spec.method !== 'lora';
}
