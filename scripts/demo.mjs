#!/usr/bin/env node
// `npm run demo`: the main job on the embedded default, end to end on the CLI, nothing downloaded.
// The base model is models/expertune-tiny-en, a small Llama that `expertune pretrain` trained on
// public-domain English (docs/base-model.md). The data is the multi-task instruction set that
// scripts/build-demo-dataset.mjs builds from npm packages (spam, sentiment, capitals, syllables,
// part of speech). The untrained base is evaluated on the held-out split, then each method
// fine-tunes it at a comparable trainable-parameter budget (about 300k, 7% of the base) and is
// evaluated the same way; a table compares them (docs/demo.md records a run).
//   npm run demo [-- --methods lora,mola --out DIR --model HF_DIR]
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { cpus } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

import { buildDemoDataset } from './build-demo-dataset.mjs';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const cli = join(root, 'libs', 'trainer', 'bin', 'expertune.js');
const defaultModel = join(root, 'models', 'expertune-tiny-en');

/** Each method's section: ~300k trainable parameters each (the table prints the exact count). */
export const DEMO_METHODS = {
  lora: { label: 'LoRA r16, 7 projections', section: { rank: 16, alpha: 32, dropout: 0 } },
  mola: {
    label: 'MoLA 2-4-6-8 experts r3, top-2',
    section: { rank: 3, alpha: 6, dropout: 0, num_experts: { preset: 'inverted_triangle' }, top_k: 2 },
  },
  loramoe: {
    label: 'LoRAMoE 6 experts r4, MLP, LBC',
    section: { rank: 4, alpha: 8, dropout: 0, num_experts: 6, blc_alpha: 0.1, blc_weight: 0.1 },
  },
  dynmole: { label: 'DynMoLE 6 experts r4, MLP', section: { rank: 4, alpha: 8, dropout: 0, num_experts: 6 } },
  flylora: { label: 'FlyLoRA r32, top-8', section: { rank: 32, alpha: 64, dropout: 0, top_k: 8 } },
};

/** Shared by every method: one pass over the packed training rows, evaluation at the end. */
const TRAINING = {
  data: { max_seq_len: 256, packing: true },
  training: { epochs: 1, micro_batch_size: 8 },
  eval: { max_answer_tokens: 16, max_generate_rows: 1000, batch_size: 16 },
  optimizer: { lr: 0.002, max_grad_norm: 1.0 },
  schedule: { kind: 'cosine', warmup_steps: 10, min_lr_ratio: 0.1 },
};

const expertune = (args, { capture = false } = {}) =>
  execFileSync(process.execPath, [cli, ...args], { cwd: root, encoding: 'utf8', stdio: capture ? 'pipe' : 'inherit' });

