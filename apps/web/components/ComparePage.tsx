'use client';
/** 2–10 runs side by side: overlaid curves, the config with "differences only", final metrics, routing heatmaps. */
import type { Job, MetricSeries } from '@expertune/contracts';
import Link from 'next/link';
import { useRouter } from 'next/navigation';
import { useMemo, useState } from 'react';

import { finalMetrics, runConfig } from '../lib/compare';
import { configDiff } from '../lib/config-diff';
import { formatMetric, shortId } from '../lib/format';
import { EVAL_LOSS, EXACT_MATCH, ROUTING_PREFIX, TRAIN_LOSS } from '../lib/metrics';
import { groupRouting } from '../lib/routing';
import { errorText, useApi } from './ApiProvider';
import { Heatmap } from './Heatmap';
import { useResource } from './hooks';
import { isLive, StatusBadge } from './JobBits';
import { PALETTE, type ChartSeries } from './LineChart';
import { CurvesCard, useStableSeries } from './MetricCharts';
import { TableScroller } from './ResourceTable';

export const MAX_RUNS = 10;

interface Run {
  job: Job;
  series: MetricSeries[];
}

export function ComparePage({ initialIds }: { initialIds: string[] }) {
  const { client } = useApi();
  const router = useRouter();
  const [ids, setIds] = useState(initialIds);
  const key = ids.join(',');
  const runs = useResource<Run[]>(
    () =>
      Promise.all(
        ids.map(async (id) => {
          const [job, metrics] = await Promise.all([
            client.jobs.get(id),
            client.jobs.metrics(id, { max_points: 1000 }),
          ]);
          return { job, series: metrics.data };
        }),
      ),
    [client, key],
    10_000,
  );
  const recent = useResource(() => client.jobs.list({ limit: 50 }), [client]);

  const setRuns = (next: string[]) => {
    setIds(next);
    router.replace(next.length ? `/compare?ids=${next.join(',')}` : '/compare');
  };
  const toggle = (id: string) =>
    setRuns(ids.includes(id) ? ids.filter((x) => x !== id) : ids.length >= MAX_RUNS ? ids : [...ids, id]);

  const loaded = runs.data ?? [];
  return (
    <div data-testid="compare-page">
      <h1>Compare runs</h1>
      <details className="card" open={ids.length < 2}>
        <summary>
          Runs ({ids.length} of at most {MAX_RUNS})
        </summary>
        <fieldset className="checks" data-testid="compare-picker">
          <legend className="sr-only">Runs to compare</legend>
          {(recent.data?.data ?? []).map((job) => (
            <label key={job.id} htmlFor={`cmp-${job.id}`}>
              <input
                id={`cmp-${job.id}`}
                type="checkbox"
                checked={ids.includes(job.id)}
                onChange={() => toggle(job.id)}
              />{' '}
              {job.id}{' '}
              <span className="muted">
                ({job.method}, {job.status})
              </span>
            </label>
          ))}
        </fieldset>
      </details>
      {ids.length < 2 && <p className="muted">Choose at least two runs.</p>}
      {runs.error != null && (
        <p role="alert" className="error">
          {errorText(runs.error)}
        </p>
      )}
      {loaded.length >= 2 && <Comparison runs={loaded} />}
      {loaded.some((r) => isLive(r.job)) && <p className="muted">Live runs refresh every 10 s.</p>}
    </div>
  );
}

function runLabel(job: Job): string {
  return `${shortId(job.id)} (${job.method}${job.suffix ? `, ${job.suffix}` : ''})`;
}

function overlay(runs: readonly Run[], name: string): ChartSeries[] {
  return runs.flatMap((run, i) => {
    const s = run.series.find((x) => x.name === name);
    return s
      ? [{ label: runLabel(run.job), steps: s.steps, values: s.values, color: PALETTE[i % PALETTE.length] }]
      : [];
  });
}

