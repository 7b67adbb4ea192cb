import { setImmediate as yieldToEventLoop } from "node:timers/promises";
import type { Logger } from "pino";
import type { IptablesInterface, RestorePayload } from "../../kernel/iptables.ts";
import {
  chainsFromSave,
  ensureJumpRulesOneByOne,
  jumpRuleTables,
  jumpRulesSection,
} from "../../kernel/iptables.ts";
import type { Clock } from "../../proxy/clock.ts";
import type { ProxyHealth } from "../../proxy/health.ts";
import type { ProxyMetrics } from "../../proxy/metrics.ts";
import { programmingLatencies, type ApplyResult, type ProxyStateStore } from "../../proxy/changetracker.ts";
import type { ProxyState } from "../../proxy/types.ts";
import { isServiceChainName, JUMP_CHAINS } from "./chains.ts";
import { natFixedRuleLines, renderIptablesStream, writtenServicePorts } from "./render.ts";
import { TransactionWriter, writtenTopLevel, type WrittenTopLevel } from "./transactions.ts";
import type { IptablesSettings, RenderResult, StreamRenderRequest } from "./types.ts";

/** Upstream proxyutil.FullSyncPeriod: a full resync at least this often (except large clusters). */
export const FULL_SYNC_PERIOD_MS = 3_600_000;

/** While a restore is in flight, the renderer gives the event loop a turn after this many Services. */
const YIELD_EVERY_BLOCKS = 16;

/**
 * Services per restore transaction on a backend. Bounded transactions pay off on nft, where one
 * large restore is super-linear. Legacy rewrites the whole table blob on every commit, so there
 * chunks multiply the cost (bench/README.md: 10,000 Services, 29 s as one payload against 153 s
 * in chunks): one transaction, as upstream.
 */
export function maxServicesPerTransaction(backend: "nft" | "legacy"): number {
  return backend === "legacy" ? Number.POSITIVE_INFINITY : 250;
}

/** What one sync did, for logs, metrics, the web view and tests. */
export interface SyncReport {
  readonly family: string;
  readonly fullSync: boolean;
  readonly ok: boolean;
  readonly durationMs: number;
  readonly transactions: number;
  readonly updatedServices: number;
  readonly natRulesWritten: number;
  readonly deletedChains: number;
  readonly error?: Error;
}

export interface IptablesProxierOptions {
  readonly ipt: IptablesInterface;
  readonly settings: IptablesSettings;
  readonly store: ProxyStateStore;
  readonly clock: Clock;
  readonly log: Logger;
  readonly health: ProxyHealth;
  readonly metrics: ProxyMetrics | null;
  /** iptables.syncPeriod: stale-chain cleanup interval in large-cluster mode. */
  readonly syncPeriodMs: number;
  /** Rewritten Services above which one sync is split into bounded restore transactions. */
  readonly maxServicesPerTransaction?: number;
  /** Ensures the nfacct counters on full syncs (kernel side); the rules already know which exist. */
  readonly ensureCounters?: () => Promise<void>;
  /** Stale UDP conntrack cleanup after a successful sync that needs it (spec §5.6). */
  readonly reconcileConntrack?: (state: ProxyState) => Promise<{ deleted: number }>;
  /** Called after every sync attempt. */
  readonly onSync?: (report: SyncReport, state: ProxyState, result: RenderResult | null) => void;
}

/**
 * The iptables proxier of one IP family: glue between the state store, the pure renderer and the
 * kernel. It owns only the sync bookkeeping upstream keeps (needFullSync, lastFullSync,
 * large-cluster mode, last stale-chain cleanup).
 */
export class IptablesProxier {
  private initialized = false;
  private needFullSync = true;
  private lastFullSync = Number.NEGATIVE_INFINITY;
  private lastCleanup = Number.NEGATIVE_INFINITY;
  private largeClusterMode = false;
  /**
   * Service chains known to be in the kernel (what the last successful sync left), so partial
   * syncs need no `iptables-save`; null = unknown (start, failure, flush): list the kernel.
   */
  private knownNatChains: ReadonlySet<string> | null = null;
  /** The top level the last successful sync left; null when the kernel may differ from it. */
  private lastTopLevel: WrittenTopLevel | null = null;
  private readonly maxServicesPerTransaction: number;

  constructor(private readonly options: IptablesProxierOptions) {
    this.maxServicesPerTransaction = options.maxServicesPerTransaction ?? 250;
  }

