/**
 * Every error leaves as `{error: {code, message, param}}`. Known errors keep their status; anything
 * else is a 500 with a generic message, logged here with its stack, never sent to the client.
 */
import { type ArgumentsHost, Catch, type ExceptionFilter, HttpException, Logger } from '@nestjs/common';
import type { Response } from 'express';
import { ZodError } from 'zod';

import { ApiException } from './api-exception.js';

const CODE_BY_STATUS: Record<number, string> = {
  400: 'bad_request',
  401: 'invalid_api_key',
  403: 'insufficient_scope',
  404: 'not_found',
  405: 'method_not_allowed',
  409: 'conflict',
  413: 'payload_too_large',
  415: 'unsupported_media_type',
  422: 'invalid_parameter',
  429: 'rate_limit_exceeded',
  503: 'service_unavailable',
};

/** Errors thrown by body-parser and friends carry `type` and `status` (http-errors). */
interface HttpLibraryError {
  status?: number;
  statusCode?: number;
  type?: string;
  expose?: boolean;
  message?: string;
}

export function toApiException(exception: unknown): ApiException | null {
  if (exception instanceof ApiException) return exception;
  if (exception instanceof ZodError) return ApiException.fromZod(exception);
  if (exception instanceof HttpException) {
    const status = exception.getStatus();
    if (status >= 500) return null;
    const response = exception.getResponse();
    const message =
      typeof response === 'string'
        ? response
        : typeof (response as { message?: unknown }).message === 'string'
          ? (response as { message: string }).message
          : exception.message;
    return new ApiException(status, CODE_BY_STATUS[status] ?? 'bad_request', message);
  }
  const httpError = exception as HttpLibraryError | null;
  const status = httpError?.status ?? httpError?.statusCode;
  if (typeof status === 'number' && status >= 400 && status < 500 && httpError?.expose !== false) {
    if (httpError?.type === 'entity.too.large')
      return new ApiException(413, 'payload_too_large', 'request body is larger than the limit');
    if (httpError?.type === 'entity.parse.failed')
      return new ApiException(400, 'invalid_json', `request body is not valid JSON: ${httpError.message ?? ''}`.trim());
    return new ApiException(status, CODE_BY_STATUS[status] ?? 'bad_request', httpError?.message ?? 'bad request');
  }
  return null;
}

@Catch()
export class AllExceptionsFilter implements ExceptionFilter {
  private readonly logger = new Logger('AllExceptionsFilter');

  catch(exception: unknown, host: ArgumentsHost): void {
    const response = host.switchToHttp().getResponse<Response>();
    const known = toApiException(exception);
    const error =
      known ??
      new ApiException(
        exception instanceof HttpException ? exception.getStatus() : 500,
        'internal_error',
        'the server failed to handle the request; the error is in its log',
      );
    if (!known) this.logger.error(exception instanceof Error ? (exception.stack ?? exception.message) : exception);
    if (response.headersSent) {
      // A stream (SSE, a tar download) already started: all we can do is stop it.
      response.end();
      return;
    }
    if (error.status === 429 && error.details.retry_after !== undefined)
      response.setHeader('Retry-After', String(error.details.retry_after));
    response.status(error.status).json(error.body());
  }
}
