#!/usr/bin/env node
// Trainer CPU benchmark: tokens/s of `expertune train` end to end against the engine's bare step
// rate on the same model, adapter and batch shape, measured in one run:
//   (a) the real CLI (`expertune train --config …`, LoRA r 16 on all 7 projections, micro-batch 4,
//       max_seq_len 512, packing on, checkpoints and evaluation off): per-step tokens/s from its
//       metrics.jsonl (elapsed_s), and the wall clock of the whole command, start-up included;
//   (b) bare: the same model directory, config, adapter and optimizer, the same micro-batches built
//       up front, `Optimizer.step` in a loop (no data pipeline, no file writes).
// The overhead is 1 − (train tokens/s ÷ bare tokens/s) over the steps after the warm-up; target ≤ 5 %.
//
//   node bench/trainer-cpu/run.mjs [--threads N] [--steps N] [--warmup N] [--small]
//                                  [--wait-idle S] [--no-build] [--out FILE]
//
// The model is `expertune init-model --preset base` (hidden 512, 8 layers, 8/4 heads, intermediate
// 1408, the byte-level tokenizer) written to a temporary directory with the dataset; --small uses
// the `tiny` preset. See bench/README.md.
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { fileURLToPath, pathToFileURL } from 'node:url';
import * as common from '../lib/common.mjs';

const SELF = fileURLToPath(import.meta.url);
const CLI = join(common.root, 'libs', 'trainer', 'bin', 'expertune.js');
const TRAINER_DIST = join(common.root, 'libs', 'trainer', 'dist', 'index.js');
const CONTRACTS_DIST = join(common.root, 'libs', 'contracts', 'dist', 'index.js');
const TARGET_OVERHEAD = 0.05;

const HELP = `usage: node bench/trainer-cpu/run.mjs [options]
  --threads N        native engine threads for both measurements (default 2)
  --steps N          optimizer steps in each measurement, warm-up included (default 12)
  --warmup N         first steps left out of the steady-state rate, in both (default 2)
  --small            tiny model and sequences (smoke test)
  --wait-idle S      before each measurement, wait up to S seconds for other processes to go quiet
  --no-build         do not (re)build the addon or the TypeScript dist
  --out FILE         JSON output (default bench/out/trainer-cpu-<date>.json)`;

const { iters: _iters, ...commonOptions } = common.COMMON_OPTIONS;
const OPTIONS = {
  ...commonOptions,
  steps: { default: 12, parse: common.positiveInt(1) },
};

function checkArgs(args, usage) {
  if (args.steps <= args.warmup) usage('--steps must be greater than --warmup');
}

/** The sizes of a run: the init-model preset, micro-batch and sequence length. */
const sizes = (small) =>
  small ? { preset: 'tiny', batch: 2, seq: 64, rank: 4 } : { preset: 'base', batch: 4, seq: 512, rank: 16 };

// ------------------------------------------------------------------------------------ inputs

/**
 * Real-looking text rows: windows of `rowChars` characters over the prose paragraphs of the
 * repository's Markdown documentation (README, docs/), at spread-out offsets, until there are at
 * least `minChars` characters.
 */
function writeDataset(path, minChars, rowChars) {
  const files = [join(common.root, 'README.md')];
  const docs = join(common.root, 'docs');
  if (existsSync(docs)) for (const f of readdirSync(docs).sort()) if (f.endsWith('.md')) files.push(join(docs, f));
  const corpus = files
    .flatMap((f) => readFileSync(f, 'utf8').split(/\n\s*\n/))
    .map((p) => p.replace(/\s+/g, ' ').trim())
    .filter((p) => p.length >= 80 && !p.startsWith('|') && !p.startsWith('```'))
    .join(' ');
  if (corpus.length < 2 * rowChars) throw new Error('not enough documentation text for the dataset');
  const rows = [];
  let chars = 0;
  for (let i = 0; chars < minChars; i++) {
    // Windows of rowChars characters over the text, each starting at a word: one token per byte,
    // so every row is longer than max_seq_len and every packed sequence is full.
    const start = corpus.indexOf(' ', (i * 7919 * rowChars) % (corpus.length - rowChars)) + 1;
    const text = corpus.slice(start, start + rowChars).trim();
    rows.push(JSON.stringify({ text }));
    chars += text.length;
  }
  writeFileSync(path, rows.join('\n') + '\n');
  return { rows: rows.length, chars, row_chars: rowChars, source_chars: corpus.length };
}

