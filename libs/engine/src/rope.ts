/**
 * Rotary position embedding tables, per docs/engine.md ("RoPE"): frequencies and angles in float64,
 * cosine and sine rounded to float32 once. The native engine computes the same tables in C++.
 */
import type { LlamaConfig } from '@expertune/formats';

type RopeConfig = Pick<LlamaConfig, 'headDim' | 'ropeTheta' | 'ropeScaling'>;

/** The rotation frequencies `f_i`, `i < headDim / 2`, scaling applied, in float64. */
export function ropeFrequencies(config: RopeConfig): Float64Array {
  const { headDim, ropeTheta, ropeScaling } = config;
  if (!Number.isInteger(headDim) || headDim <= 0 || headDim % 2 !== 0) {
    throw new RangeError(`RoPE needs an even head dimension, got ${headDim}`);
  }
  const half = headDim / 2;
  const frequencies = new Float64Array(half);
  for (let i = 0; i < half; i++) {
    const unscaled = 1 / Math.pow(ropeTheta, (2 * i) / headDim);
    frequencies[i] = ropeScaling === null ? unscaled : scaleFrequency(unscaled, ropeScaling);
  }
  return frequencies;
}

function scaleFrequency(frequency: number, scaling: NonNullable<LlamaConfig['ropeScaling']>): number {
  switch (scaling.type) {
    case 'linear':
      return frequency / scaling.factor;
    case 'llama3': {
      const { factor, lowFreqFactor, highFreqFactor, originalMaxPositionEmbeddings: L } = scaling;
      const wavelength = (2 * Math.PI) / frequency;
      // Short wavelengths (high frequencies) are kept, long ones divided by `factor`,
      // and the band between is interpolated linearly in L / wavelength.
      if (wavelength < L / highFreqFactor) return frequency;
      if (wavelength > L / lowFreqFactor) return frequency / factor;
      const s = (L / wavelength - lowFreqFactor) / (highFreqFactor - lowFreqFactor);
      return ((1 - s) * frequency) / factor + s * frequency;
    }
    default: {
      const unknown: { type?: unknown } = scaling;
      throw new Error(`unsupported rope_scaling type ${String(unknown.type)}`);
    }
  }
}

export interface RopeTables {
  /** `cos[pos · headDim/2 + i] = cos(pos · f_i)`, `[maxPos, headDim / 2]` row-major. */
  cos: Float32Array;
  /** `sin[pos · headDim/2 + i] = sin(pos · f_i)`, `[maxPos, headDim / 2]` row-major. */
  sin: Float32Array;
}

/** Cosine and sine tables for positions `0 … maxPos − 1`. */
export function ropeTables(config: RopeConfig, maxPos: number): RopeTables {
  const frequencies = ropeFrequencies(config);
  const half = frequencies.length;
  const cos = new Float32Array(maxPos * half);
  const sin = new Float32Array(maxPos * half);
  for (let pos = 0; pos < maxPos; pos++) {
    for (let i = 0; i < half; i++) {
      const angle = pos * frequencies[i]!;
      cos[pos * half + i] = Math.cos(angle);
      sin[pos * half + i] = Math.sin(angle);
    }
  }
  return { cos, sin };
}
