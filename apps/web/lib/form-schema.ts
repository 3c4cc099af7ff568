/**
 * The new-job form is generated, never written field by field: the shared zod schemas of
 * libs/contracts go through `z.toJSONSchema` (input side: defaults and descriptions included) and
 * each property becomes a field spec. A new hyperparameter in contracts shows up in the form with
 * its default, range and one-line description without touching the console.
 */
import {
  ADAPTER_METHOD_NAMES,
  jobCreateRequestSchema,
  jobHyperparametersSchema,
  METHOD_SECTION_SCHEMAS,
  TRAIN_METHODS,
  type AdapterMethodName,
  type TrainMethod,
} from '@expertune/contracts';
import { z } from 'zod';

/** The subset of JSON Schema that z.toJSONSchema writes for our schemas. */
export interface JsonSchema {
  type?: string | string[];
  description?: string;
  default?: unknown;
  enum?: unknown[];
  const?: unknown;
  properties?: Record<string, JsonSchema>;
  required?: string[];
  items?: JsonSchema;
  anyOf?: JsonSchema[];
  oneOf?: JsonSchema[];
  minimum?: number;
  maximum?: number;
  exclusiveMinimum?: number;
  exclusiveMaximum?: number;
  minItems?: number;
}

interface FieldBase {
  key: string;
  /** Key path from the request root, e.g. ['hyperparameters', 'mola', 'rank']. */
  path: string[];
  label: string;
  description: string;
  default?: unknown;
  /** May be left empty (the API then leaves it out). */
  optional: boolean;
}

export interface NumberField extends FieldBase {
  kind: 'number';
  integer: boolean;
  /** Human range, e.g. "> 0", "0 ≤ x < 1" (JS's MAX_SAFE_INTEGER bound left out). */
  range: string;
}
export interface BooleanField extends FieldBase {
  kind: 'boolean';
}
export interface EnumField extends FieldBase {
  kind: 'enum';
  options: string[];
}
export interface StringField extends FieldBase {
  kind: 'string';
}
export interface MultiEnumField extends FieldBase {
  kind: 'multi';
  options: string[];
}
export interface NumberListField extends FieldBase {
  kind: 'list';
  integer: boolean;
}
export interface ObjectField extends FieldBase {
  kind: 'object';
  fields: FieldSpec[];
}
export interface UnionField extends FieldBase {
  kind: 'union';
  variants: FieldSpec[];
}
export type FieldSpec =
  NumberField | BooleanField | EnumField | StringField | MultiEnumField | NumberListField | ObjectField | UnionField;

const SAFE = Number.MAX_SAFE_INTEGER;

function typeOf(schema: JsonSchema): string | undefined {
  if (Array.isArray(schema.type)) return schema.type.find((t) => t !== 'null');
  return schema.type;
}

export function rangeText(schema: JsonSchema): string {
  const lower =
    schema.exclusiveMinimum !== undefined
      ? { v: schema.exclusiveMinimum, op: '<' }
      : schema.minimum !== undefined
        ? { v: schema.minimum, op: '≤' }
        : null;
  const upperValue = schema.exclusiveMaximum ?? schema.maximum;
  const upper =
    upperValue !== undefined && upperValue < SAFE
      ? { v: upperValue, op: schema.exclusiveMaximum !== undefined ? '<' : '≤' }
      : null;
  if (lower && upper) return `${lower.v} ${lower.op} x ${upper.op} ${upper.v}`;
  if (lower) return `${lower.op === '<' ? '>' : '≥'} ${lower.v}`;
  if (upper) return `${upper.op} ${upper.v}`;
  return '';
}

function humanize(key: string): string {
  return key.replace(/_/g, ' ');
}

