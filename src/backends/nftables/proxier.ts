/**
 * The nftables writer of one IP family: the pure renderer and transaction planner fed to
 * `nft -f -`. It keeps what upstream's nftables proxier keeps between syncs, as data: what the
 * kernel's table holds after the last accepted sync (so a partial sync writes only what changed
 * and lists nothing), and the stale chains flushed earlier, deleted once they are at least a
 * second old in a transaction of their own (kernels before 6.2 notice only a little later that
 * a chain a deleted map element pointed to is unreferenced).
 */
import type { Logger } from "pino";
import type { ProxyStateStore } from "../../proxy/changetracker.ts";
import type { Clock } from "../../proxy/clock.ts";
import type { ProxyHealth } from "../../proxy/health.ts";
import type { NftablesMetrics, ProxyMetrics } from "../../proxy/metrics.ts";
import type { FeatureGates } from "../../proxy/serviceport.ts";
import {
  FamilyProxier,
  type FamilyWriter,
  type SyncReport,
  type WriteOutcome,
  type WriteRequest,
  type WriterInspection,
} from "../../proxy/sync.ts";
import type { IPFamily } from "../../ip.ts";
import type { ProxyState } from "../../proxy/types.ts";
import type { TableRead } from "./netlink-kernel.ts";
import { readTable, type TableReading } from "./reader.ts";
import { renderNftables } from "./render.ts";
import {
  indexPorts,
  LayeredSet,
  planChunkedFullSync,
  planFullSync,
  planPartialSync,
  staleChainDeletion,
  type ChunkedSyncPlan,
  type KernelTable,
  type NftTransaction,
  type SyncPlan,
} from "./transactions.ts";
import type { NftablesRuleset, NftablesSettings } from "./types.ts";

/**
 * Services per transaction of a chunked full sync of a table of `services` Services: a multiple
 * of the square root of the table's size, never fewer than MIN_SERVICES_PER_TRANSACTION. Every
 * transaction costs the kernel one validation of the whole table (proportional to the table),
 * and inside one transaction each anonymous set walks the transaction's list of pending changes
 * (proportional to the transaction): in Services S and Services per transaction C, about
 * a·S²/C + b·S·C, least at C ∝ √S, so the number of transactions grows as √S instead of as S
 * (docs/nftables-mode.md "Bounded transactions", bench/README.md for the measurements).
 */
export function servicesPerTransaction(services: number): number {
  return Math.max(
    MIN_SERVICES_PER_TRANSACTION,
    Math.round(SERVICES_PER_TRANSACTION_PER_ROOT * Math.sqrt(services)),
  );
}

export const MIN_SERVICES_PER_TRANSACTION = 250;
const SERVICES_PER_TRANSACTION_PER_ROOT = 2.5;

/** How long a flushed chain waits before it is deleted (upstream: one second). */
export const STALE_CHAIN_DELAY_MS = 1_000;

/** The kernel side of one family's table, as the writer needs it (a fake in the tests). */
export interface NftablesKernel {
  /** One atomic transaction (`nft -f -`, or one netlink batch). */
  apply(transaction: NftTransaction): Promise<void>;
  /**
   * Our table as the kernel holds it (a netlink dump): only for full syncs (start-up, after a
   * failure, the hourly resync) and the drift check, never on a partial sync.
   */
  read(): Promise<TableRead>;
  /**
   * Several, in order, stopping at the first refused (a writer that can prepare the next one
   * while the kernel applies the current one); `apply` one by one when absent. `onSend` is told
   * of each transaction as it goes to the kernel, so a refusal can be pinned on it.
   */
  applyAll?(transactions: readonly NftTransaction[], onSend?: (t: NftTransaction) => void): Promise<void>;
}

export interface NftablesSyncDetails {
  readonly fullSync: boolean;
  /** Commands in this sync's main transaction (upstream's `NumOperations`); 0 = nothing sent. */
  readonly operations: number;
  /** Stale chains deleted before this sync, in their own transaction. */
  readonly deletedStaleChains: readonly string[];
  /** Chains flushed and waiting for deletion after this sync. */
  readonly staleChains: readonly string[];
}

export interface NftablesWriterOptions {
  readonly kernel: NftablesKernel;
  readonly settings: NftablesSettings;
  readonly clock: Clock;
  readonly log: Logger;
  readonly featureGates?: Partial<FeatureGates>;
  /**
   * Upstream's `sync_proxy_rules_nftables_{sync,cleanup}_failures_total`: a refused sync
   * transaction, a refused stale-chain deletion. Both start at 0 for this family.
   */
  readonly metrics?: NftablesMetrics | null;
  /** Services per transaction of a chunked full sync (default: `servicesPerTransaction(S)`). */
  readonly servicesPerTransaction?: number;
}

