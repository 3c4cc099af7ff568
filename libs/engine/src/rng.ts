/**
 * The hash and uniform numbers of docs/engine.md ("Hash and uniform numbers"), and the two things
 * built on them that both engines must reproduce bit for bit: the LoRA `A` initialisation and the
 * dropout masks. All arithmetic is on unsigned 32-bit integers: `Math.imul` multiplies modulo
 * 2³², `>>>` is the logical shift, and `>>> 0` brings a result back to uint32.
 */

const TWO_POW_MINUS_24 = 2 ** -24;
const TWO_POW_32 = 2 ** 32;

/** The uint32 finaliser `mix32` of docs/engine.md. */
export function mix32(value: number): number {
  let x = value >>> 0;
  x = (x ^ (x >>> 16)) >>> 0;
  x = Math.imul(x, 0x7feb352d) >>> 0;
  x = (x ^ (x >>> 15)) >>> 0;
  x = Math.imul(x, 0x846ca68b) >>> 0;
  x = (x ^ (x >>> 16)) >>> 0;
  return x;
}

/** `hash3(a, b, c) = mix32(c ^ mix32(b ^ mix32(a)))`; each argument is taken modulo 2³² first. */
export function hash3(a: number, b: number, c: number): number {
  return mix32((c >>> 0) ^ mix32((b >>> 0) ^ mix32(a >>> 0)));
}

/** `uniform(h) = (h >> 8) · 2⁻²⁴`, in [0, 1), exactly representable in float32. */
export function uniform(hash: number): number {
  return ((hash >>> 0) >>> 8) * TWO_POW_MINUS_24;
}

/**
 * The LoRA `A` matrix `[rank, inFeatures]` of one site (site = layer·7 + projection index):
 * `A[i] = (2·u − 1) / sqrt(inFeatures)` with `u = uniform(hash3(seed, 2·site, i))`, `i` the flat
 * row-major index. Computed in float64 and rounded to float32 once.
 */
export function loraInitA(seed: number, site: number, rank: number, inFeatures: number): Float32Array {
  const values = new Float32Array(rank * inFeatures);
  const bound = 1 / Math.sqrt(inFeatures);
  for (let i = 0; i < values.length; i++) {
    const u = uniform(hash3(seed, 2 * site, i));
    values[i] = (2 * u - 1) * bound;
  }
  return values;
}

/**
 * The router `R` `[experts, inFeatures]` of one site (docs/methods.md "Initialisation"):
 * `R[i] = (2·u − 1) / sqrt(inFeatures)` with `u = uniform(hash3(seed, 2·site + 1, i))`, `i` the
 * flat row-major index. Computed in float64 and rounded to float32 once.
 */
export function routerInit(seed: number, site: number, experts: number, inFeatures: number): Float32Array {
  const values = new Float32Array(experts * inFeatures);
  const bound = 1 / Math.sqrt(inFeatures);
  for (let i = 0; i < values.length; i++) {
    const u = uniform(hash3(seed, 2 * site + 1, i));
    values[i] = (2 * u - 1) * bound;
  }
  return values;
}

/** Elements whose hash is below `floor(p · 2³²)` are dropped. */
export function dropoutThreshold(p: number): number {
  if (!(p >= 0 && p < 1)) throw new RangeError(`dropout probability must be in [0, 1), got ${p}`);
  return Math.floor(p * TWO_POW_32);
}

/** The factor kept values are multiplied by, `1 / (1 − p)`, computed in float64 and rounded to float32. */
export function dropoutKeepScale(p: number): number {
  return Math.fround(1 / (1 - p));
}

/**
 * The dropout keep mask of the adapter input of one input group, `[rows, inFeatures]` row-major:
 * element `(t, j)` is kept (1) iff `hash3(dropoutSeed, key, t·inFeatures + j) ≥ floor(p · 2³²)`,
 * else dropped (0). `t` is the flat row `b·T + pos`; `key = l·7 + p₀`, the site of the group's
 * first projection (`inputGroupKey` in tfjs/tensor-layout.ts; docs/engine.md "Dropout").
 */
export function dropoutKeepMask(
  dropoutSeed: number,
  key: number,
  rows: number,
  inFeatures: number,
  p: number,
): Uint8Array {
  const threshold = dropoutThreshold(p);
  const mask = new Uint8Array(rows * inFeatures);
  for (let index = 0; index < mask.length; index++) {
    mask[index] = hash3(dropoutSeed, key, index) >= threshold ? 1 : 0;
  }
  return mask;
}

/**
 * The multiplier the adapter input is multiplied by under dropout: `1 / (1 − p)` where kept,
 * 0 where dropped (`[rows, inFeatures]` row-major).
 */
export function dropoutMultiplier(
  dropoutSeed: number,
  key: number,
  rows: number,
  inFeatures: number,
  p: number,
): Float32Array {
  const mask = dropoutKeepMask(dropoutSeed, key, rows, inFeatures, p);
  const scale = dropoutKeepScale(p);
  const multiplier = new Float32Array(mask.length);
  for (let index = 0; index < mask.length; index++) multiplier[index] = mask[index] === 1 ? scale : 0;
  return multiplier;
}
