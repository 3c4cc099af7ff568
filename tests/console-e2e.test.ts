/**
 * The web console end to end, in a real browser: Debian's headless chromium driven by
 * playwright-core, against the built console (`next start`), the built API and a worker as separate
 * processes on the real Postgres (a throwaway, migrated database) and Redis (a queue prefix of this
 * run), training the embedded default model `models/expertune-tiny-en`.
 *
 * What a user does, through the pages only: enter the key, register the model, upload a bad and then
 * a good dataset, get a bad hyperparameter refused, launch LoRA from the form, watch it succeed with
 * its curves drawn, launch MoLA, compare the two, download the adapter, and come back with an expired
 * key. Every page is photographed under test-output/console/ at 1280 px and at phone width.
 */
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, rmSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join } from 'node:path';

import { createExpertuneClient, type ExpertuneClient, type Job } from '@expertune/contracts';
import { connect, createApiKey, createDataSource } from '@expertune/db';
import { type Browser, type BrowserContext, chromium, type Page } from 'playwright-core';
import type { DataSource } from 'typeorm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import {
  apiMain,
  createThrowawayServices,
  ensureAppBuilt,
  freePort,
  jobWaiter,
  REDIS_URL,
  repoRoot,
  type ServiceProcess,
  startNodeProcess,
  temporaryDirectory,
  type ThrowawayServices,
  waitForHealth,
  waitForOutput,
  waitUntil,
  workerBin,
  writeJsonl,
} from './helpers.js';

/** What the page callbacks touch of the browser (this package compiles without the DOM library). */
declare const document: {
  documentElement: { scrollWidth: number; clientWidth: number };
  activeElement: { value?: string; getAttribute(name: string): string | null } | null;
};
declare const window: { sessionStorage: { getItem(key: string): string | null } };
declare const axe: {
  run(
    context: unknown,
    options: unknown,
  ): Promise<{ violations: { id: string; impact: string | null; nodes: { target: string[] }[] }[] }>;
};

const CHROMIUM = process.env.EXPERTUNE_CHROMIUM || '/usr/bin/chromium';
const WEB_BUILD = join(repoRoot, 'apps', 'web', 'build', 'BUILD_ID');
const MODEL_DIR = join(repoRoot, 'models', 'expertune-tiny-en');
const SHOTS = join(repoRoot, 'test-output', 'console');
const DESKTOP = { width: 1280, height: 900 };
const PHONE = { width: 390, height: 844 };
const RANK = 4;
const STEPS = 24;

let services: ThrowawayServices | undefined;
let dir: ReturnType<typeof temporaryDirectory> | undefined;
let db: DataSource | undefined;
let browser: Browser | undefined;
let context: BrowserContext;
let page: Page;
const processes: ServiceProcess[] = [];
let apiUrl: string;
let webUrl: string;
let apiKey: string;
let client: ExpertuneClient;
/** Uncaught errors of the pages and CSP refusals: none is expected anywhere. */
const pageErrors: string[] = [];
const jobs: { lora?: Job; mola?: Job } = {};

const logs = () => processes.map((p) => `--- ${p.name}\n${p.output().slice(-3000)}`).join('\n');
const byTest = (id: string) => page.getByTestId(id);
const shot = (name: string) => page.screenshot({ path: join(SHOTS, `${name}.png`), fullPage: true });

/** Two tasks with exact answers, so evaluation reports exact match per task. */
function datasetRows(): { prompt: string; completion: string; task: string }[] {
  const words = ['apple', 'river', 'stone', 'cloud', 'tiger', 'lemon', 'candle', 'garden', 'silver', 'window'];
  const rows = [];
  for (let i = 0; i < 40; i++) {
    const word = words[i % words.length]!;
    rows.push({ prompt: `Repeat the word: ${word}\nAnswer:`, completion: ` ${word}`, task: 'echo' });
    rows.push({ prompt: `What number comes after ${i + 1}?\nAnswer:`, completion: ` ${i + 2}`, task: 'count' });
  }
  return rows;
}

