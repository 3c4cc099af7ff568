// What bench/engine-cpu/run.mjs and bench/methods-cpu/run.mjs share: the model sizes and the
// training settings, the command line, the builds, child processes (workers of the script itself
// and the PyTorch peers), the load measurement and `--wait-idle`, the model set-up inside a
// native/tfjs worker, and the report (machine, provenance, JSON file, tables). See bench/README.md.
import { execFileSync, spawn } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, readdirSync, statSync, writeFileSync } from 'node:fs';
import { cpus } from 'node:os';
import { dirname, join, relative } from 'node:path';
import { performance } from 'node:perf_hooks';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';

export const root = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
export const PYTHON = '/usr/bin/python3';
export const BENCH_SGEMM = join(root, 'native', 'build-ctest', 'bench_sgemm');
export const ADDON = join(root, 'native', 'build', 'Release', 'expertune.node');
export const ENGINE_DIST = join(root, 'libs', 'engine', 'dist', 'index.js');
// The adapter-method registry that `@expertune/engine` re-exports (defaultAdapterConfig, …): the
// runner itself imports only this module, not the engine (whose import loads the addon and tfjs).
export const ENGINE_METHODS_DIST = join(root, 'libs', 'engine', 'dist', 'methods', 'index.js');
export const RANDOM_MODEL_DIST = join(root, 'libs', 'engine', 'dist', 'testing', 'random-model.js');
export const FORMATS_DIST = join(root, 'libs', 'formats', 'dist', 'index.js');
export const RESULT_TAG = '@@BENCH_RESULT ';

// The benchmark model, in every peer. Intermediate size 1408 = 2.75 × 512 (TinyLlama's ratio).
export const FULL_MODEL = {
  hidden: 512,
  layers: 8,
  heads: 8,
  kvHeads: 4,
  intermediate: 1408,
  vocab: 8192,
  seq: 512,
  batch: 4,
};
// A smoke-test size that runs in seconds.
export const SMALL_MODEL = {
  hidden: 64,
  layers: 2,
  heads: 4,
  kvHeads: 2,
  intermediate: 176,
  vocab: 256,
  seq: 64,
  batch: 2,
};
export const TRAIN = { lr: 1e-4, beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0, maxGradNorm: 1, seed: 0 };

// ------------------------------------------------------------------------------------ helpers

export const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  const mid = Math.floor(s.length / 2);
  return s.length % 2 ? s[mid] : (s[mid - 1] + s[mid]) / 2;
};
export const round = (x, digits = 4) => (x === null || x === undefined ? null : Number(x.toFixed(digits)));
export const fmt = (x, digits = 2) => (x === null || x === undefined || Number.isNaN(x) ? '—' : x.toFixed(digits));
export const log = (...parts) => console.error('[bench]', ...parts);

/** Runs `main` as the script: an error ends the process with its stack and status 1. */
export function runScript(main) {
  main().catch((error) => {
    console.error(error?.stack ?? String(error));
    process.exit(1);
  });
}

// ------------------------------------------------------------------------------------ command line

/** `positiveInt(min)`: an option's value, an integer ≥ min. */
export const positiveInt =
  (min = 1) =>
  (text, flag, usage) => {
    const n = Number(text);
    if (!Number.isInteger(n) || n < min) usage(`${flag} must be an integer >= ${min}, got '${text}'`);
    return n;
  };

/** The options both runners take; `--worker` is how a runner starts itself in a child process. */
export const COMMON_OPTIONS = {
  threads: { default: 2, parse: positiveInt(1) },
  iters: { default: 5, parse: positiveInt(1) },
  warmup: { default: 2, parse: positiveInt(0) },
  'wait-idle': { default: 0, parse: positiveInt(0) },
  small: { default: false },
  'no-build': { key: 'build', default: true, set: false },
  out: { default: null, parse: (text) => text },
  worker: { default: null, parse: (text) => text },
};

const camelCase = (flag) => flag.replace(/-(.)/g, (_, c) => c.toUpperCase());

