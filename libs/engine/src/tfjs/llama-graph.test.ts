import * as tf from '@tensorflow/tfjs';
import { beforeAll, describe, expect, it } from 'vitest';
import { hash3, uniform } from '../rng.js';
import { applyRope, attention, attentionMask, crossEntropy, embeddingLookup } from './llama-graph.js';
import { initBackend } from './backend.js';
import { maxAbsDifference } from './model-fixtures.test-util.js';

function randomArray(seed: number, count: number): Float32Array {
  return Float32Array.from({ length: count }, (_, i) => 2 * uniform(hash3(seed, 0, i)) - 1);
}

beforeAll(async () => {
  await initBackend('cpu');
});

describe('attention', () => {
  /** Plain loops over the spec: GQA head mapping, causal + sliding-window visibility, softmax. */
  function attentionLoops(
    q: Float32Array,
    k: Float32Array,
    v: Float32Array,
    shape: { B: number; H: number; KV: number; T: number; hd: number },
    window: number | null,
  ): Float64Array {
    const { B, H, KV, T, hd } = shape;
    const out = new Float64Array(B * H * T * hd);
    const at = (heads: number, b: number, h: number, t: number, c: number) => ((b * heads + h) * T + t) * hd + c;
    for (let b = 0; b < B; b++) {
      for (let h = 0; h < H; h++) {
        const kvHead = Math.floor(h / (H / KV));
        for (let i = 0; i < T; i++) {
          const visible: number[] = [];
          for (let j = 0; j <= i; j++) if (window === null || i - j < window) visible.push(j);
          const scores = visible.map((j) => {
            let dot = 0;
            for (let c = 0; c < hd; c++) dot += q[at(H, b, h, i, c)]! * k[at(KV, b, kvHead, j, c)]!;
            return dot / Math.sqrt(hd);
          });
          const max = Math.max(...scores);
          const exps = scores.map((s) => Math.exp(s - max));
          const total = exps.reduce((a, e) => a + e, 0);
          for (let c = 0; c < hd; c++) {
            let value = 0;
            visible.forEach((j, n) => (value += (exps[n]! / total) * v[at(KV, b, kvHead, j, c)]!));
            out[at(H, b, h, i, c)] = value;
          }
        }
      }
    }
    return out;
  }

  for (const [KV, window] of [
    [2, null],
    [2, 3],
    [1, 2],
    [6, null],
  ] as const) {
    it(`matches a loop implementation (6 query heads, ${KV} key/value heads, window ${window})`, () => {
      const shape = { B: 2, H: 6, KV, T: 7, hd: 4 };
      const q = randomArray(1, shape.B * shape.H * shape.T * shape.hd).map((x) => 3 * x);
      const k = randomArray(2, shape.B * shape.KV * shape.T * shape.hd).map((x) => 3 * x);
      const v = randomArray(3, shape.B * shape.KV * shape.T * shape.hd);
      const result = tf.tidy(() =>
        attention(
          tf.tensor4d(q, [shape.B, shape.H, shape.T, shape.hd]),
          tf.tensor4d(k, [shape.B, shape.KV, shape.T, shape.hd]),
          tf.tensor4d(v, [shape.B, shape.KV, shape.T, shape.hd]),
          attentionMask(shape.T, window),
        ).dataSync(),
      );
      const expected = attentionLoops(q, k, v, shape, window);
      expect(maxAbsDifference(result, expected)).toBeLessThan(2e-6);
    });
  }

  it('masks without NaN and gives zero gradient to invisible keys', () => {
    const T = 5;
    const q = tf.tensor4d(randomArray(4, T * 2), [1, 1, T, 2]);
    const k = tf.tensor4d(randomArray(5, T * 2), [1, 1, T, 2]);
    const v = tf.tensor4d(randomArray(6, T * 2), [1, 1, T, 2]);
    // Only the first query (which sees key 0 alone) contributes: keys 1… get no gradient.
    const firstRow = (keys: tf.Tensor) =>
      tf.slice(attention(q, keys as tf.Tensor4D, v, attentionMask(T, null)), [0, 0, 0, 0], [1, 1, 1, 2]).sum();
    const gradient = tf.grad(firstRow)(k).dataSync();
    expect(Array.from(gradient).every(Number.isFinite)).toBe(true);
    expect(Array.from(gradient.slice(2)).every((g) => g === 0)).toBe(true);
    tf.dispose([q, k, v]);
  });

  it('differentiates through shared key/value heads, also with a single one (KV = 1)', () => {
    const [B, H, T, hd] = [1, 4, 3, 2];
    const q = tf.tensor4d(randomArray(12, B * H * T * hd), [B, H, T, hd]);
    const v = tf.tensor4d(randomArray(13, B * T * hd), [B, 1, T, hd]);
    const k = tf.tensor4d(randomArray(14, B * T * hd), [B, 1, T, hd]);
    const f = (keys: tf.Tensor) => tf.sum(tf.square(attention(q, keys as tf.Tensor4D, v, attentionMask(T, null))));
    const analytic = tf.grad(f)(k).dataSync();
    const kValues = k.dataSync();
    const eps = 1e-2;
    for (let i = 0; i < kValues.length; i++) {
      const shifted = (delta: number) =>
        tf.tidy(() => {
          const values = Float32Array.from(kValues);
          values[i] = values[i]! + delta;
          return f(tf.tensor4d(values, [B, 1, T, hd])).dataSync()[0]!;
        });
      const numeric = (shifted(eps) - shifted(-eps)) / (2 * eps);
      expect(Math.abs(numeric - analytic[i]!)).toBeLessThan(2e-3);
    }
    tf.dispose([q, k, v]);
  });
});