/** LoRA's trainable parameters by hand: r·(in+out) for each of the 7 projections of every layer. */
function loraParameters(rank: number): number {
  const c = JSON.parse(readFileSync(join(MODEL_DIR, 'config.json'), 'utf8')) as Record<string, number>;
  const h = c.hidden_size!;
  const headDim = h / c.num_attention_heads!;
  const q = c.num_attention_heads! * headDim;
  const kv = c.num_key_value_heads! * headDim;
  const i = c.intermediate_size!;
  const perLayer = [h + q, h + kv, h + kv, q + h, h + i, h + i, i + h].reduce((a, b) => a + b, 0);
  return rank * perLayer * c.num_hidden_layers!;
}

/** How many pixels of a chart's canvases are painted: a drawn curve paints hundreds. */
async function paintedPixels(testId: string): Promise<number> {
  const plot = byTest(`${testId}-plot`);
  await plot.locator('canvas').first().waitFor({ state: 'attached', timeout: 30_000 });
  return plot.evaluate((element) => {
    let painted = 0;
    for (const canvas of element.querySelectorAll('canvas')) {
      const data = canvas.getContext('2d')!.getImageData(0, 0, canvas.width, canvas.height).data;
      for (let i = 3; i < data.length; i += 4) if (data[i]! > 0) painted++;
    }
    return painted;
  });
}

/** Chooses the option of a select whose text contains `text`. */
async function selectByText(testId: string, text: string): Promise<void> {
  const select = byTest(testId);
  await expect.poll(() => select.locator('option', { hasText: text }).count(), { timeout: 15_000 }).toBeGreaterThan(0);
  const value = await select.locator('option', { hasText: text }).first().getAttribute('value');
  await select.selectOption(value!);
}

/**
 * The WCAG 2 A and AA rules axe-core finds broken on the page, serious or critical ones only, as
 * `rule: first offending elements`.
 */
async function accessibilityProblems(): Promise<string[]> {
  await page.addScriptTag({ path: createRequire(import.meta.url).resolve('axe-core/axe.min.js') });
  const violations = await page.evaluate(async () => {
    const result = await axe.run(document, { runOnly: { type: 'tag', values: ['wcag2a', 'wcag2aa'] } });
    return result.violations.map((v) => ({
      id: v.id,
      impact: v.impact,
      nodes: v.nodes.map((n) => n.target.join(' ')),
    }));
  });
  return violations
    .filter((v) => v.impact === 'serious' || v.impact === 'critical')
    .map((v) => `${v.id}: ${v.nodes.slice(0, 3).join(', ')}`);
}

/** Whether the page scrolls sideways: at phone width nothing but a table's own scroller may. */
const overflowsSideways = () =>
  page.evaluate(() => document.documentElement.scrollWidth > document.documentElement.clientWidth + 1);

function waitForJobStatus(id: string, status: Job['status'], timeoutMs = 180_000): Promise<Job> {
  return jobWaiter(client, logs, 250)(
    id,
    `to be ${status}`,
    (job) => {
      if (job.status === 'failed' && status !== 'failed') throw new Error(`failed: ${JSON.stringify(job.error)}`);
      return job.status === status;
    },
    timeoutMs,
  );
}

/** Fills the new-job form for `method` with the short settings of this test and launches it. */
async function launchFromForm(method: 'lora' | 'mola', trainingName: string): Promise<Job> {
  await page.goto(`${webUrl}/jobs/new`);
  await byTest('new-job-form').waitFor();
  await selectByText('field-model', 'expertune-tiny-en');
  await selectByText('field-training_file', trainingName);
  await byTest(`method-${method}`).check();
  const section = method === 'lora' ? 'lora' : 'mola';
  await byTest(`field-hyperparameters.${section}.rank`).fill(String(RANK));
  await byTest('field-hyperparameters.training.max_steps').fill(String(STEPS));
  await byTest('field-hyperparameters.training.micro_batch_size').fill('4');
  await byTest('field-hyperparameters.training.eval_every').fill('8');
  await byTest('field-hyperparameters.training.checkpoint_every').fill('8');
  await byTest('section-data').locator('summary').click();
  await byTest('field-hyperparameters.data.validation_fraction').fill('0.15');
  await byTest('field-hyperparameters.data.max_seq_len').fill('48');
  await byTest('section-eval').locator('summary').click();
  await byTest('field-hyperparameters.eval.max_generate_rows').fill('8');
  await byTest('field-seed').fill('7');
  await byTest('submit-job').click();
  await page.waitForURL((url) => /\/jobs\/[^/]+$/.test(url.pathname) && !url.pathname.endsWith('/new'), {
    timeout: 30_000,
  });
  const id = decodeURIComponent(new URL(page.url()).pathname.split('/').pop()!);
  return client.jobs.get(id);
}

