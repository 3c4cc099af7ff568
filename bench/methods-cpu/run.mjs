#!/usr/bin/env node
// Mixture-method CPU benchmark: the step time of each mixture adapter (MoLA top-2, LoRAMoE,
// DynMoLE, FlyLoRA) on the native engine, measured in one run against
//   - the native engine's plain LoRA at the same total rank (E·r = 64 for 8 experts of rank 8,
//     32 for FlyLoRA r = 32): the mixture's overhead (target ≤ 1.3×);
//   - the same step in PyTorch written the way the reference implementations run it, with a
//     Python loop over experts (bench/methods-cpu/torch_mixture_step.py): target ≥ 3× faster at
//     8 experts of rank 8.
//
//   node bench/methods-cpu/run.mjs [--threads N] [--iters N] [--warmup N] [--methods a,b,c]
//                                  [--skip-torch] [--skip-native] [--torch-setting passive|as-is|both]
//                                  [--small] [--wait-idle S] [--no-build] [--out FILE]
//
// The model is bench/engine-cpu's (hidden 512, 8 layers, 8/4 heads, intermediate 1408, vocab
// 8192, batch 4 × seq 512, float32). Each measurement runs in its own child process (this script
// with --worker for the native engine). See bench/README.md.
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, join, relative } from 'node:path';
import { performance } from 'node:perf_hooks';
import { fileURLToPath, pathToFileURL } from 'node:url';
import {
  flags,
  lastJsonLine,
  log,
  lscpuModel,
  median,
  mtime,
  newestMtime,
  phase,
  provenance,
  round,
  runCapture,
  runVisible,
  waitIdle,
} from '../engine-cpu/run.mjs';

const here = dirname(fileURLToPath(import.meta.url));
const root = join(here, '..', '..');
const PYTHON = '/usr/bin/python3';
const TORCH_SCRIPT = join(here, 'torch_mixture_step.py');
const ADDON = join(root, 'native', 'build', 'Release', 'expertune.node');
const ENGINE_DIST = join(root, 'libs', 'engine', 'dist', 'index.js');
const RANDOM_MODEL_DIST = join(root, 'libs', 'engine', 'dist', 'testing', 'random-model.js');
const FORMATS_DIST = join(root, 'libs', 'formats', 'dist', 'index.js');
const RESULT_TAG = '@@BENCH_RESULT ';

// bench/engine-cpu's model (intermediate 1408 = 2.75 × 512), and its smoke-test size.
const FULL = { hidden: 512, layers: 8, heads: 8, kvHeads: 4, intermediate: 1408, vocab: 8192, seq: 512, batch: 4 };
const SMALL = { hidden: 64, layers: 2, heads: 4, kvHeads: 2, intermediate: 176, vocab: 256, seq: 64, batch: 2 };
const TRAIN = { lr: 1e-4, beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0, maxGradNorm: 1, seed: 0 };
const MIXTURES = ['mola', 'loramoe', 'dynmole', 'flylora'];
// Targets (from the issue): overhead against plain LoRA of the same total rank, and the speed-up
// over the PyTorch per-expert loop at 8 experts of rank 8.
const TARGET_RATIO = 1.3;
const TARGET_SPEEDUP = 3;

// ------------------------------------------------------------------------------------ arguments

