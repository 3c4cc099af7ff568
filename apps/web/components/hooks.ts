'use client';
import { useApi } from './ApiProvider';
import { useCallback, useEffect, useRef, useState, type RefObject } from 'react';

export interface Resource<T> {
  data: T | undefined;
  error: unknown;
  loading: boolean;
  reload: () => void;
}

/**
 * Loads `load()` on mount and whenever `deps` change, and again every `intervalMs` while
 * `intervalMs` is set (live pages poll; finished jobs stop). A slow answer never overwrites a newer one.
 */
export function useResource<T>(
  load: () => Promise<T>,
  deps: readonly unknown[],
  intervalMs?: number | null,
): Resource<T> {
  const [data, setData] = useState<T | undefined>(undefined);
  const [error, setError] = useState<unknown>(null);
  const [loading, setLoading] = useState(true);
  const generation = useRef(0);
  const loadRef = useRef(load);
  loadRef.current = load;

  const reload = useCallback(() => {
    const mine = ++generation.current;
    loadRef
      .current()
      .then((value) => {
        if (mine !== generation.current) return;
        setData(value);
        setError(null);
      })
      .catch((e: unknown) => {
        if (mine === generation.current) setError(e);
      })
      .finally(() => {
        if (mine === generation.current) setLoading(false);
      });
  }, deps);

  useEffect(() => {
    setLoading(true);
    reload();
  }, [reload]);

  useEffect(() => {
    if (!intervalMs) return;
    const timer = setInterval(reload, intervalMs);
    return () => clearInterval(timer);
  }, [reload, intervalMs]);

  return { data, error, loading, reload };
}

/** The width of an element, following resizes (charts draw one point per pixel). */
export function useWidth<E extends HTMLElement>(): [RefObject<E | null>, number] {
  const ref = useRef<E>(null);
  const [width, setWidth] = useState(0);
  useEffect(() => {
    const element = ref.current;
    if (!element) return;
    setWidth(element.clientWidth);
    const observer = new ResizeObserver((entries) => {
      const w = Math.floor(entries[0]?.contentRect.width ?? 0);
      setWidth((old) => (old === w ? old : w));
    });
    observer.observe(element);
    return () => observer.disconnect();
  }, []);
  return [ref, width];
}

/** Registered models' names by id, for tables that hold model ids (one request per page). */
export function useModelNames(): Record<string, string> {
  const { client } = useApi();
  const models = useResource(() => client.models.list({ limit: 100 }), [client]);
  return Object.fromEntries((models.data?.data ?? []).map((m) => [m.id, m.name]));
}
