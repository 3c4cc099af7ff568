// PostgreSQL and Redis for `npm test` and `npm run demo` (docs/services.md). For each service asked
// for: nothing to do when it answers (DATABASE_URL's / REDIS_URL's host and port, default 127.0.0.1);
// else Debian's package is started when installed but stopped; else, as root with apt-get, it is
// installed (PostgreSQL with trust auth on loopback, as the tests assume) and started; else an error
// says exactly what to run. Services that already answer are never touched.
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { createConnection } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export const DEFAULT_DATABASE_URL = 'postgres://postgres@127.0.0.1:5432/expertune';
export const DEFAULT_REDIS_URL = 'redis://127.0.0.1:6379';

const LOCAL_HOSTS = new Set(['127.0.0.1', 'localhost', '::1', '[::1]']);
const DOCKER_POSTGRES =
  'docker run -d --name expertune-postgres -p 5432:5432 -e POSTGRES_HOST_AUTH_METHOD=trust postgres:15';
const DOCKER_REDIS = 'docker run -d --name expertune-redis -p 6379:6379 redis:7';
const TRUST_MARKER = '# expertune (scripts/services.mjs): trust on loopback for local development';

/** Host and port of PostgreSQL (DATABASE_URL) and Redis (REDIS_URL), with where they came from. */
export function serviceEndpoints(env = process.env) {
  const endpoint = (variable, fallback, defaultPort) => {
    const text = env[variable] || fallback;
    let url;
    try {
      url = new URL(text);
    } catch {
      throw new Error(`${variable} is not a URL: ${JSON.stringify(text)}`);
    }
    return {
      host: url.hostname || '127.0.0.1',
      port: Number(url.port || defaultPort),
      source: env[variable] ? `from ${variable}` : `the default; ${variable} is unset`,
    };
  };
  return {
    postgres: endpoint('DATABASE_URL', DEFAULT_DATABASE_URL, 5432),
    redis: endpoint('REDIS_URL', DEFAULT_REDIS_URL, 6379),
  };
}

/** Connects to host:port, writes `request`, and resolves with whether the first reply byte passes `accept`. */
function ask({ host, port }, request, accept, timeoutMs) {
  return new Promise((resolve) => {
    const socket = createConnection({ host: host.replace(/^\[(.*)\]$/, '$1'), port });
    const done = (answer) => {
      socket.destroy();
      resolve(answer);
    };
    socket.setTimeout(timeoutMs, () => done(false));
    socket.once('error', () => done(false));
    socket.once('connect', () => socket.write(request));
    socket.once('data', (data) => done(accept(data[0])));
    socket.once('end', () => done(false));
  });
}

/** Whether a PostgreSQL server answers on host:port (an SSLRequest, answered 'S' or 'N'). */
export function probePostgres(endpoint, timeoutMs = 1500) {
  const sslRequest = Buffer.from([0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f]);
  return ask(endpoint, sslRequest, (byte) => byte === 0x53 || byte === 0x4e, timeoutMs);
}

/** Whether a Redis server answers on host:port (PING, answered `+PONG`, or `-NOAUTH …` when it wants a password). */
export function probeRedis(endpoint, timeoutMs = 1500) {
  return ask(endpoint, 'PING\r\n', (byte) => byte === 0x2b || byte === 0x2d, timeoutMs);
}

function hasCommand(name) {
  return spawnSync('sh', ['-c', `command -v ${name}`], { stdio: 'ignore' }).status === 0;
}

/** What this machine has: root, apt-get, Debian's PostgreSQL clusters, redis-server. */
export function detectSystem() {
  const pgRoot = '/usr/lib/postgresql';
  const pgVersions = existsSync(pgRoot)
    ? readdirSync(pgRoot)
        .filter((version) => existsSync(join(pgRoot, version, 'bin', 'postgres')))
        .sort((a, b) => Number(a) - Number(b))
    : [];
  const clusters = [];
  if (hasCommand('pg_lsclusters')) {
    const listed = spawnSync('pg_lsclusters', ['--no-header'], { encoding: 'utf8' });
    for (const line of (listed.stdout ?? '').split('\n')) {
      const [version, name, port, status] = line.trim().split(/\s+/);
      if (version && name && port) clusters.push({ version, name, port: Number(port), status });
    }
  }
  return {
    root: typeof process.getuid === 'function' && process.getuid() === 0,
    apt: hasCommand('apt-get'),
    service: hasCommand('service'),
    postgres: { installed: pgVersions.length > 0 && hasCommand('pg_ctlcluster'), versions: pgVersions, clusters },
    redis: { installed: hasCommand('redis-server'), initScript: existsSync('/etc/init.d/redis-server') },
  };
}

