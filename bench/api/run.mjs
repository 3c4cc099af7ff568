#!/usr/bin/env node
// Job API benchmark: the built API (`apps/api/dist/main.js`) and --workers worker processes
// (`apps/worker/bin/worker.js`, CPU, 1 trainer thread each) on a throwaway Postgres database and
// Redis queue prefix, a tiny random model (`initRandomModel(dir, 'tiny', seed)`, byte-level
// tokenizer) registered through the API:
//   (a) jobs: --jobs tiny MoLA jobs (--steps steps each) submitted through POST /v1/jobs, one after
//       the other; while they run, every job is polled with GET /v1/jobs/:id and the queue
//       positions are checked: each job's position never grows, positions of a snapshot are distinct
//       and follow creation order, and in a stable snapshot (two rounds of polls that agree) they are
//       0..k-1 (the API counts the jobs ahead: 0 = next). At the end every job must be `succeeded`
//       with exactly one job_attempts row (none ran twice). Reports the end-to-end time.
//   (b) ingestion: with the API and workers stopped, --writers processes each insert
//       --points / --writers metric points through libs/db `insertMetrics` in batches of --batch
//       (10 metric names × batch/10 steps, as a worker flushes them), all starting together;
//       points/s = all points / wall time from the start signal to the last writer done.
//       Target ≥ 5,000 points/s.
//
//   node bench/api/run.mjs [--jobs 20] [--steps 10] [--workers 2] [--points 200000] [--batch 200]
//                          [--writers 2] [--no-build] [--keep] [--out FILE]
//
// Needs Postgres (127.0.0.1:5432, DATABASE_URL) and Redis (127.0.0.1:6379, REDIS_URL), and the libs
// built (`npm run build`); the apps are compiled with tsc when their dist/ is older than src/.
import { execFileSync, fork, spawn } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync, statSync } from 'node:fs';
import { createRequire } from 'node:module';
import { createServer } from 'node:net';
import { totalmem, tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import { performance } from 'node:perf_hooks';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

import * as common from '../lib/common.mjs';

const SELF = fileURLToPath(import.meta.url);
const ROOT = common.root;
const API_MAIN = join(ROOT, 'apps', 'api', 'dist', 'main.js');
const WORKER_BIN = join(ROOT, 'apps', 'worker', 'bin', 'worker.js');
const REDIS_URL = process.env.REDIS_URL || 'redis://127.0.0.1:6379';
const TARGET_POINTS_PER_S = 5000;
const METRIC_NAMES = [
  'train/loss',
  'train/token_accuracy',
  'train/lr',
  'train/grad_norm',
  'train/tokens',
  'train/tokens_per_second',
  'train/aux_balance',
  'train/aux_z_loss',
  'train/aux_entropy',
  'train/aux_total',
];
const ROWS = ['one fish', 'two fish', 'red fish', 'blue fish', 'old fish', 'new fish', 'big cat', 'small cat'];
const FINISHED = new Set(['succeeded', 'failed', 'cancelled']);

const HELP = `usage: node bench/api/run.mjs [options]
  --jobs N       tiny jobs submitted through the API (default 20)
  --steps N      training steps of each job (default 10)
  --workers N    worker processes, 1 trainer thread each (default 2)
  --points N     metric points inserted in the ingestion phase (default 200000)
  --batch N      points per insertMetrics call (default 200)
  --writers N    concurrent writer processes in the ingestion phase (default 2)
  --no-build     do not compile apps/api and apps/worker when their dist/ is stale
  --keep         keep the database, Redis keys and temporary directory
  --out FILE     JSON output (default bench/out/api-<date>.json)`;

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
const log = common.log;

function parseCommandLine(argv) {
  const { values } = parseArgs({
    args: argv,
    options: {
      jobs: { type: 'string', default: '20' },
      steps: { type: 'string', default: '10' },
      workers: { type: 'string', default: '2' },
      points: { type: 'string', default: '200000' },
      batch: { type: 'string', default: '200' },
      writers: { type: 'string', default: '2' },
      'no-build': { type: 'boolean', default: false },
      keep: { type: 'boolean', default: false },
      out: { type: 'string' },
      help: { type: 'boolean', default: false },
    },
  });
  if (values.help) {
    console.log(HELP);
    process.exit(0);
  }
  const int = (name) => {
    const value = Number(values[name]);
    if (!Number.isInteger(value) || value < 1) {
      console.error(`--${name}: expected a positive integer, got ${values[name]}\n${HELP}`);
      process.exit(2);
    }
    return value;
  };
  return {
    jobs: int('jobs'),
    steps: int('steps'),
    workers: int('workers'),
    points: int('points'),
    batch: int('batch'),
    writers: int('writers'),
    build: !values['no-build'],
    keep: values.keep,
    out: values.out ?? null,
  };
}

// ------------------------------------------------------------------------------------ set-up

function newestMtime(dir, keep) {
  if (!existsSync(dir)) return 0;
  let newest = 0;
  for (const entry of readdirSync(dir, { withFileTypes: true, recursive: true }))
    if (entry.isFile() && keep(entry.name))
      newest = Math.max(newest, statSync(join(entry.parentPath, entry.name)).mtimeMs);
  return newest;
}

/** tsc-builds apps/<app> when dist/ is missing or older than src/. */
function ensureAppBuilt(app) {
  const dir = join(ROOT, 'apps', app);
  const sources = newestMtime(join(dir, 'src'), (n) => n.endsWith('.ts') && !n.endsWith('.test.ts'));
  const built = existsSync(join(dir, 'dist', 'main.js')) ? newestMtime(join(dir, 'dist'), (n) => n.endsWith('.js')) : 0;
  if (built >= sources) return;
  log(`building apps/${app} (dist is older than src) …`);
  const tsc = createRequire(import.meta.url).resolve('typescript/bin/tsc');
  execFileSync(process.execPath, [tsc, '-p', join(dir, 'tsconfig.build.json')], { stdio: 'inherit' });
}

function freePort() {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
  });
}

