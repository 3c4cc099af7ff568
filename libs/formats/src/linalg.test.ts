import { describe, expect, it } from 'vitest';

import { fromRowMajor, householderQR, jacobiSvd, multiply, toRowMajor, transpose, type Matrix } from './linalg.js';

/** A deterministic pseudo-random matrix (xorshift), values in [-1, 1). */
function random(rows: number, cols: number, seed: number): Matrix {
  let x = seed * 2654435761 + 1;
  const values = Array.from({ length: rows * cols }, () => {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    return ((x >>> 0) / 2 ** 32) * 2 - 1;
  });
  return fromRowMajor(rows, cols, values);
}

function maxDiff(a: Matrix, b: Matrix): number {
  expect([a.rows, a.cols]).toEqual([b.rows, b.cols]);
  return a.data.reduce((m, v, i) => Math.max(m, Math.abs(v - b.data[i]!)), 0);
}

function identity(n: number): Matrix {
  const m = fromRowMajor(n, n, new Array(n * n).fill(0));
  for (let i = 0; i < n; i++) m.data[i * n + i] = 1;
  return m;
}

describe('Householder QR', () => {
  for (const [rows, cols] of [
    [9, 4],
    [4, 9],
    [6, 6],
    [1, 3],
  ] as const) {
    it(`factors a ${rows}×${cols} matrix: orthonormal q, upper-triangular r, q·r = a`, () => {
      const a = random(rows, cols, rows * 10 + cols);
      const { q, r } = householderQR(a);
      const k = Math.min(rows, cols);
      expect([q.rows, q.cols, r.rows, r.cols]).toEqual([rows, k, k, cols]);
      expect(maxDiff(multiply(q, r), a)).toBeLessThan(1e-13);
      expect(maxDiff(multiply(transpose(q), q), identity(k))).toBeLessThan(1e-13);
      for (let j = 0; j < cols; j++) for (let i = j + 1; i < k; i++) expect(r.data[j * k + i]).toBe(0);
    });
  }

  it('handles rank-deficient and zero columns', () => {
    const a = fromRowMajor(4, 3, [1, 2, 0, 2, 4, 0, 3, 6, 0, 4, 8, 0]); // column 2 = 2·column 1, column 3 = 0
    const { q, r } = householderQR(a);
    expect(maxDiff(multiply(q, r), a)).toBeLessThan(1e-13);
    expect(maxDiff(multiply(transpose(q), q), identity(3))).toBeLessThan(1e-13);
  });
});

describe('one-sided Jacobi SVD', () => {
  it('recovers known singular values of U·diag(σ)·Vᵀ', () => {
    const sigma = [5, 3, 1e-3, 0];
    const u = householderQR(random(7, 4, 1)).q;
    const v = householderQR(random(4, 4, 2)).q;
    const diag = fromRowMajor(4, 4, [5, 0, 0, 0, 0, 3, 0, 0, 0, 0, 1e-3, 0, 0, 0, 0, 0]);
    const a = multiply(multiply(u, diag), transpose(v));
    const svd = jacobiSvd(a);
    sigma.forEach((s, i) => expect(svd.s[i]).toBeCloseTo(s, 12));
  });

  for (const [rows, cols] of [
    [8, 5],
    [5, 8],
    [12, 12],
  ] as const) {
    it(`reconstructs a ${rows}×${cols} matrix with orthonormal factors, values descending`, () => {
      const a = random(rows, cols, rows + 100 * cols);
      const { u, s, v } = jacobiSvd(a);
      const k = cols;
      const us = fromRowMajor(rows, k, new Array(rows * k).fill(0));
      for (let j = 0; j < k; j++) for (let i = 0; i < rows; i++) us.data[j * rows + i] = u.data[j * rows + i]! * s[j]!;
      expect(maxDiff(multiply(us, transpose(v)), a)).toBeLessThan(1e-12);
      expect(maxDiff(multiply(transpose(v), v), identity(k))).toBeLessThan(1e-12);
      const nonzero = Array.from(s).filter((x) => x > 1e-12).length;
      expect(nonzero).toBe(Math.min(rows, cols));
      for (let j = 1; j < k; j++) expect(s[j]!).toBeLessThanOrEqual(s[j - 1]!);
      // The left vectors of non-zero singular values are orthonormal.
      const un = fromRowMajor(rows, nonzero, new Array(rows * nonzero).fill(0));
      un.data.set(u.data.subarray(0, rows * nonzero));
      expect(maxDiff(multiply(transpose(un), un), identity(nonzero))).toBeLessThan(1e-12);
    });
  }

  it('round-trips row-major data', () => {
    const values = [1, 2, 3, 4, 5, 6];
    expect(Array.from(toRowMajor(fromRowMajor(2, 3, values)))).toEqual(values);
  });
});
