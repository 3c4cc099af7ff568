import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, test } from 'vitest';

import { openCheckpoint } from './checkpoint.js';
import { CheckpointError, SafetensorsError } from './errors.js';
import { f32Bytes, handBuilt, tempDir } from './fixtures.test-util.js';

const tensor = (shape: number[], begin: number) => ({
  dtype: 'F32',
  shape,
  data_offsets: [begin, begin + 4 * shape.reduce((a, b) => a * b, 1)],
});

function expectCheckpointError(run: () => unknown, ...fragments: string[]): void {
  let caught: unknown;
  try {
    run();
  } catch (error) {
    caught = error;
  }
  expect(caught).toBeInstanceOf(CheckpointError);
  for (const fragment of fragments) expect((caught as Error).message).toContain(fragment);
}

/** Two shards: shard 1 holds "a" [2] = [1, 2] and "b" [1] = [3]; shard 2 holds "c" [1] = [-2.5]. */
function shardedDir(weightMap?: Record<string, string>): string {
  const dir = tempDir();
  writeFileSync(
    join(dir, 'model-00001-of-00002.safetensors'),
    handBuilt({ a: tensor([2], 0), b: tensor([1], 8) }, f32Bytes(1, 2, 3)),
  );
  writeFileSync(join(dir, 'model-00002-of-00002.safetensors'), handBuilt({ c: tensor([1], 0) }, f32Bytes(-2.5)));
  const index = {
    metadata: { total_size: 16 },
    weight_map: weightMap ?? {
      a: 'model-00001-of-00002.safetensors',
      b: 'model-00001-of-00002.safetensors',
      c: 'model-00002-of-00002.safetensors',
    },
  };
  writeFileSync(join(dir, 'model.safetensors.index.json'), JSON.stringify(index));
  return dir;
}

describe('openCheckpoint', () => {
  test('opens a single model.safetensors', () => {
    const dir = tempDir();
    writeFileSync(join(dir, 'model.safetensors'), handBuilt({ w: tensor([2], 0) }, f32Bytes(0.5, -1)));
    const checkpoint = openCheckpoint(dir);
    expect(checkpoint.names()).toEqual(['w']);
    expect(checkpoint.info('w')).toMatchObject({ dtype: 'F32', shape: [2], file: join(dir, 'model.safetensors') });
    expect([...checkpoint.readFloat32('w')]).toEqual([0.5, -1]);
    checkpoint.close();
  });

  test('opens a sharded checkpoint through its index', () => {
    const dir = shardedDir();
    const checkpoint = openCheckpoint(dir);
    expect(checkpoint.files).toHaveLength(2);
    expect(checkpoint.names().sort()).toEqual(['a', 'b', 'c']);
    expect(checkpoint.has('c')).toBe(true);
    expect(checkpoint.info('c').file).toBe(join(dir, 'model-00002-of-00002.safetensors'));
    expect([...checkpoint.readFloat32('a')]).toEqual([1, 2]);
    expect([...checkpoint.readFloat32('b')]).toEqual([3]);
    expect([...checkpoint.readFloat32('c')]).toEqual([-2.5]);
    expectCheckpointError(() => checkpoint.info('d'), 'no tensor "d"');
    checkpoint.close();
    expect(() => checkpoint.readBytes('a')).toThrow(SafetensorsError);
  });

  test('prefers the index when both layouts are present', () => {
    const dir = shardedDir();
    writeFileSync(join(dir, 'model.safetensors'), handBuilt({ other: tensor([1], 0) }, f32Bytes(9)));
    const checkpoint = openCheckpoint(dir);
    expect(checkpoint.has('other')).toBe(false);
    checkpoint.close();
  });

  test('refuses an index naming a shard that does not exist', () => {
    const dir = shardedDir({ a: 'model-00001-of-00002.safetensors', z: 'model-00003-of-00003.safetensors' });
    expectCheckpointError(() => openCheckpoint(dir), 'model-00003-of-00003.safetensors', 'does not exist');
  });

  test('refuses an index claiming a tensor its shard does not hold', () => {
    const dir = shardedDir({
      a: 'model-00001-of-00002.safetensors',
      b: 'model-00001-of-00002.safetensors',
      c: 'model-00001-of-00002.safetensors',
    });
    expectCheckpointError(
      () => openCheckpoint(dir),
      'tensor "c"',
      'model-00001-of-00002.safetensors',
      'does not hold it',
    );
  });

  test('refuses a shard holding a tensor the index does not list', () => {
    const dir = shardedDir({ a: 'model-00001-of-00002.safetensors', c: 'model-00002-of-00002.safetensors' });
    expectCheckpointError(() => openCheckpoint(dir), 'holds tensor "b"', 'does not list');
  });

  test.each(['../model-00001-of-00002.safetensors', '/etc/passwd', 'sub/../../x.safetensors', '.'])(
    'refuses a shard name escaping the directory: %s',
    (shardName) => {
      const dir = shardedDir({ a: shardName });
      expectCheckpointError(() => openCheckpoint(dir), `"${shardName}"`, 'escapes the model directory');
    },
  );

  test('accepts a shard in a subdirectory', () => {
    const dir = tempDir();
    mkdirSync(join(dir, 'weights'));
    writeFileSync(join(dir, 'weights', 's.safetensors'), handBuilt({ w: tensor([1], 0) }, f32Bytes(4)));
    writeFileSync(
      join(dir, 'model.safetensors.index.json'),
      JSON.stringify({ weight_map: { w: 'weights/s.safetensors' } }),
    );
    const checkpoint = openCheckpoint(dir);
    expect([...checkpoint.readFloat32('w')]).toEqual([4]);
    checkpoint.close();
  });

  test('refuses an index that is not JSON or has no weight_map', () => {
    const dir = tempDir();
    writeFileSync(join(dir, 'model.safetensors.index.json'), '{"weight_map": ');
    expectCheckpointError(() => openCheckpoint(dir), 'model.safetensors.index.json');
    writeFileSync(join(dir, 'model.safetensors.index.json'), '{"metadata": {}}');
    expectCheckpointError(() => openCheckpoint(dir), 'no "weight_map" object');
    writeFileSync(join(dir, 'model.safetensors.index.json'), '{"weight_map": {"a": 3}}');
    expectCheckpointError(() => openCheckpoint(dir), 'weight_map["a"] is not a file name');
  });

  test('reports a corrupt shard as a SafetensorsError naming it', () => {
    const dir = shardedDir();
    writeFileSync(join(dir, 'model-00002-of-00002.safetensors'), new Uint8Array(4));
    expect(() => openCheckpoint(dir)).toThrow(/model-00002-of-00002\.safetensors.*shorter/);
  });

  test('refuses pickle-only directories and says to convert', () => {
    const dir = tempDir();
    writeFileSync(join(dir, 'pytorch_model.bin'), 'not loaded');
    expectCheckpointError(() => openCheckpoint(dir), 'pickle checkpoints are not loaded', 'safetensors');
  });

  test('refuses a directory without weights, or a missing directory', () => {
    const dir = tempDir();
    writeFileSync(join(dir, 'config.json'), '{}');
    expectCheckpointError(
      () => openCheckpoint(dir),
      'neither model.safetensors nor model.safetensors.index.json',
      'config.json',
    );
    expectCheckpointError(() => openCheckpoint(join(dir, 'missing')), 'does not exist');
  });
});
