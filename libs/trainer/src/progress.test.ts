import { describe, expect, it } from 'vitest';

import { formatDuration, ProgressLine } from './progress.js';

function capture(isTTY: boolean) {
  const chunks: string[] = [];
  return { stream: { isTTY, write: (text: string) => chunks.push(text) }, chunks };
}

describe('ProgressLine', () => {
  it('redraws one bar in place on a terminal, with the ETA from the pace so far', () => {
    const { stream, chunks } = capture(true);
    const progress = new ProgressLine(stream);
    progress.update(1, 4, 'loss 2', 10);
    progress.update(2, 4, 'loss 1', 20);
    progress.note('eval');
    expect(chunks[0]).toBe('\r\x1b[2K1/4 [██████··················] loss 2 · eta 0:30');
    expect(chunks[1]).toBe('\r\x1b[2K2/4 [████████████············] loss 1 · eta 0:20');
    // A note ends the bar's line first, so it never overwrites it.
    expect(chunks.slice(2)).toEqual(['\n', 'eval\n']);
  });

  it('writes plain lines to a pipe: the first, then one per interval, and always the last', () => {
    const { stream, chunks } = capture(false);
    const progress = new ProgressLine(stream, 10);
    for (let step = 1; step <= 30; step++) progress.update(step, 30, `s${step}`, step * 1.5);
    const steps = chunks.map((line) => Number(/^\s*(\d+)\//.exec(line)![1]));
    // Elapsed 1.5 s per step: lines at steps 1 (1.5 s), 8 (12 s), 15 (22.5 s), 22 (33 s), 29 (43.5 s), 30 (last).
    expect(steps).toEqual([1, 8, 15, 22, 29, 30]);
    expect(chunks.every((line) => line.endsWith('\n') && !line.includes('\r'))).toBe(true);
  });

  it('formats durations as m:ss and h:mm:ss', () => {
    expect(formatDuration(59.6)).toBe('1:00');
    expect(formatDuration(3725)).toBe('1:02:05');
    expect(formatDuration(-3)).toBe('0:00');
  });
});
