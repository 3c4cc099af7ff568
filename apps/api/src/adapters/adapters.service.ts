/**
 * Exported adapters: `artifacts` rows of kind adapter whose storage key names the export
 * directory. Downloads stream a tar of that directory; single files are served by name, and
 * every name goes through the storage's key checks (no "..", no absolute paths, no symlink escapes).
 */
import { mkdtempSync, readdirSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';

import type { Adapter, ListEnvelope, PageQuery } from '@expertune/contracts';
import {
  Artifact,
  type ArtifactStorage,
  downloadTree,
  Job as JobRow,
  localPathOf,
  Model,
  StorageKeyError,
} from '@expertune/db';
import { Inject, Injectable } from '@nestjs/common';
import type { Readable } from 'node:stream';
import * as tar from 'tar';
import type { DataSource } from 'typeorm';

import { ApiException } from '../common/api-exception.js';
import { findOr404, pageOf, unixSeconds } from '../common/pagination.js';
import { DATA_SOURCE, STORAGE } from '../database/database.module.js';

@Injectable()
export class AdaptersService {
  constructor(
    @Inject(DATA_SOURCE) private readonly dataSource: DataSource,
    @Inject(STORAGE) private readonly storage: ArtifactStorage,
  ) {}

  async list(query: PageQuery): Promise<ListEnvelope<Adapter>> {
    const builder = this.dataSource
      .getRepository(Artifact)
      .createQueryBuilder('artifact')
      .where("artifact.kind = 'adapter'");
    return pageOf(builder, query, (row) => this.toAdapter(row, false));
  }

  async get(id: string): Promise<Adapter> {
    return this.toAdapter(await this.requireRow(id), true);
  }

  /** The export directory as a tar stream (regular files and directories only; links are left out). */
  async tarStream(id: string): Promise<{ stream: Readable; filename: string }> {
    const row = await this.requireRow(id);
    let dir: string;
    let cleanup = () => {};
    if (this.storage.path) dir = this.exportDir(row);
    else {
      // An object store has no directory to tar: copy the export to a temporary one first.
      const scratch = mkdtempSync(path.join(tmpdir(), 'expertune-adapter-'));
      cleanup = () => rmSync(scratch, { recursive: true, force: true });
      try {
        if ((await downloadTree(this.storage, row.storageKey, scratch)).length === 0)
          throw new ApiException(404, 'not_found', `the export directory of adapter ${row.id} is missing`, 'id');
      } catch (error) {
        cleanup();
        throw error;
      }
      dir = localPathOf(scratch, row.storageKey);
    }
    const stream = tar.create(
      {
        cwd: dir,
        portable: true,
        follow: false,
        filter: (_p, stat) => !('isSymbolicLink' in stat && stat.isSymbolicLink()),
      },
      ['.'],
    );
    stream.on('end', cleanup).on('error', cleanup).on('close', cleanup);
    return { stream: stream as unknown as Readable, filename: `${row.name.replace(/[^A-Za-z0-9._-]/g, '_')}.tar` };
  }

  /** One file of the export directory by its relative name. */
  async file(id: string, name: string): Promise<{ stream: Readable; filename: string; bytes: number }> {
    const row = await this.requireRow(id);
    const key = `${row.storageKey}/${name}`;
    let stat;
    try {
      stat = await this.storage.stat(key);
    } catch (error) {
      if (error instanceof StorageKeyError)
        throw new ApiException(
          400,
          'invalid_path',
          `file name ${JSON.stringify(name)} refused: ${error.reason}`,
          'name',
        );
      throw error;
    }
    if (!stat) throw new ApiException(404, 'not_found', `adapter ${id} has no file ${JSON.stringify(name)}`, 'name');
    return { stream: this.storage.get(key), filename: path.basename(name), bytes: stat.bytes };
  }

  private exportDir(row: Artifact): string {
    if (!this.storage.path) throw new ApiException(503, 'storage_unavailable', 'this storage has no local directories');
    let dir: string;
    try {
      dir = this.storage.path(row.storageKey);
    } catch (error) {
      if (error instanceof StorageKeyError)
        throw new ApiException(
          400,
          'invalid_path',
          `adapter ${row.id} has an unsafe storage key: ${error.reason}`,
          'id',
        );
      throw error;
    }
    try {
      if (!statSync(dir).isDirectory()) throw new Error('not a directory');
    } catch {
      throw new ApiException(404, 'not_found', `the export directory of adapter ${row.id} is missing`, 'id');
    }
    return dir;
  }

  private requireRow(id: string): Promise<Artifact> {
    return findOr404(this.dataSource.getRepository(Artifact), id, 'adapter', { kind: 'adapter' });
  }

  private async toAdapter(row: Artifact, withFiles: boolean): Promise<Adapter> {
    const job = row.jobId ? await this.dataSource.getRepository(JobRow).findOneBy({ id: row.jobId }) : null;
    const model = job ? await this.dataSource.getRepository(Model).findOneBy({ id: job.baseModelId }) : null;
    let files: string[] | undefined;
    if (withFiles) {
      try {
        files = this.storage.path
          ? listFiles(this.exportDir(row))
          : (await this.storage.list(row.storageKey)).map((key) => key.slice(row.storageKey.length + 1));
      } catch {
        files = [];
      }
    }
    return {
      id: row.id,
      object: 'adapter',
      job_id: row.jobId ?? '',
      method: job?.method ?? 'unknown',
      base_model: model?.name ?? job?.baseModelId ?? 'unknown',
      layout: job?.method === 'lora' ? 'peft' : 'expertune-mole',
      bytes: row.bytes,
      sha256: row.sha256?.trim() || null,
      created_at: unixSeconds(row.createdAt),
      ...(files ? { files } : {}),
    };
  }
}

function listFiles(dir: string, prefix = ''): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((entry) => {
    const relative = prefix ? `${prefix}/${entry.name}` : entry.name;
    if (entry.isDirectory()) return listFiles(path.join(dir, entry.name), relative);
    return entry.isFile() ? [relative] : [];
  });
}
