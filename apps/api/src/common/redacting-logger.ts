/** Nest's console logger with every line passed through libs/db `redactSecrets` (docs/security.md). */
import { redactSecrets } from '@expertune/db';
import { ConsoleLogger } from '@nestjs/common';

const clean = (value: unknown): unknown =>
  typeof value === 'string'
    ? redactSecrets(value)
    : value instanceof Error
      ? redactSecrets(value.stack ?? value.message)
      : value;

export class RedactingLogger extends ConsoleLogger {
  override log(message: unknown, ...rest: unknown[]): void {
    super.log(clean(message), ...rest.map(clean));
  }
  override error(message: unknown, ...rest: unknown[]): void {
    super.error(clean(message), ...rest.map(clean));
  }
  override warn(message: unknown, ...rest: unknown[]): void {
    super.warn(clean(message), ...rest.map(clean));
  }
  override debug(message: unknown, ...rest: unknown[]): void {
    super.debug(clean(message), ...rest.map(clean));
  }
  override verbose(message: unknown, ...rest: unknown[]): void {
    super.verbose(clean(message), ...rest.map(clean));
  }
  override fatal(message: unknown, ...rest: unknown[]): void {
    super.fatal(clean(message), ...rest.map(clean));
  }
}
