/** An error the client should see as is: status, a stable code, a message and the offending param. */
import type { ApiError } from '@expertune/contracts';
import type { z } from 'zod';

export class ApiException extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
    readonly param: string | null = null,
    /** Extra fields beside code/message/param (e.g. the bad lines of an upload). */
    readonly details: Record<string, unknown> = {},
  ) {
    super(message);
    this.name = 'ApiException';
  }

  body(): { error: ApiError & Record<string, unknown> } {
    return { error: { code: this.code, message: this.message, param: this.param, ...this.details } };
  }

  static notFound(what: string, id: string): ApiException {
    return new ApiException(404, 'not_found', `no ${what} with id ${JSON.stringify(id)}`, 'id');
  }

  static conflict(code: string, message: string, param: string | null = null): ApiException {
    return new ApiException(409, code, message, param);
  }

  /**
   * 422 from a zod error: the first issue names the param (key path); every issue is in the message.
   * `prefix` is the path of the validated value inside the request (e.g. ['query']).
   */
  static fromZod(error: z.ZodError, prefix: readonly PropertyKey[] = []): ApiException {
    const issues = error.issues.map((issue) => ({
      path: [...prefix, ...issue.path].map(String).join('.'),
      message: issue.message,
    }));
    const first = issues[0] ?? { path: '', message: 'invalid request' };
    const firstIssue = error.issues[0];
    const code =
      firstIssue?.path.length === 1 && firstIssue.path[0] === 'method' && firstIssue.code === 'invalid_value'
        ? 'unknown_method'
        : 'invalid_parameter';
    const message = issues.map((i) => (i.path ? `${i.path}: ${i.message}` : i.message)).join('; ');
    return new ApiException(422, code, message, first.path || null);
  }
}
