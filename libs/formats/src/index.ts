export * from './errors.js';
export * from './dtype.js';
export * from './safetensors.js';
export * from './checkpoint.js';
export * from './model-config.js';
export * from './tokenizer.js';
export * from './export.js';
