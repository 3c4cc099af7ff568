export * from './entities.js';
export * from './data-source.js';
export * from './api-keys.js';
export * from './metrics.js';
export * from './storage.js';
export * from './s3-storage.js';
export * from './bootstrap-key.js';
export * from './storage-sync.js';