function startProcess(name, script, env) {
  const child = spawn(process.execPath, [script], { cwd: ROOT, env, stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  const keep = (chunk) => (output = (output + chunk.toString('utf8')).slice(-32_768));
  child.stdout.on('data', keep);
  child.stderr.on('data', keep);
  const exited = new Promise((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })));
  const running = () => child.exitCode === null && child.signalCode === null;
  return {
    name,
    child,
    exited,
    running,
    output: () => output,
    async stop() {
      if (!running()) return;
      child.kill('SIGTERM');
      const timer = setTimeout(() => running() && child.kill('SIGKILL'), 10_000);
      await exited;
      clearTimeout(timer);
    },
  };
}

async function waitUntil(what, probe, timeoutMs, everyMs = 100) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await probe();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(everyMs);
  }
}

// ------------------------------------------------------------------------------------ HTTP

function api(baseUrl, key) {
  return async (method, path, body) => {
    const headers = { authorization: `Bearer ${key}` };
    let payload;
    if (body instanceof FormData) payload = body;
    else if (body !== undefined) {
      headers['content-type'] = 'application/json';
      payload = JSON.stringify(body);
    }
    const response = await fetch(`${baseUrl}${path}`, { method, headers, body: payload });
    const text = await response.text();
    if (!response.ok) throw new Error(`${method} ${path}: ${response.status} ${text.slice(0, 500)}`);
    return JSON.parse(text);
  };
}

// ------------------------------------------------------------------------------------ (a) jobs

/**
 * Checks the queue positions of the polls. `snapshots` are rounds of GET /v1/jobs/:id over every
 * unfinished job, read newest first; `order` maps a job id to its creation index. Every round:
 * only queued jobs have a position, and the positions are distinct and in creation order (for jobs
 * k < m, k is read after m, and positions only go down, so pos_k(t_k) < pos_m(t_k) ≤ pos_m(t_m)).
 * Rounds equal to the previous one (nothing moved in between) must show exactly 0..k-1. Across
 * rounds, no job's position ever goes up, and some go down.
 */
