/**
 * The tensors of an adapter, by method (docs/adapter-format.md): which names an export of a given
 * configuration holds and with which shapes, and a check of a set of tensors against that list.
 * Names here are the engine's (`model.layers.3.mlp.down_proj.lora_A.weight`); files add PEFT's
 * `base_model.model.` prefix.
 */
import { CheckpointError } from './errors.js';
import type { LlamaConfig } from './model-config.js';

/** The 7 projections an adapter can target, in the engines' projection-index order. */
export const ADAPTER_PROJECTIONS = [
  'q_proj',
  'k_proj',
  'v_proj',
  'o_proj',
  'gate_proj',
  'up_proj',
  'down_proj',
] as const;
export type AdapterProjection = (typeof ADAPTER_PROJECTIONS)[number];

export const MIXTURE_EXPORT_METHODS = ['mola', 'loramoe', 'dynmole', 'flylora'] as const;
export type MixtureExportMethod = (typeof MIXTURE_EXPORT_METHODS)[number];
export type ExportMethod = 'lora' | MixtureExportMethod;

/** The module path of a projection: `model.layers.{l}.self_attn.q_proj`, `model.layers.{l}.mlp.down_proj`. */
export function modulePath(layer: number, projection: AdapterProjection): string {
  const group =
    projection === 'gate_proj' || projection === 'up_proj' || projection === 'down_proj' ? 'mlp' : 'self_attn';
  return `model.layers.${layer}.${group}.${projection}`;
}

/** `in_features` and `out_features` of a projection of a model. */
export function projectionDims(config: LlamaConfig, projection: AdapterProjection): { in: number; out: number } {
  const { hiddenSize: d, intermediateSize: F, numHeads: H, numKvHeads: KV, headDim: hd } = config;
  switch (projection) {
    case 'q_proj':
      return { in: d, out: H * hd };
    case 'k_proj':
    case 'v_proj':
      return { in: d, out: KV * hd };
    case 'o_proj':
      return { in: H * hd, out: d };
    case 'gate_proj':
    case 'up_proj':
      return { in: d, out: F };
    case 'down_proj':
      return { in: F, out: d };
  }
}

interface SpecCommon {
  /** Rank of each expert (of the whole adapter for lora and flylora). */
  rank: number;
  alpha: number;
  useRslora: boolean;
  targetModules: AdapterProjection[];
}

/** A plain (PEFT) LoRA. */
export interface LoraSpec extends SpecCommon {
  method: 'lora';
  dropout: number;
  /** Decoder layers the adapter covers (PEFT's `layers_to_transform`); null: every layer. */
  layers: number[] | null;
}
export interface MolaSpec extends SpecCommon {
  method: 'mola';
  /** Experts per decoder layer. */
  numExperts: number[];
  /** Experts kept per token, per layer. */
  topK: number[];
}
export interface LoramoeSpec extends SpecCommon {
  method: 'loramoe';
  numExperts: number[];
  /** Expert groups of the localized balancing constraint (always 2; informational at inference). */
  groups: number;
}
export interface DynmoleSpec extends SpecCommon {
  method: 'dynmole';
  numExperts: number[];
  topP: number;
  keepTopK: number;
  entropyIndex: number;
  entropyThreshold: number;
  entropyEps: number;
}
export interface FlyloraSpec extends SpecCommon {
  method: 'flylora';
  /** Decoder layers (every layer carries `rank` rank-1 experts). */
  numLayers: number;
  topK: number;
  select: 'signed' | 'abs';
}
export type MixtureSpec = MolaSpec | LoramoeSpec | DynmoleSpec | FlyloraSpec;
/** What an adapter export describes: its method and everything inference needs to apply it. */
export type AdapterSpec = LoraSpec | MixtureSpec;

/** Decoder layers of a mixture. */
export function mixtureLayers(spec: MixtureSpec): number {
  return spec.method === 'flylora' ? spec.numLayers : spec.numExperts.length;
}

/** Experts of each layer (FlyLoRA: its rank-1 experts, `rank` per layer). */
export function expertsPerLayer(spec: MixtureSpec): number[] {
  return spec.method === 'flylora' ? Array.from({ length: spec.numLayers }, () => spec.rank) : [...spec.numExperts];
}

/** One dimension of an expected shape: a number, or the module's `in` / `out` features. */
export type ShapeDim = number | 'in' | 'out';

export interface ExpectedTensor {
  shape: ShapeDim[];
  /** Updated by the optimizer (false: FlyLoRA's frozen A and its bias). */
  trainable: boolean;
  layer: number;
  projection: AdapterProjection;
}

/**
 * Every tensor of an adapter: name → expected shape. A LoRA covers `spec.layers` (or every layer of
 * `numLayers` when null); a mixture covers all of its layers.
 */
export function expectedAdapterTensors(spec: AdapterSpec, numLayers: number): Map<string, ExpectedTensor> {
  const out = new Map<string, ExpectedTensor>();
  const r = spec.rank;
  const layers =
    spec.method === 'lora'
      ? (spec.layers ?? Array.from({ length: numLayers }, (_, l) => l))
      : Array.from({ length: mixtureLayers(spec) }, (_, l) => l);
  for (const layer of layers) {
    for (const projection of ADAPTER_PROJECTIONS) {
      if (!spec.targetModules.includes(projection)) continue;
      const path = modulePath(layer, projection);
      const add = (suffix: string, shape: ShapeDim[], trainable = true) =>
        out.set(`${path}.${suffix}`, { shape, trainable, layer, projection });
      if (spec.method === 'lora') {
        add('lora_A.weight', [r, 'in']);
        add('lora_B.weight', ['out', r]);
      } else if (spec.method === 'flylora') {
        add('lora_A.weight', [r, 'in'], false);
        add('lora_B.weight', ['out', r]);
        add('topk_bias', [r], false);
      } else {
        const experts = spec.numExperts[layer]!;
        add('router.weight', [experts, 'in']);
        for (let e = 0; e < experts; e++) {
          add(`experts.${e}.lora_A.weight`, [r, 'in']);
          add(`experts.${e}.lora_B.weight`, ['out', r]);
        }
      }
    }
  }
  return out;
}

