/**
 * Plain LoRA (docs/engine.md "LoRA"): one `A` `[r, in]` and one `B` `[out, r]` per site, the
 * mixture computation with `E = 1` and `G = 1`.
 */
import type { LoraAdapterConfig } from '../../types.js';
import { PROJECTIONS } from '../../types.js';

/**
 * Defaults: those of the training config's `lora` section (libs/contracts): r = 16, α = 32, no
 * dropout, all seven projections. (The MoE-PEFT template's budget-matched baseline, r = 80,
 * α = 160, dropout 0.05, is a choice for comparisons, not a default.)
 */
export function loraDefaults(): LoraAdapterConfig {
  return {
    method: 'lora',
    rank: 16,
    alpha: 32,
    useRslora: false,
    dropout: 0,
    targetModules: [...PROJECTIONS],
    seed: 0,
  };
}
