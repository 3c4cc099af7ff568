import { describe, expect, it } from 'vitest';

import { alignSeries, chartData, emaSmooth, lastFinite, logSafe, sparklinePoints } from './series';

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

describe('chartData (what uPlot receives)', () => {
  it('hides non-positive points on a log axis and aligns runs logged at different steps', () => {
    const data = chartData(
      [
        { steps: [1, 2, 3], values: [1, 0, 4] },
        { steps: [2, 4], values: [2, 3] },
      ],
      true,
      0,
    );
    expect(data.steps).toEqual([1, 2, 3, 4]);
    expect(data.columns).toEqual([
      [1, null, 4, null],
      [null, 2, null, 3],
    ]);
    expect(data.hidden).toBe(1);
  });

  it('keeps every point of curves sharing their steps, smoothed by hand-worked EMA', () => {
    const steps = [10, 20, 30];
    const data = chartData(
      [
        { steps, values: [1, 3, NaN] },
        { steps: [10, 20, 30], values: [2, 2, 2] },
      ],
      false,
      0.5,
    );
    // EMA 0.5 with debiasing: 1; (0.25 + 1.5) / 0.75 = 7/3; NaN passes through (a gap).
    expect(data.steps).toEqual(steps);
    expect(data.columns[0]![0]).toBe(1);
    expect(data.columns[0]![1]).toBeCloseTo(7 / 3, 12);
    expect(data.columns[0]![2]).toBeNull();
    expect(data.columns[1]).toEqual([2, 2, 2]);
    expect(data.hidden).toBe(0);
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
