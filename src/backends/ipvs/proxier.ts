/**
 * The ipvs writer of one IP family: render, diff against the kernel, apply. A full sync reads the
 * kernel (IPVS table, ipsets, kube-ipvs0 addresses, node addresses); a partial sync diffs against
 * what the last accepted sync left there and reads IPVS only when a removed TCP real server's
 * connection counts decide between deleting it and draining it. Real servers that drain wait in
 * the graceful-termination list, checked about once a minute (upstream's
 * GracefulTerminationManager), at syncs and from the mode's monitor (`drain`). The order of the steps is upstream's: ipsets, virtual and real
 * servers, addresses, iptables, then the stale addresses and virtual servers.
 */
import type { Logger } from "pino";
import type { IptablesInterface } from "../../kernel/iptables.ts";
import {
  ensureJumpRulesOneByOne,
  jumpRulesSection,
  jumpRuleTables,
  RestoreError,
} from "../../kernel/iptables.ts";
import type { IpsetSaved } from "../../kernel/ipset.ts";
import type { IpvsServiceEntry } from "../../kernel/ipvs.ts";
import type { ProxyStateStore } from "../../proxy/changetracker.ts";
import type { Clock } from "../../proxy/clock.ts";
import type { ProxyHealth } from "../../proxy/health.ts";
import type { ProxyMetrics } from "../../proxy/metrics.ts";
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
import { ipvsDrift, intendedOf } from "./drift.ts";
import { formatDesired, servicePortLines } from "./format.ts";
import { DUMMY_DEVICE, IPVS_JUMP_CHAINS } from "./names.ts";
import {
  gracefulKey,
  kernelAfter,
  planGracefulDeletions,
  planIpvs,
  type GracefulItem,
  type IpvsPlan,
  type KernelView,
} from "./plan.ts";
import { renderIpvs } from "./render.ts";
import { nodeAddressesFromInterfaces } from "./settings.ts";
import type { IpvsSettings } from "./types.ts";

/** How often draining real servers are checked (upstream `rsCheckDeleteInterval`). */
export const GRACEFUL_CHECK_INTERVAL_MS = 60_000;

/** The kernel side of ipvs mode for one family (real tools in production, fakes in the tests). */
export interface IpvsKernel {
  listIpvs(): Promise<IpvsServiceEntry[]>;
  restoreIpvs(lines: readonly string[]): Promise<void>;
  saveIpsets(): Promise<IpsetSaved[]>;
  restoreIpsets(lines: readonly string[]): Promise<void>;
  ensureDummyDevice(): Promise<void>;
  addressesByInterface(): Promise<Map<string, string[]>>;
  addAddress(ip: string): Promise<void>;
  deleteAddress(ip: string): Promise<void>;
  readonly ipt: IptablesInterface;
}

export interface IpvsSyncDetails {
  readonly fullSync: boolean;
  readonly ipvsCommands: number;
  readonly ipsetCommands: number;
  readonly addressesAdded: readonly string[];
  readonly addressesDeleted: readonly string[];
  readonly deletedVirtualServers: number;
  /** Real servers at weight 0 waiting for their connections to end. */
  readonly draining: readonly string[];
  /** Draining real servers deleted in this sync. */
  readonly drained: readonly string[];
  readonly iptablesRestored: boolean;
}

export interface IpvsWriterOptions {
  readonly kernel: IpvsKernel;
  readonly settings: IpvsSettings;
  readonly excludeCIDRs: readonly string[];
  readonly clock: Clock;
  readonly log: Logger;
  readonly metrics?: ProxyMetrics | null;
  readonly featureGates?: Partial<FeatureGates>;
}

const asText = (l: readonly string[]): string => l.map((x) => `${x}\n`).join("");

const isFamily = (family: IPFamily) => (ip: string) =>
  family === "IPv4" ? !ip.includes(":") : ip.includes(":");

export class IpvsWriter implements FamilyWriter<IpvsSyncDetails> {
  private view: KernelView | null = null;
  private nodeAddresses: readonly string[] = [];
  private lastIptables: string | null = null;
  private refused: string | null = null;
  private onTheWay: string | null = null;
  private firstSync = true;
  private readonly graceful = new Map<string, GracefulItem>();
  private lastGracefulCheck = Number.NEGATIVE_INFINITY;
  private lastServicePorts: readonly string[] = [];
  /** Syncs and the periodic drain check take turns: both edit IPVS and the graceful list. */
  private turn: Promise<unknown> = Promise.resolve();
  readonly skipPeriodicFullSync = false;

  constructor(private readonly options: IpvsWriterOptions) {}

  get family(): IPFamily {
    return this.options.settings.family;
  }

  /** Which Service port each virtual server of the last accepted sync serves (the web view's names). */
  get servicePorts(): readonly string[] {
    return this.lastServicePorts;
  }

