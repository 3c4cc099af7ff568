#!/usr/bin/env node
// `npm run demo`: the main job on the embedded default, end to end on the CLI.
// For now the default base model is a randomly initialised Llama made by `expertune init-model`
// (nothing is downloaded); a LoRA adapter and a MoLA mixture learn a small text set on it, are
// exported (PEFT layout, mixture layout), and greedy generation with and without each adapter
// shows what it learned; the mixture's expert load per layer shows its routing.
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const work = join(root, '.expertune', 'demo');
const modelDir = join(work, 'base-small');
const cli = join(root, 'libs', 'trainer', 'bin', 'expertune.js');
const expertune = (args, options = {}) =>
  execFileSync(process.execPath, [cli, ...args], {
    cwd: root,
    encoding: 'utf8',
    stdio: options.capture ? 'pipe' : 'inherit',
  });

const SENTENCES = [
  'Expertune trains mixtures of LoRA experts.',
  'The native engine runs on OpenBLAS and AVX-512.',
  'Gradients are checked against the tfjs oracle.',
  'A plain LoRA export loads in PEFT and vLLM.',
  'The whale surfaced at dawn and dived again.',
  'Ropes creak and the sails fill with wind.',
  'Every map hides a second coast.',
  'Tea at noon, rope at dusk, stars at night.',
];

mkdirSync(work, { recursive: true });
if (!existsSync(join(modelDir, 'model.safetensors'))) {
  console.log('\n▶ Creating the default base model (a randomly initialised Llama, byte-level tokenizer)');
  expertune(['init-model', '--out', modelDir, '--preset', 'small', '--seed', '0']);
}
writeFileSync(join(work, 'train.jsonl'), SENTENCES.map((text) => JSON.stringify({ text })).join('\n') + '\n');

/** Trains one adapter with `method` and its config section; returns the run directory. */
function train(method, section) {
  const runDir = join(work, `run-${method}`);
  const configPath = join(work, `train-${method}.yaml`);
  writeFileSync(
    configPath,
    [
      `model: ${modelDir}`,
      `method: ${method}`,
      'seed: 0',
      `${method}: ${section}`,
      'data: { train: ./train.jsonl, max_seq_len: 128 }',
      'training: { max_steps: 80, micro_batch_size: 8 }',
      'optimizer: { lr: 0.003, max_grad_norm: 1.0 }',
      'schedule: { kind: cosine, warmup_steps: 4, min_lr_ratio: 0.1 }',
      `output_dir: ${runDir}`,
      '',
    ].join('\n'),
  );
  expertune(['train', '--config', configPath]);
  return runDir;
}

const complete = (prompt, adapter) => {
  const args = ['generate', '--model', modelDir, '--prompt', prompt, '--max-new-tokens', '48', '--greedy', '--json'];
  const out = JSON.parse(expertune(adapter ? [...args, '--adapter', adapter] : args, { capture: true }));
  return JSON.stringify(out.text.replace(/[^\x20-\x7e]/g, '·'));
};

/** Greedy completions of the first words of four sentences; returns how many are exact. */
function showCompletions(label, adapter) {
  let exact = 0;
  for (const sentence of SENTENCES.slice(0, 4)) {
    const prompt = sentence.split(' ').slice(0, 2).join(' ');
    const tuned = complete(prompt, adapter);
    if (JSON.parse(tuned) === sentence.slice(prompt.length)) exact += 1;
    console.log(`  prompt ${JSON.stringify(prompt)}\n    base model: ${complete(prompt, null)}\n    ${label} ${tuned}`);
  }
  return exact;
}

console.log('\n▶ Fine-tuning with LoRA (r=16 on all 7 projections) on the native engine');
const loraRun = train('lora', '{ rank: 16, alpha: 32, dropout: 0.0 }');
console.log('\n▶ Greedy generation from the first words of each sentence');
const loraExact = showCompletions('with LoRA: ', join(loraRun, 'export'));

console.log(
  '\n▶ Fine-tuning a mixture: MoLA, 2-4-6-8 experts of rank 8 by layer (inverted triangle), top-2, load balancing',
);
const molaRun = train('mola', '{ rank: 8, alpha: 16, dropout: 0.0 }');
console.log('\n▶ Greedy generation with the MoLA export');
const molaExact = showCompletions('with MoLA: ', join(molaRun, 'export'));

// Expert load of the last step, averaged over the 7 projections of each layer.
const routing = readFileSync(join(molaRun, 'routing.jsonl'), 'utf8').trim().split('\n');
const last = JSON.parse(routing[routing.length - 1]);
console.log(
  `\n▶ MoLA expert load at step ${last.step} (fraction of tokens routed to each expert; each token goes to 2; mean over projections)`,
);
for (const layer of [...new Set(last.sites.map((site) => site.layer))]) {
  const sites = last.sites.filter((site) => site.layer === layer);
  const load = sites[0].load.map((_, e) => sites.reduce((sum, site) => sum + site.load[e], 0) / sites.length);
  console.log(`  layer ${layer}: ${load.map((v) => v.toFixed(2)).join(' ')}`);
}

console.log(`\n✔ LoRA: ${loraExact}/4 and MoLA: ${molaExact}/4 completions reproduce the training sentence exactly.`);
console.log(`  LoRA adapter (PEFT layout):          ${join(loraRun, 'export')}`);
console.log(`  MoLA adapter (expertune-mole layout): ${join(molaRun, 'export')}`);
console.log(`  Per-step metrics and routing:        ${join(molaRun, 'metrics.jsonl')}, routing.jsonl`);
