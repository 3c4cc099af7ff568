/**
 * Messages between the worker (parent) and its trainer runner (child process, `runner.ts`),
 * over the IPC channel of `child_process.fork`.
 */
import type { JobError } from '@expertune/db';

/** What the runner needs to train a job; the parent resolves every path from the job's rows. */
export interface RunnerInput {
  jobId: string;
  method: string;
  seed: number;
  /** jobs.config: the resolved training config (or its hyperparameter sections) the API stored. */
  config: Record<string, unknown>;
  modelDir: string;
  trainFile: string;
  validationFile: string | null;
  outputDir: string;
  /** A checkpoint directory chosen through the API's resume; null: the latest one with steps left, if any. */
  resumeFrom: string | null;
  /** Native engine threads (0 = all cores); a free key, so it may differ between attempts. */
  threads: number | null;
}

export interface MetricPoint {
  name: string;
  step: number;
  value: number;
}

export type RunnerMessage =
  | {
      type: 'start';
      totalSteps: number;
      resumedFromStep: number | null;
      trainableParameters: number;
      engine: string;
      rows: number;
      badRows: number;
      badValidationRows: number;
      validationSequences: number;
      notes: string[];
    }
  /** Metrics of one step (or an evaluation), or those a resumed run replays from its logs. */
  | { type: 'metrics'; step: number; points: MetricPoint[] }
  /** Mean expert load of each layer (the mean over its sites), one step. */
  | { type: 'routing'; step: number; layers: { layer: number; load: number[] }[] }
  | { type: 'eval'; step: number; totalSteps: number; result: Record<string, unknown> }
  | { type: 'checkpoint'; step: number; path: string; evalLoss: number | null }
  | { type: 'stopped'; step: number }
  | { type: 'finished'; step: number; exportDir: string; adapter: boolean; metrics: Record<string, number> }
  /** Sent just before a non-zero exit: a user error (config, data) or an internal one. */
  | { type: 'error'; error: JobError };

export type ParentMessage = { type: 'input'; input: RunnerInput } | { type: 'stop' };

/** Exit codes of the runner. */
export const EXIT_OK = 0;
export const EXIT_USER_ERROR = 2;
export const EXIT_CRASH = 3;
