/**
 * The weights of a Hugging Face model directory: `model.safetensors`, or shards listed by
 * `model.safetensors.index.json`. Only headers are read when opening; tensors on demand.
 */
import { existsSync, readFileSync, readdirSync, statSync } from 'node:fs';
import { isAbsolute, join, relative, resolve, sep } from 'node:path';

import { CheckpointError } from './errors.js';
import { SafetensorsFile, type TensorInfo } from './safetensors.js';

export const SINGLE_FILE = 'model.safetensors';
export const INDEX_FILE = 'model.safetensors.index.json';

/** Tensor information plus the file that holds it. */
export interface CheckpointTensorInfo extends TensorInfo {
  file: string;
}

export interface Checkpoint {
  readonly dir: string;
  /** The safetensors files, in the order they are read. */
  readonly files: readonly string[];
  /** Every tensor name, in file order then header order. */
  names(): string[];
  has(name: string): boolean;
  info(name: string): CheckpointTensorInfo;
  readBytes(name: string): Uint8Array;
  readFloat32(name: string): Float32Array;
  close(): void;
}

/** Opens the weights of a model directory. Close it when done (it holds one descriptor per file). */
export function openCheckpoint(dir: string): Checkpoint {
  if (!existsSync(dir) || !statSync(dir).isDirectory()) {
    throw new CheckpointError(`model directory ${dir} does not exist or is not a directory`, dir);
  }
  const indexPath = join(dir, INDEX_FILE);
  if (existsSync(indexPath)) return openSharded(dir, indexPath);
  const singlePath = join(dir, SINGLE_FILE);
  if (existsSync(singlePath)) return new SafetensorsCheckpoint(dir, [SafetensorsFile.open(singlePath)]);

  const present = readdirSync(dir);
  if (present.some((name) => name.startsWith('pytorch_model') && name.endsWith('.bin'))) {
    throw new CheckpointError(
      `${dir} holds only PyTorch pickle weights (pytorch_model*.bin): pickle checkpoints are not ` +
        `loaded (they can run code). Convert the model to safetensors first, e.g. with ` +
        `transformers: model.save_pretrained(dir, safe_serialization=True).`,
      dir,
    );
  }
  throw new CheckpointError(
    `${dir} has neither ${SINGLE_FILE} nor ${INDEX_FILE} ` +
      `(found: ${present.slice(0, 10).join(', ') || 'nothing'}${present.length > 10 ? ', ...' : ''})`,
    dir,
  );
}

function openSharded(dir: string, indexPath: string): Checkpoint {
  const weightMap = readWeightMap(indexPath);
  const shardNames = [...new Set(weightMap.values())];
  const shards: SafetensorsFile[] = [];
  try {
    for (const shardName of shardNames) {
      const shardPath = join(dir, shardName);
      if (!existsSync(shardPath)) {
        throw new CheckpointError(`${indexPath} lists shard ${shardName}, which does not exist in ${dir}`, indexPath);
      }
      shards.push(SafetensorsFile.open(shardPath));
    }
    // Index and shards must agree both ways: a tensor the index claims must be in that shard,
    // and a shard must hold nothing the index does not map to it (stale or mixed downloads).
    for (const [tensorName, shardName] of weightMap) {
      const shard = shards[shardNames.indexOf(shardName)]!;
      if (!shard.has(tensorName)) {
        throw new CheckpointError(
          `${indexPath} says tensor "${tensorName}" is in ${shardName}, but that shard does not hold it`,
          indexPath,
        );
      }
    }
    for (const [i, shard] of shards.entries()) {
      for (const tensorName of shard.names()) {
        const mapped = weightMap.get(tensorName);
        if (mapped !== shardNames[i]) {
          throw new CheckpointError(
            `shard ${shardNames[i]} holds tensor "${tensorName}", which ${indexPath} ` +
              (mapped === undefined ? 'does not list' : `maps to ${mapped}`),
            indexPath,
          );
        }
      }
    }
  } catch (error) {
    for (const shard of shards) shard.close();
    throw error;
  }
  return new SafetensorsCheckpoint(dir, shards);
}

/** Reads `weight_map` and checks that every shard name stays inside the model directory. */
function readWeightMap(indexPath: string): Map<string, string> {
  let index: unknown;
  try {
    index = JSON.parse(readFileSync(indexPath, 'utf8'));
  } catch (error) {
    throw new CheckpointError(`cannot read ${indexPath}: ${(error as Error).message}`, indexPath);
  }
  const weightMap = (index as { weight_map?: unknown } | null)?.weight_map;
  if (typeof weightMap !== 'object' || weightMap === null || Array.isArray(weightMap)) {
    throw new CheckpointError(`${indexPath} has no "weight_map" object (tensor name → shard file)`, indexPath);
  }
  const map = new Map<string, string>();
  for (const [tensorName, shardName] of Object.entries(weightMap)) {
    if (typeof shardName !== 'string' || shardName.length === 0) {
      throw new CheckpointError(`${indexPath}: weight_map["${tensorName}"] is not a file name`, indexPath);
    }
    // Resolved against a stand-in root, the name must land strictly below it.
    const relativePath = relative('/model', resolve('/model', shardName));
    const escapes = relativePath === '' || relativePath === '..' || relativePath.startsWith(`..${sep}`);
    if (isAbsolute(shardName) || escapes) {
      throw new CheckpointError(
        `${indexPath}: shard file name "${shardName}" (for "${tensorName}") escapes the model directory`,
        indexPath,
      );
    }
    map.set(tensorName, shardName);
  }
  if (map.size === 0) throw new CheckpointError(`${indexPath}: weight_map is empty`, indexPath);
  return map;
}

class SafetensorsCheckpoint implements Checkpoint {
  readonly files: readonly string[];
  private readonly fileOf = new Map<string, SafetensorsFile>();

  constructor(
    readonly dir: string,
    private readonly shards: SafetensorsFile[],
  ) {
    this.files = shards.map((shard) => shard.path);
    for (const shard of shards) {
      for (const name of shard.names()) this.fileOf.set(name, shard);
    }
  }

  names(): string[] {
    return [...this.fileOf.keys()];
  }

  has(name: string): boolean {
    return this.fileOf.has(name);
  }

  info(name: string): CheckpointTensorInfo {
    const shard = this.shardOf(name);
    return { ...shard.info(name), file: shard.path };
  }

  readBytes(name: string): Uint8Array {
    return this.shardOf(name).readBytes(name);
  }

  readFloat32(name: string): Float32Array {
    return this.shardOf(name).readFloat32(name);
  }

  close(): void {
    for (const shard of this.shards) shard.close();
  }

  private shardOf(name: string): SafetensorsFile {
    const shard = this.fileOf.get(name);
    if (shard === undefined)
      throw new CheckpointError(`the checkpoint in ${this.dir} has no tensor "${name}"`, this.dir);
    return shard;
  }
}