/** One field from one JSON-schema property. */
export function fieldFromSchema(key: string, schema: JsonSchema, path: string[], optional: boolean): FieldSpec {
  const base: FieldBase = {
    key,
    path,
    label: humanize(key),
    description: schema.description ?? '',
    optional: optional && schema.default === undefined,
    ...(schema.default !== undefined ? { default: schema.default } : {}),
  };
  const variants = schema.anyOf ?? schema.oneOf;
  if (variants) {
    return {
      ...base,
      kind: 'union',
      variants: variants.map((variant, i) => {
        const kind = typeOf(variant) ?? `option ${i + 1}`;
        const label = kind === 'integer' || kind === 'number' ? 'one number' : kind === 'array' ? 'per layer' : kind;
        return { ...fieldFromSchema(key, variant, path, false), label, default: undefined };
      }),
    };
  }
  if (schema.enum) return { ...base, kind: 'enum', options: schema.enum.map(String) };
  switch (typeOf(schema)) {
    case 'integer':
    case 'number':
      return { ...base, kind: 'number', integer: typeOf(schema) === 'integer', range: rangeText(schema) };
    case 'boolean':
      return { ...base, kind: 'boolean' };
    case 'array': {
      const items = schema.items ?? {};
      if (items.enum) return { ...base, kind: 'multi', options: items.enum.map(String) };
      return { ...base, kind: 'list', integer: typeOf(items) === 'integer' };
    }
    case 'object':
      return { ...base, kind: 'object', fields: fieldsFromSchema(schema, path) };
    default:
      return { ...base, kind: 'string' };
  }
}

/** The fields of an object schema, in declaration order. */
export function fieldsFromSchema(schema: JsonSchema, path: string[] = []): FieldSpec[] {
  const required = new Set(schema.required ?? []);
  return Object.entries(schema.properties ?? {}).map(([key, property]) =>
    fieldFromSchema(key, property, [...path, key], !required.has(key)),
  );
}

/** The hyperparameter sections besides the method's own, in the order the form shows them. */
export const COMMON_SECTIONS = ['training', 'optimizer', 'schedule', 'data', 'eval'] as const;
export type CommonSection = (typeof COMMON_SECTIONS)[number];
export type SectionName = AdapterMethodName | CommonSection;

let cachedHyperparameters: JsonSchema | null = null;

/** The JSON schema of the request's `hyperparameters` (computed once). */
export function hyperparametersJsonSchema(): JsonSchema {
  cachedHyperparameters ??= z.toJSONSchema(jobHyperparametersSchema, {
    io: 'input',
    unrepresentable: 'any',
  }) as unknown as JsonSchema;
  return cachedHyperparameters;
}

/** The field specs of one hyperparameters section, paths rooted at the job request. */
export function sectionFields(section: SectionName): FieldSpec[] {
  const schema = hyperparametersJsonSchema().properties?.[section];
  if (!schema) throw new RangeError(`no hyperparameters section ${section}`);
  return fieldsFromSchema(schema, ['hyperparameters', section]);
}

export interface MethodOption {
  method: TrainMethod;
  description: string;
}

/** The method picker's options with the one-line description of each method's section. */
export function methodOptions(): MethodOption[] {
  return TRAIN_METHODS.map((method) => ({
    method,
    description:
      method === 'full'
        ? 'Full fine-tuning: every base-model weight is trained (no adapter section)'
        : (METHOD_SECTION_SCHEMAS[method as AdapterMethodName].description ?? method),
  }));
}

export function isAdapterMethod(method: string): method is AdapterMethodName {
  return (ADAPTER_METHOD_NAMES as readonly string[]).includes(method);
}

/** The defaults of a list of fields as a value object (optional fields without default left out). */
export function defaultsOf(fields: readonly FieldSpec[]): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const field of fields) {
    if (field.kind === 'object') {
      const inner = defaultsOf(field.fields);
      out[field.key] =
        field.default && typeof field.default === 'object' && !Array.isArray(field.default)
          ? { ...inner, ...(field.default as Record<string, unknown>) }
          : inner;
    } else if (field.default !== undefined) out[field.key] = structuredClone(field.default);
  }
  return out;
}

/** Which variant of a union field a value belongs to (by JSON type), or 0. */
export function variantIndex(field: UnionField, value: unknown): number {
  const index = field.variants.findIndex((variant) => {
    if (variant.kind === 'number') return typeof value === 'number';
    if (variant.kind === 'list' || variant.kind === 'multi') return Array.isArray(value);
    if (variant.kind === 'object') return value !== null && typeof value === 'object' && !Array.isArray(value);
    if (variant.kind === 'boolean') return typeof value === 'boolean';
    return typeof value === 'string';
  });
  return index < 0 ? 0 : index;
}

