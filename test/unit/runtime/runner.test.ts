import { test } from "node:test";
import assert from "node:assert/strict";
import fc from "fast-check";
import { FakeClock, settle } from "../../../src/proxy/clock.ts";
import { Registry } from "prom-client";
import {
  BoundedFrequencyRunner,
  RunnerStateError,
  requestSync,
  runSyncLoop,
} from "../../../src/proxy/runner.ts";
import { ProxyHealth } from "../../../src/proxy/health.ts";
import { createProxyMetrics } from "../../../src/proxy/metrics.ts";
import { ConfigError } from "../../../src/errors.ts";

// Durations embedded in the steps below depend on these.
const minInterval = 1000;
const retryInterval = 5000;
const maxInterval = 10000;

/** Counts calls of the managed function; `failNext` makes the next call throw. */
class Receiver {
  calls = 0;
  failNext = false;
  readonly errors: unknown[] = [];

  readonly fn = async (): Promise<void> => {
    this.calls++;
    if (this.failNext) {
      this.failNext = false;
      throw new Error("sync failed");
    }
  };

  /** Whether the function ran since the last check (and resets that). */
  ran(): boolean {
    const was = this.calls > 0;
    this.calls = 0;
    return was;
  }
}

async function start(receiver: Receiver): Promise<{
  clock: FakeClock;
  runner: BoundedFrequencyRunner;
  stop: () => Promise<void>;
}> {
  const clock = new FakeClock();
  const runner = new BoundedFrequencyRunner(
    "test-runner",
    receiver.fn,
    { minInterval, retryInterval, maxInterval },
    clock,
    { onError: (err) => receiver.errors.push(err) },
  );
  const abort = new AbortController();
  const done = runner.loop(abort.signal);
  await settle();
  return {
    clock,
    runner,
    stop: async () => {
      abort.abort();
      await done;
    },
  };
}

/** After a run: the min and max timers were re-armed from the end of that run. */
function expectRun(name: string, r: Receiver, clock: FakeClock, timers = [minInterval, maxInterval]): void {
  assert.equal(r.ran(), true, `${name}: function should have been called`);
  assert.deepEqual(clock.pendingTimers(), timers, `${name}: timers`);
}

function expectNoRun(name: string, r: Receiver, clock: FakeClock, timers: number[]): void {
  assert.equal(r.ran(), false, `${name}: function should not have been called`);
  assert.deepEqual(clock.pendingTimers(), timers, `${name}: timers`);
}

test("runs coalesce and wait minInterval after the end of the previous run", async () => {
  const r = new Receiver();
  const { clock, runner, stop } = await start(r);
  expectNoRun("init", r, clock, [maxInterval]);

  // Run once, immediately.
  // rel=0ms
  runner.run();
  await settle();
  expectRun("first run", r, clock);

  // Run again, before minInterval expires.
  await clock.advance(500); // rel=500ms
  runner.run();
  await settle();
  expectNoRun("too soon after first", r, clock, [500, 9500]);

  // Run again, before minInterval expires: merged with the pending request.
  await clock.advance(499); // rel=999ms
  runner.run();
  runner.run();
  await settle();
  expectNoRun("still too soon after first", r, clock, [1, 9001]);

  // Do the deferred run, exactly once.
  await clock.advance(1); // rel=1000ms
  assert.equal(r.calls, 1, "second run: coalesced into one call");
  expectRun("second run", r, clock);

  // Try again immediately.
  runner.run();
  await settle();
  expectNoRun("too soon after second", r, clock, [1000, 10000]);

  // Ensure that we don't run again early.
  await clock.advance(999); // rel=999ms
  expectNoRun("premature", r, clock, [1, 9001]);

  // Do the deferred run.
  await clock.advance(1); // rel=1000ms
  expectRun("third run", r, clock);

  // Let minInterval pass, but there are no runs queued.
  await clock.advance(1000); // rel=1000ms
  expectNoRun("minInterval", r, clock, [9000]);

  // Let maxInterval pass.
  await clock.advance(9000); // rel=10000ms
  expectRun("maxInterval", r, clock);

  // Run again, before minInterval expires.
  await clock.advance(1); // rel=1ms
  runner.run();
  await settle();
  expectNoRun("too soon after maxInterval run", r, clock, [999, 9999]);

  // Let minInterval pass.
  await clock.advance(999); // rel=1000ms
  expectRun("fifth run", r, clock);

  await stop();
  assert.deepEqual(clock.pendingTimers(), [], "stop clears every timer");
  assert.deepEqual(r.errors, []);
});

