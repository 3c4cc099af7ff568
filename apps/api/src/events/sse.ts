/** The HTTP side of a server-sent events response, shared by the job stream and the all-jobs stream. */
import type { Request, Response } from 'express';

const HEARTBEAT_MS = 15_000;

export interface SseResponse {
  /** Writes raw SSE text unless the stream is closed. */
  write(text: string): void;
  /** Ends the response (server side: shutdown, or an error during the replay). */
  end(): void;
  readonly closed: boolean;
}

/**
 * Sends the event-stream headers and a first comment, then a heartbeat comment every 15 s (proxies
 * close idle connections). `onClose` runs once, whichever side closes; `open` registers the stream's
 * `end` in a set the controller ends at shutdown so the HTTP server can close.
 */
export function openSse(
  request: Request,
  response: Response,
  banner: string,
  onClose: () => void,
  open: Set<() => void>,
): SseResponse {
  response.status(200);
  response.setHeader('content-type', 'text/event-stream; charset=utf-8');
  response.setHeader('cache-control', 'no-cache, no-transform');
  response.setHeader('connection', 'keep-alive');
  response.setHeader('x-accel-buffering', 'no');
  response.flushHeaders();
  response.write(`: ${banner}\n\n`);

  let closed = false;
  const heartbeat = setInterval(() => response.write(': heartbeat\n\n'), HEARTBEAT_MS);
  const close = () => {
    if (closed) return;
    closed = true;
    clearInterval(heartbeat);
    open.delete(end);
    onClose();
  };
  const end = () => {
    close();
    response.end();
  };
  open.add(end);
  request.on('close', close);
  response.on('close', close);
  return {
    write: (text) => {
      if (!closed) response.write(text);
    },
    end,
    get closed() {
      return closed;
    },
  };
}
