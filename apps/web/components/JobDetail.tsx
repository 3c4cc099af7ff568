'use client';
import type { Checkpoint, Job, MetricSeries } from '@expertune/contracts';
import Link from 'next/link';
import { useMemo, useState } from 'react';

import { formatDuration, formatMetric, formatTime, jobDuration } from '../lib/format';
import {
  EVAL_LOSS,
  EXACT_MATCH,
  GRAD_NORM,
  LEARNING_RATE,
  ROUTING_PREFIX,
  taskOf,
  TOKEN_ACCURACY,
  TOKENS_PER_SECOND,
  TRAIN_LOSS,
} from '../lib/metrics';
import { errorText, useApi } from './ApiProvider';
import { EventsLog } from './EventsLog';
import { useModelNames, useResource } from './hooks';
import { canResume, isLive, JobActions, Progress, StatusBadge } from './JobBits';
import type { ChartSeries } from './LineChart';
import { CurvesCard, useStableSeries } from './MetricCharts';
import { RoutingPanel } from './RoutingPanel';
import { TableScroller } from './ResourceTable';

/** Points per series asked of the API: about a screen's width; the chart cuts further to its own width. */
export const MAX_POINTS = 2000;

export function JobDetail({ id }: { id: string }) {
  const { client } = useApi();
  const jobResource = useResource(() => client.jobs.get(id), [client, id], 3000);
  const job = jobResource.data;
  const refresh = () => jobResource.reload();
  const live = job ? isLive(job) : false;
  const metrics = useResource(
    () => client.jobs.metrics(id, { max_points: MAX_POINTS }),
    [client, id, job?.status],
    live ? 5000 : null,
  );
  const checkpoints = useResource(() => client.jobs.checkpoints(id), [client, id, job?.status], live ? 10000 : null);
  const modelNames = useModelNames();
  const routingSeries = useMemo(
    () => (metrics.data?.data ?? []).filter((s) => s.name.startsWith(ROUTING_PREFIX)),
    [metrics.data],
  );

  if (jobResource.error && !job)
    return (
      <p role="alert" className="error">
        {errorText(jobResource.error)}
      </p>
    );
  if (!job) return <p className="muted">Loading job…</p>;

  const series = metrics.data?.data ?? [];
  return (
    <div data-testid="job-detail" data-job-id={job.id} data-status={job.status}>
      <div className="toolbar">
        <h1>
          {job.id} {job.suffix && <span className="muted">{job.suffix}</span>}
        </h1>
        <StatusBadge job={job} />
        <JobActions job={job} onChange={refresh} />
        <Link href={`/compare?ids=${job.id}`} className="button secondary">
          Compare with…
        </Link>
      </div>
      <section className="card grid-2" aria-label="Summary">
        <dl className="summary">
          <dt>Method</dt>
          <dd data-testid="job-method">{job.method}</dd>
          <dt>Base model</dt>
          <dd title={job.model}>{modelNames[job.model] ?? job.model}</dd>
          <dt>Data</dt>
          <dd>
            {job.training_file}
            {job.validation_file ? ` (validation ${job.validation_file})` : ''}
          </dd>
          <dt>Progress</dt>
          <dd>
            <Progress job={job} /> · {job.tokens_processed} tokens
          </dd>
        </dl>
        <dl className="summary">
          <dt>Created</dt>
          <dd>{formatTime(job.created_at)}</dd>
          <dt>Duration</dt>
          <dd>{formatDuration(jobDuration(job, Math.floor(Date.now() / 1000)))}</dd>
          <dt>Accelerator</dt>
          <dd data-testid="job-accelerator">
            {job.accelerator}
            {job.queue_position !== null &&
              ` · waiting, ${job.queue_position === 0 ? 'next in its queue' : `${job.queue_position} ahead in its queue`}`}
          </dd>
          <dt>Attempt</dt>
          <dd>
            {job.attempt}
            {job.resumed_from ? ` (from ${job.resumed_from})` : ''}
          </dd>
          <dt>Latest</dt>
          <dd>
            {Object.entries(job.latest_metrics)
              .slice(0, 6)
              .map(([k, v]) => `${k} ${formatMetric(v)}`)
              .join(' · ') || '—'}
          </dd>
        </dl>
        {job.error && (
          <p role="alert" className="error" data-testid="job-error">
            {job.error.code}: {job.error.message}
          </p>
        )}
      </section>
      <Curves series={series} />
      {metrics.error != null && (
        <p role="alert" className="error">
          {errorText(metrics.error)}
        </p>
      )}
      <RoutingPanel method={job.method} series={routingSeries} />
      <div className="grid-2">
        <Checkpoints job={job} checkpoints={checkpoints.data?.data ?? []} onChange={refresh} />
        <AdapterDownload job={job} />
      </div>
      <EventsLog
        jobId={job.id}
        live={live}
        onEvent={(event) => {
          if (event.type === 'status' || event.type === 'checkpoint') {
            jobResource.reload();
            checkpoints.reload();
          }
        }}
      />
      <section className="card" aria-labelledby="config-title">
        <h2 id="config-title">Resolved config</h2>
        {/* Focusable: a keyboard user must be able to scroll it. */}
        <pre data-testid="resolved-config" tabIndex={0} aria-label="Resolved config (JSON)">
          {JSON.stringify(
            {
              model: job.model,
              method: job.method,
              training_file: job.training_file,
              validation_file: job.validation_file,
              seed: job.seed,
              accelerator: job.accelerator,
              hyperparameters: job.hyperparameters,
            },
            null,
            2,
          )}
        </pre>
      </section>
    </div>
  );
}

