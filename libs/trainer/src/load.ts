/** Loading a base model, optionally with an adapter export on top (PEFT LoRA or a mixture), on either engine. */
import { Engine, type EngineName, type Model } from '@expertune/engine';
import {
  adapterParameterCounts,
  expertsPerLayer,
  loraTensorsForAllLayers,
  readAdapterExport,
} from '@expertune/formats';
import type { LoadedAdapterExport } from '@expertune/formats';

import { adapterConfigFromSpec } from './adapter-config.js';

export interface LoadOptions {
  model: string;
  adapter?: string | undefined;
  engine?: EngineName;
  threads?: number;
}

/** Attaches an adapter export (already read) to a model and loads its tensors. */
export function attachExport(model: Model, loaded: LoadedAdapterExport): void {
  const tensors = loaded.method === 'lora' ? loraTensorsForAllLayers(loaded, model.config) : loaded.tensors;
  model.attachAdapter(adapterConfigFromSpec(loaded.spec)).load(tensors);
}

export async function loadModelWithAdapter(options: LoadOptions): Promise<Model> {
  const engine = Engine.create(options.engine ?? 'native', { threads: options.threads ?? 0 });
  const model = await engine.loadModel(options.model);
  if (!options.adapter) return model;
  try {
    attachExport(model, readAdapterExport(options.adapter, { model: model.config }));
    return model;
  } catch (error) {
    model.dispose();
    throw error;
  }
}

/** What `expertune info --adapter` prints about an export: method, settings, parameters per layer. */
export function describeAdapterExport(loaded: LoadedAdapterExport) {
  const counts = adapterParameterCounts(loaded.spec, loaded.numLayers, loaded.shapes);
  const experts = loaded.spec.method === 'lora' ? null : expertsPerLayer(loaded.spec);
  return {
    method: loaded.method,
    base_model: loaded.baseModel,
    adapter: loaded.spec,
    trainable_parameters: counts.trainable,
    frozen_parameters: counts.frozen,
    per_layer: counts.perLayer.map((row) => ({
      layer: row.layer,
      ...(experts ? { experts: experts[row.layer] } : {}),
      trainable: row.trainable,
      frozen: row.frozen,
    })),
  };
}
