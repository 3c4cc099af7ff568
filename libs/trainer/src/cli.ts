/**
 * The `expertune` command line: logits, generate, train, eval, export, pretrain, init-model, info, data validate,
 * keys (API keys of the job API, in Postgres).
 * Errors print one clear line (no stack trace) and exit with status 1; usage errors with 2.
 */
import { existsSync } from 'node:fs';
import { resolve } from 'node:path';
import { parseArgs, type ParseArgsConfig } from 'node:util';

import { DATA_FORMATS, parsePretrainConfig, parseTrainConfig, type TrainConfig } from '@expertune/contracts';
import { blasHint, generate, nativeInfo } from '@expertune/engine';
import {
  byteLevelTokenizerConfig,
  byteLevelTokenizerJson,
  createTokenizer,
  loadTokenizer,
  readAdapterExport,
  loadModelConfig,
  writeSafetensors,
} from '@expertune/formats';

import { readConfigFile } from './config-file.js';
import { dataStats, formatProblems, readDataFile } from './data.js';
import { evaluate, type EvalResult } from './evaluate.js';
import { createKey, formatKeyTable, KeysArgumentError, listKeys, revokeKey } from './keys.js';
import { initRandomModel, MODEL_PRESETS, type ModelPreset } from './init-model.js';
import { exportCollapsedRun } from './collapse.js';
import { describeAdapterExport, loadModelWithAdapter } from './load.js';
import { ProgressLine } from './progress.js';
import { COLUMN_NAMES, type DataFormat } from './rows.js';
import { exportRun } from './run-state.js';
import { runPretraining } from './pretrain.js';
import { runTraining, type StartInfo, type TrainCallbacks } from './train.js';

class UsageError extends Error {}

const USAGE = `Usage: expertune <command> [options]

Commands:
  logits      --model DIR [--adapter DIR] --ids 1,2,3 --out FILE.safetensors
  generate    --model DIR [--adapter DIR] (--ids 1,2,3 | --prompt TEXT) --max-new-tokens N
              [--greedy | --temperature T --top-p P --seed S] [--json]
  train       --config FILE.yaml [--set key.path=value ...] [--resume RUN_DIR | --resume RUN_DIR/checkpoints/step-N]
  eval        --model DIR [--adapter DIR] --data FILE.jsonl [--max-seq-len N] [--format F]
              [--column OURS=THEIRS ...] [--max-answer-tokens N] [--max-generate-rows N] [--batch-size N]
  export      --run DIR --out DIR [--dtype F32|BF16|F16]
              [--fallback split | --fallback collapse [--data FILE.jsonl] [--rank R]]
  pretrain    --config RECIPE.yaml [--set key.path=value ...]   (docs/base-model.md)
  init-model  --out DIR [--preset ${Object.keys(MODEL_PRESETS).join('|')}] [--seed S]
  info        --model DIR [--adapter DIR]
  data validate FILE [--model DIR] [--max-seq-len N] [--format auto|text|alpaca|chat|prompt_completion|ids]
              [--column OURS=THEIRS ...] [--train-on-inputs]
  keys create --name NAME [--scopes read,launch] [--expires-in-days N]   (scopes: read, launch, admin)
  keys list
  keys revoke ID|PREFIX
              API keys of the job API in DATABASE_URL (default postgres://postgres@127.0.0.1:5432/expertune);
              pending migrations are applied first. The key is printed once, by create, and never again.

Common options: --engine native|tfjs (default native), --threads N (0 = all cores)`;

const COMMON: ParseArgsConfig['options'] = {
  engine: { type: 'string', default: 'native' },
  threads: { type: 'string', default: '0' },
  help: { type: 'boolean', short: 'h' },
};

function options(args: string[], spec: ParseArgsConfig['options']) {
  try {
    return parseArgs({ args, options: { ...COMMON, ...spec }, strict: true, allowPositionals: false }).values;
  } catch (error) {
    throw new UsageError((error as Error).message);
  }
}

function required(values: Record<string, unknown>, name: string): string {
  const value = values[name];
  if (typeof value !== 'string' || value === '') throw new UsageError(`--${name} is required`);
  return value;
}

function integer(value: unknown, name: string, min = 0): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n < min)
    throw new UsageError(`--${name} must be an integer >= ${min}, got ${String(value)}`);
  return n;
}