test("a failed run is retried after retryInterval; a success cancels the retry", async () => {
  const r = new Receiver();
  const { clock, runner, stop } = await start(r);

  // Run once, immediately, and fail.
  // rel=0ms
  r.failNext = true;
  runner.run();
  await settle();
  expectRun("first run (fails)", r, clock, [minInterval, retryInterval, maxInterval]);
  assert.equal(r.errors.length, 1, "the error is reported, not thrown");

  // Nothing happens when minInterval passes.
  await clock.advance(1000); // rel=1000ms
  expectNoRun("minInterval, nothing queued", r, clock, [4000, 9000]);

  // After retryInterval, the function is called again.
  await clock.advance(4000); // rel=5000ms
  expectRun("retry", r, clock);

  // Fail again, at the next requested run.
  await clock.advance(1000); // rel=1000ms
  r.failNext = true;
  runner.run();
  await settle();
  expectRun("second run (fails)", r, clock, [minInterval, retryInterval, maxInterval]);

  // A run requested before the retry is due happens after minInterval and cancels the retry.
  await clock.advance(100); // rel=100ms
  runner.run();
  await settle();
  expectNoRun("too soon after failure", r, clock, [900, 4900, 9900]);
  await clock.advance(900); // rel=1000ms
  expectRun("third run", r, clock);

  // Retry was cancelled because we already ran.
  await clock.advance(4000); // rel=4000ms since the third run, 5000ms since the failure
  expectNoRun("retry cancelled", r, clock, [6000]);

  // The periodic run still happens at maxInterval.
  await clock.advance(5999); // rel=9999ms
  expectNoRun("premature", r, clock, [1]);
  await clock.advance(1); // rel=10000ms
  expectRun("maxInterval", r, clock);

  await stop();
});

test("a retry timer that fires during the min interval runs once minInterval has passed", async () => {
  const r = new Receiver();
  const clock = new FakeClock();
  const runner = new BoundedFrequencyRunner(
    "short-retry",
    r.fn,
    { minInterval: 2000, retryInterval: 500, maxInterval: 10000 },
    clock,
    { onError: () => {} },
  );
  const abort = new AbortController();
  const done = runner.loop(abort.signal);
  await settle();

  // rel=0ms
  r.failNext = true;
  runner.run();
  await settle();
  assert.equal(r.ran(), true, "first run");

  // The retry is due, but minInterval is not over.
  await clock.advance(500); // rel=500ms
  assert.equal(r.ran(), false, "retry waits for minInterval");

  await clock.advance(1500); // rel=2000ms
  assert.equal(r.ran(), true, "retry runs at minInterval");
  assert.deepEqual(clock.pendingTimers(), [2000, 10000]);

  abort.abort();
  await done;
});

test("run() before loop() starts is dropped", async () => {
  const r = new Receiver();
  const clock = new FakeClock();
  const runner = new BoundedFrequencyRunner(
    "early",
    r.fn,
    { minInterval, retryInterval, maxInterval },
    clock,
  );
  runner.run();
  const abort = new AbortController();
  const done = runner.loop(abort.signal);
  await settle();
  assert.equal(r.ran(), false, "the early request was not kept");
  await clock.advance(maxInterval - 1); // rel=9999ms
  assert.equal(r.ran(), false);
  await clock.advance(1); // rel=10000ms
  assert.equal(r.ran(), true, "only the periodic run happens");
  abort.abort();
  await done;
  runner.run();
  await settle();
  assert.equal(r.ran(), false, "run() after the loop stopped does nothing");
});

test("abort while waiting for minInterval stops the loop", async () => {
  const r = new Receiver();
  const { clock, runner, stop } = await start(r);
  runner.run();
  await settle();
  assert.equal(r.ran(), true);
  runner.run();
  await stop();
  await clock.advance(20000);
  assert.equal(r.ran(), false, "nothing runs after stop");
});

