/** Starts the real Nest app on an ephemeral port, in-process, for tests that talk HTTP with fetch. */
import type { AddressInfo } from 'node:net';

import type { ModuleMetadata } from '@nestjs/common';
import type { NestExpressApplication } from '@nestjs/platform-express';

import { createApp } from '../src/app.js';
import { type ApiConfig, loadApiConfig } from '../src/config/api-config.js';

export interface RunningApi {
  app: NestExpressApplication;
  baseUrl: string;
  config: ApiConfig;
  close(): Promise<void>;
}

export async function startApi(
  overrides: Partial<ApiConfig> = {},
  imports: ModuleMetadata['imports'] = [],
): Promise<RunningApi> {
  const config: ApiConfig = { ...loadApiConfig(process.env), port: 0, host: '127.0.0.1', ...overrides };
  // Errors only: a failing test shows the server's side of a 500.
  const app = await createApp(config, {
    logger: process.env.EXPERTUNE_API_TEST_LOG ? ['error', 'warn'] : false,
    imports,
  });
  await app.listen(0, '127.0.0.1');
  const address = app.getHttpServer().address() as AddressInfo;
  return {
    app,
    config,
    baseUrl: `http://127.0.0.1:${address.port}`,
    close: () => app.close(),
  };
}

/** A TCP port nothing listens on (for "service down" cases). */
export const CLOSED_PORT = 1;