function parseArgs(argv) {
  const args = {
    threads: 2,
    iters: 5,
    warmup: 2,
    methods: [...MIXTURES],
    experts: 8,
    rank: 8,
    topK: 2,
    flyRank: 32,
    flyTopK: 8,
    skipTorch: false,
    skipNative: false,
    torchSetting: 'passive',
    small: false,
    build: true,
    waitIdle: 0,
    out: null,
    worker: null,
  };
  const value = (i, name) => {
    if (i + 1 >= argv.length) usage(`${name} needs a value`);
    return argv[i + 1];
  };
  const positiveInt = (text, name, min = 1) => {
    const n = Number(text);
    if (!Number.isInteger(n) || n < min) usage(`${name} must be an integer >= ${min}, got '${text}'`);
    return n;
  };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '--threads') args.threads = positiveInt(value(i++, a), a);
    else if (a === '--iters') args.iters = positiveInt(value(i++, a), a);
    else if (a === '--warmup') args.warmup = positiveInt(value(i++, a), a, 0);
    else if (a === '--experts') args.experts = positiveInt(value(i++, a), a);
    else if (a === '--rank') args.rank = positiveInt(value(i++, a), a);
    else if (a === '--top-k') args.topK = positiveInt(value(i++, a), a);
    else if (a === '--fly-rank') args.flyRank = positiveInt(value(i++, a), a);
    else if (a === '--fly-k') args.flyTopK = positiveInt(value(i++, a), a);
    else if (a === '--wait-idle') args.waitIdle = positiveInt(value(i++, a), a, 0);
    else if (a === '--methods') {
      args.methods = value(i++, a)
        .split(',')
        .map((s) => s.trim())
        .filter(Boolean);
      const unknown = args.methods.filter((m) => !MIXTURES.includes(m));
      if (unknown.length || !args.methods.length)
        usage(`--methods takes a comma-separated subset of ${MIXTURES.join(',')}, got '${argv[i]}'`);
    } else if (a === '--torch-setting') {
      args.torchSetting = value(i++, a);
      if (!['passive', 'as-is', 'both'].includes(args.torchSetting)) usage(`--torch-setting: passive, as-is or both`);
    } else if (a === '--skip-torch') args.skipTorch = true;
    else if (a === '--skip-native') args.skipNative = true;
    else if (a === '--small') args.small = true;
    else if (a === '--no-build') args.build = false;
    else if (a === '--out') args.out = value(i++, a);
    else if (a === '--worker') args.worker = value(i++, a);
    else if (a === '--help' || a === '-h') usage(null);
    else usage(`unknown argument '${a}'`);
  }
  if (args.topK > args.experts) usage('--top-k must be <= --experts');
  if (args.flyRank % args.flyTopK) usage('--fly-rank must be a multiple of --fly-k');
  return args;
}

function usage(error) {
  const text = `usage: node bench/methods-cpu/run.mjs [options]
  --threads N        threads of every peer (native pool, torch + OpenBLAS); default 2
  --iters N          timed steps per measurement (default 5)
  --warmup N         warm-up steps per measurement (default 2)
  --methods a,b      mixtures to measure (default mola,loramoe,dynmole,flylora); the plain-LoRA
                     references they need are always measured
  --experts N        experts per site (default 8)        --rank N   rank of each expert (default 8)
  --top-k N          MoLA's experts per token (default 2)
  --fly-rank N       FlyLoRA's rank (default 32)         --fly-k N  its active ranks (default 8)
  --torch-setting S  passive (OMP_WAIT_POLICY=PASSIVE, the faster one in bench/engine-cpu; default),
                     as-is, or both (the faster of the two is the reference)
  --skip-torch       do not run the PyTorch loop       --skip-native  do not run the native engine
  --small            tiny model (smoke test)
  --wait-idle S      before each measurement, wait up to S seconds for other processes to go quiet
  --no-build         do not (re)build the addon or the TypeScript dist
  --out FILE         JSON output (default bench/out/methods-cpu-<date>.json)`;
  if (error) {
    console.error(`run.mjs: ${error}\n${text}`);
    process.exit(2);
  }
  console.log(text);
  process.exit(0);
}

// ------------------------------------------------------------------------------------ what is measured

/**
 * The measurements of a run: each mixture in `args.methods`, and plain LoRA at each total rank
 * they are compared with. `alpha` is 2 × rank (s = 2) everywhere, as in MoLA (r 8, α 16) and
 * FlyLoRA (r 32, α 64).
 */
