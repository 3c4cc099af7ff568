/**
 * Data transforms of the charts: smoothing, downsampling to the pixel width, and the guards a log
 * axis needs. Pure functions over `{steps, values}` so they are tested without a browser.
 */

export interface Series {
  steps: number[];
  values: number[];
}

/**
 * Exponential moving average with TensorBoard's debiasing: `s_t = w·s_{t-1} + (1 − w)·v_t`, divided
 * by `1 − w^t` so that the first points are not pulled towards 0. Non-finite values are passed
 * through and do not enter the average (a NaN loss must stay visible, not poison every later point).
 */
export function emaSmooth(values: readonly number[], weight: number): number[] {
  if (!(weight >= 0 && weight < 1)) throw new RangeError(`smoothing weight must be in [0, 1), got ${weight}`);
  const out: number[] = new Array(values.length);
  let last = 0;
  let weightPower = 1; // weight^count, kept as a running product (Math.pow per point was the cost at 10⁶ points)
  for (let i = 0; i < values.length; i++) {
    const v = values[i]!;
    if (!Number.isFinite(v)) {
      out[i] = v;
      continue;
    }
    last = last * weight + (1 - weight) * v;
    weightPower *= weight;
    out[i] = weight === 0 ? last : last / (1 - weightPower);
  }
  return out;
}

/**
 * A log axis cannot show 0, negatives, NaN or ±∞: those become null (a gap in the line) and the
 * count of hidden points is returned, so the chart can say how many it dropped.
 */
export function logSafe(values: readonly number[]): { values: (number | null)[]; hidden: number } {
  let hidden = 0;
  const out = values.map((v) => {
    if (Number.isFinite(v) && v > 0) return v;
    hidden++;
    return null;
  });
  return { values: out, hidden };
}

/**
 * Puts several series on one x axis (uPlot wants aligned columns): the sorted union of the steps,
 * and for each series its value at that step or null.
 */
export function alignSeries(series: readonly { steps: number[]; values: readonly (number | null)[] }[]): {
  steps: number[];
  columns: (number | null)[][];
} {
  const finite = (v: number | null | undefined) => (v === undefined || v === null || !Number.isFinite(v) ? null : v);
  // The usual case, one run's curves logged at the same steps: no union to build.
  const first = series[0]?.steps;
  if (first && series.every((s) => s.steps === first || sameSteps(s.steps, first)))
    return {
      steps: first,
      columns: series.map((s) => {
        // A plain loop into a preallocated array: Array.from with a mapper was 5× slower at 10⁶ points.
        const column: (number | null)[] = new Array(first.length);
        for (let i = 0; i < first.length; i++) column[i] = finite(s.values[i]);
        return column;
      }),
    };
  const all = new Set<number>();
  for (const s of series) for (const step of s.steps) all.add(step);
  const steps = [...all].sort((a, b) => a - b);
  const index = new Map(steps.map((step, i) => [step, i]));
  const columns = series.map((s) => {
    const column: (number | null)[] = new Array(steps.length).fill(null);
    s.steps.forEach((step, i) => {
      column[index.get(step)!] = finite(s.values[i]);
    });
    return column;
  });
  return { steps, columns };
}

function sameSteps(a: readonly number[], b: readonly number[]): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

/**
 * What a line chart gives uPlot: each series smoothed (EMA weight `smoothing`, 0 = raw), guarded for
 * a log axis (non-positive points become gaps, counted in `hidden`), then aligned on one x axis.
 * Every point is kept: uPlot reduces a path to the pixels itself, faster than a downsampling pass
 * here (bench/console: LTTB to the width first made a 4 × 10⁶-point chart 3× slower to draw).
 */
export function chartData(series: readonly Series[], logY: boolean, smoothing: number) {
  let hidden = 0;
  const prepared = series.map((s) => {
    const values = smoothing > 0 ? emaSmooth(s.values, smoothing) : s.values;
    if (!logY) return { steps: s.steps, values };
    const safe = logSafe(values);
    hidden += safe.hidden;
    return { steps: s.steps, values: safe.values };
  });
  const { steps, columns } = alignSeries(prepared);
  return { steps, columns, hidden };
}

/** The last finite value of a series, or null. */
export function lastFinite(values: readonly number[]): number | null {
  for (let i = values.length - 1; i >= 0; i--) if (Number.isFinite(values[i]!)) return values[i]!;
  return null;
}

/** An SVG polyline `points` attribute for a sparkline of `width × height` (y grows downwards). */
export function sparklinePoints(values: readonly number[], width: number, height: number, pad = 1): string {
  const finite = values.filter((v) => Number.isFinite(v));
  if (finite.length === 0) return '';
  const min = Math.min(...finite);
  const max = Math.max(...finite);
  const span = max - min || 1;
  const n = values.length;
  const points: string[] = [];
  values.forEach((v, i) => {
    if (!Number.isFinite(v)) return;
    const x = n === 1 ? width / 2 : pad + (i * (width - 2 * pad)) / (n - 1);
    const y = max === min ? height / 2 : pad + ((max - v) * (height - 2 * pad)) / span;
    points.push(`${round2(x)},${round2(y)}`);
  });
  return points.join(' ');
}

function round2(x: number): number {
  return Math.round(x * 100) / 100;
}
