'use client';
/**
 * A job's events: the stored ones first, then the live SSE stream (read with fetch, since
 * EventSource cannot send the Authorization header), reconnecting with Last-Event-ID.
 */
import type { JobEvent } from '@expertune/contracts';
import { useEffect, useRef, useState } from 'react';

import { formatTime } from '../lib/format';
import { followStream } from '../lib/sse';
import { useApi } from './ApiProvider';

export function EventsLog({
  jobId,
  live,
  onEvent,
}: {
  jobId: string;
  live: boolean;
  onEvent?: (event: JobEvent) => void;
}) {
  const { client, request } = useApi();
  const [events, setEvents] = useState<JobEvent[]>([]);
  const [state, setState] = useState<'loading' | 'live' | 'closed' | 'retrying'>('loading');
  const onEventRef = useRef(onEvent);
  onEventRef.current = onEvent;

  useEffect(() => {
    const controller = new AbortController();
    const seen = new Set<string>();
    const add = (incoming: JobEvent[]) => {
      const fresh = incoming.filter((e) => !seen.has(e.id));
      fresh.forEach((e) => seen.add(e.id));
      // Merged by id: a re-run of this effect (the job went from live to finished) reads the stored
      // events again, and they must not be listed twice.
      if (fresh.length > 0)
        setEvents((old) => {
          const known = new Set(old.map((e) => e.id));
          return [...old, ...fresh.filter((e) => !known.has(e.id))].slice(-1000);
        });
      return fresh;
    };
    let lastId: string | undefined;
    const run = async () => {
      // Stored events, page by page.
      let after: string | undefined;
      for (let page = 0; page < 20; page++) {
        const answer = await client.jobs.events(jobId, { limit: 100, ...(after ? { after } : {}) });
        add(answer.data);
        if (answer.data.length > 0) lastId = answer.data[answer.data.length - 1]!.id;
        if (!answer.has_more) break;
        after = answer.next_cursor ?? lastId;
      }
      if (!live) {
        setState('closed');
        return;
      }
      await followStream({
        open: (resumeAfter) =>
          request(`/v1/jobs/${encodeURIComponent(jobId)}/events/stream`, {
            headers: { accept: 'text/event-stream', ...(resumeAfter ? { 'last-event-id': resumeAfter } : {}) },
            signal: controller.signal,
          }),
        onMessage: (message) => {
          try {
            const event = JSON.parse(message.data) as JobEvent;
            if (!event || typeof event !== 'object' || !('message' in event)) return;
            const withId = { ...event, id: event.id ?? message.id ?? String(Date.now()) };
            for (const e of add([withId])) onEventRef.current?.(e);
          } catch {
            // a message of another shape
          }
        },
        onState: (streamState) => setState(streamState === 'connecting' ? 'loading' : streamState),
        signal: controller.signal,
        lastEventId: lastId ?? null,
      });
    };
    void run().catch(() => !controller.signal.aborted && setState('closed'));
    return () => controller.abort();
  }, [client, request, jobId, live]);

  return (
    <section className="card" aria-labelledby="events-title" data-testid="events-log">
      <h2 id="events-title">
        Events{' '}
        <span className="muted">
          (
          {state === 'live'
            ? 'live'
            : state === 'retrying'
              ? 'reconnecting…'
              : state === 'loading'
                ? 'loading'
                : 'stored'}
          )
        </span>
      </h2>
      {events.length === 0 ? (
        <p className="muted">no events yet</p>
      ) : (
        <ol className="events" aria-live="polite">
          {events.map((e) => (
            <li key={e.id} className={`level-${e.level}`}>
              <span className="muted">{formatTime(e.created_at)}</span> [{e.type}] {e.message}
            </li>
          ))}
        </ol>
      )}
    </section>
  );
}
