/**
 * Plain-LoRA fallbacks of a mixture, for runtimes that only take PEFT LoRA (docs/adapter-format.md):
 *
 * - expert split: every expert as its own PEFT LoRA directory (routing is lost);
 * - collapse: one PEFT LoRA of rank r from ΔW = Σ_e ḡ_e · s · B_e A_e per site (ḡ the calibrated
 *   mean gate of expert e; FlyLoRA: B · diag(s · usage) · A), truncated by SVD. ΔW is never formed:
 *   with B̃ = [ḡ_1 s B_1 … ḡ_E s B_E] = Q_B R_B and [A_1; …; A_E]ᵀ = Q_A R_A (thin QR), the core
 *   C = R_B R_Aᵀ is at most E·r square, C = U Σ Vᵀ, and ΔW = (Q_B U) Σ (Q_A V)ᵀ.
 */
import {
  mixtureLayers,
  modulePath,
  ADAPTER_PROJECTIONS,
  type LoraSpec,
  type MixtureSpec,
  type MolaSpec,
  type LoramoeSpec,
  type DynmoleSpec,
} from './adapter-layout.js';
import type { DType } from './dtype.js';
import { manifestJson, peftLoraFiles, writeExportDirectory, type CardSection, type ManifestInfo } from './export.js';
import { householderQR, jacobiSvd, multiply, transpose, zeros, type Matrix } from './linalg.js';
import type { AdapterTensors } from './mixture-export.js';

/** s = alpha / r, or alpha / sqrt(r) with rsLoRA. */
export function loraScale(alpha: number, rank: number, useRslora: boolean): number {
  return useRslora ? alpha / Math.sqrt(rank) : alpha / rank;
}

function tensorOf(tensors: AdapterTensors, name: string): { shape: number[]; data: Float32Array } {
  const t = tensors.get(name);
  if (!t) throw new RangeError(`the mixture has no tensor ${name}`);
  return t;
}

// ---------------------------------------------------------------------------------------------
// Expert split

export interface SplitExpert {
  expert: number;
  spec: LoraSpec;
  tensors: Map<string, { shape: number[]; data: Float32Array }>;
}

/**
 * Each expert of a routed mixture as a plain LoRA. With a layer-wise number of experts (MoLA),
 * expert e exists only in the layers that have more than e experts: its LoRA covers those layers
 * (PEFT's `layers_to_transform`). FlyLoRA has no routed experts to split (its experts are single
 * ranks of one LoRA): use the collapse.
 */
export function splitMixtureExperts(spec: MixtureSpec, tensors: AdapterTensors, dropout = 0): SplitExpert[] {
  if (spec.method === 'flylora')
    throw new RangeError(
      "FlyLoRA's experts are the single ranks of one LoRA, not separate adapters: use the collapse fallback",
    );
  const routed: MolaSpec | LoramoeSpec | DynmoleSpec = spec;
  const maxExperts = Math.max(...routed.numExperts);
  const out: SplitExpert[] = [];
  for (let e = 0; e < maxExperts; e++) {
    const layers = routed.numExperts.flatMap((n, l) => (n > e ? [l] : []));
    const expertTensors = new Map<string, { shape: number[]; data: Float32Array }>();
    for (const layer of layers)
      for (const projection of ADAPTER_PROJECTIONS) {
        if (!spec.targetModules.includes(projection)) continue;
        const path = modulePath(layer, projection);
        for (const ab of ['A', 'B'])
          expertTensors.set(`${path}.lora_${ab}.weight`, tensorOf(tensors, `${path}.experts.${e}.lora_${ab}.weight`));
      }
    out.push({
      expert: e,
      spec: {
        method: 'lora',
        rank: spec.rank,
        alpha: spec.alpha,
        useRslora: spec.useRslora,
        dropout,
        targetModules: [...spec.targetModules],
        layers: layers.length === routed.numExperts.length ? null : layers,
      },
      tensors: expertTensors,
    });
  }
  return out;
}

export interface ExportCommon {
  baseModel: string;
  dtype?: Extract<DType, 'F32' | 'BF16' | 'F16'>;
  manifest: Omit<ManifestInfo, 'baseModel' | 'method'>;
  card: Record<string, string | number>;
}

