/**
 * The deployment files (infra/) checked by tools, since no Docker daemon or cluster runs here:
 * - infra/compose.yaml against the official Compose Specification JSON schema (vendored in
 *   infra/schemas/, its source in infra/schemas/README.md) with ajv, plus what the schema cannot
 *   say (dependencies, healthchecks, the GPU profile);
 * - infra/k8s rendered by kustomize (`kubectl kustomize`, or a `kustomize` binary) per overlay,
 *   every object validated against the Kubernetes and KEDA schemas of kubernetes-models, plus
 *   the deployment's own rules (probes, GPU requests, grace periods, the queue keys KEDA reads,
 *   checked against a real BullMQ queue on Redis);
 * - infra/docker/*.Dockerfile linted for structure: multi-stage, every base image pinned by tag
 *   and digest, a non-root USER and a HEALTHCHECK in the final stage.
 * Each check is also run on a broken copy, so that a check that cannot fail fails the test.
 */
import { execFileSync } from 'node:child_process';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';

import { DEFAULT_QUEUE_PREFIX, trainQueueName } from '@expertune/contracts';
import { Ajv, type ErrorObject } from 'ajv';
import { Queue } from 'bullmq';
import { Redis } from 'ioredis';
import { parse, parseAllDocuments } from 'yaml';
import { describe, expect, it } from 'vitest';

import { REDIS_URL, repoRoot } from './helpers.js';

const infra = join(repoRoot, 'infra');
const read = (...parts: string[]) => readFileSync(join(infra, ...parts), 'utf8');

type Json = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any

// ------------------------------------------------------------------------------------------------
// Compose

// Draft-07, ajv's default; the file names it by its https URL, which ajv only knows as http.
const { $schema: _draft, ...composeSchema } = JSON.parse(read('schemas', 'compose-spec.json')) as Json;
// The schema uses formats ajv does not know (duration …); their strings are checked by Compose itself.
const validateCompose = new Ajv({ allErrors: true, strict: false, validateFormats: false }).compile(composeSchema);

function composeErrors(document: unknown): string[] {
  return validateCompose(document) ? [] : (validateCompose.errors ?? []).map(formatError);
}

const formatError = (error: ErrorObject) =>
  `${error.instancePath || '/'} ${error.message} ${JSON.stringify(error.params)}`;

/** The compose file with anchors and `<<` merge keys resolved, as `docker compose config` sees it. */
const loadCompose = (): Json => parse(read('compose.yaml'), { merge: true }) as Json;

