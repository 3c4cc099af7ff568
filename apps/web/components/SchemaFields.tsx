'use client';
/**
 * Renders the field specs of lib/form-schema: one labelled control per field, its default and
 * range, the `.describe()` text underneath, and the schema's problem for it (aria-invalid).
 */
import { useEffect, useState, type ReactNode } from 'react';

import {
  getPath,
  parseNumberInput,
  parseNumberList,
  problemAt,
  variantIndex,
  type FieldSpec,
  type UnionField,
} from '../lib/form-schema';

export interface FieldsProps {
  fields: readonly FieldSpec[];
  /** The section's values; a field's value is at its path below `root`. */
  values: unknown;
  /** How many leading path segments of a field locate the section (['hyperparameters', 'mola'] → 2). */
  root: number;
  problems: ReadonlyMap<string, string>;
  onChange: (path: string[], value: unknown) => void;
}

const idOf = (path: readonly string[]) => `f-${path.join('-')}`;

export function SchemaFields({ fields, values, root, problems, onChange }: FieldsProps) {
  return (
    <>
      {fields.map((field) => (
        <SchemaField
          key={field.key}
          field={field}
          values={values}
          root={root}
          problems={problems}
          onChange={onChange}
        />
      ))}
    </>
  );
}

function defaultText(value: unknown): string {
  if (value === undefined) return '';
  // A list reads as words (and wraps on a phone); other objects as JSON.
  if (Array.isArray(value)) return value.map((v) => (typeof v === 'object' ? JSON.stringify(v) : String(v))).join(', ');
  if (typeof value === 'object') return JSON.stringify(value);
  return String(value);
}

export function SchemaField({
  field,
  values,
  root,
  problems,
  onChange,
}: Omit<FieldsProps, 'fields'> & { field: FieldSpec }) {
  const local = field.path.slice(root);
  const value = getPath(values, local);
  const id = idOf(field.path);
  const problem = field.kind === 'object' ? undefined : problemAt(problems, field.path);
  const helpId = `${id}-help`;
  const problemId = `${id}-problem`;
  const describedBy =
    [field.description ? helpId : '', problem ? problemId : ''].filter(Boolean).join(' ') || undefined;
  const common = {
    id,
    name: field.path.join('.'),
    'aria-invalid': problem ? true : undefined,
    'aria-describedby': describedBy,
    'data-testid': `field-${field.path.join('.')}`,
  } as const;
  const help = (
    <>
      {field.description && (
        <span id={helpId} className="help">
          {field.description}
          {field.default !== undefined && field.kind !== 'object' && <> · default {defaultText(field.default)}</>}
          {field.kind === 'number' && field.range && <> · {field.range}</>}
        </span>
      )}
      {problem && (
        <span id={problemId} className="problem" role="alert">
          {problem}
        </span>
      )}
    </>
  );

  /** A control with its label above and its help and problem below. */
  const labelled = (control: ReactNode) => (
    <div className="field">
      <label htmlFor={id}>{field.label}</label>
      {control}
      {help}
    </div>
  );

  switch (field.kind) {
    case 'number':
    case 'list':
      return labelled(
        <NumberBox
          {...common}
          value={value}
          placeholder={
            field.kind === 'list'
              ? 'comma-separated, e.g. 2, 4, 6, 8'
              : field.optional
                ? 'not set'
                : defaultText(field.default)
          }
          parse={field.kind === 'list' ? parseNumberList : parseNumberInput}
          onValue={(v) => onChange(field.path, v)}
        />,
      );
    case 'boolean':
      return (
        <div className="field">
          <label className="inline" htmlFor={id}>
            <input
              {...common}
              type="checkbox"
              checked={value === true}
              onChange={(e) => onChange(field.path, e.target.checked)}
            />{' '}
            <strong>{field.label}</strong>
          </label>
          {help}
        </div>
      );
    case 'enum':
      return labelled(
        <select
          {...common}
          value={typeof value === 'string' ? value : ''}
          onChange={(e) => onChange(field.path, e.target.value === '' ? undefined : e.target.value)}
        >
          {(field.optional || value === undefined) && (
            <option value="">{field.optional ? 'not set' : 'choose…'}</option>
          )}
          {field.options.map((o) => (
            <option key={o} value={o}>
              {o}
            </option>
          ))}
        </select>,
      );
    case 'string':
      return labelled(
        <input
          {...common}
          type="text"
          value={typeof value === 'string' ? value : ''}
          placeholder={field.optional ? 'not set' : ''}
          onChange={(e) => onChange(field.path, e.target.value === '' ? undefined : e.target.value)}
        />,
      );
    case 'multi': {
      const chosen = Array.isArray(value) ? (value as string[]) : [];
      return (
        <fieldset className="field" aria-describedby={describedBy} data-testid={common['data-testid']}>
          <legend>{field.label}</legend>
          <div className="checks">
            {field.options.map((o) => (
              <label key={o} htmlFor={`${id}-${o}`}>
                <input
                  id={`${id}-${o}`}
                  type="checkbox"
                  checked={chosen.includes(o)}
                  onChange={(e) =>
                    onChange(
                      field.path,
                      e.target.checked
                        ? field.options.filter((x) => x === o || chosen.includes(x))
                        : chosen.filter((x) => x !== o),
                    )
                  }
                />{' '}
                {o}
              </label>
            ))}
          </div>
          {help}
        </fieldset>
      );
    }
    case 'object':
      return (
        <fieldset className="field" data-testid={common['data-testid']}>
          <legend>{field.label}</legend>
          {field.description && <span className="help">{field.description}</span>}
          <div className="form-grid">
            <SchemaFields fields={field.fields} values={values} root={root} problems={problems} onChange={onChange} />
          </div>
        </fieldset>
      );
    case 'union':
      return (
        <UnionBox
          field={field}
          value={value}
          values={values}
          root={root}
          problems={problems}
          onChange={onChange}
          help={help}
        />
      );
  }
}