function checkQueuePositions(snapshots, order) {
  const problems = [];
  const history = new Map(); // job id -> positions seen, in time order
  let stableRounds = 0;
  let positionsSeen = 0;
  let previousKey = null;
  for (const snapshot of snapshots) {
    const queued = snapshot.jobs.filter((j) => j.status === 'queued' && j.queue_position !== null);
    for (const j of snapshot.jobs) {
      if (j.status !== 'queued' && j.queue_position !== null)
        problems.push(
          `round ${snapshot.round}: job #${order.get(j.id)} is ${j.status} with position ${j.queue_position}`,
        );
      if (j.queue_position !== null) {
        positionsSeen += 1;
        const seen = history.get(j.id) ?? [];
        seen.push(j.queue_position);
        history.set(j.id, seen);
      }
    }
    const positions = queued.map((j) => j.queue_position);
    if (new Set(positions).size !== positions.length)
      problems.push(`round ${snapshot.round}: duplicate positions ${positions.join(',')}`);
    const byCreation = [...queued].sort((a, b) => order.get(a.id) - order.get(b.id)).map((j) => j.queue_position);
    for (let i = 1; i < byCreation.length; i++)
      if (byCreation[i] <= byCreation[i - 1])
        problems.push(`round ${snapshot.round}: positions out of creation order: ${byCreation.join(',')}`);
    // Two consecutive rounds that agree saw a queue at rest: then the positions are exactly 0..k-1.
    const key = JSON.stringify(snapshot.jobs.map((j) => [j.id, j.status, j.queue_position]));
    if (key === previousKey && queued.length > 0) {
      stableRounds += 1;
      const sorted = [...positions].sort((a, b) => a - b);
      if (sorted.some((p, i) => p !== i))
        problems.push(
          `round ${snapshot.round} (stable): positions ${sorted.join(',')} are not 0..${sorted.length - 1}`,
        );
    }
    previousKey = key;
  }
  let decreased = 0;
  for (const [id, seen] of history) {
    for (let i = 1; i < seen.length; i++)
      if (seen[i] > seen[i - 1]) problems.push(`job #${order.get(id)}: position went up ${seen.join('→')}`);
    if (seen.at(-1) < seen[0]) decreased += 1;
  }
  return {
    ok: problems.length === 0 && stableRounds > 0 && decreased > 0,
    rounds: snapshots.length,
    stable_rounds: stableRounds,
    positions_seen: positionsSeen,
    jobs_seen_waiting: history.size,
    jobs_whose_position_decreased: decreased,
    largest_position: Math.max(-1, ...[...history.values()].flat()),
    problems: problems.slice(0, 20),
  };
}

async function jobsPhase(args, ctx) {
  const { call, dataSource } = ctx;
  const model = await call('POST', '/v1/models', { path: ctx.modelDir, name: 'bench-tiny' });
  const form = new FormData();
  form.set('model', model.id);
  form.set('file', new Blob([ROWS.map((text) => JSON.stringify({ text })).join('\n') + '\n']), 'train.jsonl');
  const dataset = await call('POST', '/v1/datasets', form);
  ctx.modelId = model.id;
  ctx.datasetId = dataset.id;

  const request = (i) => ({
    model: model.id,
    training_file: dataset.id,
    method: 'mola',
    seed: i,
    suffix: `bench-${i}`,
    hyperparameters: {
      mola: { rank: 2, num_experts: 2, top_k: 1 },
      data: { max_seq_len: 32 },
      training: { max_steps: args.steps, micro_batch_size: 2 },
    },
  });

  const order = new Map();
  const ids = [];
  const started = performance.now();
  for (let i = 0; i < args.jobs; i++) {
    const job = await call('POST', '/v1/jobs', request(i));
    order.set(job.id, i);
    ids.push(job.id);
  }
  const submittedS = (performance.now() - started) / 1000;
  log(`submitted ${args.jobs} jobs in ${submittedS.toFixed(2)} s; polling …`);

  const snapshots = [];
  const finishedAt = new Map();
  const last = new Map();
  for (let round = 0; ; round++) {
    const open = ids.filter((id) => !FINISHED.has(last.get(id)?.status));
    if (open.length === 0) break;
    if ((performance.now() - started) / 1000 > 600) throw new Error('the jobs did not finish within 600 s');
    // One job after the other, newest first: a job ahead that starts during the round can only lower
    // the positions read after it, so even a round that raced with a start shows distinct positions
    // in creation order (see checkQueuePositions).
    const jobs = [];
    for (const id of [...open].reverse()) jobs.unshift(await call('GET', `/v1/jobs/${id}`));
    const t = (performance.now() - started) / 1000;
    for (const job of jobs) {
      last.set(job.id, job);
      if (FINISHED.has(job.status) && !finishedAt.has(job.id)) finishedAt.set(job.id, t);
    }
    snapshots.push({
      round,
      t,
      jobs: jobs.map((j) => ({ id: j.id, status: j.status, queue_position: j.queue_position })),
    });
    await sleep(100);
  }
  const endToEndS = Math.max(...finishedAt.values());

  const statuses = ids.map((id) => last.get(id).status);
  const attempts = await dataSource.query(
    `SELECT j.id, j.attempt, count(a.id)::int AS attempts,
            extract(epoch FROM j.started_at - j.created_at) AS wait_s,
            extract(epoch FROM j.finished_at - j.started_at) AS run_s
       FROM jobs j LEFT JOIN job_attempts a ON a.job_id = j.id
      WHERE j.id = ANY($1::uuid[]) GROUP BY j.id`,
    [ids],
  );
  const [span] = await dataSource.query(
    `SELECT extract(epoch FROM max(finished_at) - min(created_at)) AS s FROM jobs WHERE id = ANY($1::uuid[])`,
    [ids],
  );
  const [workersUsed] = await dataSource.query(
    `SELECT count(DISTINCT worker_id)::int AS n FROM job_attempts WHERE job_id = ANY($1::uuid[])`,
    [ids],
  );
  const ranTwice = attempts.filter((a) => a.attempts !== 1 || a.attempt !== 1).length;
  const runS = attempts.map((a) => Number(a.run_s));
  return {
    jobs: args.jobs,
    steps_per_job: args.steps,
    submit_s: common.round(submittedS, 3),
    end_to_end_s: common.round(endToEndS, 2),
    end_to_end_db_s: common.round(Number(span.s), 2),
    jobs_per_minute: common.round((args.jobs / Number(span.s)) * 60, 1),
    run_s_median: common.round(common.median(runS), 3),
    run_s_max: common.round(Math.max(...runS), 3),
    succeeded: statuses.filter((s) => s === 'succeeded').length,
    statuses: Object.fromEntries([...new Set(statuses)].map((s) => [s, statuses.filter((x) => x === s).length])),
    ran_twice: ranTwice,
    workers_used: workersUsed.n,
    queue_positions: checkQueuePositions(snapshots, order),
  };
}

