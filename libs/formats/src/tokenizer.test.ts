import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, test } from 'vitest';

import { TokenizerError } from './errors.js';
import { tempDir } from './fixtures.test-util.js';
import {
  BYTE_TO_CHAR,
  byteLevelTokenizerConfig,
  byteLevelTokenizerJson,
  createTokenizer,
  loadTokenizer,
  toByteLevel,
} from './tokenizer.js';

// Ids: bytes 0–255, then the merges in order (256 "he", 257 "ll", 258 "hell", 259 " w",
// 260 " wor"... see below), then "<s>" and "</s>".
const merges: [string, string][] = [
  ['h', 'e'], // 256
  ['l', 'l'], // 257
  ['he', 'll'], // 258
  [' ', 'w'], // 259
  ['o', 'r'], // 260
  [' w', 'or'], // 261
];
const BOS = 262;
const EOS = 263;
const b = (char: string): number => char.charCodeAt(0); // an ASCII byte's id

function writeTokenizerDir(config: object | null = byteLevelTokenizerConfig()): string {
  const dir = tempDir();
  writeFileSync(join(dir, 'tokenizer.json'), JSON.stringify(byteLevelTokenizerJson({ merges })));
  if (config !== null) writeFileSync(join(dir, 'tokenizer_config.json'), JSON.stringify(config));
  return dir;
}

describe('byteLevelTokenizerJson', () => {
  test('uses the GPT-2 byte alphabet: printable bytes as themselves, the rest from U+0100', () => {
    expect(BYTE_TO_CHAR[b('A')]).toBe('A');
    expect(BYTE_TO_CHAR[0]).toBe('\u0100'); // Ā
    expect(BYTE_TO_CHAR[b(' ')]).toBe('\u0120'); // Ġ, as in GPT-2 vocabularies
    expect(BYTE_TO_CHAR[b('\n')]).toBe('\u010a'); // Ċ
    expect(BYTE_TO_CHAR[0xad]).toBe('\u0143'); // soft hyphen, the last non-printable
    expect(new Set(BYTE_TO_CHAR).size).toBe(256);
    expect(toByteLevel(' é')).toBe('\u0120\u00c3\u00a9'); // é is UTF-8 c3 a9
  });

  test('builds the vocabulary: 256 bytes, merges, special tokens', () => {
    const json = byteLevelTokenizerJson({ merges }) as {
      model: { vocab: Record<string, number>; merges: string[] };
      added_tokens: { id: number; content: string }[];
    };
    expect(Object.keys(json.model.vocab)).toHaveLength(256 + merges.length);
    expect(json.model.vocab['\u0120']).toBe(32);
    expect(json.model.vocab['hell']).toBe(258);
    expect(json.model.vocab['\u0120wor']).toBe(261);
    expect(json.model.merges).toEqual(['h e', 'l l', 'he ll', '\u0120 w', 'o r', '\u0120w or']);
    expect(json.added_tokens.map((token) => [token.id, token.content])).toEqual([
      [BOS, '<s>'],
      [EOS, '</s>'],
    ]);
  });

  test('refuses merges whose parts are not tokens yet, repeats and an unknown bosToken', () => {
    expect(() => byteLevelTokenizerJson({ merges: [['he', 'l']] })).toThrow(TokenizerError);
    expect(() =>
      byteLevelTokenizerJson({
        merges: [
          ['h', 'e'],
          ['h', 'e'],
        ],
      }),
    ).toThrow(/repeats/);
    expect(() => byteLevelTokenizerJson({ bosToken: '<bos>' })).toThrow(/not one of the special tokens/);
  });
});

