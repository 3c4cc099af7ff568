'use client';
/** Uploads a JSONL file; a 422 lists the bad rows by line, a success previews the first rows. */
import { ExpertuneApiError, type Dataset } from '@expertune/contracts';
import { useState } from 'react';

import { formatBytes } from '../lib/format';
import { lineProblems, renderRow, type LineProblem } from '../lib/preview';
import { errorText, useApi } from './ApiProvider';
import { TableScroller } from './ResourceTable';

export function DatasetUpload({ onUploaded, modelId }: { onUploaded?: (dataset: Dataset) => void; modelId?: string }) {
  const { client } = useApi();
  const [file, setFile] = useState<File | null>(null);
  const [busy, setBusy] = useState(false);
  const [problem, setProblem] = useState<string | null>(null);
  const [lines, setLines] = useState<LineProblem[]>([]);
  const [uploaded, setUploaded] = useState<Dataset | null>(null);

  const upload = async () => {
    if (!file) return;
    setBusy(true);
    setProblem(null);
    setLines([]);
    setUploaded(null);
    try {
      const created = await client.datasets.upload(file, file.name, modelId ? { model: modelId } : {});
      const full = await client.datasets.get(created.id).catch(() => created);
      setUploaded(full);
      onUploaded?.(full);
    } catch (error) {
      setProblem(errorText(error));
      if (error instanceof ExpertuneApiError) setLines(lineProblems(error.error));
    } finally {
      setBusy(false);
    }
  };

  return (
    <div className="upload" data-testid="dataset-upload">
      <div className="toolbar">
        <label htmlFor="dataset-file">Upload a JSONL dataset</label>
        <input
          id="dataset-file"
          type="file"
          accept=".jsonl,.json,application/jsonl,application/x-ndjson,text/plain"
          onChange={(e) => setFile(e.target.files?.[0] ?? null)}
          data-testid="dataset-file"
        />
        <button
          type="button"
          className="secondary"
          disabled={!file || busy}
          onClick={() => void upload()}
          data-testid="dataset-upload-button"
        >
          {busy ? 'Uploading…' : 'Upload'}
        </button>
      </div>
      {problem && (
        <p role="alert" className="error" data-testid="upload-error">
          {problem}
        </p>
      )}
      {lines.length > 0 && (
        <TableScroller label="Rows the API refused">
          <table data-testid="upload-line-errors">
            <caption className="muted">Rows the API refused</caption>
            <thead>
              <tr>
                <th scope="col">Line</th>
                <th scope="col">Field</th>
                <th scope="col">Problem</th>
              </tr>
            </thead>
            <tbody>
              {lines.map((l, i) => (
                <tr key={i}>
                  <td className="num">{l.line}</td>
                  <td>{l.field ?? '—'}</td>
                  <td>{l.message}</td>
                </tr>
              ))}
            </tbody>
          </table>
        </TableScroller>
      )}
      {uploaded && <DatasetPreview dataset={uploaded} />}
    </div>
  );
}

export function DatasetPreview({ dataset }: { dataset: Dataset }) {
  const rows = (dataset.preview ?? []).slice(0, 5).map(renderRow);
  return (
    <div data-testid="dataset-preview">
      <p>
        <strong>{dataset.filename}</strong> ({dataset.id}): {dataset.stats.rows} rows, {dataset.stats.bad_rows} bad,{' '}
        {dataset.stats.tokens ?? '—'} tokens, {formatBytes(dataset.bytes)}, format {dataset.format}
      </p>
      {rows.length > 0 && (
        <ol className="preview">
          {rows.map((r, i) => (
            <li key={i}>
              <span className="muted">[{r.format}]</span>
              {r.prompt && <pre>{r.prompt}</pre>}
              <pre className="completion">→ {r.completion}</pre>
            </li>
          ))}
        </ol>
      )}
    </div>
  );
}