// ------------------------------------------------------------------------------------ (b) ingestion

/** A writer process: inserts its share in batches once the parent says go, reports its timings. */
async function writerMain() {
  const [url, jobId, pointsText, batchText] = process.argv.slice(3);
  const points = Number(pointsText);
  const batch = Number(batchText);
  const db = await import('@expertune/db');
  const dataSource = await db.connect(db.createDataSource({ url, poolSize: 1 }));
  await new Promise((resolve) => {
    process.once('message', resolve);
    process.send({ ready: true });
  });
  const latencies = [];
  let inserted = 0;
  const started = performance.now();
  while (inserted < points) {
    // Point k is metric k % 10 at step ⌊k / 10⌋ + 1: a batch of 200 is 20 steps of 10 metrics.
    const rows = Array.from({ length: Math.min(batch, points - inserted) }, (_, i) => {
      const k = inserted + i;
      return {
        jobId,
        name: METRIC_NAMES[k % METRIC_NAMES.length],
        step: Math.floor(k / METRIC_NAMES.length) + 1,
        value: Math.random(),
      };
    });
    const t = performance.now();
    const added = await db.insertMetrics(dataSource, rows);
    latencies.push(performance.now() - t);
    if (added !== rows.length) throw new Error(`insertMetrics added ${added} of ${rows.length} rows`);
    inserted += rows.length;
  }
  const seconds = (performance.now() - started) / 1000;
  await dataSource.destroy();
  latencies.sort((a, b) => a - b);
  const result = {
    points: inserted,
    batches: latencies.length,
    seconds,
    p50_ms: latencies[Math.floor(latencies.length * 0.5)],
    p99_ms: latencies[Math.min(latencies.length - 1, Math.floor(latencies.length * 0.99))],
  };
  await new Promise((resolve) => process.send(result, resolve));
  process.disconnect();
}