  /** The real servers waiting to drain (tests, the web view). */
  get drainingRealServers(): readonly string[] {
    return [...this.graceful.keys()].sort();
  }

  invalidate(): void {
    this.view = null;
    this.lastIptables = null;
  }

  private async readKernel(): Promise<KernelView> {
    const { kernel } = this.options;
    await kernel.ensureDummyDevice();
    const [byInterface, ipvs, sets] = await Promise.all([
      kernel.addressesByInterface(),
      kernel.listIpvs(),
      kernel.saveIpsets(),
    ]);
    this.nodeAddresses = nodeAddressesFromInterfaces(byInterface, this.family);
    return {
      ipvs,
      ipsets: new Map(sets.map((s) => [s.name, s.entries])),
      boundAddresses: (byInterface.get(DUMMY_DEVICE) ?? []).filter(isFamily(this.family)),
    };
  }

  /**
   * The drift check (full syncs, /debug/kube-proxy-ts/diff): what a full sync of `state` writes
   * against a fresh read of the kernel (IPVS, ipsets, kube-ipvs0, iptables-save), the draining
   * real servers left out. Waits for a running sync or drain check.
   */
  inspect(state: ProxyState): Promise<WriterInspection> {
    return this.exclusive(async () => {
      const { kernel, settings } = this.options;
      const [byInterface, ipvs, sets, iptables] = await Promise.all([
        kernel.addressesByInterface(),
        kernel.listIpvs(),
        kernel.saveIpsets(),
        kernel.ipt.save(),
      ]);
      const desired = renderIpvs({
        state,
        settings,
        nodeAddresses: nodeAddressesFromInterfaces(byInterface, this.family),
        ...(this.options.featureGates === undefined ? {} : { featureGates: this.options.featureGates }),
      });
      const drift = ipvsDrift(
        intendedOf(desired),
        {
          virtualServers: ipvs,
          ipsets: sets,
          iptables,
          boundAddresses: (byInterface.get(DUMMY_DEVICE) ?? []).filter(isFamily(this.family)),
        },
        {
          family: this.family,
          excludeCIDRs: this.options.excludeCIDRs,
          draining: new Set(this.graceful.keys()),
        },
      );
      return { intended: formatDesired(desired), drift };
    });
  }

  private exclusive<T>(task: () => Promise<T>): Promise<T> {
    const run = this.turn.then(task, task);
    this.turn = run.catch(() => undefined);
    return run;
  }

  /**
   * Upstream's GracefulTerminationManager loop, apart from syncs (which may be an hour apart when
   * nothing changes): deletes the draining real servers whose connections ended, at most once
   * a minute. The mode's monitor calls it every sync period.
   */
  drain(): Promise<string[]> {
    return this.exclusive(() => this.checkDraining(this.options.clock.now()));
  }

  write(request: WriteRequest): Promise<WriteOutcome<IpvsSyncDetails>> {
    return this.exclusive(() => this.writeNow(request));
  }

  /**
   * What the kernel refused in the last failed write: the ipset, ipvsadm or iptables-restore
   * input on its way when the write failed, headed by the tool it went to.
   */
  refusedTransaction(): string | null {
    return this.refused;
  }

  /** Names what is about to go to the kernel, for {@link refusedTransaction}. */
  private sending(tool: string, input: string): void {
    this.onTheWay = `# ${tool}\n${input}`;
  }