describe('infra/compose.yaml', () => {
  it('is valid against the Compose Specification schema, and the schema catches a broken file', () => {
    const compose = loadCompose();
    expect(composeErrors(compose)).toEqual([]);

    const broken = loadCompose();
    broken.services.api.depends_on.migrate.condition = 'service_finished';
    broken.services.worker.stop_grace_period = { minutes: 10 };
    broken.volumes.artifacts = 'not-a-volume';
    const errors = composeErrors(broken);
    expect(errors.some((e) => e.includes('/services/api/depends_on'))).toBe(true);
    expect(errors.some((e) => e.includes('/services/worker/stop_grace_period'))).toBe(true);
    expect(errors.some((e) => e.includes('/volumes/artifacts'))).toBe(true);
  });

  it('starts Postgres and Redis healthy, migrates once, then the API, console and a CPU worker', () => {
    const { services, volumes } = loadCompose();
    expect(Object.keys(services).sort()).toEqual([
      'api',
      'migrate',
      'postgres',
      'redis',
      'web',
      'worker',
      'worker-cuda',
    ]);
    for (const [name, service] of Object.entries<Json>(services)) {
      for (const [dependency, { condition }] of Object.entries<Json>(service.depends_on ?? {})) {
        expect(services[dependency], `${name} depends on ${dependency}`).toBeDefined();
        // A service_healthy condition on a service without a healthcheck (in compose or its image) never becomes true.
        if (condition === 'service_healthy') {
          const image = services[dependency].build?.dockerfile as string | undefined;
          const imageHasHealthcheck = image
            ? /^HEALTHCHECK /m.test(readFileSync(join(repoRoot, image), 'utf8'))
            : false;
          expect(
            services[dependency].healthcheck || imageHasHealthcheck,
            `${dependency} has a healthcheck`,
          ).toBeTruthy();
        }
      }
      if (service.build)
        expect(existsSync(join(repoRoot, service.build.dockerfile)), service.build.dockerfile).toBe(true);
      if (!service.build) expect(service.image, `${name}: a pinned image`).toMatch(/^[^@]+:[^@]+@sha256:[0-9a-f]{64}$/);
    }
    expect(services.migrate.restart).toBe('no');
    expect(services.migrate.command).toEqual(['node', 'libs/db/bin/migrate.js']);
    expect(services.migrate.environment.EXPERTUNE_BOOTSTRAP_API_KEY).toBe('${EXPERTUNE_BOOTSTRAP_API_KEY:-}');
    expect(services.api.depends_on.migrate.condition).toBe('service_completed_successfully');
    expect(services.worker.depends_on.migrate.condition).toBe('service_completed_successfully');
    expect(services.worker.environment.EXPERTUNE_ACCELERATOR).toBe('cpu');
    expect(services.worker.profiles).toBeUndefined();
    // Postgres data and the artifacts the API and the workers share survive `down`.
    expect(Object.keys(volumes)).toEqual(expect.arrayContaining(['postgres-data', 'artifacts']));
    expect(services.postgres.volumes).toContain('postgres-data:/var/lib/postgresql/data');
    for (const name of ['api', 'worker', 'worker-cuda']) expect(services[name].volumes).toContain('artifacts:/data');
  });

  it('has a gpu profile whose CUDA worker asks for an NVIDIA GPU, and workers get time to checkpoint', () => {
    const { services } = loadCompose();
    const gpu = services['worker-cuda'];
    expect(gpu.profiles).toEqual(['gpu']);
    expect(gpu.deploy.resources.reservations.devices).toEqual([{ driver: 'nvidia', count: 1, capabilities: ['gpu'] }]);
    expect(gpu.environment.EXPERTUNE_ACCELERATOR).toBe('cuda');
    expect(services.api.environment.EXPERTUNE_ACCELERATORS.split(',')).toEqual(['cpu', 'cuda']);
    for (const name of ['worker', 'worker-cuda']) {
      expect(services[name].stop_signal).toBe('SIGTERM');
      expect(services[name].stop_grace_period).toBe('10m');
    }
  });
});

// ------------------------------------------------------------------------------------------------
// Kubernetes

/** The kustomize renderer this machine has: kubectl's built-in one, or a standalone binary. */
function findKustomizer(): string[] | null {
  for (const command of [
    ['kubectl', 'kustomize'],
    ['kustomize', 'build'],
  ]) {
    try {
      execFileSync(command[0]!, command[0] === 'kubectl' ? ['version', '--client'] : ['version'], { stdio: 'pipe' });
      return command;
    } catch {
      // not installed
    }
  }
  return null;
}
const kustomizer = findKustomizer();

function render(overlay: string): Json[] {
  const [command, ...args] = kustomizer!;
  const output = execFileSync(command!, [...args, join(infra, 'k8s', overlay)], { encoding: 'utf8', stdio: 'pipe' });
  return parseAllDocuments(output).map((document) => document.toJS() as Json);
}

/** The validating model classes of kubernetes-models (Kubernetes) and @kubernetes-models/keda, by apiVersion/kind. */
async function modelFor(
  apiVersion: string,
  kind: string,
): Promise<(new (data: Json) => { validate(): void }) | undefined> {
  const modules: Record<string, () => Promise<Json>> = {
    v1: () => import('kubernetes-models/v1'),
    'apps/v1': () => import('kubernetes-models/apps/v1'),
    'batch/v1': () => import('kubernetes-models/batch/v1'),
    'policy/v1': () => import('kubernetes-models/policy/v1'),
    'keda.sh/v1alpha1': () => import('@kubernetes-models/keda/keda.sh/v1alpha1'),
  };
  const load = modules[apiVersion];
  return load ? ((await load())[kind] as never) : undefined;
}