function parseIds(text: string): number[] {
  const ids = text.split(',').map((part) => part.trim());
  if (ids.some((id) => !/^\d+$/.test(id)))
    throw new UsageError(`--ids must be comma-separated token ids, got '${text}'`);
  return ids.map(Number);
}

function engineOf(values: Record<string, unknown>): 'native' | 'tfjs' {
  const engine = values.engine;
  if (engine !== 'native' && engine !== 'tfjs')
    throw new UsageError(`--engine must be native or tfjs, got '${String(engine)}'`);
  return engine;
}

/** The model (with --adapter when given) that --model, --engine and --threads name. */
function loadFromArgs(values: Record<string, unknown>) {
  return loadModelWithAdapter({
    model: required(values, 'model'),
    adapter: values.adapter as string | undefined,
    engine: engineOf(values),
    threads: integer(values.threads, 'threads'),
  });
}

async function commandLogits(args: string[]): Promise<void> {
  const v = options(args, {
    model: { type: 'string' },
    adapter: { type: 'string' },
    ids: { type: 'string' },
    out: { type: 'string' },
  });
  const ids = parseIds(required(v, 'ids'));
  const out = required(v, 'out');
  const model = await loadFromArgs(v);
  try {
    const logits = await model.logits({ ids: Int32Array.from(ids), batch: 1, seqLen: ids.length });
    writeSafetensors(out, { logits: { dtype: 'F32', shape: [ids.length, model.config.vocabSize], data: logits } });
    console.log(`wrote logits [${ids.length}, ${model.config.vocabSize}] to ${out}`);
  } finally {
    model.dispose();
  }
}

async function commandGenerate(args: string[]): Promise<void> {
  const v = options(args, {
    model: { type: 'string' },
    adapter: { type: 'string' },
    ids: { type: 'string' },
    prompt: { type: 'string' },
    'max-new-tokens': { type: 'string' },
    greedy: { type: 'boolean' },
    temperature: { type: 'string' },
    'top-p': { type: 'string' },
    seed: { type: 'string', default: '0' },
    json: { type: 'boolean' },
  });
  const modelDir = required(v, 'model');
  if ((v.ids === undefined) === (v.prompt === undefined)) throw new UsageError('give exactly one of --ids or --prompt');
  const sampling = v.temperature !== undefined || v['top-p'] !== undefined;
  if (v.greedy && sampling) throw new UsageError('--greedy cannot be combined with --temperature or --top-p');
  const tokenizer = existsSync(resolve(modelDir, 'tokenizer.json')) ? loadTokenizer(modelDir) : null;
  if (v.prompt !== undefined && !tokenizer)
    throw new UsageError(`--prompt needs ${modelDir}/tokenizer.json; use --ids instead`);
  const prompt =
    v.ids !== undefined ? parseIds(v.ids as string) : tokenizer!.encode(v.prompt as string, { addSpecialTokens: true });
  const model = await loadFromArgs(v);
  try {
    const ids = await generate(model, prompt, {
      maxNewTokens: integer(required(v, 'max-new-tokens'), 'max-new-tokens', 1),
      greedy: !sampling,
      temperature: v.temperature !== undefined ? Number(v.temperature) : 1,
      topP: v['top-p'] !== undefined ? Number(v['top-p']) : 1,
      seed: integer(v.seed, 'seed'),
      stopIds: model.config.eosTokenIds,
    });
    const text = tokenizer ? tokenizer.decode(ids, { skipSpecialTokens: true }) : null;
    if (v.json) console.log(JSON.stringify({ prompt_ids: prompt, ids, text }));
    else {
      console.log(`ids: ${ids.join(' ')}`);
      if (text !== null) console.log(`text: ${text}`);
    }
  } finally {
    model.dispose();
  }
}

