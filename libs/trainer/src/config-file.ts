/**
 * Config files of `expertune train` and `pretrain`: YAML (JSON is YAML too) with `--set
 * key.path=value` overrides, relative paths made absolute against the file's folder. Every
 * problem is a ConfigError naming the file and the key, or the line and column of a YAML error;
 * the schema checks come after (parseTrainConfig, parsePretrainConfig).
 */
import { existsSync, readFileSync } from 'node:fs';
import { resolve } from 'node:path';

import { ConfigError } from '@expertune/contracts';
import { showValue } from '@expertune/formats';
import { parse as parseYaml } from 'yaml';

/** Keys that would reach Object.prototype through an override path (found by fuzzing). */
const UNSAFE_KEYS = new Set(['__proto__', 'constructor', 'prototype']);

function configError(heading: string, path: string, message: string): ConfigError {
  return new ConfigError(`${heading}:\n  ${path}: ${message}`, [{ path, message }]);
}

function isMapping(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/** A YAML document, or a ConfigError with the position the parser reports. */
function parseYamlDocument(text: string, heading: string, path: string): unknown {
  try {
    return parseYaml(text);
  } catch (error) {
    const at = (error as { linePos?: Array<{ line: number; col: number }> }).linePos?.[0];
    const where = at ? ` at line ${at.line}, column ${at.col}` : '';
    // The parser's message quotes the offending lines; its first line is the diagnosis.
    const first = String((error as Error).message).split('\n')[0];
    throw configError(heading, path, `not valid YAML${where} (${first})`);
  }
}

/** Applies `--set a.b.c=value` overrides (value parsed as YAML: numbers, booleans, lists). */
export function applyOverrides(config: Record<string, unknown>, sets: readonly string[], heading = 'config'): void {
  for (const set of sets) {
    const eq = set.indexOf('=');
    if (eq <= 0) throw configError(heading, '--set', `expects key.path=value, got ${showValue(set)}`);
    const path = set.slice(0, eq).split('.');
    const bad = path.find((key) => key === '' || UNSAFE_KEYS.has(key));
    if (bad !== undefined)
      throw configError(heading, `--set ${set.slice(0, eq)}`, `${showValue(bad)} is not a config key`);
    const value = parseYamlDocument(set.slice(eq + 1), heading, `--set ${set.slice(0, eq)}`);
    let node = config;
    for (const key of path.slice(0, -1)) {
      const child = Object.hasOwn(node, key) ? node[key] : undefined;
      if (typeof child !== 'object' || child === null) node[key] = {};
      node = node[key] as Record<string, unknown>;
    }
    node[path[path.length - 1]!] = value;
  }
}

/**
 * A YAML (or JSON) config file with `--set` overrides applied; the paths at `pathKeys` (dotted,
 * a string or a list of strings) are made absolute relative to the file's folder.
 */
export function readConfigFile(
  file: string,
  sets: readonly string[],
  pathKeys: readonly string[],
): Record<string, unknown> {
  if (!existsSync(file)) throw new Error(`config file not found: ${file}`);
  const heading = `${file} is not a valid config`;
  let text: string;
  try {
    text = new TextDecoder('utf-8', { fatal: true }).decode(readFileSync(file));
  } catch {
    throw configError(heading, '(file)', 'not UTF-8 text');
  }
  const document = parseYamlDocument(text, heading, '(file)') ?? {};
  if (!isMapping(document))
    throw configError(heading, '(root)', `expected a mapping of keys to values, found ${showValue(document)}`);
  applyOverrides(document, sets, heading);
  const base = resolve(file, '..');
  const absolute = (value: unknown) => (typeof value === 'string' ? resolve(base, value) : value);
  for (const key of pathKeys) {
    const path = key.split('.');
    let node: unknown = document;
    for (const part of path.slice(0, -1)) node = isMapping(node) && Object.hasOwn(node, part) ? node[part] : undefined;
    const last = path[path.length - 1]!;
    if (!isMapping(node) || !Object.hasOwn(node, last)) continue;
    node[last] = Array.isArray(node[last]) ? node[last].map(absolute) : absolute(node[last]);
  }
  return document;
}
