/**
 * The contract every proxy mode implements (see docs/architecture.md). Upstream splits the same
 * duties between `pkg/proxy.Provider` (one proxier per family, behind the metaproxier), the
 * platform set-up of `cmd/kube-proxy/app` (checks, sysctls, cleanup of the other modes) and each
 * mode's `CleanupLeftovers`. Here a mode is one folder under src/backends exporting one
 * `ProxyBackend`; the daemon, `render`, `trace`, `explain`, the web view and `--cleanup` reach it
 * only through this interface and the registry in ./index.ts.
 */
import type { Logger } from "pino";
import type { KubeProxyConfiguration, ProxyMode } from "../config/types.ts";
import type { Runner } from "../kernel/exec.ts";
import type { JumpRule } from "../kernel/iptables.ts";
import type { InspectionSource } from "../inspect/types.ts";
import type { Ruleset } from "../netfilter/model.ts";
import type { DriftReport } from "../inspect/drift.ts";
import type { ProxyStateStore } from "../proxy/changetracker.ts";
import type { Clock } from "../proxy/clock.ts";
import type { ProxyHealth } from "../proxy/health.ts";
import type { ProxyMetrics, ProxyMetricsOptions } from "../proxy/metrics.ts";
import type { NodeInfo } from "../proxy/node.ts";
import type { FamilyProxier, SyncReport } from "../proxy/sync.ts";
import type { IPFamily } from "../ip.ts";
import type { ProxyState } from "../proxy/types.ts";
import type { Origin, TracePacket } from "../netfilter/tracer.ts";

export type { ProxyMode };

/** What a mode gets to touch the node with. */
export interface PlatformContext {
  readonly config: Readonly<KubeProxyConfiguration>;
  readonly runner: Runner;
  readonly log: Logger;
}

/** Outcome of removing a mode's objects; cleanup carries on past each failure, as upstream's. */
export interface CleanupReport {
  readonly mode: ProxyMode;
  /** Failures that matter (a missing object is not one). */
  readonly errors: readonly unknown[];
}

/** What the daemon hands a mode once it knows its Node. */
export interface ProxierDeps {
  readonly node: NodeInfo;
  /** Addresses on this namespace's interfaces (CIDR notation). */
  readonly localAddresses: readonly string[];
  readonly stores: ReadonlyMap<IPFamily, ProxyStateStore>;
  readonly clock: Clock;
  readonly log: Logger;
  readonly health: ProxyHealth;
  readonly metrics: ProxyMetrics;
  /** The sync period: retries, stale-object clean-up in large clusters, the kernel monitor. */
  readonly syncPeriodMs: number;
  readonly reconcileConntrack: (family: IPFamily, state: ProxyState) => Promise<{ deleted: number }>;
  readonly onSync: (report: SyncReport<unknown>, state: ProxyState) => void;
  /** The cluster's Service CIDRs (both families) as known when the proxiers are created. */
  readonly serviceCIDRs: readonly string[];
}

/** What every mode's proxier of `family` takes from the daemon, the same for each mode. */
export function sharedSyncOptions(deps: ProxierDeps, family: IPFamily, store: ProxyStateStore) {
  return {
    store,
    clock: deps.clock,
    log: deps.log.child({ ipFamily: family }),
    health: deps.health,
    metrics: deps.metrics,
    syncPeriodMs: deps.syncPeriodMs,
    reconcileConntrack: (state: ProxyState) => deps.reconcileConntrack(family, state),
    onSync: deps.onSync,
  };
}

export type SharedSyncOptions = ReturnType<typeof sharedSyncOptions>;

/**
 * One proxier per family the mode runs and the daemon keeps a store for, in `families`' order
 * (upstream's metaproxier pair); `create` builds the mode's proxier from the shared options.
 */
export async function proxiersPerFamily(
  families: Iterable<IPFamily>,
  deps: ProxierDeps,
  create: (
    family: IPFamily,
    shared: SharedSyncOptions,
  ) => Promise<FamilyProxier<unknown>> | FamilyProxier<unknown>,
): Promise<Map<IPFamily, FamilyProxier<unknown>>> {
  const created = new Map<IPFamily, FamilyProxier<unknown>>();
  for (const family of families) {
    const store = deps.stores.get(family);
    if (store === undefined) continue;
    created.set(family, await create(family, sharedSyncOptions(deps, family, store)));
  }
  return created;
}