  private async writeNow(request: WriteRequest): Promise<WriteOutcome<IpvsSyncDetails>> {
    const { kernel, settings, clock, log } = this.options;
    const fullSync = request.fullSync || this.view === null;
    let details: IpvsSyncDetails;
    let noLocalEndpoints;
    this.refused = null;
    this.onTheWay = null;
    try {
      let view = fullSync ? await this.readKernel() : this.view!;
      const desired = renderIpvs({
        state: request.state,
        settings,
        nodeAddresses: this.nodeAddresses,
        ...(this.options.featureGates === undefined ? {} : { featureGates: this.options.featureGates }),
      });
      noLocalEndpoints = desired.noLocalEndpoints;
      const planOptions = {
        family: this.family,
        initialSync: this.firstSync,
        excludeCIDRs: this.options.excludeCIDRs,
        graceful: new Set(this.graceful.keys()),
      };
      let plan: IpvsPlan = planIpvs(desired, view, planOptions);
      if (plan.needsConnectionCounts) {
        view = { ...view, ipvs: await kernel.listIpvs() };
        plan = planIpvs(desired, view, planOptions);
      }

      const ipsetChanges = plan.ipsetLines.filter((l) => !l.startsWith("create "));
      if (fullSync || ipsetChanges.length > 0) {
        this.sending("ipset restore", asText(plan.ipsetLines));
        await kernel.restoreIpsets(plan.ipsetLines);
      }
      if (plan.ipvsLines.length > 0) {
        this.sending("ipvsadm --restore", asText(plan.ipvsLines));
        await kernel.restoreIpvs(plan.ipvsLines);
        request.onTransaction();
      }
      for (const key of plan.leftGraceful) this.graceful.delete(key);
      for (const item of plan.newlyGraceful) this.graceful.set(gracefulKey(item), item);
      for (const ip of plan.addAddresses) await kernel.addAddress(ip);

      let iptablesRestored = false;
      if (fullSync || desired.iptables !== this.lastIptables) {
        await this.restoreIptables(desired.iptables, fullSync);
        this.lastIptables = desired.iptables;
        iptablesRestored = true;
        request.onTransaction();
      }
      for (const ip of plan.deleteAddresses) await kernel.deleteAddress(ip);
      if (plan.deleteServiceLines.length > 0) {
        this.sending("ipvsadm --restore", asText(plan.deleteServiceLines));
        await kernel.restoreIpvs(plan.deleteServiceLines);
        request.onTransaction();
      }
      const drained = await this.checkDraining(clock.now());
      this.firstSync = false;
      this.view = kernelAfter(desired, [...this.graceful.values()]);
      this.lastServicePorts = servicePortLines(desired);
      details = {
        fullSync,
        ipvsCommands: plan.ipvsLines.length + plan.deleteServiceLines.length,
        ipsetCommands: fullSync ? plan.ipsetLines.length : ipsetChanges.length,
        addressesAdded: plan.addAddresses,
        addressesDeleted: plan.deleteAddresses,
        deletedVirtualServers: plan.deleteServiceLines.length,
        draining: this.drainingRealServers,
        drained,
        iptablesRestored,
      };
    } catch (error) {
      this.refused = this.onTheWay;
      this.invalidate();
      throw error;
    }
    log.debug({ ...details }, "ipvs sync done");
    return { noLocalEndpoints, details };
  }

  /** Jump rules from the built-in chains (full syncs) and our chains, in one restore. */
  private async restoreIptables(payload: string, fullSync: boolean): Promise<void> {
    const { ipt } = this.options.kernel;
    let prefix = "";
    if (fullSync) {
      const dump = await ipt.save();
      for (const table of jumpRuleTables(IPVS_JUMP_CHAINS)) {
        const section = jumpRulesSection(IPVS_JUMP_CHAINS, table, dump);
        if (section === "uncertain") await ensureJumpRulesOneByOne(ipt, IPVS_JUMP_CHAINS, table);
        else prefix += section;
      }
    }
    try {
      this.sending(
        `${this.family === "IPv6" ? "ip6tables" : "iptables"}-restore --noflush --counters`,
        prefix + payload,
      );
      await ipt.restore(prefix + payload, { noflush: true, counters: true });
    } catch (error) {
      if (error instanceof RestoreError)
        this.options.metrics?.ipvs?.iptablesRestoreFailuresTotal.inc({ ip_family: this.family });
      throw error;
    }
  }

  /** Deletes the draining real servers whose connections ended (at most once a minute). */
  private async checkDraining(now: number): Promise<string[]> {
    if (this.graceful.size === 0 || now - this.lastGracefulCheck < GRACEFUL_CHECK_INTERVAL_MS) return [];
    this.lastGracefulCheck = now;
    const { lines, done } = planGracefulDeletions(
      [...this.graceful.values()],
      await this.options.kernel.listIpvs(),
    );
    if (lines.length > 0) await this.options.kernel.restoreIpvs(lines);
    for (const key of done) this.graceful.delete(key);
    return done.sort();
  }
}

export interface IpvsProxierOptions extends IpvsWriterOptions {
  readonly store: ProxyStateStore;
  readonly health: ProxyHealth;
  readonly metrics: ProxyMetrics | null;
  readonly syncPeriodMs: number;
  readonly reconcileConntrack?: (state: ProxyState) => Promise<{ deleted: number }>;
  readonly onSync?: (report: SyncReport<IpvsSyncDetails>, state: ProxyState) => void;
}

/** An ipvs-mode proxier of one family: the shared sync half around an `IpvsWriter`. */
export function ipvsProxier(options: IpvsProxierOptions): FamilyProxier<IpvsSyncDetails, IpvsWriter> {
  const { store, health, syncPeriodMs, reconcileConntrack, onSync, ...writer } = options;
  return new FamilyProxier({
    writer: new IpvsWriter(writer),
    store,
    clock: writer.clock,
    log: writer.log,
    health,
    metrics: options.metrics,
    retryIntervalMs: syncPeriodMs,
    ...(reconcileConntrack === undefined ? {} : { reconcileConntrack }),
    ...(onSync === undefined ? {} : { onSync }),
  });
}
