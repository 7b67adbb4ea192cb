/**
 * What the see-inside tools (`trace`, `explain`, the web view) read from a node, whatever the
 * mode: each mode's reader produces a `KernelReading`, each mode's explainer turns it into the
 * neutral `ServiceView`s of ./model.ts.
 */
import type { ProxyMode } from "../config/types.ts";
import type { ServiceView } from "./model.ts";

export interface KernelReading {
  readonly mode: ProxyMode;
  /**
   * The mode's own dump per IP family (iptables: `iptables-save -c` text); empty for nftables
   * mode, whose reading (over netlink) is its `web` snapshot.
   */
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

/** One Service as the web view's list shows it; the list is searched and paged on the server. */
export interface WebServiceSummary {
  /** 4 or 6. */
  readonly family: number;
  /** `namespace/name`. */
  readonly service: string;
  /** Where traffic enters, e.g. `10.1.0.27:80/tcp`, `node port 31004/tcp`: searched with the name. */
  readonly frontends: readonly string[];
}

/** One line of a Service's walk through the mode's objects, as `explain` prints it. */
export interface WebWalkStep {
  readonly depth: number;
  readonly text: string;
  /** The rule whose counters the line shows (a key of {@link ModeWebSnapshot.counters}). */
  readonly counterKey?: string;
  readonly packets?: number;
  readonly bytes?: number;
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
    /** The rule whose counters the endpoint's row shows. */
    readonly counterKey?: string;
  }[];
  readonly graph: {
    readonly nodes: readonly WebGraphNode[];
    readonly edges: readonly { readonly from: string; readonly to: string; readonly label: string }[];
  };
  /** The mode-neutral view the graph was drawn from, where the mode builds the entry itself. */
  readonly view?: ServiceView;
  /** The seed's walk in this mode: where traffic enters, every rule on the way to the endpoints. */
  readonly walk: readonly WebWalkStep[];
}

/** One rule as the rules tab lists it; `columns` of {@link ModeWebSnapshot} name its fields. */
export interface WebRuleRow {
  readonly key: string;
  readonly family: number;
  readonly table: string;
  readonly chain: string;
  readonly [column: string]: string | number;
}

/** What a request is about to ask of a snapshot: one Service's entry, or the whole table (rules, trace, every counter). */
export type WebNeed =
  | { readonly kind: "service"; readonly family: number; readonly namespace: string; readonly name: string }
  | { readonly kind: "table" }
  /** The trace form's packet (its query's flags): a mode may read only what that packet passes. */
  | { readonly kind: "trace"; readonly flags: Readonly<Record<string, string>> };

/**
 * What the web view shows of one reading of the kernel. At 10,000 Services a reading holds
 * hundreds of thousands of rules: the list is cheap to build, and a Service's entry, the rules
 * and the counters are built when asked for (a mode may parse only that Service's part).
 */
export interface ModeWebSnapshot {
  /** Changes when any object changes, not when only counters move. */
  readonly version: string;
  /** Every Service, sorted by `namespace/name`, then family. */
  readonly services: readonly WebServiceSummary[];
  /** One Service's graph, endpoints and walk; undefined when the reading has no such Service. */
  service(family: number, namespace: string, name: string): WebServiceEntry | undefined;
  readonly columns: readonly string[];
  /** The rules `q` finds (the mode's query: IP, IP:port, port or text), the first `max` of them. */
  rules(q: string, max: number): { readonly total: number; readonly rows: readonly WebRuleRow[] };
  /** [packets, bytes] by row key, of `keys` or of every rule (rules without counters are absent). */
  counters(keys?: ReadonlySet<string>): Readonly<Record<string, readonly [number, number]>>;
  /** The `trace` command's JSON for the packet the flags describe (`src`, `dst`, `proto`, `from`, `state`). */
  trace(flags: Readonly<Record<string, string>>): unknown;
  /**
   * A mode that reads the kernel only as far as asked reads what `need` names here, before the
   * calls above that use it (the web view calls it first for every request and event).
   */
  prepare?(need: WebNeed): Promise<void>;
}

/** Reads the live kernel (or, in tests, anything that looks like it). */
export interface InspectionSource {
  read(): Promise<KernelReading>;
}