describe('applyRope', () => {
  it('rotates pairs (i, i + hd/2) by the table angle', () => {
    const [B, heads, T, hd] = [1, 2, 3, 4];
    const x = randomArray(7, B * heads * T * hd);
    const cos = randomArray(8, T * 2);
    const sin = randomArray(9, T * 2);
    const result = tf.tidy(() =>
      applyRope(tf.tensor4d(x, [B, heads, T, hd]), tf.tensor2d(cos, [T, 2]), tf.tensor2d(sin, [T, 2])).dataSync(),
    );
    for (let h = 0; h < heads; h++) {
      for (let t = 0; t < T; t++) {
        const base = (h * T + t) * hd;
        for (let i = 0; i < 2; i++) {
          const c = cos[t * 2 + i]!;
          const s = sin[t * 2 + i]!;
          expect(result[base + i]).toBeCloseTo(x[base + i]! * c - x[base + i + 2]! * s, 6);
          expect(result[base + i + 2]).toBeCloseTo(x[base + i + 2]! * c + x[base + i]! * s, 6);
        }
      }
    }
  });
});

describe('embeddingLookup', () => {
  it('gathers rows and scatter-adds the gradient, summing repeated ids', () => {
    const table = tf.tensor2d(randomArray(10, 5 * 3), [5, 3]);
    const ids = Int32Array.from([4, 1, 4, 0]);
    const upstream = tf.tensor2d(randomArray(11, 4 * 3), [4, 3]);
    const rows = tf.tidy(() => embeddingLookup(table, ids).dataSync());
    const tableValues = table.dataSync();
    ids.forEach((id, r) => {
      for (let c = 0; c < 3; c++) expect(rows[r * 3 + c]).toBe(tableValues[id * 3 + c]);
    });
    const gradient = tf.tidy(() =>
      tf
        .grad((t: tf.Tensor) => tf.sum(tf.mul(embeddingLookup(t, ids), upstream)))(table)
        .dataSync(),
    );
    const up = upstream.dataSync();
    for (let c = 0; c < 3; c++) {
      expect(gradient[4 * 3 + c]).toBeCloseTo(up[0 * 3 + c]! + up[2 * 3 + c]!, 6);
      expect(gradient[1 * 3 + c]).toBeCloseTo(up[1 * 3 + c]!, 6);
      expect(gradient[0 * 3 + c]).toBeCloseTo(up[3 * 3 + c]!, 6);
      expect(gradient[2 * 3 + c]).toBe(0);
      expect(gradient[3 * 3 + c]).toBe(0);
    }
    tf.dispose([table, upstream]);
  });
});

describe('crossEntropy', () => {
  it('sums logsumexp − target logit over counted positions and counts argmax hits', () => {
    const logits = [
      [1, 2, 3],
      [0.5, -1, 0.25],
      [4, 4, 0],
    ];
    const targets = Int32Array.from([2, 0, -1]);
    const { lossSum, correct } = tf.tidy(() => {
      const result = crossEntropy(tf.tensor2d(logits), targets);
      return { lossSum: result.lossSum.dataSync()[0]!, correct: result.correct.dataSync()[0]! };
    });
    const ce = (row: number[], target: number) => Math.log(row.reduce((a, z) => a + Math.exp(z), 0)) - row[target]!;
    expect(lossSum).toBeCloseTo(ce(logits[0]!, 2) + ce(logits[1]!, 0), 5);
    expect(correct).toBe(2);
  });
});
