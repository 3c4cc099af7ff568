/** Opaque list cursors: the last item's creation time and id, so pages stay stable while rows are added. */
import { ApiException } from './api-exception.js';

export interface Cursor {
  createdAt: Date;
  id: string;
}

export function encodeCursor(item: Cursor): string {
  return Buffer.from(`${item.createdAt.toISOString()}|${item.id}`).toString('base64url');
}

export function decodeCursor(cursor: string): Cursor {
  const [time, id] = Buffer.from(cursor, 'base64url').toString('utf8').split('|');
  const createdAt = new Date(time ?? '');
  if (!id || Number.isNaN(createdAt.getTime()))
    throw new ApiException(422, 'invalid_parameter', 'after: not a cursor from a previous page', 'after');
  return { createdAt, id };
}

export const unixSeconds = (date: Date): number => Math.floor(date.getTime() / 1000);
export const unixSecondsOrNull = (date: Date | null): number | null => (date ? unixSeconds(date) : null);

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

/** Ids are uuids in Postgres: anything else cannot exist, so it is a 404 without a query (and no SQL cast error). */
export function isUuid(id: string): boolean {
  return UUID.test(id);
}
