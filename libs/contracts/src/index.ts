export * from './train-config.js';
export * from './methods/index.js';
