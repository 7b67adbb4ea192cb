import { setImmediate as yieldToEventLoop } from "node:timers/promises";
import type { Logger } from "pino";
import type { IptablesInterface, RestorePayload } from "../../kernel/iptables.ts";
import {
  payloadText,
  chainsFromSave,
  ensureJumpRulesOneByOne,
  jumpRuleTables,
  jumpRulesSection,
} from "../../kernel/iptables.ts";
import type { Clock } from "../../proxy/clock.ts";
import type { ProxyStateStore } from "../../proxy/changetracker.ts";
import type { ProxyHealth } from "../../proxy/health.ts";
import type { IptablesMetrics, ProxyMetrics } from "../../proxy/metrics.ts";
import {
  FamilyProxier,
  type FamilyWriter,
  type SyncAttempt,
  type SyncReport,
  type WriteOutcome,
  type WriteRequest,
  type WriterInspection,
} from "../../proxy/sync.ts";
import type { IPFamily } from "../../ip.ts";
import type { ProxyState } from "../../proxy/types.ts";
import { isServiceChainName, JUMP_CHAINS } from "./chains.ts";
import { natFixedRuleLines, renderIptablesStream, writtenServicePorts } from "./render.ts";
import { TransactionWriter, writtenTopLevel, type WrittenTopLevel } from "./transactions.ts";
import type { IptablesSettings, RenderResult, StreamRenderRequest } from "./types.ts";
import { iptablesDrift } from "./drift.ts";
import { nodeRulesetAfterSync } from "./node.ts";

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

export interface IptablesWriterOptions {
  readonly ipt: IptablesInterface;
  readonly settings: IptablesSettings;
  readonly clock: Clock;
  readonly log: Logger;
  /** iptables mode's own metrics; null in tests that do not look at them. */
  readonly metrics: IptablesMetrics | null;
  /** iptables.syncPeriod: stale-chain cleanup interval in large-cluster mode. */
  readonly syncPeriodMs: number;
  /** Rewritten Services above which one sync is split into bounded restore transactions. */
  readonly maxServicesPerTransaction?: number;
  /** Ensures the nfacct counters on full syncs (kernel side); the rules already know which exist. */
  readonly ensureCounters?: () => Promise<void>;
}

/**
 * The iptables writer of one IP family: the pure renderer fed to `iptables-restore`. It owns only
 * the kernel bookkeeping upstream's iptables proxier keeps (large-cluster mode, last stale-chain
 * cleanup) plus what lets partial syncs skip `iptables-save`: the chains the kernel holds and the
 * top level the last accepted sync left.
 */
export class IptablesWriter implements FamilyWriter<RenderResult> {
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
  /** The last transaction handed to iptables-restore, and the one it refused last. */
  private lastSent: RestorePayload | null = null;
  private refused: string | null = null;

  constructor(private readonly options: IptablesWriterOptions) {
    this.maxServicesPerTransaction = options.maxServicesPerTransaction ?? 250;
  }

  get family(): IPFamily {
    return this.options.settings.family;
  }

  get skipPeriodicFullSync(): boolean {
    return this.largeClusterMode;
  }

  invalidate(): void {
    this.knownNatChains = null;
    this.lastTopLevel = null;
  }

  refusedTransaction(): string | null {
    return this.refused;
  }

  /** The node ruleset a full sync of `state` leaves (node.ts), and the kernel's dump against it. */
  async inspect(state: ProxyState): Promise<WriterInspection> {
    const { settings, ipt } = this.options;
    const [intended, kernel] = await Promise.all([nodeRulesetAfterSync(settings, state), ipt.save()]);
    return { intended, drift: iptablesDrift(intended, kernel, settings.family) };
  }