async function schemaErrors(object: Json): Promise<string | null> {
  const Model = await modelFor(object.apiVersion, object.kind);
  if (!Model) return `no schema for ${object.apiVersion} ${object.kind}`;
  try {
    new Model(object).validate();
    return null;
  } catch (error) {
    return `${object.kind}/${object.metadata?.name}: ${(error as Error).message}`;
  }
}

const byKind = (objects: Json[], kind: string) => objects.filter((o) => o.kind === kind);
const named = (objects: Json[], kind: string, name: string) =>
  objects.find((o) => o.kind === kind && o.metadata.name === name);
const envOf = (container: Json, name: string) =>
  (container.env as Json[] | undefined)?.find((e) => e.name === name)?.value as string | undefined;

/** The deployment's own rules, for one rendered overlay. */
function checkDeployment(objects: Json[]): void {
  const config = named(objects, 'ConfigMap', 'expertune-config')!;
  expect(config, 'ConfigMap expertune-config').toBeDefined();
  const prefix = config.data.EXPERTUNE_QUEUE_PREFIX as string;
  const accelerators = (config.data.EXPERTUNE_ACCELERATORS as string).split(',');
  expect(prefix).toBe(DEFAULT_QUEUE_PREFIX);

  for (const deployment of byKind(objects, 'Deployment')) {
    const pod = deployment.spec.template.spec;
    const name = deployment.metadata.name as string;
    expect(pod.securityContext.runAsNonRoot, `${name} runs as non-root`).toBe(true);
    expect(pod.securityContext.runAsUser, name).toBeGreaterThan(0);
    for (const container of pod.containers as Json[]) {
      expect(container.image, `${name}: image`).toBeTruthy();
      expect(container.securityContext.allowPrivilegeEscalation, name).toBe(false);
      // The console only needs the API's address; the others read the settings and credentials.
      if (name === 'expertune-web') continue;
      const refs = (container.envFrom as Json[]).map((ref) => ref.secretRef?.name ?? ref.configMapRef?.name);
      expect(refs, name).toEqual(['expertune-config', 'expertune-secrets']);
    }
    // A PodDisruptionBudget covers every Deployment's pods.
    const pdb = byKind(objects, 'PodDisruptionBudget').find((budget) =>
      Object.entries<string>(budget.spec.selector.matchLabels).every(
        ([label, value]) => deployment.spec.template.metadata.labels[label] === value,
      ),
    );
    expect(pdb, `a PodDisruptionBudget for ${name}`).toBeDefined();
  }

  for (const name of ['expertune-api', 'expertune-web']) {
    const container = named(objects, 'Deployment', name)!.spec.template.spec.containers[0];
    expect(container.readinessProbe, `${name} readiness`).toBeDefined();
    expect(container.livenessProbe, `${name} liveness`).toBeDefined();
    expect(named(objects, 'Service', name), `Service ${name}`).toBeDefined();
  }
  expect(named(objects, 'Job', 'expertune-migrate')!.spec.template.spec.containers[0].command).toEqual([
    'node',
    'libs/db/bin/migrate.js',
  ]);

  const workers = byKind(objects, 'Deployment').filter(
    (d) => d.metadata.labels['app.kubernetes.io/name'] === 'expertune-worker',
  );
  expect(workers.length).toBeGreaterThanOrEqual(1);
  for (const worker of workers) {
    const name = worker.metadata.name as string;
    const pod = worker.spec.template.spec;
    const container = pod.containers[0];
    const accelerator = envOf(container, 'EXPERTUNE_ACCELERATOR')!;
    expect(worker.metadata.labels['expertune.dev/accelerator'], name).toBe(accelerator);
    expect(accelerators, `the API accepts jobs for ${accelerator}`).toContain(accelerator);
    // Long enough for the step in flight, a checkpoint and its upload (docs/deploy.md).
    expect(pod.terminationGracePeriodSeconds, `${name} grace period`).toBeGreaterThanOrEqual(600);
    expect(container.livenessProbe, `${name}: no liveness probe that would kill a training step`).toBeUndefined();
    const gpu = accelerator !== 'cpu';
    expect(container.resources.limits['nvidia.com/gpu'], `${name} GPU limit`).toBe(gpu ? 1 : undefined);
    expect(container.resources.requests['nvidia.com/gpu'], `${name} GPU request`).toBe(gpu ? 1 : undefined);
    expect(container.image, name).toMatch(gpu ? /worker-cuda/ : /worker-cpu/);

    const scaler = byKind(objects, 'ScaledObject').find((s) => s.spec.scaleTargetRef.name === name);
    expect(scaler, `a ScaledObject for ${name}`).toBeDefined();
    const lists = Object.fromEntries((scaler!.spec.triggers as Json[]).map((t) => [t.name, t]));
    for (const state of ['wait', 'active']) {
      expect(lists[state].type).toBe('redis');
      expect(lists[state].metadata.listName).toBe(`${prefix}:${trainQueueName(accelerator)}:${state}`);
      expect(config.data[lists[state].metadata.addressFromEnv], 'the Redis address KEDA reads').toMatch(/^[^/:]+:\d+$/);
    }
    expect(scaler!.spec.advanced.scalingModifiers.formula).toBe('wait + active');
  }
}

