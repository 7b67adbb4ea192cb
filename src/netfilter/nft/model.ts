/**
 * A pure model of nftables tables as `nft list ruleset`, `nft -j list …` and our own `nft -f`
 * payloads describe them: chains with their hook and priority and their rules, sets and maps with
 * their elements. Rules are decoded into the statements nftables mode writes (docs/nftables.md
 * §A.5); anything else is kept as an `unknown` statement so that the tracer can refuse it out
 * loud instead of guessing.
 */

export type NftTableFamily = "ip" | "ip6" | "inet" | "arp" | "bridge" | "netdev";

export interface Counters {
  readonly packets: number;
  readonly bytes: number;
}

export type NftVerdict =
  | { readonly kind: "jump" | "goto"; readonly target: string }
  | { readonly kind: "accept" | "drop" | "return" | "reject" | "continue" };

/** The right-hand side of an address match. */
export type NftAddressValue =
  | { readonly kind: "address"; readonly text: string }
  | { readonly kind: "anonymous"; readonly items: readonly string[] }
  | { readonly kind: "set"; readonly name: string };

export type NftStatement =
  | {
      readonly kind: "address";
      readonly field: "saddr" | "daddr";
      readonly negate: boolean;
      readonly value: NftAddressValue;
    }
  | { readonly kind: "port"; readonly protocol: string; readonly port: number }
  | { readonly kind: "ctState"; readonly states: readonly string[] }
  | { readonly kind: "fibLocal"; readonly field: "saddr" | "daddr"; readonly negate: boolean }
  | { readonly kind: "l4proto"; readonly protocol: string }
  | {
      readonly kind: "interface";
      readonly match: "iif" | "iifname";
      readonly negate: boolean;
      readonly name: string;
    }
  /** `mark and MASK == VALUE` (listed by nft as `meta mark & MASK == VALUE`). */
  | { readonly kind: "markTest"; readonly mask: number; readonly value: number; readonly negate: boolean }
  /** `ip daddr . meta l4proto . th dport vmap @map`, `meta l4proto . th dport vmap @map`. */
  | {
      readonly kind: "vmapLookup";
      readonly key: "daddr.l4proto.dport" | "l4proto.dport";
      readonly map: string;
    }
  /** `numgen random mod N vmap { 0 : goto A , 1 : goto B }`. */
  | {
      readonly kind: "numgen";
      readonly mod: number;
      readonly entries: readonly { readonly index: number; readonly verdict: NftVerdict }[];
    }
  | { readonly kind: "markSet"; readonly op: "or" | "xor"; readonly value: number }
  | { readonly kind: "masquerade"; readonly fullyRandom: boolean }
  | { readonly kind: "dnat"; readonly address: string; readonly port: number | null }
  /** `update @set { ip saddr }` (session affinity). */
  | { readonly kind: "updateSet"; readonly set: string }
  | { readonly kind: "counter"; readonly counters: Counters }
  | { readonly kind: "verdict"; readonly verdict: NftVerdict }
  /** Anything the rules of nftables mode never contain: the tracer stops there. */
  | { readonly kind: "unknown"; readonly text: string };

export interface NftRule {
  readonly chain: string;
  /** 1-based position in its chain. */
  readonly index: number;
  /** The rule as written by our renderer, or as nft listed it. */
  readonly text: string;
  readonly statements: readonly NftStatement[];
  readonly comment?: string;
  readonly counters?: Counters;
  readonly handle?: number;
}

export interface NftBaseHook {
  readonly type: "filter" | "nat" | "route";
  readonly hook: string;
  readonly priority: number;
  readonly policy: "accept" | "drop";
}

export interface NftChain {
  readonly name: string;
  readonly base?: NftBaseHook;
  readonly comment?: string;
  readonly rules: readonly NftRule[];
}

export interface NftElement {
  /** The concatenated key, one part per field (`172.30.0.41`, `tcp`, `80`). */
  readonly key: readonly string[];
  readonly value?: NftVerdict;
  readonly comment?: string;
}

export interface NftSet {
  readonly kind: "set" | "map";
  readonly name: string;
  /** Key types, one per concatenated field. */
  readonly type: readonly string[];
  readonly flags: readonly string[];
  readonly timeoutSeconds?: number;
  readonly comment?: string;
  readonly elements: readonly NftElement[];
}

export interface NftTable {
  readonly family: NftTableFamily;
  readonly name: string;
  readonly comment?: string;
  readonly chains: ReadonlyMap<string, NftChain>;
  readonly sets: ReadonlyMap<string, NftSet>;
}

export interface NftRuleset {
  readonly tables: readonly NftTable[];
}

export function verdictText(v: NftVerdict): string {
  return v.kind === "jump" || v.kind === "goto" ? `${v.kind} ${v.target}` : v.kind;
}

function hex(n: number): string {
  return `0x${n.toString(16)}`;
}

function addressValueText(v: NftAddressValue): string {
  switch (v.kind) {
    case "address":
      return v.text;
    case "set":
      return `@${v.name}`;
    case "anonymous":
      return `{ ${v.items.join(" , ")} }`;
  }
}

/** A statement in the syntax our renderer writes (what a JSON listing is shown as). */
export function statementText(s: NftStatement, ipX: string): string {
  switch (s.kind) {
    case "address":
      return `${ipX} ${s.field} ${s.negate ? "!= " : ""}${addressValueText(s.value)}`;
    case "port":
      return `${s.protocol} dport ${s.port}`;
    case "ctState":
      return `ct state ${s.states.join(",")}`;
    case "fibLocal":
      return `fib ${s.field} type ${s.negate ? "!= " : ""}local`;
    case "l4proto":
      return `meta l4proto ${s.protocol}`;
    case "interface":
      return `${s.match} ${s.negate ? "!= " : ""}${s.name}`;
    case "markTest":
      return `mark and ${hex(s.mask)} ${s.negate ? "!=" : "=="} ${s.value === 0 ? "0" : hex(s.value)}`;
    case "vmapLookup":
      return s.key === "l4proto.dport"
        ? `meta l4proto . th dport vmap @${s.map}`
        : `${ipX} daddr . meta l4proto . th dport vmap @${s.map}`;
    case "numgen":
      return `numgen random mod ${s.mod} vmap { ${s.entries.map((e) => `${e.index} : ${verdictText(e.verdict)}`).join(" , ")} }`;
    case "markSet":
      return `mark set mark ${s.op} ${hex(s.value)}`;
    case "masquerade":
      return s.fullyRandom ? "masquerade fully-random" : "masquerade";
    case "dnat":
      return `dnat to ${s.port === null ? s.address : s.address.includes(":") ? `[${s.address}]:${s.port}` : `${s.address}:${s.port}`}`;
    case "updateSet":
      return `update @${s.set} { ${ipX} saddr }`;
    case "counter":
      return `counter packets ${s.counters.packets} bytes ${s.counters.bytes}`;
    case "verdict":
      return verdictText(s.verdict);
    case "unknown":
      return s.text;
  }
}

/** `table ip kube-proxy`. */
export function tableLabel(t: Pick<NftTable, "family" | "name">): string {
  return `table ${t.family} ${t.name}`;
}
