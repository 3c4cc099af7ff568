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
  let count = 0;
  for (let i = 0; i < values.length; i++) {
    const v = values[i]!;
    if (!Number.isFinite(v)) {
      out[i] = v;
      continue;
    }
    last = last * weight + (1 - weight) * v;
    count++;
    const debias = weight === 0 ? 1 : 1 - Math.pow(weight, count);
    out[i] = last / debias;
  }
  return out;
}

/**
 * Largest-Triangle-Three-Buckets (Steinarsson 2013): keeps the first and last points and, from each
 * of `threshold − 2` buckets, the point that forms the largest triangle with the previously kept
 * point and the mean of the next bucket. It keeps the shape of a loss curve (spikes included) with
 * a point per pixel.
 */
export function lttb(series: Series, threshold: number): Series {
  const { steps, values } = series;
  const n = Math.min(steps.length, values.length);
  if (threshold >= n || threshold < 3) return { steps: steps.slice(0, n), values: values.slice(0, n) };
  const outSteps: number[] = [steps[0]!];
  const outValues: number[] = [values[0]!];
  const every = (n - 2) / (threshold - 2);
  let a = 0;
  for (let i = 0; i < threshold - 2; i++) {
    const nextStart = Math.floor((i + 1) * every) + 1;
    const nextEnd = Math.min(Math.floor((i + 2) * every) + 1, n);
    let avgX = 0;
    let avgY = 0;
    for (let j = nextStart; j < nextEnd; j++) {
      avgX += steps[j]!;
      avgY += values[j]!;
    }
    const span = nextEnd - nextStart;
    avgX /= span;
    avgY /= span;
    const start = Math.floor(i * every) + 1;
    const end = Math.floor((i + 1) * every) + 1;
    const ax = steps[a]!;
    const ay = values[a]!;
    let maxArea = -1;
    let chosen = start;
    for (let j = start; j < end; j++) {
      const area = Math.abs((ax - avgX) * (values[j]! - ay) - (ax - steps[j]!) * (avgY - ay));
      if (area > maxArea) {
        maxArea = area;
        chosen = j;
      }
    }
    outSteps.push(steps[chosen]!);
    outValues.push(values[chosen]!);
    a = chosen;
  }
  outSteps.push(steps[n - 1]!);
  outValues.push(values[n - 1]!);
  return { steps: outSteps, values: outValues };
}

/**
 * Min/max downsampling: the points split into `buckets` runs of equal length and each keeps its
 * minimum and maximum in step order, so a drawn line covers every value's vertical extent (what
 * a pixel column would show). At most 2·buckets points.
 */
export function minMaxDownsample(series: Series, buckets: number): Series {
  const { steps, values } = series;
  const n = Math.min(steps.length, values.length);
  if (buckets < 1 || n <= 2 * buckets) return { steps: steps.slice(0, n), values: values.slice(0, n) };
  const outSteps: number[] = [];
  const outValues: number[] = [];
  for (let b = 0; b < buckets; b++) {
    const start = Math.floor((b * n) / buckets);
    const end = Math.floor(((b + 1) * n) / buckets);
    let lo = start;
    let hi = start;
    for (let j = start; j < end; j++) {
      if (values[j]! < values[lo]!) lo = j;
      if (values[j]! > values[hi]!) hi = j;
    }
    for (const j of lo === hi ? [lo] : lo < hi ? [lo, hi] : [hi, lo]) {
      outSteps.push(steps[j]!);
      outValues.push(values[j]!);
    }
  }
  return { steps: outSteps, values: outValues };
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
export function alignSeries(series: readonly Series[]): { steps: number[]; columns: (number | null)[][] } {
  const all = new Set<number>();
  for (const s of series) for (const step of s.steps) all.add(step);
  const steps = [...all].sort((a, b) => a - b);
  const index = new Map(steps.map((step, i) => [step, i]));
  const columns = series.map((s) => {
    const column: (number | null)[] = new Array(steps.length).fill(null);
    s.steps.forEach((step, i) => {
      const v = s.values[i];
      column[index.get(step)!] = v === undefined || !Number.isFinite(v) ? null : v;
    });
    return column;
  });
  return { steps, columns };
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