/**
 * Parses `argv` against `options` ({flag: {key?, default, parse?, set?}}, flags without their
 * `--`): an option with `parse(text, '--flag', usage)` takes a value, one without sets `set`
 * (default true). Arguments are taken in order: the first one that is not an option as written
 * (`--flag=value` included), or a bad value, prints `help` with the error and exits 2; `--help`
 * or `-h` prints it and exits 0. `check(args, usage)` validates the whole. Returns
 * {key: value}, keys camel-cased from the flags unless given.
 */
export function parseCommandLine(argv, { help, options, check = () => {} }) {
  const usage = (error) => {
    if (error) {
      console.error(`run.mjs: ${error}\n${help}`);
      process.exit(2);
    }
    console.log(help);
    process.exit(0);
  };
  const args = Object.fromEntries(Object.entries(options).map(([flag, o]) => [o.key ?? camelCase(flag), o.default]));
  const { tokens } = parseArgs({
    args: argv,
    options: {
      help: { type: 'boolean', short: 'h' },
      ...Object.fromEntries(
        Object.entries(options).map(([flag, o]) => [flag, { type: o.parse ? 'string' : 'boolean' }]),
      ),
    },
    strict: false,
    allowPositionals: true,
    tokens: true,
  });
  for (const token of tokens) {
    const option = token.kind === 'option' && Object.hasOwn(options, token.name) ? options[token.name] : null;
    if (token.kind === 'option' && token.name === 'help' && argv[token.index] === token.rawName) usage(null);
    if (!option || argv[token.index] !== token.rawName) usage(`unknown argument '${argv[token.index]}'`);
    const key = option.key ?? camelCase(token.name);
    if (!option.parse) args[key] = option.set ?? true;
    else if (token.value === undefined) usage(`${token.rawName} needs a value`);
    else args[key] = option.parse(token.value, token.rawName, usage);
  }
  check(args, usage);
  return args;
}

// ------------------------------------------------------------------------------------ builds

export function newestMtime(path, extensions) {
  if (!existsSync(path)) return 0;
  const st = statSync(path);
  if (!st.isDirectory()) return st.mtimeMs;
  let newest = 0;
  for (const entry of readdirSync(path)) {
    if (entry === 'node_modules' || entry === 'dist' || entry.startsWith('build')) continue;
    const p = join(path, entry);
    const s = statSync(p);
    if (s.isDirectory()) newest = Math.max(newest, newestMtime(p, extensions));
    else if (extensions.some((e) => entry.endsWith(e))) newest = Math.max(newest, s.mtimeMs);
  }
  return newest;
}
export const mtime = (p) => (existsSync(p) ? statSync(p).mtimeMs : 0);

/**
 * Builds what is missing or older than its sources: the addon (`npm run build:native`),
 * `bench_sgemm` when `sgemm`, and `tsc` for libs/formats and libs/engine. Returns what was (re)built
 * and, with `--no-build` (`args.build` false), what is stale (a warning); a missing output is then
 * an error when `requireOutputs`. `needed` false (nothing of it will run): nothing is built or reported.
 */