/**
 * What a number box holds: '' → undefined (left out), a number → that number, anything else stays
 * text so that the schema reports it ("expected number") where the user is typing.
 */
export function parseNumberInput(text: string): number | string | undefined {
  const trimmed = text.trim();
  if (trimmed === '') return undefined;
  const n = Number(trimmed);
  return Number.isFinite(n) ? n : text;
}

/** "2, 4, 6,8" → [2, 4, 6, 8]; a bad entry keeps the text (the schema reports it). */
export function parseNumberList(text: string): number[] | string | undefined {
  const trimmed = text.trim();
  if (trimmed === '') return undefined;
  const parts = trimmed.split(/[\s,]+/).filter(Boolean);
  const numbers = parts.map(Number);
  return numbers.every(Number.isFinite) ? numbers : text;
}

/** The value at a key path, or undefined. */
export function getPath(root: unknown, path: readonly string[]): unknown {
  let node = root;
  for (const key of path) {
    if (node === null || typeof node !== 'object') return undefined;
    node = (node as Record<string, unknown>)[key];
  }
  return node;
}

/** A copy of `root` with the value at `path` replaced (undefined removes the key). */
export function setPath<T>(root: T, path: readonly string[], value: unknown): T {
  if (path.length === 0) return value as T;
  const [head, ...rest] = path as [string, ...string[]];
  const node = root !== null && typeof root === 'object' ? (root as Record<string, unknown>) : {};
  const copy: Record<string, unknown> = { ...node };
  const next = setPath(node[head], rest, value);
  if (next === undefined) delete copy[head];
  else copy[head] = next;
  return copy as T;
}

export interface JobFormState {
  model: string;
  training_file: string;
  validation_file: string;
  method: TrainMethod;
  seed: number | string | undefined;
  suffix: string;
  /** The accelerator class whose queue takes the job ('' = the API's default, cpu). */
  accelerator: string;
  /** Section name → that section's values (every method's section kept, so switching back keeps edits). */
  sections: Record<string, Record<string, unknown>>;
}

/** A fresh form: every section at its defaults. */
export function initialFormState(method: TrainMethod = 'lora'): JobFormState {
  const sections: Record<string, Record<string, unknown>> = {};
  for (const name of [...ADAPTER_METHOD_NAMES, ...COMMON_SECTIONS]) sections[name] = defaultsOf(sectionFields(name));
  return { model: '', training_file: '', validation_file: '', method, seed: 0, suffix: '', accelerator: '', sections };
}

/** The POST /v1/jobs body of a form: only the chosen method's section is sent. */
export function requestFromForm(state: JobFormState): Record<string, unknown> {
  const hyperparameters: Record<string, unknown> = {};
  if (isAdapterMethod(state.method)) hyperparameters[state.method] = state.sections[state.method];
  for (const name of COMMON_SECTIONS) hyperparameters[name] = state.sections[name];
  return {
    model: state.model,
    training_file: state.training_file,
    ...(state.validation_file ? { validation_file: state.validation_file } : {}),
    method: state.method,
    hyperparameters,
    seed: state.seed,
    ...(state.suffix ? { suffix: state.suffix } : {}),
    ...(state.accelerator ? { accelerator: state.accelerator } : {}),
  };
}

/** Problems keyed by dotted path ('hyperparameters.mola.rank'); empty when the request is valid. */
export function validateRequest(request: unknown): Map<string, string> {
  const result = jobCreateRequestSchema.safeParse(request);
  const problems = new Map<string, string>();
  if (result.success) return problems;
  for (const issue of result.error.issues) {
    const key = issue.path.map(String).join('.') || '(request)';
    if (!problems.has(key)) problems.set(key, issue.message);
  }
  return problems;
}

/** The problem at a field, or one nested under it (a union's object variant). */
export function problemAt(problems: ReadonlyMap<string, string>, path: readonly string[]): string | undefined {
  const key = path.join('.');
  const exact = problems.get(key);
  if (exact) return exact;
  for (const [k, message] of problems) if (k.startsWith(`${key}.`)) return `${k.slice(key.length + 1)}: ${message}`;
  return undefined;
}
