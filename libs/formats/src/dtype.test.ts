import { describe, expect, test } from 'vitest';

import {
  bfloat16ArrayToFloat32,
  bfloat16BitsToFloat32,
  float16ArrayToFloat32,
  float16BitsToFloat32,
  float32ArrayToBfloat16,
  float32ArrayToFloat16,
  float32ToBfloat16Bits,
  float32ToFloat16Bits,
} from './dtype.js';

/** float32 value of a bit pattern, via a DataView (independent of the code under test). */
function f32FromBits(bits: number): number {
  const view = new DataView(new ArrayBuffer(4));
  view.setUint32(0, bits >>> 0);
  return view.getFloat32(0);
}

/** The value a half bit pattern denotes, straight from the IEEE 754 definition. */
function halfValueByDefinition(h: number): number {
  const sign = h & 0x8000 ? -1 : 1;
  const exponent = (h >> 10) & 0x1f;
  const mantissa = h & 0x3ff;
  if (exponent === 0) return sign * mantissa * 2 ** -24;
  if (exponent === 31) return mantissa === 0 ? sign * Infinity : NaN;
  return sign * (1 + mantissa / 1024) * 2 ** (exponent - 15);
}

const isHalfNaN = (h: number): boolean => (h & 0x7c00) === 0x7c00 && (h & 0x3ff) !== 0;
const isBf16NaN = (b: number): boolean => (b & 0x7f80) === 0x7f80 && (b & 0x7f) !== 0;