describe('infra/k8s', () => {
  for (const overlay of ['overlays/dev', 'overlays/prod']) {
    it.skipIf(!kustomizer)(
      `${overlay} renders, and every object is valid against the Kubernetes and KEDA schemas`,
      async () => {
        const objects = render(overlay);
        expect(objects.length).toBeGreaterThan(10);
        const errors = (await Promise.all(objects.map(schemaErrors))).filter(Boolean);
        expect(errors).toEqual([]);
        checkDeployment(objects);
      },
    );
  }

  it.skipIf(!kustomizer)(
    'dev runs the CPU class only with its own credentials; prod has both classes and no Secret values',
    () => {
      const dev = render('overlays/dev');
      expect(
        byKind(dev, 'Deployment')
          .map((d) => d.metadata.name)
          .sort(),
      ).toEqual(['expertune-api', 'expertune-web', 'expertune-worker-cpu']);
      expect(named(dev, 'Secret', 'expertune-secrets')!.stringData.DATABASE_URL).not.toContain('replace-me');

      const prod = render('overlays/prod');
      expect(byKind(prod, 'Secret')).toEqual([]);
      const workerClasses = byKind(prod, 'Deployment')
        .map((d) => d.metadata.labels['expertune.dev/accelerator'])
        .filter(Boolean)
        .sort();
      expect(workerClasses).toEqual(['cpu', 'h100']);
      for (const deployment of byKind(prod, 'Deployment'))
        expect(deployment.spec.template.spec.containers[0].image).toMatch(
          /^registry\.example\.com\/expertune\/[a-z-]+:\d+\.\d+\.\d+$/,
        );
      expect(new Set(prod.map((o) => o.metadata.namespace))).toEqual(new Set(['expertune']));
    },
  );

  it('validates the base files one by one (also where no kustomize renderer is installed), and catches broken objects', async () => {
    const base = join(infra, 'k8s', 'base');
    const files = readdirSync(base).filter((file) => file.endsWith('.yaml') && file !== 'kustomization.yaml');
    const listed = (parse(readFileSync(join(base, 'kustomization.yaml'), 'utf8')) as Json).resources as string[];
    expect(listed.sort()).toEqual(files.sort());
    const objects = files.flatMap((file) =>
      parseAllDocuments(readFileSync(join(base, file), 'utf8')).map((document) => document.toJS() as Json),
    );
    expect((await Promise.all(objects.map(schemaErrors))).filter(Boolean)).toEqual([]);
    checkDeployment(objects);

    const deployment = structuredClone(named(objects, 'Deployment', 'expertune-api')!);
    deployment.spec.replicas = 'two';
    deployment.spec.template.spec.containers[0].ports[0].containerPort = 'http';
    expect(await schemaErrors(deployment)).toMatch(
      /replicas must be integer.*containerPort must be integer|containerPort must be integer.*replicas must be integer/,
    );
    const scaler = structuredClone(byKind(objects, 'ScaledObject')[0]!);
    delete scaler.spec.scaleTargetRef;
    expect(await schemaErrors(scaler)).toMatch(/must have required property scaleTargetRef/);

    const gpuless = structuredClone(objects);
    delete named(gpuless, 'Deployment', 'expertune-worker-h100')!.spec.template.spec.containers[0].resources.limits[
      'nvidia.com/gpu'
    ];
    expect(() => checkDeployment(gpuless)).toThrow(/GPU limit/);
    const wrongList = structuredClone(objects);
    named(wrongList, 'ScaledObject', 'expertune-worker-cpu')!.spec.triggers[0].metadata.listName =
      'bull:train-cpu:wait';
    expect(() => checkDeployment(wrongList)).toThrow(/expertune:train-cpu:wait/);
  });

  it('scales on the keys BullMQ really uses: a waiting job is one entry of the LIST <prefix>:train-<class>:wait', async () => {
    const prefix = `expertune-infra-${process.pid}-${Date.now()}`;
    const queue = new Queue(trainQueueName('cpu'), { prefix, connection: { url: REDIS_URL } });
    const redis = new Redis(REDIS_URL);
    try {
      await queue.add('train', { jobId: 'a' }, { jobId: 'a' });
      await queue.add('train', { jobId: 'b' }, { jobId: 'b' });
      const key = `${prefix}:${trainQueueName('cpu')}:wait`;
      // KEDA's redis scaler reads LLEN, which only works on a list.
      expect(await redis.type(key)).toBe('list');
      expect(await redis.llen(key)).toBe(2);
    } finally {
      await queue.obliterate({ force: true });
      await queue.close();
      redis.disconnect();
    }
  });
});

