import { createTokenizer, toByteLevel } from '@expertune/formats';
import { describe, expect, it } from 'vitest';

import { countPreTokens, learnMerges, trainByteLevelBpe } from './bpe.js';

/** The textbook algorithm: recount every pair from scratch before each merge. */
function naiveMerges(counts: Map<string, number>, mergeCount: number, minFrequency: number): [string, string][] {
  let words = [...counts].map(([word, count]) => ({ symbols: [...word], count }));
  const merges: [string, string][] = [];
  while (merges.length < mergeCount) {
    const pairs = new Map<string, number>();
    for (const { symbols, count } of words)
      for (let i = 0; i + 1 < symbols.length; i++) {
        const pair = `${symbols[i]} ${symbols[i + 1]}`;
        pairs.set(pair, (pairs.get(pair) ?? 0) + count);
      }
    const ranked = [...pairs].sort(([a, ca], [b, cb]) => cb - ca || (a < b ? -1 : 1));
    if (ranked.length === 0 || ranked[0]![1] < minFrequency) break;
    const [left, right] = ranked[0]![0].split(' ') as [string, string];
    merges.push([left, right]);
    words = words.map(({ symbols, count }) => {
      const out: string[] = [];
      for (let i = 0; i < symbols.length; i++) {
        if (symbols[i] === left && symbols[i + 1] === right) {
          out.push(left + right);
          i += 1;
        } else out.push(symbols[i]!);
      }
      return { symbols: out, count };
    });
  }
  return merges;
}

const G = toByteLevel(' '); // "Ġ"

describe('byte-level BPE training', () => {
  it('learns the merges of a hand-worked example, ties broken by the pair text', () => {
    // Pre-tokens "aaab", " aaab", " ab". Pair counts: a·a 4, a·b 3, Ġ·a 2 → merge a·a; then
    // aa·a 2, a·b 3, Ġ·aa 1, Ġ·a 1 → merge a·b; then aa·ab 2 → merge; then Ġ·aaab 1, Ġ·ab 1.
    const counts = countPreTokens(['aaab aaab ab']);
    expect(Object.fromEntries(counts)).toEqual({ aaab: 1, [`${G}aaab`]: 1, [`${G}ab`]: 1 });
    expect(learnMerges(counts, 10, 2)).toEqual([
      ['a', 'a'],
      ['a', 'b'],
      ['aa', 'ab'],
    ]);
    // With pairs seen once allowed, the 1–1 tie goes to the smaller text: "Ġ aaab" < "Ġ ab".
    expect(learnMerges(counts, 5, 1).slice(3)).toEqual([
      [G, 'aaab'],
      [G, 'ab'],
    ]);
  });

  it('matches the recount-everything algorithm merge for merge on real text', () => {
    const text =
      'Call me Ishmael. Some years ago, never mind how long precisely, having little or no money in my purse, ' +
      'and nothing particular to interest me on shore, I thought I would sail about a little and see the ' +
      'watery part of the world. It is a way I have of driving off the spleen, and regulating the circulation.';
    const counts = countPreTokens([text, text.toUpperCase(), text.replace(/e/g, 'é')]);
    expect(learnMerges(counts, 150, 2)).toEqual(naiveMerges(counts, 150, 2));
  });

  it('builds a tokenizer.json that the Hugging Face loader reads: frequent words are one token, text round-trips', () => {
    const texts = Array.from({ length: 40 }, (_, i) => `the whale and the sea, café ${i} — naïve “quotes” the whale`);
    const json = trainByteLevelBpe(texts, { vocabSize: 280, specialTokens: ['<s>', '</s>'] });
    const tokenizer = createTokenizer(json, { bos_token: '<s>', eos_token: '</s>' });
    expect(tokenizer.vocabSize).toBe(280);
    expect(tokenizer.bosTokenId).toBe(278);
    expect(tokenizer.eosTokenId).toBe(279);
    const ids = tokenizer.encode(' the whale', { addSpecialTokens: false });
    expect(ids.map((id) => tokenizer.idToToken(id))).toEqual([`${G}the`, `${G}whale`]);
    // Multi-byte characters are merged byte by byte; decoding restores the text exactly, and
    // text the corpus never showed still encodes (every byte is a token).
    for (const sample of [texts[3]!, 'naïve café “x”', 'unseen: ζ 🐋 \t tabs']) {
      const encoded = tokenizer.encode(sample);
      expect(encoded[0]).toBe(tokenizer.bosTokenId);
      expect(tokenizer.decode(encoded, { skipSpecialTokens: true })).toBe(sample);
    }
    expect(tokenizer.encode('café', { addSpecialTokens: false }).length).toBeLessThan(Buffer.byteLength('café'));
  });

  it('refuses a vocabulary smaller than the bytes and special tokens', () => {
    expect(() => trainByteLevelBpe(['x'], { vocabSize: 257, specialTokens: ['<s>', '</s>'] })).toThrow(/below 256/);
  });
});
