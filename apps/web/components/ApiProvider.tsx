'use client';
/**
 * The API key lives in sessionStorage (one entry per browser tab session, gone when it closes):
 * never in a URL, a cookie or a log line. Every request goes through the same-origin /api proxy;
 * a 401 from any of them forgets the key and brings the key form back.
 */
import { createExpertuneClient, ExpertuneApiError, type ExpertuneClient } from '@expertune/contracts';
import { createContext, useCallback, useContext, useEffect, useMemo, useState, type ReactNode } from 'react';

export const KEY_STORAGE = 'expertune.apiKey';
/** Where the browser sends API calls: the console's own proxy (app/api/[...path]/route.ts). */
export const PROXY_BASE = '/api';

interface ApiContextValue {
  client: ExpertuneClient;
  /** A raw authenticated request through the proxy (`path` like '/v1/adapters/x/download'), for what the typed client lacks. */
  request: (path: string, init?: RequestInit) => Promise<Response>;
  signOut: () => void;
}

const ApiContext = createContext<ApiContextValue | null>(null);

export function useApi(): ApiContextValue {
  const value = useContext(ApiContext);
  if (!value) throw new Error('useApi outside ApiProvider');
  return value;
}

/** A message for an error from the client: the API's own message when it sent one. */
export function errorText(error: unknown): string {
  if (error instanceof ExpertuneApiError)
    return `${error.error.message}${error.error.param ? ` (${error.error.param})` : ''} [${error.status} ${error.error.code}]`;
  return error instanceof Error ? error.message : String(error);
}

function readKey(): string | null {
  try {
    return window.sessionStorage.getItem(KEY_STORAGE);
  } catch {
    return null;
  }
}

export function ApiProvider({ children }: { children: ReactNode }) {
  // undefined: not read yet (server render and first client render agree on the placeholder).
  const [key, setKey] = useState<string | null | undefined>(undefined);
  const [expired, setExpired] = useState(false);

  useEffect(() => setKey(readKey()), []);

  const forget = useCallback((wasRefused: boolean) => {
    try {
      window.sessionStorage.removeItem(KEY_STORAGE);
    } catch {
      // storage disabled: the key only lived in memory
    }
    setExpired(wasRefused);
    setKey(null);
  }, []);

  const value = useMemo<ApiContextValue | null>(() => {
    if (!key) return null;
    const guardedFetch: typeof fetch = async (input, init) => {
      const response = await fetch(input, init);
      if (response.status === 401) forget(true);
      return response;
    };
    return {
      client: createExpertuneClient({ baseUrl: PROXY_BASE, apiKey: key, fetch: guardedFetch }),
      request: (path, init = {}) => {
        const headers = new Headers(init.headers);
        headers.set('authorization', `Bearer ${key}`);
        return guardedFetch(`${PROXY_BASE}${path}`, { ...init, headers });
      },
      signOut: () => forget(false),
    };
  }, [key, forget]);

  if (key === undefined) return <p className="muted">Loading…</p>;
  if (!value)
    return (
      <KeyForm
        expired={expired}
        onKey={(k) => {
          try {
            window.sessionStorage.setItem(KEY_STORAGE, k);
          } catch {
            // keep it in memory only
          }
          setExpired(false);
          setKey(k);
        }}
      />
    );
  return <ApiContext.Provider value={value}>{children}</ApiContext.Provider>;
}

export function KeyForm({ expired, onKey }: { expired: boolean; onKey: (key: string) => void }) {
  const [text, setText] = useState('');
  return (
    <form
      className="card key-form"
      data-testid="key-form"
      onSubmit={(event) => {
        event.preventDefault();
        const k = text.trim();
        if (k) onKey(k);
      }}
    >
      <h1>API key</h1>
      {expired && (
        <p role="alert" className="error" data-testid="key-expired">
          The API refused the key (401: expired, revoked or mistyped). Enter a valid key.
        </p>
      )}
      <p className="muted">
        Create one with <code>expertune keys create</code>. It is kept for this browser tab only (sessionStorage) and
        sent to the API in the Authorization header.
      </p>
      <label htmlFor="api-key">API key</label>
      <input
        id="api-key"
        name="api-key"
        type="password"
        autoComplete="off"
        spellCheck={false}
        value={text}
        onChange={(event) => setText(event.target.value)}
        data-testid="key-input"
      />
      <button type="submit" disabled={!text.trim()} data-testid="key-submit">
        Use this key
      </button>
    </form>
  );
}
