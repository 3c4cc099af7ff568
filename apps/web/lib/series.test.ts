import { describe, expect, it } from 'vitest';

import { alignSeries, emaSmooth, lastFinite, logSafe, lttb, minMaxDownsample, sparklinePoints } from './series';

describe('emaSmooth', () => {
  it('debiases the first points (weight 0.5 on 1, 2, 3)', () => {
    // s1 = 0.5 / 0.5 = 1; s2 = (0.25 + 1) / 0.75 = 1.6667; s3 = (0.625 + 1.5) / 0.875 = 2.428571
    const out = emaSmooth([1, 2, 3], 0.5);
    expect(out[0]).toBeCloseTo(1, 12);
    expect(out[1]).toBeCloseTo(5 / 3, 12);
    expect(out[2]).toBeCloseTo(2.125 / 0.875, 12);
  });

  it('is the identity at weight 0 and keeps a constant series constant', () => {
    expect(emaSmooth([3, 1, 4], 0)).toEqual([3, 1, 4]);
    emaSmooth([2, 2, 2, 2], 0.9).forEach((v) => expect(v).toBeCloseTo(2, 12));
  });

  it('passes NaN through without letting it poison later points', () => {
    const out = emaSmooth([1, NaN, 3], 0.5);
    expect(out[1]).toBeNaN();
    expect(out[2]).toBeCloseTo((0.25 + 1.5) / 0.75, 12);
  });

  it('refuses weights outside [0, 1)', () => {
    expect(() => emaSmooth([1], 1)).toThrow(RangeError);
    expect(() => emaSmooth([1], -0.1)).toThrow(RangeError);
  });
});

describe('lttb', () => {
  it('keeps a spike: 10 points to 3 keeps first, the spike and last', () => {
    const steps = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9];
    const values = [0, 0, 0, 10, 0, 0, 0, 0, 0, 0];
    expect(lttb({ steps, values }, 3)).toEqual({ steps: [0, 3, 9], values: [0, 10, 0] });
  });

  it('returns the series unchanged when it already fits', () => {
    expect(lttb({ steps: [1, 2], values: [3, 4] }, 100)).toEqual({ steps: [1, 2], values: [3, 4] });
  });

  it('cuts 50,000 points to the pixel width, ends and order kept', () => {
    const n = 50_000;
    const steps = Array.from({ length: n }, (_, i) => i);
    const values = steps.map((i) => Math.exp(-i / 10_000) + 0.01 * Math.sin(i));
    const out = lttb({ steps, values }, 800);
    expect(out.steps).toHaveLength(800);
    expect(out.steps[0]).toBe(0);
    expect(out.steps[799]).toBe(n - 1);
    for (let i = 1; i < out.steps.length; i++) expect(out.steps[i]!).toBeGreaterThan(out.steps[i - 1]!);
  });
});

describe('minMaxDownsample', () => {
  it('keeps each bucket’s min and max in step order', () => {
    const out = minMaxDownsample({ steps: [0, 1, 2, 3, 4, 5, 6, 7], values: [5, 1, 9, 2, 3, 8, 0, 4] }, 2);
    // bucket 0 (steps 0–3): min 1 at 1, max 9 at 2; bucket 1 (steps 4–7): max 8 at 5, min 0 at 6
    expect(out).toEqual({ steps: [1, 2, 5, 6], values: [1, 9, 8, 0] });
  });

  it('leaves short series alone', () => {
    expect(minMaxDownsample({ steps: [0, 1, 2], values: [1, 2, 3] }, 2)).toEqual({
      steps: [0, 1, 2],
      values: [1, 2, 3],
    });
  });
});

describe('logSafe', () => {
  it('hides zero, negatives, NaN and infinities and counts them', () => {
    expect(logSafe([1, 0, -2, NaN, 0.5, Infinity])).toEqual({ values: [1, null, null, null, 0.5, null], hidden: 4 });
  });
});

describe('alignSeries', () => {
  it('puts series on the union of their steps with nulls for gaps', () => {
    const out = alignSeries([
      { steps: [0, 2], values: [1, 2] },
      { steps: [1, 2], values: [5, NaN] },
    ]);
    expect(out).toEqual({
      steps: [0, 1, 2],
      columns: [
        [1, null, 2],
        [null, 5, null],
      ],
    });
  });
});

describe('lastFinite and sparklinePoints', () => {
  it('finds the last finite value', () => {
    expect(lastFinite([1, 2, NaN])).toBe(2);
    expect(lastFinite([])).toBeNull();
  });

  it('maps the range onto the box, high values at the top', () => {
    expect(sparklinePoints([1, 2, 3], 10, 10, 0)).toBe('0,10 5,5 10,0');
    expect(sparklinePoints([], 10, 10)).toBe('');
    expect(sparklinePoints([4, 4], 10, 10, 0)).toBe('0,5 10,5');
  });
});