describe('float16', () => {
  test.each([
    [1.0, 0x3c00],
    [-2.5, 0xc100],
    [0.5, 0x3800],
    [65504, 0x7bff], // largest finite half
    [2 ** -14, 0x0400], // smallest normal
    [2 ** -24, 0x0001], // smallest subnormal
    [1023 * 2 ** -24, 0x03ff], // largest subnormal
    [0, 0x0000],
    [-0, 0x8000],
    [Infinity, 0x7c00],
    [-Infinity, 0xfc00],
    [0.1, 0x2e66],
    [1 / 3, 0x3555],
  ])('encodes %d', (value, bits) => {
    expect(float32ToFloat16Bits(value)).toBe(bits);
  });

  test('rounds ties to even in the normal range', () => {
    // 1 + 2^-11 is halfway between 1 (0x3c00, even) and 1 + 2^-10 (0x3c01): goes to even.
    expect(float32ToFloat16Bits(1 + 2 ** -11)).toBe(0x3c00);
    // 1 + 3·2^-11 is halfway between 0x3c01 (odd) and 0x3c02 (even).
    expect(float32ToFloat16Bits(1 + 3 * 2 ** -11)).toBe(0x3c02);
    // Just above a half rounds up, just below rounds down.
    expect(float32ToFloat16Bits(1 + 2 ** -11 + 2 ** -20)).toBe(0x3c01);
    expect(float32ToFloat16Bits(1 + 2 ** -11 - 2 ** -20)).toBe(0x3c00);
    // A mantissa carry moves to the next exponent: 2 - 2^-12 rounds to 2.0 (0x4000).
    expect(float32ToFloat16Bits(2 - 2 ** -12)).toBe(0x4000);
  });

  test('overflows to infinity from the halfway point 65520 up', () => {
    expect(float32ToFloat16Bits(65519)).toBe(0x7bff);
    expect(float32ToFloat16Bits(65520)).toBe(0x7c00); // tie: 0x7bff is odd, so up to inf
    expect(float32ToFloat16Bits(-65520)).toBe(0xfc00);
    expect(float32ToFloat16Bits(1e6)).toBe(0x7c00);
    expect(float32ToFloat16Bits(3.4e38)).toBe(0x7c00);
  });

  test('rounds into and within the subnormal range', () => {
    expect(float32ToFloat16Bits(2 ** -25)).toBe(0x0000); // tie between 0 and 2^-24: to even 0
    expect(float32ToFloat16Bits(1.5 * 2 ** -25)).toBe(0x0001);
    expect(float32ToFloat16Bits(3 * 2 ** -25)).toBe(0x0002); // 1.5 units: tie, to even 2
    expect(float32ToFloat16Bits(5 * 2 ** -25)).toBe(0x0002); // 2.5 units: tie, to even 2
    expect(float32ToFloat16Bits(2 ** -26)).toBe(0x0000);
    expect(float32ToFloat16Bits(-(2 ** -24))).toBe(0x8001);
    expect(float32ToFloat16Bits(1e-45)).toBe(0x0000); // float32 subnormal
    // Just below the smallest normal rounds up to it.
    expect(float32ToFloat16Bits(2 ** -14 - 2 ** -30)).toBe(0x0400);
  });

  test('keeps NaN a NaN, including payloads only in the dropped bits', () => {
    expect(isHalfNaN(float32ToFloat16Bits(NaN))).toBe(true);
    expect(isHalfNaN(float32ToFloat16Bits(f32FromBits(0x7f800001)))).toBe(true);
    expect(isHalfNaN(float32ToFloat16Bits(f32FromBits(0xff800001)))).toBe(true);
  });

  test.each([
    [0x3c00, 1],
    [0xc100, -2.5],
    [0x7bff, 65504],
    [0x0001, 2 ** -24],
    [0x03ff, 1023 * 2 ** -24],
    [0x0400, 2 ** -14],
    [0x7c00, Infinity],
    [0xfc00, -Infinity],
  ])('decodes bit pattern %i', (bits, value) => {
    expect(float16BitsToFloat32(bits)).toBe(value);
  });

  test('decodes -0 and NaN', () => {
    expect(Object.is(float16BitsToFloat32(0x8000), -0)).toBe(true);
    expect(float16BitsToFloat32(0x7e00)).toBeNaN();
    expect(float16BitsToFloat32(0xfd01)).toBeNaN();
  });

  test('decodes every one of the 65536 patterns as the IEEE definition says', () => {
    const all = new Uint16Array(65536).map((_, i) => i);
    const decoded = float16ArrayToFloat32(all);
    for (let h = 0; h < 65536; h++) {
      const expected = halfValueByDefinition(h);
      if (Number.isNaN(expected)) expect(decoded[h]).toBeNaN();
      else if (decoded[h] !== expected) expect.fail(`0x${h.toString(16)}: ${decoded[h]} ≠ ${expected}`);
    }
  });

  test('encodes random float32 values to the nearest half (ties to even), checked by search', () => {
    // The finite non-negative halves in increasing order: index = bit pattern.
    const halves = Array.from({ length: 0x7c00 }, (_, h) => halfValueByDefinition(h));
    const nearestHalf = (x: number): number => {
      const a = Math.abs(x);
      let lo = 0;
      let hi = halves.length - 1;
      while (hi - lo > 1) {
        const mid = (lo + hi) >> 1;
        if (halves[mid]! <= a) lo = mid;
        else hi = mid;
      }
      let bits: number;
      if (a >= 65520) bits = 0x7c00;
      else {
        const dLo = a - halves[lo]!;
        const dHi = halves[hi]! - a;
        bits = dLo < dHi ? lo : dHi < dLo ? hi : lo % 2 === 0 ? lo : hi;
      }
      return (x < 0 || Object.is(x, -0) ? 0x8000 : 0) | bits;
    };
    let seed = 12345;
    const random = (): number => {
      seed = (Math.imul(seed, 1103515245) + 12345) >>> 0;
      return seed / 2 ** 32;
    };
    const values = new Float32Array(20000);
    for (let i = 0; i < values.length; i++) {
      // Log-uniform magnitudes from 2^-27 to 2^17, so subnormals, normals and overflow all occur.
      values[i] = (random() < 0.5 ? -1 : 1) * 2 ** (random() * 44 - 27);
    }
    // Exact ties too: midpoints between neighbouring halves.
    for (let i = 0; i < 2000; i++) {
      const h = Math.floor(random() * 0x7bff);
      values[i] = (halves[h]! + halves[h + 1]!) / 2;
    }
    const encoded = float32ArrayToFloat16(values);
    for (let i = 0; i < values.length; i++) {
      const expected = nearestHalf(values[i]!);
      if (encoded[i] !== expected) {
        expect.fail(`${values[i]}: got 0x${encoded[i]!.toString(16)}, expected 0x${expected.toString(16)}`);
      }
    }
  });

  test('array conversions respect subarray offsets and reuse an output array', () => {
    const backing = new Float32Array([9, 1, -2.5, 65504, 9]);
    const out = new Uint16Array(3);
    expect(float32ArrayToFloat16(backing.subarray(1, 4), out)).toBe(out);
    expect([...out]).toEqual([0x3c00, 0xc100, 0x7bff]);
    expect([...float16ArrayToFloat32(new Uint16Array([0, 0x3c00, 0xc100]).subarray(1))]).toEqual([1, -2.5]);
    expect(() => float32ArrayToFloat16(new Float32Array(2), new Uint16Array(3))).toThrow(RangeError);
  });
});