/** The training config of both measurements (YAML is a superset of JSON). */
function trainConfig(dir, args, s) {
  return {
    model: join(dir, 'model'),
    method: 'lora',
    engine: 'native',
    threads: args.threads,
    seed: 0,
    lora: { rank: s.rank, alpha: 2 * s.rank, dropout: 0 },
    data: { train: join(dir, 'train.jsonl'), format: 'text', packing: true, max_seq_len: s.seq },
    training: {
      max_steps: args.steps,
      micro_batch_size: s.batch,
      grad_accumulation: 1,
      log_every: 1,
      eval_every: 0,
      checkpoint_every: 0,
    },
    optimizer: { lr: common.TRAIN.lr, max_grad_norm: common.TRAIN.maxGradNorm },
    schedule: { kind: 'constant', warmup_steps: 0 },
    output_dir: join(dir, 'run'),
  };
}

// ------------------------------------------------------------------------------------ (a) expertune train

async function runTrain(dir, configPath, args, shapes) {
  const t0 = performance.now();
  await common.runCapture(process.execPath, [CLI, 'train', '--config', configPath]);
  const wall = (performance.now() - t0) / 1000;
  const metrics = readFileSync(join(dir, 'run', 'metrics.jsonl'), 'utf8')
    .split('\n')
    .filter((l) => l.trim())
    .map((l) => JSON.parse(l));
  if (metrics.length !== args.steps) throw new Error(`metrics.jsonl has ${metrics.length} steps, not ${args.steps}`);
  const ends = metrics.map((m) => m.elapsed_s);
  // elapsed_s runs from the loop's start to the end of each step's metrics line: the step times
  // include the batch assembly, the optimizer step and the per-step bookkeeping.
  const stepSeconds = ends.map((e, i) => e - (i ? ends[i - 1] : 0));
  const { steady, steadySteps, steadyTokens, allTokens } = steadyState(ends, shapes, args.warmup);
  return {
    wall_s: common.round(wall, 3),
    loop_s: common.round(ends[ends.length - 1], 3),
    startup_and_exit_s: common.round(wall - ends[ends.length - 1], 3),
    wall_tokens_per_s: common.round(allTokens / wall, 2),
    step_seconds: stepSeconds.map((x) => common.round(x, 4)),
    steady_s: common.round(steady, 4),
    steady_steps: steadySteps,
    steady_tokens_per_s: common.round(steadyTokens / steady, 2),
    median_step_s: common.round(common.median(stepSeconds.slice(args.warmup)), 4),
    loss_tokens: metrics.map((m) => m.tokens),
    losses: metrics.map((m) => m.loss),
    loss_first: metrics[0].loss,
    loss_last: metrics[metrics.length - 1].loss,
  };
}

// ------------------------------------------------------------------------------------ (b) bare worker

/**
 * Inside a child process: what runTraining sets up (engine, model, data, adapter, optimizer) from
 * the same config, the first `steps` micro-batches built up front, then `Optimizer.step` alone.
 */
async function worker(job) {
  const { configPath, steps } = JSON.parse(job);
  const engineLib = await import(pathToFileURL(common.ENGINE_DIST).href);
  const formats = await import(pathToFileURL(common.FORMATS_DIST).href);
  const trainer = await import(pathToFileURL(TRAINER_DIST).href);
  const contracts = await import(pathToFileURL(CONTRACTS_DIST).href);
  const config = contracts.parseTrainConfig(JSON.parse(readFileSync(configPath, 'utf8')));
  const engine = engineLib.Engine.create(config.engine, { threads: config.threads });
  const model = await engine.loadModel(config.model);
  const tokenizer = formats.loadTokenizer(config.model);
  const data = trainer.loadTrainingData(
    config.data.train,
    trainer.dataOptionsFor(config.data, config.seed, tokenizer, model.config.vocabSize),
  );
  const adapterConfig = trainer.adapterConfigFor(config, model.config.numLayers);
  model.attachAdapter(adapterConfig);
  const optimizer = new engineLib.Optimizer(model, trainer.optimizerConfigFor(config, steps));
  const padId = tokenizer.eosTokenId ?? model.config.eosTokenIds[0] ?? 0;
  const it = trainer.microBatches(data.sequences, config.training.micro_batch_size, config.seed, padId);
  const batches = Array.from({ length: steps }, () => it.next().value);
  const shapes = batches.map((b) => [b.batch, b.seqLen]);
  const ends = [];
  const losses = [];
  const t0 = performance.now();
  for (const batch of batches) {
    const r = await optimizer.step([batch]);
    ends.push((performance.now() - t0) / 1000);
    losses.push(r.loss);
    console.error(`  bare step ${ends.length} ${(ends.length > 1 ? ends.at(-1) - ends.at(-2) : ends[0]).toFixed(3)} s`);
  }
  const result = {
    ends,
    losses,
    shapes,
    trainable_params: model.parameterCount('trainable'),
    sequences: data.sequences.length,
    nativeInfo: engineLib.nativeInfo(),
  };
  model.dispose();
  return result;
}

