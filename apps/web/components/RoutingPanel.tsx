'use client';
/**
 * The mixture's routing: per-layer expert load over steps, router entropy, DynMoLE's broadcast
 * fraction (tokens sent to every expert) and a warning for experts whose load collapsed.
 */
import { useMemo, useState } from 'react';

import { collapsedExperts, groupRouting, type NamedSeries } from '../lib/routing';
import { formatMetric } from '../lib/format';
import { Heatmap } from './Heatmap';
import { LineChart, type ChartSeries } from './LineChart';

export function RoutingPanel({
  series,
  method,
  testId = 'routing-panel',
}: {
  series: NamedSeries[];
  /** FlyLoRA's experts are its rank-1 components: its heatmap shows rank usage. */
  method?: string;
  testId?: string;
}) {
  const layers = useMemo(() => groupRouting(series), [series]);
  const [layerChoice, setLayerChoice] = useState<number | 'all'>('all');
  const collapsed = useMemo(() => collapsedExperts(layers), [layers]);
  const entropy = useMemo<ChartSeries[]>(
    () =>
      layers
        .filter((l) => l.entropy)
        .map((l) => ({ label: `layer ${l.layer}`, steps: l.entropy!.steps, values: l.entropy!.values })),
    [layers],
  );
  const broadcast = useMemo<ChartSeries[]>(
    () =>
      layers
        .filter((l) => l.broadcast)
        .map((l) => ({ label: `layer ${l.layer}`, steps: l.broadcast!.steps, values: l.broadcast!.values })),
    [layers],
  );

  if (layers.length === 0)
    return (
      <section className="card" data-testid={testId} aria-labelledby={`${testId}-title`}>
        <h2 id={`${testId}-title`}>Routing</h2>
        <p className="muted" data-testid="no-routing">
          no routing data (plain LoRA and full fine-tuning have no router; mixture runs report routing/load, entropy and
          broadcast per layer)
        </p>
      </section>
    );

  const shown = layerChoice === 'all' ? layers : layers.filter((l) => l.layer === layerChoice);
  return (
    <section className="card" data-testid={testId} aria-labelledby={`${testId}-title`}>
      <h2 id={`${testId}-title`}>Routing</h2>
      {collapsed.length > 0 && (
        <div role="alert" className="warning" data-testid="collapse-warning">
          <strong>Expert collapse:</strong>{' '}
          {collapsed
            .map(
              (c) =>
                `layer ${c.layer} expert ${c.expert} (load ${formatMetric(c.load)}, ${Math.round(c.share * 100)}% of a fair share)`,
            )
            .join('; ')}
          . Raise the balance coefficient or lower top-k/top-p.
        </div>
      )}
      <label htmlFor={`${testId}-layer`}>Layer</label>{' '}
      <select
        id={`${testId}-layer`}
        value={String(layerChoice)}
        onChange={(e) => setLayerChoice(e.target.value === 'all' ? 'all' : Number(e.target.value))}
      >
        <option value="all">all layers</option>
        {layers.map((l) => (
          <option key={l.layer} value={l.layer}>
            layer {l.layer}
          </option>
        ))}
      </select>
      <div className="heatmaps">
        {shown
          .filter((l) => l.load.size > 0)
          .map((l) => (
            <Heatmap
              key={l.layer}
              load={l.load}
              title={`${method === 'flylora' ? 'Rank usage' : 'Expert load'}, layer ${l.layer}`}
              testId={`heatmap-layer-${l.layer}`}
            />
          ))}
      </div>
      <div className="chart-grid">
        <LineChart title="Router entropy" series={entropy} testId="chart-router-entropy" />
        {method === 'dynmole' && broadcast.length > 0 && (
          <LineChart
            title="Broadcast fraction (DynMoLE: tokens routed to every expert)"
            series={broadcast}
            testId="chart-broadcast"
          />
        )}
      </div>
    </section>
  );
}
