/**
 * Plain LoRA (docs/engine.md "LoRA"): one `A` `[r, in]` and one `B` `[out, r]` per site, the
 * mixture computation with `E = 1` and `G = 1`.
 */
import type { LoraAdapterConfig } from '../../types.js';
import { PROJECTIONS } from '../../types.js';

/**
 * Defaults: the MoE-PEFT/DynMoLE LoRA template (../shared/docs/methods.md §2), the baseline whose
 * parameter budget the mixtures match: r = 80, α = 160, dropout 0.05, all seven projections.
 */
export function loraDefaults(): LoraAdapterConfig {
  return {
    method: 'lora',
    rank: 80,
    alpha: 160,
    useRslora: false,
    dropout: 0.05,
    targetModules: [...PROJECTIONS],
    seed: 0,
  };
}
