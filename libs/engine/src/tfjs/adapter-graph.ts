/**
 * The adapter term of every method (docs/methods.md "One computation for every method") written
 * with tfjs ops, for tfjs autograd to differentiate:
 *
 *   H = drop(x) Aᵀ  [T, E·r]     z = x Rᵀ   p = softmax(z)     G = gate(p or H)  [T, E]
 *   y += s · (H ⊙ Ĝ) Bᵀ          (Ĝ repeats each column of G r times)
 *
 * The gate masks (top-k sets, DynMoLE's mask, FlyLoRA's selection) are computed in plain JS from
 * the forward values (`methods/`) and enter the graph as constants, so gradients flow only through
 * the kept probabilities. Each adapted site leaves a record (its probabilities, logits, gates and
 * the JS values behind them) from which the auxiliary losses, the routing statistics and
 * FlyLoRA's bias update are computed after the forward.
 */
import * as tf from '@tensorflow/tfjs';
import type { AdapterConfig, Projection } from '../types.js';
import { hasRouter, type AdapterSite } from '../methods/index.js';
import { molaGateRows } from '../methods/mola/index.js';
import { dynmoleRouteRows } from '../methods/dynmole/index.js';
import { flyloraSelectRows } from '../methods/flylora/index.js';
import { argmax } from '../methods/routing.js';
import type { AdapterBranch } from './llama-graph.js';

/** What one adapted site computed in a forward pass. */
export interface SiteRecord {
  site: AdapterSite;
  rows: number;
  /** Router logits `z` and probabilities `p` `[T, E]` (mixtures only). */
  logits: tf.Tensor2D | null;
  probs: tf.Tensor2D | null;
  /** The gates `G` `[T, E]` as a tensor (mixtures only; FlyLoRA's are the constant selection). */
  gates: tf.Tensor2D | null;
  /** `p` as read back (float32), `[T, E]` (mixtures only). */
  probValues: Float32Array | null;
  /**
   * `[T, E]` 0/1: the experts a token counts for in the Switch load balance (mola: its top-k set,
   * loramoe: its argmax) and the kept experts (dynmole: its mask; flylora: its selected ranks).
   */
  selection: Uint8Array;
  /** `G` `[T, E]` in float64 from the float32 probabilities (statistics, DynMoLE's f buffers). */
  gateValues: Float64Array;
  /** DynMoLE: per token, 1 when broadcast. */
  broadcast: Uint8Array | null;
}

/** `[E, E·r]` with ones at `(e, e·r + j)`: `G · X` repeats each column of `G` r times. */
function expansionMatrix(experts: number, rank: number): tf.Tensor2D {
  const values = new Float32Array(experts * experts * rank);
  for (let e = 0; e < experts; e++) for (let j = 0; j < rank; j++) values[e * experts * rank + e * rank + j] = 1;
  return tf.tensor2d(values, [experts, experts * rank]);
}

/**
 * The adapter of one graph evaluation: `delta` builds a site's term and records it. Create one per
 * forward pass (its records belong to that pass).
 */
export class AdapterGraph implements AdapterBranch {
  readonly records: SiteRecord[] = [];
  private readonly byProjection = new Map<string, AdapterSite>();

  constructor(
    readonly adapter: AdapterConfig,
    sites: readonly AdapterSite[],
    private readonly weight: (name: string) => tf.Tensor,
  ) {
    for (const site of sites) this.byProjection.set(`${site.layer}:${site.projection}`, site);
  }

  get dropout(): number {
    return this.adapter.dropout;
  }

  targets(projection: Projection): boolean {
    return this.adapter.targetModules.includes(projection);
  }

  delta(layer: number, projection: Projection, x: tf.Tensor2D, dropped: tf.Tensor2D): tf.Tensor2D {
    const site = this.byProjection.get(`${layer}:${projection}`);
    if (site === undefined) throw new Error(`internal error: no adapter site for layer ${layer} ${projection}`);
    switch (this.adapter.method) {
      case 'lora':
        return this.loraDelta(site, dropped);
      case 'flylora':
        return this.flyloraDelta(site, dropped);
      default:
        return this.mixtureDelta(site, x, dropped);
    }
  }

