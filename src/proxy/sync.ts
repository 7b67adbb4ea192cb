/**
 * The mode-independent half of a sync (upstream's `syncProxyRules` preamble and epilogue, which
 * every proxier of `pkg/proxy` repeats): apply the pending changes, log the problems they carry,
 * decide full or partial, hand the state to the mode's writer, and only once the kernel accepted
 * it commit the bookkeeping — health, the common metrics, network-programming latency and the
 * conntrack clean-up policy. A mode supplies a `FamilyWriter`: it renders and applies, nothing else.
 */
import type { Logger } from "pino";
import { programmingLatencies, type ApplyResult, type ProxyStateStore } from "./changetracker.ts";
import type { Clock } from "./clock.ts";
import type { ProxyHealth } from "./health.ts";
import type { ProxyMetrics } from "./metrics.ts";
import type { IPFamily } from "../ip.ts";
import type { ProxyState } from "./types.ts";
import type { DriftReport } from "../inspect/drift.ts";

/** Upstream proxyutil.FullSyncPeriod: a full resync at least this often. */
export const FULL_SYNC_PERIOD_MS = 3_600_000;

export interface WriteRequest {
  readonly state: ProxyState;
  readonly fullSync: boolean;
  /** `ns/name` of the Services whose ports or endpoints changed since the last accepted sync. */
  readonly changedServices: ReadonlySet<string>;
  /** Called each time the kernel accepted one transaction of this sync. */
  readonly onTransaction: () => void;
}

export interface WriteOutcome<D> {
  /** Services with a Local traffic policy and no local endpoint (upstream's metric). */
  readonly noLocalEndpoints: { readonly internal: number; readonly external: number };
  /** What the mode wants to say about the write (rule counts, deleted chains…). */
  readonly details: D;
}

/** A mode's kernel writer for one IP family. */
export interface FamilyWriter<D> {
  readonly family: IPFamily;
  /** True while the mode skips the hourly full resync (iptables' large-cluster mode). */
  readonly skipPeriodicFullSync: boolean;
  /**
   * Renders and applies one sync. Throws when the kernel refused a transaction: what it held
   * before that transaction stays, and the next sync is a full one.
   */
  write(request: WriteRequest): Promise<WriteOutcome<D>>;
  /** Forget what the writer believes the kernel holds (a failure, a flush by someone else). */
  invalidate(): void;
  /** The mode's own metrics for one finished attempt. */
  observe?(attempt: SyncAttempt<D>): void;
  /** The node ruleset the mode would leave for `state`, and the kernel compared with it. */
  inspect?(state: ProxyState): Promise<WriterInspection>;
  /** The transaction the kernel refused in the last failed write, as sent; null if none. */
  refusedTransaction?(): string | null;
}

export interface WriterInspection {
  /** In the mode's dump format (iptables: `iptables-save` of the whole node). */
  readonly intended: string;
  readonly drift: DriftReport;
}

/** A sync the kernel refused, kept for the daemon's debug endpoint. */
export interface SyncFailure {
  readonly family: IPFamily;
  /** Epoch milliseconds of the capture. */
  readonly at: number;
  readonly fullSync: boolean;
  readonly error: string;
  /** The refused transaction, when the mode keeps it. */
  readonly transaction: string | null;
  /** Failures since the capture that were not captured (at most one capture a minute). */
  readonly notCaptured: number;
}

/** Capturing a refused transaction (up to a whole node's payload) is limited to one a minute. */
export const FAILURE_CAPTURE_INTERVAL_MS = 60_000;

export interface SyncAttempt<D> {
  readonly fullSync: boolean;
  readonly seconds: number;
  /** Present when the kernel accepted the sync. */
  readonly outcome: WriteOutcome<D> | null;
}

/** What one sync did, for logs, metrics, the web view and tests. */
export interface SyncReport<D> {
  readonly family: IPFamily;
  readonly fullSync: boolean;
  readonly ok: boolean;
  readonly durationMs: number;
  readonly transactions: number;
  readonly updatedServices: number;
  /** The writer's details; null when it failed before it had any. */
  readonly details: D | null;
  readonly error?: Error;
}

export interface FamilyProxierOptions<D, W extends FamilyWriter<D>> {
  readonly writer: W;
  readonly store: ProxyStateStore;
  readonly clock: Clock;
  /** Already bound to the family (`ipFamily`), as upstream's per-family proxier logs. */
  readonly log: Logger;
  readonly health: ProxyHealth;
  readonly metrics: ProxyMetrics | null;
  /** When the runner retries a failed sync (the sync period), for the failure's log line. */
  readonly retryIntervalMs: number;
  /** Stale UDP conntrack clean-up after an accepted sync that needs it (docs/iptables.md §5.6). */
  readonly reconcileConntrack?: (state: ProxyState) => Promise<{ deleted: number }>;
  /** Called after every sync attempt. */
  readonly onSync?: (report: SyncReport<D>, state: ProxyState) => void;
}

