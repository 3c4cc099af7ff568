import { describe, expect, it } from 'vitest';

import { SseParser } from './sse';

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
