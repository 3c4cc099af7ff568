/** Text generation over any engine's decode session: greedy, or temperature + nucleus sampling. */
import type { Model } from './engine.js';
import { hash3, uniform } from './rng.js';

export interface GenerateOptions {
  maxNewTokens: number;
  /** Greedy when true (the default); otherwise sample with temperature and topP. */
  greedy?: boolean;
  temperature?: number;
  topP?: number;
  seed?: number;
  /** Stop after any of these ids (included in the output). */
  stopIds?: readonly number[];
}

/** The new token ids after `prompt` (the prompt itself is not repeated). */
export async function generate(model: Model, prompt: readonly number[], options: GenerateOptions): Promise<number[]> {
  if (prompt.length === 0) throw new RangeError('generate needs a prompt of at least one token');
  if (!(Number.isInteger(options.maxNewTokens) && options.maxNewTokens >= 0))
    throw new RangeError(`maxNewTokens must be a non-negative integer, got ${options.maxNewTokens}`);
  const greedy = options.greedy ?? true;
  const temperature = options.temperature ?? 1;
  const topP = options.topP ?? 1;
  if (!greedy && !(temperature > 0)) throw new RangeError(`temperature must be > 0, got ${temperature}`);
  if (!greedy && !(topP > 0 && topP <= 1)) throw new RangeError(`top-p must be in (0, 1], got ${topP}`);
  const stop = new Set(options.stopIds ?? []);
  const session = model.backend.createSession(prompt.length + options.maxNewTokens);
  const out: number[] = [];
  try {
    let logits = await session.append(prompt);
    for (let i = 0; i < options.maxNewTokens; i++) {
      const next = greedy
        ? argmax(logits)
        : sampleTopP(logits, temperature, topP, uniform(hash3(options.seed ?? 0, i, 0x5eed)));
      out.push(next);
      if (stop.has(next) || i + 1 === options.maxNewTokens) break;
      logits = await session.append([next]);
    }
  } finally {
    session.dispose();
  }
  return out;
}

/** The first index of the maximum (as torch.argmax). */
export function argmax(values: Float32Array): number {
  let best = 0;
  for (let i = 1; i < values.length; i++) if (values[i]! > values[best]!) best = i;
  return best;
}

/** Samples from softmax(logits / T) restricted to the smallest set of top tokens with mass ≥ topP. */
export function sampleTopP(logits: Float32Array, temperature: number, topP: number, u: number): number {
  let max = -Infinity;
  for (const v of logits) max = Math.max(max, v);
  const probs = Array.from(logits, (v, id) => ({ id, p: Math.exp((v - max) / temperature) }));
  const total = probs.reduce((s, x) => s + x.p, 0);
  probs.sort((a, b) => b.p - a.p || a.id - b.id);
  const kept: typeof probs = [];
  let mass = 0;
  for (const x of probs) {
    kept.push(x);
    mass += x.p / total;
    if (mass >= topP) break;
  }
  const keptMass = kept.reduce((s, x) => s + x.p, 0);
  let r = u * keptMass;
  for (const x of kept) {
    r -= x.p;
    if (r < 0) return x.id;
  }
  return kept[kept.length - 1]!.id;
}