/**
 * Bookkeeping of changes the kernel has not accepted yet: a failed sync does not lose the
 * latency samples or the conntrack clean-up its changes asked for; the retry carries them.
 */
interface Uncommitted {
  readonly conntrackCleanupRequired: boolean;
  readonly lastChangeTriggerTimes: ReadonlyMap<string, readonly number[]>;
}

const NOTHING_UNCOMMITTED: Uncommitted = {
  conntrackCleanupRequired: false,
  lastChangeTriggerTimes: new Map(),
};

function merged(carried: Uncommitted, pending: ApplyResult): Uncommitted {
  const times = new Map(carried.lastChangeTriggerTimes);
  for (const [service, list] of pending.lastChangeTriggerTimes)
    times.set(service, [...(times.get(service) ?? []), ...list]);
  return {
    conntrackCleanupRequired: carried.conntrackCleanupRequired || pending.conntrackCleanupRequired,
    lastChangeTriggerTimes: times,
  };
}

/** The proxier of one IP family: the shared sync half around a mode's writer. */
export class FamilyProxier<D, W extends FamilyWriter<D> = FamilyWriter<D>> {
  private initialized = false;
  private needFullSync = true;
  private lastFullSync = Number.NEGATIVE_INFINITY;
  private uncommitted: Uncommitted = NOTHING_UNCOMMITTED;
  /**
   * The state the kernel last accepted, what the drift check compares the kernel with; null
   * after a failure (the kernel may hold part of the refused sync: not drift).
   */
  private committed: ProxyState | null = null;
  /** The state of the last attempt: what the proxy would write now (the debug endpoint). */
  private latest: ProxyState | null = null;
  private failure: SyncFailure | null = null;

  constructor(private readonly options: FamilyProxierOptions<D, W>) {}

  get family(): IPFamily {
    return this.options.writer.family;
  }

  get writer(): W {
    return this.options.writer;
  }

  /** Both the Service and the EndpointSlice initial lists are in (upstream `isInitialized`). */
  setInitialized(): void {
    this.initialized = true;
  }

  /** The kernel may not hold what we wrote (canary gone, drift): the next sync is a full one. */
  forceFullSync(): void {
    this.needFullSync = true;
    this.options.writer.invalidate();
  }

  /** The last failed sync the kernel refused (captured at most once a minute). */
  get lastFailure(): SyncFailure | null {
    return this.failure;
  }

  /** What the writer would leave for the latest state, against the kernel; null before any sync. */
  async inspect(): Promise<WriterInspection | null> {
    const { writer } = this.options;
    if (this.latest === null || writer.inspect === undefined) return null;
    return writer.inspect(this.latest);
  }

  /**
   * Before a full sync: whatever differs from what the kernel last accepted is drift (someone
   * edited our chains); the full sync rewrites them, and `repair` counts what it fixed.
   */
  private async findDrift(): Promise<number> {
    const { log, metrics } = this.options;
    try {
      const found = await this.inspect();
      if (found === null || found.drift.inSync) return 0;
      const { differences, services } = found.drift;
      metrics?.syncProxyRulesDriftTotal.inc({ ip_family: this.family, outcome: "found" }, differences);
      log.warn(
        { differences, services: services.map((s) => s.service ?? "(node)") },
        "Kernel rules drifted from what the proxy wrote; the full sync rewrites them",
      );
      return differences;
    } catch (error) {
      log.error({ err: error }, "Drift check failed");
      return 0;
    }
  }

  private async repair(found: number): Promise<void> {
    const { log, metrics } = this.options;
    try {
      const after = await this.inspect();
      const left = after?.drift.differences ?? found;
      const repaired = Math.max(0, found - left);
      metrics?.syncProxyRulesDriftTotal.inc({ ip_family: this.family, outcome: "repaired" }, repaired);
      log.info({ repaired, left }, "Drift after the full sync");
    } catch (error) {
      log.error({ err: error }, "Drift check failed");
    }
  }

  private recordFailure(fullSync: boolean, error: unknown): void {
    const now = this.options.clock.now();
    const previous = this.failure;
    if (previous !== null && now - previous.at < FAILURE_CAPTURE_INTERVAL_MS) {
      this.failure = { ...previous, notCaptured: previous.notCaptured + 1 };
      return;
    }
    this.failure = {
      family: this.family,
      at: now,
      fullSync,
      error: error instanceof Error ? error.message : String(error),
      transaction: this.options.writer.refusedTransaction?.() ?? null,
      notCaptured: 0,
    };
  }

