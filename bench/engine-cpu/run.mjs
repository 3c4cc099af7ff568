#!/usr/bin/env node
// CPU engine benchmark: tokens/s of one LoRA training step (forward + backward + AdamW) of the
// native engine, measured in one run against
//   - the same step in PyTorch (bench/engine-cpu/torch_step.py, Debian's python3-torch, eager),
//     run twice: as-is and with OMP_WAIT_POLICY=PASSIVE; the faster of the two is the reference;
//   - the tfjs engine on its wasm backend;
//   - the floor: the step's matmul FLOPs / the best sgemm rate measured in this run
//     (native/build-ctest/bench_sgemm, same OpenBLAS and OPENBLAS_* settings).
//
//   node bench/engine-cpu/run.mjs [--threads N] [--iters N] [--skip-torch] [--skip-tfjs] [--small]
//                                 [--tfjs-iters N] [--tfjs-micro N] [--wait-idle S] [--no-build] [--out FILE]
//
// Each engine runs in its own child process (this script with --worker), so no peer shares a
// heap, a thread pool or a wasm instance with another. See bench/README.md; what this runner
// shares with bench/methods-cpu/run.mjs is in bench/lib/common.mjs.
import { dirname, join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { fileURLToPath } from 'node:url';
import * as common from '../lib/common.mjs';

const SELF = fileURLToPath(import.meta.url);
const TORCH_SCRIPT = join(dirname(SELF), 'torch_step.py');
const TFJS_SLOW_STEP_S = 300; // a tfjs step slower than this: report that one step only

// The benchmark model (bench/lib/common.mjs) with LoRA r = 16, α = 32; the smoke-test size with r = 4, α = 8.
const FULL = { ...common.FULL_MODEL, rank: 16, alpha: 32 };
const SMALL = { ...common.SMALL_MODEL, rank: 4, alpha: 8 };
// The native engine's attention works on blocks of this many queries (native/src/attention.cpp,
// kQueryBlock): each block sees every key up to its last query, a little over the causal half.
const NATIVE_QUERY_BLOCK = 64;

// ------------------------------------------------------------------------------------ arguments

const HELP = `usage: node bench/engine-cpu/run.mjs [options]
  --threads N     threads of every peer (native pool, torch + OpenBLAS, sgemm); default 2
  --iters N       timed steps of the native engine and of PyTorch (default 5; 2 warm-up steps each)
  --warmup N      warm-up steps of the native engine and PyTorch (default 2)
  --tfjs-iters N  timed steps of the tfjs wasm engine (default 2, after 1 warm-up)
  --tfjs-micro N  sequences per tfjs micro-batch (default: the whole batch, halved while the
                  4 GiB wasm heap runs out; the step and its FLOPs are the same)
  --wait-idle S   before each phase, wait up to S seconds for other processes to go quiet
  --skip-torch    do not run the PyTorch peer
  --skip-tfjs     do not run the tfjs wasm peer
  --small         tiny model (smoke test, seconds)
  --no-build      do not (re)build the addon, bench_sgemm or the TypeScript dist
  --out FILE      JSON output (default bench/out/engine-cpu-<date>.json)`;

const OPTIONS = {
  ...common.COMMON_OPTIONS,
  'tfjs-iters': { default: 2, parse: common.positiveInt(1) },
  'tfjs-micro': { default: 0, parse: common.positiveInt(1) },
  'skip-torch': { default: false },
  'skip-tfjs': { default: false },
};

// ------------------------------------------------------------------------------------ FLOPs

/**
 * Analytic matmul FLOPs of one LoRA step (2 per multiply-add; norms, softmax, RoPE, the loss and
 * AdamW are not counted). `step` is the work the step needs; `engineExtra` is what the native
 * engine does on top (its attention backward recomputes QKᵀ, flash-style, and its 64-query blocks
 * compute a few scores above the diagonal).
 */
function stepFlops(m) {
  const n = m.batch * m.seq;
  const hd = m.hidden / m.heads;
  const qDim = m.heads * hd;
  const kvDim = m.kvHeads * hd;
  const projections = {
    q: [m.hidden, qDim],
    k: [m.hidden, kvDim],
    v: [m.hidden, kvDim],
    o: [qDim, m.hidden],
    gate: [m.hidden, m.intermediate],
    up: [m.hidden, m.intermediate],
    down: [m.intermediate, m.hidden],
  };
  const firstLayerFree = new Set(['q', 'k', 'v']); // their input is the frozen embedding
  let baseFwd = 0;
  let baseBwdInput = 0;
  let loraFwd = 0;
  let loraBwdInput = 0;
  let loraWeightGrad = 0;
  let skipped = 0;
  for (const [name, [fanIn, fanOut]] of Object.entries(projections)) {
    const base = 2 * n * fanIn * fanOut;
    const viaA = 2 * n * fanIn * m.rank; // x Aᵀ, and the same shape for dA and dx through A
    const viaB = 2 * n * m.rank * fanOut; // h Bᵀ, and the same shape for dB and dY B
    baseFwd += m.layers * base;
    loraFwd += m.layers * (viaA + viaB);
    loraWeightGrad += m.layers * (viaA + viaB); // dA = Uᵀ x, dB = dYᵀ h
    const layersWithInputGrad = firstLayerFree.has(name) ? m.layers - 1 : m.layers;
    baseBwdInput += layersWithInputGrad * base;
    // U = dY B is needed for dA in every layer; dx through A only where dx is needed.
    loraBwdInput += m.layers * viaB + layersWithInputGrad * viaA;
    if (firstLayerFree.has(name)) skipped += base + viaA;
  }
  const lmHeadFwd = 2 * n * m.hidden * m.vocab;
  const lmHeadBwdInput = lmHeadFwd;
  // One attention matmul (QKᵀ, PV, or one of the 4 backward products) over a number of
  // query-key pairs: 2·hd FLOPs per pair, per head, per sequence, per layer.
  const perPair = 2 * hd * m.heads * m.batch * m.layers;
  const causalPairs = (m.seq * (m.seq + 1)) / 2;
  const fullPairs = m.seq * m.seq;
  let blockPairs = 0;
  for (let i0 = 0; i0 < m.seq; i0 += NATIVE_QUERY_BLOCK) {
    const rows = Math.min(NATIVE_QUERY_BLOCK, m.seq - i0);
    blockPairs += rows * (i0 + rows);
  }
  const attentionFwd = 2 * perPair * causalPairs;
  const attentionBwd = 4 * perPair * causalPairs;
  const breakdown = {
    base_linear_fwd: baseFwd,
    lora_fwd: loraFwd,
    lm_head_fwd: lmHeadFwd,
    base_linear_bwd_input: baseBwdInput,
    lora_bwd_input: loraBwdInput,
    lm_head_bwd_input: lmHeadBwdInput,
    lora_weight_grad: loraWeightGrad,
    attention_causal_fwd: attentionFwd,
    attention_causal_bwd: attentionBwd,
  };
  const step = Object.values(breakdown).reduce((a, b) => a + b, 0);
  const engineExtra = {
    // The backward recomputes S = QKᵀ per block instead of storing P (7 matmuls instead of 6).
    attention_bwd_recompute_qk: perPair * blockPairs,
    // Scores above the diagonal inside each 64-query block, in the 6 counted matmuls.
    attention_block_overhang: 6 * perPair * (blockPairs - causalPairs),
  };
  return {
    step,
    breakdown,
    notCounted: { layer0_qkv_input_grad: skipped },
    stepFullAttention: step + 6 * perPair * (fullPairs - causalPairs),
    engineExtra,
    engineExtraTotal: Object.values(engineExtra).reduce((a, b) => a + b, 0),
    pairs: { causal: causalPairs, full: fullPairs, nativeBlocks: blockPairs },
    // Dense GEMM classes by shape [M, N, K] (C[M,N] = A[M,K]·B[K,N]) with their FLOPs in the step,
    // as the native engine runs them (q/k/v and gate/up fused), for the shape-weighted rate.
    dominantGemms: [
      {
        what: 'qkv fwd (fused)',
        shape: [n, qDim + 2 * kvDim, m.hidden],
        flops: m.layers * 2 * n * m.hidden * (qDim + 2 * kvDim),
      },
      { what: 'o fwd', shape: [n, m.hidden, qDim], flops: m.layers * 2 * n * qDim * m.hidden },
      {
        what: 'gate+up fwd (fused)',
        shape: [n, 2 * m.intermediate, m.hidden],
        flops: m.layers * 4 * n * m.hidden * m.intermediate,
      },
      { what: 'down fwd', shape: [n, m.hidden, m.intermediate], flops: m.layers * 2 * n * m.intermediate * m.hidden },
      { what: 'lm head fwd', shape: [n, m.vocab, m.hidden], flops: lmHeadFwd },
      { what: 'down dx', shape: [n, m.intermediate, m.hidden], flops: m.layers * 2 * n * m.intermediate * m.hidden },
      {
        what: 'gate+up dx',
        shape: [n, m.hidden, 2 * m.intermediate],
        flops: m.layers * 4 * n * m.hidden * m.intermediate,
      },
      { what: 'o dx', shape: [n, qDim, m.hidden], flops: m.layers * 2 * n * qDim * m.hidden },
      {
        what: 'qkv dx (layers 1..L-1)',
        shape: [n, m.hidden, qDim + 2 * kvDim],
        flops: (m.layers - 1) * 2 * n * m.hidden * (qDim + 2 * kvDim),
      },
      { what: 'lm head dx', shape: [n, m.hidden, m.vocab], flops: lmHeadBwdInput },
    ],
    // Per-projection shapes (tokens × projection width), measured too.
    projectionGemms: [
      [n, qDim, m.hidden],
      [n, kvDim, m.hidden],
      [n, m.intermediate, m.hidden],
    ],
  };
}

// ------------------------------------------------------------------------------------ peers

// ------------------------------------------------------------------------------------ peers

async function measureSgemm(threads, shapes) {
  const flat = shapes.flatMap((s) => s.map(String));
  const out = await common.runCapture(common.BENCH_SGEMM, [String(threads), ...flat]);
  return common.lastJsonLine(out);
}

function sgemmSummary(runs, gemms) {
  // Best rate per shape over every run and both threading modes.
  const best = new Map();
  for (const run of runs) {
    for (const s of run.shapes) {
      const key = `${s.M}x${s.N}x${s.K}`;
      const rate = Math.max(s.openblas_threads_gflops, s.pool_gflops);
      const prev = best.get(key);
      if (!prev || rate > prev.gflops)
        best.set(key, {
          M: s.M,
          N: s.N,
          K: s.K,
          gflops: rate,
          mode: s.pool_gflops >= s.openblas_threads_gflops ? 'pool' : 'openblas_threads',
        });
    }
  }
  const perShape = [...best.values()];
  const top = perShape.reduce((a, b) => (b.gflops > a.gflops ? b : a));
  // For information: the rate the dominant GEMMs would average at, each at its own shape's best
  // measured rate (harmonic, FLOP-weighted). It is below the best rate, so it is not the floor.
  let flops = 0;
  let seconds = 0;
  for (const g of gemms) {
    const r = best.get(g.shape.join('x'));
    if (!r) continue;
    flops += g.flops;
    seconds += g.flops / (r.gflops * 1e9);
  }
  return { perShape, best: top, flopWeightedGflops: seconds > 0 ? flops / seconds / 1e9 : null };
}

async function runEngine(kind, args, extra = {}) {
  const argv = common.flags({
    threads: args.threads,
    iters: args.iters,
    warmup: args.warmup,
    'tfjs-iters': args.tfjsIters,
  });
  if (args.small) argv.push('--small');
  if (extra.micro) argv.push('--tfjs-micro', String(extra.micro));
  let result;
  try {
    result = await common.runWorker(SELF, kind, argv);
  } catch (error) {
    // A worker that caught its error printed it as its result (`detail`); one that crashed did not.
    if (error.detail === undefined) throw error;
    const detail = error.detail;
    throw new Error(`${kind} worker failed (${error.message})${detail ? ': ' + detail : ''}`, { cause: error });
  }
  if (result.error) throw new Error(`${kind} worker: ${result.error}`);
  return result;
}

/**
 * The tfjs engine with the whole batch as one micro-batch, or, when the wasm heap (4 GiB) runs
 * out, with the batch split in halves, quarters, … (gradient accumulation: same step, same FLOPs).
 */
async function runTfjs(args, m) {
  const attempts = [];
  let micro = args.tfjsMicro > 0 ? args.tfjsMicro : m.batch;
  for (;;) {
    common.log(`tfjs engine, wasm backend, micro-batches of ${micro} sequence(s) (slow) …`);
    const t0 = performance.now();
    try {
      const result = await runEngine('tfjs', args, { micro });
      result.attempts = attempts;
      return result;
    } catch (error) {
      const message = String(error.message)
        .split('\n')[0]
        .replace(/^.*\): /, '');
      attempts.push({
        micro_batch_rows: micro,
        seconds: common.round((performance.now() - t0) / 1000, 1),
        error: message.slice(0, 300),
      });
      if (args.tfjsMicro > 0 || micro === 1 || !/Abort|memory|OOM/i.test(String(error.message))) throw error;
      common.log(`tfjs failed with micro-batches of ${micro} (${message.slice(0, 120)}); halving`);
      micro = Math.max(1, Math.floor(micro / 2));
    }
  }
}

