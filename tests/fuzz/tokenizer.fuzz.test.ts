/**
 * tokenizer.json (and tokenizer_config.json) from a model directory: loaded from bytes on disk
 * (loadTokenizer) or from parsed JSON (createTokenizer), then used once, as training does. A
 * tokenizer that cannot be loaded or used is a TokenizerError, at load time or at use.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import {
  byteLevelTokenizerConfig,
  byteLevelTokenizerJson,
  createTokenizer,
  loadTokenizer,
  TokenizerError,
  type TextTokenizer,
} from '@expertune/formats';
import fc from 'fast-check';
import { afterAll, describe, expect, it } from 'vitest';

import { fuzzParser, logFigures } from './harness.js';
import { mutatedBytes, mutatedJson, oddString } from './mutations.js';

const MERGES: ReadonlyArray<readonly [string, string]> = [
  ['t', 'h'],
  ['th', 'e'],
  [' ', 'the'],
  ['a', 'n'],
  ['an', 'd'],
  ['e', 'r'],
];

const validTokenizer = fc
  .record({
    merges: fc.integer({ min: 0, max: MERGES.length }),
    bos: fc.constantFrom('<s>', null),
    eos: fc.constantFrom('</s>', null),
    template: fc.option(fc.constant('{% for m in messages %}{{ m.content }}{% endfor %}'), { nil: undefined }),
  })
  .map(({ merges, bos, eos, template }) => ({
    tokenizer: byteLevelTokenizerJson({ merges: MERGES.slice(0, merges), bosToken: bos }),
    config: byteLevelTokenizerConfig({ bosToken: bos, eosToken: eos, ...(template ? { chatTemplate: template } : {}) }),
  }));

const input = fc.oneof(
  mutatedJson(validTokenizer).map((json) => ({ json })),
  fc
    .tuple(
      mutatedBytes(validTokenizer.map(({ tokenizer }) => new TextEncoder().encode(JSON.stringify(tokenizer)))),
      mutatedBytes(validTokenizer.map(({ config }) => new TextEncoder().encode(JSON.stringify(config)))),
    )
    .map(([tokenizer, config]) => ({ files: { tokenizer, config } })),
);

const texts = ['Call me Ishmael.', 'the end and the rest', '', 'é 💥 \u0000', '<s>x</s>'];

/** The calls training makes right after loading. */
function use(tokenizer: TextTokenizer): void {
  expect(Number.isInteger(tokenizer.vocabSize) && tokenizer.vocabSize >= 0).toBe(true);
  for (const text of texts) {
    const ids = tokenizer.encode(text);
    for (const id of ids) expect(Number.isInteger(id) && id >= 0).toBe(true);
    const known = ids.filter((id) => id < tokenizer.vocabSize);
    expect(typeof tokenizer.decode(known)).toBe('string');
  }
  if (tokenizer.bosToken !== null) tokenizer.tokenToId(tokenizer.bosToken);
  tokenizer.idToToken(0);
}

const dir = mkdtempSync(join(tmpdir(), 'expertune-fuzz-tokenizer-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('tokenizer.json fuzzing', () => {
  it('loadTokenizer / createTokenizer: a working tokenizer or a TokenizerError', async () => {
    logFigures(
      await fuzzParser({
        parser: 'tokenizer.json',
        input,
        parse: (value) => {
          let tokenizer: TextTokenizer;
          if ('json' in value) {
            const { tokenizer: json, config } = (value.json ?? {}) as { tokenizer?: unknown; config?: unknown };
            tokenizer = createTokenizer(json, config ?? {});
          } else {
            writeFileSync(join(dir, 'tokenizer.json'), value.files.tokenizer);
            writeFileSync(join(dir, 'tokenizer_config.json'), value.files.config);
            tokenizer = loadTokenizer(dir);
          }
          use(tokenizer);
          return tokenizer;
        },
        expected: [TokenizerError],
        shortRuns: 600,
      }),
    );
  });

  it('encode and decode: any text, any ids', async () => {
    const tokenizer = createTokenizer(byteLevelTokenizerJson({ merges: MERGES }), byteLevelTokenizerConfig());
    logFigures(
      await fuzzParser({
        parser: 'tokenizer encode/decode',
        input: fc.tuple(oddString, fc.array(fc.oneof(fc.nat(300), fc.double(), fc.integer()), { maxLength: 8 })),
        parse: ([text, ids]) => {
          const encoded = tokenizer.encode(text, { addSpecialTokens: false });
          // Byte-level BPE loses nothing, lone surrogates aside (they are not UTF-8).
          if (Buffer.from(text).toString() === text) expect(tokenizer.decode(encoded)).toBe(text);
          return tokenizer.decode(ids);
        },
        expected: [TokenizerError],
        shortRuns: 1000,
      }),
    );
  });
});

describe('tokenizer.json: found by fuzzing', () => {
  it('a post-processor whose special token is not a token is refused at load, not encoded to undefined ids', () => {
    const json = byteLevelTokenizerJson();
    // The shrunk counterexample: the template's BOS entry emptied.
    (json['post_processor'] as { single: unknown[] }).single[0] = { SpecialToken: '' };
    expect(() => createTokenizer(json, byteLevelTokenizerConfig())).toThrow(TokenizerError);
    expect(() => createTokenizer(json, byteLevelTokenizerConfig())).toThrow(
      /encoding produced token id .*post_processor/,
    );
  });
});