beforeAll(async () => {
  if (!existsSync(CHROMIUM))
    throw new Error(
      `No chromium at ${CHROMIUM}: \`npm test\` installs Debian's (apt-get install chromium); ` +
        'or set EXPERTUNE_CHROMIUM to a Chromium binary.',
    );
  if (!existsSync(WEB_BUILD)) throw new Error('the console is not built: run `npm run build` (npm test does it)');
  ensureAppBuilt('api');
  ensureAppBuilt('worker');
  rmSync(SHOTS, { recursive: true, force: true });
  mkdirSync(SHOTS, { recursive: true });
  services = await createThrowawayServices('console');
  dir = temporaryDirectory('console');
  db = await connect(createDataSource({ url: services.databaseUrl, poolSize: 2 }));
  apiKey = (await createApiKey(db, { name: 'console e2e', scopes: ['launch'] })).key;
  const [apiPort, webPort] = [await freePort(), await freePort()];
  apiUrl = `http://127.0.0.1:${apiPort}`;
  webUrl = `http://127.0.0.1:${webPort}`;
  client = createExpertuneClient({ baseUrl: apiUrl, apiKey });

  const shared = {
    ...process.env,
    DATABASE_URL: services.databaseUrl,
    REDIS_URL,
    EXPERTUNE_DATA_DIR: join(dir.path, 'data'),
    EXPERTUNE_QUEUE_PREFIX: services.queuePrefix,
  };
  const api = startNodeProcess('api', apiMain, {
    ...shared,
    EXPERTUNE_ACCELERATORS: 'cpu',
    EXPERTUNE_RATE_LIMIT_PER_MINUTE: '0',
    PORT: String(apiPort),
    HOST: '127.0.0.1',
  });
  const worker = startNodeProcess('worker', workerBin, {
    ...shared,
    EXPERTUNE_ACCELERATOR: 'cpu',
    EXPERTUNE_WORKER_ID: 'console-worker',
    EXPERTUNE_METRIC_FLUSH_MS: '200',
    EXPERTUNE_TRAINER_THREADS: '1',
  });
  const next = createRequire(join(repoRoot, 'apps', 'web', 'package.json')).resolve('next/dist/bin/next');
  const web = startNodeProcess(
    'web',
    next,
    { ...process.env, EXPERTUNE_API_URL: apiUrl, NEXT_TELEMETRY_DISABLED: '1' },
    { args: ['start', '-p', String(webPort), '-H', '127.0.0.1'], cwd: join(repoRoot, 'apps', 'web') },
  );
  processes.push(api, worker, web);
  await Promise.all([waitForHealth(apiUrl, api), waitForOutput(worker, / on queue /), waitForOutput(web, /Ready/)]);

  browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: ['--no-sandbox'] });
  context = await browser.newContext({ viewport: DESKTOP, acceptDownloads: true });
  page = await context.newPage();
  page.on('pageerror', (error) => pageErrors.push(`${page.url()}: ${error.message}`));
  // A script, style or request the console's Content-Security-Policy blocks is a bug too.
  page.on('console', (message) => {
    if (/Content Security Policy/i.test(message.text())) pageErrors.push(`${page.url()}: ${message.text()}`);
  });
});

afterAll(async () => {
  await browser?.close();
  await Promise.all(processes.map((p) => p.stop()));
  await db?.destroy();
  await services?.drop();
  dir?.remove();
});

