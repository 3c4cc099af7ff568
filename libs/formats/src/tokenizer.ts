/**
 * Tokenizers from a Hugging Face model directory (`tokenizer.json`, optional
 * `tokenizer_config.json` and `chat_template.jinja`), through @huggingface/tokenizers, behind a
 * small wrapper with the operations the trainer and the engines use.
 *
 * Also builds a byte-level BPE tokenizer.json from scratch, so demos and tests need no download.
 */
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';

import { Tokenizer } from '@huggingface/tokenizers';

import { TokenizerError } from './errors.js';
import { showValue } from './show.js';

export interface EncodeOptions {
  /** Apply the tokenizer's post-processor (e.g. prepend BOS). Default true, as Hugging Face. */
  addSpecialTokens?: boolean;
}

export interface DecodeOptions {
  /** Drop special tokens (BOS, EOS, ...) from the text. Default false. */
  skipSpecialTokens?: boolean;
  /**
   * transformers' "clean up tokenization spaces" (" ." → "." and the like). Default false, so
   * decode(encode(text)) gives the text back; this clean-up is lossy.
   */
  cleanUpTokenizationSpaces?: boolean;
}

export interface TextTokenizer {
  encode(text: string, options?: EncodeOptions): number[];
  /** Ids must be integers below `vocabSize` that name a token. */
  decode(ids: readonly number[], options?: DecodeOptions): string;
  /** One more than the largest token id (model vocabulary and added tokens). */
  readonly vocabSize: number;
  readonly bosToken: string | null;
  readonly bosTokenId: number | null;
  readonly eosToken: string | null;
  readonly eosTokenId: number | null;
  /** The Jinja chat template, when the model has one. */
  readonly chatTemplate: string | null;
  tokenToId(token: string): number | null;
  idToToken(id: number): string | null;
}

type Json = Record<string, unknown>;