export function Comparison({ runs }: { runs: Run[] }) {
  const [differsOnly, setDiffersOnly] = useState(true);
  const [layer, setLayer] = useState(0);
  const trainLoss = useStableSeries(overlay(runs, TRAIN_LOSS));
  const evalLoss = useStableSeries(overlay(runs, EVAL_LOSS));
  const exact = useStableSeries(overlay(runs, EXACT_MATCH));
  const rows = useMemo(
    () =>
      configDiff(
        runs.map((r) => runConfig(r.job)),
        differsOnly,
      ),
    [runs, differsOnly],
  );
  const finals = useMemo(() => finalMetrics(runs.map((r) => r.series)), [runs]);
  const routing = useMemo(
    () => runs.map((r) => groupRouting(r.series.filter((s) => s.name.startsWith(ROUTING_PREFIX)))),
    [runs],
  );
  const layers = [...new Set(routing.flatMap((r) => r.map((l) => l.layer)))].sort((a, b) => a - b);

  return (
    <>
      <CurvesCard
        heading="Curves"
        curves={[
          { title: 'Train loss', series: trainLoss, testId: 'compare-train-loss', logScale: true, smooth: true },
          { title: 'Eval loss', series: evalLoss, testId: 'compare-eval-loss', logScale: true },
          { title: 'Eval exact match', series: exact, testId: 'compare-exact-match', optional: true },
        ]}
      />
      <section className="card" aria-labelledby="cmp-final">
        <h2 id="cmp-final">Final metrics</h2>
        <TableScroller label="Final metrics">
          <table data-testid="compare-final-metrics">
            <thead>
              <tr>
                <th scope="col">Metric</th>
                {runs.map((r) => (
                  <th scope="col" key={r.job.id}>
                    <Link href={`/jobs/${r.job.id}`}>{r.job.id}</Link> <StatusBadge job={r.job} />
                    <div className="muted">{r.job.method}</div>
                  </th>
                ))}
              </tr>
            </thead>
            <tbody>
              {finals.map((row) => (
                <tr key={row.name}>
                  <th scope="row">{row.name}</th>
                  {row.values.map((v, i) => (
                    <td key={i} className="num">
                      {i === row.best ? <strong title="best">{formatMetric(v)}</strong> : formatMetric(v)}
                    </td>
                  ))}
                </tr>
              ))}
            </tbody>
          </table>
        </TableScroller>
      </section>

      <section className="card" aria-labelledby="cmp-config">
        <h2 id="cmp-config">Config</h2>
        <label className="inline" htmlFor="differs-only">
          <input
            id="differs-only"
            type="checkbox"
            checked={differsOnly}
            onChange={(e) => setDiffersOnly(e.target.checked)}
            data-testid="differences-only"
          />{' '}
          Differences only
        </label>
        <TableScroller label="Config">
          <table data-testid="compare-config">
            <thead>
              <tr>
                <th scope="col">Key</th>
                {runs.map((r) => (
                  <th scope="col" key={r.job.id}>
                    {r.job.id}
                  </th>
                ))}
              </tr>
            </thead>
            <tbody>
              {rows.length === 0 && (
                <tr>
                  <td colSpan={runs.length + 1} className="muted">
                    The configs are identical.
                  </td>
                </tr>
              )}
              {rows.map((row) => (
                <tr key={row.key} className={row.differs ? 'differs' : undefined}>
                  <th scope="row">
                    <code>{row.key}</code>
                  </th>
                  {row.values.map((v, i) => (
                    <td key={i}>{v}</td>
                  ))}
                </tr>
              ))}
            </tbody>
          </table>
        </TableScroller>
      </section>

      <section className="card" aria-labelledby="cmp-routing" data-testid="compare-routing">
        <h2 id="cmp-routing">Expert load</h2>
        {layers.length === 0 ? (
          <p className="muted">no routing data</p>
        ) : (
          <>
            <label htmlFor="cmp-layer">Layer</label>{' '}
            <select id="cmp-layer" value={layer} onChange={(e) => setLayer(Number(e.target.value))}>
              {layers.map((l) => (
                <option key={l} value={l}>
                  layer {l}
                </option>
              ))}
            </select>
            <div className="heatmaps">
              {runs.map((r, i) => {
                const entry = routing[i]!.find((l) => l.layer === layer);
                return entry && entry.load.size > 0 ? (
                  <Heatmap
                    key={r.job.id}
                    load={entry.load}
                    title={runLabel(r.job)}
                    testId={`compare-heatmap-${r.job.id}`}
                  />
                ) : (
                  <p key={r.job.id} className="muted">
                    {runLabel(r.job)}: no routing data
                  </p>
                );
              })}
            </div>
          </>
        )}
      </section>
    </>
  );
}
