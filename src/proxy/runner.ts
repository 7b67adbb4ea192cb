/**
 * Upstream `pkg/proxy/runner/bounded_frequency_runner.go`: decides when the sync function
 * runs. Run requests coalesce into at most one pending run; at least `minInterval` passes
 * between the END of one run and the start of the next; a failed run is retried after
 * `retryInterval` unless something else triggers a run first; and a run happens at least every
 * `maxInterval` even when nothing asks for one.
 */
import { ConfigError, KubeProxyError } from "../errors.ts";
import type { Gauge } from "prom-client";
import type { Clock, TimerHandle } from "./clock.ts";
import type { ProxyHealth } from "./health.ts";
import type { IPFamily } from "../ip.ts";

/** All in milliseconds. */
export interface RunnerIntervals {
  readonly minInterval: number;
  readonly retryInterval: number;
  readonly maxInterval: number;
}

export interface RunnerOptions {
  /** Called with whatever a failed run threw; the runner itself never throws it on. */
  readonly onError?: (err: unknown) => void;
}

/** `loop` was called while a loop of the same runner was still running. */
export class RunnerStateError extends KubeProxyError {
  readonly code = "KPT_RUNNER_STATE";
}

export class BoundedFrequencyRunner {
  private looping = false;
  private runRequested = false;
  private maxFired = false;
  private retryFired = false;
  private minFired = false;
  private minTimer: TimerHandle | null = null;
  private maxTimer: TimerHandle | null = null;
  private retryTimer: TimerHandle | null = null;
  private wakeup: (() => void) | null = null;

  constructor(
    readonly name: string,
    private readonly fn: () => Promise<void>,
    private readonly intervals: RunnerIntervals,
    private readonly clock: Clock,
    private readonly options: RunnerOptions = {},
  ) {
    if (intervals.maxInterval < intervals.minInterval) {
      throw new ConfigError([
        `${name}: maxInterval (${intervals.maxInterval}ms) must be >= minInterval (${intervals.minInterval}ms)`,
      ]);
    }
  }

  /**
   * Asks for a run as soon as the min interval allows. Does nothing until `loop` has started
   * (upstream drops requests made before the loop is ready); extra requests while one is
   * pending are merged into it.
   */
  run(): void {
    if (!this.looping) return;
    this.runRequested = true;
    this.wake();
  }

  /** Runs until `signal` aborts; resolves once stopped, with every timer cleared. */
  async loop(signal: AbortSignal): Promise<void> {
    if (this.looping) throw new RunnerStateError(`${this.name}: loop is already running`);
    this.looping = true;
    const onAbort = (): void => this.wake();
    signal.addEventListener("abort", onAbort);
    this.maxTimer = this.arm(this.intervals.maxInterval, () => (this.maxFired = true));
    try {
      for (;;) {
        await this.waitFor(() => signal.aborted || this.runRequested || this.maxFired || this.retryFired);
        if (signal.aborted) return;
        this.runRequested = false;
        this.maxFired = false;
        this.retryFired = false;
        this.stopTimer("min");
        this.stopTimer("max");

        const failed = await this.runOnce();
        // A success cancels a pending retry; a failure (re)arms it.
        this.stopTimer("retry");
        if (failed) {
          this.retryTimer = this.arm(this.intervals.retryInterval, () => (this.retryFired = true));
        }
        // Measured from the end of the run, so slow syncs still leave minInterval between them.
        this.minTimer = this.arm(this.intervals.minInterval, () => (this.minFired = true));
        this.maxTimer = this.arm(this.intervals.maxInterval, () => (this.maxFired = true));

        await this.waitFor(() => signal.aborted || this.minFired);
        if (signal.aborted) return;
        this.minFired = false;
      }
    } finally {
      signal.removeEventListener("abort", onAbort);
      this.stopTimer("min");
      this.stopTimer("max");
      this.stopTimer("retry");
      this.runRequested = false;
      this.looping = false;
    }
  }

  private async runOnce(): Promise<boolean> {
    try {
      await this.fn();
      return false;
    } catch (err) {
      this.options.onError?.(err);
      return true;
    }
  }

  private arm(delayMs: number, mark: () => void): TimerHandle {
    return this.clock.setTimer(delayMs, () => {
      mark();
      this.wake();
    });
  }

  private stopTimer(which: "min" | "max" | "retry"): void {
    // Like Go 1.23 timers: once stopped, a timer that already fired is not seen as fired.
    if (which === "min") {
      this.minTimer?.stop();
      this.minTimer = null;
      this.minFired = false;
    } else if (which === "max") {
      this.maxTimer?.stop();
      this.maxTimer = null;
      this.maxFired = false;
    } else {
      this.retryTimer?.stop();
      this.retryTimer = null;
      this.retryFired = false;
    }
  }

  private async waitFor(ready: () => boolean): Promise<void> {
    while (!ready()) {
      await new Promise<void>((resolve) => (this.wakeup = resolve));
    }
  }

  private wake(): void {
    const wakeup = this.wakeup;
    this.wakeup = null;
    wakeup?.();
  }
}

/** What a proxier's `Sync()` / `SyncLoop()` touch besides the runner (upstream proxier.go). */
export interface SyncLoopDeps {
  readonly family: IPFamily;
  readonly runner: BoundedFrequencyRunner;
  readonly clock: Clock;
  readonly health: Pick<ProxyHealth, "queuedUpdate" | "updated">;
  /** `kubeproxy_sync_proxy_rules_last_queued_timestamp_seconds` from createProxyMetrics. */
  readonly lastQueuedTimestamp?: Gauge<"ip_family">;
}

/**
 * Upstream `Sync()`: marks an update as queued for /healthz, stamps the last-queued metric and
 * asks the runner for a run.
 */
export function requestSync(deps: SyncLoopDeps): void {
  deps.health.queuedUpdate(deps.family);
  deps.lastQueuedTimestamp?.set({ ip_family: deps.family }, deps.clock.now() / 1000);
  deps.runner.run();
}

/**
 * Upstream `SyncLoop()`: reports the family healthy first (so /healthz is OK before the first
 * sync), stamps the last-queued metric, then runs the runner's loop until `signal` aborts.
 */
export function runSyncLoop(deps: SyncLoopDeps, signal: AbortSignal): Promise<void> {
  deps.health.updated(deps.family);
  deps.lastQueuedTimestamp?.set({ ip_family: deps.family }, deps.clock.now() / 1000);
  return deps.runner.loop(signal);
}
