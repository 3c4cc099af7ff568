/** Base models: local Hugging Face directories, checked with libs/formats before they are registered. */
import { existsSync, readFileSync, realpathSync, statSync } from 'node:fs';
import path from 'node:path';

import type { ListEnvelope, Model, ModelRegisterRequest, PageQuery } from '@expertune/contracts';
import { Model as ModelRow } from '@expertune/db';
import { expectedTensorShapes, loadModelConfig } from '@expertune/formats';
import { Inject, Injectable, Logger } from '@nestjs/common';
import { type DataSource, QueryFailedError } from 'typeorm';

import { ApiException } from '../common/api-exception.js';
import { findOr404, pageOf, unixSeconds } from '../common/pagination.js';
import { API_CONFIG, type ApiConfig } from '../config/api-config.js';
import { DATA_SOURCE } from '../database/database.module.js';

@Injectable()
export class ModelsService {
  /** EXPERTUNE_MODEL_ROOTS with their own symlinks resolved (a root that does not exist admits nothing). */
  private readonly roots: string[];

  constructor(
    @Inject(DATA_SOURCE) private readonly dataSource: DataSource,
    @Inject(API_CONFIG) config: ApiConfig,
  ) {
    this.roots = config.modelRoots.flatMap((root) => {
      try {
        return [realpathSync(root)];
      } catch {
        return [];
      }
    });
    if (config.modelRoots.length === 0)
      new Logger('ModelsService').warn(
        'EXPERTUNE_MODEL_ROOTS is not set: any directory readable by the API can be registered as a model',
      );
  }

  async register(request: ModelRegisterRequest): Promise<Model> {
    const dir = this.allowedDirectory(request.path);
    if (!existsSync(dir) || !statSync(dir).isDirectory())
      throw new ApiException(422, 'invalid_model', `${request.path} is not a directory on the API's machine`, 'path');
    let parameterCount: number;
    let config: Record<string, unknown>;
    try {
      const parsed = loadModelConfig(dir);
      parameterCount = [...expectedTensorShapes(parsed).values()].reduce(
        (sum, shape) => sum + shape.reduce((a, b) => a * b, 1),
        0,
      );
      config = JSON.parse(readFileSync(path.join(dir, 'config.json'), 'utf8')) as Record<string, unknown>;
    } catch (error) {
      throw new ApiException(422, 'invalid_model', (error as Error).message, 'path');
    }
    if (!existsSync(path.join(dir, 'tokenizer.json')))
      throw new ApiException(422, 'invalid_model', `no tokenizer.json in ${request.path}`, 'path');
    const name = request.name ?? path.basename(dir);
    try {
      const row = await this.dataSource.getRepository(ModelRow).save({ name, path: dir, config, parameterCount });
      return this.toModel(await this.requireRow(row.id), true);
    } catch (error) {
      if (error instanceof QueryFailedError && (error.driverError as { code?: string }).code === '23505')
        throw ApiException.conflict(
          'model_exists',
          `a model named ${JSON.stringify(name)} is registered already`,
          'name',
        );
      throw error;
    }
  }

  /**
   * The directory's real path, refused unless it lies under a configured root: `..` segments are
   * refused outright, and symlinks are resolved before the check so a link inside a root cannot
   * point out of it. The real path is what gets stored, so a link changed later changes nothing.
   */
  private allowedDirectory(requested: string): string {
    if (requested.split(/[\\/]/).includes('..'))
      throw new ApiException(
        400,
        'invalid_path',
        `model path ${JSON.stringify(requested)}: ".." is not allowed`,
        'path',
      );
    const resolved = path.resolve(requested);
    if (this.roots.length === 0 && !existsSync(resolved)) return resolved;
    let real: string;
    try {
      real = realpathSync(resolved);
    } catch {
      throw new ApiException(422, 'invalid_model', `${requested} is not a directory on the API's machine`, 'path');
    }
    if (this.roots.length > 0 && !this.roots.some((root) => real === root || real.startsWith(root + path.sep)))
      throw new ApiException(
        403,
        'model_path_not_allowed',
        `model path ${JSON.stringify(requested)} resolves outside the model roots (EXPERTUNE_MODEL_ROOTS)`,
        'path',
      );
    return real;
  }

  async list(query: PageQuery): Promise<ListEnvelope<Model>> {
    const builder = this.dataSource.getRepository(ModelRow).createQueryBuilder('model');
    return pageOf(builder, query, (row) => this.toModel(row, false));
  }

  async get(id: string): Promise<Model> {
    return this.toModel(await this.requireRow(id), true);
  }

  private requireRow(id: string): Promise<ModelRow> {
    return findOr404(this.dataSource.getRepository(ModelRow), id, 'model');
  }

  private toModel(row: ModelRow, withConfig: boolean): Model {
    const architectures = row.config.architectures;
    return {
      id: row.id,
      object: 'model',
      name: row.name,
      path: row.path,
      architecture: Array.isArray(architectures) && typeof architectures[0] === 'string' ? architectures[0] : null,
      parameter_count: row.parameterCount,
      created_at: unixSeconds(row.createdAt),
      ...(withConfig ? { config: row.config } : {}),
    };
  }
}
