import type { Address } from "../ip.ts";
import { cidrContains, isLoopback, isMulticast, parseCIDR, sameAddress } from "../ip.ts";
import { setContains, type IpsetModel } from "./ipvs.ts";
import type { IpvsCondition, Match, Rule } from "./model.ts";

/** What a matcher needs to know about the packet at this point of its walk. */
export interface PacketView {
  readonly protocol: string;
  readonly src: Address;
  readonly srcPort?: number;
  readonly dst: Address;
  readonly dstPort?: number;
  readonly inInterface?: string;
  readonly outInterface?: string;
  readonly mark: number;
  /** NEW / ESTABLISHED / RELATED / INVALID / UNTRACKED plus the virtual DNAT / SNAT states. */
  readonly ctstates: ReadonlySet<string>;
  /** The IPVS virtual server that scheduled the packet (its `ipvs_property`), if one did. */
  readonly ipvs?: { readonly protocol: string; readonly address: Address; readonly port: number };
}

export interface MatchContext {
  readonly localAddresses: readonly Address[];
  /**
   * `-m recent --rcheck/--update` depends on kernel state we do not have: "unknown" explores both
   * branches; "new-client" says explicitly that a client without an affinity entry is assumed.
   */
  readonly recent: "unknown" | "new-client";
  /** The ipsets `-m set` looks in (absent: every such match is unknown). */
  readonly ipsets?: ReadonlyMap<string, IpsetModel>;
  /** Whether the packet came in through a bridge port (`-m physdev`); absent = not known. */
  readonly bridged?: boolean;
}

export type MatchResult =
  | { readonly kind: "match" }
  | { readonly kind: "nomatch"; readonly note?: string }
  | { readonly kind: "unknown"; readonly reason: string }
  | { readonly kind: "probability"; readonly probability: number };

const MATCH: MatchResult = { kind: "match" };
const NOMATCH: MatchResult = { kind: "nomatch" };

const PROTOCOL_NUMBERS: Readonly<Record<string, string>> = {
  "6": "tcp",
  "17": "udp",
  "132": "sctp",
  "1": "icmp",
  "58": "ipv6-icmp",
  "136": "udplite",
};

function bool(value: boolean, negated: boolean): MatchResult {
  return value !== negated ? MATCH : NOMATCH;
}

function interfaceMatches(pattern: string, name: string): boolean {
  return pattern.endsWith("+") ? name.startsWith(pattern.slice(0, -1)) : name === pattern;
}

export function isLocalAddress(address: Address, ctx: MatchContext): boolean {
  return isLoopback(address) || ctx.localAddresses.some((a) => sameAddress(a, address));
}

function addrtypeOf(type: string, address: Address, ctx: MatchContext): boolean | undefined {
  switch (type) {
    case "LOCAL":
      return isLocalAddress(address, ctx);
    case "MULTICAST":
      return isMulticast(address);
    case "BROADCAST":
      return address.family === "IPv4" && address.addr === 0xffffffff;
    case "UNICAST":
      return (
        !isLocalAddress(address, ctx) &&
        !isMulticast(address) &&
        !(address.family === "IPv4" && address.addr === 0xffffffff)
      );
    default:
      return undefined;
  }
}

export function evaluateMatch(m: Match, p: PacketView, ctx: MatchContext): MatchResult {
  switch (m.kind) {
    case "protocol": {
      if (m.protocol === "all" || m.protocol === "0") return bool(true, m.negated);
      const name = PROTOCOL_NUMBERS[m.protocol] ?? m.protocol;
      return bool(name === p.protocol || (name === "icmpv6" && p.protocol === "ipv6-icmp"), m.negated);
    }
    case "source":
      return bool(cidrContains(m.cidr, p.src), m.negated);
    case "destination":
      return bool(cidrContains(m.cidr, p.dst), m.negated);
    case "inInterface":
    case "outInterface": {
      const name = m.kind === "inInterface" ? p.inInterface : p.outInterface;
      if (name === undefined) {
        const which = m.kind === "inInterface" ? "input" : "output";
        return {
          kind: "unknown",
          reason: `${m.negated ? "! " : ""}${m.kind === "inInterface" ? "-i" : "-o"} ${m.name}: ${which} interface not given`,
        };
      }
      return bool(interfaceMatches(m.name, name), m.negated);
    }
    case "sourcePort":
    case "destinationPort": {
      const port = m.kind === "sourcePort" ? p.srcPort : p.dstPort;
      if (port === undefined)
        return {
          kind: "unknown",
          reason: `${m.kind === "sourcePort" ? "source" : "destination"} port not given`,
        };
      return bool(
        m.ranges.some(([lo, hi]) => port >= lo && port <= hi),
        m.negated,
      );
    }
    case "addrtype": {
      const address = m.side === "src" ? p.src : p.dst;
      let any = false;
      for (const type of m.types) {
        const r = addrtypeOf(type, address, ctx);
        if (r === undefined) return { kind: "unknown", reason: `addrtype ${type} is not modelled` };
        any ||= r;
      }
      return bool(any, m.negated);
    }
    case "comment":
    case "accounting":
      return MATCH;
    case "mark":
      return bool((p.mark & m.mask) >>> 0 === m.value >>> 0, m.negated);
    case "ctstate":
      return bool(
        m.states.some((s) => p.ctstates.has(s)),
        m.negated,
      );
    case "probability":
      return m.probability >= 1
        ? MATCH
        : m.probability <= 0
          ? NOMATCH
          : { kind: "probability", probability: m.probability };
    case "recent":
      if (m.command === "set") return bool(true, m.negated);
      if (ctx.recent === "new-client") {
        return m.negated
          ? MATCH
          : { kind: "nomatch", note: `no recent entry "${m.name}" for a new client (assumed)` };
      }
      return {
        kind: "unknown",
        reason: `${m.negated ? "! " : ""}recent --${m.command} --name ${m.name}: affinity state is not known`,
      };
    case "set": {
      const set = ctx.ipsets?.get(m.name);
      if (set === undefined) return { kind: "unknown", reason: `${m.text}: ipset ${m.name} is not known` };
      const found = setContains(set, m.flags, p);
      if (found === undefined)
        return { kind: "unknown", reason: `${m.text}: ipset type ${set.type} is not modelled` };
      return bool(found, m.negated);
    }
    case "ipvs":
      return ipvsMatches(m.conditions, p);
    case "physdev":
      if (ctx.bridged === undefined)
        return {
          kind: "unknown",
          reason: `${m.text}: whether the packet came through a bridge port is not known`,
        };
      return bool(ctx.bridged, m.negated);
    case "unknown":
      return { kind: "unknown", reason: `${m.text}: match not modelled` };
  }
}

