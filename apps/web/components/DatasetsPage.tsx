'use client';
import type { Dataset } from '@expertune/contracts';
import { useState } from 'react';

import { formatBytes, formatTime, shortId } from '../lib/format';
import { errorText, useApi } from './ApiProvider';
import { DatasetPreview, DatasetUpload } from './DatasetUpload';
import { ResourceTable } from './ResourceTable';
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
      <ResourceTable
        rows={datasets.data?.data ?? []}
        loading={datasets.loading}
        empty="No datasets yet."
        testId="datasets-table"
        rowTestId="dataset-row"
        columns={[
          { header: 'Dataset', cell: (d) => <code title={d.id}>{shortId(d.id)}</code> },
          { header: 'File', cell: (d) => d.filename },
          { header: 'Format', cell: (d) => d.format },
          {
            header: 'Rows',
            numeric: true,
            cell: (d) => (
              <>
                {d.stats.rows}
                {d.stats.bad_rows > 0 && <span className="error"> ({d.stats.bad_rows} bad)</span>}
              </>
            ),
          },
          { header: 'Tokens', numeric: true, hideNarrow: true, cell: (d) => d.stats.tokens ?? '—' },
          { header: 'Size', numeric: true, hideNarrow: true, cell: (d) => formatBytes(d.bytes) },
          { header: 'Created', hideNarrow: true, cell: (d) => formatTime(d.created_at) },
          {
            header: 'Actions',
            cell: (d) => (
              <>
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
              </>
            ),
          },
        ]}
      />
      {shown && (
        <section className="card">
          <h2>Preview</h2>
          <DatasetPreview dataset={shown} />
        </section>
      )}
    </div>
  );
}
