/**
 * The property every parser of outside bytes must keep, checked with fast-check (docs/fuzzing.md):
 * for any input it returns a valid result or throws its module's documented error with a message;
 * never a TypeError or RangeError from deep inside, never a slow input, never a huge allocation
 * from a declared size, never an unhandled rejection.
 *
 * `npm test` runs each target's `shortRuns` inputs; `npm run fuzz` sets FUZZ_RUNS (≥ 100,000) and
 * FUZZ_REPORT, a file this appends each parser's figures to.
 */
import { appendFileSync } from 'node:fs';

import fc from 'fast-check';

export interface FuzzTarget<I, R> {
  /** Names the parser in reports. */
  parser: string;
  input: fc.Arbitrary<I>;
  parse(input: I): R | Promise<R>;
  /** The module's documented error types. */
  expected: ReadonlyArray<abstract new (...args: never[]) => Error>;
  /** Throws when an accepted result breaks the parser's own guarantees. */
  check?(result: R, input: I): void;
  /** Inputs in the short run of `npm test`. */
  shortRuns: number;
  /** One input taking longer fails (the bound is generous: the machine has two shared cores). */
  timeBoundMs?: number;
}

export interface FuzzFigures {
  parser: string;
  inputs: number;
  seconds: number;
  failures: number;
  seed: number;
}

class HangError extends Error {}

const longRuns = Number(process.env.FUZZ_RUNS ?? '');
const SHARED_MACHINE_SLACK = 5;
/** Memory one input may hold on to while it is parsed: far above any fixture, far below a declared size. */
const MEMORY_BOUND = 256 * 1024 * 1024;

function held(): number {
  const { heapUsed, arrayBuffers } = process.memoryUsage();
  return heapUsed + arrayBuffers;
}

function describe(error: unknown): string {
  if (!(error instanceof Error)) return `a thrown ${typeof error}: ${String(error)}`;
  return `${error.name}: ${error.message}\n${error.stack ?? ''}`;
}

/** Runs the target's property and returns its figures; throws fast-check's report on a failure. */
export async function fuzzParser<I, R>(target: FuzzTarget<I, R>): Promise<FuzzFigures> {
  const runs = Number.isInteger(longRuns) && longRuns > 0 ? longRuns : target.shortRuns;
  // Inside `npm test` the fuzz files share 2 cores with every other test file: a 5× looser bound
  // there still catches a hang without failing on a busy machine (`npm run fuzz` runs alone).
  const bound = (target.timeBoundMs ?? 2000) * (runs === target.shortRuns ? SHARED_MACHINE_SLACK : 1);
  const rejections: unknown[] = [];
  const onRejection = (reason: unknown) => rejections.push(reason);
  process.on('unhandledRejection', onRejection);
  let inputs = 0;
  const property = fc.asyncProperty(target.input, async (input) => {
    inputs++;
    const before = held();
    const started = performance.now();
    let result: R | undefined;
    let error: unknown;
    let threw = false;
    let timer: NodeJS.Timeout | undefined;
    try {
      // A synchronous hang cannot be interrupted (the test's timeout catches it); an input whose
      // promise never settles fails here and is shrunk like any other.
      const hung = new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new HangError(`no result after ${bound} ms (a hang)`)), bound);
      });
      result = await Promise.race([target.parse(input), hung]);
    } catch (caught) {
      if (caught instanceof HangError) throw caught;
      threw = true;
      error = caught;
    } finally {
      clearTimeout(timer);
    }
    const elapsed = performance.now() - started;
    if (elapsed > bound) throw new Error(`one input took ${elapsed.toFixed(0)} ms (bound ${bound} ms)`);
    const grown = held() - before;
    if (grown > MEMORY_BOUND) throw new Error(`one input held ${(grown / 2 ** 20).toFixed(0)} MiB`);
    if (threw) {
      const documented = target.expected.some((type) => error instanceof type);
      if (!documented || !(error instanceof Error) || error.message.trim() === '')
        throw new Error(`undocumented failure: ${describe(error)}`);
    } else {
      target.check?.(result as R, input);
    }
    if (rejections.length > 0) throw new Error(`unhandled rejection: ${describe(rejections[0])}`);
  });
  const seed = Number(process.env.FUZZ_SEED ?? '') || Date.now() ^ (Math.random() * 2 ** 31);
  const started = performance.now();
  let details: fc.RunDetails<[I]>;
  try {
    details = await fc.check(property, { numRuns: runs, seed, endOnFailure: false });
    // A rejection raised by the last input surfaces a macrotask later.
    await new Promise((resolve) => setTimeout(resolve, 20));
  } finally {
    process.off('unhandledRejection', onRejection);
  }
  const figures: FuzzFigures = {
    parser: target.parser,
    inputs,
    seconds: Number(((performance.now() - started) / 1000).toFixed(2)),
    failures: details.failed || rejections.length > 0 ? 1 : 0,
    seed,
  };
  if (process.env.FUZZ_REPORT) appendFileSync(process.env.FUZZ_REPORT, JSON.stringify(figures) + '\n');
  if (details.failed) {
    // The default report prints the counterexample; the error comes from us, whole.
    const report = fc.defaultReportMessage(details) ?? `${target.parser}: property failed`;
    throw new Error(`${report}\n${describe(details.errorInstance)}`);
  }
  if (rejections.length > 0) throw new Error(`${target.parser}: unhandled rejection: ${describe(rejections[0])}`);
  return figures;
}

/** The short run's figures are small enough for one line per parser in the test log. */
export function logFigures(figures: FuzzFigures): void {
  console.log(
    `fuzz ${figures.parser}: ${figures.inputs} inputs in ${figures.seconds} s, ${figures.failures} failures (seed ${figures.seed})`,
  );
}
