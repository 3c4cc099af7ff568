'use client';
import type { Job } from '@expertune/contracts';
import { useState } from 'react';

import { progressFraction } from '../lib/format';
import { errorText, useApi } from './ApiProvider';

export const LIVE_STATUSES = new Set(['queued', 'running']);
export const isLive = (job: Pick<Job, 'status'>) => LIVE_STATUSES.has(job.status);
export const canCancel = (job: Pick<Job, 'status' | 'cancel_requested'>) => isLive(job) && !job.cancel_requested;
export const canResume = (job: Pick<Job, 'status'>) => job.status === 'failed' || job.status === 'cancelled';

export function StatusBadge({ job }: { job: Pick<Job, 'status' | 'cancel_requested'> }) {
  return (
    <span className={`status status-${job.status}`} data-testid="job-status">
      {job.status}
      {job.cancel_requested && job.status === 'running' ? ' (cancelling)' : ''}
    </span>
  );
}

export function Progress({ job }: { job: Pick<Job, 'steps_completed' | 'total_steps' | 'status'> }) {
  const fraction = progressFraction(job);
  const text = `${job.steps_completed}${job.total_steps ? ` / ${job.total_steps}` : ''} steps`;
  return (
    <span className="progress">
      {fraction === null ? <progress aria-label={text} /> : <progress max={1} value={fraction} aria-label={text} />}{' '}
      <span className="muted">{text}</span>
    </span>
  );
}

/** Cancel and resume (from the latest checkpoint, or `checkpoint`), reporting errors inline. */
export function JobActions({
  job,
  onChange,
  checkpoint,
}: {
  job: Job;
  onChange: (job: Job) => void;
  checkpoint?: string;
}) {
  const { client } = useApi();
  const [busy, setBusy] = useState(false);
  const [problem, setProblem] = useState<string | null>(null);
  const act = async (what: () => Promise<Job>) => {
    setBusy(true);
    setProblem(null);
    try {
      onChange(await what());
    } catch (error) {
      setProblem(errorText(error));
    } finally {
      setBusy(false);
    }
  };
  // Only what applies to the job now: a finished job's row shows no dead buttons.
  if (!canCancel(job) && !canResume(job) && !problem) return null;
  return (
    <span className="actions">
      {canCancel(job) && (
        <button
          type="button"
          className="danger"
          disabled={busy}
          onClick={() => void act(() => client.jobs.cancel(job.id))}
          aria-label={`Cancel job ${job.id}`}
          data-testid="cancel-job"
        >
          Cancel
        </button>
      )}{' '}
      {canResume(job) && (
        <button
          type="button"
          className="secondary"
          disabled={busy}
          onClick={() => void act(() => client.jobs.resume(job.id, checkpoint ? { checkpoint } : {}))}
          aria-label={`Resume job ${job.id}`}
          data-testid="resume-job"
        >
          Resume
        </button>
      )}
      {problem && (
        <span role="alert" className="error">
          {' '}
          {problem}
        </span>
      )}
    </span>
  );
}
