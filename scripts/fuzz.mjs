#!/usr/bin/env node
/**
 * The long fuzz run (docs/fuzzing.md): each fuzz file of tests/fuzz in turn, one at a time (the
 * machine has two cores), with FUZZ_RUNS inputs per parser (default 100,000), then a table of
 * inputs, seconds and failures per parser. `node scripts/fuzz.mjs [runs] [file filter]`.
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, readdirSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const runs = process.argv[2] ?? process.env.FUZZ_RUNS ?? '100000';
const filter = process.argv[3] ?? '';
const report = join(mkdtempSync(join(tmpdir(), 'expertune-fuzz-')), 'report.jsonl');
const files = readdirSync('tests/fuzz')
  .filter((name) => name.endsWith('.fuzz.test.ts') && name.includes(filter))
  .sort();

let failed = false;
for (const file of files) {
  console.log(`\n== ${file}: ${runs} inputs per parser`);
  const result = spawnSync(
    'npx',
    ['vitest', 'run', '--project', 'integration', `tests/fuzz/${file}`, '-t', 'fuzzing', '--testTimeout', '0'],
    { stdio: 'inherit', env: { ...process.env, FUZZ_RUNS: runs, FUZZ_REPORT: report } },
  );
  if (result.status !== 0) failed = true;
}

const rows = existsSync(report)
  ? readFileSync(report, 'utf8')
      .trim()
      .split('\n')
      .filter(Boolean)
      .map((line) => JSON.parse(line))
  : [];
console.log('\n| parser | inputs | seconds | failures | seed |\n|---|---:|---:|---:|---:|');
for (const r of rows) console.log(`| ${r.parser} | ${r.inputs} | ${r.seconds} | ${r.failures} | ${r.seed} |`);
process.exit(failed ? 1 : 0);