  get family() {
    return this.options.settings.family;
  }

  /** Both the Service and the EndpointSlice initial lists are in (upstream `isInitialized`). */
  setInitialized(): void {
    this.initialized = true;
  }

  /** The canary disappeared or something else invalidated the kernel view. */
  forceFullSync(): void {
    this.needFullSync = true;
    this.knownNatChains = null;
    this.lastTopLevel = null;
  }

  async syncProxyRules(): Promise<SyncReport | null> {
    if (!this.initialized) return null;
    const { clock, settings, store, log, metrics } = this.options;
    const family = settings.family;
    const started = clock.now();
    const doFullSync =
      this.needFullSync || (started - this.lastFullSync > FULL_SYNC_PERIOD_MS && !this.largeClusterMode);
    const cleanupDue = !this.largeClusterMode || started - this.lastCleanup > this.options.syncPeriodMs;
    const pending: ApplyResult = store.applyPending();
    if (pending.topologyChanged) this.needFullSync = true;
    const fullSync = doFullSync || pending.topologyChanged;
    for (const problem of pending.problems)
      log.warn({ object: problem.object, field: problem.field }, problem.reason);
    for (const warning of pending.warnings)
      log.info({ object: warning.object, field: warning.field }, warning.reason);

    // One `iptables-save` when the stale-chain listing or a full sync's jump rules need it; the
    // writer starts it (`renderAndWrite`), so that it runs beside the render and the first restore.
    const listing = cleanupDue && this.knownNatChains === null;
    const kernel = new KernelReads(() => {
      const tables = listing || fullSync ? this.saveTables() : Promise.resolve(null);
      return { tables, prepared: fullSync ? this.prepareKernel(tables) : null };
    });
    let result: RenderResult | null = null;
    let transactions = 0;
    try {
      const previousTopLevel = fullSync ? null : this.lastTopLevel;
      this.lastTopLevel = null;
      const written = await this.renderAndWrite(
        { state: pending.state, settings, fullSync, changedServices: pending.updatedServices },
        previousTopLevel,
        kernel,
        () => this.existingNatChains(cleanupDue, kernel),
        () => transactions++,
      );
      result = written.result;
      if (written.existingNatChains !== null) this.lastCleanup = started;
      this.lastTopLevel = written.topLevel;
      this.knownNatChains = knownAfter(this.knownNatChains ?? written.existingNatChains, result);
    } catch (error) {
      // Whatever failed, the kernel reads and jump rules are not left running into the next sync.
      await kernel.settled();
      this.needFullSync = true;
      this.knownNatChains = null;
      metrics?.iptables?.iptablesRestoreFailuresTotal.inc({ ip_family: family });
      if (!fullSync) metrics?.iptables?.iptablesPartialRestoreFailuresTotal.inc({ ip_family: family });
      const report = this.report(fullSync, false, started, transactions, pending, result, error as Error);
      log.error(
        { err: error, ipFamily: family, retryingTime: `${this.options.syncPeriodMs / 1000}s` },
        "Sync failed",
      );
      this.options.onSync?.(report, pending.state, result);
      throw error;
    }

    this.needFullSync = false;
    if (fullSync) this.lastFullSync = started;
    this.largeClusterMode = result.largeClusterMode;
    const finished = clock.now();
    this.options.health.updated(family);
    if (metrics !== null) {
      for (const seconds of programmingLatencies(pending, finished)) {
        metrics.networkProgrammingLatency.observe({ ip_family: family }, seconds);
      }
      metrics.syncProxyRulesNoLocalEndpointsTotal.set(
        { traffic_policy: "internal", ip_family: family },
        result.noLocalEndpoints.internal,
      );
      metrics.syncProxyRulesNoLocalEndpointsTotal.set(
        { traffic_policy: "external", ip_family: family },
        result.noLocalEndpoints.external,
      );
      metrics.syncProxyRulesLastTimestamp.set({ ip_family: family }, finished / 1000);
      const ipt = metrics.iptables;
      if (ipt !== null) {
        ipt.iptablesRulesLastSync.set({ table: "filter", ip_family: family }, result.counts.filterRules);
        ipt.iptablesRulesLastSync.set({ table: "nat", ip_family: family }, result.counts.natRulesWritten);
        ipt.iptablesRulesTotal.set({ table: "filter", ip_family: family }, result.counts.filterRules);
        ipt.iptablesRulesTotal.set({ table: "nat", ip_family: family }, result.counts.natRulesTotal);
        const seconds = (finished - started) / 1000;
        (fullSync ? ipt.syncFullProxyRulesLatency : ipt.syncPartialProxyRulesLatency).observe(
          { ip_family: family },
          seconds,
        );
      }
      metrics.syncProxyRulesLatency.observe({ ip_family: family }, (finished - started) / 1000);
    }
    if (pending.conntrackCleanupRequired && this.options.reconcileConntrack !== undefined) {
      await this.reconcileConntrack(pending.state);
    }
    const report = this.report(fullSync, true, started, transactions, pending, result);
    log.debug(
      { ipFamily: family, fullSync, elapsed: `${report.durationMs}ms`, transactions },
      "SyncProxyRules complete",
    );
    this.options.onSync?.(report, pending.state, result);
    return report;
  }

