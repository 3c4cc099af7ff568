export { createTfjsModel, TfjsModel, type TfjsModelOptions, type SiteRoutingRecord } from './tfjs-model.js';
export type { TfjsBackendName } from './backend.js';
export {
  baseTensorShapes,
  loraSites,
  loraSite,
  inputGroupKey,
  inputGroupFirstProjection,
  loraScale,
  loraTensorShapes,
  projectionModule,
  projectionShape,
  projectionHasBias,
  type LoraSiteLayout,
} from './tensor-layout.js';
export { adamWUpdate, clipCoefficient, createAdamWState, globalGradNorm, type AdamWState } from './adamw.js';
