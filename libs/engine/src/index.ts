export * from './types.js';
export {
  Engine,
  Model,
  Adapter,
  Optimizer,
  type EngineName,
  type EngineOptions,
  type OptimizerConfig,
  type TrainStepResult,
} from './engine.js';
export { learningRate, type LearningRateSchedule, type ScheduleKind } from './schedule.js';
export { generate, argmax, sampleTopP, type GenerateOptions } from './generate.js';
export {
  parseDevice,
  deviceFromEnv,
  deviceName,
  nativeDeviceOrdinal,
  deviceError,
  CPU_DEVICE,
  type Device,
} from './device.js';
export {
  NativeModelBackend,
  assertNativeDevice,
  nativeInfo,
  blasHint,
  setNativeThreads,
  loraTargetMask,
} from './native-model.js';
export { createTfjsModel, TfjsModel } from './tfjs/index.js';
export {
  mix32,
  hash3,
  uniform,
  loraInitA,
  routerInit,
  dropoutThreshold,
  dropoutKeepScale,
  dropoutKeepMask,
  dropoutMultiplier,
} from './rng.js';
export * from './methods/index.js';
export { inputGroupKey, inputGroupFirstProjection } from './tfjs/tensor-layout.js';
export { ropeFrequencies, ropeTables } from './rope.js';
export { randomLlamaConfig, randomWeights, type RandomWeightsOptions } from './testing/random-model.js';
export { relativeL2, maxAbsDifference } from './testing/compare.js';
