/**
 * Mixture-of-LoRA-experts exports (`format: "expertune-mole"`, docs/adapter-format.md) and one
 * reader for any adapter export, PEFT LoRA or mixture: it returns the adapter's method, its
 * configuration and its tensors under the engine's names, after checking every key and shape.
 */
import { existsSync } from 'node:fs';
import { join } from 'node:path';

import {
  ADAPTER_PROJECTIONS,
  MIXTURE_EXPORT_METHODS,
  adapterParameterCounts,
  expectedAdapterTensors,
  expertsPerLayer,
  mixtureLayers,
  projectionDims,
  validateAdapterTensors,
  type AdapterProjection,
  type AdapterSpec,
  type LoraSpec,
  type MixtureExportMethod,
  type MixtureSpec,
} from './adapter-layout.js';
import type { DType } from './dtype.js';
import { CheckpointError } from './errors.js';
import {
  PEFT_PREFIX,
  modelCard,
  readAdapterConfigJson,
  readPeftLoraAdapter,
  writeExportDirectory,
  type CardSection,
  type ManifestInfo,
} from './export.js';
import type { LlamaConfig } from './model-config.js';
import { SafetensorsFile, serializeSafetensors, type TensorsToWrite } from './safetensors.js';

export const MIXTURE_FORMAT = 'expertune-mole';
export const MIXTURE_FORMAT_VERSION = 1;

/** Tensors under engine names, with their shapes. */
export type AdapterTensors = ReadonlyMap<string, { shape: number[]; data: Float32Array }>;

/** The `routing` object of adapter_config.json for a mixture (docs/adapter-format.md). */
export function mixtureRouting(spec: MixtureSpec): Record<string, unknown> {
  switch (spec.method) {
    case 'mola':
      return { top_k: [...spec.topK] };
    case 'loramoe':
      return { groups: spec.groups };
    case 'dynmole':
      return {
        entropy_index: spec.entropyIndex,
        entropy_threshold: spec.entropyThreshold,
        top_p: spec.topP,
        keep_top_k: spec.keepTopK,
        eps: spec.entropyEps,
      };
    case 'flylora':
      return { top_k: spec.topK, select: spec.select };
  }
}

/** adapter_config.json of a mixture export, exactly the contract's fields. */
export function mixtureAdapterConfig(spec: MixtureSpec, baseModel: string): Record<string, unknown> {
  return {
    format: MIXTURE_FORMAT,
    format_version: MIXTURE_FORMAT_VERSION,
    peft_type: 'MOLE',
    task_type: 'CAUSAL_LM',
    method: spec.method,
    base_model_name_or_path: baseModel,
    target_modules: [...spec.targetModules],
    r: spec.rank,
    lora_alpha: spec.alpha,
    use_rslora: spec.useRslora,
    num_experts: expertsPerLayer(spec),
    routing: mixtureRouting(spec),
  };
}

export interface MixtureExport {
  baseModel: string;
  adapter: MixtureSpec;
  /** Every tensor of the adapter (FlyLoRA's frozen A and bias included), under engine names. */
  tensors: AdapterTensors;
  dtype?: Extract<DType, 'F32' | 'BF16' | 'F16'>;
  manifest: Omit<ManifestInfo, 'baseModel' | 'method'>;
  /** Hyperparameter rows of the model card. */
  card: Record<string, string | number>;
  sections?: CardSection[];
}

const METHOD_TITLES: Record<MixtureExportMethod, string> = {
  mola: 'MoLA (mixture of LoRA experts, top-k routing)',
  loramoe: 'LoRAMoE (mixture of LoRA experts, dense routing)',
  dynmole: 'DynMoLE (mixture of LoRA experts, entropy-gated hybrid routing)',
  flylora: 'FlyLoRA (implicit rank-wise routing)',
};

function routingLines(spec: MixtureSpec): string[] {
  switch (spec.method) {
    case 'mola':
      return [
        '`p = softmax(router · x)`; the top-k experts of `p` are kept and their weights renormalised to sum 1.',
        `Experts per layer: ${spec.numExperts.join(', ')}. Top-k per layer: ${spec.topK.join(', ')}.`,
      ];
    case 'loramoe':
      return ['Dense: every expert contributes with weight `p = softmax(router · x)`.'];
    case 'dynmole':
      return [
        `If the normalised Tsallis entropy (q = ${spec.entropyIndex}, ε = ${spec.entropyEps}) of \`p\` exceeds ` +
          `${spec.entropyThreshold}, every expert contributes with weight \`p\`; otherwise the experts whose ` +
          `cumulative probability stays ≤ ${spec.topP}, and at least ${spec.keepTopK}, not renormalised.`,
      ];
    case 'flylora':
      return [
        `\`a = A x\` with a frozen sparse random A; the top ${spec.topK} ranks of ` +
          `${spec.select === 'signed' ? '`a + topk_bias`' : '`|a + topk_bias|`'} are kept: \`y = W x + s · B (a ⊙ mask)\`.`,
      ];
  }
}