/**
 * The nat jump rules both iptables-based modes prepend to the built-in chains (upstream's
 * `iptablesJumpChains` in pkg/proxy/iptables and pkg/proxy/ipvs share these three rows).
 */
export const NAT_JUMP_CHAINS: readonly JumpRule[] = [
  {
    table: "nat",
    srcChain: "OUTPUT",
    extraArgs: [],
    comment: "kubernetes service portals",
    dstChain: "KUBE-SERVICES",
  },
  {
    table: "nat",
    srcChain: "PREROUTING",
    extraArgs: [],
    comment: "kubernetes service portals",
    dstChain: "KUBE-SERVICES",
  },
  {
    table: "nat",
    srcChain: "POSTROUTING",
    extraArgs: [],
    comment: "kubernetes postrouting rules",
    dstChain: "KUBE-POSTROUTING",
  },
];

export interface KernelMonitorOptions {
  readonly intervalMs: number;
  readonly signal: AbortSignal;
  /** Our objects vanished (someone flushed them): the family needs a full resync. */
  readonly onLost: (family: IPFamily) => void;
}

/** A mode set up on this node by the daemon (upstream: platform set-up + `NewProxier`). */
export interface ModeRuntime {
  /** The IP families this node can proxy in this mode (upstream's dual-stack detection). */
  readonly families: readonly IPFamily[];
  /** This mode's metric sources (metric names are upstream's, in src/proxy/metrics.ts). */
  readonly metricsOptions: ProxyMetricsOptions;
  /** Node-level kernel set-up once the Node is known, then one proxier per family. */
  proxiers(deps: ProxierDeps): Promise<ReadonlyMap<IPFamily, FamilyProxier<unknown>>>;
  /**
   * Upstream `OnServiceCIDRsChanged`, once the proxiers exist: the families whose rules depend
   * on the new CIDRs (they need a full sync). Absent = the mode does not use them.
   */
  serviceCIDRsChanged?(cidrs: readonly string[]): readonly IPFamily[];
  /** Watches for someone removing this mode's objects; resolves when the signal aborts. */
  monitor(options: KernelMonitorOptions): Promise<void>;
  /** The live kernel as the web view reads it. */
  readonly inspection: InspectionSource;
}

/** What `render` knows about the node and kernel it renders for. */
export interface RenderTarget {
  readonly config: Readonly<KubeProxyConfiguration>;
  readonly node: NodeInfo;
  readonly family: IPFamily;
  readonly state: ProxyState;
  /** The node's interface addresses (CIDR or bare IP). */
  readonly localAddresses: readonly string[];
  /** Kernel features a mode may depend on; assumed present unless the user says otherwise. */
  readonly kernel: { readonly nfacct: boolean; readonly randomFully: boolean };
  /** Render for upstream's unit-test fake proxier (reproduces upstream's golden files). */
  readonly upstreamTestSettings: boolean;
  /** The cluster's Service CIDRs (ServiceCIDR objects, else --service-cluster-ip-range). */
  readonly serviceCIDRs: readonly string[];
}

export interface RenderedPayload {
  /** What the payload is fed to, e.g. `iptables-restore` or `nft -f`, for headers. */
  readonly consumer: string;
  readonly text: string;
}

/** A dump handed to a see-inside command instead of the live kernel, and where it came from. */
export interface InspectDump {
  readonly text: string;
  readonly origin: string;
}

export interface InspectTraceRequest {
  readonly packet: TracePacket;
  readonly origin: Origin;
  /** Absent: the live kernel. */
  readonly dump?: InspectDump;
  /** The node's addresses; default: the live namespace's, or loopback only with a dump. */
  readonly localAddresses?: readonly string[];
  /** Session affinity: what the kernel remembers (default), or a client it has never seen. */
  readonly affinity?: "kernel" | "new-client";
  readonly format: "text" | "json";
  readonly runner: Runner;
}