function plan(args, layers) {
  const totalRank = args.experts * args.rank;
  const routerCommon = {
    numExperts: Array(layers).fill(args.experts),
    balance: { coef: 1e-3, form: 'layer', scope: 'micro' },
    zLossCoef: 0,
  };
  const mixture = {
    mola: { method: 'mola', rank: args.rank, ...routerCommon, topK: Array(layers).fill(args.topK) },
    loramoe: { method: 'loramoe', rank: args.rank, ...routerCommon, blcAlpha: 0, blcWeight: 0 },
    dynmole: {
      method: 'dynmole',
      rank: args.rank,
      ...routerCommon,
      // DynMoLE's reference pools its load balance over every site of every layer.
      balance: { coef: 1e-3, form: 'pooled', scope: 'micro' },
      topP: 0.75,
      keepTopK: 2,
      entropyIndex: 1.1,
      entropyThreshold: 0.9,
      entropyEps: 1e-5,
      entropyCoef: 0.01,
    },
    flylora: { method: 'flylora', rank: args.flyRank, topK: args.flyTopK, select: 'signed', biasRate: 1e-3 },
  };
  const runs = [];
  const loraRun = (rank) => {
    const name = `lora-r${rank}`;
    if (!runs.some((r) => r.name === name))
      runs.push({ name, method: 'lora', adapter: { method: 'lora', rank }, expertRank: rank, totalRank: rank });
    return name;
  };
  for (const method of args.methods) {
    const adapter = mixture[method];
    const total = method === 'flylora' ? args.flyRank : totalRank;
    const reference = loraRun(total);
    runs.push({
      name: method,
      method,
      adapter,
      expertRank: method === 'flylora' ? 1 : args.rank,
      totalRank: total,
      reference,
      // "≥ 3× at 8 experts of rank 8": the routed mixtures; FlyLoRA (rank-1 experts) is reported.
      speedupTarget: method !== 'flylora',
    });
  }
  for (const r of runs) r.adapter = { useRslora: false, dropout: 0, seed: 2, ...r.adapter, alpha: 2 * r.adapter.rank };
  // Plain LoRA first, so the references are there for every mixture.
  return [...runs.filter((r) => r.method === 'lora'), ...runs.filter((r) => r.method !== 'lora')];
}

/** torch_mixture_step.py's flags for one run. */
function torchFlags(run, args, m) {
  const a = run.adapter;
  return flags({
    method: run.method,
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
    experts: args.experts,
    rank: a.rank,
    alpha: a.alpha,
    'top-k': run.method === 'flylora' ? a.topK : run.method === 'mola' ? args.topK : 2,
    lr: TRAIN.lr,
    'max-grad-norm': TRAIN.maxGradNorm,
    seed: TRAIN.seed,
  });
}

// ------------------------------------------------------------------------------------ builds