// ------------------------------------------------------------------------------------ workers

/** Runs inside a child process (see common.workerMain): one engine; returns its result. */
async function worker(kind, args) {
  const m = args.small ? SMALL : FULL;
  const engineOptions = kind === 'native' ? { threads: args.threads } : { tfjsBackend: 'wasm' };
  const { engineLib, testing, config, model, t0, makeOptimizer, makeBatch } = await common.randomModel(
    m,
    kind,
    engineOptions,
  );
  const lora = {
    rank: m.rank,
    alpha: m.alpha,
    useRslora: false,
    dropout: 0,
    targetModules: [...engineLib.PROJECTIONS],
    seed: 2,
  };
  model.attachLora(lora);
  // B ≠ 0 (as torch_step.py does), so every gradient is non-trivial; the matmuls are the same.
  for (const [name, values] of testing.randomAdapterWeights(config, lora, 3)) model.backend.setTensor(name, values);
  const optimizer = makeOptimizer();
  const batch = makeBatch();
  // The tfjs engine can split the step's batch into micro-batches (gradient accumulation: the same
  // gradients, the same FLOPs) when the whole batch does not fit its 4 GiB wasm heap.
  const microRows = kind === 'tfjs' && args.tfjsMicro > 0 ? Math.min(args.tfjsMicro, m.batch) : m.batch;
  const microBatches = [];
  for (let b0 = 0; b0 < m.batch; b0 += microRows) {
    const rows = Math.min(microRows, m.batch - b0);
    const span = [b0 * m.seq, (b0 + rows) * m.seq];
    microBatches.push({
      ids: batch.ids.slice(...span),
      targets: batch.targets.slice(...span),
      batch: rows,
      seqLen: m.seq,
    });
  }
  const setupS = (performance.now() - t0) / 1000;
  const result = {
    kind,
    setup_s: common.round(setupS, 3),
    trainable_params: model.parameterCount('trainable'),
    base_params: model.parameterCount('base'),
    micro_batches: microBatches.length,
    micro_batch_rows: microRows,
  };
  if (kind === 'native') result.nativeInfo = engineLib.nativeInfo();
  if (kind === 'tfjs') {
    const tf = await import('@tensorflow/tfjs');
    result.tfjs = { backend: tf.getBackend(), version: tf.version_core };
    try {
      const wasm = await import('@tensorflow/tfjs-backend-wasm');
      result.tfjs.wasmThreads = wasm.getThreadsCount();
      result.tfjs.simd = await tf.env().getAsync('WASM_HAS_SIMD_SUPPORT');
      result.tfjs.multithread = await tf.env().getAsync('WASM_HAS_MULTITHREAD_SUPPORT');
    } catch (error) {
      result.tfjs.wasmThreadsError = String(error);
    }
  }

  const timeStep = async () => {
    const s = performance.now();
    const r = await optimizer.step(microBatches);
    return { s: (performance.now() - s) / 1000, loss: r.loss, gradNorm: r.gradNorm };
  };

  const warmup = kind === 'native' ? args.warmup : 1;
  const iters = kind === 'native' ? args.iters : args.tfjsIters;
  const warm = [];
  for (let i = 0; i < warmup; i++) {
    const r = await timeStep();
    warm.push(r);
    console.error(`  ${kind} step ${i} (warm-up) ${r.s.toFixed(3)} s  loss ${r.loss.toFixed(5)}`);
  }
  const timed = [];
  const cpu0 = process.cpuUsage();
  const wall0 = performance.now();
  if (kind === 'tfjs' && warm.length && warm[0].s > TFJS_SLOW_STEP_S) {
    result.note = `the warm-up step took ${warm[0].s.toFixed(0)} s (> ${TFJS_SLOW_STEP_S} s): that one step is the measurement`;
    timed.push(warm[0]);
  } else {
    for (let i = 0; i < iters; i++) {
      const r = await timeStep();
      timed.push(r);
      console.error(`  ${kind} step ${warmup + i} ${r.s.toFixed(3)} s  loss ${r.loss.toFixed(5)}`);
    }
  }
  const cpu = process.cpuUsage(cpu0);
  // Cores this process kept busy during the timed steps (≈ threads when it has the machine).
  result.cores_used = common.round((cpu.user + cpu.system) / 1e3 / (performance.now() - wall0), 3);
  Object.assign(result, common.stepTimes(warm, timed, m));

  if (kind === 'native') {
    // Where the step's time goes: inference forward (logits, no saved state) vs forward+backward
    // vs the optimizer, each timed on its own.
    const backend = model.backend;
    const prof = { forward_s: [], forward_backward_s: [], optimizer_s: [] };
    const tokens = batch.targets.reduce((a, t) => a + (t >= 0 ? 1 : 0), 0);
    for (let i = 0; i < Math.max(3, Math.min(args.iters, 5)); i++) {
      let s = performance.now();
      await backend.forward(batch);
      prof.forward_s.push((performance.now() - s) / 1000);
      s = performance.now();
      await backend.forwardBackward(batch, { lossScale: 1 / tokens, dropoutSeed: i, recompute: false });
      prof.forward_backward_s.push((performance.now() - s) / 1000);
      s = performance.now();
      await backend.optimizerStep({
        lr: common.TRAIN.lr,
        beta1: common.TRAIN.beta1,
        beta2: common.TRAIN.beta2,
        eps: common.TRAIN.eps,
        weightDecay: 0,
        maxGradNorm: 1,
      });
      prof.optimizer_s.push((performance.now() - s) / 1000);
    }
    const fwd = common.median(prof.forward_s);
    const fb = common.median(prof.forward_backward_s);
    result.profile = {
      forward_median_s: common.round(fwd, 4),
      forward_backward_median_s: common.round(fb, 4),
      backward_estimate_s: common.round(fb - fwd, 4),
      optimizer_median_s: common.round(common.median(prof.optimizer_s), 5),
      raw: Object.fromEntries(Object.entries(prof).map(([k, v]) => [k, v.map((x) => common.round(x, 4))])),
    };
  }
  model.dispose();
  return result;
}