export function ensureBuilds(args, { sgemm = false, requireOutputs = false, needed = true } = {}) {
  const built = [];
  const nativeSources = Math.max(
    newestMtime(join(root, 'native', 'src'), ['.cpp', '.h', '.inc']),
    newestMtime(join(root, 'native', 'include'), ['.h']),
    newestMtime(join(root, 'native', 'binding'), ['.cc', '.h']),
    mtime(join(root, 'native', 'CMakeLists.txt')),
  );
  const addonStale = mtime(ADDON) < nativeSources;
  const sgemmStale =
    sgemm && mtime(BENCH_SGEMM) < Math.max(nativeSources, newestMtime(join(root, 'native', 'bench'), ['.cpp']));
  const formatsStale = mtime(FORMATS_DIST) < newestMtime(join(root, 'libs', 'formats', 'src'), ['.ts']);
  const engineStale =
    mtime(ENGINE_DIST) < newestMtime(join(root, 'libs', 'engine', 'src'), ['.ts']) || !existsSync(RANDOM_MODEL_DIST);
  if (!needed) return { built, stale: [] };
  if (!args.build) {
    const outputs = [ADDON, ...(sgemm ? [BENCH_SGEMM] : []), FORMATS_DIST, ENGINE_DIST, RANDOM_MODEL_DIST];
    const missing = requireOutputs ? outputs.filter((p) => !existsSync(p)) : [];
    if (missing.length) throw new Error(`--no-build, but missing: ${missing.map((p) => relative(root, p)).join(', ')}`);
    const stale = [
      addonStale && 'addon',
      sgemmStale && 'bench_sgemm',
      formatsStale && 'libs/formats/dist',
      engineStale && 'libs/engine/dist',
    ].filter(Boolean);
    if (stale.length) log(`warning: older than their sources (--no-build): ${stale.join(', ')}`);
    return { built, stale };
  }
  // The native builds are incremental: when sources were only touched, the outputs stay older
  // than them, so "built" lists what actually changed.
  if (addonStale) {
    const before = mtime(ADDON);
    runVisible('npm', ['run', 'build:native']);
    if (mtime(ADDON) !== before) built.push('addon');
  }
  if (sgemmStale) {
    const before = mtime(BENCH_SGEMM);
    if (existsSync(join(root, 'native', 'build-ctest', 'CMakeCache.txt'))) {
      // The standalone build exists: bring only the benchmark up to date (no CTest run).
      const buildDir = join(root, 'native', 'build-ctest');
      runVisible('cmake', ['--build', buildDir, '--target', 'bench_sgemm', '-j', String(cpus().length)]);
    } else {
      runVisible('node', [join(root, 'scripts', 'build-native.mjs'), '--ctest']);
    }
    if (mtime(BENCH_SGEMM) !== before) built.push('bench_sgemm');
  }
  const tsc = join(root, 'node_modules', '.bin', 'tsc');
  if (formatsStale) {
    runVisible(tsc, ['-p', join(root, 'libs', 'formats', 'tsconfig.build.json')]);
    built.push('libs/formats/dist');
  }
  if (engineStale || formatsStale) {
    runVisible(tsc, ['-p', join(root, 'libs', 'engine', 'tsconfig.build.json')]);
    built.push('libs/engine/dist');
  }
  return { built, stale: [] };
}

// ------------------------------------------------------------------------------------ machine load
// The machine may be shared: other processes' CPU time during each phase is measured from
// /proc/stat (all CPUs) minus this process and its reaped children (/proc/self/stat), so a run
// taken under contention shows it. Linux only; null elsewhere.
const CLK_TCK = 100;

export function cpuSnapshot() {
  try {
    const cpu = readFileSync('/proc/stat', 'utf8').split('\n')[0].trim().split(/\s+/).slice(1).map(Number);
    const [user, nice, system, , , irq, softirq, steal] = cpu;
    const self = readFileSync('/proc/self/stat', 'utf8');
    const f = self
      .slice(self.lastIndexOf(')') + 2)
      .split(' ')
      .map(Number);
    // Fields 14-17 (utime, stime, cutime, cstime) are at 11..14 after the state field.
    const own = f[11] + f[12] + f[13] + f[14];
    return { t: performance.now(), busy: user + nice + system + irq + softirq, steal, own };
  } catch {
    return null;
  }
}

export function loadBetween(a, b) {
  if (!a || !b) return null;
  const wall = (b.t - a.t) / 1000;
  const own = (b.own - a.own) / CLK_TCK;
  const foreign = Math.max(0, (b.busy - a.busy) / CLK_TCK - own);
  return {
    wall_s: round(wall, 2),
    own_cpu_s: round(own, 2),
    foreign_cpu_s: round(foreign, 2),
    foreign_cores: round(foreign / wall, 3),
    steal_cores: round((b.steal - a.steal) / CLK_TCK / wall, 3),
  };
}