  async syncProxyRules(): Promise<SyncReport<D> | null> {
    if (!this.initialized) return null;
    const { clock, store, log, metrics, writer } = this.options;
    const family = writer.family;
    const started = clock.now();
    const pending = store.applyPending();
    for (const problem of pending.problems)
      log.warn({ object: problem.object, field: problem.field }, problem.reason);
    for (const warning of pending.warnings)
      log.info({ object: warning.object, field: warning.field }, warning.reason);
    const periodic = started - this.lastFullSync > FULL_SYNC_PERIOD_MS && !writer.skipPeriodicFullSync;
    const fullSync = this.needFullSync || periodic || pending.topologyChanged;
    const uncommitted = merged(this.uncommitted, pending);
    const drifted = fullSync && this.committed !== null ? await this.findDrift() : 0;
    this.latest = pending.state;

    let transactions = 0;
    let outcome: WriteOutcome<D>;
    try {
      outcome = await writer.write({
        state: pending.state,
        fullSync,
        changedServices: pending.updatedServices,
        onTransaction: () => transactions++,
      });
    } catch (error) {
      this.needFullSync = true;
      this.uncommitted = uncommitted;
      writer.invalidate();
      this.committed = null;
      this.recordFailure(fullSync, error);
      const seconds = (clock.now() - started) / 1000;
      writer.observe?.({ fullSync, seconds, outcome: null });
      log.error({ err: error, retryingTime: `${this.options.retryIntervalMs / 1000}s` }, "Sync failed");
      const report = this.report(fullSync, started, transactions, pending, null, error as Error);
      this.options.onSync?.(report, pending.state);
      throw error;
    }

    this.needFullSync = false;
    this.uncommitted = NOTHING_UNCOMMITTED;
    this.committed = pending.state;
    if (drifted > 0) await this.repair(drifted);
    if (fullSync) this.lastFullSync = started;
    const finished = clock.now();
    this.options.health.updated(family);
    if (metrics !== null) {
      for (const seconds of programmingLatencies(uncommitted, finished))
        metrics.networkProgrammingLatency.observe({ ip_family: family }, seconds);
      const { internal, external } = outcome.noLocalEndpoints;
      metrics.syncProxyRulesNoLocalEndpointsTotal.set(
        { traffic_policy: "internal", ip_family: family },
        internal,
      );
      metrics.syncProxyRulesNoLocalEndpointsTotal.set(
        { traffic_policy: "external", ip_family: family },
        external,
      );
      metrics.syncProxyRulesLastTimestamp.set({ ip_family: family }, finished / 1000);
      metrics.syncProxyRulesLatency.observe({ ip_family: family }, (finished - started) / 1000);
    }
    writer.observe?.({ fullSync, seconds: (finished - started) / 1000, outcome });
    if (uncommitted.conntrackCleanupRequired && this.options.reconcileConntrack !== undefined)
      await this.reconcileConntrack(pending.state);
    const report = this.report(fullSync, started, transactions, pending, outcome.details);
    log.debug({ fullSync, elapsed: `${report.durationMs}ms`, transactions }, "SyncProxyRules complete");
    this.options.onSync?.(report, pending.state);
    return report;
  }

  private async reconcileConntrack(state: ProxyState): Promise<void> {
    const { clock, metrics, log } = this.options;
    const family = this.family;
    const started = clock.now();
    try {
      const { deleted } = await this.options.reconcileConntrack!(state);
      metrics?.reconcileConntrackFlowsDeletedEntriesTotal.inc({ ip_family: family }, deleted);
      if (deleted > 0) log.info({ deleted }, "Deleted stale UDP conntrack entries");
    } catch (error) {
      log.error({ err: error }, "Failed to reconcile conntrack entries");
    } finally {
      metrics?.reconcileConntrackFlowsLatency.observe({ ip_family: family }, (clock.now() - started) / 1000);
    }
  }

  private report(
    fullSync: boolean,
    started: number,
    transactions: number,
    pending: ApplyResult,
    details: D | null,
    error?: Error,
  ): SyncReport<D> {
    return {
      family: this.family,
      fullSync,
      ok: error === undefined,
      durationMs: this.options.clock.now() - started,
      transactions,
      updatedServices: pending.updatedServices.size,
      details,
      ...(error === undefined ? {} : { error }),
    };
  }
}