// ------------------------------------------------------------------------------------ main

function ratio(a, b) {
  return a && b ? a / b : null;
}

function printTable(report) {
  const rows = [];
  const push = (name, tps, med, best, phaseName, extra = '') =>
    rows.push([
      name,
      common.fmt(tps, 1),
      common.fmt(med, 3),
      common.fmt(best, 3),
      phaseName ? common.others(report, phaseName) : '',
      extra,
    ]);
  const n = report.native;
  push(
    `native (${report.threads} threads)`,
    n.tokens_per_s,
    n.median_s,
    n.best_s,
    'native',
    `${common.fmt(n.gflops_per_s, 1)} GFLOP/s`,
  );
  for (const t of report.pytorch?.runs ?? [])
    push(
      `pytorch ${t.setting}${t.setting === report.pytorch.faster ? ' (faster)' : ''}`,
      t.tokens_per_s,
      t.median_s,
      t.best_s,
      t.setting === 'as-is' ? 'pytorch_as_is' : 'pytorch_passive',
      `${common.fmt(t.gflops_per_s, 1)} GFLOP/s`,
    );
  if (report.tfjs) {
    const t = report.tfjs;
    const how = `${t.tfjs?.wasmThreads ?? 1} thread, ${t.micro_batches}×${t.micro_batch_rows} seq`;
    push(
      `tfjs wasm (${how})`,
      t.tokens_per_s,
      t.median_s,
      t.best_s,
      'tfjs',
      `${common.fmt(t.gflops_per_s, 1)} GFLOP/s${t.note ? '; ' + t.note : ''}`,
    );
  }
  push(
    'floor (FLOPs / best sgemm)',
    report.floor.tokens_per_s,
    report.floor.seconds,
    report.floor.seconds,
    null,
    `${common.fmt(report.floor.best_gflops, 1)} GFLOP/s (${report.floor.best_shape})`,
  );
  console.log(`\nLoRA step: ${report.model.label}`);
  console.log(
    `${report.threads} threads; FLOPs/step ${common.fmt(report.flops.step / 1e9, 2)} G (torch_step.py: ${report.flops.torch_flops_per_step ? common.fmt(report.flops.torch_flops_per_step / 1e9, 2) + ' G' : '—'}), ` +
      `native engine extra ${common.fmt(report.flops.engine_extra / 1e9, 2)} G (not counted)`,
  );
  common.printRows(['peer', 'tokens/s', 'median s', 'best s', 'others', ''], rows, new Set([0, 5]));
  console.log("('others': average cores used by other processes during that peer's run)\n");
  if (report.model.smoke) console.log('smoke-test size (--small): the ratios below are not the benchmark, no verdict');
  for (const t of report.targets) {
    console.log(
      `${common.verdict(t.pass)}  ${t.name.padEnd(28)} ${common.fmt(t.value, 2).padStart(6)}${t.unit}  (target ≥ ${t.target}${t.unit}; from best step times ${common.fmt(t.value_best, 2)}${t.unit})`,
    );
  }
  if (n.profile)
    console.log(
      `\nnative profile: forward (inference) ${common.fmt(n.profile.forward_median_s, 3)} s, forward+backward ${common.fmt(n.profile.forward_backward_median_s, 3)} s ` +
        `(backward ≈ ${common.fmt(n.profile.backward_estimate_s, 3)} s), optimizer ${common.fmt(n.profile.optimizer_median_s * 1000, 2)} ms`,
    );
  if (report.tfjs)
    console.log(
      `first loss: native ${report.native.loss_first}, tfjs ${report.tfjs.loss_first} (same model and batch)`,
    );
  console.log(`\nJSON: ${report.outFile}`);
}

