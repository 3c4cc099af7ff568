/**
 * The routing state a model keeps between calls (docs/methods.md "Routing statistics", "Auxiliary
 * losses"): per-site statistics accumulated until read, and the optimizer step's balance buffers
 * (counts, `Σ m p`, `Σ m` per pool), which give the global-scope `f` and the step's balance value.
 */
import type { AdapterConfig, SiteRoutingStats } from '../types.js';
import { hasRouter, type AdapterSite } from '../methods/index.js';
import { normalisedShannonEntropy } from '../methods/routing.js';
import type { SiteRecord } from './adapter-graph.js';
import { addPoolSums, balanceFromSums, emptyPoolSums, type PoolSums } from './aux-losses.js';

interface SiteAccumulator {
  tokens: number;
  /** Σ m·1[G_e > 0]. */
  loadCounts: Float64Array;
  /** Σ m·G_e. */
  gateSums: Float64Array;
  /** Σ m·(−Σ p ln p / ln E). */
  entropySum: number;
  /** Σ m·broadcast. */
  broadcastCount: number;
}

export class RoutingState {
  private readonly accumulators = new Map<number, SiteAccumulator>();
  private readonly stepPools = new Map<number, PoolSums>();

  constructor(
    private readonly adapter: AdapterConfig,
    private readonly sites: readonly AdapterSite[],
  ) {
    this.resetStats();
  }

  /** Adds the records of one pass (rows weighted by `tokenMask`) to the statistics. */
  accumulate(records: readonly SiteRecord[], tokenMask: Float32Array): void {
    if (this.adapter.method === 'lora') return;
    for (const record of records) {
      const accumulator = this.accumulators.get(record.site.site)!;
      const E = record.site.experts;
      for (let t = 0; t < record.rows; t++) {
        const m = tokenMask[t]!;
        if (m === 0) continue;
        accumulator.tokens += m;
        for (let e = 0; e < E; e++) {
          const gate = record.gateValues[t * E + e]!;
          if (gate > 0) accumulator.loadCounts[e] = accumulator.loadCounts[e]! + m;
          accumulator.gateSums[e] = accumulator.gateSums[e]! + m * gate;
        }
        if (record.probValues !== null)
          accumulator.entropySum += m * normalisedShannonEntropy(record.probValues.subarray(t * E, (t + 1) * E));
        if (record.broadcast !== null) accumulator.broadcastCount += m * record.broadcast[t]!;
      }
    }
  }

  /** The statistics since the last read, one entry per site with routing; reading resets them. */
  readStats(): SiteRoutingStats[] {
    if (this.adapter.method === 'lora') return [];
    const stats = this.sites.map((site): SiteRoutingStats => {
      const accumulator = this.accumulators.get(site.site)!;
      const tokens = accumulator.tokens;
      const per = (value: number) => (tokens > 0 ? value / tokens : 0);
      return {
        layer: site.layer,
        projection: site.projection,
        experts: site.experts,
        tokens,
        load: Array.from(accumulator.loadCounts, per),
        meanGate: Array.from(accumulator.gateSums, per),
        entropy: hasRouter(this.adapter) ? per(accumulator.entropySum) : null,
        broadcast: per(accumulator.broadcastCount),
      };
    });
    this.resetStats();
    return stats;
  }

  private resetStats(): void {
    for (const site of this.sites) {
      this.accumulators.set(site.site, {
        tokens: 0,
        loadCounts: new Float64Array(site.experts),
        gateSums: new Float64Array(site.experts),
        entropySum: 0,
        broadcastCount: 0,
      });
    }
  }

  /** The step's buffer of a balance pool (undefined before its first micro-batch). */
  stepBuffer(key: number): PoolSums | undefined {
    return this.stepPools.get(key);
  }

  /** Adds a training micro-batch's pool sums to the step's buffers. */
  commitStep(pools: ReadonlyMap<number, PoolSums>): void {
    for (const [key, sums] of pools) {
      let buffer = this.stepPools.get(key);
      if (buffer === undefined) {
        buffer = emptyPoolSums(sums.experts);
        this.stepPools.set(key, buffer);
      }
      addPoolSums(buffer, sums);
    }
  }

  /** `Σ_pools N Σ f̄ P̄` over the step's buffers (0 without a router). */
  balanceStep(): number {
    let total = 0;
    for (const sums of this.stepPools.values()) total += balanceFromSums(this.adapter.method, sums);
    return total;
  }

  /** Starts a new optimizer step: the balance buffers are emptied. */
  resetStep(): void {
    this.stepPools.clear();
  }
}
