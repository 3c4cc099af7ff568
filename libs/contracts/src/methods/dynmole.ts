/**
 * `method: dynmole`: DynMoLE, hybrid routing (top-p, or every expert when the router's Tsallis
 * entropy is high) with an entropy loss (arXiv 2504.00661; §6).
 */
import { z } from 'zod';

import { adapterFields, balanceSchema, MLP_PROJECTIONS, positiveInt, zLossCoef } from './common.js';

export const dynmoleSchema = z
  .strictObject({
    ...adapterFields({ rank: 24, alpha: 48, dropout: 0.05, targetModules: MLP_PROJECTIONS, rankOf: 'of each expert' }),
    num_experts: positiveInt.default(6).describe('Experts per adapted projection'),
    top_p: z
      .number()
      .gt(0)
      .max(1)
      .default(0.75)
      .describe('Keep the most probable experts while their cumulative probability stays <= top_p'),
    keep_top_k: positiveInt.default(2).describe('Always keep at least this many experts per token'),
    entropy_index: z
      .number()
      .gt(0)
      .max(2)
      .default(1.1)
      .describe('Tsallis entropy index q in (0, 2]; 1 is Shannon entropy'),
    entropy_threshold: z
      .number()
      .min(0)
      .default(0.9)
      .describe('Tokens whose normalised router entropy exceeds this use every expert (>= 1 disables that)'),
    entropy_eps: z.number().min(0).default(1e-5).describe('ε added to every probability inside the entropy'),
    entropy_coef: z.number().min(0).default(0.01).describe('Weight of the Tsallis entropy loss; 0 turns it off'),
    balance: balanceSchema({
      coef: 1e-3,
      form: 'pooled',
      note: "DynMoLE's form: masked gates instead of counts, pooled over every site.",
    }),
    z_loss_coef: zLossCoef,
  })
  .superRefine((value, ctx) => {
    if (value.keep_top_k > value.num_experts)
      ctx.addIssue({
        code: 'custom',
        path: ['keep_top_k'],
        message: `must be at most num_experts (${value.num_experts}), got ${value.keep_top_k}`,
      });
  })
  .describe('DynMoLE: entropy-gated hybrid routing over LoRA experts (method: dynmole)');

export type DynmoleConfig = z.output<typeof dynmoleSchema>;
