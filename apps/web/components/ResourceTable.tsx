'use client';
/** The list table of a page (datasets, models, jobs): columns declared once, an empty or loading row. */
import type { ReactNode } from 'react';

/**
 * The horizontal scroller around a wide table: focusable and labelled, so a keyboard user can
 * scroll it (WCAG's scrollable-region rule; the browser test runs axe-core on every page).
 */
export function TableScroller({
  label,
  card = false,
  children,
}: {
  label: string;
  card?: boolean;
  children: ReactNode;
}) {
  return (
    <div className={card ? 'card table-wrap' : 'table-wrap'} tabIndex={0} role="region" aria-label={label}>
      {children}
    </div>
  );
}

export interface Column<Row> {
  header: ReactNode;
  cell: (row: Row) => ReactNode;
  /** Right-aligned figures. */
  numeric?: boolean;
  /** Hidden below 640 px, where a phone has no room for it. */
  hideNarrow?: boolean;
}

export function ResourceTable<Row extends { id: string }>({
  rows,
  columns,
  loading,
  empty,
  testId,
  rowTestId,
  rowProps,
}: {
  rows: readonly Row[];
  columns: readonly Column<Row>[];
  loading: boolean;
  /** What an empty list says once loaded. */
  empty: string;
  testId: string;
  rowTestId: string;
  /** Extra attributes of a row (data-* hooks). */
  rowProps?: (row: Row) => Record<string, string>;
}) {
  const className = (column: Column<Row>) =>
    [column.numeric ? 'num' : '', column.hideNarrow ? 'hide-narrow' : ''].filter(Boolean).join(' ') || undefined;
  return (
    <TableScroller label={testId.replace(/-/g, ' ')} card>
      <table data-testid={testId}>
        <thead>
          <tr>
            {columns.map((column, i) => (
              <th key={i} scope="col" className={column.hideNarrow ? 'hide-narrow' : undefined}>
                {column.header}
              </th>
            ))}
          </tr>
        </thead>
        <tbody>
          {rows.length === 0 && (
            <tr>
              <td colSpan={columns.length} className="muted">
                {loading ? 'Loading…' : empty}
              </td>
            </tr>
          )}
          {rows.map((row) => (
            <tr key={row.id} data-testid={rowTestId} {...rowProps?.(row)}>
              {columns.map((column, i) => (
                <td key={i} className={className(column)}>
                  {column.cell(row)}
                </td>
              ))}
            </tr>
          ))}
        </tbody>
      </table>
    </TableScroller>
  );
}
