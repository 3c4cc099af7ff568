import { describe, expect, it } from 'vitest';

import { collapsedExperts, groupRouting, heatColor, heatmapMatrix, type NamedSeries } from './routing';

const s = (name: string, values: number[], steps = values.map((_, i) => i + 1)): NamedSeries => ({
  name,
  steps,
  values,
});

describe('groupRouting', () => {
  it('groups load, entropy and broadcast series by layer and ignores other metrics', () => {
    const layers = groupRouting([
      s('train/loss', [3, 2]),
      s('routing/load/1/2', [0.2]),
      s('routing/load/1/0', [0.5]),
      s('routing/entropy/1', [0.9]),
      s('routing/load/0/0', [1]),
      s('routing/broadcast/0', [0.1]),
      s('routing/load/x/0', [1]),
    ]);
    expect(layers.map((l) => l.layer)).toEqual([0, 1]);
    expect([...layers[1]!.load.keys()]).toEqual([0, 2]);
    expect(layers[1]!.entropy?.values).toEqual([0.9]);
    expect(layers[0]!.broadcast?.values).toEqual([0.1]);
    expect(layers[0]!.entropy).toBeNull();
  });

  it('is empty without routing series (the panel then says "no routing data")', () => {
    expect(groupRouting([s('train/loss', [1])])).toEqual([]);
  });
});

describe('heatmapMatrix', () => {
  const load = new Map([
    [1, { steps: [1, 2, 3, 4], values: [0.5, 0.5, 0.4, 0.3] }],
    [0, { steps: [1, 2, 3, 4], values: [0.5, 0.5, 0.6, 0.7] }],
  ]);

  it('has one row per expert and one column per step', () => {
    const m = heatmapMatrix(load);
    expect(m.experts).toEqual([0, 1]);
    expect(m.steps).toEqual([1, 2, 3, 4]);
    expect(m.cells).toEqual([
      [0.5, 0.5, 0.6, 0.7],
      [0.5, 0.5, 0.4, 0.3],
    ]);
    expect([m.min, m.max]).toEqual([0.3, 0.7]);
  });

  it('averages consecutive steps into at most maxColumns buckets, labelled by their last step', () => {
    const m = heatmapMatrix(load, 2);
    expect(m.steps).toEqual([2, 4]);
    expect(m.cells[0]![0]).toBeCloseTo(0.5, 12);
    expect(m.cells[0]![1]).toBeCloseTo(0.65, 12);
    expect(m.cells[1]![1]).toBeCloseTo(0.35, 12);
  });

  it('leaves null where an expert has no point', () => {
    const m = heatmapMatrix(
      new Map([
        [0, { steps: [1, 2], values: [1, 2] }],
        [1, { steps: [2], values: [3] }],
      ]),
    );
    expect(m.cells).toEqual([
      [1, 2],
      [null, 3],
    ]);
  });
});

describe('collapsedExperts', () => {
  it('flags an expert under a tenth of the mean load over the recent window', () => {
    const layers = groupRouting([
      s('routing/load/0/0', [0.25, 0.3]),
      s('routing/load/0/1', [0.25, 0.3]),
      s('routing/load/0/2', [0.25, 0.39]),
      s('routing/load/0/3', [0.25, 0.01]),
      s('routing/load/1/0', [0.001]),
    ]);
    // window 1: loads 0.3, 0.3, 0.39, 0.01; mean 0.25; expert 3 has 0.04 of a fair share
    const found = collapsedExperts(layers, 0.1, 1);
    expect(found).toHaveLength(1);
    expect(found[0]).toMatchObject({ layer: 0, expert: 3, load: 0.01 });
    expect(found[0]!.share).toBeCloseTo(0.04, 12);
    // over both points expert 3 averages 0.13 against a mean of 0.25: no collapse
    expect(collapsedExperts(layers, 0.1, 2)).toEqual([]);
  });
});

describe('heatColor', () => {
  it('runs from dark purple through teal to yellow, clamped', () => {
    expect(heatColor(0)).toBe('rgb(68, 1, 84)');
    expect(heatColor(0.5)).toBe('rgb(33, 145, 140)');
    expect(heatColor(1)).toBe('rgb(253, 231, 37)');
    expect(heatColor(7)).toBe('rgb(253, 231, 37)');
    expect(heatColor(NaN)).toBe('rgb(68, 1, 84)');
  });
});