async function commandTrain(args: string[]): Promise<void> {
  const v = options(args, {
    config: { type: 'string' },
    set: { type: 'string', multiple: true },
    resume: { type: 'string' },
  });
  const resume = v.resume as string | undefined;
  if (resume !== undefined && !existsSync(resume)) throw new Error(`--resume: ${resume} does not exist`);
  const file = required(v, 'config');
  const raw = readConfigFile(file, (v.set as string[] | undefined) ?? [], [
    'model',
    'output_dir',
    'data.train',
    'data.validation',
  ]);
  const config = parseTrainConfig(raw, file);

  const progress = new ProgressLine(process.stderr);
  await withInterrupt(progress, async (signal) => {
    const result = await runTraining(config, { signal, ...reportTraining(progress, config) }, { resume });
    progress.done();
    const first = result.losses[0];
    const lastLoss = result.losses[result.losses.length - 1];
    if (result.resumedFrom > 0) console.log(`resumed after step ${result.resumedFrom}`);
    console.log(
      `${result.stopped ? 'stopped' : 'finished'} after ${result.stepsCompleted}/${result.totalSteps} steps` +
        (first !== undefined && lastLoss !== undefined ? `: loss ${first.toFixed(4)} → ${lastLoss.toFixed(4)}` : ''),
    );
    console.log(`run saved in ${result.outputDir}; export in ${result.exportDir}`);
  });
}

/** Runs `body` with an AbortSignal that the first Ctrl-C raises (finish the step, checkpoint, stop). */
async function withInterrupt(progress: ProgressLine, body: (signal: AbortSignal) => Promise<void>): Promise<void> {
  const abort = new AbortController();
  const onSignal = () => {
    progress.note('stopping after this step (interrupt again to quit now)…');
    process.off('SIGINT', onSignal);
    abort.abort();
  };
  process.on('SIGINT', onSignal);
  try {
    await body(abort.signal);
  } finally {
    process.off('SIGINT', onSignal);
  }
}

/** The progress bar, eval lines and notes of a training run. */
function reportTraining(progress: ProgressLine, config: TrainConfig): TrainCallbacks {
  return {
    onStart: (info) => {
      progress.note(
        `${info.engine} engine · ${config.method} · ${info.trainableParameters.toLocaleString('en-US')} trainable parameters · ` +
          `${info.data.rows} rows, ${info.data.tokens} tokens (${info.data.truncated} truncated) · ${info.totalSteps} steps`,
      );
      if (info.badRows.length > 0)
        progress.note(
          `${info.data.badRows} bad row(s) in ${config.data.train} left out:\n${formatProblems(info.badRows)}`,
        );
      if (info.badValidationRows.length > 0)
        progress.note(`bad row(s) in ${config.data.validation} left out:\n${formatProblems(info.badValidationRows)}`);
      if (info.validationSequences > 0)
        progress.note(
          `${info.validationSequences} validation sequence(s) held out, evaluated ` +
            (config.training.eval_every > 0 ? `every ${config.training.eval_every} steps and ` : '') +
            'after the last step',
        );
      const perLayer = perLayerLine(info);
      if (perLayer) progress.note(perLayer);
      for (const note of info.notes) progress.note(`note: ${note}`);
    },
    onStep: (r) =>
      progress.update(
        r.step,
        r.totalSteps,
        `loss ${r.loss.toFixed(4)} · lr ${r.lr.toExponential(2)} · grad ${r.gradNorm.toFixed(3)} · ${Math.round(r.tokensPerSecond)} tok/s`,
        r.elapsedSeconds,
      ),
    onEval: (r) => progress.note(`eval at step ${r.step}/${r.totalSteps}: ${evalLine(r)}`),
    onEvent: (e) => {
      if (e.type === 'checkpoint') progress.note(`checkpoint after step ${e.step}: ${e.path}`);
    },
  };
}

async function commandPretrain(args: string[]): Promise<void> {
  const v = options(args, { config: { type: 'string' }, set: { type: 'string', multiple: true } });
  const file = required(v, 'config');
  const raw = readConfigFile(file, (v.set as string[] | undefined) ?? [], ['output_dir', 'model_dir', 'text']);
  const config = parsePretrainConfig(raw, file);
  for (const path of config.text) if (!existsSync(path)) throw new Error(`text file not found: ${path}`);

  const progress = new ProgressLine(process.stderr);
  await withInterrupt(progress, async (signal) => {
    const result = await runPretraining(config, {
      signal,
      onStart: (info) =>
        progress.note(
          `pretraining ${info.trainableParameters.toLocaleString('en-US')} parameters on ${info.data.rows} rows, ` +
            `${info.data.tokens} tokens (${info.data.truncated} truncated) · ${info.totalSteps} steps`,
        ),
      onStep: (r) =>
        progress.update(
          r.step,
          r.totalSteps,
          `loss ${r.loss.toFixed(4)} · lr ${r.lr.toExponential(2)} · ${Math.round(r.tokensPerSecond)} tok/s`,
          r.elapsedSeconds,
        ),
      onEval: (r) => progress.note(`eval at step ${r.step}/${r.totalSteps}: ${evalLine(r)}`),
    });
    progress.done();
    const losses = result.training.losses;
    console.log(
      `pretrained in ${Math.round(result.seconds)} s: loss ${losses[0]?.toFixed(4)} → ${losses[losses.length - 1]?.toFixed(4)}`,
    );
    console.log(`model saved in ${result.modelDir} (run in ${result.runDir})`);
  });
}

