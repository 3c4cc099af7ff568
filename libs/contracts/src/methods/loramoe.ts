/**
 * `method: loramoe`: LoRAMoE, dense soft routing over LoRA experts on the FFN projections, with the
 * localized balancing constraint on rows that carry a task type (arXiv 2312.09979; §5).
 */
import { z } from 'zod';

import { adapterFields, balanceSchema, MLP_PROJECTIONS, positiveInt, zLossCoef } from './common.js';

export const loramoeSchema = z
  .strictObject({
    ...adapterFields({ rank: 4, alpha: 32, dropout: 0.05, targetModules: MLP_PROJECTIONS, rankOf: 'of each expert' }),
    num_experts: positiveInt
      .default(8)
      .describe('Experts per adapted projection (even when the balancing constraint is on: two groups of half)'),
    blc_alpha: z
      .number()
      .min(0)
      .lt(1)
      .default(0.1)
      .describe('δ of the localized balancing constraint: how much a task type favours its half of the experts'),
    blc_weight: z
      .number()
      .min(0)
      .default(0.1)
      .describe(
        'β, the constraint weight; it applies only to batches whose rows all carry a task_type (0 turns it off)',
      ),
    balance: balanceSchema({
      coef: 0,
      form: 'layer',
      note: 'Off by default: LoRAMoE balances with its localized constraint instead.',
    }),
    z_loss_coef: zLossCoef,
  })
  .superRefine((value, ctx) => {
    if (value.blc_weight > 0 && value.num_experts % 2 !== 0)
      ctx.addIssue({
        code: 'custom',
        path: ['num_experts'],
        message: `must be even when blc_weight > 0 (the constraint splits the experts in two groups), got ${value.num_experts}`,
      });
  })
  .describe('LoRAMoE: dense routing over LoRA experts on the FFN (method: loramoe)');

export type LoramoeConfig = z.output<typeof loramoeSchema>;
