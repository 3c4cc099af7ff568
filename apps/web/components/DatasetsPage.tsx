'use client';
import type { Dataset } from '@expertune/contracts';
import { useState } from 'react';

import { formatBytes, formatTime } from '../lib/format';
import { errorText, useApi } from './ApiProvider';
import { DatasetPreview, DatasetUpload } from './DatasetUpload';
import { useResource } from './hooks';

export function DatasetsPage() {
  const { client } = useApi();
  const datasets = useResource(() => client.datasets.list({ limit: 100 }), [client]);
  const [shown, setShown] = useState<Dataset | null>(null);
  const [problem, setProblem] = useState<string | null>(null);

  const inspect = async (id: string) => {
    setProblem(null);
    try {
      setShown(await client.datasets.get(id));
    } catch (error) {
      setProblem(errorText(error));
    }
  };
  const remove = async (id: string) => {
    setProblem(null);
    try {
      await client.datasets.delete(id);
      if (shown?.id === id) setShown(null);
      datasets.reload();
    } catch (error) {
      setProblem(errorText(error));
    }
  };

  return (
    <div data-testid="datasets-page">
      <h1>Datasets</h1>
      <section className="card">
        <DatasetUpload onUploaded={() => datasets.reload()} />
      </section>
      {(problem || datasets.error != null) && (
        <p role="alert" className="error">
          {problem ?? errorText(datasets.error)}
        </p>
      )}
      <div className="card table-wrap">
        <table data-testid="datasets-table">
          <thead>
            <tr>
              <th scope="col">Dataset</th>
              <th scope="col">File</th>
              <th scope="col">Format</th>
              <th scope="col">Rows</th>
              <th scope="col" className="hide-narrow">
                Tokens
              </th>
              <th scope="col" className="hide-narrow">
                Size
              </th>
              <th scope="col" className="hide-narrow">
                Created
              </th>
              <th scope="col">Actions</th>
            </tr>
          </thead>
          <tbody>
            {(datasets.data?.data ?? []).length === 0 && (
              <tr>
                <td colSpan={8} className="muted">
                  {datasets.loading ? 'Loading…' : 'No datasets yet.'}
                </td>
              </tr>
            )}
            {(datasets.data?.data ?? []).map((d) => (
              <tr key={d.id} data-testid="dataset-row">
                <td>{d.id}</td>
                <td>{d.filename}</td>
                <td>{d.format}</td>
                <td className="num">
                  {d.stats.rows}
                  {d.stats.bad_rows > 0 && <span className="error"> ({d.stats.bad_rows} bad)</span>}
                </td>
                <td className="num hide-narrow">{d.stats.tokens ?? '—'}</td>
                <td className="num hide-narrow">{formatBytes(d.bytes)}</td>
                <td className="hide-narrow">{formatTime(d.created_at)}</td>
                <td>
                  <button
                    type="button"
                    className="secondary"
                    onClick={() => void inspect(d.id)}
                    aria-label={`Preview ${d.id}`}
                  >
                    Preview
                  </button>{' '}
                  <button
                    type="button"
                    className="danger"
                    onClick={() => void remove(d.id)}
                    aria-label={`Delete ${d.id}`}
                  >
                    Delete
                  </button>
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      </div>
      {shown && (
        <section className="card">
          <h2>Preview</h2>
          <DatasetPreview dataset={shown} />
        </section>
      )}
    </div>
  );
}