  /**
   * Renders the sync and writes it, overlapping the two: while the kernel applies one bounded
   * transaction (iptables-restore runs in its own process), the next one is rendered here. Every
   * few Services the event loop gets a turn, so the restore in flight is never starved of its
   * stdin. Transactions reach the kernel one at a time and in order; the first failure stops the
   * sync. A render error after some chunks were written leaves those Services' chains updated as
   * complete units and the capture rules untouched (the next sync is a full one).
   *
   * The kernel reads (`iptables-save` for the stale-chain listing and the jump rules of a full
   * sync) matter only to the transaction that carries the top level. A single payload waits for
   * them; a chunked sync starts them once its first chunk is on its way, and its last transaction
   * takes the jump-rule sections in front (the capture rules they lead to arrive in it too).
   */
  private async renderAndWrite(
    request: StreamRenderRequest,
    previous: WrittenTopLevel | null,
    kernel: KernelReads,
    existingNatChains: () => Promise<readonly string[] | null>,
    onWritten: () => void,
  ): Promise<{
    result: RenderResult;
    topLevel: WrittenTopLevel;
    existingNatChains: readonly string[] | null;
  }> {
    const { ipt, settings } = this.options;
    const expected = writtenServicePorts(request);
    if (expected <= this.maxServicesPerTransaction) kernel.started();
    const writer = new TransactionWriter(
      this.maxServicesPerTransaction,
      previous,
      natFixedRuleLines(settings),
      expected,
    );
    let inFlight: Promise<unknown> | null = null;
    const write = async (payload: RestorePayload): Promise<void> => {
      if (inFlight !== null) await inFlight;
      const restore = ipt.restore(payload, { noflush: true, counters: true }).then(onWritten);
      restore.catch(() => undefined);
      inFlight = restore;
      kernel.started();
    };
    const render = renderIptablesStream(request);
    try {
      let blocks = 0;
      for (let step = render.next(); ; step = render.next()) {
        if (step.done === true) {
          const existing = await existingNatChains();
          const result = step.value(existing);
          const topLevel = writtenTopLevel(result);
          const payloads = writer.finish(result, topLevel);
          const jumpSections = (await kernel.started().prepared) ?? "";
          if (jumpSections !== "") payloads.push([jumpSections, ...pieces(payloads.pop() ?? "")]);
          for (const payload of payloads) await write(payload);
          if (inFlight !== null) await inFlight;
          return { result, topLevel, existingNatChains: existing };
        }
        const payload = writer.add(step.value);
        if (payload !== null) await write(payload);
        if (inFlight !== null && ++blocks % YIELD_EVERY_BLOCKS === 0) await yieldToEventLoop();
      }
    } finally {
      if (inFlight !== null) await (inFlight as Promise<unknown>).catch(() => undefined);
    }
  }

  /** nat chains in the kernel before this sync, for the stale-chain deletion; null = not this time. */
  private async existingNatChains(
    cleanupDue: boolean,
    kernel: KernelReads,
  ): Promise<readonly string[] | null> {
    if (!cleanupDue) return null;
    if (this.knownNatChains !== null) return [...this.knownNatChains];
    const dump = await kernel.started().tables;
    return dump === null ? null : chainsFromSave(dump, "nat");
  }

  /** Service chains of the kernel for tests and the web view: null = not known without listing. */
  get natChainsInKernel(): ReadonlySet<string> | null {
    return this.knownNatChains;
  }

