export * from './common.js';
export * from './lora.js';
export * from './mola.js';
export * from './loramoe.js';
export * from './dynmole.js';
export * from './flylora.js';