/** Writes a mixture export: adapter_config.json, adapter_model.safetensors, README.md, manifest.json. */
export function writeMixtureExport(dir: string, mixture: MixtureExport): void {
  const spec = mixture.adapter;
  const numLayers = mixtureLayers(spec);
  const shapes = new Map([...mixture.tensors].map(([name, t]) => [name, t.shape] as const));
  validateAdapterTensors(spec, numLayers, shapes, { source: `${spec.method} export` });
  for (const [name, t] of mixture.tensors)
    if (t.data.length !== t.shape.reduce((a, b) => a * b, 1))
      throw new RangeError(`${name}: ${t.data.length} values for shape [${t.shape.join(', ')}]`);
  const dtype = mixture.dtype ?? 'F32';
  const tensors: TensorsToWrite = new Map(
    [...mixture.tensors].map(([name, t]) => [PEFT_PREFIX + name, { dtype, shape: t.shape, data: t.data }] as const),
  );
  const counts = adapterParameterCounts(spec, numLayers, shapes);
  const experts = expertsPerLayer(spec);
  const sections: CardSection[] = [
    {
      title: 'Routing',
      lines: [
        ...routingLines(spec),
        '',
        'This is the `expertune-mole` layout (format_version 1): it needs a runtime that follows the',
        'Expertune adapter-format page. For runtimes that only take plain LoRA, export with',
        '`expertune export --fallback split|collapse`.',
      ],
    },
    {
      title: 'Parameters per layer',
      lines: [
        '| layer | experts | trainable | frozen |',
        '|---|---|---|---|',
        ...counts.perLayer.map(
          (row) =>
            `| ${row.layer} | ${experts[row.layer]} | ${row.trainable.toLocaleString('en-US')} | ${row.frozen.toLocaleString('en-US')} |`,
        ),
      ],
    },
    ...(mixture.sections ?? []),
  ];
  writeExportDirectory(
    dir,
    {
      'adapter_config.json': JSON.stringify(mixtureAdapterConfig(spec, mixture.baseModel), null, 2) + '\n',
      'adapter_model.safetensors': serializeSafetensors(tensors, { format: 'pt' }),
      'README.md': modelCard({
        title: METHOD_TITLES[spec.method],
        baseModel: mixture.baseModel,
        method: spec.method,
        trainable: counts.trainable,
        card: mixture.card,
        metrics: mixture.manifest.finalMetrics,
        sections,
      }),
    },
    { ...mixture.manifest, baseModel: mixture.baseModel, method: spec.method },
  );
}

// ---------------------------------------------------------------------------------------------
// Reading any export

export interface LoadedAdapterExport {
  method: AdapterSpec['method'];
  /** The adapter's configuration (what inference needs). */
  spec: AdapterSpec;
  baseModel: string | null;
  /** Decoder layers the adapter is for (the model's when given; else from the config or the keys). */
  numLayers: number;
  /** Tensors under engine names, checked against `spec`. */
  tensors: Map<string, Float32Array>;
  shapes: Map<string, number[]>;
}

export interface ReadAdapterOptions {
  /** The base model: shapes are then checked against its projections, and the layer count against its depth. */
  model?: LlamaConfig;
}

/** Reads an adapter export directory: a PEFT LoRA (`peft_type: "LORA"`) or a mixture (`format: "expertune-mole"`). */
export function readAdapterExport(dir: string, options: ReadAdapterOptions = {}): LoadedAdapterExport {
  const configPath = join(dir, 'adapter_config.json');
  if (!existsSync(configPath)) {
    const hint = existsSync(join(dir, 'config.json'))
      ? ' (this looks like a full model directory: pass it as --model instead)'
      : '';
    throw new CheckpointError(`no adapter_config.json: not an adapter export${hint}`, dir);
  }
  const config = readAdapterConfigJson(dir);
  if (config.format === MIXTURE_FORMAT || config.peft_type === 'MOLE') return readMixture(dir, config, options);
  if (config.peft_type === 'LORA') return readLora(dir, options);
  throw new CheckpointError(
    `adapter_config.json: peft_type is ${JSON.stringify(config.peft_type)}: expected "LORA" (PEFT LoRA) or "MOLE" (an ${MIXTURE_FORMAT} mixture)`,
    dir,
  );
}