/** Builds the addon and the TypeScript dist when missing or older than their sources. */
function ensureBuilds(args) {
  const built = [];
  const nativeSources = Math.max(
    newestMtime(join(root, 'native', 'src'), ['.cpp', '.h', '.inc']),
    newestMtime(join(root, 'native', 'include'), ['.h']),
    newestMtime(join(root, 'native', 'binding'), ['.cc', '.h']),
    mtime(join(root, 'native', 'CMakeLists.txt')),
  );
  const addonStale = mtime(ADDON) < nativeSources;
  const formatsStale = mtime(FORMATS_DIST) < newestMtime(join(root, 'libs', 'formats', 'src'), ['.ts']);
  const engineStale =
    mtime(ENGINE_DIST) < newestMtime(join(root, 'libs', 'engine', 'src'), ['.ts']) || !existsSync(RANDOM_MODEL_DIST);
  if (!args.build || args.skipNative) {
    const stale = [addonStale && 'addon', formatsStale && 'libs/formats/dist', engineStale && 'libs/engine/dist'];
    if (!args.skipNative && stale.some(Boolean))
      log(`warning: older than their sources (--no-build): ${stale.filter(Boolean).join(', ')}`);
    return { built, stale: args.skipNative ? [] : stale.filter(Boolean) };
  }
  if (addonStale) {
    const before = mtime(ADDON);
    runVisible('npm', ['run', 'build:native']);
    if (mtime(ADDON) !== before) built.push('addon');
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

// ------------------------------------------------------------------------------------ peers

async function runNative(run, args) {
  const argv = [
    fileURLToPath(import.meta.url),
    '--worker',
    JSON.stringify(run),
    ...flags({ threads: args.threads, iters: args.iters, warmup: args.warmup }),
  ];
  if (args.small) argv.push('--small');
  let out;
  try {
    out = await runCapture(process.execPath, argv);
  } catch (error) {
    let detail = '';
    try {
      detail = lastJsonLine(error.stdout ?? '', RESULT_TAG).error ?? '';
    } catch {
      // no result line: the worker crashed
    }
    return { error: `${error.message}${detail ? ': ' + detail : ''}` };
  }
  return lastJsonLine(out, RESULT_TAG);
}

async function runTorch(run, args, m, passive) {
  const env = { ...process.env };
  if (passive) env.OMP_WAIT_POLICY = 'PASSIVE';
  else delete env.OMP_WAIT_POLICY;
  log(`pytorch loop, ${run.name} (${passive ? 'OMP_WAIT_POLICY=PASSIVE' : 'as-is'}) …`);
  try {
    const r = lastJsonLine(await runCapture(PYTHON, [TORCH_SCRIPT, ...torchFlags(run, args, m)], { env }));
    return { ...r, setting: passive ? 'OMP_WAIT_POLICY=PASSIVE' : 'as-is' };
  } catch (error) {
    return { error: error.message, setting: passive ? 'OMP_WAIT_POLICY=PASSIVE' : 'as-is' };
  }
}

// ------------------------------------------------------------------------------------ native worker

/** Deterministic uniform values in [−√3·std, √3·std) (standard deviation `std`). */
function uniformValues(engineLib, seed, salt, count, std) {
  const values = new Float32Array(count);
  const half = Math.sqrt(3) * std;
  for (let i = 0; i < count; i++) values[i] = (2 * engineLib.uniform(engineLib.hash3(seed, salt, i)) - 1) * half;
  return values;
}

/** Runs inside a child process: one adapter on the native engine; prints RESULT_TAG + JSON. */
async function worker(run, args) {
  const m = args.small ? SMALL : FULL;
  const engineLib = await import(pathToFileURL(ENGINE_DIST).href);
  const testing = await import(pathToFileURL(RANDOM_MODEL_DIST).href);
  const { Engine, Optimizer, PROJECTIONS, nativeInfo } = engineLib;
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
  const engine = Engine.create('native', { threads: args.threads });
  const t0 = performance.now();
  const model = await engine.createModel(config);
  for (const [name, values] of testing.randomWeights(config, 1)) model.backend.setTensor(name, values);
  const adapter = { ...run.adapter, targetModules: [...PROJECTIONS] };
  model.attachAdapter(adapter);
  // B ≠ 0 (as in torch_mixture_step.py), so every gradient, the routers' included, is non-trivial.
  const bNames = model.backend.tensorNames('adapter').filter((n) => /lora_B/.test(n));
  for (const name of bNames) {
    const count = model.backend.tensorShape(name).reduce((a, b) => a * b, 1);
    const std = 0.1 / Math.sqrt(run.expertRank);
    model.backend.setTensor(name, uniformValues(engineLib, 3, testing.hashName(name), count, std));
  }
  const optimizer = new Optimizer(model, {
    beta1: TRAIN.beta1,
    beta2: TRAIN.beta2,
    eps: TRAIN.eps,
    weightDecay: TRAIN.weightDecay,
    maxGradNorm: TRAIN.maxGradNorm,
    seed: TRAIN.seed,
    recompute: false,
    schedule: { kind: 'constant', lr: TRAIN.lr, warmupSteps: 0, totalSteps: 1000, minLrRatio: 0 },
  });
  const batch = testing.randomTrainBatch(config, { batch: m.batch, seqLen: m.seq, seed: 4, ignoredFraction: 0 });
  const result = {
    run: run.name,
    setup_s: round((performance.now() - t0) / 1000, 3),
    trainable_params: model.parameterCount('trainable'),
    adapter_tensors: model.backend.tensorNames('adapter').length,
    b_tensors_randomised: bNames.length,
    nativeInfo: nativeInfo(),
  };
  if (!bNames.length) result.warning = 'no lora_B tensor found: B left at its initial zero';

  const steps = [];
  model.routingStats(); // start the statistics at the first step
  for (let i = 0; i < args.warmup + args.iters; i++) {
    const s = performance.now();
    const r = await optimizer.step([batch]);
    const dt = (performance.now() - s) / 1000;
    steps.push({ s: dt, loss: r.loss, aux: r.aux });
    console.error(
      `  native ${run.name} step ${i}${i < args.warmup ? ' (warm-up)' : ''} ${dt.toFixed(3)} s  loss ${r.loss.toFixed(5)}` +
        (r.aux?.total ? `  aux ${r.aux.total.toFixed(5)}` : ''),
    );
  }
  const times = steps.slice(args.warmup).map((r) => r.s);
  Object.assign(result, {
    warmup_seconds: steps.slice(0, args.warmup).map((r) => round(r.s, 4)),
    step_seconds: times.map((t) => round(t, 4)),
    median_s: round(median(times), 4),
    best_s: round(Math.min(...times), 4),
    tokens_per_s: round((m.batch * m.seq) / median(times), 2),
    loss_first: steps[0].loss,
    loss_last: steps[steps.length - 1].loss,
    aux_last: steps[steps.length - 1].aux,
    routing: summariseRouting(model.routingStats()),
  });
  model.dispose();
  process.stdout.write(RESULT_TAG + JSON.stringify(result) + '\n');
}

/** Routing statistics over all steps, averaged over sites: experts per token, broadcast fraction. */
function summariseRouting(stats) {
  if (!stats?.length) return null;
  const mean = (xs) => xs.reduce((a, b) => a + b, 0) / xs.length;
  return {
    sites: stats.length,
    mean_experts_per_token: round(mean(stats.map((s) => s.load.reduce((a, b) => a + b, 0))), 4),
    broadcast_fraction: round(mean(stats.map((s) => s.broadcast)), 4),
    mean_entropy: stats[0].entropy === null ? null : round(mean(stats.map((s) => s.entropy)), 4),
  };
}

// ------------------------------------------------------------------------------------ report

const fmt = (x, digits = 2) => (x === null || x === undefined || Number.isNaN(x) ? '—' : x.toFixed(digits));

function rows(report) {
  const byName = new Map(report.runs.map((r) => [r.name, r]));
  return report.runs.map((r) => {
    const native = r.native?.median_s ?? null;
    const torch = r.pytorch?.median_s ?? null;
    const ref = r.reference ? (byName.get(r.reference)?.native?.median_s ?? null) : null;
    return {
      name: r.name,
      method: r.method,
      adapter:
        r.method === 'lora'
          ? `r=${r.totalRank}`
          : r.method === 'flylora'
            ? `r=${r.adapter.rank} k=${r.adapter.topK}`
            : `${report.mixture.experts}×r${report.mixture.rank}` +
              (r.method === 'mola' ? ` top-${report.mixture.topK}` : ''),
      reference: r.reference ?? null,
      native_s: native,
      native_tokens_per_s: r.native?.tokens_per_s ?? null,
      ratio_to_lora: native && ref ? round(native / ref, 4) : null,
      pytorch_s: torch,
      pytorch_setting: r.pytorch?.setting ?? null,
      speedup_vs_pytorch: native && torch ? round(torch / native, 4) : null,
      speedup_target: r.speedupTarget ?? false,
      native_error: r.native?.error ?? null,
      pytorch_error: r.pytorch?.error ?? null,
    };
  });
}

function targets(table, smoke) {
  const out = [];
  for (const row of table) {
    if (row.method === 'lora') continue;
    const verdict = (ok) => (ok === null || smoke ? null : ok);
    out.push({
      name: `${row.name} vs native LoRA ${row.reference}`,
      value: row.ratio_to_lora,
      target: `≤ ${TARGET_RATIO}×`,
      pass: verdict(row.ratio_to_lora === null ? null : row.ratio_to_lora <= TARGET_RATIO),
    });
    out.push({
      name: `${row.name} native vs PyTorch loop`,
      value: row.speedup_vs_pytorch,
      target: row.speedup_target ? `≥ ${TARGET_SPEEDUP}×` : 'reported (rank-1 experts, not 8×8)',
      pass: row.speedup_target
        ? verdict(row.speedup_vs_pytorch === null ? null : row.speedup_vs_pytorch >= TARGET_SPEEDUP)
        : null,
    });
  }
  return out;
}

function printTable(report) {
  const header = ['method', 'adapter', 'native s', 'tok/s', '÷ LoRA', 'torch loop s', 'speed-up', 'others'];
  const busy = (name) => {
    const l = report.load.phases[name];
    return l ? fmt(l.foreign_cores, 2) : '—';
  };
  const lines = report.table.map((r) => [
    r.name,
    r.adapter,
    r.native_error ? 'error' : fmt(r.native_s, 3),
    fmt(r.native_tokens_per_s, 0),
    r.ratio_to_lora === null ? '' : `${fmt(r.ratio_to_lora, 2)}× ${r.reference}`,
    r.pytorch_error ? 'error' : fmt(r.pytorch_s, 3),
    r.speedup_vs_pytorch === null ? '—' : `${fmt(r.speedup_vs_pytorch, 2)}×`,
    `${busy(`native_${r.name}`)} / ${busy(`pytorch_${r.name}`)}`,
  ]);
  const widths = header.map((h, i) => Math.max(h.length, ...lines.map((l) => String(l[i]).length)));
  const left = new Set([0, 1, 4]);
  const line = (r) =>
    r.map((c, i) => (left.has(i) ? String(c).padEnd(widths[i]) : String(c).padStart(widths[i]))).join('  ');
  console.log(`\nMixture step: ${report.model.label}`);
  console.log(`${report.threads} threads; PyTorch: ${report.torch_setting}`);
  console.log(line(header));
  console.log(widths.map((w) => '-'.repeat(w)).join('  '));
  for (const l of lines) console.log(line(l));
  console.log("('others': average cores used by other processes during the native / PyTorch measurement)\n");
  if (report.model.smoke) console.log('smoke-test size (--small): no verdict');
  for (const t of report.targets) {
    const status = t.pass === null ? 'n/a ' : t.pass ? 'PASS' : 'FAIL';
    console.log(`${status}  ${t.name.padEnd(40)} ${fmt(t.value, 2).padStart(6)}×  (target ${t.target})`);
  }
  for (const r of report.table) {
    if (r.native_error) console.log(`native ${r.name}: ${r.native_error.split('\n')[0].slice(0, 300)}`);
    if (r.pytorch_error) console.log(`pytorch ${r.name}: ${r.pytorch_error.split('\n')[0].slice(0, 300)}`);
  }
  console.log(`\nJSON: ${report.outFile}`);
}

// ------------------------------------------------------------------------------------ main

async function main() {
  const args = parseArgs(process.argv.slice(2));
  if (args.worker) {
    try {
      await worker(JSON.parse(args.worker), args);
    } catch (error) {
      process.stdout.write(RESULT_TAG + JSON.stringify({ error: error?.stack ?? String(error) }) + '\n');
      process.exitCode = 1;
    }
    return;
  }
  const m = args.small ? SMALL : FULL;
  const started = new Date();
  const runs = plan(args, m.layers);
  log(
    `methods-cpu benchmark, ${args.small ? 'SMALL smoke config' : 'full config'}, ${args.threads} threads: ${runs.map((r) => r.name).join(', ')}`,
  );
  const builds = ensureBuilds(args);

  const load = {};
  const waited = {};
  const settle = async (name) => {
    const w = await waitIdle(args.waitIdle);
    if (w !== null) waited[name] = w;
  };

  if (!args.skipNative) {
    for (const run of runs) {
      const name = `native_${run.name}`;
      await settle(name);
      log(`native engine, ${run.name} …`);
      run.native = await phase(load, name, () => runNative(run, args));
      if (run.native.error) log(`native ${run.name} failed: ${run.native.error.split('\n')[0]}`);
    }
  }
  if (!args.skipTorch) {
    const settings = { passive: [true], 'as-is': [false], both: [false, true] }[args.torchSetting];
    for (const run of runs) {
      const tries = [];
      for (const passive of settings) {
        const name = `pytorch_${run.name}${settings.length > 1 ? (passive ? '_passive' : '_as_is') : ''}`;
        await settle(name);
        tries.push(await phase(load, name, () => runTorch(run, args, m, passive)));
        if (settings.length > 1) load[`pytorch_${run.name}`] ??= load[name];
      }
      const ok = tries.filter((t) => !t.error);
      run.pytorch = ok.length ? ok.reduce((a, b) => (b.median_s < a.median_s ? b : a)) : tries[0];
      run.pytorch_all = tries.map((t) => ({ setting: t.setting, median_s: t.median_s ?? null, error: t.error }));
    }
  }

  const report = {
    benchmark: 'methods-cpu',
    date: started.toISOString(),
    duration_s: null,
    command: `node bench/methods-cpu/run.mjs ${process.argv.slice(2).join(' ')}`.trim(),
    threads: args.threads,
    torch_setting: args.skipTorch ? 'skipped' : args.torchSetting,
    model: {
      ...m,
      label: `d=${m.hidden} L=${m.layers} H=${m.heads}/${m.kvHeads} F=${m.intermediate} V=${m.vocab}, batch ${m.batch} × seq ${m.seq}, adapters on all 7 projections, α = 2·rank, dropout 0`,
      smoke: args.small,
    },
    mixture: {
      experts: args.experts,
      rank: args.rank,
      topK: args.topK,
      flyRank: args.flyRank,
      flyTopK: args.flyTopK,
      note: 'native loramoe also computes a Switch load balance (coef 1e-3, negligible work) that the LoRAMoE reference does not have; dynmole uses the pooled form, as its reference',
    },
    train: TRAIN,
    machine: {
      cpu: lscpuModel(),
      node: process.version,
      env: Object.fromEntries(
        ['OPENBLAS_CORETYPE', 'OPENBLAS_L2_SIZE', 'OMP_WAIT_POLICY', 'OMP_NUM_THREADS', 'OPENBLAS_NUM_THREADS'].map(
          (k) => [k, process.env[k] ?? null],
        ),
      ),
      native: runs.find((r) => r.native?.nativeInfo)?.native.nativeInfo ?? null,
      torch: (() => {
        const t = runs.find((r) => r.pytorch && !r.pytorch.error)?.pytorch;
        return t ? { version: t.torch_version, package: t.torch_package, blas: t.blas, openblas: t.openblas } : null;
      })(),
    },
    builds: { ...builds, ...provenance() },
    load: {
      note: 'foreign_cores: CPU used by other processes during each measurement (average cores); > 0.1 means it was contended',
      loadavg_end: existsSync('/proc/loadavg') ? readFileSync('/proc/loadavg', 'utf8').trim() : null,
      waited_for_idle_s: waited,
      phases: load,
    },
    runs,
  };
  report.table = rows(report);
  report.targets = targets(report.table, args.small);
  report.duration_s = round((Date.now() - started.getTime()) / 1000, 1);
  const outFile =
    args.out ??
    join(
      root,
      'bench',
      'out',
      `methods-cpu-${started.toISOString().replace(/[:.]/g, '-')}${args.small ? '-small' : ''}.json`,
    );
  mkdirSync(dirname(outFile), { recursive: true });
  report.outFile = relative(root, outFile);
  writeFileSync(outFile, JSON.stringify(report, null, 2) + '\n');
  printTable(report);
}

main().catch((error) => {
  console.error(error?.stack ?? String(error));
  process.exit(1);
});
