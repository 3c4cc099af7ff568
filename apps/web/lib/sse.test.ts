import { describe, expect, it } from 'vitest';

import { followStream, SseParser, type SseMessage, type StreamState } from './sse';

describe('SseParser', () => {
  it('parses the API stream: a comment, then events with id, type and JSON data', () => {
    const p = new SseParser();
    const text = ': stream of job events\n\nid: 7\nevent: status\ndata: {"id":"7","message":"running"}\n\n';
    expect(p.push(text)).toEqual([{ id: '7', event: 'status', data: '{"id":"7","message":"running"}' }]);
    expect(p.lastEventId).toBe('7');
  });

  it('joins chunks split anywhere, CRLF included', () => {
    const p = new SseParser();
    const out = [...p.push('id: 1\r'), ...p.push('\ndata: a'), ...p.push('bc\r\n'), ...p.push('\r\n')];
    expect(out).toEqual([{ id: '1', event: 'message', data: 'abc' }]);
  });

  it('joins multi-line data and ignores heartbeats', () => {
    const p = new SseParser();
    expect(p.push(': heartbeat\n\ndata: one\ndata: two\n\n')).toEqual([
      { id: null, event: 'message', data: 'one\ntwo' },
    ]);
  });
});

describe('followStream', () => {
  const streamOf = (text: string) =>
    new Response(
      new ReadableStream({
        start(controller) {
          controller.enqueue(new TextEncoder().encode(text));
          controller.close(); // the server dropped the connection
        },
      }),
      { status: 200 },
    );

  it('reconnects after a drop with the last id seen, and stops when aborted', async () => {
    const controller = new AbortController();
    const asked: (string | null)[] = [];
    const got: SseMessage[] = [];
    const states: StreamState[] = [];
    await followStream({
      open: async (lastEventId) => {
        asked.push(lastEventId);
        if (asked.length === 1) return streamOf('id: 4\nevent: status\ndata: a\n\nid: 5\ndata: b\n\n');
        if (asked.length === 2) return new Response('down', { status: 503 });
        controller.abort();
        return streamOf('id: 6\ndata: c\n\n');
      },
      onMessage: (message) => got.push(message),
      onState: (state) => states.push(state),
      signal: controller.signal,
      lastEventId: '3',
    });
    expect(asked).toEqual(['3', '5', '5']);
    expect(got.map((m) => m.data)).toEqual(['a', 'b']);
    expect(states).toEqual(['connecting', 'live', 'retrying', 'connecting', 'retrying', 'connecting']);
  }, 10_000);
});
