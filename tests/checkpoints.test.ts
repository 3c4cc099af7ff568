/**
 * Checkpoints as users bring them: sharded (model.safetensors.index.json) and BF16/F16 weights
 * load into both engines as float32 and give the logits of the same weights loaded from F32.
 */
import { copyFileSync, mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

import { Engine, relativeL2 } from '@expertune/engine';
import { SafetensorsFile, writeSafetensors } from '@expertune/formats';
import { initRandomModel } from '@expertune/trainer';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { temporaryDirectory } from './helpers.js';

const work = temporaryDirectory('checkpoints');
const f32Dir = join(work.path, 'f32');
let weights = new Map<string, { shape: number[]; data: Float32Array }>();

/** Round-to-nearest-even to bfloat16, written here independently of libs/formats. */
function roundToBfloat16(values: Float32Array): Float32Array {
  const bits = new Uint32Array(Float32Array.from(values).buffer);
  for (let i = 0; i < bits.length; i++) {
    const lsb = (bits[i]! >>> 16) & 1;
    bits[i] = ((bits[i]! + 0x7fff + lsb) >>> 16) << 16;
  }
  return new Float32Array(bits.buffer);
}

beforeAll(() => {
  initRandomModel(f32Dir, 'tiny', 4);
  const file = SafetensorsFile.open(join(f32Dir, 'model.safetensors'));
  weights = new Map(file.names().map((n) => [n, { shape: [...file.info(n).shape], data: file.readFloat32(n) }]));
  file.close();
});
afterAll(() => work.remove());

function modelDir(name: string): string {
  const dir = join(work.path, name);
  mkdirSync(dir);
  copyFileSync(join(f32Dir, 'config.json'), join(dir, 'config.json'));
  return dir;
}

async function logitsOf(engineName: 'native' | 'tfjs', dir: string): Promise<Float32Array> {
  const model = await Engine.create(engineName).loadModel(dir);
  const ids = Int32Array.from([256, 10, 200, 33, 97, 98, 99]);
  const logits = await model.logits({ ids, batch: 1, seqLen: ids.length });
  model.dispose();
  return logits;
}

describe('checkpoint layouts and dtypes', () => {
  it('a BF16 checkpoint sharded in two files equals the F32 checkpoint of its rounded weights', async () => {
    const sharded = modelDir('bf16-sharded');
    const names = [...weights.keys()];
    const halves = [names.slice(0, names.length / 2), names.slice(names.length / 2)];
    const weightMap: Record<string, string> = {};
    halves.forEach((part, i) => {
      const file = `model-0000${i + 1}-of-00002.safetensors`;
      writeSafetensors(
        join(sharded, file),
        new Map(part.map((n) => [n, { dtype: 'BF16' as const, ...weights.get(n)! }])),
        { format: 'pt' },
      );
      for (const n of part) weightMap[n] = file;
    });
    writeFileSync(
      join(sharded, 'model.safetensors.index.json'),
      JSON.stringify({ metadata: {}, weight_map: weightMap }),
    );

    const rounded = modelDir('rounded-f32');
    writeSafetensors(
      join(rounded, 'model.safetensors'),
      new Map(
        [...weights].map(([n, t]) => [n, { dtype: 'F32' as const, shape: t.shape, data: roundToBfloat16(t.data) }]),
      ),
    );
    for (const engine of ['native', 'tfjs'] as const) {
      const [fromShards, fromRounded, original] = [
        await logitsOf(engine, sharded),
        await logitsOf(engine, rounded),
        await logitsOf(engine, f32Dir),
      ];
      expect(relativeL2(fromShards, fromRounded)).toBeLessThan(1e-6);
      expect(relativeL2(fromShards, original)).toBeGreaterThan(1e-5); // BF16 really was rounded
      expect(relativeL2(fromShards, original)).toBeLessThan(2e-2);
    }
  });

  it('an F16 checkpoint loads within half-precision rounding of the F32 one', async () => {
    const f16 = modelDir('f16');
    writeSafetensors(
      join(f16, 'model.safetensors'),
      new Map([...weights].map(([n, t]) => [n, { dtype: 'F16' as const, ...t }])),
    );
    expect(relativeL2(await logitsOf('native', f16), await logitsOf('native', f32Dir))).toBeLessThan(3e-3);
  });
});
