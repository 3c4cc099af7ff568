/** Validates a body, query or param with a shared contracts schema; a failure is a 422 naming the key path. */
import type { PipeTransform } from '@nestjs/common';
import type { z } from 'zod';

import { ApiException } from './api-exception.js';

export class ZodValidationPipe<S extends z.ZodType> implements PipeTransform<unknown, z.output<S>> {
  constructor(
    private readonly schema: S,
    /** Body fields are named as they are sent; query fields too (no "query." prefix) so clients can map them back. */
    private readonly prefix: readonly string[] = [],
  ) {}

  transform(value: unknown): z.output<S> {
    const result = this.schema.safeParse(value ?? {});
    if (!result.success) throw ApiException.fromZod(result.error, this.prefix);
    return result.data;
  }
}