describe('the console in a real browser', () => {
  it('asks for the key once, keeps it out of the URL, and shows the jobs', async () => {
    const answer = await page.goto(`${webUrl}/jobs`);
    // The console's security headers (apps/web/next.config.mjs), as the browser receives them.
    const headers = answer!.headers();
    expect(headers['x-content-type-options']).toBe('nosniff');
    expect(headers['x-frame-options']).toBe('DENY');
    expect(headers['content-security-policy']).toContain("frame-ancestors 'none'");
    expect(headers['x-powered-by']).toBeUndefined();
    await byTest('key-form').waitFor();
    await shot('01-key-entry');
    await byTest('key-input').fill(apiKey);
    await byTest('key-submit').click();
    await byTest('jobs-table').waitFor();
    expect(page.url()).not.toContain(apiKey);
    // Another page of the same tab session does not ask again.
    await page.goto(`${webUrl}/datasets`);
    await byTest('datasets-page').waitFor();
    expect(await byTest('key-form').count()).toBe(0);
  });

  it('registers the embedded model from the Models page', async () => {
    await page.goto(`${webUrl}/models`);
    await byTest('register-model').locator('#model-path').fill(MODEL_DIR);
    await byTest('register-model').locator('button[type=submit]').click();
    await expect.poll(() => byTest('model-row').count(), { timeout: 15_000 }).toBe(1);
    const models = await client.models.list({ limit: 10 });
    expect(models.data.map((m) => m.path)).toEqual([MODEL_DIR]);
    await shot('02-models');
  });

  it('shows a bad dataset by line and field, and previews a good one', async () => {
    const bad = join(dir!.path, 'bad.jsonl');
    const rows: unknown[] = datasetRows().slice(0, 6);
    rows[1] = { prompt: 'no completion here' };
    rows[4] = { prompt: 'What?', completion: 42 };
    writeJsonl(bad, rows);
    await page.goto(`${webUrl}/jobs/new`);
    await byTest('dataset-file').setInputFiles(bad);
    await byTest('dataset-upload-button').click();
    const table = byTest('upload-line-errors');
    await table.waitFor();
    const refused = await table
      .locator('tbody tr')
      .evaluateAll((trs) => trs.map((tr) => [...tr.querySelectorAll('td')].map((td) => td.textContent ?? '')));
    // Lines are 1-based file lines: rows 2 and 5 of the file.
    expect(refused.map((r) => r[0])).toEqual(['2', '5']);
    expect(refused[1]![1]).toContain('completion');
    await expect.poll(async () => (await client.datasets.list({ limit: 10 })).data.length).toBe(0);
    await shot('03-upload-errors');

    const good = join(dir!.path, 'tasks.jsonl');
    writeJsonl(good, datasetRows());
    await byTest('dataset-file').setInputFiles(good);
    await byTest('dataset-upload-button').click();
    const preview = byTest('dataset-preview');
    await preview.waitFor();
    expect(await preview.textContent()).toContain('80 rows');
    expect(await preview.locator('li').first().textContent()).toContain('Repeat the word: apple');
    // The upload becomes the form's training file.
    await expect.poll(() => byTest('field-training_file').inputValue()).toMatch(/\S/);
  });

  it('counts trainable parameters as the user types and refuses a bad hyperparameter before submit', async () => {
    await page.goto(`${webUrl}/jobs/new`);
    await selectByText('field-model', 'expertune-tiny-en');
    await byTest('method-lora').check();
    const rank = byTest('field-hyperparameters.lora.rank');
    for (const r of [16, RANK]) {
      await rank.fill(String(r));
      await expect
        .poll(() => byTest('trainable-params').textContent())
        .toMatch(new RegExp(`^${loraParameters(r).toLocaleString('en-US')}\\b`));
    }

    await byTest('section-optimizer').locator('summary').click();
    // The accelerator classes with their queues: the one worker of this test serves cpu.
    await expect
      .poll(() => byTest('field-accelerator').locator('option', { hasText: 'cpu —' }).textContent())
      .toMatch(/^cpu — \d+ queued, \d+ running, 1 worker$/);

    const lr = byTest('field-hyperparameters.optimizer.lr');
    await lr.fill('-0.001');
    await expect.poll(() => lr.getAttribute('aria-invalid')).toBe('true');
    await byTest('submit-job').click();
    const problems = byTest('form-problems');
    await problems.waitFor();
    expect(await problems.textContent()).toContain('hyperparameters.optimizer.lr');
    await shot('04-new-job-invalid');
    expect(page.url()).toMatch(/\/jobs\/new$/);
    expect((await client.jobs.list({ limit: 10 })).data).toHaveLength(0);
  });

  it('launches LoRA from the form and watches it succeed with its curves drawn', async () => {
    const job = await launchFromForm('lora', 'tasks.jsonl');
    jobs.lora = job;
    expect(job.method).toBe('lora');
    expect(job.hyperparameters.training.max_steps).toBe(STEPS);
    expect((job.hyperparameters as { lora: { rank: number } }).lora.rank).toBe(RANK);
    // The page follows the job live: no reload between queued and succeeded.
    await expect
      .poll(() => byTest('job-detail').getAttribute('data-status'), { timeout: 180_000, interval: 500 })
      .toBe('succeeded');
    await waitForJobStatus(job.id, 'succeeded', 10_000);
    for (const chart of ['chart-loss', 'chart-lr', 'chart-grad-norm', 'chart-tokens-per-second'])
      expect(await paintedPixels(chart), chart).toBeGreaterThan(200);
    await expect.poll(() => byTest('checkpoint-row').count(), { timeout: 15_000 }).toBeGreaterThan(0);
    expect(await byTest('events-log').textContent()).toContain('succeeded');
    expect(await byTest('resolved-config').textContent()).toContain(`"max_steps": ${STEPS}`);
    // Plain LoRA has no router.
    await byTest('no-routing').waitFor();
    await byTest('toggle-log').click();
    expect(await paintedPixels('chart-loss')).toBeGreaterThan(200);
    await shot('05-job-detail-lora');
  });

  it('downloads the adapter as the tar the API serves', async () => {
    const [download] = await Promise.all([page.waitForEvent('download'), byTest('download-adapter').click()]);
    const saved = join(dir!.path, 'download.tar');
    await download.saveAs(saved);
    const adapterId = (await client.jobs.get(jobs.lora!.id)).result_adapter!;
    const direct = Buffer.from(
      await (
        await fetch(`${apiUrl}/v1/adapters/${adapterId}/download`, { headers: { authorization: `Bearer ${apiKey}` } })
      ).arrayBuffer(),
    );
    expect(readFileSync(saved).equals(direct)).toBe(true);
    const names = execFileSync('tar', ['-tf', saved], { encoding: 'utf8' }).split('\n');
    expect(names.some((n) => n.endsWith('adapter_config.json'))).toBe(true);
    expect(names.some((n) => n.endsWith('adapter_model.safetensors'))).toBe(true);
  });

  it('launches MoLA and shows its routing heatmaps', async () => {
    const job = await launchFromForm('mola', 'tasks.jsonl');
    jobs.mola = job;
    expect(job.method).toBe('mola');
    await expect
      .poll(() => byTest('job-detail').getAttribute('data-status'), { timeout: 180_000, interval: 500 })
      .toBe('succeeded');
    const layers = JSON.parse(readFileSync(join(MODEL_DIR, 'config.json'), 'utf8')).num_hidden_layers as number;
    for (let layer = 0; layer < layers; layer++) await byTest(`heatmap-layer-${layer}`).waitFor({ timeout: 30_000 });
    expect(await paintedPixels('chart-loss')).toBeGreaterThan(200);
    await shot('06-job-detail-mola');
  });

  it('compares the two runs: curves, differing config and final metrics per task', async () => {
    await page.goto(`${webUrl}/jobs`);
    await expect.poll(() => byTest('job-row').count()).toBe(2);
    for (const row of await byTest('job-row').all()) expect(await row.getAttribute('data-status')).toBe('succeeded');
    // Each row's loss sparkline.
    await expect.poll(() => page.locator('[data-testid="job-row"] svg.sparkline').count()).toBe(2);
    await shot('07-jobs');
    for (const box of await byTest('select-job').all()) await box.check();
    await byTest('compare-selected').click();
    await byTest('compare-page').waitFor();
    expect(new URL(page.url()).searchParams.get('ids')?.split(',').sort()).toEqual(
      [jobs.lora!.id, jobs.mola!.id].sort(),
    );
    expect(await paintedPixels('compare-train-loss')).toBeGreaterThan(200);
    expect(await paintedPixels('compare-eval-loss')).toBeGreaterThan(50);
    const finals = byTest('compare-final-metrics');
    await expect.poll(() => finals.textContent()).toContain('echo');
    expect(await finals.textContent()).toContain('count');
    await byTest('differences-only').check();
    const config = (await byTest('compare-config').textContent()) ?? '';
    expect(config).toContain('method');
    expect(config).not.toContain('max_steps'); // the same in both runs
    await byTest(`compare-heatmap-${jobs.mola!.id}`).waitFor({ timeout: 15_000 });
    await shot('08-compare');
  });

  it('follows new jobs live on the jobs page, over the change stream', async () => {
    await page.goto(`${webUrl}/jobs`);
    const updates = byTest('jobs-updates');
    await expect.poll(() => updates.getAttribute('data-stream'), { timeout: 15_000 }).toBe('live');
    // Launched elsewhere (the typed client): the page, which only polls every 30 s while the stream
    // is live, shows it and its end from the stream's changes.
    const job = await client.jobs.create({
      model: jobs.lora!.model,
      training_file: jobs.lora!.training_file,
      method: 'lora',
      hyperparameters: {
        lora: { rank: 2 },
        training: { max_steps: 6, micro_batch_size: 4 },
        data: { max_seq_len: 48 },
      },
    });
    const row = page.locator(`[data-testid="job-row"][data-job-id="${job.id}"]`);
    await expect.poll(() => row.getAttribute('data-status'), { timeout: 25_000, interval: 250 }).toBe('succeeded');
    await waitForJobStatus(job.id, 'succeeded', 1_000);
  });

  it('lays every page out at 1280 px and at phone width without sideways scrolling', async () => {
    const pages = {
      jobs: '/jobs',
      'new-job': '/jobs/new',
      detail: `/jobs/${jobs.mola!.id}`,
      compare: `/compare?ids=${jobs.lora!.id},${jobs.mola!.id}`,
      datasets: '/datasets',
      models: '/models',
    };
    for (const [viewport, size] of [
      ['desktop', DESKTOP],
      ['phone', PHONE],
    ] as const) {
      await page.setViewportSize(size);
      for (const [name, path] of Object.entries(pages)) {
        await page.goto(`${webUrl}${path}`);
        await page.locator('main').waitFor();
        await shot(`09-${viewport}-${name}`);
        expect(await overflowsSideways(), `${name} at ${viewport}`).toBe(false);
        if (viewport === 'desktop') expect(await accessibilityProblems(), `${name}: axe-core`).toEqual([]);
      }
    }
    await page.setViewportSize(DESKTOP);
  });

  it('works from the keyboard: the method picker and the launch button take focus', async () => {
    await page.goto(`${webUrl}/jobs/new`);
    await byTest('method-lora').focus();
    await page.keyboard.press('ArrowRight');
    expect(await page.evaluate(() => document.activeElement?.value)).toBe('full');
    expect(await byTest('method-description').textContent()).toMatch(/\S/);
    await byTest('submit-job').focus();
    expect(await page.evaluate(() => document.activeElement?.getAttribute('data-testid'))).toBe('submit-job');
  });

  it('sends an expired key back to key entry, and never logs the key', async () => {
    await db!.query(`UPDATE api_keys SET expires_at = now() - interval '1 minute'`);
    // The API remembers a verified key for a few seconds (apps/api's api-key guard): wait until it refuses it.
    await waitUntil(
      'the API to refuse the expired key',
      async () => (await fetch(`${apiUrl}/v1/jobs`, { headers: { authorization: `Bearer ${apiKey}` } })).status === 401,
      30_000,
      500,
    );
    await page.goto(`${webUrl}/jobs`);
    await byTest('key-expired')
      .waitFor({ timeout: 15_000 })
      .catch(async (error: Error) => {
        await shot('debug-expired');
        throw new Error(`${error.message}\n${(await page.locator('main').textContent()) ?? ''}\n${logs()}`);
      });
    await byTest('key-form').waitFor();
    expect(await page.evaluate(() => window.sessionStorage.getItem('expertune.apiKey'))).toBeNull();
    await shot('10-key-expired');
    for (const p of processes) expect(p.output(), `${p.name}'s output`).not.toContain(apiKey);
    expect(pageErrors).toEqual([]);
  });
});