/**
 * The steady state of a loop whose steps ended at `ends` (seconds from its start) on batches of
 * `shapes` ([batch, seqLen] each): the steps after the first `warmup` (after the first step when
 * warmup is 0), their time and tokens; and the tokens of all steps.
 */
function steadyState(ends, shapes, warmup) {
  const from = Math.max(warmup, 1);
  const tokens = (list) => list.reduce((sum, [b, t]) => sum + b * t, 0);
  return {
    steady: ends[ends.length - 1] - ends[from - 1],
    steadySteps: ends.length - from,
    steadyTokens: tokens(shapes.slice(from)),
    allTokens: tokens(shapes),
  };
}

async function runBare(configPath, args, s) {
  const r = await common.runWorker(SELF, JSON.stringify({ configPath, steps: args.steps }), []);
  if (r.error) throw new Error(`bare worker: ${r.error}`);
  const stepSeconds = r.ends.map((e, i) => e - (i ? r.ends[i - 1] : 0));
  const full = r.shapes.every(([b, t]) => b === s.batch && t === s.seq);
  const last = r.ends[r.ends.length - 1];
  const { steady, steadySteps, steadyTokens } = steadyState(r.ends, r.shapes, args.warmup);
  return {
    loop_s: common.round(last, 3),
    step_seconds: stepSeconds.map((x) => common.round(x, 4)),
    steady_s: common.round(steady, 4),
    steady_steps: steadySteps,
    steady_tokens_per_s: common.round(steadyTokens / steady, 2),
    median_step_s: common.round(common.median(stepSeconds.slice(args.warmup)), 4),
    batches_full: full,
    batch_shapes: full ? `${args.steps} × [${s.batch}, ${s.seq}]` : r.shapes,
    shapes: r.shapes,
    losses: r.losses,
    trainable_params: r.trainable_params,
    packed_sequences: r.sequences,
    loss_first: r.losses[0],
    loss_last: r.losses[r.losses.length - 1],
    nativeInfo: r.nativeInfo,
  };
}

// ------------------------------------------------------------------------------------ main

function ensureTrainerDist(args) {
  const srcNewest = (lib) => common.newestMtime(join(common.root, 'libs', lib, 'src'), ['.ts']);
  const stale = ['contracts', 'trainer'].filter(
    (lib) => common.mtime(join(common.root, 'libs', lib, 'dist', 'index.js')) < srcNewest(lib),
  );
  if (!stale.length) return [];
  if (!args.build) {
    for (const lib of stale)
      if (!existsSync(join(common.root, 'libs', lib, 'dist', 'index.js')))
        throw new Error(`--no-build, but libs/${lib}/dist is missing`);
    common.log(`warning: older than their sources (--no-build): ${stale.map((l) => `libs/${l}/dist`).join(', ')}`);
    return [];
  }
  const tsc = join(common.root, 'node_modules', '.bin', 'tsc');
  for (const lib of ['contracts', 'trainer'])
    common.runVisible(tsc, ['-p', join(common.root, 'libs', lib, 'tsconfig.build.json')]);
  return ['libs/contracts/dist', 'libs/trainer/dist'];
}