async function ingestionPhase(args, ctx) {
  const { dataSource } = ctx;
  const share = Math.ceil(args.points / args.writers);
  const jobIds = [];
  for (let i = 0; i < args.writers; i++) {
    // Finished rows: nothing re-enqueues them (the API is stopped anyway).
    const [row] = await dataSource.query(
      `INSERT INTO jobs (status, method, base_model_id, training_dataset_id, config, seed, finished_at)
       VALUES ('succeeded', 'mola', $1, $2, '{}', 0, now()) RETURNING id`,
      [ctx.modelId, ctx.datasetId],
    );
    jobIds.push(row.id);
  }
  const writers = jobIds.map((jobId) => {
    const child = fork(SELF, ['--writer', ctx.databaseUrl, jobId, String(share), String(args.batch)], {
      stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
    });
    const messages = [];
    const waiters = [];
    child.on('message', (m) => (waiters.length ? waiters.shift()(m) : messages.push(m)));
    const next = () =>
      new Promise((resolve, reject) => {
        if (messages.length) return resolve(messages.shift());
        waiters.push(resolve);
        child.once('exit', (code) => code !== 0 && reject(new Error(`writer exited with ${code}`)));
      });
    return { child, next };
  });
  await Promise.all(writers.map((w) => w.next()));
  const a = common.cpuSnapshot();
  const started = performance.now();
  for (const w of writers) w.child.send({ go: true });
  const results = await Promise.all(writers.map((w) => w.next()));
  const wall = (performance.now() - started) / 1000;
  const load = common.loadBetween(a, common.cpuSnapshot());
  const [count] = await dataSource.query(`SELECT count(*)::int AS n FROM metrics WHERE job_id = ANY($1::uuid[])`, [
    jobIds,
  ]);
  const points = results.reduce((sum, r) => sum + r.points, 0);
  return {
    writers: args.writers,
    batch: args.batch,
    points,
    rows_in_table: count.n,
    wall_s: common.round(wall, 3),
    points_per_s: Math.round(points / wall),
    target_points_per_s: TARGET_POINTS_PER_S,
    pass: points / wall >= TARGET_POINTS_PER_S && count.n === points,
    per_writer: results.map((r) => ({
      points: r.points,
      batches: r.batches,
      seconds: common.round(r.seconds, 3),
      points_per_s: Math.round(r.points / r.seconds),
      batch_p50_ms: common.round(r.p50_ms, 2),
      batch_p99_ms: common.round(r.p99_ms, 2),
    })),
    load,
  };
}

// ------------------------------------------------------------------------------------ main

