/**
 * A parser of `text/event-stream` (the HTML spec's rules, the parts the API uses): EventSource
 * cannot send an Authorization header, so the console reads the stream with fetch and feeds the
 * chunks here.
 */

export interface SseMessage {
  id: string | null;
  event: string;
  data: string;
}

export class SseParser {
  private buffer = '';
  private data: string[] = [];
  private event = '';
  private id: string | null = null;
  /** The last id seen, for Last-Event-ID on reconnect. */
  lastEventId: string | null = null;

  /** Feeds a chunk; returns the messages it completed. */
  push(chunk: string): SseMessage[] {
    this.buffer += chunk;
    const messages: SseMessage[] = [];
    for (;;) {
      const match = /\r\n|\r|\n/.exec(this.buffer);
      if (!match) break;
      // A lone \r at the very end may be the first half of \r\n: wait for more.
      if (match[0] === '\r' && match.index === this.buffer.length - 1) break;
      const line = this.buffer.slice(0, match.index);
      this.buffer = this.buffer.slice(match.index + match[0].length);
      const message = this.line(line);
      if (message) messages.push(message);
    }
    return messages;
  }

  private line(line: string): SseMessage | null {
    if (line === '') {
      if (this.data.length === 0) {
        this.event = '';
        return null;
      }
      const message = { id: this.id, event: this.event || 'message', data: this.data.join('\n') };
      this.data = [];
      this.event = '';
      return message;
    }
    if (line.startsWith(':')) return null;
    const colon = line.indexOf(':');
    const field = colon < 0 ? line : line.slice(0, colon);
    let value = colon < 0 ? '' : line.slice(colon + 1);
    if (value.startsWith(' ')) value = value.slice(1);
    switch (field) {
      case 'data':
        this.data.push(value);
        break;
      case 'event':
        this.event = value;
        break;
      case 'id':
        if (!value.includes('\0')) {
          this.id = value;
          this.lastEventId = value;
        }
        break;
    }
    return null;
  }
}

export type StreamState = 'connecting' | 'live' | 'retrying';

export interface FollowOptions {
  /** Opens the stream; `lastEventId` is the last id seen, for a reconnect. */
  open: (lastEventId: string | null) => Promise<Response>;
  onMessage: (message: SseMessage) => void;
  onState?: (state: StreamState) => void;
  signal: AbortSignal;
  /** The id to resume after on the first connect. */
  lastEventId?: string | null;
}

/**
 * Reads an SSE stream until `signal` aborts, reconnecting after a drop with Last-Event-ID and a
 * backoff of 1 s doubling to 15 s (EventSource's behaviour, which fetch does not have).
 */
export async function followStream({ open, onMessage, onState, signal, lastEventId = null }: FollowOptions) {
  let lastId = lastEventId;
  let delay = 1000;
  while (!signal.aborted) {
    onState?.('connecting');
    try {
      const response = await open(lastId);
      if (signal.aborted) return;
      if (!response.ok || !response.body) throw new Error(`stream answered ${response.status}`);
      onState?.('live');
      delay = 1000;
      const parser = new SseParser();
      const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
      for (;;) {
        const { value, done } = await reader.read();
        if (done || signal.aborted) break;
        for (const message of parser.push(value)) {
          onMessage(message);
          if (message.id) lastId = message.id;
        }
      }
    } catch {
      if (signal.aborted) return;
    }
    if (signal.aborted) return;
    onState?.('retrying');
    await new Promise((resolve) => setTimeout(resolve, delay));
    delay = Math.min(delay * 2, 15000);
  }
}
