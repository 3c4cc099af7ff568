/**
 * `expertune export --fallback collapse`: one PEFT LoRA from a mixture run. The mixture runs over
 * the calibration data once (the engine accumulates each site's mean gate per expert, FlyLoRA's
 * rank usage, and the mean cross-entropy is measured on the way); the experts are collapsed by
 * their mean gates and truncated by SVD; the collapsed LoRA runs over the same data; the export's
 * README states both losses.
 */
import { existsSync } from 'node:fs';
import { join, resolve } from 'node:path';

import { Engine, type EngineName, type Model, type TokenBatch } from '@expertune/engine';
import {
  collapseMixture,
  loadTokenizer,
  modulePath,
  writeCollapsedLoraExport,
  type CollapseEvaluation,
  type MixtureSpec,
} from '@expertune/formats';

import { adapterConfigFromSpec } from './adapter-config.js';
import { makeBatch } from './batches.js';
import { dataOptionsFor, loadTrainingData } from './data.js';
import { scoreLogits } from './evaluate.js';
import { readRunRecord, readRunTensors, runCard, runExportSpec, runAdapter } from './run-state.js';

export interface CollapseOptions {
  dtype?: 'F32' | 'BF16' | 'F16';
  engine?: EngineName;
  threads?: number;
  /** Calibration and evaluation data (JSONL, like training data); default: the run's training data. */
  data?: string;
  /** Rank of the collapsed LoRA; default: the mixture's r. */
  rank?: number;
  /** Rows per forward pass; default: the run's micro-batch size. */
  batchSize?: number;
}

export interface CollapseResult extends CollapseEvaluation {
  rank: number;
  /** Mean and worst relative SVD truncation error over the sites. */
  meanTruncationError: number;
  worstTruncationError: number;
}

/** Σ over counted positions of the cross-entropy of `logits` `[B·T, V]` against `targets`, and their count. */
export function crossEntropySum(
  logits: Float32Array,
  targets: Int32Array,
  vocab: number,
): { sum: number; count: number } {
  const { sum, count } = scoreLogits(logits, targets, vocab);
  return { sum, count };
}

async function meanLoss(
  model: Model,
  batches: ReadonlyArray<TokenBatch & { targets: Int32Array; tokenMask?: Uint8Array }>,
  collectRouting: boolean,
): Promise<{ loss: number; tokens: number }> {
  let sum = 0;
  let tokens = 0;
  for (const batch of batches) {
    const logits = await model.logits(
      { ids: batch.ids, batch: batch.batch, seqLen: batch.seqLen },
      collectRouting ? { collectRouting: true, ...(batch.tokenMask ? { tokenMask: batch.tokenMask } : {}) } : {},
    );
    const ce = crossEntropySum(logits, batch.targets, model.config.vocabSize);
    sum += ce.sum;
    tokens += ce.count;
  }
  if (tokens === 0) throw new Error('the calibration data has no token to predict');
  return { loss: sum / tokens, tokens };
}

/** Writes the collapse fallback of a mixture run to `outDir`; returns the measured losses. */
export async function exportCollapsedRun(
  runDir: string,
  outDir: string,
  options: CollapseOptions = {},
): Promise<CollapseResult> {
  const record = readRunRecord(runDir);
  const tensors = readRunTensors(runDir);
  const spec = runExportSpec(record, tensors);
  if (!spec || spec.method === 'lora')
    throw new Error(`--fallback collapse needs a mixture run; this run's method is ${record.method}`);
  const mixture: MixtureSpec = spec;
  const dataFile = resolve(options.data ?? record.config.data.train);
  const dataLabel = options.data ? dataFile : `the training data (${dataFile})`;
  const engine = Engine.create(options.engine ?? 'native', { threads: options.threads ?? 0 });
  const model = await engine.loadModel(record.base_model);
  try {
    const tokenizer = existsSync(join(record.base_model, 'tokenizer.json')) ? loadTokenizer(record.base_model) : null;
    // Calibrate on every good row of the file: no held-out split, no packing.
    const dataOptions = dataOptionsFor(record.config.data, record.config.seed, tokenizer, model.config.vocabSize);
    delete dataOptions.validation;
    const data = loadTrainingData(dataFile, { ...dataOptions, packing: false, validationFraction: 0 });
    const batchSize = options.batchSize ?? record.config.training.micro_batch_size;
    const padId = tokenizer?.eosTokenId ?? model.config.eosTokenIds[0] ?? 0;
    const batches = [];
    for (let i = 0; i < data.sequences.length; i += batchSize)
      batches.push(makeBatch(data.sequences.slice(i, i + batchSize), padId));

    // The mixture: loss, and the mean gates of every site over the real tokens.
    model.attachAdapter(adapterConfigFromSpec(mixture)).load(new Map([...tensors].map(([n, t]) => [n, t.data])));
    model.routingStats(); // start from empty statistics
    const before = await meanLoss(model, batches, true);
    const gates = new Map<string, number[]>();
    for (const site of model.routingStats()) gates.set(modulePath(site.layer, site.projection), site.meanGate);

    const collapsed = collapseMixture(mixture, tensors, gates, {
      ...(options.rank !== undefined ? { rank: options.rank } : {}),
      dropout: runAdapter(record)?.dropout ?? 0,
    });
    model
      .attachAdapter(adapterConfigFromSpec(collapsed.spec))
      .load(new Map([...collapsed.tensors].map(([n, t]) => [n, t.data])));
    const after = await meanLoss(model, batches, false);
    const evaluation: CollapseEvaluation = {
      mixtureLoss: before.loss,
      collapsedLoss: after.loss,
      tokens: before.tokens,
      data: dataLabel,
    };
    writeCollapsedLoraExport(resolve(outDir), {
      baseModel: record.base_model,
      source: mixture,
      collapsed,
      evaluation,
      dtype: options.dtype ?? 'F32',
      manifest: { runId: record.run_id, datasetHash: record.dataset_hash, finalMetrics: record.final_metrics },
      card: runCard(record),
    });
    const errors = collapsed.sites.map((s) => s.relativeError);
    return {
      ...evaluation,
      rank: collapsed.spec.rank,
      meanTruncationError: errors.reduce((a, b) => a + b, 0) / Math.max(1, errors.length),
      worstTruncationError: Math.max(0, ...errors),
    };
  } finally {
    model.dispose();
  }
}
