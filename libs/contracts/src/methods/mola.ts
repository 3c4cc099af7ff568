/**
 * `method: mola`: MoLA, a mixture of LoRA experts on every targeted projection with top-k routing
 * and a per-layer number of experts (arXiv 2402.08562; ../shared/docs/methods.md §4).
 */
import { z } from 'zod';

import { adapterFields, balanceSchema, PROJECTION_NAMES, positiveInt, zLossCoef } from './common.js';

export const MOLA_PRESETS = ['inverted_triangle', 'triangle', 'hourglass', 'rectangle'] as const;
export type MolaPreset = (typeof MOLA_PRESETS)[number];

/** Experts of the four layer groups (bottom to top) of each preset, before `scale`. */
export const MOLA_PRESET_GROUPS: Record<MolaPreset, readonly [number, number, number, number]> = {
  inverted_triangle: [2, 4, 6, 8],
  triangle: [8, 6, 4, 2],
  hourglass: [8, 2, 2, 8],
  rectangle: [5, 5, 5, 5],
};

/**
 * Experts per layer of a MoLA preset on a model of `numLayers` layers: the layers split into four
 * equal groups, layer `l` in group `floor(4·l / numLayers)`, each group with the preset's count
 * times `scale` (a 32-layer model gets the paper's 8-layer groups).
 */
export function molaPresetExperts(preset: MolaPreset, numLayers: number, scale = 1): number[] {
  if (!Number.isInteger(numLayers) || numLayers <= 0)
    throw new RangeError(`numLayers must be a positive integer, got ${numLayers}`);
  if (!Number.isInteger(scale) || scale <= 0) throw new RangeError(`scale must be a positive integer, got ${scale}`);
  const groups = MOLA_PRESET_GROUPS[preset];
  if (!groups) throw new RangeError(`unknown MoLA preset '${String(preset)}': use one of ${MOLA_PRESETS.join(', ')}`);
  return Array.from({ length: numLayers }, (_, l) => groups[Math.floor((4 * l) / numLayers)]! * scale);
}

const presetSchema = z.strictObject({
  preset: z
    .enum(MOLA_PRESETS)
    .describe(
      'Layer-wise allocation: inverted_triangle 2-4-6-8, triangle 8-6-4-2, hourglass 8-2-2-8, rectangle 5-5-5-5',
    ),
  scale: positiveInt.default(1).describe('Multiplies every group count (scale 2 turns 2-4-6-8 into 4-8-12-16)'),
});

export const molaSchema = z
  .strictObject({
    ...adapterFields({ rank: 8, alpha: 16, dropout: 0.05, targetModules: PROJECTION_NAMES, rankOf: 'of each expert' }),
    num_experts: z
      .union([
        positiveInt.describe('The same number of experts in every layer'),
        z.array(positiveInt).min(1).describe('Experts of each decoder layer, bottom to top (one entry per layer)'),
        presetSchema.describe('A preset allocation over four equal groups of layers, scaled to the model depth'),
      ])
      .default({ preset: 'inverted_triangle', scale: 1 })
      .describe('Experts per layer: a number, a list with one entry per layer, or {preset, scale}'),
    top_k: z
      .union([positiveInt, z.array(positiveInt).min(1)])
      .default(2)
      .describe('Experts kept per token: one number for every layer, or one entry per layer'),
    balance: balanceSchema({
      coef: 1e-3,
      form: 'layer',
      note: 'On by default: the MoLA reference computes it but leaves it off by mistake (obalance=False, MoLA issue #16).',
    }),
    z_loss_coef: zLossCoef,
  })
  .describe('MoLA: LoRA experts with top-k routing and a layer-wise number of experts (method: mola)');

export type MolaConfig = z.output<typeof molaSchema>;
export type MolaNumExperts = MolaConfig['num_experts'];

/** Experts per layer of a MoLA `num_experts` value on a model of `numLayers` layers. */
export function resolveMolaExperts(spec: MolaNumExperts, numLayers: number): number[] {
  if (typeof spec === 'number') return Array.from({ length: numLayers }, () => spec);
  if (Array.isArray(spec)) {
    if (spec.length !== numLayers)
      throw new RangeError(`has ${spec.length} entries but the model has ${numLayers} layers: give one per layer`);
    return [...spec];
  }
  return molaPresetExperts(spec.preset, numLayers, spec.scale);
}

/** Top-k per layer of a MoLA `top_k` value on a model of `numLayers` layers. */
export function resolvePerLayer(spec: number | readonly number[], numLayers: number): number[] {
  if (typeof spec === 'number') return Array.from({ length: numLayers }, () => spec);
  if (spec.length !== numLayers)
    throw new RangeError(`has ${spec.length} entries but the model has ${numLayers} layers: give one per layer`);
  return [...spec];
}
