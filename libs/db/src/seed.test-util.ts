import { randomUUID } from 'node:crypto';
import type { DataSource } from 'typeorm';
import { Dataset, Job, Model } from './entities.js';

/** One model, one dataset and a queued job on them, with unique names. */
export async function seedJob(dataSource: DataSource): Promise<{ model: Model; dataset: Dataset; job: Job }> {
  const tag = randomUUID().slice(0, 8);
  const model = await dataSource.getRepository(Model).save({
    name: `smollm-${tag}`,
    path: `/models/smollm-${tag}`,
    config: { hidden_size: 576 },
    parameterCount: 135_000_000_000,
  });
  const dataset = await dataSource.getRepository(Dataset).save({
    name: `support-${tag}`,
    filename: 'support.jsonl',
    storageKey: `datasets/${tag}.jsonl`,
    bytes: 4096,
    sha256: 'c'.repeat(64),
    rows: 12,
    stats: { tokens: 3000 },
    preview: [{ prompt: 'hi', completion: 'hello' }],
  });
  const job = await dataSource.getRepository(Job).save({
    method: 'mola',
    baseModelId: model.id,
    trainingDatasetId: dataset.id,
    config: { rank: 8 },
    seed: 42,
  });
  const loaded = await dataSource.getRepository(Job).findOneByOrFail({ id: job.id });
  return { model: await dataSource.getRepository(Model).findOneByOrFail({ id: model.id }), dataset, job: loaded };
}