/** Waits (up to maxS seconds) until other processes use < 0.1 core over 3 s. */
export async function waitIdle(maxS) {
  if (maxS <= 0) return null;
  const start = performance.now();
  for (;;) {
    const a = cpuSnapshot();
    await new Promise((r) => setTimeout(r, 3000));
    const l = loadBetween(a, cpuSnapshot());
    if (!l || l.foreign_cores < 0.1) return round((performance.now() - start) / 1000, 1);
    if ((performance.now() - start) / 1000 > maxS) {
      log(`machine still busy after ${maxS} s (others: ${l.foreign_cores} cores); going on`);
      return round((performance.now() - start) / 1000, 1);
    }
    log(`waiting for an idle machine (others use ${l.foreign_cores} cores) …`);
  }
}

/**
 * The phases of a run: `settle(name)` waits up to `waitIdleS` seconds for a quiet machine (the
 * wait goes to `waited`), `phase(name, fn)` runs fn and records the load of other processes
 * meanwhile in `load[name]` (a warning when they used more than 0.1 core).
 */
export function phases(waitIdleS) {
  const load = {};
  const waited = {};
  return {
    load,
    waited,
    async settle(name) {
      const w = await waitIdle(waitIdleS);
      if (w !== null) waited[name] = w;
    },
    async phase(name, fn) {
      const a = cpuSnapshot();
      try {
        return await fn();
      } finally {
        load[name] = loadBetween(a, cpuSnapshot());
        const l = load[name];
        if (l && l.foreign_cores > 0.1)
          log(`warning: other processes used ${l.foreign_cores} cores on average during '${name}' (${l.wall_s} s)`);
      }
    },
  };
}

// ------------------------------------------------------------------------------------ processes

export function runVisible(cmd, args, env = process.env) {
  log(`$ ${cmd} ${args.join(' ')}`);
  execFileSync(cmd, args, { cwd: root, stdio: ['ignore', 'inherit', 'inherit'], env });
}

/** Runs a command, streams its stderr, returns its stdout; rejects on a non-zero exit. */
export function runCapture(cmd, argv, { env = process.env, timeoutS = 0 } = {}) {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, argv, { cwd: root, env, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let timer = null;
    if (timeoutS > 0) timer = setTimeout(() => child.kill('SIGTERM'), timeoutS * 1000);
    child.stdout.on('data', (d) => (out += d));
    child.stderr.on('data', (d) => process.stderr.write(d));
    child.on('error', reject);
    child.on('close', (code, signal) => {
      if (timer) clearTimeout(timer);
      if (code === 0) resolve(out);
      else reject(Object.assign(new Error(`${cmd} ${argv.join(' ')} exited with ${signal ?? code}`), { stdout: out }));
    });
  });
}

export function lastJsonLine(text, tag = '') {
  const lines = text.split('\n').filter((l) => l.startsWith(tag ? tag : '{'));
  if (!lines.length) throw new Error(`no JSON result in output:\n${text.slice(-2000)}`);
  return JSON.parse(lines[lines.length - 1].slice(tag.length));
}

/** `{name: value}` as command-line flags `--name value`. */
export function flags(values) {
  return Object.entries(values).flatMap(([name, value]) => [`--${name}`, String(value)]);
}

/**
 * Runs `script --worker <job> …argv` in a child node process and resolves to the result it
 * printed (see workerMain). When the worker exits non-zero, rejects with the exit in `message`
 * and, in `detail`, the error the worker printed as its result ('' when it crashed without one).
 */
export async function runWorker(script, job, argv) {
  let out;
  try {
    out = await runCapture(process.execPath, [script, '--worker', job, ...argv]);
  } catch (error) {
    let detail = '';
    try {
      detail = lastJsonLine(error.stdout ?? '', RESULT_TAG).error ?? '';
    } catch {
      // no result line: the worker crashed
    }
    throw Object.assign(error, { detail });
  }
  return lastJsonLine(out, RESULT_TAG);
}

