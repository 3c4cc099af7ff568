/** Mixture-adapter fixtures shared by the export and fallback tests: a tiny model and one spec per method. */
import type { MixtureSpec } from './adapter-layout.js';
import { parseModelConfig } from './model-config.js';

// d = 8, F = 12, 2 heads of 4 (q: 8 out), 1 KV head (k, v: 4 out), 2 layers.
export const model = parseModelConfig({
  architectures: ['LlamaForCausalLM'],
  model_type: 'llama',
  vocab_size: 16,
  hidden_size: 8,
  intermediate_size: 12,
  num_hidden_layers: 2,
  num_attention_heads: 2,
  num_key_value_heads: 1,
});
const DIMS: Record<string, [number, number]> = {
  q_proj: [8, 8],
  k_proj: [8, 4],
  v_proj: [8, 4],
  o_proj: [8, 8],
  gate_proj: [8, 12],
  up_proj: [8, 12],
  down_proj: [12, 8],
};
const GROUP: Record<string, string> = {
  q_proj: 'self_attn',
  k_proj: 'self_attn',
  v_proj: 'self_attn',
  o_proj: 'self_attn',
  gate_proj: 'mlp',
  up_proj: 'mlp',
  down_proj: 'mlp',
};

/** The contract's tensor table, written out: key (with the PEFT prefix) → shape. */
export function contractKeys(spec: MixtureSpec, layers: number): Map<string, number[]> {
  const keys = new Map<string, number[]>();
  for (let l = 0; l < layers; l++)
    for (const t of spec.targetModules) {
      const [inF, outF] = DIMS[t]!;
      const P = `base_model.model.model.layers.${l}.${GROUP[t]}.${t}`;
      if (spec.method === 'flylora') {
        keys.set(`${P}.lora_A.weight`, [spec.rank, inF]);
        keys.set(`${P}.lora_B.weight`, [outF, spec.rank]);
        keys.set(`${P}.topk_bias`, [spec.rank]);
      } else {
        const E = spec.numExperts[l]!;
        keys.set(`${P}.router.weight`, [E, inF]);
        for (let e = 0; e < E; e++) {
          keys.set(`${P}.experts.${e}.lora_A.weight`, [spec.rank, inF]);
          keys.set(`${P}.experts.${e}.lora_B.weight`, [outF, spec.rank]);
        }
      }
    }
  return keys;
}

/** Tensors for a spec under engine names, values a deterministic function of name and index. */
export function tensorsFor(spec: MixtureSpec, layers = 2): Map<string, { shape: number[]; data: Float32Array }> {
  const out = new Map<string, { shape: number[]; data: Float32Array }>();
  let salt = 1;
  for (const [key, shape] of contractKeys(spec, layers)) {
    const size = shape.reduce((a, b) => a * b, 1);
    const s = salt++;
    out.set(key.slice('base_model.model.'.length), {
      shape,
      data: Float32Array.from({ length: size }, (_, i) => {
        const x = Math.sin(s * 12.9898 + i * 78.233) * 43758.5453; // a hash: full-rank values in [-0.5, 0.5)
        return Math.fround(x - Math.floor(x) - 0.5);
      }),
    });
  }
  return out;
}

const common = { rank: 2, alpha: 4, useRslora: false } as const;
export const SPECS: MixtureSpec[] = [
  { method: 'mola', ...common, targetModules: ['q_proj', 'v_proj', 'down_proj'], numExperts: [2, 4], topK: [1, 2] },
  { method: 'loramoe', ...common, targetModules: ['gate_proj', 'up_proj', 'down_proj'], numExperts: [4, 4], groups: 2 },
  {
    method: 'dynmole',
    ...common,
    useRslora: true,
    targetModules: ['gate_proj', 'up_proj', 'down_proj'],
    numExperts: [3, 3],
    topP: 0.75,
    keepTopK: 2,
    entropyIndex: 1.1,
    entropyThreshold: 0.9,
    entropyEps: 1e-5,
  },
  {
    method: 'flylora',
    rank: 4,
    alpha: 8,
    useRslora: false,
    targetModules: ['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj'],
    numLayers: 2,
    topK: 2,
    select: 'abs',
  },
];
