/** `method: lora`: one low-rank adapter per targeted projection (docs/engine.md "LoRA"). */
import { z } from 'zod';

import { adapterFields, PROJECTION_NAMES } from './common.js';

export const loraSchema = z
  .strictObject(
    adapterFields({ rank: 16, alpha: 32, dropout: 0, targetModules: PROJECTION_NAMES, rankOf: 'of each adapter' }),
  )
  .prefault({})
  .describe('LoRA: one low-rank update B·A per targeted projection, the baseline (method: lora)');

export type LoraMethodConfig = z.output<typeof loraSchema>;
