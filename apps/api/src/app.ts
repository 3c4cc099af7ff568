/** Builds the Nest application (the server and the tests start it the same way). */
import 'reflect-metadata';

import type { LogLevel, ModuleMetadata } from '@nestjs/common';
import { NestFactory } from '@nestjs/core';
import type { NestExpressApplication } from '@nestjs/platform-express';
import { SwaggerModule } from '@nestjs/swagger';
import type { NextFunction, Request, Response } from 'express';

import { AppModule } from './app.module.js';
import { toApiException } from './common/all-exceptions.filter.js';
import { RedactingLogger } from './common/redacting-logger.js';
import { securityHeaders } from './common/security-headers.js';
import type { ApiConfig } from './config/api-config.js';
import { buildOpenApiDocument } from './openapi/openapi.document.js';

export interface CreateAppOptions {
  logger?: false | LogLevel[];
  /** Extra modules (tests mount probes beside the real routes). */
  imports?: ModuleMetadata['imports'];
}

export async function createApp(config: ApiConfig, options: CreateAppOptions = {}): Promise<NestExpressApplication> {
  // Our own body parsers: JSON bodies get a small limit, uploads are streamed by their controller.
  const app = await NestFactory.create<NestExpressApplication>(AppModule.forRoot(config, options.imports ?? []), {
    bodyParser: false,
    logger:
      options.logger === false ? false : new RedactingLogger({ logLevels: options.logger ?? ['error', 'warn', 'log'] }),
  });
  app.useBodyParser('json', { limit: config.jsonLimitBytes });
  app.enableShutdownHooks();
  app.disable('x-powered-by');
  app.use(securityHeaders(config.corsOrigins));
  // Errors raised by middleware before a route (body-parser's 413 and bad JSON) never reach Nest's filters.
  app.use((error: unknown, _request: Request, response: Response, next: NextFunction) => {
    const known = toApiException(error);
    if (!known || response.headersSent) return next(error);
    response.status(known.status).json(known.body());
  });
  // The docs page and /openapi.json are served from local swagger-ui assets (no network needed).
  SwaggerModule.setup('docs', app, buildOpenApiDocument(), { jsonDocumentUrl: 'openapi.json', raw: ['json'] });
  return app;
}