function readLora(dir: string, options: ReadAdapterOptions): LoadedAdapterExport {
  const lora = readPeftLoraAdapter(dir);
  const unknown = lora.targetModules.filter((m) => !(ADAPTER_PROJECTIONS as readonly string[]).includes(m));
  if (unknown.length > 0)
    throw new CheckpointError(
      `adapter_config.json: target_modules ${unknown.join(', ')} are not Llama projections (${ADAPTER_PROJECTIONS.join(', ')})`,
      dir,
    );
  // A loop, not Math.max(...): a header may name more tensors than a call takes arguments.
  let deepest = 0;
  for (const name of lora.shapes.keys())
    deepest = Math.max(deepest, Number(/^model\.layers\.(\d+)\./.exec(name)?.[1] ?? -1) + 1);
  for (const layer of lora.layers ?? []) deepest = Math.max(deepest, layer + 1);
  const numLayers = options.model?.numLayers ?? deepest;
  if (lora.layers && lora.layers.some((l) => l >= numLayers))
    throw new CheckpointError(
      `adapter_config.json: layers_to_transform ${JSON.stringify(lora.layers)} goes beyond the model's ${numLayers} layers`,
      dir,
    );
  const spec: LoraSpec = {
    method: 'lora',
    rank: lora.rank,
    alpha: lora.alpha,
    useRslora: lora.useRslora,
    dropout: lora.dropout,
    targetModules: lora.targetModules as AdapterProjection[],
    layers: lora.layers,
  };
  validateAdapterTensors(spec, numLayers, lora.shapes, {
    model: options.model,
    source: join(dir, 'adapter_model.safetensors'),
    keyPrefix: PEFT_PREFIX,
  });
  return { method: 'lora', spec, baseModel: lora.baseModel, numLayers, tensors: lora.tensors, shapes: lora.shapes };
}

