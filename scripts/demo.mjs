#!/usr/bin/env node
// `npm run demo`: the main job on the embedded default, through the platform, nothing downloaded.
// The base model is models/expertune-tiny-en, a small Llama that `expertune pretrain` trained on
// public-domain English (docs/base-model.md). The data is the multi-task instruction set that
// scripts/build-demo-dataset.mjs builds from npm packages (spam, sentiment, capitals, syllables,
// part of speech). The demo migrates Postgres, creates an API key, starts the job API, a
// worker and the console, registers the model, uploads the data and submits one job per method, at a
// comparable trainable-parameter budget (about 300k, 7% of the base), through the typed client.
// It evaluates the untrained base on the held-out split with the CLI and prints a table of every
// job's held-out results (docs/demo.md records a run). On a terminal the API stays up afterwards
// (its URL is printed) until Ctrl-C; otherwise, or with --exit, everything stops.
//   npm run demo [-- --methods lora,mola --out DIR --model HF_DIR --port 8080 --console-port 3000 --exit]
import { execFileSync, spawn } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
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

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** Starts a long-running process of ours; its output goes to `log` (shown if it dies early). */
function startProcess(name, script, env, log, { args = [], cwd = root } = {}) {
  const child = spawn(process.execPath, [script, ...args], {
    cwd,
    env: { ...process.env, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const lines = [];
  for (const stream of [child.stdout, child.stderr])
    stream.on('data', (chunk) => {
      lines.push(chunk.toString());
      writeFileSync(log, lines.join(''));
    });
  child.on('exit', (code, signal) => {
    if (!child.stopping) console.error(`\n✘ the ${name} stopped (${signal ?? `exit ${code}`}); its log: ${log}`);
  });
  child.stop = () => {
    child.stopping = true;
    child.kill('SIGTERM');
  };
  return child;
}

async function waitForHealth(baseUrl, child) {
  for (let i = 0; i < 120; i++) {
    if (child.exitCode !== null) throw new Error('the API exited while starting');
    try {
      const response = await fetch(`${baseUrl}/health`);
      if (response.ok) return;
    } catch {
      // not listening yet
    }
    await sleep(500);
  }
  throw new Error(`the API did not answer on ${baseUrl}/health within 60 s`);
}

/** The last value of each metric series of a job. */
async function lastValues(client, jobId) {
  const series = await client.jobs.metrics(jobId, { max_points: 2 });
  return Object.fromEntries(series.data.map((s) => [s.name, s.values[s.values.length - 1]]));
}

async function main() {
  const { values } = parseArgs({
    options: {
      methods: { type: 'string' },
      out: { type: 'string' },
      model: { type: 'string' },
      port: { type: 'string', default: '8080' },
      'console-port': { type: 'string', default: '3000' },
      exit: { type: 'boolean' },
    },
  });
  const methods = values.methods ? values.methods.split(',') : Object.keys(DEMO_METHODS);
  for (const method of methods)
    if (!(method in DEMO_METHODS)) throw new Error(`unknown method '${method}': use ${Object.keys(DEMO_METHODS)}`);
  const work = values.out ?? join(root, '.expertune', 'demo');
  const modelDir = values.model ?? defaultModel;
  if (!existsSync(join(modelDir, 'model.safetensors')))
    throw new Error(`${modelDir} is missing: it is committed; rebuild it with npm run pretrain:default`);
  const started = performance.now();
  mkdirSync(work, { recursive: true });

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

  console.log(`\n▶ The untrained base (${modelDir}) on the held-out rows (expertune eval)`);
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
  console.log(`  exact match ${base.exact_match.toFixed(3)} · eval loss ${base.loss.toFixed(3)}`);

  // The platform: Postgres (migrated), an API key, the API and one CPU worker.
  const { createApiKey, createDataSource, connect, runMigrations, databaseUrl } = await import('@expertune/db');
  const { createExpertuneClient } = await import('@expertune/contracts');
  const url = databaseUrl();
  console.log(
    `\n▶ Starting the platform: Postgres ${url.replace(/\/\/[^@]*@/, '//')}, Redis, the job API, a worker and the console`,
  );
  await runMigrations(url);
  const dataSource = await connect(createDataSource({ url, poolSize: 1 }));
  const { key } = await createApiKey(dataSource, { name: 'demo', scopes: ['read', 'launch'] });
  await dataSource.destroy();
  const keyPath = join(work, 'api-key');
  writeFileSync(keyPath, key + '\n', { mode: 0o600 });
  const baseUrl = `http://127.0.0.1:${values.port}`;
  const env = { EXPERTUNE_DATA_DIR: join(root, '.expertune', 'data'), PORT: values.port };
  const api = startProcess('API', join(root, 'apps', 'api', 'dist', 'main.js'), env, join(work, 'api.log'));
  const worker = startProcess(
    'worker',
    join(root, 'apps', 'worker', 'bin', 'worker.js'),
    env,
    join(work, 'worker.log'),
  );
  // The console, to watch the jobs live (built by setup; the API need not be up yet).
  const consoleUrl = `http://127.0.0.1:${values['console-port']}`;
  const web = startProcess(
    'console',
    createRequire(join(root, 'apps', 'web', 'package.json')).resolve('next/dist/bin/next'),
    { EXPERTUNE_API_URL: baseUrl, NEXT_TELEMETRY_DISABLED: '1' },
    join(work, 'console.log'),
    { args: ['start', '-p', values['console-port'], '-H', '127.0.0.1'], cwd: join(root, 'apps', 'web') },
  );
  const stopAll = () => [web, worker, api].forEach((child) => child.exitCode === null && child.stop());
  process.on('exit', stopAll);
  await waitForHealth(baseUrl, api);
  console.log(`▶ Watch the jobs in the console: ${consoleUrl} (API key: ${keyPath})`);
  const client = createExpertuneClient({ baseUrl, apiKey: key });

  // A second demo run finds the model registered already (names are unique).
  const model = await client.models.register({ path: modelDir }).catch(async (error) => {
    if (error.status !== 409) throw error;
    const registered = await client.models.list({ limit: 100 });
    const same = registered.data.find((m) => m.path === modelDir);
    if (!same) throw error;
    return same;
  });
  const trainFile = await client.datasets.upload(readFileSync(join(dataDir, 'train.jsonl'), 'utf8'), 'train.jsonl');
  const validationFile = await client.datasets.upload(readFileSync(heldout, 'utf8'), 'heldout.jsonl');
  console.log(
    `  model ${model.id} · training file ${trainFile.id} (${trainFile.rows} rows) · validation file ${validationFile.id}`,
  );

  const jobs = [];
  for (const method of methods) {
    const { label, section } = DEMO_METHODS[method];
    const job = await client.jobs.create({
      model: model.id,
      training_file: trainFile.id,
      validation_file: validationFile.id,
      method,
      hyperparameters: { [method]: section, ...TRAINING },
      seed: 0,
      suffix: `demo-${method}`,
    });
    jobs.push({ method, label, id: job.id });
    console.log(`  submitted ${label}: job ${job.id}`);
  }

  console.log('\n▶ Training (one worker, one job at a time)');
  const seen = new Map();
  for (;;) {
    const states = await Promise.all(jobs.map((job) => client.jobs.get(job.id)));
    for (const [i, state] of states.entries()) {
      const line =
        `  ${jobs[i].label}: ${state.status}${state.status === 'queued' ? ` (position ${state.queue_position})` : ''}` +
        (state.total_steps ? ` · step ${state.steps_completed}/${state.total_steps}` : '') +
        (state.latest_metrics['train/loss'] !== undefined
          ? ` · loss ${state.latest_metrics['train/loss'].toFixed(3)}`
          : '');
      const decile = `${state.status}:${Math.floor((10 * state.steps_completed) / (state.total_steps || 1))}`;
      if (seen.get(state.id) !== decile) {
        seen.set(state.id, decile);
        console.log(line);
      }
      if (state.status === 'failed' || state.status === 'cancelled')
        throw new Error(`job ${state.id} (${jobs[i].method}) ${state.status}: ${state.error?.message ?? ''}`);
    }
    if (states.every((state) => state.status === 'succeeded')) {
      jobs.forEach((job, i) => (job.final = states[i]));
      break;
    }
    await sleep(1000);
  }

  const results = [{ name: 'base (no adapter)', params: 0, tokensPerSecond: null, seconds: null, eval: base }];
  for (const job of jobs) {
    const metrics = await lastValues(client, job.id);
    const events = await client.jobs.events(job.id, { limit: 100 });
    const start = events.data.find((event) => typeof event.data?.trainableParameters === 'number');
    const perTask = Object.fromEntries(
      Object.entries(metrics)
        .filter(([name]) => name.startsWith('eval/exact_match/'))
        .map(([name, value]) => [name.slice('eval/exact_match/'.length), { exact_match: value }]),
    );
    results.push({
      name: job.label,
      method: job.method,
      jobId: job.id,
      adapter: job.final.result_adapter,
      params: start?.data.trainableParameters ?? null,
      tokensPerSecond: metrics['train/tokens_per_second'],
      seconds: job.final.finished_at - job.final.started_at,
      eval: { per_task: perTask, exact_match: metrics['eval/exact_match'], loss: metrics['eval/loss'] },
    });
  }
  const tasks = Object.keys(base.per_task).sort();
  const header = ['method', 'trainable', ...tasks, 'exact match', 'eval loss', 'tok/s', 'time'];
  const rows = results.map((r) => [
    r.name,
    r.params === null ? '?' : r.params.toLocaleString('en-US'),
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
      ` · ${minutes} min on ${cpus().length} cores · results.json in ${work}`,
  );
  if (losers.length > 0) process.exitCode = 1;

  console.log(
    `\n▶ The job API is at ${baseUrl} (OpenAPI docs: ${baseUrl}/docs), the console at ${consoleUrl}; the demo's key is in ${keyPath}\n` +
      `  e.g. curl -H "Authorization: Bearer $(cat ${keyPath})" ${baseUrl}/v1/jobs`,
  );
  if (values.exit || !process.stdout.isTTY) {
    stopAll();
    return;
  }
  console.log('  The API, the worker and the console keep running; Ctrl-C stops them.');
  await new Promise((resolve) => process.once('SIGINT', resolve));
  stopAll();
}

// Run only as a script: tests import DEMO_METHODS.
if (process.argv[1] === fileURLToPath(import.meta.url))
  main().catch((error) => {
    console.error(`\n✘ ${error.message}`);
    process.exit(1);
  });
