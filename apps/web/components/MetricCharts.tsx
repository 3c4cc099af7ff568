'use client';
/** The training curves of one or several runs, with the log-scale and smoothing toggles. */
import { useId, useMemo, useState } from 'react';

import type { ChartSeries } from './LineChart';

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

export function useChartControls(): [ChartControls, (value: ChartControls) => void] {
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
