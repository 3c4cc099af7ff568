/**
 * Resumable checkpoints (docs/checkpoints.md): `output_dir/checkpoints/step-N/` holds
 *   trainable.safetensors  every adapter tensor (FlyLoRA's frozen A and bias too), or every weight
 *                          in full fine-tuning
 *   optimizer.safetensors  AdamW's moments `m` and `v`, flat, in the engine's order
 *   state.json             step, data position (epoch, micro-batch within it), seed, engine, the
 *                          resolved config and its hash, the eval loss at that step when one ran
 *   manifest.json          the sha256 of each file above, written last (file-manifest.ts)
 * Each is written into a temporary directory renamed into place, so a killed process leaves
 * either a whole checkpoint or none; the manifest catches what a rename cannot (a torn copy, a
 * file damaged later): a resume takes the latest checkpoint that matches it.
 */
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';

import type { TrainConfig } from '@expertune/contracts';
import type { Model, OptimizerState } from '@expertune/engine';
import { SafetensorsFile, writeSafetensors } from '@expertune/formats';

import { MANIFEST_FILE, manifestProblem, writeManifest } from './file-manifest.js';

export interface CheckpointState {
  /** Optimizer updates taken (the schedule position; dropout seeds follow it). */
  step: number;
  /** Data position after the step: the epoch, and micro-batches already taken from it. */
  epoch: number;
  position: number;
  seed: number;
  engine: string;
  config_hash: string;
  config: TrainConfig;
  /** The validation loss evaluated at this step, when an evaluation ran at it. */
  eval_loss: number | null;
}

/** Settings that may differ between a run and its resumption: they do not change the numbers. */
const FREE_KEYS = new Set([
  'output_dir',
  'threads',
  'training.log_every',
  'training.checkpoint_every',
  'training.keep_checkpoints',
]);

function flatten(value: unknown, prefix: string, out: Map<string, string>): void {
  if (typeof value === 'object' && value !== null && !Array.isArray(value)) {
    for (const key of Object.keys(value).sort())
      flatten((value as Record<string, unknown>)[key], prefix ? `${prefix}.${key}` : key, out);
  } else if (!FREE_KEYS.has(prefix)) {
    out.set(prefix, JSON.stringify(value ?? null));
  }
}

function configEntries(config: TrainConfig): Map<string, string> {
  const out = new Map<string, string>();
  flatten(config, '', out);
  return out;
}

/** A hash of the settings that decide the run's numbers (output_dir, threads, logging and checkpointing left out). */
export function configHash(config: TrainConfig): string {
  const hash = createHash('sha256');
  for (const [key, value] of configEntries(config)) hash.update(`${key}=${value}\n`);
  return hash.digest('hex').slice(0, 16);
}

/** Keys whose values differ between two configs (the free keys left out). */
export function differingKeys(a: TrainConfig, b: TrainConfig): string[] {
  const left = configEntries(a);
  const right = configEntries(b);
  const keys = new Set([...left.keys(), ...right.keys()]);
  return [...keys].filter((key) => left.get(key) !== right.get(key)).sort();
}

function stepOf(name: string): number | null {
  const match = /^step-(\d+)$/.exec(name);
  return match ? Number(match[1]) : null;
}

/** Every `step-N` directory of a run, whole or not, oldest first. */
function stepDirectories(runDir: string): { step: number; dir: string }[] {
  const root = join(runDir, 'checkpoints');
  if (!existsSync(root)) return [];
  return readdirSync(root)
    .map((name) => ({ step: stepOf(name), dir: join(root, name) }))
    .filter((c): c is { step: number; dir: string } => c.step !== null)
    .sort((a, b) => a.step - b.step);
}

/** Checkpoint directories of a run whose manifest was written, oldest first (their sums are checked on resume). */
export function listCheckpoints(runDir: string): { step: number; dir: string }[] {
  return stepDirectories(runDir).filter((c) => existsSync(join(c.dir, MANIFEST_FILE)));
}

/** Throws unless `dir` is a whole checkpoint: every file present and matching the manifest's sha256. */
export function verifyCheckpoint(dir: string): void {
  const problem = manifestProblem(dir);
  if (problem) throw new Error(`${dir} is not a complete checkpoint: ${problem}`);
}

/**
 * A checkpoint directory (`…/checkpoints/step-N`) as given, or a run directory's latest whole one:
 * a damaged latest checkpoint is skipped for the one before it (`onSkipped` says why).
 */
export function resolveCheckpoint(path: string, onSkipped?: (dir: string, problem: string) => void): string {
  if (stepOf(basename(path)) !== null) {
    verifyCheckpoint(path);
    return path;
  }
  const all = listCheckpoints(path);
  for (const { dir } of all.reverse()) {
    const problem = manifestProblem(dir);
    if (problem === null) return dir;
    onSkipped?.(dir, problem);
  }
  throw new Error(`no complete checkpoint in ${join(path, 'checkpoints')}: nothing to resume`);
}

/** The directory of the run a checkpoint belongs to. */
export function runDirOf(checkpointDir: string): string {
  return join(checkpointDir, '..', '..');
}