async function main() {
  const args = common.parseCommandLine(process.argv.slice(2), { help: HELP, options: OPTIONS });
  if (args.worker) return common.workerMain(() => worker(args.worker, args));
  const m = args.small ? SMALL : FULL;
  const started = new Date();
  common.log(`engine-cpu benchmark, ${args.small ? 'SMALL smoke config' : 'full config'}, ${args.threads} threads`);
  const builds = common.ensureBuilds(args, { sgemm: true, requireOutputs: true });
  const flops = stepFlops(m);
  const shapes = [];
  const seen = new Set();
  for (const s of [...flops.dominantGemms.map((g) => g.shape), ...flops.projectionGemms]) {
    const k = s.join('x');
    if (!seen.has(k)) {
      seen.add(k);
      shapes.push(s);
    }
  }

  const record = common.phases(args.waitIdle);
  const { settle, phase } = record;

  await settle('sgemm_before');
  common.log('sgemm rate (bench_sgemm), before the engines …');
  const sgemmRuns = [await phase('sgemm_before', () => measureSgemm(args.threads, shapes))];

  await settle('native');
  common.log('native engine …');
  const native = await phase('native', () => runEngine('native', args));

  let pytorch = null;
  if (!args.skipTorch) {
    const runs = [];
    for (const passive of [false, true]) {
      const name = passive ? 'pytorch_passive' : 'pytorch_as_is';
      await settle(name);
      const r = await phase(name, () => {
        common.log(`pytorch (${common.torchSetting(passive)}) …`);
        return common.runTorch(TORCH_SCRIPT, args, m, passive, { rank: m.rank, alpha: m.alpha });
      });
      runs.push({
        setting: common.torchSetting(passive),
        median_s: r.median_s,
        best_s: r.best_s,
        tokens_per_s: r.tokens_per_s,
        gflops_per_s: r.gflops_per_s,
        step_seconds: r.step_seconds,
        loss_first: r.loss_first,
        loss_last: r.loss_last,
        flops_per_step: r.flops_per_step,
        flops_per_step_torch: r.flops_per_step_torch,
        torch_version: r.torch_version,
        torch_package: r.torch_package,
        blas: r.blas,
        openblas: r.openblas,
        env: r.env,
        threads: r.threads,
      });
    }
    const faster = runs.reduce((a, b) => (b.median_s < a.median_s ? b : a));
    pytorch = { runs, faster: faster.setting, reference: faster };
  }

  let tfjs = null;
  if (!args.skipTfjs) {
    await settle('tfjs');
    tfjs = await phase('tfjs', () => runTfjs(args, m));
  }

  common.log('sgemm rate (bench_sgemm), after the engines …');
  await settle('sgemm_after');
  sgemmRuns.push(await phase('sgemm_after', () => measureSgemm(args.threads, shapes)));
  const sgemm = sgemmSummary(sgemmRuns, flops.dominantGemms);
  const tokens = m.batch * m.seq;
  const floorS = flops.step / (sgemm.best.gflops * 1e9);
  const floor = {
    seconds: common.round(floorS, 5),
    tokens_per_s: common.round(tokens / floorS, 2),
    best_gflops: sgemm.best.gflops,
    best_shape: `${sgemm.best.M}x${sgemm.best.N}x${sgemm.best.K} (${sgemm.best.mode})`,
    flop_weighted_gflops_info: common.round(sgemm.flopWeightedGflops, 1),
    seconds_at_flop_weighted_rate_info: sgemm.flopWeightedGflops
      ? common.round(flops.step / (sgemm.flopWeightedGflops * 1e9), 5)
      : null,
  };

  const ref = pytorch?.reference;
  const targets = [
    {
      name: 'vs PyTorch (faster setting)',
      value: ratio(native.tokens_per_s, ref?.tokens_per_s),
      value_best: ref ? ref.best_s / native.best_s : null,
      target: 1.2,
      unit: '×',
    },
    {
      name: 'vs tfjs wasm engine',
      value: ratio(native.tokens_per_s, tfjs?.tokens_per_s),
      value_best: tfjs ? tfjs.best_s / native.best_s : null,
      target: 5,
      unit: '×',
    },
    {
      name: 'of the floor',
      value: (100 * floorS) / native.median_s,
      value_best: (100 * floorS) / native.best_s,
      target: 50,
      unit: '%',
    },
  ].map((t) => ({
    ...t,
    value: common.round(t.value, 4),
    value_best: common.round(t.value_best, 4),
    // The smoke size measures per-call overheads, not the benchmark: no verdict.
    pass: t.value === null || args.small ? null : t.value >= t.target,
  }));

  const report = {
    benchmark: 'engine-cpu',
    date: started.toISOString(),
    duration_s: common.round((Date.now() - started.getTime()) / 1000, 1),
    command: `node bench/engine-cpu/run.mjs ${process.argv.slice(2).join(' ')}`.trim(),
    threads: args.threads,
    model: {
      ...m,
      label: `d=${m.hidden} L=${m.layers} H=${m.heads}/${m.kvHeads} F=${m.intermediate} V=${m.vocab}, batch ${m.batch} × seq ${m.seq}, LoRA r=${m.rank} α=${m.alpha} on 7 projections`,
      smoke: args.small,
      note: args.small ? 'smoke-test size' : 'intermediate 1408 = 2.75 × 512 (TinyLlama ratio), same in every peer',
    },
    machine: {
      ...common.machineInfo(),
      native: native.nativeInfo,
      sgemm_blas: sgemmRuns[0].blas,
      torch: ref
        ? {
            version: ref.torch_version,
            package: ref.torch_package,
            blas: ref.blas,
            openblas_core: ref.openblas?.core ?? null,
          }
        : null,
    },
    builds: { ...builds, ...common.provenance() },
    load: common.loadReport(
      'foreign_cores: CPU used by other processes during each phase (average cores); > 0.1 means the phase was contended',
      record,
    ),
    flops: {
      step: flops.step,
      breakdown: flops.breakdown,
      not_counted: flops.notCounted,
      engine_extra: flops.engineExtraTotal,
      engine_extra_breakdown: flops.engineExtra,
      step_full_attention_info: flops.stepFullAttention,
      torch_flops_per_step: ref?.flops_per_step ?? null,
      torch_flops_per_step_full_attention: ref?.flops_per_step_torch ?? null,
      matches_torch: ref ? ref.flops_per_step === flops.step : null,
      attention_pairs: flops.pairs,
      convention:
        '2 FLOPs per multiply-add, matmuls only; attention causal (T(T+1)/2 pairs); layer-0 q/k/v input grads not counted; native extra (QKᵀ recompute in backward, 64-query block overhang) reported separately',
    },
    sgemm: { runs: sgemmRuns, best_per_shape: sgemm.perShape },
    floor,
    native,
    pytorch,
    tfjs,
    targets,
  };
  report.native.gflops_per_s = common.round(flops.step / native.median_s / 1e9, 2);
  if (tfjs) tfjs.gflops_per_s = common.round(flops.step / tfjs.median_s / 1e9, 3);

  common.writeReport(report, args, started);
  printTable(report);
  if (ref && !report.flops.matches_torch)
    console.log(`warning: FLOP count ${flops.step} differs from torch_step.py's ${ref.flops_per_step}`);
}

common.runScript(main);