/** "loss 1.2345 · perplexity 3.44 · token accuracy 0.5123 · exact match 0.2500 (8 rows) · task: …" */
function evalLine(r: EvalResult): string {
  const parts = [
    `loss ${r.loss.toFixed(4)}`,
    `perplexity ${r.perplexity.toFixed(3)}`,
    `token accuracy ${r.token_accuracy.toFixed(4)}`,
  ];
  if (r.exact_match !== null) parts.push(`exact match ${r.exact_match.toFixed(4)} (${r.generated} rows)`);
  for (const [task, t] of Object.entries(r.per_task))
    parts.push(`${task} ${t.exact_match.toFixed(4)} (${t.rows} rows)`);
  return parts.join(' · ');
}

/** "trainable per layer: 0: 1,234 (2 experts) · 1: …" for an adapter run; null in full fine-tuning. */
function perLayerLine(info: StartInfo): string | null {
  const adapter = info.adapter;
  if (!adapter || info.trainablePerLayer.length === 0) return null;
  const experts = (layer: number): string => {
    if ('numExperts' in adapter) return ` (${adapter.numExperts[layer]} experts)`;
    return adapter.method === 'flylora' ? ` (${adapter.rank} rank-1 experts, top ${adapter.topK})` : '';
  };
  const cells = info.trainablePerLayer.map((n, layer) => `${layer}: ${n.toLocaleString('en-US')}${experts(layer)}`);
  return `trainable parameters per layer · ${cells.join(' · ')}`;
}

async function commandExport(args: string[]): Promise<void> {
  const v = options(args, {
    run: { type: 'string' },
    out: { type: 'string' },
    dtype: { type: 'string', default: 'F32' },
    fallback: { type: 'string' },
    data: { type: 'string' },
    rank: { type: 'string' },
  });
  const dtype = v.dtype;
  if (dtype !== 'F32' && dtype !== 'BF16' && dtype !== 'F16')
    throw new UsageError(`--dtype must be F32, BF16 or F16, got '${String(dtype)}'`);
  const fallback = v.fallback;
  if (fallback !== undefined && fallback !== 'split' && fallback !== 'collapse')
    throw new UsageError(`--fallback must be split or collapse, got '${String(fallback)}'`);
  if (fallback !== 'collapse' && (v.data !== undefined || v.rank !== undefined))
    throw new UsageError('--data and --rank go with --fallback collapse');
  const run = required(v, 'run');
  const out = required(v, 'out');
  if (fallback === 'collapse') {
    const result = await exportCollapsedRun(run, out, {
      dtype,
      engine: engineOf(v),
      threads: integer(v.threads, 'threads'),
      ...(v.data !== undefined ? { data: v.data as string } : {}),
      ...(v.rank !== undefined ? { rank: integer(v.rank, 'rank', 1) } : {}),
    });
    const change = result.collapsedLoss - result.mixtureLoss;
    console.log(
      `collapsed ${run} to a rank-${result.rank} LoRA in ${out}: eval loss ${result.mixtureLoss.toFixed(4)} (mixture) → ` +
        `${result.collapsedLoss.toFixed(4)} (collapsed), ${change >= 0 ? '+' : ''}${change.toFixed(4)} over ${result.tokens} tokens`,
    );
    return;
  }
  exportRun(run, out, dtype, fallback === 'split' ? { fallback } : {});
  console.log(`exported ${run} to ${out}${fallback === 'split' ? ' (one PEFT LoRA per expert; routing is lost)' : ''}`);
}

async function commandInitModel(args: string[]): Promise<void> {
  const v = options(args, {
    out: { type: 'string' },
    preset: { type: 'string', default: 'tiny' },
    seed: { type: 'string', default: '0' },
  });
  const preset = v.preset as string;
  if (!(preset in MODEL_PRESETS))
    throw new UsageError(`--preset must be one of ${Object.keys(MODEL_PRESETS).join(', ')}`);
  const out = required(v, 'out');
  initRandomModel(out, preset as ModelPreset, integer(v.seed, 'seed'));
  console.log(`wrote a randomly initialised '${preset}' Llama model to ${out}`);
}

