'use client';
import type { Model } from '@expertune/contracts';
import { useState } from 'react';

import { formatTime, shortId } from '../lib/format';
import { formatCount } from '../lib/params';
import { errorText, useApi } from './ApiProvider';
import { useResource } from './hooks';
import { ResourceTable } from './ResourceTable';

export function ModelsPage() {
  const { client } = useApi();
  const models = useResource(() => client.models.list({ limit: 100 }), [client]);
  const [path, setPath] = useState('');
  const [name, setName] = useState('');
  const [problem, setProblem] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);
  const [shown, setShown] = useState<Model | null>(null);

  const register = async () => {
    setBusy(true);
    setProblem(null);
    try {
      const model = await client.models.register({ path: path.trim(), ...(name.trim() ? { name: name.trim() } : {}) });
      setPath('');
      setName('');
      setShown(model);
      models.reload();
    } catch (error) {
      setProblem(errorText(error));
    } finally {
      setBusy(false);
    }
  };

  return (
    <div data-testid="models-page">
      <h1>Models</h1>
      <form
        className="card toolbar"
        onSubmit={(e) => {
          e.preventDefault();
          void register();
        }}
        data-testid="register-model"
      >
        <label htmlFor="model-path">Model directory</label>
        <input
          id="model-path"
          type="text"
          value={path}
          onChange={(e) => setPath(e.target.value)}
          placeholder="/path/to/hf-model"
          size={40}
        />
        <label htmlFor="model-name">Name (optional)</label>
        <input id="model-name" type="text" value={name} onChange={(e) => setName(e.target.value)} />
        <button type="submit" disabled={busy || !path.trim()}>
          Register
        </button>
        {problem && (
          <span role="alert" className="error">
            {problem}
          </span>
        )}
      </form>
      {models.error != null && (
        <p role="alert" className="error">
          {errorText(models.error)}
        </p>
      )}
      <ResourceTable
        rows={models.data?.data ?? []}
        loading={models.loading}
        empty="No models registered."
        testId="models-table"
        rowTestId="model-row"
        columns={[
          { header: 'Model', cell: (m) => <code title={m.id}>{shortId(m.id)}</code> },
          { header: 'Name', cell: (m) => m.name },
          { header: 'Architecture', hideNarrow: true, cell: (m) => m.architecture ?? '—' },
          { header: 'Parameters', numeric: true, cell: (m) => formatCount(m.parameter_count) },
          { header: 'Path', hideNarrow: true, cell: (m) => <code>{m.path}</code> },
          { header: 'Created', hideNarrow: true, cell: (m) => formatTime(m.created_at) },
          {
            header: 'Inspect',
            cell: (m) => (
              <button
                type="button"
                className="secondary"
                aria-label={`Inspect ${m.id}`}
                onClick={() =>
                  void client.models
                    .get(m.id)
                    .then(setShown)
                    .catch((e: unknown) => setProblem(errorText(e)))
                }
              >
                Inspect
              </button>
            ),
          },
        ]}
      />
      {shown && (
        <section className="card" data-testid="model-config">
          <h2>
            {shown.name} <span className="muted">({shown.id})</span>
          </h2>
          <pre tabIndex={0} aria-label="config.json">
            {JSON.stringify(shown.config ?? {}, null, 2)}
          </pre>
        </section>
      )}
    </div>
  );
}
