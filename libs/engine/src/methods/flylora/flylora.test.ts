import { describe, expect, it } from 'vitest';
import { hash3, uniform } from '../../rng.js';
import { flyloraBiasUpdate, flyloraNonZerosPerRow, flyloraSelect, flyloraSparseA } from './index.js';

describe('FlyLoRA sparse A', () => {
  it('has exactly in // (r / k) non-zeros per row, in distinct ascending columns', () => {
    for (const [rank, topK, inFeatures] of [
      [4, 2, 6],
      [8, 2, 33],
      [32, 8, 100],
      [6, 6, 7],
    ] as const) {
      const a = flyloraSparseA(5, 9, rank, topK, inFeatures);
      const expected = Math.floor(inFeatures / (rank / topK));
      expect(a.nonZerosPerRow).toBe(expected);
      expect(flyloraNonZerosPerRow(inFeatures, rank, topK)).toBe(expected);
      for (let i = 0; i < rank; i++) {
        const row = Array.from(a.dense.subarray(i * inFeatures, (i + 1) * inFeatures));
        expect(row.filter((v) => v !== 0).length).toBe(expected);
        const columns = Array.from(a.columns.subarray(i * expected, (i + 1) * expected));
        columns.forEach((c, q) => {
          if (q > 0) expect(c).toBeGreaterThan(columns[q - 1]!);
          expect(row[c]).toBe(a.values[i * expected + q]);
        });
      }
    }
    expect(() => flyloraNonZerosPerRow(10, 6, 4)).toThrow(/multiple/);
  });

  it('draws the columns by the hashed partial shuffle and the values by Box–Muller (independent re-derivation)', () => {
    const [seed, site, r, k, n] = [11, 3, 4, 2, 7];
    const pnz = Math.floor(n / (r / k)); // 3
    const a = flyloraSparseA(seed, site, r, k, n);
    for (let i = 0; i < r; i++) {
      // The shuffle as "draw position j + offset among the not yet drawn", with a sparse record of moves.
      const moved = new Map<number, number>();
      const at = (position: number) => moved.get(position) ?? position;
      const drawn: number[] = [];
      for (let j = 0; j < pnz; j++) {
        const offset = Math.floor(uniform(hash3(seed, 2 * site, i * n + j)) * (n - j));
        const picked = at(j + offset);
        moved.set(j + offset, at(j));
        drawn.push(picked);
      }
      drawn.sort((x, y) => x - y);
      expect(Array.from(a.columns.subarray(i * pnz, (i + 1) * pnz))).toEqual(drawn);
      drawn.forEach((column, q) => {
        const m = i * pnz + q;
        const u1 = uniform(hash3(seed, 2 * site + 1, 2 * m));
        const u2 = uniform(hash3(seed, 2 * site + 1, 2 * m + 1));
        const normal = Math.sqrt(-2 * Math.log(1 - u1)) * Math.cos(2 * Math.PI * u2);
        expect(a.dense[i * n + column]).toBe(Math.fround(normal / r));
      });
    }
  });

  it('has values distributed as N(0, 1/r²)', () => {
    const r = 16;
    const a = flyloraSparseA(1, 2, r, 4, 1024);
    const values = Array.from(a.values, (v) => v * r);
    const mean = values.reduce((s, v) => s + v, 0) / values.length;
    const variance = values.reduce((s, v) => s + (v - mean) ** 2, 0) / values.length;
    expect(values.length).toBe(16 * 256);
    expect(Math.abs(mean)).toBeLessThan(0.05);
    expect(Math.abs(variance - 1)).toBeLessThan(0.06);
  });
});

describe('FlyLoRA selection and bias update', () => {
  it('selects by signed score or by magnitude, with the bias, ties toward the lower rank', () => {
    const a = [0.3, -2.0, 0.5, 0.1];
    const zero = [0, 0, 0, 0];
    expect(flyloraSelect(a, zero, 2, 'signed')).toEqual([2, 0]);
    expect(flyloraSelect(a, zero, 2, 'abs')).toEqual([1, 2]); // the large negative score wins by magnitude
    expect(flyloraSelect(a, [0, 0, 0, 0.45], 2, 'signed')).toEqual([3, 2]); // 0.55 > 0.5
    expect(flyloraSelect([1, 1, 1, 1], zero, 2, 'signed')).toEqual([0, 1]);
    expect(flyloraSelect([-1, 1, 0.5, -0.5], zero, 2, 'abs')).toEqual([0, 1]);
  });

  it('moves the bias of under-used ranks up and over-used ones down by u', () => {
    // Counts (3, 1, 2, 2): mean 2.
    const next = flyloraBiasUpdate(Float32Array.from([0, 0.5, -0.25, 1]), [3, 1, 2, 2], 0.125);
    expect(Array.from(next)).toEqual([-0.125, 0.625, -0.25, 1]);
    const rounded = flyloraBiasUpdate(Float32Array.from([0.1]), [0], 0.001);
    expect(rounded[0]).toBe(Math.fround(0.1)); // mean = count: no move
  });
});
