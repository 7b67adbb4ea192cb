import type { FeatureGates } from "../../proxy/serviceport.ts";
import type { NodeModel } from "../../proxy/node.ts";
import type { ProxyState } from "../../proxy/types.ts";

/**
 * Node identity and kernel facts that change the rules, for the proxier of one family.
 * The upstream unit tests' fake proxier is one particular value of this (docs/iptables.md §6.1).
 */
export interface IptablesSettings extends NodeModel {
  /** The configured `--iptables-localhost-nodeports`; the renderer derives the effective value. */
  readonly localhostNodePorts: boolean;
  /** sysctl nf_conntrack_tcp_be_liberal != 0: no INVALID drop rule. */
  readonly conntrackTCPLiberal: boolean;
  /** nfacct counters that were ensured; a missing one drops its `-m nfacct` match. */
  readonly nfacct: {
    readonly ctStateInvalidDroppedPkts: boolean;
    readonly localhostNodePortsAcceptedPkts: boolean;
  };
  /** iptables >= 1.6.2: MASQUERADE gets `--random-fully`. */
  readonly hasRandomFully: boolean;
  /** Endpoints above which large-cluster mode starts (upstream 1000). */
  readonly largeClusterEndpointsThreshold: number;
}

export interface RenderRequest {
  readonly state: ProxyState;
  readonly settings: IptablesSettings;
  readonly fullSync: boolean;
  /** Services (`ns/name`) whose chains are rewritten in a partial sync (ignored when fullSync). */
  readonly changedServices: ReadonlySet<string>;
  /**
   * nat chains present in the kernel before this sync (from `iptables-save -t nat`); stale
   * service chains among them get `:chain` + `-X chain`. null = do not delete stale chains.
   */
  readonly existingNatChains: readonly string[] | null;
  /** Gates that change endpoint selection (PreferSameTrafficDistribution); defaults apply when absent. */
  readonly featureGates?: Partial<FeatureGates>;
}

/**
 * A render without the kernel's chain listing (`renderIptablesStream`): the listing only decides
 * the stale-chain deletions, which come after every Service, so it is given at the end.
 */
export type StreamRenderRequest = Omit<RenderRequest, "existingNatChains">;

/**
 * Completes a streamed render once the listing is known (`RenderRequest.existingNatChains`).
 * `written` is every block the stream yielded, in order, when the caller kept them; null when it
 * sent them on as they came (a sync in bounded transactions), so that the render never holds the
 * whole ruleset's text: the result then has no single payload.
 */
export type FinishRender = (
  existingNatChains: readonly string[] | null,
  written: readonly ServiceChainsBlock[] | null,
) => RenderResult;

/** One Service's nat chains (docs/iptables.md §3.6) as written in a sync: declarations and rules. */
export interface ServiceChainsBlock {
  /** `ns/name`. */
  readonly service: string;
  /** `:chain - [0:0]` declarations, each line ending in a newline. */
  readonly chainText: string;
  /** The chains' `-A` rules, each line ending in a newline. */
  readonly ruleText: string;
  readonly ruleCount: number;
}

export interface RenderResult {
  /**
   * The iptables-restore document exactly as upstream writes it (filter, then nat). Only when the
   * written blocks were given to `FinishRender`; reading it otherwise is a programming error.
   */
  readonly payload: string;
  /** `payload` in pieces (per Service block), to write without joining them first; as `payload`. */
  readonly payloadParts: readonly string[];
  /** The same content, structured, so that a writer can split it into bounded transactions. */
  readonly filter: { readonly chainLines: readonly string[]; readonly ruleLines: readonly string[] };
  readonly nat: {
    /** Fixed top-level chain lines (KUBE-SERVICES, KUBE-NODEPORTS, KUBE-POSTROUTING, KUBE-MARK-MASQ). */
    readonly topChainLines: readonly string[];
    /** The 4 fixed KUBE-POSTROUTING / KUBE-MARK-MASQ rules. */
    readonly fixedRuleLines: readonly string[];
    /** Capture rules (KUBE-SERVICES, KUBE-NODEPORTS) of every service port, in service order. */
    readonly captureRuleLines: readonly string[];
    /**
     * Per-service chains written in this sync (all on a full sync), in service order; null when
     * the writer sent them as they came (`FinishRender`).
     */
    readonly serviceBlocks: readonly ServiceChainsBlock[] | null;
    /** Stale chains being deleted. */
    readonly deletedChains: readonly string[];
    /** The nodeport tail rule(s) of KUBE-SERVICES (docs/iptables.md §3.8). */
    readonly tailRuleLines: readonly string[];
  };
  /** Every service chain in use after this sync (written or not). */
  readonly activeNatChains: ReadonlySet<string>;
  readonly counts: {
    /** Rules written to filter. */
    readonly filterRules: number;
    /** `-A` lines written to nat in this payload. */
    readonly natRulesWritten: number;
    /** Kube-proxy's nat rules in the kernel after this sync (written + skipped, upstream metric). */
    readonly natRulesTotal: number;
  };
  readonly largeClusterMode: boolean;
  /** Service ports with endpoints but no local ones, per traffic policy (upstream gauge). */
  readonly noLocalEndpoints: { readonly internal: number; readonly external: number };
}
