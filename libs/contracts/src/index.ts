export * from './train-config.js';
