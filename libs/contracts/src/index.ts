export * from './train-config.js';
export * from './methods/index.js';
export * from './pretrain-config.js';
export * from './api/index.js';
