/** Learning-rate schedules (docs/engine.md), shared by every engine. */
export type ScheduleKind = 'constant' | 'linear' | 'cosine';

export interface LearningRateSchedule {
  kind: ScheduleKind;
  /** Peak learning rate. */
  lr: number;
  warmupSteps: number;
  /** Optimizer updates in the whole run (the decay reaches its floor at the last one). */
  totalSteps: number;
  /** Floor of the decay, as a fraction of lr. */
  minLrRatio: number;
}

/** The learning rate of update `step` (0-based). */
export function learningRate(schedule: LearningRateSchedule, step: number): number {
  const { kind, lr, warmupSteps, totalSteps, minLrRatio } = schedule;
  // (t + 1) / warmup: the first update already moves, unlike transformers' scheduler at lr 0.
  if (step < warmupSteps) return (lr * (step + 1)) / warmupSteps;
  const progress = Math.min(1, (step - warmupSteps) / Math.max(1, totalSteps - warmupSteps));
  switch (kind) {
    case 'constant':
      return lr;
    case 'linear':
      return lr * (minLrRatio + (1 - minLrRatio) * (1 - progress));
    case 'cosine':
      return lr * (minLrRatio + (1 - minLrRatio) * 0.5 * (1 + Math.cos(Math.PI * progress)));
  }
}