  private loraDelta(site: AdapterSite, dropped: tf.Tensor2D): tf.Tensor2D {
    const H = tf.matMul(dropped, this.weight(site.aNames[0]!), false, true);
    return tf.mul(tf.matMul(H, this.weight(site.bNames[0]!), false, true), site.scale);
  }

  private flyloraDelta(site: AdapterSite, dropped: tf.Tensor2D): tf.Tensor2D {
    if (this.adapter.method !== 'flylora') throw new Error('internal error: not a flylora adapter');
    const rows = dropped.shape[0];
    const r = site.experts;
    // A is frozen (a constant here): the gradient still reaches x through it, exactly.
    const H = tf.matMul(dropped, this.weight(site.aNames[0]!), false, true);
    const bias = this.weight(site.bias!).dataSync() as Float32Array;
    const selection = flyloraSelectRows(H.dataSync() as Float32Array, bias, this.adapter.topK, this.adapter.select);
    const gateValues = Float64Array.from(selection);
    this.records.push({
      site,
      rows,
      logits: null,
      probs: null,
      gates: null,
      probValues: null,
      selection,
      gateValues,
      broadcast: null,
    });
    const gated = tf.mul(H, tf.tensor2d(Float32Array.from(selection), [rows, r]));
    return tf.mul(tf.matMul(gated, this.weight(site.bNames[0]!), false, true), site.scale);
  }

  private mixtureDelta(site: AdapterSite, x: tf.Tensor2D, dropped: tf.Tensor2D): tf.Tensor2D {
    const adapter = this.adapter;
    if (!hasRouter(adapter)) throw new Error('internal error: not a mixture adapter');
    const rows = x.shape[0];
    const E = site.experts;
    const r = site.expertRank;
    const A =
      E === 1
        ? this.weight(site.aNames[0]!)
        : tf.concat(
            site.aNames.map((name) => this.weight(name)),
            0,
          );
    const B =
      E === 1
        ? this.weight(site.bNames[0]!)
        : tf.concat(
            site.bNames.map((name) => this.weight(name)),
            1,
          );
    const H = tf.matMul(dropped, A, false, true); // [T, E·r]
    const logits = tf.matMul(x, this.weight(site.router!), false, true) as tf.Tensor2D; // un-dropped x
    const probs = tf.softmax(logits, -1) as tf.Tensor2D;
    const probValues = Float32Array.from(probs.dataSync() as Float32Array);

    let gates: tf.Tensor2D;
    let selection: Uint8Array;
    let gateValues: Float64Array;
    let broadcast: Uint8Array | null = null;
    switch (adapter.method) {
      case 'mola': {
        const routed = molaGateRows(probValues, E, adapter.topK[site.layer]!);
        selection = routed.mask;
        gateValues = routed.gates;
        const kept = tf.mul(probs, tf.tensor2d(Float32Array.from(routed.mask), [rows, E]));
        gates = tf.div(kept, tf.sum(kept, 1, true));
        break;
      }
      case 'loramoe': {
        selection = new Uint8Array(rows * E);
        for (let t = 0; t < rows; t++) selection[t * E + argmax(probValues.subarray(t * E, (t + 1) * E))] = 1;
        gateValues = Float64Array.from(probValues);
        gates = probs;
        break;
      }
      case 'dynmole': {
        const routed = dynmoleRouteRows(probValues, E, adapter);
        selection = routed.mask;
        broadcast = routed.broadcast;
        gateValues = Float64Array.from(probValues, (p, i) => p * routed.mask[i]!);
        gates = tf.mul(probs, tf.tensor2d(Float32Array.from(routed.mask), [rows, E]));
        break;
      }
    }
    this.records.push({ site, rows, logits, probs, gates, probValues, selection, gateValues, broadcast });
    const expandedGates = r === 1 ? gates : tf.matMul(gates, expansionMatrix(E, r));
    const gated = tf.mul(H, expandedGates);
    return tf.mul(tf.matMul(gated, B, false, true), site.scale);
  }
}