export interface InspectExplainRequest {
  readonly service: { readonly namespace: string; readonly name: string; readonly port?: string };
  /** `--ruleset`: this dump instead of the live kernel. */
  readonly dumps?: readonly InspectDump[];
  /**
   * `-f`/`--manifests`/`--api`: the objects rendered as `render` prints them. A mode whose kernel
   * objects carry Service names explains these instead of the kernel (when there is no dump);
   * ipvs mode, whose IPVS table holds no names, takes from them which virtual servers are the
   * Service's and still reads the kernel (or the dump).
   */
  readonly rendered?: readonly InspectDump[];
  /** Live kernel: count conntrack entries per endpoint. */
  readonly conntrack: boolean;
  readonly format: "text" | "json";
  readonly runner: Runner;
}

/** A mode's see-inside tools: its reader, tracer and explainer behind `trace` and `explain`. */
export interface ModeInspector {
  trace(request: InspectTraceRequest): Promise<string>;
  explain(request: InspectExplainRequest): Promise<string>;
}

export interface ProxyBackend {
  readonly mode: ProxyMode;
  /** Platform checks and set-up for the daemon; throws a typed error when the node cannot run it. */
  open(ctx: PlatformContext): Promise<ModeRuntime>;
  /** Remove every object this mode creates, in every family; foreign objects stay. */
  cleanup(ctx: PlatformContext): Promise<CleanupReport>;
  /** Pure: the payload of a full sync for this state (the `render` command). */
  render(target: RenderTarget): RenderedPayload;
  /** `trace` and `explain` for this mode, where the mode provides them itself. */
  readonly inspector?: ModeInspector;
  /**
   * The node's whole ruleset after a full sync on a fresh node, as the mode's dump tool prints it
   * (`render --node-ruleset`; what `trace` and `explain` walk when they render for themselves).
   * No I/O: for iptables, the daemon's writer against an in-memory iptables.
   */
  renderNode?(target: RenderTarget): Promise<RenderedPayload>;
  /** How the see-inside tools read a dump of this mode; absent while the mode has none. */
  readonly rulesets?: RulesetReader;
  /**
   * Pure: the kernel's dump of one family against the node ruleset `renderNode` gives (both in
   * the mode's dump format), per Service; foreign objects reported apart (`kube-proxy-ts diff`).
   */
  drift?(intended: string, kernel: string, family: IPFamily): DriftReport;
  /**
   * The live kernel of this namespace against a full sync of `target`, for modes that read the
   * kernel themselves rather than through a text dump (nftables: a netlink read of the table;
   * ipvs: ipvsadm, ipset, iptables-save and ip through `runner`).
   */
  liveDrift?(target: RenderTarget, runner: Runner): Promise<LiveDrift>;
}

export interface LiveDrift {
  /** What a full sync of the target writes, in the mode's dump format. */
  readonly intended: string;
  readonly drift: DriftReport;
  /** How the kernel was read, for headers (`netlink dump of table ip kube-proxy`). */
  readonly source: string;
}

/** A reason a ruleset cannot be trusted to show what a node does. */
export interface RulesetProblem {
  /** Stable, for JSON: `no-proxy-chains`, `missing-entry-jump`, `missing-base-chain`. */
  readonly kind: string;
  readonly message: string;
}

/** A mode's reader of its own dumps, for `trace` and `explain`. */
export interface RulesetReader {
  /** The dump tool, for headers (`iptables-save`, `ip6tables-save`). */
  dumpTool(family: IPFamily): string;
  /** Parses a dump of one family; an error names `origin` and the line. */
  parse(text: string, origin: string, family?: IPFamily): Ruleset;
  /**
   * Parses only what one Service's explanation needs (its rules and chains, the node-level
   * chains): `explain` at 10,000 Services. Line numbers stay those of the whole dump's lines kept.
   */
  parseForService?(
    text: string,
    origin: string,
    service: { readonly namespace: string; readonly name: string },
    family?: IPFamily,
  ): Ruleset;
  /**
   * What keeps packets from reaching the proxy's rules in this ruleset: entry chains nothing
   * jumps to, hooks without their base chain. Empty when the proxy's rules are reachable.
   */
  problems(ruleset: Ruleset): RulesetProblem[];
  /** The pod CIDRs the proxy's local-traffic detector matches, as the rules say (for `--from`). */
  podCidrs(ruleset: Ruleset): string[];
}