const ROUTING_LOST = [
  '**Routing is lost.** Each `expert-N/` directory is one expert of the mixture as a standalone PEFT LoRA:',
  'loaded alone, it applies that expert to every token with weight 1, which is not what the trained mixture',
  'computes (the router chose and weighted the experts per token). Use it to inspect or reuse single',
  'experts; for one adapter that approximates the mixture, export with `--fallback collapse`.',
];

/**
 * Writes `dir/expert-{e}/` (a complete PEFT LoRA export each, with its own manifest.json) for every
 * expert, plus a README.md and a manifest.json over everything at the top.
 */
export function writeExpertSplitExport(
  dir: string,
  mixture: ExportCommon & { adapter: MixtureSpec; tensors: AdapterTensors; dropout?: number },
): SplitExpert[] {
  const experts = splitMixtureExperts(mixture.adapter, mixture.tensors, mixture.dropout ?? 0);
  const files: Record<string, Uint8Array | string> = {};
  const info = { ...mixture.manifest, baseModel: mixture.baseModel, method: 'lora' };
  for (const expert of experts) {
    const layers = expert.spec.layers;
    const expertFiles = peftLoraFiles({
      baseModel: mixture.baseModel,
      rank: expert.spec.rank,
      alpha: expert.spec.alpha,
      dropout: expert.spec.dropout,
      useRslora: expert.spec.useRslora,
      targetModules: expert.spec.targetModules,
      layersToTransform: layers,
      tensors: expert.tensors,
      dtype: mixture.dtype ?? 'F32',
      manifest: mixture.manifest,
      card: { ...mixture.card, expert: expert.expert, source_method: mixture.adapter.method },
      title: `Expert ${expert.expert} of a ${mixture.adapter.method} mixture, as a LoRA adapter`,
      sections: [
        {
          title: 'Routing is lost',
          lines: [
            ...ROUTING_LOST.slice(1, 4),
            ...(layers ? ['', `This expert exists in layers ${layers.join(', ')} only (layers_to_transform).`] : []),
          ],
        },
      ],
    });
    for (const [name, content] of Object.entries(expertFiles)) files[`expert-${expert.expert}/${name}`] = content;
    files[`expert-${expert.expert}/manifest.json`] = manifestJson(expertFiles, info);
  }
  files['README.md'] = [
    `# Expert split of a ${mixture.adapter.method} mixture (Expertune)`,
    '',
    `- Base model: \`${mixture.baseModel}\``,
    `- Experts: ${experts.length} (directories ${experts.map((e) => `\`expert-${e.expert}/\``).join(', ')})`,
    '',
    ...ROUTING_LOST,
    '',
  ].join('\n');
  writeExportDirectory(dir, files, { ...info, method: `${mixture.adapter.method}-expert-split` });
  return experts;
}

// ---------------------------------------------------------------------------------------------
// Collapse

export interface CollapsedSite {
  module: string;
  /** Singular values of ΔW, descending (at most E·r of them). */
  singularValues: number[];
  /** ‖ΔW − ΔW_r‖_F / ‖ΔW‖_F (0 when ΔW = 0). */
  relativeError: number;
}

export interface CollapsedLora {
  spec: LoraSpec;
  tensors: Map<string, { shape: number[]; data: Float32Array }>;
  sites: CollapsedSite[];
}

/** Scaled blocks of one site: ΔW = Σ_j B[:, j] · A[j, :] over the stacked rank-1 pieces. */
interface SiteFactors {
  /** out×K column-major: the B columns, each scaled by its gate and s. */
  b: Matrix;
  /** in×K column-major: the A rows as columns. */
  at: Matrix;
}

function siteFactors(
  spec: MixtureSpec,
  tensors: AdapterTensors,
  path: string,
  gates: readonly number[],
  scale: number,
): SiteFactors {
  const r = spec.rank;
  const blocks: Array<{ a: Float32Array; b: Float32Array; gate: number }> = [];
  if (spec.method === 'flylora') {
    blocks.push({
      a: tensorOf(tensors, `${path}.lora_A.weight`).data,
      b: tensorOf(tensors, `${path}.lora_B.weight`).data,
      gate: NaN, // per rank, below
    });
  } else {
    gates.forEach((gate, e) =>
      blocks.push({
        a: tensorOf(tensors, `${path}.experts.${e}.lora_A.weight`).data,
        b: tensorOf(tensors, `${path}.experts.${e}.lora_B.weight`).data,
        gate,
      }),
    );
  }
  const inFeatures = blocks[0]!.a.length / r;
  const outFeatures = blocks[0]!.b.length / r;
  const k = blocks.length * r;
  const b = zeros(outFeatures, k);
  const at = zeros(inFeatures, k);
  blocks.forEach((block, e) => {
    for (let i = 0; i < r; i++) {
      const col = e * r + i;
      const weight = scale * (spec.method === 'flylora' ? gates[i]! : block.gate);
      for (let row = 0; row < outFeatures; row++) b.data[col * outFeatures + row] = weight * block.b[row * r + i]!;
      for (let j = 0; j < inFeatures; j++) at.data[col * inFeatures + j] = block.a[i * inFeatures + j]!;
    }
  });
  return { b, at };
}

/**
 * ΔW = b · atᵀ as (left, σ, right) with ΔW = left · diag(σ) · rightᵀ, via QR of each factor and an
 * SVD of the core; `keep` limits the singular vectors formed (all singular values are returned).
 */
export function lowRankSvd(b: Matrix, at: Matrix, keep = Infinity): { left: Matrix; s: Float64Array; right: Matrix } {
  const qb = householderQR(b);
  const qa = householderQR(at);
  const core = multiply(qb.r, transpose(qa.r));
  const svd = jacobiSvd(core);
  const k = Math.min(keep, svd.s.length);
  const firstColumns = (m: Matrix): Matrix => ({ rows: m.rows, cols: k, data: m.data.subarray(0, m.rows * k) });
  return { left: multiply(qb.q, firstColumns(svd.u)), s: svd.s, right: multiply(qa.q, firstColumns(svd.v)) };
}

/**
 * One LoRA of rank `rank` (default: the mixture's r) from the mixture weighted by `meanGates`
 * (module path → mean gate per expert; FlyLoRA: per rank, its usage), keeping `lora_alpha` and
 * rsLoRA so that the scale s' of the new rank applies: B' = Q_B U_r Σ_r^½ / s', A' = Σ_r^½ V_rᵀ Q_Aᵀ.
 */
export function collapseMixture(
  spec: MixtureSpec,
  tensors: AdapterTensors,
  meanGates: ReadonlyMap<string, readonly number[]>,
  options: { rank?: number; dropout?: number } = {},
): CollapsedLora {
  const rank = options.rank ?? spec.rank;
  if (!Number.isInteger(rank) || rank <= 0)
    throw new RangeError(`collapse rank must be a positive integer, got ${rank}`);
  const scale = loraScale(spec.alpha, spec.rank, spec.useRslora);
  const outScale = loraScale(spec.alpha, rank, spec.useRslora);
  const out = new Map<string, { shape: number[]; data: Float32Array }>();
  const sites: CollapsedSite[] = [];
  for (let layer = 0; layer < mixtureLayers(spec); layer++) {
    for (const projection of ADAPTER_PROJECTIONS) {
      if (!spec.targetModules.includes(projection)) continue;
      const path = modulePath(layer, projection);
      const gates = meanGates.get(path);
      const expected = spec.method === 'flylora' ? spec.rank : spec.numExperts[layer]!;
      if (!gates || gates.length !== expected)
        throw new RangeError(
          `mean gates of ${path}: expected ${expected} value(s), got ${gates ? gates.length : 'none'}`,
        );
      const { b, at } = siteFactors(spec, tensors, path, gates, scale);
      const { left, s, right } = lowRankSvd(b, at, rank);
      const m = b.rows;
      const n = at.rows;
      const bOut = new Float32Array(m * rank);
      const aOut = new Float32Array(rank * n);
      const kept = Math.min(rank, s.length);
      for (let j = 0; j < kept; j++) {
        const root = Math.sqrt(s[j]!);
        if (root === 0) continue;
        for (let i = 0; i < m; i++) bOut[i * rank + j] = (left.data[j * m + i]! * root) / outScale;
        for (let i = 0; i < n; i++) aOut[j * n + i] = right.data[j * n + i]! * root;
      }
      let total = 0;
      let tail = 0;
      s.forEach((sigma, j) => {
        total += sigma * sigma;
        if (j >= rank) tail += sigma * sigma;
      });
      out.set(`${path}.lora_A.weight`, { shape: [rank, n], data: aOut });
      out.set(`${path}.lora_B.weight`, { shape: [m, rank], data: bOut });
      sites.push({ module: path, singularValues: [...s], relativeError: total > 0 ? Math.sqrt(tail / total) : 0 });
    }
  }
  return {
    spec: {
      method: 'lora',
      rank,
      alpha: spec.alpha,
      useRslora: spec.useRslora,
      dropout: options.dropout ?? 0,
      targetModules: [...spec.targetModules],
      layers: null,
    },
    tensors: out,
    sites,
  };
}

/** The measured effect of the collapse on an evaluation set (the caller measures it). */
export interface CollapseEvaluation {
  /** Mean cross-entropy per token with the mixture. */
  mixtureLoss: number;
  /** The same with the collapsed LoRA. */
  collapsedLoss: number;
  /** Tokens the losses are over. */
  tokens: number;
  /** What the data was (a file name, "the training data", …). */
  data: string;
}

/** Writes the collapsed LoRA as a PEFT export whose README states the measured eval change. */
export function writeCollapsedLoraExport(
  dir: string,
  collapse: ExportCommon & { source: MixtureSpec; collapsed: CollapsedLora; evaluation: CollapseEvaluation },
): void {
  const { collapsed, evaluation, source } = collapse;
  const change = evaluation.collapsedLoss - evaluation.mixtureLoss;
  const errors = collapsed.sites.map((site) => site.relativeError);
  const worst = collapsed.sites.reduce((a, b) => (b.relativeError > a.relativeError ? b : a), collapsed.sites[0]!);
  const gateWord =
    source.method === 'flylora'
      ? 'usage of each rank (the fraction of tokens selecting it)'
      : 'mean gate of each expert';
  const sections: CardSection[] = [
    {
      title: 'Collapsed from a mixture',
      lines: [
        `This LoRA approximates a ${source.method} mixture by one low-rank update per projection: the experts are`,
        `weighted by the ${gateWord} on a calibration set (${evaluation.data}), summed, and truncated to rank`,
        `${collapsed.spec.rank} by SVD. Per-token routing is gone, so the model is not the trained mixture.`,
        '',
        '| evaluation | loss (mean cross-entropy per token) |',
        '|---|---|',
        `| mixture | ${evaluation.mixtureLoss.toFixed(6)} |`,
        `| collapsed LoRA | ${evaluation.collapsedLoss.toFixed(6)} |`,
        `| change | ${change >= 0 ? '+' : ''}${change.toFixed(6)} (${evaluation.mixtureLoss !== 0 ? ((100 * change) / evaluation.mixtureLoss).toFixed(2) : '—'} %) |`,
        '',
        `Measured on ${evaluation.tokens.toLocaleString('en-US')} tokens of ${evaluation.data}.`,
        `SVD truncation error ‖ΔW − ΔW_r‖/‖ΔW‖: mean ${(errors.reduce((a, b) => a + b, 0) / Math.max(1, errors.length)).toExponential(3)}, ` +
          `worst ${worst ? `${worst.relativeError.toExponential(3)} (${worst.module})` : '—'}.`,
      ],
    },
  ];
  const manifest = {
    ...collapse.manifest,
    finalMetrics: {
      ...collapse.manifest.finalMetrics,
      eval_loss_mixture: evaluation.mixtureLoss,
      eval_loss_collapsed: evaluation.collapsedLoss,
    },
  };
  const files = peftLoraFiles({
    baseModel: collapse.baseModel,
    rank: collapsed.spec.rank,
    alpha: collapsed.spec.alpha,
    dropout: collapsed.spec.dropout,
    useRslora: collapsed.spec.useRslora,
    targetModules: collapsed.spec.targetModules,
    tensors: collapsed.tensors,
    dtype: collapse.dtype ?? 'F32',
    manifest,
    card: { ...collapse.card, source_method: source.method, collapse_rank: collapsed.spec.rank },
    title: `LoRA collapsed from a ${source.method} mixture`,
    sections,
  });
  writeExportDirectory(dir, files, { ...manifest, baseModel: collapse.baseModel, method: 'lora' });
}
