export {
  runTraining,
  optimizerConfigFor,
  type TrainCallbacks,
  type TrainEvent,
  type TrainOptions,
  type TrainResult,
  type StepReport,
  type StartInfo,
  type EvalReport,
} from './train.js';
export {
  evaluate,
  referenceAnswer,
  scoreLogits,
  type EvalOptions,
  type EvalResult,
  type TaskResult,
} from './evaluate.js';
export {
  loadTrainingData,
  readDataFile,
  dataStats,
  dataOptionsFor,
  packSequences,
  splitValidation,
  formatProblems,
  DatasetError,
  type DataOptions,
  type TrainingData,
  type TrainingSequence,
  type DataStats,
} from './data.js';
export {
  ChatRenderer,
  RowReader,
  DEFAULT_CHAT_TEMPLATE,
  COLUMN_NAMES,
  tokenizeSegments,
  type ChatMessage,
  type ColumnMapping,
  type DataFormat,
  type RowProblem,
} from './rows.js';
export { epochOrder, makeBatch, microBatches } from './batches.js';
export {
  configHash,
  differingKeys,
  listCheckpoints,
  resolveCheckpoint,
  verifyCheckpoint,
  type CheckpointState,
} from './checkpoints.js';
export { manifestProblem } from './file-manifest.js';
export { loadModelWithAdapter, attachExport, describeAdapterExport, type LoadOptions } from './load.js';
export {
  exportRun,
  readRunRecord,
  readRunTensors,
  runAdapter,
  runExportSpec,
  saveRunState,
  type RunRecord,
  type ExportFallback,
} from './run-state.js';
export { adapterConfigFor, adapterConfigFromSpec, exportSpecOf, isMixture } from './adapter-config.js';
export { exportCollapsedRun, crossEntropySum, type CollapseOptions, type CollapseResult } from './collapse.js';
export {
  initRandomModel,
  writeRandomModel,
  MODEL_PRESETS,
  type ModelPreset,
  type RandomModelSpec,
} from './init-model.js';
export { main } from './cli.js';
export { runPretraining, paragraphRows, type PretrainResult } from './pretrain.js';
export { trainByteLevelBpe, learnMerges, countPreTokens, type BpeTrainingOptions } from './bpe.js';
// Device selection (EXPERTUNE_DEVICE), for the worker, which reaches the engine through the trainer.
export { parseDevice, deviceFromEnv, deviceName, assertNativeDevice, type Device } from '@expertune/engine';
export {
  checkJobResources,
  estimateTrainingMemory,
  freeDiskBytes,
  freeGpuBytes,
  type MemoryEstimate,
  type ResourceProblem,
} from './resources.js';