/** How many tensors `expectedAdapterTensors` lists, counted without listing them. */
export function expectedAdapterTensorCount(spec: AdapterSpec, numLayers: number): number {
  const targets = spec.targetModules.length;
  if (spec.method === 'lora') return (spec.layers?.length ?? numLayers) * targets * 2;
  if (spec.method === 'flylora') return spec.numLayers * targets * 3;
  return spec.numExperts.reduce((sum, experts) => sum + (2 * experts + 1) * targets, 0);
}

function listSome(items: string[], limit = 5): string {
  const shown = items.slice(0, limit).join(', ');
  return items.length > limit ? `${shown} and ${items.length - limit} more` : shown;
}

/**
 * Checks `shapes` (tensor name → shape) against the adapter's expected tensors: no name missing,
 * none unexpected, every shape right. `in`/`out` come from `model` when given; otherwise they must
 * agree between the tensors of each module. Throws a CheckpointError naming the problems.
 */
export function validateAdapterTensors(
  spec: AdapterSpec,
  numLayers: number,
  shapes: ReadonlyMap<string, readonly number[]>,
  options: { model?: LlamaConfig | undefined; source?: string | undefined; keyPrefix?: string } = {},
): void {
  // A config declaring a billion experts (or layers) must not be listed tensor by tensor: when
  // it describes far more tensors than the file holds, say so by count.
  const count = expectedAdapterTensorCount(spec, numLayers);
  if (count > 2 * shapes.size + 1_000) {
    throw new CheckpointError(
      `adapter tensors do not match the adapter config: a ${spec.method} adapter of ${numLayers} layers on ` +
        `${spec.targetModules.join(', ')} has ${count} tensors, the file holds ${shapes.size}`,
      options.source,
    );
  }
  const expected = expectedAdapterTensors(spec, numLayers);
  const prefix = options.keyPrefix ?? '';
  const missing = [...expected.keys()].filter((name) => !shapes.has(name));
  const unexpected = [...shapes.keys()].filter((name) => !expected.has(name));
  const problems: string[] = [];
  if (missing.length > 0)
    problems.push(`${missing.length} tensor(s) missing: ${listSome(missing.map((n) => prefix + n))}`);
  if (unexpected.length > 0)
    problems.push(
      `${unexpected.length} unexpected tensor(s) for a ${spec.method} adapter of ${numLayers} layers on ` +
        `${spec.targetModules.join(', ')}: ${listSome(unexpected.map((n) => prefix + n))}`,
    );
  // Bind in/out per module: from the model, else from the first tensor that shows them.
  const bound = new Map<string, { in?: number; out?: number }>();
  for (const [name, info] of expected) {
    const actual = shapes.get(name);
    if (!actual) continue;
    const key = modulePath(info.layer, info.projection);
    let dims = bound.get(key);
    if (!dims) {
      dims = options.model ? projectionDims(options.model, info.projection) : {};
      bound.set(key, dims);
    }
    const want = info.shape.map((dim, i) => {
      if (typeof dim === 'number') return dim;
      if (dims[dim] === undefined && actual.length === info.shape.length) dims[dim] = actual[i]!;
      return dims[dim] ?? -1;
    });
    if (actual.length !== want.length || actual.some((v, i) => v !== want[i]))
      problems.push(
        `${prefix}${name} has shape [${actual.join(', ')}], expected [${info.shape
          .map((dim, i) => (typeof dim === 'number' ? dim : `${want[i]} (${dim}_features)`))
          .join(', ')}]`,
      );
  }
  if (problems.length > 0) {
    const shown = problems.slice(0, 8);
    if (problems.length > 8) shown.push(`… and ${problems.length - 8} more shape problem(s)`);
    throw new CheckpointError(
      `adapter tensors do not match the adapter config:\n  ${shown.join('\n  ')}`,
      options.source,
    );
  }
}

/** Trainable and frozen parameter counts of an adapter, in total and per layer. */
export function adapterParameterCounts(
  spec: AdapterSpec,
  numLayers: number,
  shapes: ReadonlyMap<string, readonly number[]>,
): { trainable: number; frozen: number; perLayer: Array<{ layer: number; trainable: number; frozen: number }> } {
  const perLayer = new Map<number, { layer: number; trainable: number; frozen: number }>();
  let trainable = 0;
  let frozen = 0;
  for (const [name, info] of expectedAdapterTensors(spec, numLayers)) {
    const shape = shapes.get(name);
    if (!shape) continue;
    const size = shape.reduce((a, b) => a * b, 1);
    const row = perLayer.get(info.layer) ?? { layer: info.layer, trainable: 0, frozen: 0 };
    perLayer.set(info.layer, row);
    if (info.trainable) {
      row.trainable += size;
      trainable += size;
    } else {
      row.frozen += size;
      frozen += size;
    }
  }
  return { trainable, frozen, perLayer: [...perLayer.values()].sort((a, b) => a.layer - b.layer) };
}
