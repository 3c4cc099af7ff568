/**
 * A one-line progress bar with ETA on a terminal; plain lines when the output is a file or a pipe,
 * at most one per `plainEverySeconds` of training time (plus the first and the last step), so a
 * long run's log stays readable.
 */
import type { WriteStream } from 'node:tty';

export interface ProgressStream {
  write(text: string): unknown;
  isTTY?: boolean;
}

export class ProgressLine {
  private drawn = false;
  private lastPlainAt = -Infinity;

  constructor(
    private readonly stream: ProgressStream | NodeJS.WriteStream | WriteStream,
    private readonly plainEverySeconds = 10,
  ) {}

  private get interactive(): boolean {
    return Boolean(this.stream.isTTY);
  }

  update(step: number, total: number, detail: string, elapsedSeconds: number): void {
    const width = 24;
    const filled = Math.round((width * step) / total);
    const eta = step > 0 ? (elapsedSeconds / step) * (total - step) : 0;
    const line = `${String(step).padStart(String(total).length)}/${total} [${'█'.repeat(filled)}${'·'.repeat(width - filled)}] ${detail} · eta ${formatDuration(eta)}`;
    if (this.interactive) {
      this.stream.write(`\r\x1b[2K${line}`);
      this.drawn = true;
    } else if (step === 1 || step === total || elapsedSeconds - this.lastPlainAt >= this.plainEverySeconds) {
      this.stream.write(`${line}\n`);
      this.lastPlainAt = elapsedSeconds;
    }
  }

  note(message: string): void {
    this.done();
    this.stream.write(`${message}\n`);
  }

  done(): void {
    if (this.drawn) this.stream.write('\n');
    this.drawn = false;
  }
}

export function formatDuration(seconds: number): string {
  const s = Math.max(0, Math.round(seconds));
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const rest = String(s % 60).padStart(2, '0');
  return h > 0 ? `${h}:${String(m).padStart(2, '0')}:${rest}` : `${m}:${rest}`;
}
