/**
 * Client-side request pacing (--kube-api-qps / --kube-api-burst, client-go's token bucket) and
 * the jittered exponential back-off the reflector uses between failed list/watch attempts.
 */

/** Time source; tests inject one that they move by hand. */
export interface SleepClock {
  now(): number;
  /** Resolves after `ms`, or rejects with the signal's reason when it aborts first. */
  sleep(ms: number, signal?: AbortSignal): Promise<void>;
}

export const systemSleepClock: SleepClock = {
  now: () => Date.now(),
  sleep: (ms, signal) =>
    new Promise<void>((resolve, reject) => {
      if (signal?.aborted) return reject(signal.reason);
      const onAbort = (): void => {
        clearTimeout(timer);
        reject(signal?.reason);
      };
      const timer = setTimeout(() => {
        signal?.removeEventListener("abort", onAbort);
        resolve();
      }, ms);
      signal?.addEventListener("abort", onAbort, { once: true });
    }),
};

/**
 * A token bucket: `burst` requests at once, refilled at `qps` per second. Waiters are served in
 * order. A non-positive qps disables limiting.
 */
export class TokenBucket {
  private tokens: number;
  private last: number;
  private queue: Promise<void> = Promise.resolve();

  constructor(
    readonly qps: number,
    readonly burst: number,
    private readonly clock: SleepClock = systemSleepClock,
  ) {
    this.tokens = Math.max(1, burst);
    this.last = clock.now();
  }

  private refill(): void {
    const now = this.clock.now();
    this.tokens = Math.min(Math.max(1, this.burst), this.tokens + ((now - this.last) / 1000) * this.qps);
    this.last = now;
  }

  /** Takes a token if one is there now. */
  tryAccept(): boolean {
    if (this.qps <= 0) return true;
    this.refill();
    if (this.tokens < 1) return false;
    this.tokens -= 1;
    return true;
  }

  /** Waits for a token (in arrival order). */
  wait(signal?: AbortSignal): Promise<void> {
    if (this.qps <= 0) return Promise.resolve();
    const turn = this.queue.then(async () => {
      this.refill();
      if (this.tokens < 1) {
        await this.clock.sleep(((1 - this.tokens) / this.qps) * 1000, signal);
        this.refill();
      }
      this.tokens -= 1;
    });
    this.queue = turn.catch(() => undefined);
    return turn;
  }
}

export interface BackoffOptions {
  readonly initialMs: number;
  readonly maxMs: number;
  readonly factor: number;
  /** Each delay is stretched by up to this fraction at random (client-go's jitter). */
  readonly jitter: number;
  /** A run of this long without failure starts the next failure from `initialMs` again. */
  readonly resetAfterMs: number;
}

/** The reflector's defaults: 800 ms doubling to 30 s, full jitter, reset after 2 minutes quiet. */
export const REFLECTOR_BACKOFF: BackoffOptions = {
  initialMs: 800,
  maxMs: 30_000,
  factor: 2,
  jitter: 1,
  resetAfterMs: 120_000,
};

export class Backoff {
  private current: number;
  private lastFailure = Number.NEGATIVE_INFINITY;

  constructor(
    private readonly options: BackoffOptions = REFLECTOR_BACKOFF,
    private readonly clock: SleepClock = systemSleepClock,
    private readonly random: () => number = Math.random,
  ) {
    this.current = options.initialMs;
  }

  /** The delay before the next attempt after a failure now. */
  next(): number {
    const now = this.clock.now();
    if (now - this.lastFailure > this.options.resetAfterMs) this.current = this.options.initialMs;
    this.lastFailure = now;
    const base = this.current;
    this.current = Math.min(this.options.maxMs, this.current * this.options.factor);
    return base + base * this.options.jitter * this.random();
  }

  reset(): void {
    this.current = this.options.initialMs;
    this.lastFailure = Number.NEGATIVE_INFINITY;
  }
}
