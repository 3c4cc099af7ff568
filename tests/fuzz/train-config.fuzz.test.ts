/**
 * Training configs three ways: the YAML/JSON file of `expertune train` with `--set` overrides
 * (readConfigFile), the parsed object (parseTrainConfig, then the engine adapter it selects), and
 * the API's job create request (resolveJobRequest and the 422 it becomes). Anything invalid is a
 * ConfigError (CLI) or a zod error turned into an ApiException (API), naming the key.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import {
  ConfigError,
  DATA_FORMATS,
  parseTrainConfig,
  resolveJobRequest,
  TRAIN_METHODS,
  type TrainConfig,
} from '@expertune/contracts';
import { adapterConfigFor } from '@expertune/trainer';
import fc from 'fast-check';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { stringify as toYaml } from 'yaml';

import { ApiException } from '../../apps/api/src/common/api-exception.js';
import { readConfigFile } from '../../libs/trainer/src/config-file.js';
import { fuzzParser, logFigures } from './harness.js';
import { mutatedJson, mutatedText, nested, oddString } from './mutations.js';

const methodSection = (method: string) =>
  fc.record(
    {
      rank: fc.integer({ min: 1, max: 16 }),
      alpha: fc.constantFrom(1, 8, 32),
      dropout: fc.constantFrom(0, 0.05),
      target_modules: fc.subarray(['q_proj', 'k_proj', 'v_proj', 'o_proj'], { minLength: 1 }),
      ...(method === 'mola'
        ? {
            num_experts: fc.oneof(
              fc.integer({ min: 1, max: 4 }),
              fc.constant([2, 2, 2, 2]),
              fc.constant({ preset: 'triangle', scale: 1 }),
            ),
            top_k: fc.constantFrom(1, [1, 1, 1, 1]),
          }
        : {}),
      ...(method === 'loramoe' || method === 'dynmole' ? { num_experts: fc.integer({ min: 2, max: 4 }) } : {}),
      ...(method === 'flylora' ? { top_k: fc.constantFrom(1, 2) } : {}),
    },
    { requiredKeys: [] },
  );

/** The sections a training config and a job request share. */
const hyperparameters = fc.record(
  {
    data: fc.record(
      {
        format: fc.constantFrom(...DATA_FORMATS),
        max_seq_len: fc.integer({ min: 1, max: 4096 }),
        packing: fc.boolean(),
        validation_fraction: fc.constantFrom(0, 0.1),
        columns: fc.constant({ text: 'body' }),
      },
      { requiredKeys: [] },
    ),
    training: fc.record(
      { max_steps: fc.integer({ min: 1, max: 100 }), micro_batch_size: fc.integer({ min: 1, max: 8 }) },
      { requiredKeys: [] },
    ),
    optimizer: fc.record(
      { lr: fc.constantFrom(1e-4, 2e-4), weight_decay: fc.constantFrom(0, 0.01) },
      { requiredKeys: [] },
    ),
    schedule: fc.record(
      { kind: fc.constantFrom('constant', 'linear', 'cosine'), warmup_steps: fc.nat(10) },
      { requiredKeys: [] },
    ),
  },
  { requiredKeys: [] },
);

const validTrainConfig = fc
  .tuple(fc.constantFrom(...TRAIN_METHODS), hyperparameters, fc.nat(0xffffffff))
  .chain(([method, sections, seed]) =>
    (method === 'full' ? fc.constant(undefined) : methodSection(method)).map((section) => {
      const { data, ...rest } = sections;
      return {
        model: './models/tiny',
        method,
        seed,
        ...(section ? { [method]: section } : {}),
        ...rest,
        data: { train: './train.jsonl', ...data },
        output_dir: './runs/fuzz',
      };
    }),
  );

/** YAML that attacks the parser: aliases, tags, merge keys, deep flow nesting, tabs, duplicate keys. */
const hostileYaml = fc.constantFrom(
  'a: &a [x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]\nc: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]\nd: [*c, *c, *c, *c, *c, *c, *c, *c, *c]\n',
  'model: !!js/function "function () { return 1 }"\n',
  'base: &base {model: m}\n<<: *base\noutput_dir: o\n',
  `model: ${'['.repeat(2_000)}`,
  `model: ${'['.repeat(1_000)}${']'.repeat(1_000)}`,
  'model: a\nmodel: b\n',
  '\tmodel: tabbed\n',
  '--- \n...\n---\nmodel: two documents\n',
  '- a list\n- at the root\n',
  '42\n',
  'model: *undefined_alias\n',
  '%YAML 9.9\n---\nmodel: x\n',
  '\ufeffmodel: bom\n',
);

const yamlFile = fc.oneof(
  mutatedText(validTrainConfig.map((config) => toYaml(config))),
  mutatedText(validTrainConfig.map((config) => JSON.stringify(config, null, 2))),
  hostileYaml.map((text) => new TextEncoder().encode(text)),
);

const override = fc.oneof(
  fc.constantFrom(
    'optimizer.lr=1e-3',
    'training.max_steps=5',
    'lora.target_modules=[q_proj, v_proj]',
    'method=mola',
    '__proto__.polluted=yes',
    'constructor.prototype.polluted=yes',
    'data.__proto__.polluted=yes',
    '=1',
    'no-equals',
    'a..b=1',
    'training.max_steps=[[[',
    'model=',
  ),
  fc.tuple(oddString, oddString).map(([key, value]) => `${key}=${value}`),
);

