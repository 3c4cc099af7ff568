/**
 * Names and shapes of the tensors of a Llama-family model and of its LoRA adapter, as in the
 * table of docs/engine.md (Hugging Face names, `[out, in]` linear weights).
 */
import type { LlamaConfig } from '@expertune/formats';
import { PROJECTIONS, type LoraConfig, type Projection } from '../types.js';

/** The module a projection belongs to: `self_attn` for q/k/v/o, `mlp` for gate/up/down. */
export function projectionModule(layer: number, projection: Projection): string {
  const block =
    projection === 'gate_proj' || projection === 'up_proj' || projection === 'down_proj' ? 'mlp' : 'self_attn';
  return `model.layers.${layer}.${block}.${projection}`;
}

/** `[out, in]` of a projection's weight. */
export function projectionShape(config: LlamaConfig, projection: Projection): [number, number] {
  const d = config.hiddenSize;
  const queryWidth = config.numHeads * config.headDim;
  const keyValueWidth = config.numKvHeads * config.headDim;
  const F = config.intermediateSize;
  switch (projection) {
    case 'q_proj':
      return [queryWidth, d];
    case 'k_proj':
    case 'v_proj':
      return [keyValueWidth, d];
    case 'o_proj':
      return [d, queryWidth];
    case 'gate_proj':
    case 'up_proj':
      return [F, d];
    case 'down_proj':
      return [d, F];
  }
}

export function projectionHasBias(config: LlamaConfig, projection: Projection): boolean {
  switch (projection) {
    case 'q_proj':
    case 'k_proj':
    case 'v_proj':
      return config.qkvBias;
    case 'o_proj':
      return config.oBias;
    case 'gate_proj':
    case 'up_proj':
    case 'down_proj':
      return config.mlpBias;
  }
}

/** The site of a LoRA adapter: `layer · 7 + projection index`. */
export function loraSite(layer: number, projection: Projection): number {
  return layer * PROJECTIONS.length + PROJECTIONS.indexOf(projection);
}

/**
 * The first projection of the input group a projection belongs to: q for q/k/v (input
 * `rmsnorm(h)`), o, gate for gate/up (input `rmsnorm(h)` after attention), down.
 */
export function inputGroupFirstProjection(projection: Projection): Projection {
  switch (projection) {
    case 'q_proj':
    case 'k_proj':
    case 'v_proj':
      return 'q_proj';
    case 'gate_proj':
    case 'up_proj':
      return 'gate_proj';
    default:
      return projection;
  }
}

/** The dropout key of a projection's input group: `l·7 + p₀` (docs/engine.md "Dropout"). */
export function inputGroupKey(layer: number, projection: Projection): number {
  return loraSite(layer, inputGroupFirstProjection(projection));
}

export const EMBEDDING_NAME = 'model.embed_tokens.weight';
export const FINAL_NORM_NAME = 'model.norm.weight';
export const LM_HEAD_NAME = 'lm_head.weight';

/** Every base tensor, in table order (layer by layer), with its shape. */
export function baseTensorShapes(config: LlamaConfig): Map<string, number[]> {
  const shapes = new Map<string, number[]>();
  const d = config.hiddenSize;
  shapes.set(EMBEDDING_NAME, [config.vocabSize, d]);
  for (let layer = 0; layer < config.numLayers; layer++) {
    shapes.set(`model.layers.${layer}.input_layernorm.weight`, [d]);
    for (const projection of PROJECTIONS) {
      if (projection === 'gate_proj') shapes.set(`model.layers.${layer}.post_attention_layernorm.weight`, [d]);
      const module = projectionModule(layer, projection);
      const shape = projectionShape(config, projection);
      shapes.set(`${module}.weight`, shape);
      if (projectionHasBias(config, projection)) shapes.set(`${module}.bias`, [shape[0]]);
    }
  }
  shapes.set(FINAL_NORM_NAME, [d]);
  if (!config.tieWordEmbeddings) shapes.set(LM_HEAD_NAME, [config.vocabSize, d]);
  return shapes;
}

export interface LoraSiteLayout {
  layer: number;
  projection: Projection;
  site: number;
  /** `<module>.lora_A.weight`, `[rank, in]`. */
  aName: string;
  /** `<module>.lora_B.weight`, `[out, rank]`. */
  bName: string;
  inFeatures: number;
  outFeatures: number;
}

/** The adapted sites, layer by layer and in projection-index order within a layer. */
export function loraSites(config: LlamaConfig, lora: Pick<LoraConfig, 'targetModules'>): LoraSiteLayout[] {
  const sites: LoraSiteLayout[] = [];
  for (let layer = 0; layer < config.numLayers; layer++) {
    for (const projection of PROJECTIONS) {
      if (!lora.targetModules.includes(projection)) continue;
      const module = projectionModule(layer, projection);
      const [outFeatures, inFeatures] = projectionShape(config, projection);
      sites.push({
        layer,
        projection,
        site: loraSite(layer, projection),
        aName: `${module}.lora_A.weight`,
        bName: `${module}.lora_B.weight`,
        inFeatures,
        outFeatures,
      });
    }
  }
  return sites;
}

/** The adapter tensors, `A` then `B` per site, with their shapes. */
export function loraTensorShapes(
  config: LlamaConfig,
  lora: Pick<LoraConfig, 'targetModules' | 'rank'>,
): Map<string, number[]> {
  const shapes = new Map<string, number[]>();
  for (const site of loraSites(config, lora)) {
    shapes.set(site.aName, [lora.rank, site.inFeatures]);
    shapes.set(site.bName, [site.outFeatures, lora.rank]);
  }
  return shapes;
}

/** LoRA output scale: `alpha / r`, or `alpha / sqrt(r)` with rsLoRA. */
export function loraScale(lora: Pick<LoraConfig, 'alpha' | 'rank' | 'useRslora'>): number {
  return lora.useRslora ? lora.alpha / Math.sqrt(lora.rank) : lora.alpha / lora.rank;
}
