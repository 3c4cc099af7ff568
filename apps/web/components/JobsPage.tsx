'use client';
import { JOB_STATUSES, TRAIN_METHODS, type Job } from '@expertune/contracts';
import Link from 'next/link';
import { useEffect, useRef, useState } from 'react';

import { formatDuration, formatTime, jobDuration } from '../lib/format';
import { TRAIN_LOSS } from '../lib/metrics';
import { errorText, useApi } from './ApiProvider';
import { useModelNames, useResource } from './hooks';
import { JobActions, Progress, shortId, StatusBadge } from './JobBits';
import { Sparkline } from './Sparkline';

const POLL_MS = 3000;

export function JobsPage() {
  const { client } = useApi();
  const [status, setStatus] = useState('');
  const [method, setMethod] = useState('');
  const [cursor, setCursor] = useState<string | undefined>(undefined);
  const [selected, setSelected] = useState<string[]>([]);
  const [now, setNow] = useState(() => Math.floor(Date.now() / 1000));
  const jobs = useResource(
    () =>
      client.jobs.list({
        limit: 25,
        ...(status ? { status: status as Job['status'] } : {}),
        ...(method ? { method: method as Job['method'] } : {}),
        ...(cursor ? { after: cursor } : {}),
      }),
    [client, status, method, cursor],
    POLL_MS,
  );
  const list = jobs.data?.data ?? [];
  const losses = useLossSparklines(list);
  const modelNames = useModelNames();

  useEffect(() => {
    const timer = setInterval(() => setNow(Math.floor(Date.now() / 1000)), 1000);
    return () => clearInterval(timer);
  }, []);

  const toggle = (id: string) =>
    setSelected((old) => (old.includes(id) ? old.filter((x) => x !== id) : old.length >= 10 ? old : [...old, id]));

  return (
    <>
      <div className="toolbar">
        <h1>Jobs</h1>
        <Link href="/jobs/new" className="button" data-testid="new-job-link">
          New job
        </Link>
        <Link
          href={selected.length >= 2 ? `/compare?ids=${selected.join(',')}` : '/compare'}
          className={`button secondary${selected.length >= 2 ? '' : ' disabled'}`}
          aria-disabled={selected.length < 2}
          data-testid="compare-selected"
        >
          Compare selected ({selected.length})
        </Link>
      </div>
      <div className="toolbar" role="group" aria-label="Filters">
        <label htmlFor="filter-status">Status</label>
        <select
          id="filter-status"
          value={status}
          onChange={(e) => {
            setCursor(undefined);
            setStatus(e.target.value);
          }}
          data-testid="filter-status"
        >
          <option value="">any</option>
          {JOB_STATUSES.map((s) => (
            <option key={s}>{s}</option>
          ))}
        </select>
        <label htmlFor="filter-method">Method</label>
        <select
          id="filter-method"
          value={method}
          onChange={(e) => {
            setCursor(undefined);
            setMethod(e.target.value);
          }}
          data-testid="filter-method"
        >
          <option value="">any</option>
          {TRAIN_METHODS.map((m) => (
            <option key={m}>{m}</option>
          ))}
        </select>
        <span className="muted">updates every {POLL_MS / 1000} s</span>
      </div>
      {jobs.error != null && (
        <p role="alert" className="error">
          {errorText(jobs.error)}
        </p>
      )}
      <div className="card table-wrap">
        <table data-testid="jobs-table">
          <thead>
            <tr>
              <th scope="col">
                <span className="sr-only">Select</span>
              </th>
              <th scope="col">Job</th>
              <th scope="col">Status</th>
              <th scope="col">Method</th>
              <th scope="col" className="hide-narrow">
                Base model
              </th>
              <th scope="col">Progress</th>
              <th scope="col" className="hide-narrow">
                Loss
              </th>
              <th scope="col" className="hide-narrow">
                Created
              </th>
              <th scope="col">Duration</th>
              <th scope="col">Actions</th>
            </tr>
          </thead>
          <tbody>
            {list.length === 0 && (
              <tr>
                <td colSpan={10} className="muted">
                  {jobs.loading ? 'Loading…' : 'No jobs match.'}
                </td>
              </tr>
            )}
            {list.map((job) => (
              <tr key={job.id} data-testid="job-row" data-job-id={job.id} data-status={job.status}>
                <td>
                  <input
                    type="checkbox"
                    checked={selected.includes(job.id)}
                    onChange={() => toggle(job.id)}
                    aria-label={`Select ${job.id} for comparison`}
                    data-testid="select-job"
                  />
                </td>
                <td>
                  <Link href={`/jobs/${job.id}`} title={job.id} data-testid="job-link">
                    <code>{shortId(job.id)}</code>
                  </Link>
                  {job.suffix && <span className="muted"> {job.suffix}</span>}
                </td>
                <td>
                  <StatusBadge job={job} />
                </td>
                <td>{job.method}</td>
                <td className="hide-narrow">{modelNames[job.model] ?? job.model}</td>
                <td>
                  <Progress job={job} />
                </td>
                <td className="hide-narrow">
                  <Sparkline values={losses[job.id] ?? []} label={`train loss of ${job.id}`} />
                </td>
                <td className="hide-narrow">{formatTime(job.created_at)}</td>
                <td>{formatDuration(jobDuration(job, now))}</td>
                <td>
                  <JobActions job={job} onChange={() => jobs.reload()} />
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      </div>
      <div className="toolbar">
        {cursor && (
          <button type="button" className="secondary" onClick={() => setCursor(undefined)}>
            First page
          </button>
        )}
        {jobs.data?.has_more && jobs.data.next_cursor && (
          <button type="button" className="secondary" onClick={() => setCursor(jobs.data!.next_cursor!)}>
            Next page
          </button>
        )}
      </div>
    </>
  );
}

/**
 * The train-loss sparkline of each listed job, 60 points each: fetched again whenever a job's status
 * or step count moves (a job that finished between two polls gets its final curve), never otherwise.
 */
function useLossSparklines(jobs: readonly Job[]): Record<string, number[]> {
  const { client } = useApi();
  const [losses, setLosses] = useState<Record<string, number[]>>({});
  const fetchedAt = useRef(new Map<string, string>());
  useEffect(() => {
    for (const job of jobs) {
      const version = `${job.status}:${job.steps_completed}`;
      if (fetchedAt.current.get(job.id) === version || job.steps_completed === 0) continue;
      fetchedAt.current.set(job.id, version);
      client.jobs
        .metrics(job.id, { names: TRAIN_LOSS, max_points: 60 })
        .then((answer) => {
          const values = answer.data.find((s) => s.name === TRAIN_LOSS)?.values ?? [];
          setLosses((old) => ({ ...old, [job.id]: values }));
        })
        .catch(() => fetchedAt.current.delete(job.id));
    }
  }, [client, jobs]);
  return losses;
}