async function main() {
  const args = common.parseCommandLine(process.argv.slice(2), { help: HELP, options: OPTIONS, check: checkArgs });
  if (args.worker) return common.workerMain(() => worker(args.worker));
  const s = sizes(args.small);
  const started = new Date();
  const builds = common.ensureBuilds(args, { requireOutputs: true });
  builds.built.push(...ensureTrainerDist(args));

  const dir = mkdtempSync(join(tmpdir(), 'expertune-trainer-cpu-'));
  try {
    common.log(`trainer-cpu benchmark, ${args.small ? 'SMALL smoke config' : 'full config'}, ${args.threads} threads`);
    await common.runCapture(process.execPath, [CLI, 'init-model', '--out', join(dir, 'model'), '--preset', s.preset]);
    const modelConfig = JSON.parse(readFileSync(join(dir, 'model', 'config.json'), 'utf8'));
    // Twice the characters the run packs, so no epoch boundary falls inside the measured steps.
    const dataset = writeDataset(join(dir, 'train.jsonl'), 2 * args.steps * s.batch * s.seq, s.seq + 64);
    const configPath = join(dir, 'train.yaml');
    const config = trainConfig(dir, args, s);
    writeFileSync(configPath, JSON.stringify(config, null, 2) + '\n');

    const record = common.phases(args.waitIdle);
    const { settle, phase } = record;
    // Bare first: it also gives the batch shapes (the same batches as the trainer's).
    await settle('bare');
    common.log('bare Optimizer.step loop …');
    const bare = await phase('bare', () => runBare(configPath, args, s));
    await settle('train');
    common.log('expertune train …');
    const train = await phase('train', () => runTrain(dir, configPath, args, bare.shapes));
    // The same batches in the same order: the losses agree step by step.
    train.same_losses_as_bare = train.losses.every((l, i) => l === bare.losses[i]);

    const overhead = 1 - train.steady_tokens_per_s / bare.steady_tokens_per_s;
    const report = {
      benchmark: 'trainer-cpu',
      date: started.toISOString(),
      duration_s: null,
      command: `node bench/trainer-cpu/run.mjs ${process.argv.slice(2).join(' ')}`.trim(),
      threads: args.threads,
      steps: args.steps,
      warmup: args.warmup,
      model: {
        preset: s.preset,
        hidden: modelConfig.hidden_size,
        layers: modelConfig.num_hidden_layers,
        heads: modelConfig.num_attention_heads,
        kvHeads: modelConfig.num_key_value_heads,
        intermediate: modelConfig.intermediate_size,
        vocab: modelConfig.vocab_size,
        batch: s.batch,
        seq: s.seq,
        smoke: args.small,
      },
      config: { ...config, model: 'model', data: { ...config.data, train: 'train.jsonl' }, output_dir: 'run' },
      dataset,
      machine: { ...common.machineInfo(), native: bare.nativeInfo },
      builds: { ...builds, ...common.provenance() },
      load: common.loadReport(
        'foreign_cores: CPU used by other processes during each measurement (average cores); > 0.1 means it was contended',
        record,
      ),
      train,
      bare,
      overhead: common.round(overhead, 4),
      target: `≤ ${TARGET_OVERHEAD * 100} %`,
      pass: args.small ? null : overhead <= TARGET_OVERHEAD,
    };
    report.duration_s = common.round((Date.now() - started.getTime()) / 1000, 1);
    common.writeReport(report, args, started);
    printReport(report);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

function printReport(r) {
  const m = r.model;
  console.log(
    `\nTraining throughput: init-model --preset ${m.preset} (d=${m.hidden} L=${m.layers} H=${m.heads}/${m.kvHeads} ` +
      `F=${m.intermediate} V=${m.vocab}), LoRA r ${r.config.lora.rank} on all 7 projections, batch ${m.batch} × seq ${m.seq}, packing`,
  );
  console.log(`${r.threads} threads; ${r.steps} steps, the first ${r.warmup} left out of the steady state`);
  const rows = [
    [
      'expertune train',
      common.fmt(r.train.median_step_s, 3),
      common.fmt(r.train.steady_tokens_per_s, 0),
      `${common.fmt(r.train.wall_s, 1)} s (${common.fmt(r.train.wall_tokens_per_s, 0)} tok/s)`,
      common.others(r, 'train'),
    ],
    [
      'bare Optimizer.step',
      common.fmt(r.bare.median_step_s, 3),
      common.fmt(r.bare.steady_tokens_per_s, 0),
      '—',
      common.others(r, 'bare'),
    ],
  ];
  common.printRows(
    ['measurement', 'median step s', 'steady tok/s', 'wall incl. start-up', 'others'],
    rows,
    new Set([0]),
  );
  console.log(
    `batches: ${r.bare.batches_full ? r.bare.batch_shapes : 'NOT all full: ' + JSON.stringify(r.bare.batch_shapes)}`,
  );
  console.log(`same loss as bare at every step: ${r.train.same_losses_as_bare ? 'yes' : 'NO'}`);
  console.log(`start-up and exit of expertune train: ${common.fmt(r.train.startup_and_exit_s, 2)} s\n`);
  if (r.model.smoke) console.log('smoke-test size (--small): no verdict');
  console.log(
    `${common.verdict(r.pass)}  overhead 1 − train ÷ bare = ${common.fmt(100 * r.overhead, 2)} %  (target ${r.target})`,
  );
  console.log(`\nJSON: ${r.outFile}`);
}

common.runScript(main);