/**
 * What to do about a service that does not answer, given `system` (as detectSystem returns):
 * `{action: 'start' | 'install' | 'fail', commands: string[][], message}`. Pure, for the tests.
 */
export function planService(name, endpoint, system) {
  const where = `${endpoint.host}:${endpoint.port} (${endpoint.source})`;
  const label = name === 'postgres' ? 'PostgreSQL' : 'Redis';
  const docker = name === 'postgres' ? DOCKER_POSTGRES : DOCKER_REDIS;
  const variable = name === 'postgres' ? 'DATABASE_URL' : 'REDIS_URL';
  const dockerHere = docker.replace(/\d+:(\d+)/, `${endpoint.port}:$1`);
  const fail = (why, howTo) => ({
    action: 'fail',
    commands: [],
    message:
      `${label} does not answer on ${where} and ${why}. ${howTo} ` +
      `With Docker instead: \`${dockerHere}\`; or point ${variable} at a running server (docs/services.md).`,
  });
  if (!LOCAL_HOSTS.has(endpoint.host))
    return fail('is not on this machine', `Start that server, or unset ${variable} to use one on 127.0.0.1.`);
  const sudo = system.root ? '' : 'sudo ';

  if (name === 'postgres') {
    const { installed, versions, clusters } = system.postgres;
    if (installed) {
      const cluster = clusters.find((candidate) => candidate.port === endpoint.port);
      if (cluster) {
        const start = ['pg_ctlcluster', cluster.version, cluster.name, 'start'];
        if (!system.root) return fail('is stopped', `Start it: \`sudo ${start.join(' ')}\`.`);
        return {
          action: 'start',
          commands: [start],
          message: `starting PostgreSQL ${cluster.version}/${cluster.name}`,
        };
      }
      const version = versions.at(-1);
      const create = ['pg_createcluster', version, 'main', '--port', String(endpoint.port), '--start'];
      if (clusters.length > 0 || !system.root)
        return fail(
          clusters.length > 0
            ? `Debian's clusters are on other ports (${clusters.map((c) => `${c.version}/${c.name}:${c.port}`).join(', ')})`
            : 'PostgreSQL has no cluster',
          `Create one: \`${sudo}${create.join(' ')}\` and allow trust auth on 127.0.0.1 (docs/services.md).`,
        );
      return {
        action: 'start',
        commands: [create],
        newCluster: { version, name: 'main' },
        message: `creating PostgreSQL cluster ${version}/main on port ${endpoint.port}`,
      };
    }
    if (!system.root || !system.apt)
      return fail(
        'is not installed',
        `Install and start it: \`sudo apt-get update && sudo apt-get install -y postgresql && sudo service postgresql start\`, ` +
          'then allow trust auth on 127.0.0.1 (docs/services.md).',
      );
    return { action: 'install', packages: ['postgresql'], commands: [], message: 'installing PostgreSQL with apt-get' };
  }

  if (system.redis.installed) {
    const useService = system.redis.initScript && system.service && endpoint.port === 6379;
    const start = useService
      ? ['service', 'redis-server', 'start']
      : [
          'redis-server',
          '--port',
          String(endpoint.port),
          '--bind',
          endpoint.host === 'localhost' ? '127.0.0.1' : endpoint.host.replace(/^\[(.*)\]$/, '$1'),
          '--daemonize',
          'yes',
          '--dir',
          join(tmpdir(), 'expertune-redis'),
        ];
    if (useService && !system.root) return fail('is stopped', `Start it: \`sudo service redis-server start\`.`);
    return { action: 'start', commands: [start], message: 'starting Redis' };
  }
  if (!system.root || !system.apt)
    return fail(
      'is not installed',
      'Install and start it: `sudo apt-get update && sudo apt-get install -y redis-server && sudo service redis-server start`.',
    );
  return { action: 'install', packages: ['redis-server'], commands: [], message: 'installing Redis with apt-get' };
}