describe('bfloat16', () => {
  test.each([
    [1.0, 0x3f80],
    [-2.5, 0xc020],
    [0, 0x0000],
    [-0, 0x8000],
    [Infinity, 0x7f80],
    [-Infinity, 0xff80],
    [65504, 0x4780], // 0x477fe000: dropped half 0xe000 > 0x8000 rounds up to 65536
    [2 ** -133, 0x0001], // smallest bfloat16 subnormal
  ])('encodes %d (bfloat16)', (value, bits) => {
    expect(float32ToBfloat16Bits(value)).toBe(bits);
  });

  test('rounds ties to even', () => {
    expect(float32ToBfloat16Bits(1 + 2 ** -8)).toBe(0x3f80); // halfway, 0x3f80 even
    expect(float32ToBfloat16Bits(1 + 3 * 2 ** -8)).toBe(0x3f82); // halfway, 0x3f81 odd
    expect(float32ToBfloat16Bits(1 + 2 ** -8 + 2 ** -20)).toBe(0x3f81);
    expect(float32ToBfloat16Bits(-(1 + 3 * 2 ** -8))).toBe(0xbf82);
  });

  test('overflows the largest float32 to infinity and flushes the tiniest to zero', () => {
    expect(float32ToBfloat16Bits(f32FromBits(0x7f7fffff))).toBe(0x7f80);
    expect(float32ToBfloat16Bits(f32FromBits(0xff7fffff))).toBe(0xff80);
    expect(float32ToBfloat16Bits(2 ** -149)).toBe(0x0000);
  });

  test('keeps NaN a NaN even when the payload is only in the dropped bits', () => {
    expect(isBf16NaN(float32ToBfloat16Bits(NaN))).toBe(true);
    expect(isBf16NaN(float32ToBfloat16Bits(f32FromBits(0x7f800001)))).toBe(true);
    expect(float32ToBfloat16Bits(f32FromBits(0xff800001)) & 0x8000).toBe(0x8000);
  });

  test('decodes by placing the bits in the top half of a float32', () => {
    expect(bfloat16BitsToFloat32(0x3f80)).toBe(1);
    expect(bfloat16BitsToFloat32(0xc020)).toBe(-2.5);
    expect(bfloat16BitsToFloat32(0x0001)).toBe(2 ** -133);
    expect(bfloat16BitsToFloat32(0x7f80)).toBe(Infinity);
    expect(bfloat16BitsToFloat32(0x7fc0)).toBeNaN();
    const decoded = bfloat16ArrayToFloat32(new Uint16Array([0x3f80, 0xc020, 0x4049]));
    expect([...decoded]).toEqual([1, -2.5, f32FromBits(0x40490000)]);
  });

  test('array conversion matches the scalar one', () => {
    const values = new Float32Array([1, -2.5, 1 + 2 ** -8, 1 + 3 * 2 ** -8, 3.14159, -1e-30, 1e30]);
    const encoded = float32ArrayToBfloat16(values);
    expect([...encoded]).toEqual([...values].map((v) => float32ToBfloat16Bits(v)));
    expect(encoded[4]).toBe(0x4049); // π ≈ 3.140625 in bfloat16
  });
});
