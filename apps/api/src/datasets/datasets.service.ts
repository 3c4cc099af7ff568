/**
 * Dataset uploads, validated row by row with the trainer's own reader (libs/trainer), so a file
 * the API accepts is a file the worker can train on. With a `model` field the rows are tokenized
 * with that model's tokenizer for token statistics; without one only their structure is checked.
 */
import { randomUUID } from 'node:crypto';
import { createReadStream, readFileSync } from 'node:fs';
import { unlink } from 'node:fs/promises';
import path from 'node:path';

import {
  DATA_FORMATS,
  type Dataset,
  type DatasetProblem,
  type ListEnvelope,
  type PageQuery,
} from '@expertune/contracts';
import { type ArtifactStorage, Dataset as DatasetRow, Job as JobRow, Model } from '@expertune/db';
import { Inject, Injectable } from '@nestjs/common';
import type { Request } from 'express';
import { type DataSource, In, IsNull } from 'typeorm';

import { ApiException } from '../common/api-exception.js';
import { findOr404, isUuid, pageOf, unixSeconds } from '../common/pagination.js';
import { API_CONFIG, type ApiConfig } from '../config/api-config.js';
import { DATA_SOURCE, STORAGE } from '../database/database.module.js';
import { receiveUpload } from './multipart-upload.js';

const PREVIEW_ROWS = 5;
const MAX_REPORTED_PROBLEMS = 100;
type DataFormat = (typeof DATA_FORMATS)[number];

interface Validation {
  problems: DatasetProblem[];
  stats: Dataset['stats'];
  format: DataFormat;
  preview: unknown[];
}

@Injectable()
export class DatasetsService {
  constructor(
    @Inject(DATA_SOURCE) private readonly dataSource: DataSource,
    @Inject(STORAGE) private readonly storage: ArtifactStorage,
    @Inject(API_CONFIG) private readonly config: ApiConfig,
  ) {}

  async upload(request: Request): Promise<Dataset> {
    const upload = await receiveUpload(request, path.join(this.config.dataDir, 'tmp'), this.config.uploadLimitBytes);
    try {
      const format = upload.fields.format ?? 'auto';
      if (!(DATA_FORMATS as readonly string[]).includes(format))
        throw new ApiException(422, 'invalid_parameter', `format: use one of ${DATA_FORMATS.join(', ')}`, 'format');
      this.checkLimits(upload.tempPath);
      const modelDir = upload.fields.model ? await this.modelDir(upload.fields.model) : null;
      const validation = await this.validate(
        upload.tempPath,
        format as DataFormat,
        modelDir,
        upload.fields.model ?? null,
      );
      if (validation.problems.length > 0) {
        const shown = validation.problems.slice(0, MAX_REPORTED_PROBLEMS);
        const summary = shown
          .slice(0, 10)
          .map((p) => `line ${p.line}, ${p.field}: ${p.message}`)
          .join('; ');
        throw new ApiException(
          422,
          'invalid_dataset',
          `${validation.stats.bad_rows} bad row(s): ${summary}${validation.problems.length > 10 ? '; …' : ''}`,
          'file',
          { lines: shown },
        );
      }
      if (validation.stats.rows === 0) throw new ApiException(422, 'invalid_dataset', 'the file has no rows', 'file');
      const storageKey = `datasets/${randomUUID()}.jsonl`;
      const stored = await this.storage.put(storageKey, createReadStream(upload.tempPath));
      const row = await this.dataSource.getRepository(DatasetRow).save({
        name: upload.fields.name ?? upload.filename,
        filename: upload.filename,
        storageKey,
        bytes: stored.bytes,
        sha256: stored.sha256,
        rows: validation.stats.rows,
        stats: { ...validation.stats, format: validation.format },
        preview: validation.preview,
      });
      return this.toDataset(await this.requireRow(row.id), true);
    } finally {
      await unlink(upload.tempPath).catch(() => undefined);
    }
  }

  async list(query: PageQuery): Promise<ListEnvelope<Dataset>> {
    const builder = this.dataSource
      .getRepository(DatasetRow)
      .createQueryBuilder('dataset')
      .where('dataset.deletedAt IS NULL');
    return pageOf(builder, query, (row) => this.toDataset(row, false));
  }

  async get(id: string): Promise<Dataset> {
    return this.toDataset(await this.requireRow(id), true);
  }

  async delete(id: string): Promise<{ id: string; object: 'dataset'; deleted: true }> {
    const row = await this.requireRow(id);
    const inUse = await this.dataSource.getRepository(JobRow).existsBy([
      { trainingDatasetId: id, status: In(['queued', 'running']) },
      { validationDatasetId: id, status: In(['queued', 'running']) },
    ]);
    if (inUse) throw ApiException.conflict('dataset_in_use', `dataset ${id} is used by a queued or running job`);
    // Soft delete: finished jobs still name the dataset they trained on.
    await this.dataSource.getRepository(DatasetRow).update({ id }, { deletedAt: new Date() });
    await this.storage.delete(row.storageKey);
    return { id, object: 'dataset', deleted: true };
  }

