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
}

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
      const seconds = (clock.now() - started) / 1000;
      writer.observe?.({ fullSync, seconds, outcome: null });
      log.error({ err: error, retryingTime: `${this.options.retryIntervalMs / 1000}s` }, "Sync failed");
      const report = this.report(fullSync, started, transactions, pending, null, error as Error);
      this.options.onSync?.(report, pending.state);
      throw error;
    }

    this.needFullSync = false;
    this.uncommitted = NOTHING_UNCOMMITTED;
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
