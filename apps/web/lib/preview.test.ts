import { describe, expect, it } from 'vitest';

import { lineProblems, renderRow } from './preview';

describe('renderRow', () => {
  it('renders the formats of docs/data.md as prompt and completion', () => {
    expect(renderRow({ instruction: 'Add', input: '2 + 2', output: '4' })).toEqual({
      format: 'alpaca',
      prompt: 'Add\n\n2 + 2',
      completion: '4',
    });
    expect(renderRow({ prompt: 'Q: 1+1?', completion: '2' })).toEqual({
      format: 'prompt_completion',
      prompt: 'Q: 1+1?',
      completion: '2',
    });
    expect(
      renderRow({
        messages: [
          { role: 'user', content: 'hi' },
          { role: 'assistant', content: 'hello' },
        ],
      }),
    ).toEqual({ format: 'chat', prompt: 'user: hi', completion: 'hello' });
    expect(
      renderRow({
        conversations: [
          { from: 'human', value: 'q' },
          { from: 'gpt', value: 'a' },
        ],
      }),
    ).toMatchObject({
      prompt: 'human: q',
      completion: 'a',
    });
    expect(renderRow({ text: 'plain' })).toEqual({ format: 'text', prompt: '', completion: 'plain' });
  });
});

describe('lineProblems', () => {
  it("reads a 422's error.lines and ignores other errors", () => {
    const error = {
      code: 'invalid_dataset',
      message: '2 bad rows',
      param: 'file',
      lines: [
        { line: 3, field: 'output', message: 'expected a string' },
        { line: 9, field: null, message: 'not JSON' },
      ],
    };
    expect(lineProblems(error)).toEqual([
      { line: 3, field: 'output', message: 'expected a string' },
      { line: 9, field: null, message: 'not JSON' },
    ]);
    expect(lineProblems({ code: 'x', message: 'y', param: null })).toEqual([]);
  });
});
