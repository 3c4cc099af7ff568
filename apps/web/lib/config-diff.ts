/**
 * The compare page's config table: each run's config flattened to dotted keys, one row per key,
 * and the rows whose values differ between runs.
 */

export type Flat = Record<string, string>;

/** `{a: {b: 1, c: [2, 3]}}` → `{'a.b': '1', 'a.c': '[2,3]'}`; arrays stay one cell (target_modules). */
export function flattenConfig(value: unknown, prefix = '', out: Flat = {}): Flat {
  if (value !== null && typeof value === 'object' && !Array.isArray(value)) {
    const entries = Object.entries(value as Record<string, unknown>);
    if (entries.length === 0 && prefix) out[prefix] = '{}';
    for (const [key, inner] of entries) flattenConfig(inner, prefix ? `${prefix}.${key}` : key, out);
    return out;
  }
  if (prefix) out[prefix] = value === undefined ? '' : typeof value === 'string' ? value : JSON.stringify(value);
  return out;
}

export interface DiffRow {
  key: string;
  /** One cell per run; '—' where the run has no such key (another method's section). */
  values: string[];
  differs: boolean;
}

export const MISSING = '—';

/** Rows for every key of any run, sorted by key; `differsOnly` keeps the rows that differ. */
export function configDiff(configs: readonly unknown[], differsOnly = false): DiffRow[] {
  const flats = configs.map((c) => flattenConfig(c));
  const keys = new Set<string>();
  for (const flat of flats) for (const key of Object.keys(flat)) keys.add(key);
  const rows = [...keys].sort().map((key) => {
    const values = flats.map((flat) => (key in flat ? flat[key]! : MISSING));
    return { key, values, differs: values.some((v) => v !== values[0]) };
  });
  return differsOnly ? rows.filter((row) => row.differs) : rows;
}
