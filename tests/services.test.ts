/**
 * scripts/services.mjs without touching this machine's services: the probes (a closed port is not
 * reachable; the running PostgreSQL and Redis are), ensureServices as a fast no-op when both answer
 * (nothing detected, nothing run), and the plans it would follow when they do not.
 */
import { createServer, type Socket } from 'node:net';
import { dirname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

import { beforeAll, describe, expect, it } from 'vitest';

const repoRoot = join(dirname(fileURLToPath(import.meta.url)), '..');

interface Endpoint {
  host: string;
  port: number;
  source: string;
}
interface Plan {
  action: 'start' | 'install' | 'fail';
  commands: string[][];
  packages?: string[];
  message: string;
}
interface Cluster {
  version: string;
  name: string;
  port: number;
  status: string;
}
interface SystemFacts {
  root: boolean;
  apt: boolean;
  service: boolean;
  postgres: { installed: boolean; versions: string[]; clusters: Cluster[] };
  redis: { installed: boolean; initScript: boolean };
}
interface ServicesModule {
  serviceEndpoints(env: Record<string, string | undefined>): { postgres: Endpoint; redis: Endpoint };
  probePostgres(endpoint: Endpoint, timeoutMs?: number): Promise<boolean>;
  probeRedis(endpoint: Endpoint, timeoutMs?: number): Promise<boolean>;
  planService(name: 'postgres' | 'redis', endpoint: Endpoint, system: SystemFacts): Plan;
  ensureServices(options: {
    postgres?: boolean;
    redis?: boolean;
    env?: Record<string, string | undefined>;
    log?: (line: string) => void;
    system?: () => SystemFacts;
    exec?: (cmd: string, args: string[]) => void;
    waitMs?: number;
  }): Promise<Record<string, string>>;
}

let services: ServicesModule;
beforeAll(async () => {
  services = (await import(pathToFileURL(join(repoRoot, 'scripts', 'services.mjs')).href)) as ServicesModule;
});

/** A port nothing listens on: bound, then closed. */
async function closedPort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as { port: number };
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

const facts = (overrides: Partial<SystemFacts> = {}): SystemFacts => ({
  root: true,
  apt: true,
  service: true,
  postgres: {
    installed: true,
    versions: ['15'],
    clusters: [{ version: '15', name: 'main', port: 5432, status: 'down' }],
  },
  redis: { installed: true, initScript: true },
  ...overrides,
});

describe('scripts/services.mjs', { timeout: 20_000 }, () => {
  it('reads host and port from DATABASE_URL and REDIS_URL, 127.0.0.1 by default', () => {
    expect(services.serviceEndpoints({})).toMatchObject({
      postgres: { host: '127.0.0.1', port: 5432 },
      redis: { host: '127.0.0.1', port: 6379 },
    });
    expect(
      services.serviceEndpoints({
        DATABASE_URL: 'postgres://u:p@db.internal:6543/x',
        REDIS_URL: 'redis://cache:7000/2',
      }),
    ).toMatchObject({
      postgres: { host: 'db.internal', port: 6543, source: 'from DATABASE_URL' },
      redis: { host: 'cache', port: 7000, source: 'from REDIS_URL' },
    });
  });

  it('a closed port is not reachable, for either probe', async () => {
    const port = await closedPort();
    const endpoint = { host: '127.0.0.1', port, source: 'test' };
    expect(await services.probePostgres(endpoint, 1000)).toBe(false);
    expect(await services.probeRedis(endpoint, 1000)).toBe(false);
  });

  it('a server that answers with something else is not taken for PostgreSQL or Redis', async () => {
    const sockets = new Set<Socket>();
    const server = createServer((socket) => {
      sockets.add(socket);
      socket.on('error', () => {});
      socket.end('HTTP/1.1 400 Bad Request\r\n\r\n');
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const endpoint = { host: '127.0.0.1', port: (server.address() as { port: number }).port, source: 'test' };
    try {
      expect(await services.probePostgres(endpoint, 1000)).toBe(false);
      expect(await services.probeRedis(endpoint, 1000)).toBe(false);
    } finally {
      for (const socket of sockets) socket.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    }
  });

  it('when PostgreSQL and Redis answer, ensureServices is a fast no-op: nothing detected, nothing run', async () => {
    const endpoints = services.serviceEndpoints(process.env);
    expect(await services.probePostgres(endpoints.postgres)).toBe(true);
    expect(await services.probeRedis(endpoints.redis)).toBe(true);
    const ran: string[] = [];
    const started = Date.now();
    const result = await services.ensureServices({
      postgres: true,
      redis: true,
      log: (line) => ran.push(`log ${line}`),
      system: () => {
        throw new Error('nothing to detect when both answer');
      },
      exec: (cmd, args) => ran.push([cmd, ...args].join(' ')),
    });
    expect(result).toEqual({ postgres: 'running', redis: 'running' });
    expect(ran).toEqual([]);
    expect(Date.now() - started).toBeLessThan(2000);
  });

  it('when a local service is down, it is started, installed or explained, never reconfigured if it exists', async () => {
    const port = await closedPort();
    const pg: Endpoint = { host: '127.0.0.1', port: 5432, source: 'test' };
    const redis: Endpoint = { host: '127.0.0.1', port: 6379, source: 'test' };

    expect(services.planService('postgres', pg, facts())).toMatchObject({
      action: 'start',
      commands: [['pg_ctlcluster', '15', 'main', 'start']],
    });
    expect(services.planService('redis', redis, facts())).toMatchObject({
      action: 'start',
      commands: [['service', 'redis-server', 'start']],
    });
    const noInit = services.planService(
      'redis',
      { ...redis, port },
      facts({ redis: { installed: true, initScript: false } }),
    );
    expect(noInit.commands[0]).toEqual(expect.arrayContaining(['redis-server', '--daemonize', 'yes', String(port)]));

    const bare = facts({
      postgres: { installed: false, versions: [], clusters: [] },
      redis: { installed: false, initScript: false },
    });
    expect(services.planService('postgres', pg, bare)).toMatchObject({ action: 'install', packages: ['postgresql'] });
    expect(services.planService('redis', redis, bare)).toMatchObject({ action: 'install', packages: ['redis-server'] });

    const user = services.planService('postgres', pg, { ...bare, root: false });
    expect(user.action).toBe('fail');
    expect(user.message).toContain('sudo apt-get install -y postgresql');
    expect(user.message).toContain('POSTGRES_HOST_AUTH_METHOD=trust');
    expect(services.planService('redis', redis, { ...bare, apt: false }).message).toContain(
      'sudo apt-get install -y redis-server',
    );
    expect(services.planService('postgres', pg, facts({ root: false })).message).toContain(
      'sudo pg_ctlcluster 15 main start',
    );

    const remote = services.planService(
      'postgres',
      { host: 'db.internal', port: 5432, source: 'from DATABASE_URL' },
      facts(),
    );
    expect(remote.action).toBe('fail');
    expect(remote.message).toMatch(/^PostgreSQL does not answer on db\.internal:5432 \(from DATABASE_URL\)/);
  });

  it('a service that stays down after its plan is a clear error, and failures name what to run', async () => {
    const port = await closedPort();
    const ran: string[] = [];
    const env = {
      DATABASE_URL: `postgres://postgres@127.0.0.1:${port}/expertune`,
      REDIS_URL: 'redis://127.0.0.1:6379',
    };
    // Installed, but no cluster on that port and not root: nothing is run, the message says what would be.
    await expect(
      services.ensureServices({
        postgres: true,
        env,
        system: () => facts({ root: false }),
        exec: (cmd, args) => ran.push([cmd, ...args].join(' ')),
      }),
    ).rejects.toThrow(
      new RegExp(`does not answer on 127\\.0\\.0\\.1:${port} .*sudo pg_createcluster 15 main --port ${port}`),
    );
    // A start command that does not bring it up: the error says so after the wait.
    await expect(
      services.ensureServices({
        postgres: true,
        env,
        log: () => {},
        system: () =>
          facts({
            postgres: {
              installed: true,
              versions: ['15'],
              clusters: [{ version: '15', name: 'x', port, status: 'down' }],
            },
          }),
        exec: (cmd, args) => ran.push([cmd, ...args].join(' ')),
        waitMs: 300,
      }),
    ).rejects.toThrow(`PostgreSQL was started but does not answer on 127.0.0.1:${port}`);
    expect(ran).toEqual([`pg_ctlcluster 15 x start`]);
  });
});