/** Puts trust-auth lines for loopback at the top of a cluster's pg_hba.conf (only for clusters made here). */
function trustLoopback({ version, name }, log) {
  const file = `/etc/postgresql/${version}/${name}/pg_hba.conf`;
  const text = readFileSync(file, 'utf8');
  if (text.includes(TRUST_MARKER)) return;
  log(`allowing trust auth on 127.0.0.1 and ::1 in ${file} (the development default DATABASE_URL has no password)`);
  writeFileSync(file, `${TRUST_MARKER}\nhost all all 127.0.0.1/32 trust\nhost all all ::1/128 trust\n\n${text}`);
}

async function waitUntil(probe, timeoutMs) {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (await probe()) return true;
    await new Promise((resolve) => setTimeout(resolve, 250));
  }
  return probe();
}

/**
 * Makes PostgreSQL and/or Redis answer (see the top of this file). Resolves with what it did
 * (`{postgres: 'running' | 'started' | 'installed', redis: …}`); rejects with a message saying what to run.
 */
export async function ensureServices({
  postgres = false,
  redis = false,
  env = process.env,
  log = console.log,
  system: getSystem = detectSystem,
  exec = (cmd, args) =>
    execFileSync(cmd, args, { stdio: 'inherit', env: { ...env, DEBIAN_FRONTEND: 'noninteractive' } }),
  waitMs = 30_000,
} = {}) {
  const endpoints = serviceEndpoints(env);
  const probes = { postgres: probePostgres, redis: probeRedis };
  const wanted = [postgres && 'postgres', redis && 'redis'].filter(Boolean);
  const result = {};
  const down = [];
  for (const name of wanted) {
    if (await probes[name](endpoints[name])) result[name] = 'running';
    else down.push(name);
  }
  if (down.length === 0) return result;

  let system = getSystem();
  let plans = Object.fromEntries(down.map((name) => [name, planService(name, endpoints[name], system)]));
  const failures = down.filter((name) => plans[name].action === 'fail').map((name) => plans[name].message);
  if (failures.length > 0) throw new Error(failures.join('\n'));

  const toInstall = down.filter((name) => plans[name].action === 'install');
  if (toInstall.length > 0) {
    const packages = toInstall.flatMap((name) => plans[name].packages);
    log(`Installing ${packages.join(', ')} with apt-get (needed by the job API's tests and demo)…`);
    exec('apt-get', ['update', '-qq']);
    exec('apt-get', ['install', '-y', '-qq', ...packages]);
    const before = new Set(system.postgres.clusters.map((c) => `${c.version}/${c.name}`));
    system = getSystem();
    plans = Object.fromEntries(down.map((name) => [name, planService(name, endpoints[name], system)]));
    if (toInstall.includes('postgres')) {
      // The package made a cluster (and may have started it): ours, so give it the trust auth the tests assume.
      for (const cluster of system.postgres.clusters) {
        if (before.has(`${cluster.version}/${cluster.name}`) || cluster.port !== endpoints.postgres.port) continue;
        trustLoopback(cluster, log);
        if (cluster.status === 'online') exec('pg_ctlcluster', [cluster.version, cluster.name, 'reload']);
      }
    }
  }

  for (const name of down) {
    const plan = plans[name];
    if (await probes[name](endpoints[name])) {
      result[name] = toInstall.includes(name) ? 'installed' : 'running';
      continue;
    }
    if (plan.action !== 'start') throw new Error(plan.message);
    log(`${plan.message} (${endpoints[name].host}:${endpoints[name].port})…`);
    if (name === 'redis') mkdirSync(join(tmpdir(), 'expertune-redis'), { recursive: true });
    for (const [cmd, ...args] of plan.commands) exec(cmd, args);
    if (plan.newCluster) {
      trustLoopback(plan.newCluster, log);
      exec('pg_ctlcluster', [plan.newCluster.version, plan.newCluster.name, 'reload']);
    }
    if (!(await waitUntil(() => probes[name](endpoints[name]), waitMs))) {
      const logs = name === 'postgres' ? '/var/log/postgresql/' : '/var/log/redis/';
      throw new Error(
        `${name === 'postgres' ? 'PostgreSQL' : 'Redis'} was started but does not answer on ` +
          `${endpoints[name].host}:${endpoints[name].port} after ${Math.round(waitMs / 1000)} s; see its log in ${logs}.`,
      );
    }
    result[name] = toInstall.includes(name) ? 'installed' : 'started';
  }
  return result;
}