  /**
   * What a full sync needs in the kernel besides its own chains: the jump rules from the built-in
   * chains (upstream EnsureChain + EnsureRule) and the nfacct counters. Returns the restore
   * sections adding the missing jump rules, which go in front of the transaction that carries the
   * top level: the same rules as upstream's commands, without two more iptables-restore processes.
   */
  private prepareKernel(tables: Promise<string | null>): Promise<string> {
    const prepared = this.jumpSectionsAndCounters(tables);
    // Awaited before the top-level write (or when the sync fails); until then a failure must not go unhandled.
    prepared.catch(() => undefined);
    return prepared;
  }

  private async jumpSectionsAndCounters(tables: Promise<string | null>): Promise<string> {
    const { ipt } = this.options;
    const dump = (await tables) ?? (await ipt.save());
    let sections = "";
    for (const table of jumpRuleTables(JUMP_CHAINS)) {
      const section = jumpRulesSection(JUMP_CHAINS, table, dump);
      if (section === "uncertain") await ensureJumpRulesOneByOne(ipt, JUMP_CHAINS, table);
      else sections += section;
    }
    await this.options.ensureCounters?.();
    return sections;
  }

  /**
   * One `iptables-save` of all tables: the nat chains for the stale-chain listing and, on a full
   * sync, the built-in chains for the jump rules (one process instead of one per table).
   */
  private async saveTables(): Promise<string | null> {
    try {
      return await this.options.ipt.save();
    } catch (error) {
      // Upstream logs and skips stale-chain deletion when iptables-save fails.
      this.options.log.error({ err: error }, "Failed to execute iptables-save: stale chain deletion skipped");
      return null;
    }
  }

  private async reconcileConntrack(state: ProxyState): Promise<void> {
    const { clock, metrics, log, settings } = this.options;
    const started = clock.now();
    try {
      const { deleted } = await this.options.reconcileConntrack!(state);
      metrics?.reconcileConntrackFlowsDeletedEntriesTotal.inc({ ip_family: settings.family }, deleted);
      if (deleted > 0)
        log.info({ ipFamily: settings.family, deleted }, "Deleted stale UDP conntrack entries");
    } catch (error) {
      log.error({ err: error, ipFamily: settings.family }, "Failed to reconcile conntrack entries");
    } finally {
      metrics?.reconcileConntrackFlowsLatency.observe(
        { ip_family: settings.family },
        (clock.now() - started) / 1000,
      );
    }
  }

  private report(
    fullSync: boolean,
    ok: boolean,
    started: number,
    transactions: number,
    pending: ApplyResult,
    result: RenderResult | null,
    error?: Error,
  ): SyncReport {
    return {
      family: this.options.settings.family,
      fullSync,
      ok,
      durationMs: this.options.clock.now() - started,
      transactions,
      updatedServices: pending.updatedServices.size,
      natRulesWritten: result?.counts.natRulesWritten ?? 0,
      deletedChains: result?.nat.deletedChains.length ?? 0,
      ...(error === undefined ? {} : { error }),
    };
  }
}

/** What the kernel holds after a successful sync: the active chains plus any stale ones not deleted. */
function knownAfter(
  before: readonly string[] | ReadonlySet<string> | null,
  result: RenderResult,
): ReadonlySet<string> | null {
  if (before === null) return null;
  const deleted = new Set(result.nat.deletedChains);
  const known = new Set(result.activeNatChains);
  for (const chain of before) if (isServiceChainName(chain) && !deleted.has(chain)) known.add(chain);
  return known;
}

const pieces = (payload: RestorePayload): readonly string[] =>
  typeof payload === "string" ? [payload] : payload;

/**
 * The kernel reads of one sync, started once, when the writer first needs them: the
 * `iptables-save` dump and, on a full sync, the jump-rule sections made from it.
 */
class KernelReads {
  private reads: { tables: Promise<string | null>; prepared: Promise<string> | null } | null = null;

  constructor(
    private readonly start: () => { tables: Promise<string | null>; prepared: Promise<string> | null },
  ) {}

  started(): { tables: Promise<string | null>; prepared: Promise<string> | null } {
    this.reads ??= this.start();
    return this.reads;
  }

  /** Resolves once whatever was started has finished, failed or not. */
  async settled(): Promise<void> {
    await this.reads?.tables;
    await this.reads?.prepared?.catch(() => undefined);
  }
}
