/**
 * The routing panel's data: the worker stores one series per (layer, expert) load, one router
 * entropy per layer and DynMoLE's broadcast fraction per layer, named
 *   routing/load/<layer>/<expert>, routing/entropy/<layer>, routing/broadcast/<layer>.
 * These functions group them by layer, build the expert × step matrix of a heatmap and find
 * experts whose load has collapsed.
 */
import type { Series } from './series';

export interface NamedSeries extends Series {
  name: string;
}

export interface LayerRouting {
  layer: number;
  /** Load series by expert index, ascending. */
  load: Map<number, Series>;
  entropy: Series | null;
  broadcast: Series | null;
}

const LOAD = /^routing\/load\/(\d+)\/(\d+)$/;
const ENTROPY = /^routing\/entropy\/(\d+)$/;
const BROADCAST = /^routing\/broadcast\/(\d+)$/;

/** Groups the routing series by layer (ascending); other series are ignored. Empty: no routing data. */
export function groupRouting(series: readonly NamedSeries[]): LayerRouting[] {
  const layers = new Map<number, LayerRouting>();
  const layerOf = (layer: number): LayerRouting => {
    let entry = layers.get(layer);
    if (!entry) {
      entry = { layer, load: new Map(), entropy: null, broadcast: null };
      layers.set(layer, entry);
    }
    return entry;
  };
  for (const s of series) {
    const data = { steps: s.steps, values: s.values };
    let m = LOAD.exec(s.name);
    if (m) {
      layerOf(Number(m[1])).load.set(Number(m[2]), data);
      continue;
    }
    m = ENTROPY.exec(s.name);
    if (m) {
      layerOf(Number(m[1])).entropy = data;
      continue;
    }
    m = BROADCAST.exec(s.name);
    if (m) layerOf(Number(m[1])).broadcast = data;
  }
  const sorted = [...layers.values()].sort((a, b) => a.layer - b.layer);
  for (const entry of sorted) entry.load = new Map([...entry.load.entries()].sort((a, b) => a[0] - b[0]));
  return sorted;
}

export interface HeatmapMatrix {
  /** Expert index of each row. */
  experts: number[];
  /** Step of each column (the sorted union of the experts' steps). */
  steps: number[];
  /** `cells[row][column]`: the load, or null where that expert has no point at that step. */
  cells: (number | null)[][];
  min: number;
  max: number;
}

/**
 * The expert × step matrix of one layer. With `maxColumns`, columns are merged into that many
 * buckets of consecutive steps, each holding the mean load of its points (a heatmap wider than the
 * canvas would be drawn sub-pixel anyway).
 */
export function heatmapMatrix(load: ReadonlyMap<number, Series>, maxColumns = Infinity): HeatmapMatrix {
  const experts = [...load.keys()].sort((a, b) => a - b);
  const stepSet = new Set<number>();
  for (const s of load.values()) for (const step of s.steps) stepSet.add(step);
  const allSteps = [...stepSet].sort((a, b) => a - b);
  const buckets = Math.max(1, Math.min(allSteps.length, Math.floor(maxColumns)));
  const bucketOfStep = new Map<number, number>();
  allSteps.forEach((step, i) => bucketOfStep.set(step, Math.floor((i * buckets) / allSteps.length)));
  // Each bucket is labelled with its last step.
  const steps: number[] = new Array(buckets).fill(0);
  allSteps.forEach((step, i) => (steps[Math.floor((i * buckets) / allSteps.length)] = step));
  let min = Infinity;
  let max = -Infinity;
  const cells = experts.map((expert) => {
    const sums = new Array<number>(buckets).fill(0);
    const counts = new Array<number>(buckets).fill(0);
    const s = load.get(expert)!;
    s.steps.forEach((step, i) => {
      const v = s.values[i]!;
      if (!Number.isFinite(v)) return;
      const b = bucketOfStep.get(step)!;
      sums[b]! += v;
      counts[b]!++;
    });
    return sums.map((sum, b) => {
      if (counts[b] === 0) return null;
      const mean = sum / counts[b]!;
      min = Math.min(min, mean);
      max = Math.max(max, mean);
      return mean;
    });
  });
  if (min === Infinity) {
    min = 0;
    max = 0;
  }
  return { experts, steps: allSteps.length === 0 ? [] : steps, cells, min, max };
}

export interface CollapsedExpert {
  layer: number;
  expert: number;
  /** Mean load over the recent window. */
  load: number;
  /** The same as a fraction of the layer's mean expert load (1 = a fair share). */
  share: number;
}

/**
 * Experts whose mean load over the last `window` points is below `threshold` times the layer's
 * mean expert load: with E experts a fair share is 1/E of the routed mass whatever top-k is, so the
 * test is relative and does not depend on how the worker normalises load.
 */
export function collapsedExperts(layers: readonly LayerRouting[], threshold = 0.1, window = 20): CollapsedExpert[] {
  const found: CollapsedExpert[] = [];
  for (const { layer, load } of layers) {
    const recent = new Map<number, number>();
    for (const [expert, s] of load) {
      const finite = s.values.filter((v) => Number.isFinite(v));
      if (finite.length === 0) continue;
      const tail = finite.slice(-window);
      recent.set(expert, tail.reduce((a, b) => a + b, 0) / tail.length);
    }
    if (recent.size < 2) continue;
    const mean = [...recent.values()].reduce((a, b) => a + b, 0) / recent.size;
    if (!(mean > 0)) continue;
    for (const [expert, value] of recent) {
      const share = value / mean;
      if (share < threshold) found.push({ layer, expert, load: value, share });
    }
  }
  return found;
}

/** Viridis-like colour ramp for t in [0, 1] (5 stops, linear in between). */
const STOPS: readonly [number, number, number][] = [
  [68, 1, 84],
  [59, 82, 139],
  [33, 145, 140],
  [94, 201, 98],
  [253, 231, 37],
];

export function heatColor(t: number): string {
  const x = Number.isFinite(t) ? Math.min(1, Math.max(0, t)) : 0;
  const pos = x * (STOPS.length - 1);
  const i = Math.min(STOPS.length - 2, Math.floor(pos));
  const f = pos - i;
  const [r0, g0, b0] = STOPS[i]!;
  const [r1, g1, b1] = STOPS[i + 1]!;
  const mix = (a: number, b: number) => Math.round(a + (b - a) * f);
  return `rgb(${mix(r0, r1)}, ${mix(g0, g1)}, ${mix(b0, b1)})`;
}