function tensorsOf(model: Model): Map<string, { dtype: 'F32'; shape: number[]; data: Float32Array }> {
  const values = model.adapter ? model.adapter.weights() : model.trainableTensors();
  return new Map(
    [...values].map(([name, data]) => [name, { dtype: 'F32', shape: model.backend.tensorShape(name), data }] as const),
  );
}

const CHECKPOINT_FILES = ['trainable.safetensors', 'optimizer.safetensors', 'state.json'];

/** Writes `output_dir/checkpoints/step-N` atomically, then keeps the last `keep` (and the best by eval loss). */
export function writeCheckpoint(outputDir: string, model: Model, state: CheckpointState, keep: number): string {
  const root = join(outputDir, 'checkpoints');
  mkdirSync(root, { recursive: true });
  const final = join(root, `step-${state.step}`);
  const temporary = join(root, `.step-${state.step}.tmp-${process.pid}`);
  rmSync(temporary, { recursive: true, force: true });
  mkdirSync(temporary);
  writeSafetensors(join(temporary, 'trainable.safetensors'), tensorsOf(model));
  const optimizer = model.backend.optimizerState();
  writeSafetensors(
    join(temporary, 'optimizer.safetensors'),
    new Map([
      ['m', { dtype: 'F32', shape: [optimizer.m.length], data: optimizer.m }],
      ['v', { dtype: 'F32', shape: [optimizer.v.length], data: optimizer.v }],
    ] as const),
    { steps: String(optimizer.steps) },
  );
  writeFileSync(join(temporary, 'state.json'), JSON.stringify(state, null, 2) + '\n');
  writeManifest(temporary, CHECKPOINT_FILES);
  rmSync(final, { recursive: true, force: true });
  renameSync(temporary, final);
  pruneCheckpoints(outputDir, keep);
  return final;
}

function readState(dir: string): CheckpointState {
  return JSON.parse(readFileSync(join(dir, 'state.json'), 'utf8')) as CheckpointState;
}

/** Leaves the last `keep` checkpoints and the one with the lowest eval loss; 0 keeps all. */
export function pruneCheckpoints(outputDir: string, keep: number): void {
  if (keep <= 0) return;
  const all = listCheckpoints(outputDir);
  let best: { step: number; loss: number } | null = null;
  for (const c of all) {
    const loss = readState(c.dir).eval_loss;
    if (loss !== null && Number.isFinite(loss) && (best === null || loss < best.loss)) best = { step: c.step, loss };
  }
  for (const c of all.slice(0, Math.max(0, all.length - keep))) if (c.step !== best?.step) discard(c.dir);
  // Step directories without a manifest below the newest whole one: leftovers of an older writer or a torn copy.
  const newest = all.at(-1)?.step ?? -1;
  for (const c of stepDirectories(outputDir))
    if (c.step < newest && !existsSync(join(c.dir, MANIFEST_FILE))) discard(c.dir);
}

/** Renamed out of the `step-N` names first: a process killed while deleting never leaves half a checkpoint under one. */
function discard(dir: string): void {
  const trash = join(dirname(dir), `.discard-${basename(dir)}-${process.pid}`);
  renameSync(dir, trash);
  rmSync(trash, { recursive: true, force: true });
}

/**
 * Reads a checkpoint and checks it against the config about to run: a config whose settings
 * differ (free keys aside) or another engine is refused with the keys named.
 */
export function readCheckpoint(dir: string, config: TrainConfig, engine: string): CheckpointState {
  const state = readState(dir);
  const differing = differingKeys(state.config, config);
  if (differing.length > 0 || state.config_hash !== configHash(config))
    throw new Error(
      `cannot resume from ${dir}: the config differs from the checkpoint's in ${differing.join(', ') || 'its hash'}`,
    );
  if (state.engine !== engine)
    throw new Error(`cannot resume from ${dir}: it was written by the ${state.engine} engine, this run uses ${engine}`);
  return state;
}

/** Loads the checkpoint's tensors and optimizer state into a model set up like the one that wrote it. */
export function loadCheckpointInto(dir: string, model: Model): void {
  const tensors = new Map<string, Float32Array>();
  const file = SafetensorsFile.open(join(dir, 'trainable.safetensors'));
  try {
    for (const name of file.names()) tensors.set(name, file.readFloat32(name));
  } finally {
    file.close();
  }
  if (model.adapter) model.adapter.load(tensors);
  else {
    const expected = model.backend.tensorNames('trainable');
    const missing = expected.filter((name) => !tensors.has(name));
    if (missing.length > 0 || tensors.size !== expected.length)
      throw new Error(
        `checkpoint ${dir} does not hold this model's trainable tensors (${missing.slice(0, 3).join(', ')})`,
      );
    for (const [name, values] of tensors) model.backend.setTensor(name, values);
  }
  const optimizer = SafetensorsFile.open(join(dir, 'optimizer.safetensors'));
  try {
    const steps = Number(optimizer.metadata.steps);
    if (!Number.isInteger(steps) || steps < 0)
      throw new Error(`checkpoint ${dir}: optimizer.safetensors has no step count`);
    const state: OptimizerState = { steps, m: optimizer.readFloat32('m'), v: optimizer.readFloat32('v') };
    model.backend.setOptimizerState(state);
  } finally {
    optimizer.close();
  }
}
