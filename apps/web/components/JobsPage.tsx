'use client';
import { JOB_STATUSES, TRAIN_METHODS, type Job } from '@expertune/contracts';
import Link from 'next/link';
import { useEffect, useRef, useState } from 'react';

import { formatDuration, formatTime, jobDuration, shortId } from '../lib/format';
import { TRAIN_LOSS } from '../lib/metrics';
import { followStream, type StreamState } from '../lib/sse';
import { errorText, useApi } from './ApiProvider';
import { useModelNames, useResource } from './hooks';
import { JobActions, Progress, StatusBadge } from './JobBits';
import { ResourceTable } from './ResourceTable';
import { Sparkline } from './Sparkline';

/** Polling while the change stream is down; with it live, a slow safety poll only. */
const POLL_MS = 3000;
const LIVE_POLL_MS = 30_000;
/** The list is reloaded at most this often however many changes arrive. */
const RELOAD_EVERY_MS = 1000;

export function JobsPage() {
  const { client } = useApi();
  const [status, setStatus] = useState('');
  const [method, setMethod] = useState('');
  const [cursor, setCursor] = useState<string | undefined>(undefined);
  const [selected, setSelected] = useState<string[]>([]);
  const [now, setNow] = useState(() => Math.floor(Date.now() / 1000));
  const [stream, setStream] = useState<StreamState>('connecting');
  const jobs = useResource(
    () =>
      client.jobs.list({
        limit: 25,
        ...(status ? { status: status as Job['status'] } : {}),
        ...(method ? { method: method as Job['method'] } : {}),
        ...(cursor ? { after: cursor } : {}),
      }),
    [client, status, method, cursor],
    stream === 'live' ? LIVE_POLL_MS : POLL_MS,
  );
  useJobChanges(jobs.reload, setStream);
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
        <span className="muted" data-testid="jobs-updates" data-stream={stream}>
          {stream === 'live' ? 'live' : `updates every ${POLL_MS / 1000} s`}
        </span>
      </div>
      {jobs.error != null && (
        <p role="alert" className="error">
          {errorText(jobs.error)}
        </p>
      )}
      <ResourceTable
        rows={list}
        loading={jobs.loading}
        empty="No jobs match."
        testId="jobs-table"
        rowTestId="job-row"
        rowProps={(job) => ({ 'data-job-id': job.id, 'data-status': job.status })}
        columns={[
          {
            header: <span className="sr-only">Select</span>,
            cell: (job) => (
              <input
                type="checkbox"
                checked={selected.includes(job.id)}
                onChange={() => toggle(job.id)}
                aria-label={`Select ${job.id} for comparison`}
                data-testid="select-job"
              />
            ),
          },
          {
            header: 'Job',
            cell: (job) => (
              <>
                <Link href={`/jobs/${job.id}`} title={job.id} data-testid="job-link">
                  <code>{shortId(job.id)}</code>
                </Link>
                {job.suffix && <span className="muted"> {job.suffix}</span>}
              </>
            ),
          },
          { header: 'Status', cell: (job) => <StatusBadge job={job} /> },
          { header: 'Method', cell: (job) => job.method },
          { header: 'Base model', hideNarrow: true, cell: (job) => modelNames[job.model] ?? job.model },
          { header: 'Progress', cell: (job) => <Progress job={job} /> },
          {
            header: 'Loss',
            hideNarrow: true,
            cell: (job) => <Sparkline values={losses[job.id] ?? []} label={`train loss of ${job.id}`} />,
          },
          { header: 'Created', hideNarrow: true, cell: (job) => formatTime(job.created_at) },
          { header: 'Duration', cell: (job) => formatDuration(jobDuration(job, now)) },
          { header: 'Actions', cell: (job) => <JobActions job={job} onChange={() => jobs.reload()} /> },
        ]}
      />
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
 * Follows GET /v1/events/stream (changes of every job) and calls `reload` on each, at most once a
 * second, trailing: the last change of a burst is never missed.
 */
function useJobChanges(reload: () => void, onState: (state: StreamState) => void): void {
  const { request } = useApi();
  const reloadRef = useRef(reload);
  reloadRef.current = reload;
  useEffect(() => {
    const controller = new AbortController();
    let timer: ReturnType<typeof setTimeout> | null = null;
    let last = 0;
    const schedule = () => {
      if (timer) return;
      const wait = Math.max(0, last + RELOAD_EVERY_MS - Date.now());
      timer = setTimeout(() => {
        timer = null;
        last = Date.now();
        reloadRef.current();
      }, wait);
    };
    void followStream({
      open: () => request('/v1/events/stream', { headers: { accept: 'text/event-stream' }, signal: controller.signal }),
      onMessage: (message) => message.event === 'job' && schedule(),
      onState,
      signal: controller.signal,
    });
    return () => {
      controller.abort();
      if (timer) clearTimeout(timer);
    };
  }, [request, onState]);
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