async function main() {
  const args = parseCommandLine(process.argv.slice(2));
  const startedAt = new Date();
  if (args.build) {
    ensureAppBuilt('api');
    ensureAppBuilt('worker');
  }
  for (const lib of ['db', 'trainer', 'contracts'])
    if (!existsSync(join(ROOT, 'libs', lib, 'dist')))
      throw new Error(`libs/${lib} is not built: run \`npm run build\` first`);
  const db = await import('@expertune/db');
  const testing = await import('@expertune/db/testing');
  const { initRandomModel } = await import('@expertune/trainer');

  const dir = mkdtempSync(join(tmpdir(), 'expertune-bench-api-'));
  const dataDir = join(dir, 'data');
  mkdirSync(dataDir, { recursive: true });
  const modelDir = join(dir, 'models', 'tiny');
  const processes = [];
  let database = null; // { url, name, suffix, drop() } of @expertune/db/testing
  let queuePrefix = null;
  let dataSource = null;
  let report;
  try {
    database = await testing.createTestDatabase({ prefix: 'expertune_bench_api' });
    const databaseUrl = database.url;
    queuePrefix = `expertune-bench-api-${database.suffix}`;
    dataSource = await db.connect(db.createDataSource({ url: databaseUrl, poolSize: 2 }));
    initRandomModel(modelDir, 'tiny', 5);
    const { key } = await db.createApiKey(dataSource, { name: 'bench-api', scopes: ['launch'] });
    const port = await freePort();
    const baseUrl = `http://127.0.0.1:${port}`;
    const shared = {
      ...process.env,
      DATABASE_URL: databaseUrl,
      REDIS_URL,
      EXPERTUNE_DATA_DIR: dataDir,
      EXPERTUNE_QUEUE_PREFIX: queuePrefix,
    };
    const apiProcess = startProcess('api', API_MAIN, {
      ...shared,
      PORT: String(port),
      HOST: '127.0.0.1',
      EXPERTUNE_ACCELERATORS: 'cpu',
      // The poller makes more than the default 600 requests a minute.
      EXPERTUNE_RATE_LIMIT_PER_MINUTE: '0',
    });
    processes.push(apiProcess);
    for (let i = 0; i < args.workers; i++)
      processes.push(
        startProcess(`worker ${i + 1}`, WORKER_BIN, {
          ...shared,
          EXPERTUNE_ACCELERATOR: 'cpu',
          EXPERTUNE_WORKER_ID: `bench-worker-${i + 1}`,
          EXPERTUNE_TRAINER_THREADS: '1',
          EXPERTUNE_METRIC_FLUSH_MS: '200',
        }),
      );
    await waitUntil(
      'the API /health',
      async () => {
        if (!apiProcess.running()) throw new Error(`the API exited:\n${apiProcess.output()}`);
        try {
          const response = await fetch(`${baseUrl}/health`);
          await response.body?.cancel();
          return response.status === 200;
        } catch {
          return false;
        }
      },
      60_000,
    );
    for (const w of processes.slice(1))
      await waitUntil(
        `${w.name} to start`,
        () => {
          if (!w.running()) throw new Error(`${w.name} exited:\n${w.output()}`);
          return / on queue /.test(w.output());
        },
        60_000,
      );
    log(`API on ${baseUrl}, ${args.workers} workers ready`);
    const ctx = { call: api(baseUrl, key), db, dataSource, modelDir, databaseUrl };
    const jobsLoad = common.cpuSnapshot();
    const jobs = await jobsPhase(args, ctx);
    jobs.load = common.loadBetween(jobsLoad, common.cpuSnapshot());
    for (const p of processes) await p.stop();
    log(`jobs done; ingesting ${args.points} points …`);
    const ingestion = await ingestionPhase(args, ctx);

    const machine = common.machineInfo();
    report = {
      benchmark: 'api',
      date: startedAt.toISOString(),
      machine: { ...machine, memory_gib: common.round(totalmem() / 2 ** 30, 1) },
      provenance: common.provenance(),
      settings: args,
      jobs,
      ingestion,
      pass: jobs.succeeded === args.jobs && jobs.ran_twice === 0 && jobs.queue_positions.ok && ingestion.pass,
    };
    common.writeReport(report, args, startedAt);

    console.log(
      `\nmachine: ${machine.cpu.model ?? 'unknown CPU'}, ${machine.cpu.cpus} CPUs, node ${machine.node}, ` +
        `${report.machine.memory_gib} GiB`,
    );
    common.printRows(
      ['measure', 'value', 'target', 'verdict'],
      [
        [
          `jobs succeeded (${args.workers} workers)`,
          `${jobs.succeeded}/${args.jobs}`,
          'all',
          common.verdict(jobs.succeeded === args.jobs),
        ],
        ['jobs with more than one attempt', jobs.ran_twice, '0', common.verdict(jobs.ran_twice === 0)],
        [
          'queue positions (rounds / stable / problems)',
          `${jobs.queue_positions.rounds} / ${jobs.queue_positions.stable_rounds} / ${jobs.queue_positions.problems.length}`,
          'consistent',
          common.verdict(jobs.queue_positions.ok),
        ],
        [`end to end, ${args.jobs} jobs × ${args.steps} steps (s)`, common.fmt(jobs.end_to_end_s, 2), '', ''],
        ['  same, created_at → last finished_at (s)', common.fmt(jobs.end_to_end_db_s, 2), '', ''],
        ['  one job, started → finished, median (s)', common.fmt(jobs.run_s_median, 2), '', ''],
        [
          `metric ingestion (${args.writers} writers, batches of ${args.batch}) points/s`,
          ingestion.points_per_s,
          `≥ ${TARGET_POINTS_PER_S}`,
          common.verdict(ingestion.pass),
        ],
        ['  points inserted / rows in table', `${ingestion.points} / ${ingestion.rows_in_table}`, '', ''],
        [
          '  batch latency p50 / p99 (ms)',
          ingestion.per_writer
            .map((w) => `${common.fmt(w.batch_p50_ms, 1)}/${common.fmt(w.batch_p99_ms, 1)}`)
            .join(', '),
          '',
          '',
        ],
      ],
      new Set([0]),
    );
    if (jobs.queue_positions.problems.length)
      console.log('\nqueue position problems:\n  ' + jobs.queue_positions.problems.join('\n  '));
    console.log(`\nJSON: ${report.outFile}`);
  } catch (error) {
    for (const p of processes) if (p.output()) console.error(`--- ${p.name}\n${p.output().slice(-3000)}`);
    throw error;
  } finally {
    for (const p of processes) await p.stop();
    await dataSource?.destroy();
    if (!args.keep) {
      await database?.drop().catch((e) => log(`drop database: ${e.message}`));
      if (queuePrefix) {
        const { Redis } = await import('ioredis');
        const redis = new Redis(REDIS_URL, { lazyConnect: true, maxRetriesPerRequest: 1 });
        await testing.deleteRedisKeys(redis, `${queuePrefix}:*`).catch((e) => log(`redis cleanup: ${e.message}`));
      }
      rmSync(dir, { recursive: true, force: true });
    } else log(`kept database ${database?.name}, prefix ${queuePrefix}, directory ${relative(ROOT, dir) || dir}`);
  }
  if (report && !report.pass) process.exitCode = 1;
}

if (process.argv[2] === '--writer') common.runScript(writerMain);
else common.runScript(main);