function isObject(value: unknown): value is Json {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

// Used only when tokenizer_config.json does not say (the key is absent, not null).
const USUAL_BOS_TOKENS = ['<s>', '<|begin_of_text|>', '<bos>', '<|startoftext|>'];
const USUAL_EOS_TOKENS = ['</s>', '<|end_of_text|>', '<|endoftext|>', '<eos>'];

/** A special token of tokenizer_config.json: a string, an AddedToken-like object, or null. */
function specialTokenContent(value: unknown): string | null {
  if (typeof value === 'string') return value;
  if (isObject(value) && typeof value['content'] === 'string') return value['content'];
  return null;
}

function chatTemplateOf(config: Json): string | null {
  const template = config['chat_template'];
  if (typeof template === 'string') return template;
  // Older configs hold several named templates; "default" is the one used without a name.
  if (Array.isArray(template)) {
    const named = template.filter(isObject);
    const chosen = named.find((entry) => entry['name'] === 'default') ?? named[0];
    return typeof chosen?.['template'] === 'string' ? chosen['template'] : null;
  }
  return null;
}

export interface CreateTokenizerOptions {
  /** Overrides the template from tokenizer_config.json (a separate chat_template.jinja). */
  chatTemplate?: string | null;
  /** Names the files in error messages. */
  source?: string;
}

/** Builds the wrapper from parsed tokenizer.json (and tokenizer_config.json) objects. */
export function createTokenizer(
  tokenizerJson: unknown,
  tokenizerConfig: unknown = {},
  options: CreateTokenizerOptions = {},
): TextTokenizer {
  const source = options.source ?? 'tokenizer.json';
  if (!isObject(tokenizerJson) || !isObject(tokenizerJson['model'])) {
    throw new TokenizerError(`${source}: not a tokenizer.json object with a "model"`, source);
  }
  if (!isObject(tokenizerConfig)) {
    throw new TokenizerError(`${source}: tokenizer_config.json is not a JSON object`, source);
  }
  // The library expects every top-level key of a complete tokenizer.json; fill the optional ones.
  const completeJson = {
    normalizer: null,
    pre_tokenizer: null,
    post_processor: null,
    decoder: null,
    ...tokenizerJson,
    added_tokens: Array.isArray(tokenizerJson['added_tokens']) ? tokenizerJson['added_tokens'] : [],
  };
  let tokenizer: Tokenizer;
  try {
    tokenizer = new Tokenizer(completeJson, tokenizerConfig);
  } catch (error) {
    throw new TokenizerError(`${source}: cannot build the tokenizer (${(error as Error).message})`, source);
  }
  const model = tokenizer.model;
  if (model === null) throw new TokenizerError(`${source}: the tokenizer has no model`, source);
  const vocabSize = model.vocab.length;

  const specialContents = new Set(
    [...tokenizer.get_added_tokens_decoder().values()].filter((token) => token.special).map((token) => token.content),
  );
  const pickSpecial = (key: string, usual: string[]): string | null => {
    if (key in tokenizerConfig) return specialTokenContent(tokenizerConfig[key]);
    return usual.find((token) => specialContents.has(token)) ?? null;
  };
  const tokenToId = (token: string): number | null => tokenizer.token_to_id(token) ?? null;
  const bosToken = pickSpecial('bos_token', USUAL_BOS_TOKENS);
  const eosToken = pickSpecial('eos_token', USUAL_EOS_TOKENS);

  // The library builds some broken tokenizer.json files without complaint (a post-processor's
  // special token that is not a token), then encodes to ids like undefined: refuse those ids.
  const encode = (text: string, addSpecialTokens: boolean): number[] => {
    let ids: number[];
    try {
      ids = tokenizer.encode(text, { add_special_tokens: addSpecialTokens }).ids;
    } catch (error) {
      throw new TokenizerError(`${source}: cannot encode (${(error as Error).message})`, source);
    }
    const bad = ids.findIndex((id) => !Number.isInteger(id) || id < 0 || id >= vocabSize);
    if (bad >= 0) {
      throw new TokenizerError(
        `${source}: encoding produced token id ${showValue(ids[bad])}, not in the vocabulary (size ${vocabSize}); ` +
          'check the post_processor and added_tokens',
        source,
      );
    }
    return ids;
  };
  // Fail at load rather than at the first row of a training run.
  encode('Hello, world.', true);

  return {
    vocabSize,
    bosToken,
    bosTokenId: bosToken === null ? null : tokenToId(bosToken),
    eosToken,
    eosTokenId: eosToken === null ? null : tokenToId(eosToken),
    chatTemplate: options.chatTemplate !== undefined ? options.chatTemplate : chatTemplateOf(tokenizerConfig),
    tokenToId,
    idToToken: (id) => tokenizer.id_to_token(id) ?? null,
    encode(text, { addSpecialTokens = true } = {}) {
      if (typeof text !== 'string') throw new TokenizerError(`encode: expected a string, got ${typeof text}`, source);
      return encode(text, addSpecialTokens);
    },
    decode(ids, { skipSpecialTokens = false, cleanUpTokenizationSpaces = false } = {}) {
      // The library maps unknown ids to nothing (silently) and refuses an empty list.
      for (const id of ids) {
        if (!Number.isInteger(id) || id < 0 || id >= vocabSize || model.vocab[id] === undefined) {
          throw new TokenizerError(`decode: token id ${id} is not in the vocabulary (size ${vocabSize})`, source);
        }
      }
      if (ids.length === 0) return '';
      return tokenizer.decode([...ids], {
        skip_special_tokens: skipSpecialTokens,
        clean_up_tokenization_spaces: cleanUpTokenizationSpaces,
      });
    },
  };
}

function readJson(path: string, what: string): unknown {
  try {
    return JSON.parse(readFileSync(path, 'utf8'));
  } catch (error) {
    throw new TokenizerError(`cannot read ${what} ${path}: ${(error as Error).message}`, path);
  }
}

/** Loads the tokenizer of a model directory. */
export function loadTokenizer(dir: string): TextTokenizer {
  const tokenizerPath = join(dir, 'tokenizer.json');
  if (!existsSync(tokenizerPath)) {
    const hint = existsSync(join(dir, 'tokenizer.model'))
      ? ' (only a SentencePiece tokenizer.model is there: convert it to a fast tokenizer.json, ' +
        'e.g. AutoTokenizer.from_pretrained(dir).save_pretrained(dir))'
      : '';
    throw new TokenizerError(`no tokenizer.json in ${dir}${hint}`, tokenizerPath);
  }
  const configPath = join(dir, 'tokenizer_config.json');
  const config = existsSync(configPath) ? readJson(configPath, 'tokenizer config') : {};
  const templatePath = join(dir, 'chat_template.jinja');
  // transformers saves the template in its own file since 4.43; it wins over the config's copy.
  const chatTemplate = existsSync(templatePath) ? readFileSync(templatePath, 'utf8') : undefined;
  return createTokenizer(readJson(tokenizerPath, 'tokenizer'), config, {
    source: tokenizerPath,
    ...(chatTemplate === undefined ? {} : { chatTemplate }),
  });
}

// ---------------------------------------------------------------------------------------------
// A byte-level BPE tokenizer built from scratch

/**
 * GPT-2's byte → printable character table: printable Latin-1 bytes stand for themselves, the
 * others (control characters, space, ...) map to U+0100 upwards in byte order. Byte-level
 * tokenizers store their vocabulary in this alphabet (space is "Ġ").
 */
export const BYTE_TO_CHAR: readonly string[] = (() => {
  const isPrintable = (b: number): boolean => (b >= 0x21 && b <= 0x7e) || (b >= 0xa1 && b <= 0xac) || b >= 0xae;
  const table: string[] = [];
  let next = 0x100;
  for (let b = 0; b < 256; b++) table.push(String.fromCharCode(isPrintable(b) ? b : next++));
  return table;
})();

/** Text → its UTF-8 bytes written in the byte-level alphabet. */
export function toByteLevel(text: string): string {
  let out = '';
  for (const byte of new TextEncoder().encode(text)) out += BYTE_TO_CHAR[byte]!;
  return out;
}

export interface ByteLevelTokenizerOptions {
  /**
   * Merges in plain text, in priority order: ["t", "h"], ["th", "e"], [" ", "the"]. Each adds the
   * joined token to the vocabulary; both parts must already be tokens (bytes or earlier merges).
   */
  merges?: readonly (readonly [string, string])[];
  /**
   * Merges already written in the byte-level alphabet (what a BPE trainer produces: a part may
   * be a piece of a multi-byte character, which plain text cannot hold); applied after `merges`.
   */
  byteLevelMerges?: readonly (readonly [string, string])[];
  /** Special tokens, added after the merges. Default ["<s>", "</s>"]. */
  specialTokens?: readonly string[];
  /** Special token prepended when encoding with special tokens; null for none. Default "<s>". */
  bosToken?: string | null;
}

/**
 * A complete tokenizer.json object for a byte-level BPE: ids 0–255 are the bytes (in byte
 * order), then one id per merge, then the special tokens. Any text encodes (every byte is a
 * token) and decodes back exactly.
 */
export function byteLevelTokenizerJson(options: ByteLevelTokenizerOptions = {}): Json {
  const specialTokens = options.specialTokens ?? ['<s>', '</s>'];
  const bosToken = options.bosToken === undefined ? '<s>' : options.bosToken;

  const vocab: Record<string, number> = Object.create(null) as Record<string, number>;
  BYTE_TO_CHAR.forEach((char, byte) => (vocab[char] = byte));
  let nextId = 256;
  const merges: string[] = [];
  const allMerges = [
    ...(options.merges ?? []).map(([left, right]) => [left, right, toByteLevel(left), toByteLevel(right)] as const),
    ...(options.byteLevelMerges ?? []).map(([a, b]) => [a, b, a, b] as const),
  ];
  for (const [left, right, a, b] of allMerges) {
    for (const part of [a, b]) {
      if (!(part in vocab)) {
        throw new TokenizerError(
          `merge ${JSON.stringify([left, right])}: ${JSON.stringify(part)} is not a token yet ` +
            '(merges build on bytes and earlier merges)',
        );
      }
    }
    if (a + b in vocab) throw new TokenizerError(`merge ${JSON.stringify([left, right])} repeats an existing token`);
    vocab[a + b] = nextId++;
    // "a b" is unambiguous: the byte-level alphabet has no space character.
    merges.push(`${a} ${b}`);
  }

  const addedTokens = specialTokens.map((content) => ({
    id: nextId++,
    content,
    single_word: false,
    lstrip: false,
    rstrip: false,
    normalized: false,
    special: true,
  }));
  const bos = bosToken === null ? undefined : addedTokens.find((token) => token.content === bosToken);
  if (bosToken !== null && bos === undefined) {
    throw new TokenizerError(`bosToken ${JSON.stringify(bosToken)} is not one of the special tokens`);
  }
  const byteLevel = { type: 'ByteLevel', add_prefix_space: false, trim_offsets: true, use_regex: true };
  const postProcessor =
    bos === undefined
      ? byteLevel
      : {
          type: 'TemplateProcessing',
          single: [{ SpecialToken: { id: bos.content, type_id: 0 } }, { Sequence: { id: 'A', type_id: 0 } }],
          pair: [
            { SpecialToken: { id: bos.content, type_id: 0 } },
            { Sequence: { id: 'A', type_id: 0 } },
            { SpecialToken: { id: bos.content, type_id: 1 } },
            { Sequence: { id: 'B', type_id: 1 } },
          ],
          special_tokens: { [bos.content]: { id: bos.content, ids: [bos.id], tokens: [bos.content] } },
        };

  return {
    version: '1.0',
    truncation: null,
    padding: null,
    added_tokens: addedTokens,
    normalizer: null,
    pre_tokenizer: byteLevel,
    post_processor: postProcessor,
    decoder: byteLevel,
    model: {
      type: 'BPE',
      dropout: null,
      unk_token: null,
      continuing_subword_prefix: null,
      end_of_word_suffix: null,
      fuse_unk: false,
      byte_fallback: false,
      ignore_merges: false,
      vocab: { ...vocab },
      merges,
    },
  };
}

/** A tokenizer_config.json to go with `byteLevelTokenizerJson`. */
export function byteLevelTokenizerConfig(
  options: { bosToken?: string | null; eosToken?: string | null; chatTemplate?: string } = {},
): Json {
  return {
    tokenizer_class: 'PreTrainedTokenizerFast',
    bos_token: options.bosToken === undefined ? '<s>' : options.bosToken,
    eos_token: options.eosToken === undefined ? '</s>' : options.eosToken,
    clean_up_tokenization_spaces: false,
    ...(options.chatTemplate === undefined ? {} : { chat_template: options.chatTemplate }),
  };
}