  async write(request: WriteRequest): Promise<WriteOutcome<RenderResult>> {
    const { clock, settings, metrics } = this.options;
    const { fullSync } = request;
    const started = clock.now();
    this.lastSent = null;
    const cleanupDue = !this.largeClusterMode || started - this.lastCleanup > this.options.syncPeriodMs;

    // One `iptables-save` when the stale-chain listing or a full sync's jump rules need it; the
    // writer starts it (`renderAndWrite`), so that it runs beside the render and the first restore.
    const listing = cleanupDue && this.knownNatChains === null;
    const kernel = new KernelReads(() => {
      const tables = listing || fullSync ? this.saveTables() : Promise.resolve(null);
      return { tables, prepared: fullSync ? this.prepareKernel(tables) : null };
    });
    let result: RenderResult;
    try {
      const previousTopLevel = fullSync ? null : this.lastTopLevel;
      this.lastTopLevel = null;
      const written = await this.renderAndWrite(
        { state: request.state, settings, fullSync, changedServices: request.changedServices },
        previousTopLevel,
        kernel,
        () => this.existingNatChains(cleanupDue, kernel),
        request.onTransaction,
      );
      result = written.result;
      if (written.existingNatChains !== null) this.lastCleanup = started;
      this.lastTopLevel = written.topLevel;
      this.knownNatChains = knownAfter(this.knownNatChains ?? written.existingNatChains, result);
    } catch (error) {
      // Whatever failed, the kernel reads and jump rules are not left running into the next sync.
      await kernel.settled();
      // Transactions go one at a time: the last one sent is the one that failed.
      this.refused = this.lastSent === null ? null : payloadText(this.lastSent);
      this.invalidate();
      metrics?.iptablesRestoreFailuresTotal.inc({ ip_family: this.family });
      if (!fullSync) metrics?.iptablesPartialRestoreFailuresTotal.inc({ ip_family: this.family });
      throw error;
    }
    this.largeClusterMode = result.largeClusterMode;
    return { noLocalEndpoints: result.noLocalEndpoints, details: result };
  }

  observe(attempt: SyncAttempt<RenderResult>): void {
    const metrics = this.options.metrics;
    const result = attempt.outcome?.details;
    if (metrics === null || result === undefined) return;
    const ip_family = this.family;
    metrics.iptablesRulesLastSync.set({ table: "filter", ip_family }, result.counts.filterRules);
    metrics.iptablesRulesLastSync.set({ table: "nat", ip_family }, result.counts.natRulesWritten);
    metrics.iptablesRulesTotal.set({ table: "filter", ip_family }, result.counts.filterRules);
    metrics.iptablesRulesTotal.set({ table: "nat", ip_family }, result.counts.natRulesTotal);
    (attempt.fullSync ? metrics.syncFullProxyRulesLatency : metrics.syncPartialProxyRulesLatency).observe(
      { ip_family },
      attempt.seconds,
    );
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
      this.lastSent = payload;
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
          const result = step.value(existing, writer.allBlocks());
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

export interface IptablesProxierOptions extends Omit<IptablesWriterOptions, "metrics" | "clock" | "log"> {
  readonly store: ProxyStateStore;
  readonly clock: Clock;
  readonly log: Logger;
  readonly health: ProxyHealth;
  readonly metrics: ProxyMetrics | null;
  readonly reconcileConntrack?: (state: ProxyState) => Promise<{ deleted: number }>;
  readonly onSync?: (report: SyncReport<RenderResult>, state: ProxyState) => void;
}

/** An iptables-mode proxier of one family: the shared sync half around an `IptablesWriter`. */
export function iptablesProxier(
  options: IptablesProxierOptions,
): FamilyProxier<RenderResult, IptablesWriter> {
  const { store, clock, log, health, metrics, reconcileConntrack, onSync, ...writer } = options;
  return new FamilyProxier({
    writer: new IptablesWriter({ ...writer, clock, log, metrics: metrics?.iptables ?? null }),
    store,
    clock,
    log,
    health,
    metrics,
    retryIntervalMs: options.syncPeriodMs,
    ...(reconcileConntrack === undefined ? {} : { reconcileConntrack }),
    ...(onSync === undefined ? {} : { onSync }),
  });
}
