/** Opaque list cursors: the last item's creation time and id, so pages stay stable while rows are added. */
import type { ListEnvelope } from '@expertune/contracts';
import type { FindOptionsWhere, ObjectLiteral, Repository, SelectQueryBuilder } from 'typeorm';

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

/**
 * One page of `builder`'s rows, newest first (creation time, then id), starting after `query.after`,
 * as a list envelope of `map`ped items. Adds the ordering, the limit and the cursor condition itself.
 */
export async function pageOf<Row extends Cursor & ObjectLiteral, Item>(
  builder: SelectQueryBuilder<Row>,
  query: { limit: number; after?: string | undefined },
  map: (row: Row) => Item | Promise<Item>,
): Promise<ListEnvelope<Item>> {
  const alias = builder.alias;
  builder
    .orderBy(`${alias}.createdAt`, 'DESC')
    .addOrderBy(`${alias}.id`, 'DESC')
    .take(query.limit + 1);
  if (query.after) builder.andWhere(`(${alias}.createdAt, ${alias}.id) < (:createdAt, :id)`, decodeCursor(query.after));
  const rows = await builder.getMany();
  const page = rows.slice(0, query.limit);
  const hasMore = rows.length > query.limit;
  const last = page[page.length - 1];
  return {
    object: 'list',
    data: await Promise.all(page.map(map)),
    has_more: hasMore,
    next_cursor: hasMore && last ? encodeCursor(last) : null,
  };
}

/** The row with this id (and `where`), or a 404 naming `what`. */
export async function findOr404<Row extends ObjectLiteral>(
  repository: Repository<Row>,
  id: string,
  what: string,
  where: FindOptionsWhere<Row> = {},
): Promise<Row> {
  const row = isUuid(id) ? await repository.findOneBy({ id, ...where } as FindOptionsWhere<Row>) : null;
  if (!row) throw ApiException.notFound(what, id);
  return row;
}