/** Inside a worker: prints fn's result (or its error, then exit status 1) as RESULT_TAG + JSON. */
export async function workerMain(fn) {
  let result;
  try {
    result = await fn();
  } catch (error) {
    result = { error: error?.stack ?? String(error) };
    process.exitCode = 1;
  }
  process.stdout.write(RESULT_TAG + JSON.stringify(result) + '\n');
}

/** How a PyTorch peer runs: OMP_WAIT_POLICY=PASSIVE or as the environment has it. */
export const torchSetting = (passive) => (passive ? 'OMP_WAIT_POLICY=PASSIVE' : 'as-is');

/**
 * Runs a PyTorch peer script with /usr/bin/python3 (OMP_WAIT_POLICY=PASSIVE when `passive`, else
 * unset) with the run's `threads`, `iters`, `warmup`, the model `m`, `extra` and the training
 * settings as flags; resolves to the JSON line it prints.
 */
export async function runTorch(script, args, m, passive, extra) {
  const env = { ...process.env };
  if (passive) env.OMP_WAIT_POLICY = 'PASSIVE';
  else delete env.OMP_WAIT_POLICY;
  const argv = flags({
    threads: args.threads,
    iters: args.iters,
    warmup: args.warmup,
    hidden: m.hidden,
    layers: m.layers,
    heads: m.heads,
    'kv-heads': m.kvHeads,
    intermediate: m.intermediate,
    vocab: m.vocab,
    seq: m.seq,
    batch: m.batch,
    ...extra,
    lr: TRAIN.lr,
    'max-grad-norm': TRAIN.maxGradNorm,
    seed: TRAIN.seed,
  });
  return lastJsonLine(await runCapture(PYTHON, [script, ...argv], { env }));
}

// ------------------------------------------------------------------------------------ workers

/**
 * Inside a worker: the engine (`Engine.create(kind, engineOptions)`) with a random Llama of size
 * `m` (testing/random-model); `makeOptimizer()` an Optimizer with TRAIN's settings, `makeBatch()`
 * the benchmark's batch; `t0` is when the model's creation began (for `setup_s`).
 */
export async function randomModel(m, kind, engineOptions) {
  const engineLib = await import(pathToFileURL(ENGINE_DIST).href);
  const testing = await import(pathToFileURL(RANDOM_MODEL_DIST).href);
  const config = testing.randomLlamaConfig({
    vocabSize: m.vocab,
    hiddenSize: m.hidden,
    intermediateSize: m.intermediate,
    numLayers: m.layers,
    numHeads: m.heads,
    numKvHeads: m.kvHeads,
    headDim: m.hidden / m.heads,
    maxPositionEmbeddings: Math.max(2048, m.seq),
  });
  const engine = engineLib.Engine.create(kind, engineOptions);
  const t0 = performance.now();
  const model = await engine.createModel(config);
  for (const [name, values] of testing.randomWeights(config, 1)) model.backend.setTensor(name, values);
  const makeOptimizer = () =>
    new engineLib.Optimizer(model, {
      beta1: TRAIN.beta1,
      beta2: TRAIN.beta2,
      eps: TRAIN.eps,
      weightDecay: TRAIN.weightDecay,
      maxGradNorm: TRAIN.maxGradNorm,
      seed: TRAIN.seed,
      recompute: false,
      schedule: { kind: 'constant', lr: TRAIN.lr, warmupSteps: 0, totalSteps: 1000, minLrRatio: 0 },
    });
  const makeBatch = () =>
    testing.randomTrainBatch(config, { batch: m.batch, seqLen: m.seq, seed: 4, ignoredFraction: 0 });
  return { engineLib, testing, config, model, t0, makeOptimizer, makeBatch };
}

/** Step times of a worker's warm-up and timed steps ({s, loss} each), for its result. */
export function stepTimes(warm, timed, m) {
  const times = timed.map((r) => r.s);
  return {
    warmup_seconds: warm.map((r) => round(r.s, 4)),
    step_seconds: times.map((t) => round(t, 4)),
    median_s: round(median(times), 4),
    best_s: round(Math.min(...times), 4),
    tokens_per_s: round((m.batch * m.seq) / median(times), 2),
    loss_first: warm.length ? warm[0].loss : timed[0].loss,
    loss_last: timed[timed.length - 1].loss,
  };
}

