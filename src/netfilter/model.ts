import { KubeProxyError } from "../errors.ts";
import type { Cidr, IPFamily } from "../ip.ts";

/**
 * Backend-neutral netfilter model. The iptables-save parser fills it today; an nftables parser
 * can fill the same shape (base chains carry their own hook and priority, as nft chains do).
 */

export type Hook = "PREROUTING" | "INPUT" | "FORWARD" | "OUTPUT" | "POSTROUTING";

export const HOOKS: readonly Hook[] = ["PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING"];

/** Kernel priorities (`enum nf_ip_hook_priorities`); nat registers twice: DNAT before filter, SNAT after. */
export const NF_IP_PRI = {
  raw: -300,
  mangle: -150,
  natDst: -100,
  filter: 0,
  security: 50,
  natSrc: 100,
} as const;

/** Which built-in chain of which iptables table sits on which hook, and at what priority. */
export const IPTABLES_BUILTINS: Readonly<Record<string, Readonly<Partial<Record<Hook, number>>>>> = {
  raw: { PREROUTING: NF_IP_PRI.raw, OUTPUT: NF_IP_PRI.raw },
  mangle: {
    PREROUTING: NF_IP_PRI.mangle,
    INPUT: NF_IP_PRI.mangle,
    FORWARD: NF_IP_PRI.mangle,
    OUTPUT: NF_IP_PRI.mangle,
    POSTROUTING: NF_IP_PRI.mangle,
  },
  nat: {
    PREROUTING: NF_IP_PRI.natDst,
    OUTPUT: NF_IP_PRI.natDst,
    INPUT: NF_IP_PRI.natSrc,
    POSTROUTING: NF_IP_PRI.natSrc,
  },
  filter: { INPUT: NF_IP_PRI.filter, FORWARD: NF_IP_PRI.filter, OUTPUT: NF_IP_PRI.filter },
  security: { INPUT: NF_IP_PRI.security, FORWARD: NF_IP_PRI.security, OUTPUT: NF_IP_PRI.security },
};

export interface Counters {
  readonly packets: number;
  readonly bytes: number;
}

export type Verdict = "ACCEPT" | "DROP" | "REJECT";

/** A parsed match; `negated` is the `!` in front of the option. */
export type Match =
  | { readonly kind: "protocol"; readonly negated: boolean; readonly protocol: string }
  | { readonly kind: "source" | "destination"; readonly negated: boolean; readonly cidr: Cidr }
  | { readonly kind: "inInterface" | "outInterface"; readonly negated: boolean; readonly name: string }
  | {
      readonly kind: "sourcePort" | "destinationPort";
      readonly negated: boolean;
      readonly ranges: readonly (readonly [number, number])[];
    }
  | {
      readonly kind: "addrtype";
      readonly side: "src" | "dst";
      readonly negated: boolean;
      readonly types: readonly string[];
    }
  | { readonly kind: "comment"; readonly text: string }
  | { readonly kind: "mark"; readonly negated: boolean; readonly value: number; readonly mask: number }
  | { readonly kind: "ctstate"; readonly negated: boolean; readonly states: readonly string[] }
  | { readonly kind: "probability"; readonly probability: number }
  | {
      readonly kind: "recent";
      readonly negated: boolean;
      readonly command: "rcheck" | "update" | "set" | "remove";
      readonly name: string;
      readonly seconds?: number;
    }
  | { readonly kind: "accounting"; readonly module: string }
  /** `-m set --match-set NAME src,dst…`: the packet's fields named by `flags` are in the ipset. */
  | {
      readonly kind: "set";
      readonly negated: boolean;
      readonly name: string;
      readonly flags: readonly ("src" | "dst")[];
      readonly text: string;
    }
  /** `-m ipvs`: the packet was scheduled by IPVS (through the virtual server the conditions name). */
  | { readonly kind: "ipvs"; readonly conditions: readonly IpvsCondition[]; readonly text: string }
  /** `-m physdev --physdev-is-in`: the packet came in through a bridge port. */
  | { readonly kind: "physdev"; readonly negated: boolean; readonly text: string }
  | { readonly kind: "unknown"; readonly module: string; readonly text: string };

/** One option of `-m ipvs` (xt_ipvs): `--ipvs`, `--vaddr CIDR`, `--vport N`, `--vproto P`. */
export interface IpvsCondition {
  readonly option: "ipvs" | "vaddr" | "vport" | "vproto";
  readonly negated: boolean;
  readonly value: string;
}

export type Target =
  | { readonly kind: "verdict"; readonly verdict: Verdict; readonly text: string }
  | { readonly kind: "return" }
  | { readonly kind: "jump" | "goto"; readonly chain: string }
  | { readonly kind: "dnat"; readonly to: string }
  | { readonly kind: "snat"; readonly to: string }
  | { readonly kind: "masquerade"; readonly text: string }
  /** Normalised `--set-xmark value/mask`: mark = (mark & ~mask) ^ value. */
  | { readonly kind: "mark"; readonly value: number; readonly mask: number; readonly text: string }
  /** Targets that do not end the chain walk (LOG, NOTRACK, CT, CONNMARK, …). */
  | { readonly kind: "continue"; readonly name: string; readonly text: string }
  /** A target the tracer cannot model; the walk stops there and says so. */
  | { readonly kind: "unknown"; readonly name: string; readonly text: string };

export interface Rule {
  readonly table: string;
  readonly chain: string;
  /** 1-based position in its chain, as `iptables -L --line-numbers` shows it. */
  readonly index: number;
  /** Line of the dump this rule came from (1-based). */
  readonly line: number;
  /** The rule as written after `-A <chain> ` (counters stripped). */
  readonly text: string;
  readonly counters?: Counters;
  readonly matches: readonly Match[];
  /** Undefined for a rule without `-j`/`-g`: it only counts packets. */
  readonly target?: Target;
}

export interface Chain {
  readonly name: string;
  /** Built-in chain policy; undefined for user chains (they RETURN when they fall off). */
  readonly policy?: Verdict;
  /** For base chains: where they are attached. */
  readonly hook?: Hook;
  readonly priority?: number;
  readonly counters?: Counters;
  readonly rules: Rule[];
}

export interface Table {
  readonly name: string;
  readonly chains: Map<string, Chain>;
}

export interface Ruleset {
  readonly family: IPFamily;
  readonly source: "iptables-save" | "nftables";
  readonly tables: Map<string, Table>;
}

/** Base chains attached to a hook, lowest priority first (the order the kernel runs them). */
export function baseChainsFor(ruleset: Ruleset, hook: Hook): { table: Table; chain: Chain }[] {
  const found: { table: Table; chain: Chain; priority: number }[] = [];
  for (const table of ruleset.tables.values()) {
    for (const chain of table.chains.values()) {
      if (chain.hook === hook && chain.priority !== undefined)
        found.push({ table, chain, priority: chain.priority });
    }
  }
  return found.sort((a, b) => a.priority - b.priority).map(({ table, chain }) => ({ table, chain }));
}

/** A ruleset dump that cannot be read; names the line (1-based) and its text. */
export class RulesetParseError extends KubeProxyError {
  readonly code = "KPT_RULESET_PARSE";

  constructor(
    readonly lineNumber: number,
    readonly lineText: string,
    readonly reason: string,
  ) {
    super(`line ${lineNumber}: ${reason}: ${lineText}`);
  }
}
