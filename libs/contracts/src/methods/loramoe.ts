/**
 * `method: loramoe`: LoRAMoE, dense soft routing over LoRA experts on the FFN projections, with the
 * localized balancing constraint on rows that carry a task type (arXiv 2312.09979; §5). Sizes are
 * the MoE-PEFT template's (6 experts of r = 24, α = 48: DynMoLE's budget); the constraint is off by
 * default, as in the released script (the paper's δ and β could not be retrieved).
 */
import { z } from 'zod';

import { adapterFields, balanceSchema, MLP_PROJECTIONS, positiveInt, zLossCoef } from './common.js';

export const loramoeSchema = z
  .strictObject({
    ...adapterFields({ rank: 24, alpha: 48, dropout: 0.05, targetModules: MLP_PROJECTIONS, rankOf: 'of each expert' }),
    num_experts: positiveInt
      .default(6)
      .describe('Experts per adapted projection; even (the balancing constraint splits them into two groups)'),
    blc_alpha: z
      .number()
      .min(0)
      .lt(1)
      .default(0)
      .describe('δ of the localized balancing constraint: how much a task type favours its half of the experts'),
    blc_weight: z
      .number()
      .min(0)
      .default(0)
      .describe(
        'β, the constraint weight, applied to batches whose rows all carry a task_type; off by default as in the released script (the paper values are unknown)',
      ),
    balance: balanceSchema({
      coef: 0,
      form: 'layer',
      note: 'Off by default: LoRAMoE has no Switch balance (its localized constraint plays that role).',
    }),
    z_loss_coef: zLossCoef,
  })
  .superRefine((value, ctx) => {
    if (value.num_experts % 2 !== 0)
      ctx.addIssue({
        code: 'custom',
        path: ['num_experts'],
        message: `must be even (LoRAMoE splits its experts into two groups), got ${value.num_experts}`,
      });
  })
  .describe('LoRAMoE: dense routing over LoRA experts on the FFN, balanced within two expert groups (method: loramoe)');

export type LoramoeConfig = z.output<typeof loramoeSchema>;