export class NftablesWriter implements FamilyWriter<NftablesSyncDetails> {
  /** What the last accepted sync left in the table; null = unknown (start, failure, someone else). */
  private kernelTable: KernelTable | null = null;
  private readonly staleChains = new Map<string, number>();
  private firstSync = true;
  private refused: string | null = null;
  readonly skipPeriodicFullSync = false;
  /** The options' settings, with the Service CIDRs last handed over (`setServiceCIDRs`). */
  private settings: NftablesSettings;

  constructor(private readonly options: NftablesWriterOptions) {
    this.settings = options.settings;
    options.metrics?.nftablesSyncFailuresTotal.inc({ ip_family: this.family }, 0);
    options.metrics?.nftablesCleanupFailuresTotal.inc({ ip_family: this.family }, 0);
  }

  /**
   * Upstream `OnServiceCIDRsChanged` for this family's CIDRs; true when they differ from the
   * current ones (`cluster-ips-check` is a fixed chain: the caller forces a full sync).
   */
  setServiceCIDRs(cidrs: readonly string[]): boolean {
    if (cidrs.join(",") === this.settings.serviceCIDRs.join(",")) return false;
    this.settings = { ...this.settings, serviceCIDRs: cidrs };
    return true;
  }

  get family(): IPFamily {
    return this.settings.family;
  }

  /** Stale chains and when they were flushed (for tests and the web view). */
  get pendingStaleChains(): ReadonlyMap<string, number> {
    return this.staleChains;
  }

  invalidate(): void {
    this.kernelTable = null;
    // A full sync lists the kernel and finds them again.
    this.staleChains.clear();
  }

  async write(request: WriteRequest): Promise<WriteOutcome<NftablesSyncDetails>> {
    const { kernel, clock } = this.options;
    const now = clock.now();
    const deletedStaleChains = await this.deleteStaleChains(now);
    const ruleset = this.render(request.state);
    const fullSync = request.fullSync || this.kernelTable?.ports === undefined;
    let plan: SyncPlan | ChunkedSyncPlan;
    this.refused = null;
    // The transaction on its way to the kernel: the one a refusal is pinned on.
    const sending: { current: NftTransaction | null } = { current: null };
    try {
      if (fullSync) {
        const reading = await this.readKernel(ruleset);
        const options = { resetBaseChains: this.firstSync };
        const existing = reading?.existing ?? null;
        const known = reading !== null && !reading.absent;
        plan =
          planChunkedFullSync(
            ruleset,
            existing,
            known ? reading.kernel : this.kernelTable,
            reading?.absent ?? false,
            {
              ...options,
              servicesPerTransaction:
                this.options.servicesPerTransaction ?? servicesPerTransaction(ruleset.services.length),
              readFromKernel: known,
              unchangedChains: this.unchangedChains(reading),
            },
          ) ?? planFullSync(ruleset, existing, options);
      } else {
        plan = planPartialSync(
          ruleset,
          this.kernelTable!,
          request.changedServices,
          new Set(this.staleChains.keys()),
        );
      }
      if (plan.operations > 0) {
        const transactions: readonly NftTransaction[] = isChunked(plan) ? plan.transactions : [plan];
        const onSend = (transaction: NftTransaction): void => {
          sending.current = transaction;
        };
        if (kernel.applyAll !== undefined) await kernel.applyAll(transactions, onSend);
        else
          for (const transaction of transactions) {
            onSend(transaction);
            await kernel.apply(transaction);
          }
        request.onTransaction();
      }
    } catch (error) {
      this.refused = sending.current?.payload ?? null;
      this.invalidate();
      this.options.metrics?.nftablesSyncFailuresTotal.inc({ ip_family: this.family });
      throw error;
    }
    this.firstSync = false;
    this.kernelTable = fullSync ? indexPorts(plan.after, ruleset) : plan.after;
    for (const chain of plan.newlyStaleChains)
      if (!this.staleChains.has(chain)) this.staleChains.set(chain, now);
    for (const chain of [...this.staleChains.keys()])
      if (plan.activeChains.has(chain)) this.staleChains.delete(chain);
    return {
      noLocalEndpoints: ruleset.noLocalEndpoints,
      details: {
        fullSync,
        operations: plan.operations,
        deletedStaleChains,
        staleChains: [...this.staleChains.keys()].sort(),
      },
    };
  }

  /** The transaction the kernel refused in the last failed write, as `nft -f` text. */
  refusedTransaction(): string | null {
    return this.refused;
  }

