import { closeSync, ftruncateSync, openSync, readFileSync, readdirSync, writeFileSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, test } from 'vitest';

import { SafetensorsError } from './errors.js';
import { f32Bytes, handBuilt, tempDir, u16Bytes } from './fixtures.test-util.js';
import {
  MAX_HEADER_LENGTH,
  SafetensorsFile,
  decodeToFloat32,
  parseSafetensorsHeader,
  serializeSafetensors,
  writeSafetensors,
} from './safetensors.js';

function writeTemp(bytes: Uint8Array, name = 'model.safetensors'): string {
  const path = join(tempDir(), name);
  writeFileSync(path, bytes);
  return path;
}

/** Expects a SafetensorsError whose message contains every fragment. */
function expectError(run: () => unknown, ...fragments: (string | RegExp)[]): SafetensorsError {
  let caught: unknown;
  try {
    run();
  } catch (error) {
    caught = error;
  }
  expect(caught).toBeInstanceOf(SafetensorsError);
  const error = caught as SafetensorsError;
  for (const fragment of fragments) expect(error.message).toMatch(fragment);
  return error;
}

const tensor = (dtype: string, shape: unknown[], offsets: unknown[]) => ({ dtype, shape, data_offsets: offsets });

describe('reading hand-built files', () => {
  // Two tensors: "a" F32 [2] = [1, -2.5] at [0, 8), "b" BF16 [1, 2] = [1, -2.5] at [8, 12).
  const header = {
    __metadata__: { format: 'pt' },
    a: tensor('F32', [2], [0, 8]),
    b: tensor('BF16', [1, 2], [8, 12]),
  };
  const data = [...f32Bytes(1, -2.5), 0x80, 0x3f, 0x20, 0xc0];

  test('parses the header, metadata and tensor infos', () => {
    const bytes = handBuilt(header, data);
    const parsed = parseSafetensorsHeader(bytes);
    const headerLength = bytes.length - 8 - data.length;
    expect(parsed.headerLength).toBe(headerLength);
    expect(parsed.dataStart).toBe(8 + headerLength);
    expect(parsed.dataLength).toBe(12);
    expect(parsed.metadata).toEqual({ format: 'pt' });
    expect([...parsed.tensors.keys()]).toEqual(['a', 'b']);
    expect(parsed.tensors.get('b')).toEqual({
      name: 'b',
      dtype: 'BF16',
      shape: [1, 2],
      numel: 2,
      dataOffsets: [8, 12],
      byteLength: 4,
      decodable: true,
    });
  });

  test('reads tensors from a file by positional reads', () => {
    const path = writeTemp(handBuilt(header, data));
    const file = SafetensorsFile.open(path);
    try {
      expect(file.names()).toEqual(['a', 'b']);
      expect(file.metadata).toEqual({ format: 'pt' });
      expect(file.info('a')).toMatchObject({ dtype: 'F32', shape: [2], byteLength: 8 });
      expect([...file.readBytes('b')]).toEqual([0x80, 0x3f, 0x20, 0xc0]);
      expect([...file.readFloat32('a')]).toEqual([1, -2.5]);
      expect([...file.readFloat32('b')]).toEqual([1, -2.5]);
    } finally {
      file.close();
    }
  });

  test('accepts a header that is not padded to 8 bytes, and no metadata', () => {
    const bytes = handBuilt({ x: tensor('F16', [1], [0, 2]) }, u16Bytes(0xc100), { padTo: 1 });
    const parsed = parseSafetensorsHeader(bytes);
    expect(parsed.metadata).toEqual({});
    expect([...decodeToFloat32(bytes.subarray(parsed.dataStart), 'F16')]).toEqual([-2.5]);
  });

  test('accepts scalars, empty tensors and an empty file', () => {
    const bytes = handBuilt(
      {
        empty: tensor('F32', [0, 5], [0, 0]),
        scalar: tensor('F32', [], [0, 4]),
        alsoEmpty: tensor('I64', [3, 0], [4, 4]),
      },
      f32Bytes(7),
    );
    const parsed = parseSafetensorsHeader(bytes);
    expect(parsed.tensors.get('scalar')?.numel).toBe(1);
    expect(parsed.tensors.get('empty')?.byteLength).toBe(0);
    expect(parseSafetensorsHeader(handBuilt('{}')).tensors.size).toBe(0);
  });

  test('decodes every decodable dtype to float32', () => {
    const cases: [string, number[], number[]][] = [
      ['F64', [0, 0, 0, 0, 0, 0, 0x04, 0xc0], [-2.5]],
      ['F16', u16Bytes(0x3c00, 0x7bff, 0x0001), [1, 65504, 2 ** -24]],
      ['I64', [0xfe, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff], [-2]],
      ['U64', [5, 0, 0, 0, 0, 0, 0, 0], [5]],
      ['I32', [0x00, 0x00, 0x01, 0x00, 0xff, 0xff, 0xff, 0xff], [65536, -1]],
      ['U32', [0xff, 0xff, 0xff, 0xff], [2 ** 32]], // 2^32 - 1 rounds to 2^32 in float32
      ['I16', [0x00, 0x80], [-32768]],
      ['U16', [0xff, 0xff], [65535]],
      ['I8', [0xff, 0x7f], [-1, 127]],
      ['U8', [0xff, 0x00], [255, 0]],
      ['BOOL', [0, 1, 2], [0, 1, 1]],
    ];
    for (const [dtype, bytes, values] of cases) {
      const path = writeTemp(handBuilt({ t: tensor(dtype, [values.length], [0, bytes.length]) }, bytes), `${dtype}.st`);
      const file = SafetensorsFile.open(path);
      expect([...file.readFloat32('t')], dtype).toEqual(values);
      file.close();
    }
  });

  test('parses float8 tensors but refuses to decode them', () => {
    const path = writeTemp(handBuilt({ q: tensor('F8_E4M3', [2], [0, 2]) }, [0x38, 0x40]));
    const file = SafetensorsFile.open(path);
    expect(file.info('q')).toMatchObject({ dtype: 'F8_E4M3', decodable: false });
    expect([...file.readBytes('q')]).toEqual([0x38, 0x40]);
    expectError(() => file.readFloat32('q'), 'tensor "q"', 'F8_E4M3', 'not decodable');
    file.close();
  });

  test('names the tensor when it is unknown, and refuses reads after close', () => {
    const path = writeTemp(handBuilt(header, data));
    const file = SafetensorsFile.open(path);
    expectError(() => file.info('nope'), path, 'tensor "nope"', 'no such tensor');
    file.close();
    file.close(); // idempotent
    expectError(() => file.readBytes('a'), path, 'closed');
  });

  test('reports a file truncated after it was opened', () => {
    const path = writeTemp(handBuilt(header, data));
    const file = SafetensorsFile.open(path);
    const fd = openSync(path, 'r+');
    ftruncateSync(fd, readFileSync(path).length - 2);
    closeSync(fd);
    expectError(() => file.readBytes('b'), path, 'ended', 'tensor "b"');
    file.close();
  });

  test('opens a sparse 5 GiB file by its header alone and reads a tensor past 4 GiB', () => {
    const big = 5 * 2 ** 30;
    const header = handBuilt({ big: tensor('U8', [big], [0, big]), tail: tensor('F32', [1], [big, big + 4]) });
    const path = join(tempDir(), 'big.safetensors');
    const fd = openSync(path, 'w');
    writeSync(fd, header);
    ftruncateSync(fd, header.length + big + 4); // a hole: no disk space, no 5 GiB read
    writeSync(fd, new Uint8Array(f32Bytes(-2.5)), 0, 4, header.length + big);
    closeSync(fd);
    // Reading the whole file would fail outright (a Node Buffer holds at most 4 GiB).
    const file = SafetensorsFile.open(path);
    expect(file.info('big').byteLength).toBe(big);
    expect([...file.readFloat32('tail')]).toEqual([-2.5]);
    file.close();
  });
});

