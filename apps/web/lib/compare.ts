/** The compare page's tables: the config of a run as compared, and the final value of each metric. */
import type { Job, MetricSeries } from '@expertune/contracts';

import { EVAL_LOSS, EXACT_MATCH, taskOf, TOKENS_PER_SECOND, TRAIN_LOSS } from './metrics';
import { lastFinite } from './series';

/** What defines a run: the request as resolved by the API. */
export function runConfig(
  job: Pick<Job, 'method' | 'model' | 'training_file' | 'validation_file' | 'seed' | 'accelerator' | 'hyperparameters'>,
) {
  return {
    method: job.method,
    model: job.model,
    training_file: job.training_file,
    validation_file: job.validation_file,
    seed: job.seed,
    accelerator: job.accelerator,
    hyperparameters: job.hyperparameters,
  };
}

export interface FinalMetricRow {
  name: string;
  /** One per run; null where the run has no such series. */
  values: (number | null)[];
  /** Index of the best run (lowest loss, highest exact match), or -1. */
  best: number;
}

const LOWER_IS_BETTER = (name: string) => name.endsWith('loss');

/**
 * Final values side by side: losses, exact match overall and per task (`eval/exact_match/<task>`,
 * the union of every run's tasks, sorted), throughput.
 */
export function finalMetrics(runs: readonly (readonly MetricSeries[])[]): FinalMetricRow[] {
  const tasks = new Set<string>();
  for (const run of runs) for (const s of run) if (taskOf(s.name)) tasks.add(s.name);
  const names = [TRAIN_LOSS, EVAL_LOSS, EXACT_MATCH, ...[...tasks].sort(), TOKENS_PER_SECOND];
  return names
    .map((name) => {
      const values = runs.map((run) => {
        const s = run.find((x) => x.name === name);
        return s ? lastFinite(s.values) : null;
      });
      let best = -1;
      if (name !== TOKENS_PER_SECOND && values.filter((v) => v !== null).length > 1) {
        values.forEach((v, i) => {
          if (v === null) return;
          const current = best < 0 ? null : values[best]!;
          if (current === null || (LOWER_IS_BETTER(name) ? v < current : v > current)) best = i;
        });
      }
      return { name, values, best };
    })
    .filter((row) => row.values.some((v) => v !== null));
}