function readMixture(dir: string, config: Record<string, unknown>, options: ReadAdapterOptions): LoadedAdapterExport {
  const fail = (message: string): never => {
    throw new CheckpointError(`adapter_config.json: ${message}`, dir);
  };
  const show = (value: unknown) => JSON.stringify(value);
  if (config.format !== MIXTURE_FORMAT) fail(`format is ${show(config.format)}, expected "${MIXTURE_FORMAT}"`);
  if (config.format_version !== MIXTURE_FORMAT_VERSION)
    fail(
      typeof config.format_version === 'number' && config.format_version > MIXTURE_FORMAT_VERSION
        ? `format_version ${config.format_version} is newer than this reader (${MIXTURE_FORMAT_VERSION}): update Expertune`
        : `format_version is ${show(config.format_version)}, expected ${MIXTURE_FORMAT_VERSION}`,
    );
  if (config.peft_type !== 'MOLE') fail(`peft_type is ${show(config.peft_type)}, expected "MOLE"`);
  const method = config.method as MixtureExportMethod;
  if (!(MIXTURE_EXPORT_METHODS as readonly unknown[]).includes(method))
    fail(`method is ${show(config.method)}, expected one of ${MIXTURE_EXPORT_METHODS.join(', ')}`);
  const isPositiveInt = (v: unknown): v is number => typeof v === 'number' && Number.isInteger(v) && v > 0;
  const rank = config.r;
  if (!isPositiveInt(rank)) fail(`r must be a positive integer, got ${show(rank)}`);
  const alpha = config.lora_alpha;
  if (typeof alpha !== 'number' || !(alpha > 0)) fail(`lora_alpha must be a positive number, got ${show(alpha)}`);
  if (typeof config.use_rslora !== 'boolean') fail(`use_rslora must be true or false, got ${show(config.use_rslora)}`);
  const targets = config.target_modules;
  if (
    !Array.isArray(targets) ||
    targets.length === 0 ||
    targets.some((t) => !(ADAPTER_PROJECTIONS as readonly unknown[]).includes(t))
  )
    fail(`target_modules must be a non-empty list of ${ADAPTER_PROJECTIONS.join(', ')}, got ${show(targets)}`);
  const numExperts = config.num_experts;
  if (!Array.isArray(numExperts) || numExperts.length === 0 || !numExperts.every(isPositiveInt))
    fail(`num_experts must be a non-empty list of positive integers (one per layer), got ${show(numExperts)}`);
  const experts = numExperts as number[];
  const numLayers = experts.length;
  if (options.model && options.model.numLayers !== numLayers)
    fail(`num_experts has ${numLayers} entries but the model has ${options.model.numLayers} layers`);
  const routing = config.routing;
  if (typeof routing !== 'object' || routing === null || Array.isArray(routing))
    fail(`routing must be an object, got ${show(routing)}`);
  const route = routing as Record<string, unknown>;
  const number = (key: string, ok: (v: number) => boolean, what: string): number => {
    const value = route[key];
    if (typeof value !== 'number' || !ok(value)) fail(`routing.${key} must be ${what}, got ${show(value)}`);
    return value as number;
  };
  const common = {
    rank: rank as number,
    alpha: alpha as number,
    useRslora: config.use_rslora as boolean,
    targetModules: ADAPTER_PROJECTIONS.filter((p) => (targets as unknown[]).includes(p)),
  };
  let spec: MixtureSpec;
  switch (method) {
    case 'mola': {
      const topK = route.top_k;
      if (!Array.isArray(topK) || topK.length !== numLayers || !topK.every(isPositiveInt))
        fail(`routing.top_k must list one positive integer per layer (${numLayers}), got ${show(topK)}`);
      const bad = (topK as number[]).findIndex((k, l) => k > experts[l]!);
      if (bad >= 0)
        fail(`routing.top_k[${bad}] = ${(topK as number[])[bad]} exceeds num_experts[${bad}] = ${experts[bad]}`);
      spec = { method, ...common, numExperts: experts, topK: topK as number[] };
      break;
    }
    case 'loramoe':
      spec = {
        method,
        ...common,
        numExperts: experts,
        groups: number('groups', (v) => isPositiveInt(v), 'a positive integer'),
      };
      break;
    case 'dynmole': {
      const keepTopK = number('keep_top_k', (v) => isPositiveInt(v), 'a positive integer');
      spec = {
        method,
        ...common,
        numExperts: experts,
        entropyIndex: number('entropy_index', (v) => v > 0 && v <= 2, 'in (0, 2]'),
        entropyThreshold: number('entropy_threshold', (v) => v >= 0, 'a number >= 0'),
        topP: number('top_p', (v) => v > 0 && v <= 1, 'in (0, 1]'),
        keepTopK,
        entropyEps: number('eps', (v) => v >= 0, 'a number >= 0'),
      };
      const few = experts.findIndex((e) => e < keepTopK);
      if (few >= 0) fail(`routing.keep_top_k = ${keepTopK} exceeds num_experts[${few}] = ${experts[few]}`);
      break;
    }
    case 'flylora': {
      const topK = number('top_k', (v) => isPositiveInt(v) && v <= (rank as number), `an integer in [1, r = ${rank}]`);
      const select = route.select;
      if (select !== 'signed' && select !== 'abs')
        fail(`routing.select must be "signed" or "abs", got ${show(select)}`);
      const other = experts.findIndex((e) => e !== rank);
      if (other >= 0)
        fail(`num_experts[${other}] is ${experts[other]}: FlyLoRA has r = ${rank} rank-1 experts in every layer`);
      spec = { method, ...common, numLayers, topK, select: select as 'signed' | 'abs' };
      break;
    }
  }
  const weightsPath = join(dir, 'adapter_model.safetensors');
  if (!existsSync(weightsPath)) throw new CheckpointError('no adapter_model.safetensors', dir);
  const file = SafetensorsFile.open(weightsPath);
  try {
    const shapes = new Map<string, number[]>();
    for (const key of file.names()) {
      if (!key.startsWith(PEFT_PREFIX))
        throw new CheckpointError(`tensor ${key} lacks the "${PEFT_PREFIX}" prefix`, weightsPath);
      shapes.set(key.slice(PEFT_PREFIX.length), [...file.info(key).shape]);
    }
    validateAdapterTensors(spec!, numLayers, shapes, {
      model: options.model,
      source: weightsPath,
      keyPrefix: PEFT_PREFIX,
    });
    const tensors = new Map<string, Float32Array>();
    for (const name of shapes.keys()) tensors.set(name, file.readFloat32(PEFT_PREFIX + name));
    return {
      method,
      spec: spec!,
      baseModel: typeof config.base_model_name_or_path === 'string' ? config.base_model_name_or_path : null,
      numLayers,
      tensors,
      shapes,
    };
  } finally {
    file.close();
  }
}

/**
 * The tensors of a LoRA over every layer of `model`: layers a PEFT `layers_to_transform` left out
 * get zero A and B (no change to the model there), so an engine that adapts every layer can load it.
 */
export function loraTensorsForAllLayers(loaded: LoadedAdapterExport, model: LlamaConfig): Map<string, Float32Array> {
  const spec = loaded.spec;
  if (spec.method !== 'lora' || spec.layers === null) return loaded.tensors;
  const tensors = new Map(loaded.tensors);
  const full: LoraSpec = { ...spec, layers: null };
  for (const [name, info] of expectedAdapterTensors(full, model.numLayers)) {
    if (tensors.has(name)) continue;
    const dims = projectionDims(model, info.projection);
    const size = info.shape.reduce<number>((n, d) => n * (typeof d === 'number' ? d : dims[d]), 1);
    tensors.set(name, new Float32Array(size));
  }
  return tensors;
}