describe('malformed files', () => {
  const valid = handBuilt({ a: tensor('F32', [1], [0, 4]) }, f32Bytes(1));

  test('file shorter than 8 bytes', () => {
    expectError(
      () => parseSafetensorsHeader(new Uint8Array(5), 5, 'tiny.safetensors'),
      'tiny.safetensors',
      '5 bytes',
      'shorter',
    );
    const path = writeTemp(new Uint8Array([1, 2, 3]));
    expectError(() => SafetensorsFile.open(path), path, 'shorter than the 8-byte');
  });

  test('truncated header: the length points past the end of the file', () => {
    expectError(() => parseSafetensorsHeader(valid.subarray(0, 20)), 'extends beyond the end of the file');
    const path = writeTemp(valid.subarray(0, 20));
    expectError(() => SafetensorsFile.open(path), path, 'header length', 'beyond the end');
  });

  test('header length above 100,000,000 bytes is refused before allocating', () => {
    const bytes = handBuilt('{}', [], { declaredLength: BigInt(MAX_HEADER_LENGTH) + 1n });
    expectError(() => parseSafetensorsHeader(bytes, 10 ** 12), 'exceeds the limit of 100000000');
    const huge = handBuilt('{}', [], { declaredLength: 2n ** 64n - 1n });
    expectError(() => parseSafetensorsHeader(huge, 10 ** 12), 'header length 18446744073709551615', 'exceeds');
    const path = writeTemp(huge);
    expectError(() => SafetensorsFile.open(path), path, 'exceeds the limit');
  });

  test('header that is not JSON, not UTF-8, or not an object', () => {
    expectError(() => parseSafetensorsHeader(handBuilt('{"a": ')), 'not valid JSON');
    expectError(() => parseSafetensorsHeader(handBuilt('        ')), 'not valid JSON');
    const badUtf8 = handBuilt('{"\u00e9":1}');
    badUtf8[11] = 0xff; // inside the two-byte é
    expectError(() => parseSafetensorsHeader(badUtf8), 'not valid UTF-8');
    expectError(() => parseSafetensorsHeader(handBuilt('[1, 2]')), 'not a JSON object', 'array');
    expectError(() => parseSafetensorsHeader(handBuilt('42')), 'not a JSON object');
    expectError(() => parseSafetensorsHeader(handBuilt('null')), 'not a JSON object');
  });

  test('unknown dtype', () => {
    const bytes = handBuilt({ w: tensor('F128', [1], [0, 16]) }, new Array(16).fill(0));
    const error = expectError(
      () => parseSafetensorsHeader(bytes, bytes.length, 'm.st'),
      'm.st',
      'tensor "w"',
      'unknown dtype "F128"',
      'BF16',
    );
    expect(error.tensor).toBe('w');
    expect(error.source).toBe('m.st');
    expectError(
      () => parseSafetensorsHeader(handBuilt({ w: tensor(7 as never, [1], [0, 1]) }, [0])),
      'unknown dtype 7',
    );
  });

  test('negative, fractional or non-numeric shape entries', () => {
    expectError(
      () => parseSafetensorsHeader(handBuilt({ w: tensor('F32', [-1], [0, 4]) }, f32Bytes(1))),
      'tensor "w"',
      'dimension 0 (-1)',
      'non-negative integer',
    );
    expectError(
      () => parseSafetensorsHeader(handBuilt({ w: tensor('F32', [1, 1.5], [0, 4]) }, f32Bytes(1))),
      'dimension 1 (1.5)',
    );
    expectError(
      () => parseSafetensorsHeader(handBuilt({ w: tensor('F32', ['1'], [0, 4]) }, f32Bytes(1))),
      'dimension 0 ("1")',
    );
    expectError(
      () => parseSafetensorsHeader(handBuilt({ w: tensor('F32', [2 ** 53], [0, 4]) }, f32Bytes(1))),
      'non-negative integer',
    );
    expectError(
      () => parseSafetensorsHeader(handBuilt({ w: { dtype: 'F32', shape: 4, data_offsets: [0, 4] } }, f32Bytes(1))),
      'shape 4 is not an array',
    );
    // Each dimension is fine but the product is not addressable.
    expectError(
      () => parseSafetensorsHeader(handBuilt({ w: tensor('F32', [2 ** 30, 2 ** 30, 2 ** 30], [0, 4]) }, f32Bytes(1))),
      'too many elements',
    );
  });

  test('wrong dtype size: the byte range does not match shape × element size', () => {
    // [2] of F32 needs 8 bytes; the offsets span 4.
    const bytes = handBuilt({ w: tensor('F32', [2], [0, 4]) }, f32Bytes(1));
    expectError(() => parseSafetensorsHeader(bytes), 'tensor "w"', 'wrong dtype size', '2 × 4 = 8 bytes', 'span 4');
  });

  test('offsets that are not two non-negative integers, or reversed', () => {
    for (const offsets of [[0], [0, 4, 8], [0, 4.5], [-4, 0], ['0', '4'], null]) {
      const bytes = handBuilt({ w: { dtype: 'F32', shape: [1], data_offsets: offsets } }, f32Bytes(1));
      expectError(() => parseSafetensorsHeader(bytes), 'tensor "w"', 'data_offsets', 'not two non-negative integers');
    }
    const reversed = handBuilt({ w: tensor('F32', [1], [4, 0]) }, f32Bytes(1));
    expectError(() => parseSafetensorsHeader(reversed), 'tensor "w"', 'begin is after end');
  });

  test('offsets beyond the end of the file', () => {
    const bytes = handBuilt({ a: tensor('F32', [1], [0, 4]), b: tensor('F32', [1], [4, 8]) }, f32Bytes(1));
    expectError(
      () => parseSafetensorsHeader(bytes),
      'tensor "b"',
      '[4, 8] extend beyond the end of the file',
      '4 bytes',
    );
    const path = writeTemp(bytes);
    expectError(() => SafetensorsFile.open(path), path, 'tensor "b"', 'beyond the end');
  });

  test('overlapping tensors', () => {
    const bytes = handBuilt({ a: tensor('F32', [2], [0, 8]), b: tensor('F32', [2], [4, 12]) }, f32Bytes(1, 2, 3));
    expectError(() => parseSafetensorsHeader(bytes), 'overlapping tensors', '"a" spans [0, 8)', '"b" starts at 4');
    // Two tensors on the same bytes.
    const same = handBuilt({ a: tensor('F32', [1], [0, 4]), b: tensor('I32', [1], [0, 4]) }, f32Bytes(1));
    expectError(() => parseSafetensorsHeader(same), 'overlapping');
  });

  test('gap between tensors, and bytes at the end that no tensor covers', () => {
    const gap = handBuilt({ a: tensor('F32', [1], [0, 4]), b: tensor('F32', [1], [8, 12]) }, f32Bytes(1, 2, 3));
    expectError(() => parseSafetensorsHeader(gap), 'tensor "b"', 'gap', 'bytes [4, 8)');
    const trailing = handBuilt({ a: tensor('F32', [1], [0, 4]) }, f32Bytes(1, 2));
    expectError(() => parseSafetensorsHeader(trailing), 'gap', 'bytes [4, 8) at the end');
    const leading = handBuilt({ a: tensor('F32', [1], [4, 8]) }, f32Bytes(1, 2));
    expectError(() => parseSafetensorsHeader(leading), 'gap', 'bytes [0, 4)');
  });

  test('metadata values that are not strings, or metadata that is not a map', () => {
    const nonString = handBuilt({ __metadata__: { format: 'pt', step: 3 } });
    expectError(
      () => parseSafetensorsHeader(nonString, nonString.length, 'x.st'),
      'x.st',
      'metadata value for key "step"',
      'not a string',
      '3',
    );
    expectError(
      () => parseSafetensorsHeader(handBuilt({ __metadata__: ['pt'] })),
      '"__metadata__" is not a string-to-string map',
    );
    expectError(() => parseSafetensorsHeader(handBuilt({ __metadata__: 'pt' })), 'not a string-to-string map');
  });

  test('a tensor named __metadata__', () => {
    const bytes = handBuilt({ __metadata__: tensor('F32', [1], [0, 4]) }, f32Bytes(1));
    expectError(() => parseSafetensorsHeader(bytes), 'may not be named "__metadata__"');
  });

  test('a tensor entry that is not an object', () => {
    expectError(() => parseSafetensorsHeader(handBuilt({ w: [1, 2] })), 'tensor "w"', 'entry is not an object');
  });

  test('a directory or a missing path', () => {
    const dir = tempDir();
    expectError(() => SafetensorsFile.open(dir), dir);
    expectError(() => SafetensorsFile.open(join(dir, 'missing.safetensors')), 'missing.safetensors', 'cannot open');
  });

  test('random corruption only ever raises SafetensorsError', () => {
    const base = handBuilt(
      {
        __metadata__: { format: 'pt' },
        a: tensor('F32', [2, 2], [0, 16]),
        b: tensor('BF16', [3], [16, 22]),
        c: tensor('I8', [2], [22, 24]),
      },
      new Array(24).fill(1),
    );
    let seed = 7;
    const random = (n: number): number => {
      seed = (Math.imul(seed, 1664525) + 1013904223) >>> 0;
      return seed % n;
    };
    for (let i = 0; i < 3000; i++) {
      const bytes = base.slice(0, i % 7 === 0 ? random(base.length) : base.length);
      for (let flips = 1 + random(3); flips > 0 && bytes.length > 0; flips--) bytes[random(bytes.length)] = random(256);
      try {
        parseSafetensorsHeader(bytes);
      } catch (error) {
        if (!(error instanceof SafetensorsError)) throw error;
      }
    }
  });
});