// ------------------------------------------------------------------------------------ report

/** Which code was measured: the commit, whether native/ or libs/ differ from it, the binaries' dates. */
export function provenance() {
  const git = (...argv) => {
    try {
      return execFileSync('git', argv, { cwd: root, encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim();
    } catch {
      return null;
    }
  };
  const date = (p) => (existsSync(p) ? statSync(p).mtime.toISOString() : null);
  return {
    commit: git('rev-parse', '--short', 'HEAD'),
    uncommitted_changes: (git('status', '--porcelain', '--', 'native', 'libs/engine', 'libs/formats') ?? '')
      .split('\n')
      .filter(Boolean),
    addon_built: date(ADDON),
    bench_sgemm_built: date(BENCH_SGEMM),
    engine_dist_built: date(ENGINE_DIST),
  };
}

export function lscpuModel() {
  try {
    const text = execFileSync('lscpu', { encoding: 'utf8' });
    const field = (name) => text.match(new RegExp(`^${name}:\\s*(.+)$`, 'm'))?.[1]?.trim() ?? null;
    return {
      model: field('Model name'),
      cpus: Number(field('CPU\\(s\\)')),
      threadsPerCore: Number(field('Thread\\(s\\) per core')),
      flags: (field('Flags') ?? '').split(' ').filter((f) => /^(avx2|avx512f|avx512_bf16|fma|avx_vnni)$/.test(f)),
    };
  } catch {
    return { model: null, cpus: cpus().length };
  }
}

/** The report's `machine` fields both runners have: the CPU, node, and the BLAS/OpenMP variables. */
export function machineInfo() {
  return {
    cpu: lscpuModel(),
    node: process.version,
    env: Object.fromEntries(
      ['OPENBLAS_CORETYPE', 'OPENBLAS_L2_SIZE', 'OMP_WAIT_POLICY', 'OMP_NUM_THREADS', 'OPENBLAS_NUM_THREADS'].map(
        (k) => [k, process.env[k] ?? null],
      ),
    ),
  };
}

/** The report's `load`: other processes' CPU use per phase (see phases()). */
export function loadReport(note, { load, waited }) {
  return {
    note,
    loadavg_end: existsSync('/proc/loadavg') ? readFileSync('/proc/loadavg', 'utf8').trim() : null,
    waited_for_idle_s: waited,
    phases: load,
  };
}

/**
 * Writes the report to `--out` or bench/out/<benchmark>-<date>[-small].json and sets its
 * `outFile` (relative to the repository).
 */
export function writeReport(report, args, started) {
  const date = started.toISOString().replace(/[:.]/g, '-');
  const outFile =
    args.out ?? join(root, 'bench', 'out', `${report.benchmark}-${date}${args.small ? '-small' : ''}.json`);
  mkdirSync(dirname(outFile), { recursive: true });
  report.outFile = relative(root, outFile);
  writeFileSync(outFile, JSON.stringify(report, null, 2) + '\n');
}

/** Prints a table: columns padded to their widest cell, those in `left` left-aligned, the others right. */
export function printRows(header, rows, left) {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => String(r[i]).length)));
  const line = (r) =>
    r.map((c, i) => (left.has(i) ? String(c).padEnd(widths[i]) : String(c).padStart(widths[i]))).join('  ');
  console.log(line(header));
  console.log(widths.map((w) => '-'.repeat(w)).join('  '));
  for (const r of rows) console.log(line(r));
}

/** The cores other processes used during a phase of the report, as the tables print it. */
export function others(report, phase) {
  const l = report.load.phases[phase];
  return l ? fmt(l.foreign_cores, 2) : '—';
}

/** A target's verdict as the tables print it. */
export const verdict = (pass) => (pass === null ? 'n/a ' : pass ? 'PASS' : 'FAIL');
