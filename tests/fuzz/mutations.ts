/**
 * Generators that start from a valid structure and break it the ways real files break: cut
 * short, bit flips, wrong lengths, huge declared sizes, deep nesting, odd unicode, NaN and
 * Infinity, negative numbers. Mutations are data (an index and an operation), so fast-check
 * shrinks a failure to the fewest and smallest of them.
 */
import fc from 'fast-check';

/**
 * Nested arrays or objects `depth` deep, built without recursion (depth reaches 100,000). It
 * names itself in fast-check's reports, whose printer would recurse as deep.
 */
export function nested(depth: number, kind: 'array' | 'object'): unknown {
  let value: unknown = 0;
  for (let i = 0; i < depth; i++) value = kind === 'array' ? [value] : { a: value };
  Object.defineProperty(value, fc.toStringMethod, { value: () => `nested(${depth}, '${kind}')` });
  return value;
}

export const depth = fc.oneof(
  { weight: 4, arbitrary: fc.integer({ min: 1, max: 64 }) },
  { weight: 1, arbitrary: fc.constantFrom(1000, 20_000, 100_000) },
);

/** Strings that trip up decoders, comparisons and messages. */
export const oddString: fc.Arbitrary<string> = fc.oneof(
  {
    weight: 3,
    arbitrary: fc.constantFrom(
      '',
      ' ',
      '\u0000',
      '\ud800', // a lone surrogate: not encodable as UTF-8
      '\u202e', // right-to-left override
      '\ufeff',
      'e\u0301',
      '𝔘𝔫𝔦𝔠𝔬𝔡𝔢',
      '__proto__',
      'constructor',
      'toString',
      '../../etc/passwd',
      '{{ 7 * 7 }}',
      '{% for x in range(99999999) %}',
    ),
  },
  { weight: 3, arbitrary: fc.string({ unit: 'binary', maxLength: 40 }) },
  { weight: 2, arbitrary: fc.string({ maxLength: 20 }) },
  { weight: 1, arbitrary: fc.constantFrom(300, 5000).map((n) => 'x'.repeat(n)) },
);

/** Numbers at the edges: NaN, ±Infinity, -0, negatives, fractions, beyond 2^31, 2^32, 2^53. */
export const oddNumber: fc.Arbitrary<number> = fc.oneof(
  fc.constantFrom(
    NaN,
    Infinity,
    -Infinity,
    -0,
    -1,
    0,
    1,
    0.5,
    2 ** 31,
    2 ** 32,
    2 ** 53,
    2 ** 53 + 2,
    Number.MAX_VALUE,
    Number.MIN_VALUE,
    1e21,
    -(2 ** 63),
  ),
  fc.integer(),
  fc.double(),
);

/** Any value a JSON or YAML document (or a caller) may put where something else was expected. */
export const oddValue: fc.Arbitrary<unknown> = fc.oneof(
  oddNumber,
  oddString,
  fc.constantFrom(null, undefined, true, false, [], {}, [[]], [null]),
  fc.tuple(depth, fc.constantFrom('array' as const, 'object' as const)).map(([d, kind]) => nested(d, kind)),
  fc.array(oddNumber, { maxLength: 6 }),
  fc.constant(null).map(() => JSON.parse('{"__proto__": {"polluted": true}}') as unknown),
  fc.dictionary(oddString, oddNumber, { maxKeys: 3 }),
);

export interface JsonMutation {
  /** Picks the container (modulo their count). */
  at: number;
  op: 'replace' | 'delete' | 'add' | 'wrap' | 'empty';
  key: string;
  value: unknown;
}

export const jsonMutation: fc.Arbitrary<JsonMutation> = fc.record({
  at: fc.nat(),
  op: fc.constantFrom('replace', 'delete', 'add', 'wrap', 'empty'),
  key: fc.oneof(oddString, fc.constantFrom('extra', 'dtype', 'shape', 'data_offsets', 'model', 'r')),
  value: oddValue,
});

/** Every object and array in `root`, parents before children. */
function containers(root: unknown): Array<Record<string, unknown> | unknown[]> {
  const found: Array<Record<string, unknown> | unknown[]> = [];
  const stack: unknown[] = [root];
  while (stack.length > 0 && found.length < 10_000) {
    const node = stack.pop();
    if (typeof node !== 'object' || node === null) continue;
    found.push(node as Record<string, unknown>);
    stack.push(...Object.values(node));
  }
  return found;
}

/** A copy of `valid` with the mutations applied in order (each may hit what an earlier one added). */
export function mutateJson<T>(valid: T, mutations: readonly JsonMutation[]): unknown {
  let root: unknown = structuredClone(valid);
  for (const mutation of mutations) {
    const all = containers(root);
    if (all.length === 0) {
      root = mutation.value;
      continue;
    }
    const target = all[mutation.at % all.length]!;
    const keys = Object.keys(target);
    const key = keys.length > 0 ? keys[mutation.at % keys.length]! : mutation.key;
    const own = target as Record<string, unknown>;
    // Defined, not assigned: assigning "__proto__" would swap the container's prototype.
    const set = (name: string, value: unknown) =>
      Object.defineProperty(own, name, { value, enumerable: true, writable: true, configurable: true });
    switch (mutation.op) {
      case 'replace':
        set(key, mutation.value);
        break;
      case 'delete':
        if (Array.isArray(target)) Array.prototype.splice.call(target, Number(key), 1);
        else delete own[key];
        break;
      case 'add':
        if (Array.isArray(target)) Array.prototype.push.call(target, mutation.value);
        else set(mutation.key, mutation.value);
        break;
      case 'wrap':
        set(key, [own[key]]);
        break;
      case 'empty':
        set(key, Array.isArray(own[key]) ? [] : {});
        break;
    }
  }
  return root;
}

