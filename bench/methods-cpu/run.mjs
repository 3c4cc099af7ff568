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
// with --worker for the native engine). See bench/README.md; what this runner shares with
// bench/engine-cpu/run.mjs is in bench/lib/common.mjs.
import { dirname, join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { fileURLToPath, pathToFileURL } from 'node:url';
import * as common from '../lib/common.mjs';

const SELF = fileURLToPath(import.meta.url);
const TORCH_SCRIPT = join(dirname(SELF), 'torch_mixture_step.py');
const MIXTURES = ['mola', 'loramoe', 'dynmole', 'flylora'];
// Targets (from the issue): overhead against plain LoRA of the same total rank, and the speed-up
// over the PyTorch per-expert loop at 8 experts of rank 8.
const TARGET_RATIO = 1.3;
const TARGET_SPEEDUP = 3;

// ------------------------------------------------------------------------------------ arguments

const HELP = `usage: node bench/methods-cpu/run.mjs [options]
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

const OPTIONS = {
  ...common.COMMON_OPTIONS,
  methods: {
    default: [...MIXTURES],
    parse: (text, flag, usage) => {
      const methods = text
        .split(',')
        .map((s) => s.trim())
        .filter(Boolean);
      if (!methods.length || methods.some((m) => !MIXTURES.includes(m)))
        usage(`${flag} takes a comma-separated subset of ${MIXTURES.join(',')}, got '${text}'`);
      return methods;
    },
  },
  experts: { default: 8, parse: common.positiveInt(1) },
  rank: { default: 8, parse: common.positiveInt(1) },
  'top-k': { default: 2, parse: common.positiveInt(1) },
  'fly-rank': { default: 32, parse: common.positiveInt(1) },
  'fly-k': { key: 'flyTopK', default: 8, parse: common.positiveInt(1) },
  'skip-torch': { default: false },
  'skip-native': { default: false },
  'torch-setting': {
    default: 'passive',
    parse: (text, flag, usage) => {
      if (!['passive', 'as-is', 'both'].includes(text)) usage(`${flag}: passive, as-is or both`);
      return text;
    },
  },
};

function checkArgs(args, usage) {
  if (args.topK > args.experts) usage('--top-k must be <= --experts');
  if (args.flyRank % args.flyTopK) usage('--fly-rank must be a multiple of --fly-k');
}

// ------------------------------------------------------------------------------------ what is measured

/**
 * The measurements of a run: each mixture in `args.methods`, and plain LoRA at each total rank
 * they are compared with. Each adapter is its method's defaults (libs/engine's
 * `defaultAdapterConfig`) at the sizes measured: `alpha` is 2 × rank (s = 2) everywhere, as in
 * MoLA (r 8, α 16) and FlyLoRA (r 32, α 64), dropout 0, every layer `args.experts` experts.
 */
function plan(args, layers, defaultAdapterConfig) {
  const adapter = (method, overrides) => {
    const config = defaultAdapterConfig(method, layers, { dropout: 0, seed: 2, ...overrides });
    // The worker puts every adapter on all 7 projections.
    const { targetModules: _projections, ...rest } = { ...config, alpha: 2 * config.rank };
    return rest;
  };
  const numExperts = Array(layers).fill(args.experts);
  const mixture = {
    mola: () => adapter('mola', { rank: args.rank, numExperts, topK: Array(layers).fill(args.topK) }),
    // LoRAMoE's defaults have no load balance; the native engine computes the Switch one here
    // (coef 1e-3, negligible work), which the LoRAMoE reference does not have.
    loramoe: () =>
      adapter('loramoe', { rank: args.rank, numExperts, balance: { coef: 1e-3, form: 'layer', scope: 'micro' } }),
    // DynMoLE's defaults pool the load balance over every site of every layer, as its reference.
    dynmole: () => adapter('dynmole', { rank: args.rank, numExperts }),
    flylora: () => adapter('flylora', { rank: args.flyRank, topK: args.flyTopK }),
  };
  const runs = [];
  const loraRun = (rank) => {
    const name = `lora-r${rank}`;
    if (!runs.some((r) => r.name === name))
      runs.push({ name, method: 'lora', adapter: adapter('lora', { rank }), expertRank: rank, totalRank: rank });
    return name;
  };
  for (const method of args.methods) {
    const total = method === 'flylora' ? args.flyRank : args.experts * args.rank;
    const reference = loraRun(total);
    runs.push({
      name: method,
      method,
      adapter: mixture[method](),
      expertRank: method === 'flylora' ? 1 : args.rank,
      totalRank: total,
      reference,
      // "≥ 3× at 8 experts of rank 8": the routed mixtures; FlyLoRA (rank-1 experts) is reported.
      speedupTarget: method !== 'flylora',
    });
  }
  // Plain LoRA first, so the references are there for every mixture.
  return [...runs.filter((r) => r.method === 'lora'), ...runs.filter((r) => r.method !== 'lora')];
}

/** torch_mixture_step.py's flags for one run, besides the model's and the run's. */
function torchFlags(run, args) {
  const { rank, alpha } = run.adapter;
  const topK = { mola: args.topK, flylora: run.adapter.topK }[run.method] ?? 2;
  return { method: run.method, experts: args.experts, rank, alpha, 'top-k': topK };
}

// ------------------------------------------------------------------------------------ peers

async function runNative(run, args) {
  const argv = common.flags({ threads: args.threads, iters: args.iters, warmup: args.warmup });
  if (args.small) argv.push('--small');
  try {
    return await common.runWorker(SELF, JSON.stringify(run), argv);
  } catch (error) {
    if (error.detail === undefined) throw error;
    return { error: `${error.message}${error.detail ? ': ' + error.detail : ''}` };
  }
}

async function runPytorch(run, args, m, passive) {
  common.log(`pytorch loop, ${run.name} (${common.torchSetting(passive)}) …`);
  try {
    const r = await common.runTorch(TORCH_SCRIPT, args, m, passive, torchFlags(run, args));
    return { ...r, setting: common.torchSetting(passive) };
  } catch (error) {
    return { error: error.message, setting: common.torchSetting(passive) };
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

/** Runs inside a child process (see common.workerMain): one adapter on the native engine; returns its result. */
async function worker(run, args) {
  const m = args.small ? common.SMALL_MODEL : common.FULL_MODEL;
  const { engineLib, testing, model, t0, makeOptimizer, makeBatch } = await common.randomModel(m, 'native', {
    threads: args.threads,
  });
  const adapter = { ...run.adapter, targetModules: [...engineLib.PROJECTIONS] };
  model.attachAdapter(adapter);
  // B ≠ 0 (as in torch_mixture_step.py), so every gradient, the routers' included, is non-trivial.
  const bNames = model.backend.tensorNames('adapter').filter((n) => /lora_B/.test(n));
  for (const name of bNames) {
    const count = model.backend.tensorShape(name).reduce((a, b) => a * b, 1);
    const std = 0.1 / Math.sqrt(run.expertRank);
    model.backend.setTensor(name, uniformValues(engineLib, 3, testing.hashName(name), count, std));
  }
  const optimizer = makeOptimizer();
  const batch = makeBatch();
  const result = {
    run: run.name,
    setup_s: common.round((performance.now() - t0) / 1000, 3),
    trainable_params: model.parameterCount('trainable'),
    adapter_tensors: model.backend.tensorNames('adapter').length,
    b_tensors_randomised: bNames.length,
    nativeInfo: engineLib.nativeInfo(),
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
  Object.assign(result, {
    ...common.stepTimes(steps.slice(0, args.warmup), steps.slice(args.warmup), m),
    aux_last: steps[steps.length - 1].aux,
    routing: summariseRouting(model.routingStats()),
  });
  model.dispose();
  return result;
}

/** Routing statistics over all steps, averaged over sites: experts per token, broadcast fraction. */
function summariseRouting(stats) {
  if (!stats?.length) return null;
  const mean = (xs) => xs.reduce((a, b) => a + b, 0) / xs.length;
  return {
    sites: stats.length,
    mean_experts_per_token: common.round(mean(stats.map((s) => s.load.reduce((a, b) => a + b, 0))), 4),
    broadcast_fraction: common.round(mean(stats.map((s) => s.broadcast)), 4),
    mean_entropy: stats[0].entropy === null ? null : common.round(mean(stats.map((s) => s.entropy)), 4),
  };
}

// ------------------------------------------------------------------------------------ report

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
      ratio_to_lora: native && ref ? common.round(native / ref, 4) : null,
      pytorch_s: torch,
      pytorch_setting: r.pytorch?.setting ?? null,
      speedup_vs_pytorch: native && torch ? common.round(torch / native, 4) : null,
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
    const pass = (ok) => (ok === null || smoke ? null : ok);
    out.push({
      name: `${row.name} vs native LoRA ${row.reference}`,
      value: row.ratio_to_lora,
      target: `≤ ${TARGET_RATIO}×`,
      pass: pass(row.ratio_to_lora === null ? null : row.ratio_to_lora <= TARGET_RATIO),
    });
    out.push({
      name: `${row.name} native vs PyTorch loop`,
      value: row.speedup_vs_pytorch,
      target: row.speedup_target ? `≥ ${TARGET_SPEEDUP}×` : 'reported (rank-1 experts, not 8×8)',
      pass: row.speedup_target
        ? pass(row.speedup_vs_pytorch === null ? null : row.speedup_vs_pytorch >= TARGET_SPEEDUP)
        : null,
    });
  }
  return out;
}

function printTable(report) {
  const lines = report.table.map((r) => [
    r.name,
    r.adapter,
    r.native_error ? 'error' : common.fmt(r.native_s, 3),
    common.fmt(r.native_tokens_per_s, 0),
    r.ratio_to_lora === null ? '' : `${common.fmt(r.ratio_to_lora, 2)}× ${r.reference}`,
    r.pytorch_error ? 'error' : common.fmt(r.pytorch_s, 3),
    r.speedup_vs_pytorch === null ? '—' : `${common.fmt(r.speedup_vs_pytorch, 2)}×`,
    `${common.others(report, `native_${r.name}`)} / ${common.others(report, `pytorch_${r.name}`)}`,
  ]);
  console.log(`\nMixture step: ${report.model.label}`);
  console.log(`${report.threads} threads; PyTorch: ${report.torch_setting}`);
  const header = ['method', 'adapter', 'native s', 'tok/s', '÷ LoRA', 'torch loop s', 'speed-up', 'others'];
  common.printRows(header, lines, new Set([0, 1, 4]));
  console.log("('others': average cores used by other processes during the native / PyTorch measurement)\n");
  if (report.model.smoke) console.log('smoke-test size (--small): no verdict');
  for (const t of report.targets) {
    console.log(
      `${common.verdict(t.pass)}  ${t.name.padEnd(40)} ${common.fmt(t.value, 2).padStart(6)}×  (target ${t.target})`,
    );
  }
  for (const r of report.table) {
    if (r.native_error) console.log(`native ${r.name}: ${r.native_error.split('\n')[0].slice(0, 300)}`);
    if (r.pytorch_error) console.log(`pytorch ${r.name}: ${r.pytorch_error.split('\n')[0].slice(0, 300)}`);
  }
  console.log(`\nJSON: ${report.outFile}`);
}

// ------------------------------------------------------------------------------------ main

async function main() {
  const args = common.parseCommandLine(process.argv.slice(2), { help: HELP, options: OPTIONS, check: checkArgs });
  if (args.worker) return common.workerMain(() => worker(JSON.parse(args.worker), args));
  const m = args.small ? common.SMALL_MODEL : common.FULL_MODEL;
  const started = new Date();
  const builds = common.ensureBuilds(args, { needed: !args.skipNative });
  const { defaultAdapterConfig } = await import(pathToFileURL(common.ENGINE_METHODS_DIST).href);
  const runs = plan(args, m.layers, defaultAdapterConfig);
  common.log(
    `methods-cpu benchmark, ${args.small ? 'SMALL smoke config' : 'full config'}, ${args.threads} threads: ${runs.map((r) => r.name).join(', ')}`,
  );

  const record = common.phases(args.waitIdle);
  const { load, settle, phase } = record;

  if (!args.skipNative) {
    for (const run of runs) {
      const name = `native_${run.name}`;
      await settle(name);
      common.log(`native engine, ${run.name} …`);
      run.native = await phase(name, () => runNative(run, args));
      if (run.native.error) common.log(`native ${run.name} failed: ${run.native.error.split('\n')[0]}`);
    }
  }
  if (!args.skipTorch) {
    const settings = { passive: [true], 'as-is': [false], both: [false, true] }[args.torchSetting];
    for (const run of runs) {
      const tries = [];
      for (const passive of settings) {
        const name = `pytorch_${run.name}${settings.length > 1 ? (passive ? '_passive' : '_as_is') : ''}`;
        await settle(name);
        tries.push(await phase(name, () => runPytorch(run, args, m, passive)));
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
    train: common.TRAIN,
    machine: {
      ...common.machineInfo(),
      native: runs.find((r) => r.native?.nativeInfo)?.native.nativeInfo ?? null,
      torch: (() => {
        const t = runs.find((r) => r.pytorch && !r.pytorch.error)?.pytorch;
        return t ? { version: t.torch_version, package: t.torch_package, blas: t.blas, openblas: t.openblas } : null;
      })(),
    },
    builds: { ...builds, ...common.provenance() },
    load: common.loadReport(
      'foreign_cores: CPU used by other processes during each measurement (average cores); > 0.1 means it was contended',
      record,
    ),
    runs,
  };
  report.table = rows(report);
  report.targets = targets(report.table, args.small);
  report.duration_s = common.round((Date.now() - started.getTime()) / 1000, 1);
  common.writeReport(report, args, started);
  printTable(report);
}

common.runScript(main);
