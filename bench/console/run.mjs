#!/usr/bin/env node
// Console chart benchmark: how long a job page takes to draw long training curves, in the browser
// the console's tests use (Debian's chromium, headless, through playwright-core).
//
// Per size N (points per curve), 4 random-walk curves of N steps are drawn in a 600 px wide uPlot
// chart two ways, in the same page, alternating, median of --repeats:
//   ours  the console's path (apps/web/lib/series.ts chartData, as LineChart calls it) with the
//         smoothing slider on (EMA 0.6), then uPlot;
//   raw   uPlot given the raw points with no transform at all: the floor for any console on uPlot.
// The time runs from the start of the transform (ours) or of the chart's construction (raw) to
// uPlot's `draw` hook; ours / raw is what the console's own work costs on top of drawing.
//
//   node bench/console/run.mjs [--sizes 10000,100000,1000000] [--repeats 7] [--out FILE]
/* global window, document, uPlot -- the page callbacks below run in the browser */
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { cpus } from 'node:os';
import { dirname, join } from 'node:path';
import { parseArgs } from 'node:util';

import { chromium } from 'playwright-core';
import ts from 'typescript';

import { CHROMIUM } from '../../scripts/system-deps.mjs';
import { fmt, log, median, root } from '../lib/common.mjs';

const { values: args } = parseArgs({
  options: {
    sizes: { type: 'string', default: '10000,100000,1000000' },
    repeats: { type: 'string', default: '7' },
    out: { type: 'string', default: join(root, 'bench', 'out', 'console.json') },
  },
});
const sizes = args.sizes.split(',').map(Number);
const repeats = Number(args.repeats);
const WIDTH = 600;
const CURVES = 4;

if (!existsSync(CHROMIUM)) {
  console.error(
    `No chromium at ${CHROMIUM}: apt-get install chromium (npm test installs it), or set EXPERTUNE_CHROMIUM.`,
  );
  process.exit(1);
}

// The console's own transforms, compiled from its source as the browser would run them.
const seriesSource = ts.transpileModule(readFileSync(join(root, 'apps', 'web', 'lib', 'series.ts'), 'utf8'), {
  compilerOptions: { target: ts.ScriptTarget.ES2022, module: ts.ModuleKind.ESNext },
}).outputText;
const requireFromWeb = createRequire(join(root, 'apps', 'web', 'package.json'));
const uplotScript = readFileSync(join(dirname(requireFromWeb.resolve('uplot')), 'uPlot.iife.min.js'), 'utf8');

const browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: ['--no-sandbox'] });
const machine = `${cpus()[0]?.model ?? 'unknown CPU'} × ${cpus().length}, Chromium ${browser.version()}`;
const rows = [];
try {
  const page = await browser.newPage({ viewport: { width: 1000, height: 800 } });
  await page.setContent(`<div id="chart" style="width:${WIDTH}px"></div>`);
  await page.addScriptTag({ content: uplotScript });
  await page.addScriptTag({ type: 'module', content: `${seriesSource}\nwindow.series = { chartData };` });
  await page.waitForFunction(() => window.series !== undefined);

  for (const n of sizes) {
    const times = await page.evaluate(
      async ({ n, curves, width, repeats }) => {
        // Random walks around a decaying loss, seeded (a Park–Miller generator) so runs compare.
        let seed = 12345;
        const random = () => (seed = (seed * 16807) % 2147483647) / 2147483647;
        const steps = Array.from({ length: n }, (_, i) => i + 1);
        const data = Array.from({ length: curves }, (_, c) =>
          steps.map((s) => 3 * Math.exp(-s / n) + 0.1 * c + 0.2 * (random() - 0.5)),
        );
        const target = document.getElementById('chart');
        const options = (count) => ({
          width,
          height: 220,
          scales: { x: { time: false } },
          series: [{}, ...Array.from({ length: count }, () => ({ stroke: '#1f77b4', points: { show: false } }))],
        });
        /** Builds a chart and resolves with the ms from `start` to the end of its first draw. */
        const draw = (aligned, start) =>
          new Promise((resolve) => {
            const plot = new uPlot(
              { ...options(aligned.length - 1), hooks: { draw: [() => resolve([performance.now() - start, plot])] } },
              aligned,
              target,
            );
          }).then(([ms, plot]) => {
            plot.destroy();
            return ms;
          });
        const ours = async () => {
          const start = performance.now();
          const { steps: x, columns } = window.series.chartData(
            data.map((values) => ({ steps, values })),
            false,
            0.6,
          );
          transformMs.push(performance.now() - start);
          return draw([x, ...columns], start);
        };
        const peer = async () => draw([steps, ...data], performance.now());
        const transformMs = [];
        const result = { ours: [], peer: [], transform: transformMs };
        for (let r = 0; r < repeats; r++) {
          result.ours.push(await ours());
          result.peer.push(await peer());
        }
        return result;
      },
      { n, curves: CURVES, width: WIDTH, repeats },
    );
    const ours = median(times.ours);
    const peer = median(times.peer);
    const transform = median(times.transform);
    rows.push({ points: n, curves: CURVES, ours_ms: ours, transform_ms: transform, raw_ms: peer, ratio: ours / peer });
    log(`${n} points × ${CURVES}: ours ${fmt(ours, 1)} ms (transform ${fmt(transform, 1)}), raw ${fmt(peer, 1)} ms`);
  }
} finally {
  await browser.close();
}

console.log(`\nConsole chart draw (${CURVES} curves, ${WIDTH} px, median of ${repeats}; ${machine})\n`);
console.log(
  '| points per curve | ours: chartData + draw, ms | of which chartData, ms | raw uPlot draw, ms | ours / raw |',
);
console.log('|---:|---:|---:|---:|---:|');
for (const r of rows)
  console.log(
    `| ${r.points.toLocaleString('en-US')} | ${fmt(r.ours_ms, 1)} | ${fmt(r.transform_ms, 1)} | ${fmt(r.raw_ms, 1)} | ${fmt(r.ratio, 2)}× |`,
  );
mkdirSync(dirname(args.out), { recursive: true });
writeFileSync(args.out, JSON.stringify({ machine, width: WIDTH, curves: CURVES, repeats, rows }, null, 2));
