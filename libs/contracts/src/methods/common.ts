/**
 * Pieces every adapter method's config section shares: the low-rank hyperparameters of its
 * experts and the routers' load-balancing loss. Keys are snake_case; every field has a
 * one-line `.describe()` (the web console builds its forms from them).
 */
import { z } from 'zod';

export const PROJECTION_NAMES = ['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj'] as const;
export type ProjectionName = (typeof PROJECTION_NAMES)[number];

export const MLP_PROJECTIONS: ProjectionName[] = ['gate_proj', 'up_proj', 'down_proj'];

export const positiveInt = z.number().int().positive();

export interface AdapterDefaults {
  rank: number;
  alpha: number;
  dropout: number;
  targetModules: readonly ProjectionName[];
  /** What `rank` is the rank of, for its description. */
  rankOf: string;
}

/** rank, alpha, dropout, use_rslora and target_modules, with a method's own defaults. */
export function adapterFields(d: AdapterDefaults) {
  return {
    rank: positiveInt.default(d.rank).describe(`Rank r ${d.rankOf}`),
    alpha: z.number().positive().default(d.alpha).describe('Scale numerator: each update is scaled by alpha / r'),
    dropout: z.number().min(0).lt(1).default(d.dropout).describe('Dropout probability on the adapter input'),
    use_rslora: z.boolean().default(false).describe('Scale by alpha / sqrt(r) instead of alpha / r (rank-stabilised)'),
    target_modules: z
      .array(z.enum(PROJECTION_NAMES))
      .min(1)
      .default([...d.targetModules])
      .describe(`Projections to adapt in every layer (default: ${d.targetModules.join(', ')})`),
  };
}

export interface BalanceDefaults {
  coef: number;
  form: 'layer' | 'pooled';
  /** Why this default, for the description of coef. */
  note: string;
}

/** The Switch-style load-balancing loss of the routers (docs/methods.md "Auxiliary losses"). */
export function balanceSchema(d: BalanceDefaults) {
  return z
    .strictObject({
      coef: z
        .number()
        .min(0)
        .default(d.coef)
        .describe(`Weight λ of the load-balancing loss; 0 turns it off. ${d.note}`),
      form: z
        .enum(['layer', 'pooled'])
        .default(d.form)
        .describe('layer: one loss per decoder layer, summed (MoLA); pooled: one loss over every site (Mixtral)'),
      scope: z
        .enum(['micro', 'global'])
        .default('micro')
        .describe('micro: expert counts of each micro-batch; global: counts over the whole optimizer step'),
    })
    .prefault({})
    .describe('Load-balancing loss of the routers');
}

export const zLossCoef = z
  .number()
  .min(0)
  .default(0)
  .describe('Weight of the router z-loss (mean squared logsumexp); 0 turns it off');