describe('loadTokenizer', () => {
  test('encodes with the merges, by hand', () => {
    const tokenizer = loadTokenizer(writeTokenizerDir());
    // "hello world": pre-tokenized as "hello" and " world"; "hello" → hell + o,
    // " world" → " wor" + l + d.
    expect(tokenizer.encode('hello world', { addSpecialTokens: false })).toEqual([258, b('o'), 261, b('l'), b('d')]);
    expect(tokenizer.encode('hello world')).toEqual([BOS, 258, b('o'), 261, b('l'), b('d')]);
    // Bytes of non-ASCII text: é is c3 a9.
    expect(tokenizer.encode('é', { addSpecialTokens: false })).toEqual([0xc3, 0xa9]);
  });

  test('reads bos, eos and sizes', () => {
    const tokenizer = loadTokenizer(writeTokenizerDir());
    expect(tokenizer.vocabSize).toBe(264);
    expect(tokenizer.bosToken).toBe('<s>');
    expect(tokenizer.bosTokenId).toBe(BOS);
    expect(tokenizer.eosToken).toBe('</s>');
    expect(tokenizer.eosTokenId).toBe(EOS);
    expect(tokenizer.tokenToId('hell')).toBe(258);
    expect(tokenizer.tokenToId('nope')).toBeNull();
    expect(tokenizer.idToToken(261)).toBe('\u0120wor');
    expect(tokenizer.idToToken(9999)).toBeNull();
    expect(tokenizer.chatTemplate).toBeNull();
  });

  test.each([
    'hello world',
    'Grüße aus Köln, ça va ?',
    '日本語のテキストと中文',
    'مرحبا بالعالم',
    'Здравствуй, мир',
    'emoji 👋🏽 family 👨‍👩‍👧‍👦 flags 🇫🇷',
    '  leading and trailing spaces  ',
    'tabs\tnewlines\n\r\nand\u00a0nbsp',
    "it's, don't — \"quotes\" 'and' punctuation!?",
    'combining e\u0301 vs é; zero\u200bwidth',
    '',
  ])('encode → decode round-trips %j', (text) => {
    const tokenizer = loadTokenizer(writeTokenizerDir());
    const ids = tokenizer.encode(text, { addSpecialTokens: false });
    expect(tokenizer.decode(ids)).toBe(text);
    const withBos = tokenizer.encode(text);
    expect(withBos[0]).toBe(BOS);
    expect(tokenizer.decode(withBos, { skipSpecialTokens: true })).toBe(text);
  });

  test('round-trips random Unicode text', () => {
    const tokenizer = loadTokenizer(writeTokenizerDir());
    let seed = 99;
    const random = (n: number): number => {
      seed = (Math.imul(seed, 1664525) + 1013904223) >>> 0;
      return seed % n;
    };
    const ranges = [
      [0x20, 0x7e],
      [0xa0, 0x2ff],
      [0x400, 0x4ff],
      [0x4e00, 0x4fff],
      [0x1f300, 0x1f64f],
      [0x9, 0xd],
    ] as const;
    for (let i = 0; i < 200; i++) {
      let text = '';
      for (let j = random(40); j > 0; j--) {
        const [lo, hi] = ranges[random(ranges.length)]!;
        text += String.fromCodePoint(lo + random(hi - lo + 1));
      }
      expect(tokenizer.decode(tokenizer.encode(text, { addSpecialTokens: false }))).toBe(text);
    }
  });

  test('special tokens in the text are matched; decode can skip them', () => {
    const tokenizer = loadTokenizer(writeTokenizerDir());
    const ids = tokenizer.encode('a</s>b', { addSpecialTokens: false });
    expect(ids).toEqual([b('a'), EOS, b('b')]);
    expect(tokenizer.decode(ids)).toBe('a</s>b');
    expect(tokenizer.decode(ids, { skipSpecialTokens: true })).toBe('ab');
  });

  test('decode keeps spaces unless asked to clean them up', () => {
    const tokenizer = loadTokenizer(writeTokenizerDir());
    const ids = tokenizer.encode('a , b .', { addSpecialTokens: false });
    expect(tokenizer.decode(ids)).toBe('a , b .');
    expect(tokenizer.decode(ids, { cleanUpTokenizationSpaces: true })).toBe('a, b.');
  });

  test('decode refuses ids outside the vocabulary', () => {
    const tokenizer = loadTokenizer(writeTokenizerDir());
    expect(tokenizer.decode([])).toBe('');
    expect(() => tokenizer.decode([264])).toThrow(/token id 264 is not in the vocabulary \(size 264\)/);
    expect(() => tokenizer.decode([-1])).toThrow(TokenizerError);
    expect(() => tokenizer.decode([1.5])).toThrow(TokenizerError);
  });

  test('reads bos/eos from AddedToken objects, honours an explicit null, and loads the chat template', () => {
    const dir = writeTokenizerDir({
      bos_token: null,
      eos_token: { __type: 'AddedToken', content: '</s>', special: true },
      chat_template: '{{ messages }}',
    });
    const tokenizer = loadTokenizer(dir);
    expect(tokenizer.bosTokenId).toBeNull();
    expect(tokenizer.eosTokenId).toBe(EOS);
    expect(tokenizer.chatTemplate).toBe('{{ messages }}');
    writeFileSync(join(dir, 'chat_template.jinja'), '{% for m in messages %}{{ m.content }}{% endfor %}');
    expect(loadTokenizer(dir).chatTemplate).toBe('{% for m in messages %}{{ m.content }}{% endfor %}');
  });

  test('picks the default of several named chat templates', () => {
    const tokenizer = createTokenizer(byteLevelTokenizerJson(), {
      chat_template: [
        { name: 'tool_use', template: 'T' },
        { name: 'default', template: 'D' },
      ],
    });
    expect(tokenizer.chatTemplate).toBe('D');
  });

  test('without tokenizer_config.json, recognises the usual bos/eos special tokens', () => {
    const tokenizer = loadTokenizer(writeTokenizerDir(null));
    expect(tokenizer.bosTokenId).toBe(BOS);
    expect(tokenizer.eosTokenId).toBe(EOS);
  });

  test('a tokenizer without a BOS template adds nothing', () => {
    const tokenizer = createTokenizer(byteLevelTokenizerJson({ bosToken: null }), byteLevelTokenizerConfig());
    expect(tokenizer.encode('hi')).toEqual([b('h'), b('i')]);
  });

  test('missing or broken tokenizer.json gives a clear error', () => {
    const dir = tempDir();
    expect(() => loadTokenizer(dir)).toThrow(`no tokenizer.json in ${dir}`);
    writeFileSync(join(dir, 'tokenizer.model'), 'sentencepiece');
    expect(() => loadTokenizer(dir)).toThrow(/only a SentencePiece tokenizer.model/);
    writeFileSync(join(dir, 'tokenizer.json'), '{"model": ');
    expect(() => loadTokenizer(dir)).toThrow(TokenizerError);
    writeFileSync(join(dir, 'tokenizer.json'), '{"version": "1.0"}');
    expect(() => loadTokenizer(dir)).toThrow(/not a tokenizer.json object with a "model"/);
    writeFileSync(join(dir, 'tokenizer.json'), '{"model": {"type": "Mystery"}}');
    expect(() => loadTokenizer(dir)).toThrow(/cannot build the tokenizer/);
  });
});
