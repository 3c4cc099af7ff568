'use client';
/** The training curves of one or several runs, with the log-scale and smoothing toggles. */
import { useId, useMemo, useState } from 'react';

import { LineChart, type ChartSeries } from './LineChart';

export interface ChartControls {
  logY: boolean;
  smoothing: number;
}

export function ChartToggles({ value, onChange }: { value: ChartControls; onChange: (value: ChartControls) => void }) {
  const id = useId();
  return (
    <div className="toolbar" role="group" aria-label="Chart options">
      <label className="inline" htmlFor={`${id}-log`}>
        <input
          id={`${id}-log`}
          type="checkbox"
          checked={value.logY}
          onChange={(e) => onChange({ ...value, logY: e.target.checked })}
          data-testid="toggle-log"
        />{' '}
        Log scale (loss)
      </label>
      <label htmlFor={`${id}-smooth`}>Smoothing</label>
      <input
        id={`${id}-smooth`}
        type="range"
        min={0}
        max={0.99}
        step={0.01}
        value={value.smoothing}
        onChange={(e) => onChange({ ...value, smoothing: Number(e.target.value) })}
        aria-valuetext={value.smoothing === 0 ? 'off' : `EMA weight ${value.smoothing}`}
        data-testid="toggle-smoothing"
      />
      <span className="muted">{value.smoothing === 0 ? 'off' : value.smoothing.toFixed(2)}</span>
    </div>
  );
}

function useChartControls(): [ChartControls, (value: ChartControls) => void] {
  const [controls, setControls] = useState<ChartControls>({ logY: false, smoothing: 0 });
  return [controls, setControls];
}

/** A chart's series, memoised on their content so that polling the same data does not redraw. */
export function useStableSeries(series: ChartSeries[]): ChartSeries[] {
  const key = series
    .map(
      (s) => `${s.label}:${s.steps.length}:${s.steps[s.steps.length - 1] ?? ''}:${s.values[s.values.length - 1] ?? ''}`,
    )
    .join('|');
  return useMemo(() => series, [key]);
}

export interface Curve {
  title: string;
  series: ChartSeries[];
  testId: string;
  /** Follows the log-scale toggle (losses). */
  logScale?: boolean;
  /** Follows the smoothing slider (noisy per-step values). */
  smooth?: boolean;
  /** Left out when it has no series (a metric only some runs report). */
  optional?: boolean;
}

/** A card of curves sharing one set of toggles: the job page's and the compare page's. */
export function CurvesCard({ heading, testId, curves }: { heading: string; testId?: string; curves: Curve[] }) {
  const [controls, setControls] = useChartControls();
  const headingId = useId();
  return (
    <section className="card" aria-labelledby={headingId} data-testid={testId}>
      <h2 id={headingId}>{heading}</h2>
      <ChartToggles value={controls} onChange={setControls} />
      <div className="chart-grid">
        {curves
          .filter((curve) => !curve.optional || curve.series.length > 0)
          .map((curve) => (
            <LineChart
              key={curve.testId}
              title={curve.title}
              series={curve.series}
              logY={curve.logScale ? controls.logY : false}
              smoothing={curve.smooth ? controls.smoothing : 0}
              testId={curve.testId}
            />
          ))}
      </div>
    </section>
  );
}