  /** The table a full sync of `state` writes, and how the kernel's table differs from it. */
  async inspect(state: ProxyState): Promise<WriterInspection> {
    const ruleset = this.render(state);
    const read = await this.options.kernel.read();
    return {
      intended: planFullSync(ruleset, null, { resetBaseChains: false }).payload,
      drift: this.compare(ruleset, read).drift,
    };
  }

  private render(state: ProxyState): NftablesRuleset {
    return renderNftables({
      state,
      settings: this.settings,
      ...(this.options.featureGates === undefined ? {} : { featureGates: this.options.featureGates }),
    });
  }

  private compare(ruleset: NftablesRuleset, read: TableRead): TableReading {
    return readTable(ruleset, read.dump, {
      ifIndex: read.ifIndex,
      pendingStaleChains: new Set(this.staleChains.keys()),
    });
  }

  /**
   * The chains a full sync read from the kernel leaves as they are because they hold exactly
   * their rules: the endpoint chains on the first sync of this process (upstream's start-up
   * sync, `TestSyncProxyRulesStartup`), every per-Service chain on later ones (the hourly resync,
   * after a failure). Rewriting an unchanged Service chain re-creates its anonymous
   * `numgen … vmap`, and each new anonymous set costs the kernel walks over every set of the
   * table: at tens of thousands of Services most of a full sync (docs/nftables-mode.md).
   */
  private unchangedChains(reading: TableReading | null): ReadonlySet<string> {
    if (reading === null) return new Set();
    if (this.firstSync || reading.unchangedServiceChains.size === 0) return reading.unchangedChains;
    return new Set([...reading.unchangedChains, ...reading.unchangedServiceChains]);
  }

  private async readKernel(ruleset: NftablesRuleset): Promise<TableReading | null> {
    try {
      return this.compare(ruleset, await this.options.kernel.read());
    } catch (error) {
      // Upstream logs and goes on: what is lost is the stale-object clean-up and the diff.
      this.options.log.error(
        { err: error },
        "Failed to read the nftables table: stale chains will not be deleted",
      );
      return null;
    }
  }

  private async deleteStaleChains(now: number): Promise<string[]> {
    const due = [...this.staleChains]
      .filter(([, flushed]) => flushed <= now - STALE_CHAIN_DELAY_MS)
      .map(([chain]) => chain)
      .sort();
    if (due.length === 0) return [];
    for (const chain of due) this.staleChains.delete(chain);
    this.options.log.info({ numChains: due.length }, "Deleting stale nftables chains");
    try {
      await this.options.kernel.apply(
        staleChainDeletion(this.settings.family === "IPv4" ? "ip" : "ip6", due),
      );
    } catch (error) {
      // Still in the kernel: the next full sync lists them and flushes them again.
      this.options.log.error({ err: error }, "Unable to delete stale chains; will retry later");
      this.options.metrics?.nftablesCleanupFailuresTotal.inc({ ip_family: this.family });
      this.kernelTable = null;
      return [];
    }
    if (this.kernelTable !== null)
      this.kernelTable = { ...this.kernelTable, chains: new LayeredSet(this.kernelTable.chains, [], due) };
    return due;
  }
}

function isChunked(plan: SyncPlan | ChunkedSyncPlan): plan is ChunkedSyncPlan {
  return "transactions" in plan;
}

export interface NftablesProxierOptions extends Omit<NftablesWriterOptions, "metrics"> {
  readonly store: ProxyStateStore;
  readonly health: ProxyHealth;
  readonly metrics: ProxyMetrics | null;
  readonly syncPeriodMs: number;
  readonly reconcileConntrack?: (state: ProxyState) => Promise<{ deleted: number }>;
  readonly onSync?: (report: SyncReport<NftablesSyncDetails>, state: ProxyState) => void;
}

/** An nftables-mode proxier of one family: the shared sync half around an `NftablesWriter`. */
export function nftablesProxier(
  options: NftablesProxierOptions,
): FamilyProxier<NftablesSyncDetails, NftablesWriter> {
  const { store, health, metrics, syncPeriodMs, reconcileConntrack, onSync, ...writer } = options;
  return new FamilyProxier({
    writer: new NftablesWriter({ ...writer, metrics: metrics?.nftables ?? null }),
    store,
    clock: writer.clock,
    log: writer.log,
    health,
    metrics,
    retryIntervalMs: syncPeriodMs,
    ...(reconcileConntrack === undefined ? {} : { reconcileConntrack }),
    ...(onSync === undefined ? {} : { onSync }),
  });
}
