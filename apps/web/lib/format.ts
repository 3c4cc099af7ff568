/** Text of times, durations and numbers; fixed formats so server and browser render alike. */

/** Seconds → "45 s", "3 min 20 s", "2 h 05 min", "3 d 4 h". */
export function formatDuration(seconds: number | null | undefined): string {
  if (seconds === null || seconds === undefined || !Number.isFinite(seconds) || seconds < 0) return '—';
  const s = Math.floor(seconds);
  if (s < 60) return `${s} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min ${s % 60} s`;
  if (s < 86400) return `${Math.floor(s / 3600)} h ${String(Math.floor((s % 3600) / 60)).padStart(2, '0')} min`;
  return `${Math.floor(s / 86400)} d ${Math.floor((s % 86400) / 3600)} h`;
}

/** How long a job has run: finished − started, or now − started while it runs. */
export function jobDuration(
  job: { started_at: number | null; finished_at: number | null },
  nowSeconds: number,
): number | null {
  if (job.started_at === null) return null;
  return (job.finished_at ?? nowSeconds) - job.started_at;
}

/** Unix seconds → "2026-11-23 09:41" (UTC, so every viewer sees the same text). */
export function formatTime(unixSeconds: number | null | undefined): string {
  if (unixSeconds === null || unixSeconds === undefined) return '—';
  return new Date(unixSeconds * 1000).toISOString().slice(0, 16).replace('T', ' ');
}

/** A metric value: 4 significant digits, exponent form for tiny or huge values. */
export function formatMetric(value: number | null | undefined): string {
  if (value === null || value === undefined) return '—';
  if (!Number.isFinite(value)) return String(value);
  if (value === 0) return '0';
  const abs = Math.abs(value);
  if (abs < 1e-3 || abs >= 1e6) return value.toExponential(3);
  return String(Number(value.toPrecision(4)));
}

/**
 * Axis tick labels: the fewest significant digits that write every tick exactly (ticks are round
 * numbers), else 4; exponent form for tiny or huge values (a learning rate of 2e-4 must not read "0").
 * A null tick (uPlot's log axis leaves some unlabelled) stays null.
 */
export function formatTicks(values: readonly (number | null)[]): (string | null)[] {
  const exact = (v: number | null, text: string | null) =>
    v === null || Math.abs(Number(text) - v) <= 1e-9 * Math.abs(v);
  const write = (digits: number) => values.map((v) => (v === null ? null : tickText(v, digits)));
  for (let digits = 1; digits <= 6; digits++) {
    const texts = write(digits);
    if (texts.every((text, i) => exact(values[i]!, text))) return texts;
  }
  return write(4);
}

function tickText(value: number, digits: number): string {
  if (value === 0 || !Number.isFinite(value)) return String(value);
  const abs = Math.abs(value);
  if (abs < 1e-3 || abs >= 1e6) return value.toExponential(digits - 1).replace(/\.?0+e/, 'e');
  // Never fewer digits than the integer part has: 1250 stays 1250, not 1.3e+3.
  return String(Number(value.toPrecision(Math.max(digits, Math.floor(Math.log10(abs)) + 1))));
}

export function formatBytes(bytes: number): string {
  if (bytes < 1024) return `${bytes} B`;
  const units = ['KiB', 'MiB', 'GiB', 'TiB'];
  let v = bytes / 1024;
  let i = 0;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return `${v.toFixed(1)} ${units[i]}`;
}

/** steps_completed / total_steps as 0..1, or null when the total is not known yet. */
export function progressFraction(job: {
  steps_completed: number;
  total_steps: number | null;
  status: string;
}): number | null {
  if (job.status === 'succeeded') return 1;
  if (!job.total_steps) return null;
  return Math.min(1, job.steps_completed / job.total_steps);
}

/** The first 8 characters of an id: enough to tell rows apart in a table (show the full id as a title). */
export const shortId = (id: string) => id.slice(0, 8);
