/**
 * The plain-LoRA fallbacks: the expert split (each expert a PEFT directory of its own) and the
 * collapse, whose low-rank SVD is checked against ΔW computed densely here.
 */
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';

import { describe, expect, it } from 'vitest';

import { modulePath, type MixtureSpec } from './adapter-layout.js';
import { verifyExportDirectory } from './export.js';
import { collapseMixture, loraScale, writeCollapsedLoraExport, writeExpertSplitExport } from './fallbacks.js';
import { tempDir } from './fixtures.test-util.js';
import { fromRowMajor, jacobiSvd } from './linalg.js';
import { SPECS, tensorsFor } from './adapter-fixtures.test-util.js';
import { readAdapterExport } from './mixture-export.js';

const manifest = { runId: 'run-9', datasetHash: 'h', finalMetrics: { train_loss: 2 } };

describe('expert split', () => {
  it('writes each expert as a PEFT LoRA, covering only the layers that have it, and says routing is lost', () => {
    const spec = SPECS[0]!; // MoLA, experts [2, 4] on q, v, down
    const tensors = tensorsFor(spec);
    const dir = join(tempDir(), 'split');
    writeExpertSplitExport(dir, { baseModel: '/m', adapter: spec, tensors, manifest, card: { steps: 1 } });
    verifyExportDirectory(dir);
    expect(readFileSync(join(dir, 'README.md'), 'utf8')).toMatch(/Routing is lost/);
    for (let e = 0; e < 4; e++) {
      const expertDir = join(dir, `expert-${e}`);
      verifyExportDirectory(expertDir);
      expect(readFileSync(join(expertDir, 'README.md'), 'utf8')).toMatch(/Routing is lost/);
      const loaded = readAdapterExport(expertDir);
      expect(loaded.method).toBe('lora');
      expect(loaded.spec).toMatchObject({
        rank: 2,
        alpha: 4,
        targetModules: spec.targetModules,
        layers: e < 2 ? null : [1],
      });
      const layers = e < 2 ? [0, 1] : [1];
      expect(loaded.tensors.size).toBe(layers.length * 3 * 2);
      for (const l of layers)
        for (const p of spec.targetModules)
          for (const ab of ['A', 'B'])
            expect(loaded.tensors.get(`${modulePath(l, p)}.lora_${ab}.weight`)).toEqual(
              tensors.get(`${modulePath(l, p)}.experts.${e}.lora_${ab}.weight`)!.data,
            );
    }
    expect(existsSync(join(dir, 'expert-4'))).toBe(false);
  });

  it('refuses FlyLoRA, whose experts are single ranks', () => {
    const spec = SPECS[3]!;
    expect(() =>
      writeExpertSplitExport(join(tempDir(), 'x'), {
        baseModel: '/m',
        adapter: spec,
        tensors: tensorsFor(spec),
        manifest,
        card: {},
      }),
    ).toThrow(/use the collapse/);
  });
});

/** ΔW = Σ_e g_e · s · B_e A_e of one site, dense, row-major float64 (FlyLoRA: s · B diag(g) A). */
function denseDelta(spec: MixtureSpec, tensors: ReturnType<typeof tensorsFor>, path: string, gates: number[]) {
  const s = loraScale(spec.alpha, spec.rank, spec.useRslora);
  const r = spec.rank;
  const pairs =
    spec.method === 'flylora'
      ? [[tensors.get(`${path}.lora_A.weight`)!, tensors.get(`${path}.lora_B.weight`)!]]
      : gates.map((_, e) => [
          tensors.get(`${path}.experts.${e}.lora_A.weight`)!,
          tensors.get(`${path}.experts.${e}.lora_B.weight`)!,
        ]);
  const n = pairs[0]![0]!.shape[1]!;
  const m = pairs[0]![1]!.shape[0]!;
  const out = new Float64Array(m * n);
  pairs.forEach(([a, b], e) => {
    for (let i = 0; i < m; i++)
      for (let k = 0; k < r; k++) {
        const g = spec.method === 'flylora' ? gates[k]! : gates[e]!;
        const bik = s * g * b!.data[i * r + k]!;
        for (let j = 0; j < n; j++) out[i * n + j]! += bik * a!.data[k * n + j]!;
      }
  });
  return { m, n, values: out };
}

function product(b: Float32Array, a: Float32Array, m: number, n: number, r: number, scale: number): Float64Array {
  const out = new Float64Array(m * n);
  for (let i = 0; i < m; i++)
    for (let k = 0; k < r; k++) for (let j = 0; j < n; j++) out[i * n + j]! += scale * b[i * r + k]! * a[k * n + j]!;
  return out;
}

const norm = (x: ArrayLike<number>) => Math.sqrt(Array.from(x).reduce((acc, v) => acc + v * v, 0));
const diffNorm = (x: ArrayLike<number>, y: ArrayLike<number>) => norm(Array.from(x, (v, i) => v - y[i]!));

