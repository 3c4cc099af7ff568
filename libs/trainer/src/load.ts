/** Loading a base model, optionally with a PEFT LoRA adapter on top, on either engine. */
import { readPeftLoraAdapter } from '@expertune/formats';
import { Engine, PROJECTIONS, type EngineName, type Model, type Projection } from '@expertune/engine';

export interface LoadOptions {
  model: string;
  adapter?: string | undefined;
  engine?: EngineName;
  threads?: number;
}

export async function loadModelWithAdapter(options: LoadOptions): Promise<Model> {
  const engine = Engine.create(options.engine ?? 'native', { threads: options.threads ?? 0 });
  const model = await engine.loadModel(options.model);
  if (!options.adapter) return model;
  try {
    const adapter = readPeftLoraAdapter(options.adapter);
    const unknown = adapter.targetModules.filter((m) => !(PROJECTIONS as readonly string[]).includes(m));
    if (unknown.length > 0)
      throw new Error(
        `${options.adapter}: target_modules ${unknown.join(', ')} are not Llama projections (${PROJECTIONS.join(', ')})`,
      );
    model
      .attachLora({
        rank: adapter.rank,
        alpha: adapter.alpha,
        useRslora: adapter.useRslora,
        dropout: adapter.dropout,
        targetModules: adapter.targetModules as Projection[],
        seed: 0,
      })
      .load(adapter.tensors);
    return model;
  } catch (error) {
    model.dispose();
    throw error;
  }
}
