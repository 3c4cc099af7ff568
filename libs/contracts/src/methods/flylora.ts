/**
 * `method: flylora`: FlyLoRA, a LoRA whose frozen sparse random A routes rank-1 experts implicitly
 * (top-k ranks per token) with a bias for load balance (arXiv 2510.08396; §7).
 */
import { z } from 'zod';

import { adapterFields, PROJECTION_NAMES, positiveInt } from './common.js';

export const flyloraSchema = z
  .strictObject({
    ...adapterFields({
      rank: 32,
      alpha: 64,
      dropout: 0,
      targetModules: PROJECTION_NAMES,
      rankOf: 'of the adapter: its number of rank-1 experts (a multiple of top_k)',
    }),
    top_k: positiveInt.default(8).describe('Ranks active per token; A has in / (rank / top_k) non-zeros per row'),
    select: z
      .enum(['signed', 'abs'])
      .default('signed')
      .describe('Rank the projected activations by signed value (the training code) or magnitude (the paper example)'),
    bias_rate: z
      .number()
      .min(0)
      .default(1e-3)
      .describe('Step u of the load-balancing bias update d ← d + u·sign(mean count − count)'),
  })
  .superRefine((value, ctx) => {
    if (value.top_k > value.rank)
      ctx.addIssue({
        code: 'custom',
        path: ['top_k'],
        message: `must be at most rank (${value.rank}), got ${value.top_k}`,
      });
    else if (value.rank % value.top_k !== 0)
      ctx.addIssue({
        code: 'custom',
        path: ['top_k'],
        message: `must divide rank (${value.rank}), got ${value.top_k}`,
      });
  })
  .describe('FlyLoRA: implicit rank-wise routing through a frozen sparse random A (method: flylora)');

export type FlyloraConfig = z.output<typeof flyloraSchema>;
