'use client';
/**
 * Line charts on uPlot: a canvas chart of ~50 kB that draws 10⁶ points without effort (it reduces
 * each path to the pixels itself). Each series is smoothed, guarded for the log axis and aligned on
 * the union of steps (lib/series chartData).
 */
import { useEffect, useMemo, useRef } from 'react';

import { formatTicks } from '../lib/format';
import { chartData, type Series } from '../lib/series';
import { useWidth } from './hooks';

export const PALETTE = [
  '#1f77b4',
  '#d62728',
  '#2ca02c',
  '#ff7f0e',
  '#9467bd',
  '#8c564b',
  '#e377c2',
  '#17becf',
  '#7f7f7f',
  '#bcbd22',
];

export interface ChartSeries extends Series {
  label: string;
  color?: string;
  dashed?: boolean;
}

export interface LineChartProps {
  title: string;
  series: ChartSeries[];
  logY?: boolean;
  /** EMA weight in [0, 1); 0 = raw. */
  smoothing?: number;
  height?: number;
  testId?: string;
  yLabel?: string;
}

export function LineChart({
  title,
  series,
  logY = false,
  smoothing = 0,
  height = 220,
  testId,
  yLabel,
}: LineChartProps) {
  const [container, width] = useWidth<HTMLDivElement>();
  const plotRef = useRef<HTMLDivElement>(null);
  const hasData = series.some((s) => s.steps.length > 0);
  const data = useMemo(() => (width > 0 ? chartData(series, logY, smoothing) : null), [series, width, logY, smoothing]);

  useEffect(() => {
    const target = plotRef.current;
    if (!target || !data || data.steps.length === 0) return;
    let plot: { destroy: () => void } | null = null;
    let cancelled = false;
    // uPlot touches window/document when loaded: load it in the browser only.
    void import('uplot').then(({ default: UPlot }) => {
      if (cancelled) return;
      plot = new UPlot(
        {
          width,
          height,
          scales: { x: { time: false }, y: { distr: logY ? 3 : 1 } },
          legend: { show: true },
          cursor: { drag: { x: true, y: false } },
          axes: [
            { label: 'step' },
            {
              label: yLabel ?? '',
              size: 60,
              values: (_plot: unknown, splits: (number | null)[]) => formatTicks(splits),
            },
          ],
          series: [
            { label: 'step' },
            ...series.map((s, i) => ({
              label: s.label,
              stroke: s.color ?? PALETTE[i % PALETTE.length],
              width: 1.5,
              spanGaps: true,
              points: { show: false },
              ...(s.dashed ? { dash: [6, 4] } : {}),
            })),
          ],
        },
        [data.steps, ...data.columns] as unknown as import('uplot').AlignedData,
        target,
      );
    });
    return () => {
      cancelled = true;
      plot?.destroy();
      target.replaceChildren();
    };
  }, [data, width, height, logY, series, yLabel]);

  return (
    <figure className="chart" data-testid={testId} aria-label={title}>
      <figcaption>
        {title}
        {data && data.hidden > 0 && (
          <span className="muted"> ({data.hidden} non-positive points hidden on the log scale)</span>
        )}
      </figcaption>
      <div ref={container} className="chart-area">
        {hasData ? (
          <div ref={plotRef} data-testid={testId ? `${testId}-plot` : undefined} />
        ) : (
          <p className="muted empty">no data yet</p>
        )}
      </div>
    </figure>
  );
}
