/**
 * safetensors from untrusted files: the header parser on bytes, and a whole file opened and every
 * tensor read back. Anything else than a valid file is a SafetensorsError naming the problem.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import {
  DTYPES,
  dtypeSize,
  parseSafetensorsHeader,
  SafetensorsError,
  SafetensorsFile,
  serializeSafetensors,
  type SafetensorsHeader,
  type TensorToWrite,
} from '@expertune/formats';
import fc from 'fast-check';
import { afterAll, describe, expect, it } from 'vitest';

import { fuzzParser, logFigures } from './harness.js';
import { mutatedBytes, mutatedJson, oddString } from './mutations.js';

const tensor: fc.Arbitrary<TensorToWrite> = fc
  .record({
    dtype: fc.constantFrom(...DTYPES),
    shape: fc.array(fc.integer({ min: 0, max: 4 }), { maxLength: 3 }),
  })
  .chain(({ dtype, shape }) => {
    const bytes = shape.reduce((n, d) => n * d, 1) * dtypeSize(dtype);
    return fc.uint8Array({ minLength: bytes, maxLength: bytes }).map((data) => ({ dtype, shape, data }));
  });

const tensorName = fc.oneof(
  { weight: 4, arbitrary: fc.constantFrom('model.embed_tokens.weight', 'lm_head.weight', 'a', 'b', 'c') },
  { weight: 1, arbitrary: oddString.filter((name) => name !== '' && name !== '__metadata__') },
);

const metadata = fc.option(fc.dictionary(fc.string({ maxLength: 8 }), fc.string({ maxLength: 8 }), { maxKeys: 3 }), {
  nil: undefined,
});

/** A file serialized by our writer. */
const validFile = fc
  .tuple(fc.dictionary(tensorName, tensor, { maxKeys: 5 }), metadata)
  .map(([tensors, meta]) => serializeSafetensors(tensors, meta));

/** The header as JSON, mutated, then written back with a correct length prefix and the same data. */
const headerMutated = fc.tuple(validFile, fc.nat()).chain(([file]) => {
  const header = parseSafetensorsHeader(file);
  const json = JSON.parse(new TextDecoder().decode(file.subarray(8, header.dataStart))) as unknown;
  return mutatedJson(fc.constant(json)).map((mutated) => {
    let text: string;
    try {
      text = JSON.stringify(mutated) ?? 'null';
    } catch {
      text = '['.repeat(100_000); // deeper than JSON.stringify goes
    }
    const headerBytes = new TextEncoder().encode(text);
    const out = new Uint8Array(8 + headerBytes.length + header.dataLength);
    new DataView(out.buffer).setBigUint64(0, BigInt(headerBytes.length), true);
    out.set(headerBytes, 8);
    out.set(file.subarray(header.dataStart), 8 + headerBytes.length);
    return out;
  });
});

const anyFile = fc.oneof(mutatedBytes(validFile), headerMutated);

/** What a parsed header promises its readers: tensors inside the data, sized by dtype and shape. */
function checkHeader(header: SafetensorsHeader, fileSize: number): void {
  expect(header.dataStart + header.dataLength).toBe(fileSize);
  for (const info of header.tensors.values()) {
    const [begin, end] = info.dataOffsets;
    expect(0 <= begin && begin <= end && end <= header.dataLength).toBe(true);
    expect(end - begin).toBe(info.numel * dtypeSize(info.dtype));
    expect(info.shape.reduce((n, d) => n * d, 1)).toBe(info.numel);
  }
}

const dir = mkdtempSync(join(tmpdir(), 'expertune-fuzz-safetensors-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('safetensors fuzzing', () => {
  it('parseSafetensorsHeader: a valid header or a SafetensorsError', async () => {
    logFigures(
      await fuzzParser({
        parser: 'safetensors header',
        input: anyFile,
        parse: (bytes) => parseSafetensorsHeader(bytes),
        expected: [SafetensorsError],
        check: (header, bytes) => checkHeader(header, bytes.length),
        shortRuns: 2000,
      }),
    );
  });

  it('SafetensorsFile: opens and reads every tensor, or a SafetensorsError', async () => {
    const path = join(dir, 'model.safetensors');
    logFigures(
      await fuzzParser({
        parser: 'safetensors file (header and body)',
        input: anyFile,
        parse: (bytes) => {
          writeFileSync(path, bytes);
          const file = SafetensorsFile.open(path);
          try {
            for (const name of file.names()) {
              const bytesRead = file.readBytes(name);
              expect(bytesRead.length).toBe(file.info(name).byteLength);
              if (file.info(name).decodable) expect(file.readFloat32(name).length).toBe(file.info(name).numel);
            }
            return { header: file.header, size: bytes.length };
          } finally {
            file.close();
          }
        },
        expected: [SafetensorsError],
        check: ({ header, size }) => checkHeader(header, size),
        shortRuns: 1000,
      }),
    );
  });
});