describe('writing', () => {
  test('writes F32 with the exact layout: padded header, then data', () => {
    const bytes = serializeSafetensors(
      { a: { dtype: 'F32', shape: [2], data: new Float32Array([1, -2.5]) } },
      { format: 'pt' },
    );
    const json = '{"__metadata__":{"format":"pt"},"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}';
    // 85 characters, padded with 3 spaces to 88 so the data starts 8-aligned at byte 96.
    expect(json.length).toBe(85);
    expect(bytes.length).toBe(96 + 8);
    expect([...bytes]).toEqual([...handBuilt(json + '   ', f32Bytes(1, -2.5), { padTo: 1 })]);
  });

  test('converts float32 to BF16 and F16 on request, rounding to nearest even', () => {
    const data = new Float32Array([1, -2.5, 1 + 2 ** -8, 65520]);
    const bytes = serializeSafetensors({
      bf: { dtype: 'BF16', shape: [4], data },
      half: { dtype: 'F16', shape: [2, 2], data },
    });
    const parsed = parseSafetensorsHeader(bytes);
    const read = (name: string) => {
      const [begin, end] = parsed.tensors.get(name)!.dataOffsets;
      return [...bytes.subarray(parsed.dataStart + begin, parsed.dataStart + end)];
    };
    expect(read('bf')).toEqual(u16Bytes(0x3f80, 0xc020, 0x3f80, 0x4780));
    // 1 + 2^-8 is exact in half precision (10 mantissa bits); 65520 is the tie that overflows.
    expect(read('half')).toEqual(u16Bytes(0x3c00, 0xc100, 0x3c04, 0x7c00));
  });

  test('accepts native typed arrays and raw bytes, and lays larger elements out first', () => {
    const bytes = serializeSafetensors({
      flags: { dtype: 'BOOL', shape: [3], data: new Uint8Array([1, 0, 1]) },
      ids: { dtype: 'I64', shape: [2], data: new BigInt64Array([-2n, 3n]) },
      bits: { dtype: 'BF16', shape: [1], data: new Uint16Array([0x3f80]) },
      counts: { dtype: 'I32', shape: [1], data: new Int32Array([-7]) },
    });
    const parsed = parseSafetensorsHeader(bytes);
    for (const info of parsed.tensors.values()) {
      const size = info.byteLength / Math.max(1, info.numel);
      expect(info.dataOffsets[0] % size, info.name).toBe(0);
    }
    expect(parsed.dataStart % 8).toBe(0);
    expect([...parsed.tensors.keys()]).toEqual(['ids', 'counts', 'bits', 'flags']);
    const ids = parsed.tensors.get('ids')!;
    expect([
      ...decodeToFloat32(
        bytes.subarray(parsed.dataStart + ids.dataOffsets[0], parsed.dataStart + ids.dataOffsets[1]),
        'I64',
      ),
    ]).toEqual([-2, 3]);
  });

  test('round-trips through a file and leaves no temporary file behind', () => {
    const dir = tempDir();
    const path = join(dir, 'adapter_model.safetensors');
    const weights = new Float32Array(1000).map((_, i) => Math.sin(i) * 3);
    writeSafetensors(
      path,
      new Map([
        ['w', { dtype: 'F32' as const, shape: [10, 100], data: weights }],
        ['scalar', { dtype: 'F64' as const, shape: [], data: new Float32Array([0.5]) }],
      ]),
      { format: 'pt' },
    );
    expect(readdirSync(dir)).toEqual(['adapter_model.safetensors']);
    const file = SafetensorsFile.open(path);
    expect(file.metadata).toEqual({ format: 'pt' });
    expect(file.info('w').shape).toEqual([10, 100]);
    expect(file.readFloat32('w')).toEqual(weights);
    expect([...file.readFloat32('scalar')]).toEqual([0.5]);
    expect(file.info('scalar').dtype).toBe('F64');
    file.close();
  });

  test('replaces an existing file atomically, and keeps it when the write fails', () => {
    const dir = tempDir();
    const path = join(dir, 'm.safetensors');
    writeFileSync(path, 'old');
    writeSafetensors(path, { a: { dtype: 'F32', shape: [1], data: new Float32Array([4]) } });
    expect(readFileSync(path).length).toBeGreaterThan(8);
    const before = readFileSync(path);
    expectError(
      () => writeSafetensors(path, { a: { dtype: 'F32', shape: [3], data: new Float32Array([1]) } }),
      'tensor "a"',
      '3 elements, data 1',
    );
    expect(readFileSync(path)).toEqual(before);
    expect(readdirSync(dir)).toEqual(['m.safetensors']);
  });

  test('refuses bad write requests with the tensor named', () => {
    const f32 = new Float32Array(2);
    expectError(() => serializeSafetensors({ '': { dtype: 'F32', shape: [2], data: f32 } }), 'names must not be empty');
    expectError(() => serializeSafetensors({ __metadata__: { dtype: 'F32', shape: [2], data: f32 } }), 'reserved');
    expectError(
      () => serializeSafetensors({ x: { dtype: 'I32', shape: [2], data: f32 } }),
      'tensor "x"',
      'Float32Array data can be written as F32, F16, BF16 or F64',
    );
    expectError(
      () => serializeSafetensors({ x: { dtype: 'F32', shape: [-2], data: f32 } }),
      'not a non-negative integer',
    );
    expectError(
      () => serializeSafetensors({ x: { dtype: 'I16', shape: [2], data: new Int32Array(2) } }),
      'Int32Array data cannot be written as I16',
    );
    expectError(
      () => serializeSafetensors({ x: { dtype: 'F16', shape: [2], data: new Uint8Array(3) } }),
      'needs 4 bytes, data has 3',
    );
    expectError(() => serializeSafetensors({}, { step: 3 as unknown as string }), 'metadata value for key "step"');
  });
});
