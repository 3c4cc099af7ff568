'use client';
/** An expert × step load heatmap on a canvas: one rectangle per (expert, step bucket). */
import { useEffect, useMemo, useRef } from 'react';

import { heatColor, heatmapMatrix } from '../lib/routing';
import type { Series } from '../lib/series';
import { formatMetric } from '../lib/format';
import { useWidth } from './hooks';

export function Heatmap({
  load,
  title,
  testId,
  rowHeight = 14,
}: {
  load: ReadonlyMap<number, Series>;
  title: string;
  testId?: string;
  rowHeight?: number;
}) {
  const [container, width] = useWidth<HTMLDivElement>();
  const canvasRef = useRef<HTMLCanvasElement>(null);
  const labelWidth = 36;
  const matrix = useMemo(() => heatmapMatrix(load, Math.max(1, width - labelWidth)), [load, width]);
  const height = Math.max(1, matrix.experts.length) * rowHeight;

  useEffect(() => {
    const canvas = canvasRef.current;
    if (!canvas || width === 0) return;
    const ratio = window.devicePixelRatio || 1;
    canvas.width = width * ratio;
    canvas.height = height * ratio;
    const ctx = canvas.getContext('2d');
    if (!ctx) return;
    ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
    ctx.clearRect(0, 0, width, height);
    const columns = matrix.steps.length;
    const plotWidth = width - labelWidth;
    const span = matrix.max - matrix.min || 1;
    ctx.font = '11px system-ui, sans-serif';
    ctx.textBaseline = 'middle';
    matrix.experts.forEach((expert, row) => {
      ctx.fillStyle = '#555';
      ctx.fillText(`e${expert}`, 2, row * rowHeight + rowHeight / 2);
      matrix.cells[row]!.forEach((value, column) => {
        if (value === null) return;
        // A constant load (every expert always chosen) paints the middle colour, not the darkest.
        ctx.fillStyle = heatColor(matrix.max === matrix.min ? 0.5 : (value - matrix.min) / span);
        const x0 = labelWidth + Math.floor((column * plotWidth) / columns);
        const x1 = labelWidth + Math.floor(((column + 1) * plotWidth) / columns);
        ctx.fillRect(x0, row * rowHeight, Math.max(1, x1 - x0), rowHeight - 1);
      });
    });
  }, [matrix, width, height, rowHeight]);

  const first = matrix.steps[0];
  const last = matrix.steps[matrix.steps.length - 1];
  return (
    <figure className="heatmap" data-testid={testId}>
      <figcaption>{title}</figcaption>
      <div ref={container}>
        <canvas
          ref={canvasRef}
          style={{ width: '100%', height }}
          role="img"
          aria-label={`${title}: ${matrix.experts.length} experts over steps ${first ?? '—'} to ${last ?? '—'}, load ${formatMetric(matrix.min)} to ${formatMetric(matrix.max)}`}
        />
      </div>
      <div className="heat-legend">
        <span>step {first ?? '—'}</span>
        <span className="ramp" aria-hidden="true" />
        <span>
          load {formatMetric(matrix.min)} … {formatMetric(matrix.max)}
        </span>
        <span>step {last ?? '—'}</span>
      </div>
    </figure>
  );
}