function seriesOf(all: readonly MetricSeries[], name: string, label = name): ChartSeries[] {
  const s = all.find((x) => x.name === name);
  return s ? [{ label, steps: s.steps, values: s.values }] : [];
}

function Curves({ series }: { series: MetricSeries[] }) {
  const loss = useStableSeries([
    ...seriesOf(series, TRAIN_LOSS, 'train'),
    ...seriesOf(series, EVAL_LOSS, 'eval').map((s) => ({ ...s, dashed: true })),
  ]);
  const lr = useStableSeries(seriesOf(series, LEARNING_RATE, 'lr'));
  const grad = useStableSeries(seriesOf(series, GRAD_NORM, 'grad norm'));
  const speed = useStableSeries(seriesOf(series, TOKENS_PER_SECOND, 'tokens/s'));
  const accuracy = useStableSeries(seriesOf(series, TOKEN_ACCURACY, 'token accuracy'));
  const exact = useStableSeries([
    ...seriesOf(series, EXACT_MATCH, 'all'),
    ...series.filter((s) => taskOf(s.name)).map((s) => ({ label: taskOf(s.name)!, steps: s.steps, values: s.values })),
  ]);
  return (
    <CurvesCard
      heading="Training curves"
      testId="curves"
      curves={[
        { title: 'Loss (train, eval dashed)', series: loss, testId: 'chart-loss', logScale: true, smooth: true },
        { title: 'Learning rate', series: lr, testId: 'chart-lr' },
        { title: 'Gradient norm', series: grad, testId: 'chart-grad-norm', smooth: true },
        { title: 'Tokens per second', series: speed, testId: 'chart-tokens-per-second', smooth: true },
        { title: 'Token accuracy', series: accuracy, testId: 'chart-token-accuracy', smooth: true, optional: true },
        { title: 'Eval exact match', series: exact, testId: 'chart-exact-match', optional: true },
      ]}
    />
  );
}