/**
 * xt_ipvs: `--ipvs` alone asks whether IPVS handled the packet; any other option needs a packet
 * IPVS handled (else no match) whose virtual server has that address, port or protocol.
 */
function ipvsMatches(conditions: readonly IpvsCondition[], p: PacketView): MatchResult {
  const vs = p.ipvs;
  if (conditions.length === 1 && conditions[0]!.option === "ipvs")
    return bool(vs !== undefined, conditions[0]!.negated);
  if (vs === undefined) return NOMATCH;
  for (const c of conditions) {
    let holds: boolean;
    switch (c.option) {
      case "ipvs":
        holds = true;
        break;
      case "vaddr": {
        const cidr = parseCIDR(
          c.value.includes("/") ? c.value : `${c.value}/${vs.address.family === "IPv4" ? 32 : 128}`,
        );
        holds = cidr !== undefined && cidrContains(cidr, vs.address);
        break;
      }
      case "vport":
        holds = Number(c.value) === vs.port;
        break;
      case "vproto":
        holds = (PROTOCOL_NUMBERS[c.value] ?? c.value.toLowerCase()) === p.protocol;
        break;
    }
    if (holds === c.negated) return NOMATCH;
  }
  return MATCH;
}

/** One way a rule can go for this packet; `weight` multiplies the path probability. */
export interface RuleBranch {
  readonly matched: boolean;
  readonly weight: number;
  /** Set when the branch rests on an assumption about a match we could not evaluate. */
  readonly assumption?: string;
}

export type RuleEvaluation =
  | { readonly kind: "match" }
  | { readonly kind: "nomatch"; readonly note?: string }
  | { readonly kind: "branch"; readonly branches: readonly RuleBranch[] };

const RULE_MATCH: RuleEvaluation = { kind: "match" };
const RULE_NOMATCH: RuleEvaluation = { kind: "nomatch" };

/**
 * All matches of a rule must hold. A definite mismatch wins over anything unknown; a random
 * statistic match splits the path; an unknown match is explored both ways and labelled.
 */
export function evaluateRule(rule: Rule, p: PacketView, ctx: MatchContext): RuleEvaluation {
  let probability = 1;
  let unknown: string[] | undefined;
  for (const m of rule.matches) {
    const r = evaluateMatch(m, p, ctx);
    if (r.kind === "nomatch") return r.note === undefined ? RULE_NOMATCH : { kind: "nomatch", note: r.note };
    if (r.kind === "probability") probability *= r.probability;
    else if (r.kind === "unknown") (unknown ??= []).push(r.reason);
  }
  if (unknown === undefined) {
    if (probability === 1) return RULE_MATCH;
    return {
      kind: "branch",
      branches: [
        { matched: true, weight: probability },
        { matched: false, weight: 1 - probability },
      ],
    };
  }
  const what = unknown.join("; ");
  const assumeMatch = `unknown — assumed to match: ${what}`;
  const branches: RuleBranch[] = [{ matched: true, weight: probability, assumption: assumeMatch }];
  if (probability < 1) branches.push({ matched: false, weight: 1 - probability, assumption: assumeMatch });
  branches.push({ matched: false, weight: 1, assumption: `unknown — assumed not to match: ${what}` });
  return { kind: "branch", branches };
}
