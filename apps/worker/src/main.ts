/**
 * `expertune-worker`: one process per accelerator (EXPERTUNE_ACCELERATOR, default cpu). SIGTERM or
 * SIGINT stops it gracefully: the running job checkpoints and goes back to the queue.
 */
import { redactSecrets } from '@expertune/db';
import { assertNativeDevice, parseDevice } from '@expertune/trainer';

import { settingsFromEnv } from './settings.js';
import { TrainingWorker } from './worker.js';

export async function main(): Promise<void> {
  const settings = settingsFromEnv();
  // A CUDA device from a CPU-only build fails here, before any job is taken.
  assertNativeDevice(parseDevice(settings.device));
  const worker = new TrainingWorker(settings);
  let signals = 0;
  const shutdown = (signal: string) => {
    signals += 1;
    if (signals > 1) {
      console.error(`[worker] ${signal} again: exiting without waiting for the job's checkpoint`);
      process.exit(130);
    }
    console.log(`[worker] ${signal}: stopping (the running job checkpoints and is re-queued)`);
    worker.close().then(
      () => process.exit(0),
      (error: unknown) => {
        console.error(redactSecrets(error instanceof Error ? (error.stack ?? error.message) : String(error)));
        process.exit(1);
      },
    );
  };
  process.on('SIGTERM', () => shutdown('SIGTERM'));
  process.on('SIGINT', () => shutdown('SIGINT'));
  await worker.start();
}