test("a synchronous throw from fn is caught like a rejection", async () => {
  const clock = new FakeClock();
  const errors: unknown[] = [];
  const runner = new BoundedFrequencyRunner(
    "throws",
    () => {
      throw new Error("boom");
    },
    { minInterval, retryInterval, maxInterval },
    clock,
    { onError: (err) => errors.push(err) },
  );
  const abort = new AbortController();
  const done = runner.loop(abort.signal);
  await settle();
  runner.run();
  await settle();
  assert.equal(errors.length, 1);
  assert.deepEqual(clock.pendingTimers(), [minInterval, retryInterval, maxInterval]);
  abort.abort();
  await done;
});

test("maxInterval < minInterval is rejected; a second concurrent loop is rejected", async () => {
  const clock = new FakeClock();
  assert.throws(
    () =>
      new BoundedFrequencyRunner(
        "bad",
        async () => {},
        { minInterval: 2, retryInterval: 1, maxInterval: 1 },
        clock,
      ),
    ConfigError,
  );
  const runner = new BoundedFrequencyRunner(
    "twice",
    async () => {},
    { minInterval, retryInterval, maxInterval },
    clock,
  );
  const abort = new AbortController();
  const done = runner.loop(abort.signal);
  await assert.rejects(runner.loop(abort.signal), RunnerStateError);
  abort.abort();
  await done;
});

test("property: runs keep minInterval apart, never exceed maxInterval apart, and serve every request promptly", async () => {
  const action = fc.record({ delay: fc.integer({ min: 0, max: 3000 }), request: fc.boolean() });
  await fc.assert(
    fc.asyncProperty(fc.array(action, { maxLength: 30 }), async (actions) => {
      const clock = new FakeClock();
      const runs: number[] = [];
      const runner = new BoundedFrequencyRunner(
        "prop",
        async () => {
          runs.push(clock.now());
        },
        { minInterval, retryInterval, maxInterval },
        clock,
      );
      const abort = new AbortController();
      const done = runner.loop(abort.signal);
      await settle();
      const loopStart = clock.now();
      const requests: number[] = [];
      for (const { delay, request } of actions) {
        await clock.advance(delay);
        if (request) {
          requests.push(clock.now());
          runner.run();
          await settle();
        }
      }
      await clock.advance(maxInterval);
      abort.abort();
      await done;

      const times = [loopStart, ...runs];
      for (let i = 1; i < times.length; i++) {
        const gap = (times[i] ?? 0) - (times[i - 1] ?? 0);
        if (i > 1) assert.ok(gap >= minInterval, `runs ${gap}ms apart`);
        assert.ok(gap <= maxInterval, `no run for ${gap}ms`);
      }
      for (const t of requests) {
        const last = runs.filter((r) => r < t).at(-1);
        const deadline = last === undefined ? t : Math.max(t, last + minInterval);
        const served = runs.find((r) => r >= t);
        assert.ok(
          served !== undefined && served <= deadline,
          `request at ${t} served at ${served}, deadline ${deadline}`,
        );
      }
    }),
    { numRuns: 60 },
  );
});

test("requestSync / runSyncLoop: health queued/updated, last-queued metric, runner run", async () => {
  const clock = new FakeClock(Date.UTC(2024, 0, 2));
  const registry = new Registry();
  const metrics = createProxyMetrics(registry);
  const health = new ProxyHealth(60_000, clock);
  const r = new Receiver();
  const runner = new BoundedFrequencyRunner(
    "sync-runner",
    r.fn,
    { minInterval, retryInterval, maxInterval },
    clock,
  );
  const deps = {
    family: "IPv4" as const,
    runner,
    clock,
    health,
    lastQueuedTimestamp: metrics.syncProxyRulesLastQueuedTimestamp,
  };

  const abort = new AbortController();
  const done = runSyncLoop(deps, abort.signal);
  await settle();
  assert.deepEqual(health.health().status.get("IPv4"), { lastUpdated: clock.now(), healthy: true });
  assert.match(
    await registry.metrics(),
    /^kubeproxy_sync_proxy_rules_last_queued_timestamp_seconds\{ip_family="IPv4"\} 1704153600$/m,
  );

  await clock.advance(2000); // t=2s
  requestSync(deps);
  await settle();
  assert.equal(r.ran(), true, "the runner ran");
  assert.match(
    await registry.metrics(),
    /^kubeproxy_sync_proxy_rules_last_queued_timestamp_seconds\{ip_family="IPv4"\} 1704153602$/m,
  );
  // The fake sync function does not call health.updated(): the queued update stays pending.
  await clock.advance(60_000); // t=62s
  assert.equal(health.isHealthy(), false);

  abort.abort();
  await done;
});