function gatesFor(spec: MixtureSpec): Map<string, number[]> {
  const gates = new Map<string, number[]>();
  for (let l = 0; l < 2; l++)
    for (const p of spec.targetModules) {
      const count = spec.method === 'flylora' ? spec.rank : spec.numExperts[l]!;
      const raw = Array.from({ length: count }, (_, e) => 1 + ((e * 7 + l * 3) % 5));
      const sum = raw.reduce((a, b) => a + b, 0);
      gates.set(
        modulePath(l, p),
        raw.map((g) => g / sum),
      );
    }
  return gates;
}

describe('collapse', () => {
  for (const spec of SPECS) {
    it(`${spec.method}: at full rank reproduces ΔW; at rank r it is the best rank-r approximation`, () => {
      const tensors = tensorsFor(spec);
      const gates = gatesFor(spec);
      const maxExperts = spec.method === 'flylora' ? 1 : Math.max(...spec.numExperts);
      const full = collapseMixture(spec, tensors, gates, { rank: maxExperts * spec.rank });
      const truncated = collapseMixture(spec, tensors, gates);
      expect(truncated.spec).toMatchObject({
        method: 'lora',
        rank: spec.rank,
        alpha: spec.alpha,
        useRslora: spec.useRslora,
      });
      for (const site of truncated.sites) {
        const path = site.module;
        const layer = Number(path.split('.')[2]);
        const dense = denseDelta(spec, tensors, path, gates.get(path)!);
        const { m, n } = dense;
        // Full rank: exact up to float32 storage.
        const rFull = full.spec.rank;
        const exact = product(
          full.tensors.get(`${path}.lora_B.weight`)!.data,
          full.tensors.get(`${path}.lora_A.weight`)!.data,
          m,
          n,
          rFull,
          loraScale(spec.alpha, rFull, spec.useRslora),
        );
        expect(diffNorm(exact, dense.values) / norm(dense.values), path).toBeLessThan(1e-6);
        // Rank r: the dense SVD of ΔW (computed on the m×n matrix directly) gives the optimum.
        const svd = jacobiSvd(fromRowMajor(m, n, dense.values));
        const r = spec.rank;
        const best = new Float64Array(m * n);
        for (let k = 0; k < Math.min(r, n); k++)
          for (let i = 0; i < m; i++)
            for (let j = 0; j < n; j++) best[i * n + j]! += svd.u.data[k * m + i]! * svd.s[k]! * svd.v.data[k * n + j]!;
        const approx = product(
          truncated.tensors.get(`${path}.lora_B.weight`)!.data,
          truncated.tensors.get(`${path}.lora_A.weight`)!.data,
          m,
          n,
          r,
          loraScale(spec.alpha, r, spec.useRslora),
        );
        expect(diffNorm(approx, best) / norm(best), path).toBeLessThan(1e-5);
        const tail = Math.sqrt(
          Array.from(svd.s)
            .slice(r)
            .reduce((a, v) => a + v * v, 0),
        );
        expect(site.relativeError).toBeCloseTo(tail / norm(dense.values), 6);
        site.singularValues.forEach((sigma, k) =>
          expect(Math.abs(sigma - (svd.s[k] ?? 0)), `σ${k}`).toBeLessThan(1e-9 * svd.s[0]!),
        );
        if (spec.method === 'flylora')
          expect(site.relativeError).toBeLessThan(1e-12); // rank r already
        else if (spec.numExperts[layer]! > 1) expect(site.relativeError).toBeGreaterThan(1e-3);
      }
    });
  }

  it('needs a gate for every expert of every site', () => {
    const spec = SPECS[0]!;
    const gates = gatesFor(spec);
    gates.set(modulePath(1, 'v_proj'), [0.5, 0.5]);
    expect(() => collapseMixture(spec, tensorsFor(spec), gates)).toThrow(
      /mean gates of model\.layers\.1\.self_attn\.v_proj: expected 4 value\(s\), got 2/,
    );
  });

  it('writes a PEFT LoRA whose README states the measured eval change', () => {
    const spec = SPECS[2]!;
    const collapsed = collapseMixture(spec, tensorsFor(spec), gatesFor(spec));
    const dir = join(tempDir(), 'collapsed');
    writeCollapsedLoraExport(dir, {
      baseModel: '/m',
      source: spec,
      collapsed,
      evaluation: { mixtureLoss: 2.5, collapsedLoss: 2.75, tokens: 1234, data: 'the training data' },
      manifest,
      card: { steps: 4 },
    });
    verifyExportDirectory(dir);
    const readme = readFileSync(join(dir, 'README.md'), 'utf8');
    expect(readme).toContain('| mixture | 2.500000 |');
    expect(readme).toContain('| collapsed LoRA | 2.750000 |');
    expect(readme).toContain('| change | +0.250000 (10.00 %) |');
    expect(readme).toContain('Measured on 1,234 tokens of the training data.');
    const loaded = readAdapterExport(dir);
    expect(loaded.spec).toMatchObject({ method: 'lora', rank: 2, alpha: 4, useRslora: true, layers: null });
    const manifestJson = JSON.parse(readFileSync(join(dir, 'manifest.json'), 'utf8'));
    expect(manifestJson.final_metrics).toEqual({ train_loss: 2, eval_loss_mixture: 2.5, eval_loss_collapsed: 2.75 });
  });
});