function checkConfig(config: TrainConfig): void {
  expect(TRAIN_METHODS).toContain(config.method);
  expect(typeof config.model).toBe('string');
  expect(Number.isSafeInteger(config.data.max_seq_len) && config.data.max_seq_len > 0).toBe(true);
}

/** Nothing a config holds may reach Object.prototype. */
function checkNoPollution(): void {
  expect(Object.keys(Object.prototype)).toEqual([]);
  expect(({} as Record<string, unknown>)['polluted']).toBeUndefined();
}

afterEach(() => {
  for (const key of Object.keys(Object.prototype)) delete (Object.prototype as Record<string, unknown>)[key];
});

const dir = mkdtempSync(join(tmpdir(), 'expertune-fuzz-config-file-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('training config fuzzing', () => {
  it('readConfigFile + parseTrainConfig: a training config or a ConfigError naming the key', async () => {
    const file = join(dir, 'train.yaml');
    logFigures(
      await fuzzParser({
        parser: 'training config file (YAML/JSON, --set)',
        input: fc.tuple(yamlFile, fc.array(override, { maxLength: 3 })),
        parse: ([bytes, sets]) => {
          writeFileSync(file, bytes);
          try {
            const raw = readConfigFile(file, sets, ['model', 'output_dir', 'data.train', 'data.validation']);
            return parseTrainConfig(raw, file);
          } finally {
            checkNoPollution();
          }
        },
        expected: [ConfigError],
        check: checkConfig,
        shortRuns: 1000,
      }),
    );
  });

  it('parseTrainConfig + adapterConfigFor: a config and its engine adapter, or a ConfigError', async () => {
    logFigures(
      await fuzzParser({
        parser: 'training config object (parseTrainConfig)',
        input: fc.tuple(mutatedJson(validTrainConfig), fc.integer({ min: 1, max: 8 })),
        parse: ([json, layers]) => {
          const config = parseTrainConfig(json);
          checkConfig(config);
          adapterConfigFor(config, layers);
          return config;
        },
        expected: [ConfigError],
        shortRuns: 2000,
      }),
    );
  });

  it('resolveJobRequest: a resolved job or a 422 ApiException naming the parameter', async () => {
    const validRequest = fc
      .tuple(validTrainConfig, fc.constantFrom('model-1', 'm_2'), fc.constantFrom('ds-1', 'DS_2'))
      .map(([config, model, dataset]) => {
        const { model: _path, output_dir: _out, seed, method, data, ...sections } = config as Record<string, unknown>;
        const { train: _train, ...dataSection } = data as Record<string, unknown>;
        return {
          model,
          training_file: dataset,
          method,
          seed,
          hyperparameters: { ...sections, data: dataSection },
          suffix: 'fuzz',
          metadata: { run: 'fuzz' },
          accelerator: 'cpu',
        };
      });
    logFigures(
      await fuzzParser({
        parser: 'job create request (API)',
        input: mutatedJson(validRequest),
        parse: (body) => {
          const result = resolveJobRequest(body ?? {});
          if (result.success) return result.data;
          const error = ApiException.fromZod(result.error);
          expect(error.status).toBe(422);
          expect(error.message.length).toBeGreaterThan(0);
          throw error;
        },
        expected: [ApiException],
        check: (request) => expect(TRAIN_METHODS).toContain(request.method),
        shortRuns: 2000,
      }),
    );
  });
});

describe('training config file: found while fuzzing', () => {
  const file = join(dir, 'regression.yaml');
  const read = (text: string, sets: string[] = []) => {
    writeFileSync(file, text);
    return readConfigFile(file, sets, ['model']);
  };

  it('--set __proto__.polluted=yes is refused instead of writing to Object.prototype', () => {
    expect(() => read('model: m\n', ['__proto__.polluted=yes'])).toThrow(ConfigError);
    expect(() => read('model: m\n', ['constructor.prototype.polluted=yes'])).toThrow(
      /"constructor" is not a config key/,
    );
    checkNoPollution();
  });

  it('a file whose root is not a mapping is a ConfigError, not a TypeError from --set', () => {
    expect(() => read('42\n', ['optimizer.lr=1'])).toThrow(/\(root\): expected a mapping of keys to values, found 42/);
  });

  it('YAML syntax errors are ConfigErrors with the line and column', () => {
    expect(() => read('model: [\n')).toThrow(/\(file\): not valid YAML at line 2, column 1/);
    expect(() => read(`model: ${'['.repeat(2_000)}`)).toThrow(ConfigError);
  });
});

describe('job create request: found by fuzzing', () => {
  it('a method nested 100,000 deep is a 422 naming "method", not a RangeError from the error message', () => {
    const body = { model: 'm', training_file: 'ds-1', method: nested(100_000, 'array') };
    const result = resolveJobRequest(body);
    expect(result.success).toBe(false);
    if (result.success) return;
    const error = ApiException.fromZod(result.error);
    expect(error.status).toBe(422);
    expect(error.message).toContain('method: unknown method a value nested too deep to show');
  });
});