// ------------------------------------------------------------------------------------------------
// Dockerfiles

interface Instruction {
  keyword: string;
  args: string;
}

/** The instructions of a Dockerfile: comments dropped, `\` continuations joined. */
function instructions(text: string): Instruction[] {
  const joined = text
    .split('\n')
    .filter((line) => !/^\s*#/.test(line))
    .join('\n')
    .replace(/\\\n/g, ' ');
  return joined
    .split('\n')
    .map((line) => line.trim())
    .filter(Boolean)
    .map((line) => {
      const [keyword, ...rest] = line.split(/\s+/);
      return { keyword: keyword!.toUpperCase(), args: rest.join(' ') };
    });
}

const PINNED = /^[a-z0-9./-]+(:[A-Za-z0-9._-]+)@sha256:[0-9a-f]{64}$/;

/** What is wrong with a Dockerfile, as messages; [] when nothing is. */
function lintDockerfile(text: string): string[] {
  const problems: string[] = [];
  const all = instructions(text);
  const args = new Map<string, string>();
  const stages: { name: string | null; body: Instruction[] }[] = [];
  for (const instruction of all) {
    if (instruction.keyword === 'ARG' && stages.length === 0) {
      const [name, value] = instruction.args.split(/=(.*)/s);
      if (value !== undefined) args.set(name!, value.replace(/^"|"$/g, ''));
    } else if (instruction.keyword === 'FROM') {
      const [image, as, name] = instruction.args.replace(/--platform=\S+\s+/, '').split(/\s+/);
      const resolved = image!.replace(
        /^\$\{(\w+)\}$|^\$(\w+)$/,
        (_m, a: string, b: string) => args.get(a ?? b) ?? image!,
      );
      const earlierStage = stages.some((stage) => stage.name === resolved);
      if (!earlierStage && !PINNED.test(resolved))
        problems.push(`FROM ${image}: not pinned by tag and digest (${resolved})`);
      stages.push({ name: as?.toUpperCase() === 'AS' ? (name ?? null) : null, body: [] });
    } else if (stages.length > 0) stages.at(-1)!.body.push(instruction);
  }
  if (stages.length < 2) problems.push('not multi-stage');
  const final = stages.at(-1)?.body ?? [];
  const user = final.filter((i) => i.keyword === 'USER').at(-1)?.args;
  if (!user) problems.push('final stage has no USER');
  else if (/^(root|0)(:|$)/.test(user)) problems.push(`final stage runs as ${user}`);
  if (!final.some((i) => i.keyword === 'HEALTHCHECK' && !/^NONE\b/i.test(i.args)))
    problems.push('final stage has no HEALTHCHECK');
  if (!final.some((i) => i.keyword === 'CMD' || i.keyword === 'ENTRYPOINT')) problems.push('final stage has no CMD');
  return problems;
}

describe('infra/docker', () => {
  const dockerfiles = ['api', 'web', 'worker-cpu', 'worker-cuda'];

  it.each(dockerfiles)('%s.Dockerfile: multi-stage, pinned bases, non-root USER, HEALTHCHECK', (name) => {
    const text = read('docker', `${name}.Dockerfile`);
    expect(lintDockerfile(text)).toEqual([]);
    // Files the image copies from the build context exist.
    for (const copied of text.matchAll(/^\s*infra\/docker\/(\S+)/gm))
      expect(existsSync(join(infra, 'docker', copied[1]!))).toBe(true);
  });

  it('the CUDA worker builds for sm_80 and sm_90 on a CUDA runtime base (cuBLAS) and says which GPU it uses', () => {
    const text = read('docker', 'worker-cuda.Dockerfile');
    expect(text).toMatch(/^ARG CUDA_ARCHITECTURES="80;90"$/m);
    expect(text).toMatch(/--CDCMAKE_CUDA_ARCHITECTURES=\$\{CUDA_ARCHITECTURES\}/);
    expect(text).toMatch(/^ARG CUDA_RUNTIME_IMAGE=nvidia\/cuda:[\d.]+-runtime-/m);
    expect(text).toMatch(/^ARG CUDA_DEVEL_IMAGE=nvidia\/cuda:[\d.]+-devel-/m);
    expect(text).toMatch(/EXPERTUNE_DEVICE=cuda:0/);
  });

  it('the linter flags an unpinned base, a root user, a missing HEALTHCHECK and a single stage', () => {
    const bad = ['FROM node:20', 'USER root', 'CMD ["node"]'].join('\n');
    expect(lintDockerfile(bad)).toEqual([
      'FROM node:20: not pinned by tag and digest (node:20)',
      'not multi-stage',
      'final stage runs as root',
      'final stage has no HEALTHCHECK',
    ]);
    const floating = read('docker', 'api.Dockerfile').replace(/@sha256:[0-9a-f]{64}/, '');
    expect(lintDockerfile(floating).join('\n')).toMatch(/not pinned/);
    const noUser = read('docker', 'web.Dockerfile').replace(/^USER .*$/m, '');
    expect(lintDockerfile(noUser)).toEqual(['final stage has no USER']);
  });

  it('.dockerignore keeps local builds, dependencies, git and secrets out of the context', () => {
    const ignored = read('..', '.dockerignore').split('\n');
    for (const pattern of ['**/node_modules', '**/dist', '.git', '**/.env']) expect(ignored).toContain(pattern);
  });
});
