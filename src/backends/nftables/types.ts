import type { NodeModel } from "../../proxy/node.ts";
import type { FeatureGates } from "../../proxy/serviceport.ts";
import type { ProxyState } from "../../proxy/types.ts";

/**
 * The node of one family as nftables mode renders it: the shared node model plus what only
 * this mode needs. Upstream's unit-test fake proxier is one value of it (`upstreamTestSettings`).
 */
export interface NftablesSettings extends NodeModel {
  /**
   * The cluster's Service CIDRs of this family (upstream takes them from ServiceCIDR objects):
   * traffic to an address in them that no Service holds is dropped. Empty = no such rule.
   */
  readonly serviceCIDRs: readonly string[];
}

/** A set or map declaration. */
export interface NftContainer {
  readonly kind: "set" | "map";
  readonly name: string;
  /** `ipv4_addr`, `ipv4_addr . inet_proto . inet_service : verdict`… */
  readonly type: string;
  readonly flags?: readonly string[];
  readonly timeoutSeconds?: number;
  readonly comment?: string;
}

export interface NftChain {
  readonly name: string;
  readonly comment?: string;
  /** Rule bodies (what follows `add rule FAMILY TABLE CHAIN`), in order. */
  readonly rules: readonly string[];
}

/** One element of a set or map. */
export interface NftElement {
  readonly container: string;
  /** `172.30.0.41 . tcp . 80` */
  readonly key: string;
  readonly comment?: string;
  /** The verdict of a map element (`goto service-…`, `drop`); absent in sets. */
  readonly value?: string;
}

/** Everything one service port puts in the table. */
export interface ServicePortObjects {
  /** `ns/name`: what a partial sync's change set names. */
  readonly service: string;
  /** The service port's key in the state (`servicePortKey`): unique in a ruleset. */
  readonly port: string;
  readonly chains: readonly NftChain[];
  readonly affinitySets: readonly NftContainer[];
  readonly elements: readonly NftElement[];
}

/** The whole table for one state: pure data, rendered into `nft -f` text by ./transactions.ts. */
export interface NftablesRuleset {
  readonly family: "ip" | "ip6";
  /** Base chains with their rules, in BASE_CHAINS order. */
  readonly baseChains: readonly NftChain[];
  /** The fixed regular chains with their rules. */
  readonly fixedChains: readonly NftChain[];
  /** The fixed sets and maps whose elements every sync owns (nodeport-ips apart). */
  readonly containers: readonly NftContainer[];
  readonly nodePortIPsSet: NftContainer;
  /** Addresses in `nodeport-ips`; null = `--nodeport-addresses` matches all (the set is deleted). */
  readonly nodePortIPs: readonly string[] | null;
  /** Service ports in upstream's (sorted) order. */
  readonly services: readonly ServicePortObjects[];
  readonly noLocalEndpoints: { readonly internal: number; readonly external: number };
}

export interface RenderRequest {
  readonly state: ProxyState;
  readonly settings: NftablesSettings;
  readonly featureGates?: Partial<FeatureGates>;
}
