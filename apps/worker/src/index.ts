export { TrainingWorker, type JobOutcome, type ProcessResult } from './worker.js';
export { settingsFromEnv, CANCEL_CHANNEL, jobChannel, type WorkerSettings } from './settings.js';
export { digestDirectory, trainConfigInput, listRunCheckpoints, defaultCheckpointEvery } from './job-files.js';
export type { RunnerInput, RunnerMessage, MetricPoint } from './protocol.js';