  /**
   * EXPERTUNE_MAX_ROW_BYTES and EXPERTUNE_MAX_DATASET_ROWS, before any row is parsed or tokenized:
   * one huge line would otherwise be held whole by the tokenizer, here and in the worker.
   */
  private checkLimits(file: string): void {
    const { maxRowBytes, maxDatasetRows } = this.config;
    const problems: DatasetProblem[] = [];
    let rows = 0;
    const lines = readFileSync(file).toString('latin1').split('\n');
    for (let index = 0; index < lines.length && problems.length < MAX_REPORTED_PROBLEMS; index++) {
      const raw = lines[index]!;
      if (raw.length > maxRowBytes)
        problems.push({
          line: index + 1,
          field: '(row)',
          message: `the row is ${raw.length} bytes, above the limit of ${maxRowBytes} (EXPERTUNE_MAX_ROW_BYTES)`,
        });
      if (raw.trim() !== '' && ++rows === maxDatasetRows + 1)
        problems.push({
          line: index + 1,
          field: '(file)',
          message: `more than ${maxDatasetRows} rows, the limit (EXPERTUNE_MAX_DATASET_ROWS)`,
        });
    }
    if (problems.length > 0)
      throw new ApiException(
        422,
        'dataset_limit_exceeded',
        problems
          .slice(0, 10)
          .map((p) => `line ${p.line}: ${p.message}`)
          .join('; '),
        'file',
        { lines: problems },
      );
  }

  private requireRow(id: string): Promise<DatasetRow> {
    return findOr404(this.dataSource.getRepository(DatasetRow), id, 'dataset', { deletedAt: IsNull() });
  }

  private async modelDir(modelId: string): Promise<string> {
    const model = isUuid(modelId) ? await this.dataSource.getRepository(Model).findOneBy({ id: modelId }) : null;
    if (!model) throw new ApiException(404, 'not_found', `no model with id ${JSON.stringify(modelId)}`, 'model');
    return model.path;
  }

  private async validate(
    file: string,
    format: DataFormat,
    modelDir: string | null,
    modelId: string | null,
  ): Promise<Validation> {
    // Loaded on first upload: the trainer pulls in the engine, which the rest of the API never needs.
    const trainer = await import('@expertune/trainer');
    const formats: Record<string, number> = {};
    const preview: unknown[] = [];
    if (modelDir) {
      const { loadTokenizer } = await import('@expertune/formats');
      const read = trainer.readDataFile(file, {
        tokenizer: loadTokenizer(modelDir),
        maxSeqLen: Number.MAX_SAFE_INTEGER,
        addEos: true,
        format,
      });
      const stats = trainer.dataStats(read);
      this.scanRows(file, format, trainer.RowReader, formats, preview);
      return {
        problems: read.problems.map((p) => ({ line: p.line, field: p.field ?? null, message: p.message })),
        stats: {
          rows: stats.rows,
          bad_rows: stats.badRows,
          tokens: stats.tokens,
          mean_tokens: stats.meanLength,
          max_tokens: stats.maxLength,
          tokenized_with: modelId,
          formats,
        },
        format:
          Object.keys(formats).length === 1 && format === 'auto' ? (Object.keys(formats)[0] as DataFormat) : format,
        preview,
      };
    }
    const { problems, rows } = this.scanRows(file, format, trainer.RowReader, formats, preview);
    return {
      problems,
      stats: {
        rows,
        bad_rows: new Set(problems.map((p) => p.line)).size,
        tokens: null,
        mean_tokens: null,
        max_tokens: null,
        tokenized_with: null,
        formats,
      },
      format: Object.keys(formats).length === 1 && format === 'auto' ? (Object.keys(formats)[0] as DataFormat) : format,
      preview,
    };
  }

  /** The structural pass (JSON, known format, required fields), counting rows per kind and keeping a preview. */
  private scanRows(
    file: string,
    format: DataFormat,
    RowReader: typeof import('@expertune/trainer').RowReader,
    formats: Record<string, number>,
    preview: unknown[],
  ): { problems: DatasetProblem[]; rows: number } {
    const reader = new RowReader(format);
    const problems: DatasetProblem[] = [];
    let rows = 0;
    readFileSync(file, 'utf8')
      .split('\n')
      .forEach((raw, index) => {
        const line = index + 1;
        if (raw.trim() === '') return;
        let json: unknown;
        try {
          json = JSON.parse(raw);
        } catch (error) {
          problems.push({ line, field: '(row)', message: `not valid JSON (${(error as Error).message})` });
          return;
        }
        if (typeof json !== 'object' || json === null || Array.isArray(json)) {
          problems.push({ line, field: '(row)', message: 'must be a JSON object' });
          return;
        }
        const read = reader.read(json as Record<string, unknown>, line);
        if ('problems' in read) {
          problems.push(...read.problems.map((p) => ({ line: p.line, field: p.field ?? null, message: p.message })));
          return;
        }
        rows += 1;
        // The file's format (prompt/completion, alpaca…), not the chat form rows are read into.
        formats[read.format] = (formats[read.format] ?? 0) + 1;
        if (preview.length < PREVIEW_ROWS) preview.push(json);
      });
    return { problems, rows };
  }

  private toDataset(row: DatasetRow, withPreview: boolean): Dataset {
    const stats = row.stats as Partial<Dataset['stats']> & { format?: DataFormat };
    return {
      id: row.id,
      object: 'dataset',
      filename: row.filename,
      bytes: row.bytes,
      sha256: row.sha256.trim(),
      format: stats.format ?? 'auto',
      created_at: unixSeconds(row.createdAt),
      stats: {
        rows: stats.rows ?? row.rows,
        bad_rows: stats.bad_rows ?? 0,
        tokens: stats.tokens ?? null,
        mean_tokens: stats.mean_tokens ?? null,
        max_tokens: stats.max_tokens ?? null,
        tokenized_with: stats.tokenized_with ?? null,
        formats: stats.formats ?? {},
      },
      ...(withPreview ? { preview: row.preview } : {}),
    };
  }
}
