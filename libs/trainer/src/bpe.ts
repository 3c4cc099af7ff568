/**
 * Byte-level BPE training (the GPT-2 scheme that Hugging Face's `tokenizers` loads): text is split
 * into pre-tokens with GPT-2's pattern (the same one the ByteLevel pre-tokenizer applies when
 * encoding), each pre-token becomes its UTF-8 bytes in the byte-level alphabet, and the most
 * frequent adjacent pair, counted over all pre-tokens, is merged until the vocabulary is full.
 * Ties break on the pair's text, so the result depends on the corpus only.
 */
import { byteLevelTokenizerJson, toByteLevel } from '@expertune/formats';

/** GPT-2's pre-tokenizer pattern, as the ByteLevel pre-tokenizer uses it (use_regex: true). */
const PRE_TOKEN = /'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+/gu;

export interface BpeTrainingOptions {
  /** Final vocabulary size: 256 bytes + merges + special tokens. */
  vocabSize: number;
  /** Special tokens, appended after the merges (the first is the BOS token). */
  specialTokens: readonly string[];
  /** Pairs seen fewer times than this are never merged (default 2). */
  minFrequency?: number;
}

/** Counts each pre-token of `texts`, keyed by its byte-level spelling. */
export function countPreTokens(texts: Iterable<string>): Map<string, number> {
  const counts = new Map<string, number>();
  for (const text of texts) {
    for (const match of text.matchAll(PRE_TOKEN)) {
      const word = toByteLevel(match[0]);
      counts.set(word, (counts.get(word) ?? 0) + 1);
    }
  }
  return counts;
}

/**
 * Learns merges (in the byte-level alphabet, in priority order) from pre-token counts. Pair
 * counts are kept up to date incrementally: a merge only revisits the words that contain it.
 */
export function learnMerges(wordCounts: ReadonlyMap<string, number>, mergeCount: number, minFrequency = 2) {
  // Sorted so that word indices, and with them every later step, do not depend on map order.
  const entries = [...wordCounts].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
  const words = entries.map(([word]) => [...word]);
  const counts = entries.map(([, count]) => count);
  const pairCounts = new Map<string, number>();
  const pairWords = new Map<string, Set<number>>();
  const key = (a: string, b: string) => `${a} ${b}`; // the byte-level alphabet has no space
  const addPairs = (index: number, sign: 1 | -1) => {
    const symbols = words[index]!;
    for (let i = 0; i + 1 < symbols.length; i++) {
      const pair = key(symbols[i]!, symbols[i + 1]!);
      const count = (pairCounts.get(pair) ?? 0) + sign * counts[index]!;
      if (count === 0) pairCounts.delete(pair);
      else pairCounts.set(pair, count);
      if (sign === 1) {
        let where = pairWords.get(pair);
        if (!where) pairWords.set(pair, (where = new Set()));
        where.add(index);
      }
    }
  };
  words.forEach((_, index) => addPairs(index, 1));

  const merges: [string, string][] = [];
  while (merges.length < mergeCount) {
    let best: string | null = null;
    let bestCount = 0;
    for (const [pair, count] of pairCounts) {
      if (count > bestCount || (count === bestCount && best !== null && pair < best)) {
        best = pair;
        bestCount = count;
      }
    }
    if (best === null || bestCount < minFrequency) break;
    const [left, right] = best.split(' ') as [string, string];
    merges.push([left, right]);
    const joined = left + right;
    for (const index of pairWords.get(best) ?? []) {
      const symbols = words[index]!;
      addPairs(index, -1);
      const merged: string[] = [];
      for (let i = 0; i < symbols.length; i++) {
        if (i + 1 < symbols.length && symbols[i] === left && symbols[i + 1] === right) {
          merged.push(joined);
          i += 1;
        } else {
          merged.push(symbols[i]!);
        }
      }
      words[index] = merged;
      addPairs(index, 1);
    }
    pairWords.delete(best);
  }
  return merges;
}

/** Trains a byte-level BPE on `texts`; returns a complete tokenizer.json object. */
export function trainByteLevelBpe(texts: Iterable<string>, options: BpeTrainingOptions) {
  const mergeCount = options.vocabSize - 256 - options.specialTokens.length;
  if (mergeCount < 0)
    throw new RangeError(
      `vocab size ${options.vocabSize} is below 256 bytes + ${options.specialTokens.length} special tokens`,
    );
  const merges = learnMerges(countPreTokens(texts), mergeCount, options.minFrequency ?? 2);
  return byteLevelTokenizerJson({
    byteLevelMerges: merges,
    specialTokens: options.specialTokens,
    bosToken: options.specialTokens[0] ?? null,
  });
}