function Checkpoints({
  job,
  checkpoints,
  onChange,
}: {
  job: Job;
  checkpoints: Checkpoint[];
  onChange: (job: Job) => void;
}) {
  return (
    <section className="card" aria-labelledby="checkpoints-title" data-testid="checkpoints">
      <h2 id="checkpoints-title">Checkpoints</h2>
      {checkpoints.length === 0 ? (
        <p className="muted">none (training.checkpoint_every is 0, or none written yet)</p>
      ) : (
        <TableScroller label="Checkpoints">
          <table>
            <thead>
              <tr>
                <th scope="col">Step</th>
                <th scope="col">Created</th>
                <th scope="col">Metrics</th>
                <th scope="col">Resume</th>
              </tr>
            </thead>
            <tbody>
              {checkpoints.map((c) => (
                <tr key={c.id} data-testid="checkpoint-row">
                  <td className="num">{c.step_number}</td>
                  <td>{formatTime(c.created_at)}</td>
                  <td>
                    <CheckpointMetrics metrics={c.metrics} />
                  </td>
                  <td>
                    {canResume(job) ? (
                      <JobActions job={job} checkpoint={c.id} onChange={onChange} />
                    ) : (
                      <span className="muted">when failed or cancelled</span>
                    )}
                  </td>
                </tr>
              ))}
            </tbody>
          </table>
        </TableScroller>
      )}
    </section>
  );
}

/** The losses and exact match in the row; every other metric (mixtures store dozens) folded away. */
const HEADLINE_METRICS = ['train/loss', 'eval/loss', 'eval/exact_match'];

function CheckpointMetrics({ metrics }: { metrics: Record<string, number> }) {
  const text = (names: string[]) => names.map((k) => `${k} ${formatMetric(metrics[k])}`).join(' · ');
  const headline = HEADLINE_METRICS.filter((k) => k in metrics);
  const rest = Object.keys(metrics).filter((k) => !HEADLINE_METRICS.includes(k));
  return (
    <>
      {text(headline)}
      {rest.length > 0 && (
        <details>
          <summary className="muted">{rest.length} more</summary>
          <span className="small">{text(rest)}</span>
        </details>
      )}
    </>
  );
}

function AdapterDownload({ job }: { job: Job }) {
  const { client, request } = useApi();
  const adapterId = job.result_adapter;
  const adapter = useResource(
    () => (adapterId ? client.adapters.get(adapterId) : Promise.resolve(null)),
    [client, adapterId],
  );
  const [problem, setProblem] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);
  const files = useMemo(() => adapter.data?.files ?? [], [adapter.data]);

  const download = async () => {
    if (!adapterId) return;
    setBusy(true);
    setProblem(null);
    try {
      // The key travels in a header, so a plain link cannot fetch the tar: fetch it, then save the blob.
      const response = await request(`/v1/adapters/${encodeURIComponent(adapterId)}/download`);
      if (!response.ok) throw new Error(`download answered ${response.status}`);
      const blob = await response.blob();
      const url = URL.createObjectURL(blob);
      const a = document.createElement('a');
      a.href = url;
      a.download = `${adapterId}.tar`;
      document.body.append(a);
      a.click();
      a.remove();
      setTimeout(() => URL.revokeObjectURL(url), 10_000);
    } catch (error) {
      setProblem(errorText(error));
    } finally {
      setBusy(false);
    }
  };

  return (
    <section className="card" aria-labelledby="adapter-title" data-testid="adapter">
      <h2 id="adapter-title">Adapter</h2>
      {!adapterId ? (
        <p className="muted">exported when the job succeeds</p>
      ) : (
        <>
          <p>
            {adapterId}
            {adapter.data && (
              <span className="muted">
                {' '}
                · {adapter.data.layout} · {adapter.data.bytes} bytes
              </span>
            )}
          </p>
          <button type="button" onClick={() => void download()} disabled={busy} data-testid="download-adapter">
            {busy ? 'Downloading…' : 'Download adapter (.tar)'}
          </button>
          {files.length > 0 && (
            <ul className="muted">
              {files.slice(0, 20).map((f) => (
                <li key={f}>{f}</li>
              ))}
            </ul>
          )}
          {problem && (
            <p role="alert" className="error">
              {problem}
            </p>
          )}
        </>
      )}
    </section>
  );
}