/** A valid structure, one broken by 1–4 mutations (valid inputs reach the deep checks), or any value at all. */
export function mutatedJson<T>(valid: fc.Arbitrary<T>): fc.Arbitrary<unknown> {
  return fc.oneof(
    { weight: 1, arbitrary: valid as fc.Arbitrary<unknown> },
    { weight: 1, arbitrary: oddValue },
    {
      weight: 5,
      arbitrary: fc
        .tuple(valid, fc.array(jsonMutation, { minLength: 1, maxLength: 4 }))
        .map(([value, mutations]) => mutateJson(value, mutations)),
    },
  );
}

export type ByteMutation =
  | { op: 'truncate'; at: number }
  | { op: 'flip'; at: number; bit: number }
  | { op: 'set'; at: number; byte: number }
  | { op: 'insert'; at: number; bytes: Uint8Array }
  | { op: 'delete'; at: number; length: number }
  | { op: 'u64'; at: number; value: bigint }
  | { op: 'duplicate'; at: number; length: number };

/** Little-endian u64 values a length field should never be trusted with. */
const oddU64 = fc.oneof(
  fc.constantFrom(0n, 1n, 7n, 8n, 2n ** 31n, 2n ** 32n, 2n ** 53n, 100_000_001n, 2n ** 63n, 2n ** 64n - 1n),
  fc.bigInt({ min: 0n, max: 2n ** 64n - 1n }),
  fc.bigInt({ min: 0n, max: 4096n }),
);

export const byteMutation: fc.Arbitrary<ByteMutation> = fc.oneof(
  fc.record({ op: fc.constant('truncate' as const), at: fc.nat() }),
  fc.record({ op: fc.constant('flip' as const), at: fc.nat(), bit: fc.integer({ min: 0, max: 7 }) }),
  fc.record({ op: fc.constant('set' as const), at: fc.nat(), byte: fc.integer({ min: 0, max: 255 }) }),
  fc.record({
    op: fc.constant('insert' as const),
    at: fc.nat(),
    bytes: fc.uint8Array({ minLength: 1, maxLength: 16 }),
  }),
  fc.record({ op: fc.constant('delete' as const), at: fc.nat(), length: fc.integer({ min: 1, max: 16 }) }),
  fc.record({ op: fc.constant('u64' as const), at: fc.oneof(fc.constant(0), fc.nat()), value: oddU64 }),
  fc.record({ op: fc.constant('duplicate' as const), at: fc.nat(), length: fc.integer({ min: 1, max: 64 }) }),
);

/** A copy of `bytes` with the mutations applied in order. */
export function mutateBytes(bytes: Uint8Array, mutations: readonly ByteMutation[]): Uint8Array {
  let out = Uint8Array.from(bytes);
  for (const m of mutations) {
    const at = out.length === 0 ? 0 : m.at % (out.length + 1);
    switch (m.op) {
      case 'truncate':
        out = out.slice(0, at);
        break;
      case 'flip':
        if (at < out.length) out[at]! ^= 1 << m.bit;
        break;
      case 'set':
        if (at < out.length) out[at] = m.byte;
        break;
      case 'insert':
        out = Uint8Array.from([...out.subarray(0, at), ...m.bytes, ...out.subarray(at)]);
        break;
      case 'delete':
        out = Uint8Array.from([...out.subarray(0, at), ...out.subarray(at + m.length)]);
        break;
      case 'u64':
        if (at + 8 <= out.length) new DataView(out.buffer).setBigUint64(at, m.value, true);
        break;
      case 'duplicate': {
        const piece = out.slice(at, at + m.length);
        out = Uint8Array.from([...out.subarray(0, at), ...piece, ...out.subarray(at)]);
        break;
      }
    }
  }
  return out;
}

/** Valid bytes, or bytes broken by 1–4 mutations. */
export function mutatedBytes(valid: fc.Arbitrary<Uint8Array>): fc.Arbitrary<Uint8Array> {
  return fc.oneof(
    { weight: 1, arbitrary: valid },
    {
      weight: 5,
      arbitrary: fc
        .tuple(valid, fc.array(byteMutation, { minLength: 1, maxLength: 4 }))
        .map(([bytes, mutations]) => mutateBytes(bytes, mutations)),
    },
  );
}

/** Text broken at the byte level (the result may no longer be valid UTF-8). */
export function mutatedText(valid: fc.Arbitrary<string>): fc.Arbitrary<Uint8Array> {
  return mutatedBytes(valid.map((text) => new TextEncoder().encode(text)));
}