function main() {
  const { values } = parseArgs({
    options: { methods: { type: 'string' }, out: { type: 'string' }, model: { type: 'string' } },
  });
  const methods = values.methods ? values.methods.split(',') : Object.keys(DEMO_METHODS);
  for (const method of methods)
    if (!(method in DEMO_METHODS)) throw new Error(`unknown method '${method}': use ${Object.keys(DEMO_METHODS)}`);
  const work = values.out ?? join(root, '.expertune', 'demo');
  const modelDir = values.model ?? defaultModel;
  if (!existsSync(join(modelDir, 'model.safetensors')))
    throw new Error(`${modelDir} is missing: it is committed; rebuild it with npm run pretrain:default`);
  const started = performance.now();

  console.log('\n▶ Building the multi-task dataset from npm packages (scripts/build-demo-dataset.mjs)');
  const dataDir = join(work, 'data');
  const summary = buildDemoDataset({ outDir: dataDir, seed: 0 });
  console.log(
    `  ${summary.train.rows} training rows, ${summary.heldout.rows} held-out rows: ` +
      Object.entries(summary.heldout.byTask)
        .map(([task, n]) => `${task} ${n}`)
        .join(' · '),
  );
  const heldout = join(dataDir, 'heldout.jsonl');

  console.log(`\n▶ The untrained base (${modelDir}) on the held-out rows`);
  const base = JSON.parse(
    expertune(
      [
        'eval',
        '--model',
        modelDir,
        '--data',
        heldout,
        '--max-answer-tokens',
        String(TRAINING.eval.max_answer_tokens),
        '--max-generate-rows',
        String(TRAINING.eval.max_generate_rows),
        '--batch-size',
        String(TRAINING.eval.batch_size),
      ],
      { capture: true },
    ),
  );
  const results = [{ name: 'base (no adapter)', params: 0, tokensPerSecond: null, seconds: null, eval: base }];
  console.log(`  exact match ${base.exact_match.toFixed(3)} · eval loss ${base.loss.toFixed(3)}`);

  for (const method of methods) {
    const { label, section } = DEMO_METHODS[method];
    console.log(`\n▶ ${label}`);
    const runDir = join(work, `run-${method}`);
    const config = {
      model: modelDir,
      method,
      seed: 0,
      [method]: section,
      ...TRAINING,
      data: { ...TRAINING.data, train: join(dataDir, 'train.jsonl'), validation: heldout },
      output_dir: runDir,
    };
    const configPath = join(work, `train-${method}.json`);
    mkdirSync(work, { recursive: true });
    // JSON is YAML: `expertune train --config` reads it as is.
    writeFileSync(configPath, JSON.stringify(config, null, 2) + '\n');
    const t0 = performance.now();
    expertune(['train', '--config', configPath]);
    const record = JSON.parse(readFileSync(join(runDir, 'run.json'), 'utf8'));
    const evals = readFileSync(join(runDir, 'eval.jsonl'), 'utf8').trim().split('\n');
    results.push({
      name: label,
      method,
      params: record.throughput.trainable_parameters,
      tokensPerSecond: record.throughput.tokens_per_second,
      seconds: (performance.now() - t0) / 1000,
      eval: JSON.parse(evals[evals.length - 1]),
    });
  }

  const tasks = Object.keys(base.per_task).sort();
  const header = ['method', 'trainable', ...tasks, 'exact match', 'eval loss', 'tok/s', 'time'];
  const rows = results.map((r) => [
    r.name,
    r.params === 0 ? '0' : r.params.toLocaleString('en-US'),
    ...tasks.map((task) => (r.eval.per_task[task]?.exact_match ?? 0).toFixed(2)),
    r.eval.exact_match.toFixed(3),
    r.eval.loss.toFixed(3),
    r.tokensPerSecond === null ? '' : String(Math.round(r.tokensPerSecond)),
    r.seconds === null ? '' : `${Math.round(r.seconds)} s`,
  ]);
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((row) => row[i].length)));
  const line = (cells) => cells.map((c, i) => (i === 0 ? c.padEnd(widths[i]) : c.padStart(widths[i]))).join('  ');
  const minutes = ((performance.now() - started) / 60000).toFixed(1);
  console.log(
    `\n▶ Held-out results (${base.generated} rows, greedy exact match per task; loss on the answers)\n` +
      [line(header), line(widths.map((w) => '-'.repeat(w))), ...rows.map(line)].join('\n'),
  );
  writeFileSync(
    join(work, 'results.json'),
    JSON.stringify({ machine: `${cpus().length} × ${cpus()[0]?.model}`, minutes: Number(minutes), results }, null, 2) +
      '\n',
  );
  const losers = results.slice(1).filter((r) => !(r.eval.exact_match > base.exact_match));
  console.log(
    `\n${losers.length === 0 ? '✔ every method beats the untrained base on held-out exact match' : `✘ not above the base: ${losers.map((r) => r.method).join(', ')}`}` +
      ` · ${minutes} min on ${cpus().length} cores · runs, exports and results.json in ${work}`,
  );
  if (losers.length > 0) process.exitCode = 1;
}

// Run only as a script: tests import DEMO_METHODS.
if (process.argv[1] === fileURLToPath(import.meta.url)) main();
