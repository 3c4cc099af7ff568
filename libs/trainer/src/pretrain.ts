/**
 * `expertune pretrain`: a small Llama trained from scratch on plain text. The text becomes
 * paragraph rows, a byte-level BPE is learned from them, a seeded model is initialised, and the
 * whole model trains (method `full`, packed rows) with the ordinary training loop, so metrics,
 * evaluation, checkpoints and resume work as in fine-tuning. The result is a Hugging Face model
 * directory plus `pretrain.json` (the recipe, the corpus, the loss curve) and a model card.
 */
import { copyFileSync, mkdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { cpus } from 'node:os';
import { basename, join, relative, resolve } from 'node:path';

import { parseTrainConfig, type PretrainConfig } from '@expertune/contracts';
import { byteLevelTokenizerConfig } from '@expertune/formats';

import { trainByteLevelBpe } from './bpe.js';
import { writeRandomModel } from './init-model.js';
import { runTraining, type TrainCallbacks, type TrainResult } from './train.js';

/** Splits `limit`-bounded pieces of `text` at the last `separator` that fits. */
function splitLong(text: string, limit: number, separator: RegExp): string[] {
  const pieces = text.match(separator) ?? [text];
  const out: string[] = [];
  let current = '';
  for (const piece of pieces) {
    if (current !== '' && current.length + piece.length > limit) {
      out.push(current.trim());
      current = '';
    }
    current += piece;
  }
  if (current.trim() !== '') out.push(current.trim());
  return out;
}

/**
 * Plain text → training rows: blank lines separate paragraphs, whitespace inside one collapses to
 * single spaces, and a paragraph longer than `chunkChars` is cut at sentence ends (a sentence that
 * is itself too long, at spaces), so rows are whole sentences wherever possible.
 */
export function paragraphRows(text: string, chunkChars: number): string[] {
  const rows: string[] = [];
  for (const block of text.split(/\n[ \t]*\n/)) {
    const paragraph = block.replace(/\s+/g, ' ').trim();
    if (paragraph === '') continue;
    if (paragraph.length <= chunkChars) {
      rows.push(paragraph);
      continue;
    }
    for (const chunk of splitLong(paragraph, chunkChars, /[^.!?]+(?:[.!?]+["'’”)\]]*\s*|$)/g)) {
      if (chunk.length <= chunkChars) rows.push(chunk);
      else rows.push(...splitLong(chunk, chunkChars, /\S+\s*/g));
    }
  }
  return rows;
}

export interface PretrainResult {
  modelDir: string;
  runDir: string;
  corpus: {
    files: { name: string; characters: number; rows: number }[];
    rows: number;
    characters: number;
    tokens: number;
  };
  training: TrainResult;
  seconds: number;
}

/** One point of the loss curve kept in pretrain.json (at most ~100 of them). */
interface CurvePoint {
  step: number;
  loss: number;
}

function lossCurve(losses: readonly number[], points = 100): CurvePoint[] {
  const every = Math.max(1, Math.ceil(losses.length / points));
  const curve: CurvePoint[] = [];
  // Each point is the mean over its window, so the curve is not one noisy micro-batch.
  for (let start = 0; start < losses.length; start += every) {
    const window = losses.slice(start, start + every);
    curve.push({ step: start + window.length, loss: window.reduce((a, b) => a + b, 0) / window.length });
  }
  return curve;
}

export async function runPretraining(config: PretrainConfig, callbacks: TrainCallbacks = {}): Promise<PretrainResult> {
  const started = performance.now();
  const runDir = resolve(config.output_dir);
  const modelDir = resolve(config.model_dir ?? join(runDir, 'model'));
  mkdirSync(runDir, { recursive: true });

  const files = config.text.map((path) => {
    const rows = paragraphRows(readFileSync(resolve(path), 'utf8'), config.data.chunk_chars);
    return { name: basename(path), path: resolve(path), rows };
  });
  const rows = files.flatMap((file) => file.rows);
  if (rows.length === 0) throw new Error(`pretrain: no text in ${config.text.join(', ')}`);
  const corpusPath = join(runDir, 'corpus.jsonl');
  writeFileSync(corpusPath, rows.map((text) => JSON.stringify({ text })).join('\n') + '\n');

  const [bos, eos] = config.tokenizer.special_tokens as [string, string];
  const tokenizerJson = trainByteLevelBpe(rows, {
    vocabSize: config.tokenizer.vocab_size,
    specialTokens: config.tokenizer.special_tokens,
    minFrequency: config.tokenizer.min_frequency,
  });
  const initDir = join(runDir, 'init');
  writeRandomModel(initDir, {
    shape: {
      hidden_size: config.model.hidden_size,
      intermediate_size: config.model.intermediate_size,
      num_hidden_layers: config.model.num_hidden_layers,
      num_attention_heads: config.model.num_attention_heads,
      num_key_value_heads: config.model.num_key_value_heads,
      max_position_embeddings: config.model.max_position_embeddings,
      rope_theta: config.model.rope_theta,
      rms_norm_eps: config.model.rms_norm_eps,
      tie_word_embeddings: config.model.tie_word_embeddings,
    },
    tokenizerJson,
    tokenizerConfig: byteLevelTokenizerConfig({ bosToken: bos, eosToken: eos }),
    seed: config.seed,
    weightStd: config.model.init_std,
  });

  const trainConfig = parseTrainConfig({
    model: initDir,
    method: 'full',
    seed: config.seed,
    threads: config.threads,
    data: {
      train: corpusPath,
      format: 'text',
      packing: true,
      max_seq_len: config.data.max_seq_len,
      validation_fraction: config.data.validation_fraction,
    },
    training: config.training,
    eval: { ...config.eval, max_answer_tokens: 0 },
    optimizer: config.optimizer,
    schedule: config.schedule,
    output_dir: runDir,
    export_dtype: config.export_dtype,
  });
  let tokens = 0;
  const training = await runTraining(trainConfig, {
    ...callbacks,
    onStart: (info) => {
      tokens = info.data.tokens;
      callbacks.onStart?.(info);
    },
  });
  const seconds = (performance.now() - started) / 1000;

  const corpus = {
    files: files.map((file) => ({
      name: file.name,
      characters: file.rows.reduce((sum, row) => sum + row.length, 0),
      rows: file.rows.length,
    })),
    rows: rows.length,
    characters: rows.reduce((sum, row) => sum + row.length, 0),
    tokens,
  };
  const finalMetrics = JSON.parse(readFileSync(join(runDir, 'run.json'), 'utf8')).final_metrics as Record<
    string,
    number
  >;
  // Paths relative to the model directory, so a committed model does not carry this machine's paths.
  const portable = (path: string) => relative(modelDir, path) || '.';
  const record = {
    recipe: {
      ...config,
      text: config.text.map(portable),
      output_dir: portable(runDir),
      model_dir: '.',
    },
    corpus,
    training: {
      steps: training.stepsCompleted,
      tokens_per_step: config.training.micro_batch_size * config.training.grad_accumulation * config.data.max_seq_len,
      final_metrics: finalMetrics,
      loss_curve: lossCurve(training.losses),
    },
    machine: { cpus: cpus().length, cpu: cpus()[0]?.model ?? 'unknown', node: process.version },
    seconds: Math.round(seconds),
  };

  // The model directory is replaced whole: built next to it, then renamed into place.
  const staging = `${modelDir}.partial`;
  rmSync(staging, { recursive: true, force: true });
  mkdirSync(staging, { recursive: true });
  for (const name of ['config.json', 'model.safetensors', 'tokenizer.json', 'tokenizer_config.json'])
    copyFileSync(join(training.exportDir, name), join(staging, name));
  writeFileSync(join(staging, 'pretrain.json'), JSON.stringify(record, null, 2) + '\n');
  writeFileSync(join(staging, 'README.md'), pretrainCard(record));
  rmSync(modelDir, { recursive: true, force: true });
  renameSync(staging, modelDir);
  return { modelDir, runDir, corpus, training, seconds };
}

function pretrainCard(record: {
  recipe: PretrainConfig;
  corpus: PretrainResult['corpus'];
  training: { steps: number; tokens_per_step: number; final_metrics: Record<string, number>; loss_curve: CurvePoint[] };
  machine: { cpus: number; cpu: string };
  seconds: number;
}): string {
  const m = record.recipe.model;
  const metric = (name: string) => record.training.final_metrics[name]?.toFixed(4) ?? 'n/a';
  return [
    '# A small Llama pretrained by `expertune pretrain`',
    '',
    `Llama architecture: hidden ${m.hidden_size}, ${m.num_hidden_layers} layers, ${m.num_attention_heads} heads ` +
      `(${m.num_key_value_heads} KV), MLP ${m.intermediate_size}, vocabulary ${record.recipe.tokenizer.vocab_size} ` +
      `(byte-level BPE learned from the corpus), ${m.tie_word_embeddings ? 'tied' : 'separate'} embeddings, ` +
      `weights in ${record.recipe.export_dtype}.`,
    '',
    `Trained from scratch on ${record.corpus.characters.toLocaleString('en-US')} characters ` +
      `(${record.corpus.rows.toLocaleString('en-US')} paragraph rows, ${record.corpus.tokens.toLocaleString('en-US')} tokens) from ` +
      record.corpus.files.map((f) => f.name).join(', ') +
      `: ${record.training.steps} steps of ${record.training.tokens_per_step} tokens, ` +
      `${Math.round(record.seconds / 60)} min on ${record.machine.cpus} × ${record.machine.cpu}.`,
    '',
    `Final train loss ${metric('train_loss')}, held-out loss ${metric('eval_loss')} ` +
      `(perplexity ${metric('eval_perplexity')}).`,
    '',
    'The recipe, the corpus and the loss curve are in `pretrain.json`.',
    '',
  ].join('\n');
}
