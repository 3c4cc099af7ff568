/**
 * A fixed one-minute window per API key, in memory: enough for one API process; several
 * replicas would each allow the limit (a Redis counter is the scale-out path).
 */
export class FixedWindowRateLimiter {
  private readonly windows = new Map<string, { start: number; count: number }>();

  constructor(
    private readonly limitPerWindow: number,
    private readonly windowMs = 60_000,
  ) {}

  /** null when allowed, else the seconds until the window resets (Retry-After). */
  take(key: string, now = Date.now()): number | null {
    if (this.limitPerWindow <= 0) return null;
    let window = this.windows.get(key);
    if (!window || now - window.start >= this.windowMs) {
      if (this.windows.size > 10_000) this.windows.clear();
      window = { start: now, count: 0 };
      this.windows.set(key, window);
    }
    window.count += 1;
    if (window.count <= this.limitPerWindow) return null;
    return Math.max(1, Math.ceil((window.start + this.windowMs - now) / 1000));
  }
}
