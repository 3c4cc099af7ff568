/** Metric names the worker stores (apps/worker), grouped as the charts show them. */

export const TRAIN_LOSS = 'train/loss';
export const EVAL_LOSS = 'eval/loss';
export const LEARNING_RATE = 'train/lr';
export const GRAD_NORM = 'train/grad_norm';
export const TOKENS_PER_SECOND = 'train/tokens_per_second';
export const TOKEN_ACCURACY = 'train/token_accuracy';
export const EXACT_MATCH = 'eval/exact_match';
export const EXACT_MATCH_TASK_PREFIX = 'eval/exact_match/';
export const ROUTING_PREFIX = 'routing/';

/** Per-task exact match series: `eval/exact_match/<task>` → task. */
export function taskOf(name: string): string | null {
  return name.startsWith(EXACT_MATCH_TASK_PREFIX) ? name.slice(EXACT_MATCH_TASK_PREFIX.length) : null;
}
