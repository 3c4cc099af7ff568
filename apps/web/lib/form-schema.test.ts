import { TRAIN_METHODS } from '@expertune/contracts';
import { describe, expect, it } from 'vitest';

import {
  getPath,
  initialFormState,
  methodOptions,
  parseNumberInput,
  parseNumberList,
  problemAt,
  requestFromForm,
  sectionFields,
  setPath,
  validateRequest,
  variantIndex,
  type FieldSpec,
  type UnionField,
} from './form-schema';

const byKey = (fields: FieldSpec[], key: string) => fields.find((f) => f.key === key)!;

describe('fields generated from the zod schemas', () => {
  it("LoRA's section: rank, alpha, dropout, use_rslora, target_modules with defaults and descriptions", () => {
    const fields = sectionFields('lora');
    expect(fields.map((f) => [f.key, f.kind])).toEqual([
      ['rank', 'number'],
      ['alpha', 'number'],
      ['dropout', 'number'],
      ['use_rslora', 'boolean'],
      ['target_modules', 'multi'],
    ]);
    expect(byKey(fields, 'rank')).toMatchObject({
      path: ['hyperparameters', 'lora', 'rank'],
      default: 16,
      integer: true,
      range: '> 0',
      description: 'Rank r of each adapter',
    });
    expect(byKey(fields, 'dropout')).toMatchObject({ range: '0 ≤ x < 1', integer: false, default: 0 });
    expect(byKey(fields, 'target_modules')).toMatchObject({
      options: ['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj'],
    });
  });

  it("MoLA's num_experts is a union: one number, a list per layer, or a preset object", () => {
    const field = byKey(sectionFields('mola'), 'num_experts') as UnionField;
    expect(field.kind).toBe('union');
    expect(field.variants.map((v) => v.kind)).toEqual(['number', 'list', 'object']);
    const preset = field.variants[2]!;
    expect(preset.kind === 'object' && preset.fields.map((f) => [f.key, f.kind])).toEqual([
      ['preset', 'enum'],
      ['scale', 'number'],
    ]);
    expect(variantIndex(field, field.default)).toBe(2);
    expect(variantIndex(field, [2, 4])).toBe(1);
    expect(variantIndex(field, 4)).toBe(0);
    // nested sections become object fields with their own defaults
    expect(byKey(sectionFields('mola'), 'balance')).toMatchObject({ kind: 'object' });
  });

  it('each method has a one-line description for the picker', () => {
    const options = methodOptions();
    expect(options.map((o) => o.method)).toEqual([...TRAIN_METHODS]);
    for (const o of options) expect(o.description.length).toBeGreaterThan(10);
    expect(options.find((o) => o.method === 'flylora')!.description).toMatch(/FlyLoRA/);
  });

  it('optional fields without a default are marked optional (training.max_steps)', () => {
    expect(byKey(sectionFields('training'), 'max_steps')).toMatchObject({ optional: true, kind: 'number' });
    expect(byKey(sectionFields('training'), 'epochs')).toMatchObject({ optional: false, default: 1 });
  });
});

describe('the request built from the form', () => {
  const filled = () => ({ ...initialFormState('lora'), model: 'model-1', training_file: 'ds-1' });

  it('is valid with every default and sends only the chosen method’s section', () => {
    const request = requestFromForm({ ...filled(), method: 'mola' });
    expect(validateRequest(request).size).toBe(0);
    const hyper = request.hyperparameters as Record<string, unknown>;
    expect(Object.keys(hyper).sort()).toEqual(['data', 'eval', 'mola', 'optimizer', 'schedule', 'training']);
    expect(hyper.mola).toMatchObject({ rank: 8, num_experts: { preset: 'inverted_triangle', scale: 1 } });
  });

  it('sends no method section for full fine-tuning', () => {
    const request = requestFromForm({ ...filled(), method: 'full' });
    expect(Object.keys(request.hyperparameters as object)).not.toContain('lora');
    expect(validateRequest(request).size).toBe(0);
  });

  it('refuses an invalid hyperparameter before submit, at its path', () => {
    const state = filled();
    state.sections = setPath(state.sections, ['lora', 'rank'], 0);
    const problems = validateRequest(requestFromForm(state));
    expect(problems.get('hyperparameters.lora.rank')).toMatch(/Too small/);
    state.sections = setPath(state.sections, ['lora', 'rank'], 'abc');
    expect(validateRequest(requestFromForm(state)).get('hyperparameters.lora.rank')).toMatch(/expected number/);
  });

  it('applies the rules between fields (FlyLoRA top_k must divide rank)', () => {
    const state = { ...filled(), method: 'flylora' as const };
    state.sections = setPath(state.sections, ['flylora', 'top_k'], 5);
    expect(validateRequest(requestFromForm(state)).get('hyperparameters.flylora.top_k')).toBe(
      'must divide rank (32), got 5',
    );
  });

  it('finds a problem nested under a union field', () => {
    const problems = new Map([['hyperparameters.mola.num_experts.preset', 'Invalid option']]);
    expect(problemAt(problems, ['hyperparameters', 'mola', 'num_experts'])).toBe('preset: Invalid option');
    expect(problemAt(problems, ['hyperparameters', 'mola', 'rank'])).toBeUndefined();
  });
});

describe('number boxes and paths', () => {
  it('parses numbers, keeps half-typed text, and treats empty as unset', () => {
    expect(parseNumberInput('2e-4')).toBe(0.0002);
    expect(parseNumberInput(' 16 ')).toBe(16);
    expect(parseNumberInput('1e-')).toBe('1e-');
    expect(parseNumberInput('')).toBeUndefined();
    expect(parseNumberList('2, 4,6 8')).toEqual([2, 4, 6, 8]);
    expect(parseNumberList('2, x')).toBe('2, x');
  });

  it('reads and writes nested values without mutating', () => {
    const root = { a: { b: 1 } };
    const next = setPath(root, ['a', 'c', 'd'], 2);
    expect(next).toEqual({ a: { b: 1, c: { d: 2 } } });
    expect(root).toEqual({ a: { b: 1 } });
    expect(getPath(next, ['a', 'c', 'd'])).toBe(2);
    expect(setPath(next, ['a', 'b'], undefined)).toEqual({ a: { c: { d: 2 } } });
  });
});
