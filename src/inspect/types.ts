/**
 * What the see-inside tools (`trace`, `explain`, the web view) read from a node, whatever the
 * mode: each mode's reader produces a `KernelReading`, each mode's explainer turns it into the
 * neutral `ServiceView`s of ./model.ts.
 */
import type { ProxyMode } from "../config/types.ts";
import type { ServiceView } from "./model.ts";

export interface KernelReading {
  readonly mode: ProxyMode;
  /** The mode's own dump per IP family (iptables: `iptables-save -c` text; nftables: `nft -j`). */
  readonly dumps: readonly string[];
  /** The node's addresses, bare (no prefix length). */
  readonly localAddresses: readonly string[];
  /**
   * The web view's data, built by the mode itself from its dumps; absent for iptables mode,
   * whose dumps the web view reads with the shared iptables code.
   */
  readonly web?: ModeWebSnapshot;
}

/** One node of a Service's graph: the Service, where traffic enters, the mode's objects, endpoints. */
export interface WebGraphNode {
  readonly id: string;
  readonly kind: "service" | "entry" | "chain" | "endpoint";
  readonly label: string;
  readonly detail: string;
  readonly column: number;
  readonly counterKey?: string;
}

export interface WebServiceEntry {
  /** 4 or 6. */
  readonly family: number;
  readonly service: string;
  readonly servicePortNames: readonly string[];
  readonly endpoints: readonly {
    readonly servicePortName: string;
    readonly endpoint: string;
    readonly probability: number;
    readonly viaChain: string;
    readonly sepChain: string;
    readonly packets: number | null;
    readonly bytes: number | null;
  }[];
  readonly graph: {
    readonly nodes: readonly WebGraphNode[];
    readonly edges: readonly { readonly from: string; readonly to: string; readonly label: string }[];
  };
  /** The mode-neutral view the graph was drawn from. */
  readonly view: ServiceView;
}

/** One rule as the rules tab lists it; `columns` of {@link ModeWebSnapshot} name its fields. */
export interface WebRuleRow {
  readonly key: string;
  readonly family: number;
  readonly table: string;
  readonly chain: string;
  readonly [column: string]: string | number;
}

export interface ModeWebSnapshot {
  /** Changes when any object changes, not when only counters move. */
  readonly version: string;
  readonly services: readonly WebServiceEntry[];
  readonly columns: readonly string[];
  readonly rules: readonly WebRuleRow[];
  /** Every rule's [packets, bytes] by row key (rules without counters are absent). */
  readonly counters: Readonly<Record<string, readonly [number, number]>>;
  /** The `trace` command's JSON for the packet the flags describe (`src`, `dst`, `proto`, `from`, `state`). */
  trace(flags: Readonly<Record<string, string>>): unknown;
}

/** Reads the live kernel (or, in tests, anything that looks like it). */
export interface InspectionSource {
  read(): Promise<KernelReading>;
}
