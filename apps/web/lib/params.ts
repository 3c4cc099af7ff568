/**
 * Trainable-parameter counts as the engine computes them (libs/engine/src/methods/index.ts,
 * `trainableParametersPerLayer`), for Llama-shaped models, from the model's config.json and a
 * method section. Mirrored rather than imported: the engine pulls in tfjs and the native addon, which
 * no browser can load; tests/parameter-count.test.ts holds the two counts equal for every method.
 * Per adapted projection of shape [out, in]:
 *   lora     r·(in + out)
 *   mixtures E·r·(in + out) + E·in           (E experts with their own A and B, router [E, in])
 *   flylora  r·out                           (A is frozen and sparse, the top-k bias is not trained)
 */
import { PROJECTION_NAMES, resolveMolaExperts, type MolaNumExperts, type ProjectionName } from '@expertune/contracts';

/** The config.json fields the count needs (Hugging Face names). */
export interface LlamaShape {
  hidden_size: number;
  intermediate_size: number;
  num_hidden_layers: number;
  num_attention_heads: number;
  num_key_value_heads?: number;
  head_dim?: number;
  vocab_size?: number;
  tie_word_embeddings?: boolean;
  attention_bias?: boolean;
  mlp_bias?: boolean;
}

/** What the count reads of a method section; the API's sections satisfy it. */
export interface MethodSectionShape {
  rank?: number;
  target_modules?: readonly ProjectionName[];
  num_experts?: MolaNumExperts;
}

const positive = (x: unknown): x is number => typeof x === 'number' && Number.isInteger(x) && x > 0;

/** Reads the shape fields of a config.json, or explains which one is missing. */
export function llamaShape(config: Record<string, unknown> | undefined | null): LlamaShape | string {
  if (!config) return 'the model has no config';
  for (const key of ['hidden_size', 'intermediate_size', 'num_hidden_layers', 'num_attention_heads'] as const)
    if (!positive(config[key])) return `config.json has no positive integer ${key}`;
  return config as unknown as LlamaShape;
}

/** `[out, in]` of a projection (engine: projectionShape). */
export function projectionShape(model: LlamaShape, projection: ProjectionName): [number, number] {
  const d = model.hidden_size;
  const headDim = model.head_dim ?? d / model.num_attention_heads;
  const query = model.num_attention_heads * headDim;
  const keyValue = (model.num_key_value_heads ?? model.num_attention_heads) * headDim;
  const F = model.intermediate_size;
  switch (projection) {
    case 'q_proj':
      return [query, d];
    case 'k_proj':
    case 'v_proj':
      return [keyValue, d];
    case 'o_proj':
      return [d, query];
    case 'gate_proj':
    case 'up_proj':
      return [F, d];
    case 'down_proj':
      return [d, F];
  }
}

/** Every base-model parameter (what `full` trains): embeddings, layers, final norm, untied head. */
export function baseParameters(model: LlamaShape): number {
  const d = model.hidden_size;
  const vocab = model.vocab_size ?? 0;
  let perLayer = 2 * d; // the two RMSNorm weights
  for (const p of PROJECTION_NAMES) {
    const [out, inp] = projectionShape(model, p);
    perLayer += out * inp;
    const mlp = p === 'gate_proj' || p === 'up_proj' || p === 'down_proj';
    if (mlp ? model.mlp_bias : model.attention_bias) perLayer += out;
  }
  const head = model.tie_word_embeddings === false ? vocab * d : 0;
  return vocab * d + model.num_hidden_layers * perLayer + d + head;
}

export type CountMethod = 'lora' | 'full' | 'mola' | 'loramoe' | 'dynmole' | 'flylora';

/**
 * Trainable parameters of `method` with `section` on `model`. Throws a RangeError naming the field
 * when the section does not fit the model (a MoLA list with the wrong number of layers).
 */
export function trainableParameters(model: LlamaShape, method: CountMethod, section: MethodSectionShape = {}): number {
  if (method === 'full') return baseParameters(model);
  const L = model.num_hidden_layers;
  const r = section.rank;
  if (!positive(r)) throw new RangeError(`rank must be a positive integer, got ${String(r)}`);
  const targets = section.target_modules ?? PROJECTION_NAMES;
  let expertsPerLayer: number[] = [];
  switch (method) {
    case 'lora':
    case 'flylora':
      expertsPerLayer = new Array<number>(L).fill(1);
      break;
    case 'mola':
      try {
        expertsPerLayer = resolveMolaExperts(section.num_experts ?? { preset: 'inverted_triangle', scale: 1 }, L);
      } catch (error) {
        throw new RangeError(`num_experts ${(error as Error).message}`, { cause: error });
      }
      break;
    case 'loramoe':
    case 'dynmole': {
      const E = section.num_experts ?? 6;
      if (!positive(E)) throw new RangeError(`num_experts must be a positive integer, got ${JSON.stringify(E)}`);
      expertsPerLayer = new Array<number>(L).fill(E);
      break;
    }
  }
  let total = 0;
  for (let layer = 0; layer < L; layer++) {
    const E = expertsPerLayer[layer]!;
    for (const projection of targets) {
      const [out, inp] = projectionShape(model, projection);
      if (method === 'lora') total += r * (inp + out);
      else if (method === 'flylora') total += r * out;
      else total += E * r * (inp + out) + E * inp;
    }
  }
  return total;
}

/** 1234567 → "1,234,567" (fixed locale so server and browser render the same text). */
export function formatCount(n: number): string {
  return Math.round(n)
    .toString()
    .replace(/\B(?=(\d{3})+(?!\d))/g, ',');
}
