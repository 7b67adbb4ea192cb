import { describe, test } from "node:test";
import assert from "node:assert/strict";
import fc from "fast-check";
import { Backoff, TokenBucket } from "../../../src/k8s/ratelimit.ts";
import type { SleepClock } from "../../../src/k8s/ratelimit.ts";

/** A clock that only moves when the test says so; sleepers wake in order of their deadline. */
class FakeClock implements SleepClock {
  t = 0;
  private sleepers: { until: number; wake: () => void }[] = [];
  now(): number {
    return this.t;
  }
  sleep(ms: number): Promise<void> {
    return new Promise((resolve) => this.sleepers.push({ until: this.t + ms, wake: resolve }));
  }
  async advance(ms: number): Promise<void> {
    this.t += ms;
    const due = this.sleepers.filter((s) => s.until <= this.t);
    this.sleepers = this.sleepers.filter((s) => s.until > this.t);
    for (const s of due) s.wake();
    // Let every promise chain that the wake-ups started run to its next sleep.
    await new Promise((resolve) => setImmediate(resolve));
  }
}

describe("TokenBucket", () => {
  test("burst at once, then qps per second, waiters in arrival order", async () => {
    const clock = new FakeClock();
    const bucket = new TokenBucket(2, 3, clock);
    const done: number[] = [];
    const waits = [0, 1, 2, 3, 4, 5].map((i) => bucket.wait().then(() => done.push(i)));
    await clock.advance(0);
    // t=0: the burst of 3 goes through.
    assert.deepEqual(done, [0, 1, 2]);
    // t=0.5 s: one token refilled at 2 qps.
    await clock.advance(500);
    assert.deepEqual(done, [0, 1, 2, 3]);
    // t=1.5 s: two more.
    await clock.advance(500);
    await clock.advance(500);
    assert.deepEqual(done, [0, 1, 2, 3, 4, 5]);
    await Promise.all(waits);
  });

  test("tryAccept never exceeds burst + qps × elapsed", () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 1, max: 20 }),
        fc.integer({ min: 1, max: 30 }),
        fc.array(fc.integer({ min: 0, max: 400 }), { maxLength: 60 }),
        (qps, burst, steps) => {
          const clock = new FakeClock();
          const bucket = new TokenBucket(qps, burst, clock);
          let accepted = 0;
          for (const step of steps) {
            clock.t += step;
            if (bucket.tryAccept()) accepted++;
          }
          return accepted <= burst + (qps * clock.t) / 1000 + 1e-9;
        },
      ),
    );
  });

  test("non-positive qps disables pacing", () => {
    const bucket = new TokenBucket(0, 1, new FakeClock());
    for (let i = 0; i < 100; i++) assert.ok(bucket.tryAccept());
  });
});

describe("Backoff", () => {
  test("doubles up to the cap with jitter in [base, base × (1 + jitter)], resets after a quiet period", () => {
    const clock = new FakeClock();
    let r = 0;
    const randoms = [0, 1, 0.5, 0, 0, 0, 0];
    const b = new Backoff(
      { initialMs: 100, maxMs: 500, factor: 2, jitter: 1, resetAfterMs: 10_000 },
      clock,
      () => randoms[r++] ?? 0,
    );
    assert.deepEqual([b.next(), b.next(), b.next(), b.next(), b.next()], [100, 400, 600, 500, 500]);
    clock.t += 10_001;
    assert.equal(b.next(), 100);
    b.next();
    b.reset();
    assert.equal(b.next(), 100);
  });
});