async function commandInfo(args: string[]): Promise<void> {
  const v = options(args, { model: { type: 'string' }, adapter: { type: 'string' } });
  const model = await loadFromArgs(v);
  try {
    const adapter =
      typeof v.adapter === 'string'
        ? describeAdapterExport(readAdapterExport(v.adapter, { model: model.config }))
        : undefined;
    const info = {
      config: model.config,
      parameters: model.parameterCount('base'),
      engine: model.backend.engineName,
      ...(adapter ? { adapter } : {}),
    };
    console.log(
      JSON.stringify(
        model.backend.engineName === 'native' ? { ...info, native: { ...nativeInfo(), hint: blasHint() } } : info,
        null,
        2,
      ),
    );
  } finally {
    model.dispose();
  }
}

/** --format and --column ... of `data validate` and `eval`. */
function formatAndColumns(v: Record<string, unknown>): { format: DataFormat; columns: Record<string, string> } {
  const format = v.format as string;
  if (!(DATA_FORMATS as readonly string[]).includes(format))
    throw new UsageError(`--format must be one of ${DATA_FORMATS.join(', ')}, got '${format}'`);
  const columns: Record<string, string> = {};
  for (const entry of (v.column as string[] | undefined) ?? []) {
    const [ours, theirs] = entry.split('=');
    if (!ours || !theirs || !(COLUMN_NAMES as readonly string[]).includes(ours))
      throw new UsageError(`--column expects OURS=THEIRS with OURS one of ${COLUMN_NAMES.join(', ')}, got '${entry}'`);
    columns[ours] = theirs;
  }
  return { format: format as DataFormat, columns };
}

/** `expertune eval`: the training loop's evaluation metrics for any model/adapter on a file, as JSON. */
async function commandEval(args: string[]): Promise<void> {
  const v = options(args, {
    model: { type: 'string' },
    adapter: { type: 'string' },
    data: { type: 'string' },
    'max-seq-len': { type: 'string', default: '512' },
    format: { type: 'string', default: 'auto' },
    column: { type: 'string', multiple: true },
    'max-answer-tokens': { type: 'string', default: '16' },
    'max-generate-rows': { type: 'string', default: '64' },
    'batch-size': { type: 'string', default: '8' },
  });
  const modelDir = required(v, 'model');
  const file = required(v, 'data');
  const { format, columns } = formatAndColumns(v);
  const maxSeqLen = integer(v['max-seq-len'], 'max-seq-len', 1);
  const maxAnswerTokens = integer(v['max-answer-tokens'], 'max-answer-tokens');
  const maxGenerateRows = integer(v['max-generate-rows'], 'max-generate-rows');
  const batchSize = integer(v['batch-size'], 'batch-size', 1);
  const tokenizer = existsSync(resolve(modelDir, 'tokenizer.json')) ? loadTokenizer(modelDir) : null;
  const model = await loadFromArgs(v);
  try {
    const read = readDataFile(file, {
      tokenizer,
      vocabSize: model.config.vocabSize,
      maxSeqLen,
      addEos: true,
      format,
      columns,
    });
    const badRows = new Set(read.problems.map((p) => p.line)).size;
    if (badRows > 0) console.error(`${badRows} bad row(s) in ${file} left out:\n${formatProblems(read.problems)}`);
    if (read.rows.length === 0) throw new Error(`${file} has no good rows`);
    const result = await evaluate(model, read.rows, {
      padId: tokenizer?.eosTokenId ?? model.config.eosTokenIds[0] ?? 0,
      batchSize,
      maxAnswerTokens,
      maxGenerateRows,
      stopIds: model.config.eosTokenIds,
    });
    console.log(JSON.stringify({ ...result, bad_rows: badRows }));
  } finally {
    model.dispose();
  }
}

