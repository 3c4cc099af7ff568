export { runTraining, type TrainCallbacks, type TrainResult, type StepReport } from './train.js';
export { loadTrainingData, DatasetError, type TrainingData, type TrainingSequence, type DataStats } from './data.js';
export { epochOrder, makeBatch, microBatches } from './batches.js';
export { loadModelWithAdapter, type LoadOptions } from './load.js';
export { exportRun, readRunRecord, saveRunState, type RunRecord } from './run-state.js';
export { initRandomModel, MODEL_PRESETS, type ModelPreset } from './init-model.js';
export { main } from './cli.js';