/** A union (MoLA's num_experts: one number, a list per layer, or a preset): a kind picker, then that kind's control. */
function UnionBox({
  field,
  value,
  values,
  root,
  problems,
  onChange,
  help,
}: Omit<FieldsProps, 'fields'> & { field: UnionField; value: unknown; help: ReactNode }) {
  const [index, setIndex] = useState(() => variantIndex(field, value ?? field.default));
  const variant = field.variants[index]!;
  const id = idOf(field.path);
  return (
    <fieldset className="field" data-testid={`field-${field.path.join('.')}`}>
      <legend>{field.label}</legend>
      <label htmlFor={`${id}-kind`} className="inline">
        as
      </label>{' '}
      <select
        id={`${id}-kind`}
        value={index}
        onChange={(e) => {
          const next = Number(e.target.value);
          setIndex(next);
          const v = field.variants[next]!;
          // Start the new kind from the schema's default when it is of that kind.
          onChange(
            field.path,
            variantIndex(field, field.default) === next
              ? structuredClone(field.default)
              : v.kind === 'object'
                ? {}
                : undefined,
          );
        }}
      >
        {field.variants.map((v, i) => (
          <option key={i} value={i}>
            {v.label}
            {v.description ? `: ${v.description}` : ''}
          </option>
        ))}
      </select>
      {variant.kind === 'object' ? (
        <div className="form-grid">
          <SchemaFields fields={variant.fields} values={values} root={root} problems={problems} onChange={onChange} />
        </div>
      ) : (
        <SchemaField
          field={{ ...variant, label: `${field.label} (${variant.label})`, description: '' }}
          values={values}
          root={root}
          problems={problems}
          onChange={onChange}
        />
      )}
      {help}
    </fieldset>
  );
}

/**
 * A text box for numbers: keeps what the user typed ("1e-" on the way to "1e-4") and hands the
 * parsed value up on every keystroke, so the schema's verdict follows the typing.
 */
function NumberBox({
  value,
  parse,
  onValue,
  ...rest
}: {
  value: unknown;
  parse: (text: string) => unknown;
  onValue: (value: unknown) => void;
  placeholder?: string;
  id: string;
  name: string;
  'aria-invalid'?: boolean;
  'aria-describedby'?: string;
  'data-testid'?: string;
}) {
  const shown = value === undefined ? '' : Array.isArray(value) ? value.join(', ') : String(value);
  const [text, setText] = useState(shown);
  // Follow outside changes (a reset, a method switch) without fighting the user's own typing.
  useEffect(() => {
    if (parse(text) !== value && JSON.stringify(parse(text)) !== JSON.stringify(value)) setText(shown);
  }, [shown]);
  return (
    <input
      {...rest}
      type="text"
      inputMode="decimal"
      autoComplete="off"
      value={text}
      onChange={(e) => {
        setText(e.target.value);
        onValue(parse(e.target.value));
      }}
    />
  );
}
