import { createParamDecorator, type ExecutionContext } from '@nestjs/common';
import type { Request } from 'express';

/** The verified API key of the request, set by ApiKeyGuard (its id; null on public routes). */
export interface CallerKeyRequest extends Request {
  apiKeyId?: string;
}

export const CallerKeyId = createParamDecorator(
  (_data: unknown, context: ExecutionContext): string | null =>
    context.switchToHttp().getRequest<CallerKeyRequest>().apiKeyId ?? null,
);
