export * from './common.js';
export * from './jobs.js';
export * from './resources.js';
export * from './client.js';
