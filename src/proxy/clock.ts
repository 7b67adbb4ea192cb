/**
 * Time as a dependency (upstream `k8s.io/utils/clock`): the runner and the health state read
 * the time and arm timers only through a `Clock`, so tests drive them with `FakeClock`
 * instead of sleeping.
 */

/** A one-shot timer; `stop` reports whether it was still pending (Go `Timer.Stop`). */
export interface TimerHandle {
  stop(): boolean;
}

export interface Clock {
  /** Milliseconds since the Unix epoch. */
  now(): number;
  /** Calls `fn` once, `delayMs` from now. */
  setTimer(delayMs: number, fn: () => void): TimerHandle;
}

export const realClock: Clock = {
  now: () => Date.now(),
  setTimer(delayMs, fn) {
    let pending = true;
    const id = setTimeout(
      () => {
        pending = false;
        fn();
      },
      Math.max(0, delayMs),
    );
    return {
      stop() {
        const was = pending;
        pending = false;
        clearTimeout(id);
        return was;
      },
    };
  },
};

interface FakeTimer {
  readonly due: number;
  readonly seq: number;
  readonly fn: () => void;
  pending: boolean;
}

/** Lets queued promise continuations (an async loop woken by a timer) run to their next await. */
export function settle(): Promise<void> {
  return new Promise((resolve) => setImmediate(resolve));
}

/**
 * A clock that only moves when told to. `advance` walks forward timer by timer: the time is
 * set to each due timer's deadline before it fires (ties fire in creation order), and async
 * work woken by a timer settles before the next one fires, so timers armed by that work are
 * measured from the right instant.
 */
export class FakeClock implements Clock {
  private current: number;
  private seq = 0;
  private timers: FakeTimer[] = [];

  constructor(start = Date.UTC(2000, 0, 1)) {
    this.current = start;
  }

  now(): number {
    return this.current;
  }

  setTimer(delayMs: number, fn: () => void): TimerHandle {
    const timer: FakeTimer = {
      due: this.current + Math.max(0, delayMs),
      seq: this.seq++,
      fn,
      pending: true,
    };
    this.timers.push(timer);
    return {
      stop: () => {
        const was = timer.pending;
        timer.pending = false;
        this.timers = this.timers.filter((t) => t !== timer);
        return was;
      },
    };
  }

  /** Deadlines of the timers still pending, relative to now, soonest first. */
  pendingTimers(): number[] {
    return this.timers
      .filter((t) => t.pending)
      .map((t) => t.due - this.current)
      .sort((a, b) => a - b);
  }

  async advance(ms: number): Promise<void> {
    const target = this.current + ms;
    for (;;) {
      const next = this.nextDue(target);
      if (next === undefined) break;
      this.current = next.due;
      next.pending = false;
      this.timers = this.timers.filter((t) => t !== next);
      next.fn();
      await settle();
    }
    this.current = target;
    await settle();
  }

  private nextDue(limit: number): FakeTimer | undefined {
    let best: FakeTimer | undefined;
    for (const t of this.timers) {
      if (!t.pending || t.due > limit) continue;
      if (best === undefined || t.due < best.due || (t.due === best.due && t.seq < best.seq)) {
        best = t;
      }
    }
    return best;
  }
}