async function commandData(args: string[]): Promise<void> {
  const [sub, file, ...rest] = args;
  if (sub !== 'validate') throw new UsageError(`unknown data command '${sub ?? ''}' (only: validate)`);
  if (!file || file.startsWith('--')) throw new UsageError('data validate needs a FILE');
  const v = options(rest, {
    model: { type: 'string' },
    'max-seq-len': { type: 'string', default: '512' },
    format: { type: 'string', default: 'auto' },
    column: { type: 'string', multiple: true },
    'train-on-inputs': { type: 'boolean' },
  });
  const { format, columns } = formatAndColumns(v);
  const modelDir = v.model as string | undefined;
  // Without a model: the byte-level tokenizer of init-model, and any non-negative id.
  const tokenizer = modelDir
    ? loadTokenizer(modelDir)
    : createTokenizer(byteLevelTokenizerJson(), byteLevelTokenizerConfig());
  const vocabSize = modelDir ? loadModelConfig(modelDir).vocabSize : undefined;
  const maxSeqLen = integer(v['max-seq-len'], 'max-seq-len', 1);
  const read = readDataFile(file, {
    tokenizer,
    ...(vocabSize !== undefined ? { vocabSize } : {}),
    maxSeqLen,
    addEos: true,
    format,
    columns,
    trainOnInputs: v['train-on-inputs'] === true,
  });
  const stats = dataStats(read);
  console.log(`${file}: ${stats.rows} good row(s), ${stats.badRows} bad row(s)`);
  if (read.problems.length > 0) console.log(formatProblems(read.problems));
  console.log(
    `tokens: ${stats.tokens} (${stats.lossTokens} with loss) · row length p50 ${stats.lengths.p50} · p90 ${stats.lengths.p90} · ` +
      `p99 ${stats.lengths.p99} · max ${stats.lengths.max} · ${stats.truncated} truncated at max_seq_len ${maxSeqLen}` +
      (modelDir ? '' : ' (byte-level tokenizer: pass --model DIR for the model’s own)'),
  );
  const tasks = Object.entries(stats.tasks).map(([task, n]) => `${task === '' ? '(no task)' : task}: ${n}`);
  if (tasks.length > 0) console.log(`rows per task: ${tasks.join(' · ')}`);
  if (read.problems.length > 0 || stats.rows === 0) throw new Error(`${file} has bad rows`);
}

async function commandKeys(args: string[]): Promise<void> {
  const [sub, ...rest] = args;
  try {
    if (sub === 'create') {
      const v = options(rest, {
        name: { type: 'string' },
        scopes: { type: 'string', default: 'read,launch' },
        'expires-in-days': { type: 'string' },
      });
      const expiresInDays = v['expires-in-days'];
      await createKey({
        name: required(v, 'name'),
        scopes: String(v.scopes).split(','),
        ...(expiresInDays !== undefined ? { expiresInDays: integer(expiresInDays, 'expires-in-days', 1) } : {}),
      });
    } else if (sub === 'list') {
      options(rest, {});
      console.log(formatKeyTable(await listKeys()));
    } else if (sub === 'revoke') {
      const [target, ...more] = rest;
      if (!target || target.startsWith('--')) throw new UsageError('keys revoke needs an ID or PREFIX');
      options(more, {});
      await revokeKey(target);
    } else {
      throw new UsageError(`unknown keys command '${sub ?? ''}' (create, list or revoke)`);
    }
  } catch (error) {
    if (error instanceof KeysArgumentError) throw new UsageError(error.message);
    throw error;
  }
}

const COMMANDS: Record<string, (args: string[]) => Promise<void>> = {
  logits: commandLogits,
  generate: commandGenerate,
  train: commandTrain,
  eval: commandEval,
  export: commandExport,
  'init-model': commandInitModel,
  pretrain: commandPretrain,
  info: commandInfo,
  data: commandData,
  keys: commandKeys,
};

export async function main(argv: string[]): Promise<number> {
  const [command, ...rest] = argv;
  if (!command || command === '--help' || command === '-h' || rest.includes('--help') || rest.includes('-h')) {
    console.log(USAGE);
    return command ? 0 : 2;
  }
  const run = COMMANDS[command];
  if (!run) {
    console.error(`error: unknown command '${command}'\n\n${USAGE}`);
    return 2;
  }
  try {
    await run(rest);
    return 0;
  } catch (error) {
    if (error instanceof UsageError) {
      console.error(`error: ${error.message}\n\n${USAGE}`);
      return 2;
    }
    console.error(`error: ${(error as Error).message}`);
    if (process.env.EXPERTUNE_DEBUG) console.error((error as Error).stack);
    return 1;
  }
}
