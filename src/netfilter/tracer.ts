import { InputError } from "../errors.ts";
import type { Address, IPFamily } from "../ip.ts";
import { formatAddress, parseIP } from "../ip.ts";
import type { MatchContext } from "./match.ts";
import { evaluateRule, isLocalAddress } from "./match.ts";
import type { Chain, Counters, Hook, Rule, Ruleset, Table, Target, Verdict } from "./model.ts";
import { baseChainsFor } from "./model.ts";
import {
  findVirtualServer,
  hostPort,
  IPVS_LOCAL_IN_PRIORITY,
  IPVS_LOCAL_OUT_PRIORITY,
  realServerShares,
  virtualServerLabel,
  type IpsetModel,
  type IpvsTraceModel,
} from "./ipvs.ts";

export type Origin = "pod" | "node" | "external";

export interface TracePacket {
  readonly protocol: "tcp" | "udp" | "sctp";
  readonly src: string;
  readonly srcPort?: number;
  readonly dst: string;
  readonly dstPort: number;
  readonly inInterface?: string;
  readonly outInterface?: string;
  readonly mark?: number;
  readonly state?: "NEW" | "ESTABLISHED";
}

export interface TraceOptions {
  /** The node's own addresses (addrtype LOCAL and the routing decision); loopback is always local. */
  readonly localAddresses: readonly string[];
  readonly origin: Origin;
  readonly recent?: MatchContext["recent"];
  /** Bound on paths opened by unknown matches (statistic branches are bounded by the rules themselves). */
  readonly maxUnknownBranches?: number;
  /** IPVS's virtual servers: the packet meets IPVS in LOCAL_IN and LOCAL_OUT (src/netfilter/ipvs.ts). */
  readonly ipvs?: IpvsTraceModel;
  /** The ipsets `-m set` matches look in. */
  readonly ipsets?: ReadonlyMap<string, IpsetModel>;
}

export type StepKind = "chain" | "rule" | "policy" | "note";

export interface TraceStep {
  readonly kind: StepKind;
  readonly hook?: Hook;
  readonly table?: string;
  readonly chain?: string;
  /** 1-based rule number in its chain (`iptables -L --line-numbers`). */
  readonly ruleNumber?: number;
  /** Line of the dump. */
  readonly line?: number;
  readonly rule?: string;
  readonly counters?: Counters;
  /** Rule steps: whether this path matched the rule (a rule shown unmatched carries a note or a branch). */
  readonly matched?: boolean;
  /** Rule steps: the rule's target (a chain, DNAT, ACCEPT, MARK…); policy steps: the policy. */
  readonly target?: string;
  /** Rule steps of a statistic rule: the chance of this path's side (matched or not). */
  readonly probability?: number;
  /** For branching rules: this path's share (statistic) and what it assumed (unknown matches). */
  readonly branch?: { readonly matched: boolean; readonly weight: number; readonly assumption?: string };
  readonly effect: string;
  readonly depth: number;
}

/**
 * What decided an outcome, finer than the kernel's verdict: a DNAT to an endpoint, a rule's
 * explicit ACCEPT, a packet that only ran off the end of ACCEPT-policy chains (nothing of the
 * proxy's matched it), or the rule or policy that dropped or rejected it.
 */
export type Decision = "dnat" | "accept" | "policy-accept" | "drop" | "reject" | "policy-drop";

/** The rule (or the built-in chain's policy) that decided an outcome. */
export interface DecidingRule {
  readonly decision: Decision;
  readonly hook: Hook;
  readonly table: string;
  readonly chain: string;
  /** Absent for a policy. */
  readonly ruleNumber?: number;
  readonly line?: number;
  readonly rule?: string;
}

export interface TraceOutcome {
  readonly probability: number;
  readonly verdict: Verdict;
  /** Where the packet ends up: `ip:port` after any DNAT. */
  readonly destination: string;
  /** The DNAT `--to-destination` that applied, if any. */
  readonly dnat?: string;
  readonly masquerade: boolean;
  readonly snat?: string;
  readonly delivery: "local" | "forwarded" | "dropped";
  readonly decision: Decision;
  /** Undefined only when no chain at all saw the packet (an empty ruleset). */
  readonly decidedBy?: DecidingRule;
  readonly mark: number;
  readonly assumptions: readonly string[];
  readonly path: readonly TraceStep[];
}

export interface TraceResult {
  readonly packet: TracePacket;
  readonly origin: Origin;
  /** Every step of every path, in first-visit order. */
  readonly steps: readonly TraceStep[];
  readonly outcomes: readonly TraceOutcome[];
  readonly truncated: boolean;
}

interface StepNode {
  readonly step: TraceStep;
  readonly prev: StepNode | undefined;
}

interface PathState {
  readonly protocol: string;
  readonly src: Address;
  readonly srcPort?: number;
  readonly dst: Address;
  readonly dstPort: number;
  readonly inInterface?: string;
  readonly outInterface?: string;
  readonly mark: number;
  readonly ctstates: ReadonlySet<string>;
  readonly weight: number;
  readonly assumptions: readonly string[];
  readonly steps: StepNode | undefined;
  readonly recording: boolean;
  readonly hook: Hook;
  readonly dnat?: string;
  readonly snat?: string;
  readonly masquerade: boolean;
  /** Established flows: the mark the connection's first packet would carry through nat. */
  readonly replayMark: number;
  readonly decidedBy?: DecidingRule;
  readonly ipvs?: { readonly protocol: string; readonly address: Address; readonly port: number };
}

const DECISION_RANK: Readonly<Record<Decision, number>> = {
  "policy-accept": 0,
  accept: 1,
  dnat: 2,
  drop: 3,
  reject: 3,
  "policy-drop": 3,
};

/**
 * Keeps the strongest decision of a path: a DNAT (it chose the endpoint) over an explicit
 * ACCEPT over an ACCEPT policy; among equals, the later one.
 */
function decide(state: PathState, by: DecidingRule): PathState {
  const current = state.decidedBy;
  if (current !== undefined && DECISION_RANK[current.decision] > DECISION_RANK[by.decision]) return state;
  return { ...state, decidedBy: by };
}

function ruleDecision(state: PathState, rule: Rule, decision: Decision): PathState {
  return decide(state, {
    decision,
    hook: state.hook,
    table: rule.table,
    chain: rule.chain,
    ruleNumber: rule.index,
    line: rule.line,
    rule: `-A ${rule.chain} ${rule.text}`,
  });
}

/** What a rule jumps to or does, in one word: a chain name, DNAT, ACCEPT, MARK, RETURN… */
export function targetName(target: Target | undefined): string | undefined {
  if (target === undefined) return undefined;
  switch (target.kind) {
    case "verdict":
      return target.verdict;
    case "return":
      return "RETURN";
    case "jump":
    case "goto":
      return target.chain;
    case "dnat":
      return "DNAT";
    case "snat":
      return "SNAT";
    case "masquerade":
      return "MASQUERADE";
    case "mark":
      return "MARK";
    case "continue":
    case "unknown":
      return target.name;
  }
}

type ChainEnd =
  | { readonly state: PathState; readonly end: "return" }
  | { readonly state: PathState; readonly end: "verdict"; readonly verdict: Verdict };

const MAX_DEPTH = 64;

function addStep(state: PathState, step: Omit<TraceStep, "hook">): PathState {
  if (!state.recording) return state;
  return { ...state, steps: { step: { hook: state.hook, ...step }, prev: state.steps } };
}

function ruleStep(
  rule: Rule,
  effect: string,
  depth: number,
  matched: boolean,
  branch?: TraceStep["branch"],
): Omit<TraceStep, "hook"> {
  const target = targetName(rule.target);
  const statistic = branch !== undefined && branch.assumption === undefined;
  return {
    kind: "rule",
    table: rule.table,
    chain: rule.chain,
    ruleNumber: rule.index,
    line: rule.line,
    rule: `-A ${rule.chain} ${rule.text}`,
    ...(rule.counters === undefined ? {} : { counters: rule.counters }),
    matched,
    ...(target === undefined ? {} : { target }),
    ...(statistic ? { probability: branch.weight } : {}),
    ...(branch === undefined ? {} : { branch }),
    effect,
    depth,
  };
}

function parseEndpoint(to: string, family: IPFamily): { addr: Address; port?: number } | undefined {
  const m =
    family === "IPv6"
      ? (/^\[([^\]]+)\](?::(\d+))?$/.exec(to) ?? /^([^[\]]+)$/.exec(to))
      : /^([^:]+)(?::(\d+))?$/.exec(to);
  if (m === null) return undefined;
  const addr = parseIP((m[1] ?? "").split("-")[0] ?? "");
  if (addr === undefined) return undefined;
  return m[2] === undefined ? { addr } : { addr, port: Number(m[2]) };
}

class Walker {
  unknownBranches = 0;
  truncated = false;
  /** Packets IPVS scheduled in LOCAL_IN: they leave through LOCAL_OUT and POSTROUTING. */
  readonly ipvsForwarded: PathState[] = [];

  constructor(
    readonly ruleset: Ruleset,
    readonly ctx: MatchContext,
    readonly maxUnknownBranches: number,
    readonly ipvs?: IpvsTraceModel,
  ) {}

  /**
   * IPVS in LOCAL_IN or LOCAL_OUT: a packet to a virtual server goes to one of its real servers
   * (one path per real server, with its share of new connections), or is refused with ICMP
   * port unreachable when no real server takes new connections. Other packets pass.
   */
  runIpvs(hook: Hook, s: PathState, finished: PathState[], finishedVerdicts: Verdict[]): PathState[] {
    if (this.ipvs === undefined || s.ipvs !== undefined) return [s];
    const where = hook === "INPUT" ? "LOCAL_IN" : "LOCAL_OUT";
    const vs = findVirtualServer(this.ipvs, s.protocol, s.dst, s.dstPort);
    const packetDst = `${s.protocol.toUpperCase()} ${hostPort(formatAddress(s.dst), s.dstPort)}`;
    if (vs === undefined)
      return [
        addStep(s, {
          kind: "note",
          table: "ipvs",
          effect: `IPVS (${where}): no virtual server ${packetDst}, the packet passes`,
          depth: 0,
        }),
      ];
    const label = virtualServerLabel(vs);
    const persistent = vs.persistence > 0 ? ` persistent ${vs.persistence}` : "";
    const established = s.ctstates.has("ESTABLISHED");
    const assumptions: string[] = [];
    let branches: { rs: (typeof vs.realServers)[number]; share: number }[];
    if (established) {
      branches = vs.realServers.map((rs) => ({ rs, share: 1 / vs.realServers.length }));
      if (branches.length > 0)
        assumptions.push(
          `ipvs ${label}: an established connection stays on the real server IPVS gave it (its connection entry, not in the dump); each real server is shown, weight 0 included`,
        );
    } else {
      const { shares, note } = realServerShares(vs);
      branches = shares.filter((b) => b.share > 0);
      if (note !== undefined) assumptions.push(`ipvs ${label}: ${note}`);
      if (vs.persistence > 0 && this.ctx.recent !== "new-client")
        assumptions.push(
          `ipvs ${label}: persistent ${vs.persistence} s: a client IPVS saw within that time goes back to its real server; the shares are a new client's`,
        );
    }
    if (branches.length === 0) {
      const why = vs.realServers.length === 0 ? "no real server" : "no real server with a weight above 0";
      const st = decide(
        addStep(s, {
          kind: "note",
          table: "ipvs",
          chain: label,
          target: "REJECT",
          effect: `IPVS (${where}): virtual server ${label} ${vs.scheduler}${persistent} has ${why}: IPVS answers ICMP port unreachable and drops the packet`,
          depth: 0,
        }),
        { decision: "reject", hook, table: "ipvs", chain: label, rule: why },
      );
      finished.push(st);
      finishedVerdicts.push("REJECT");
      return [];
    }
    const out: PathState[] = [];
    for (const { rs, share } of branches) {
      const to = hostPort(rs.address, rs.port);
      const addr = parseIP(rs.address);
      if (addr === undefined) continue;
      const masq = rs.forward === "Masq" || rs.forward === "";
      const st: PathState = {
        ...s,
        weight: s.weight * share,
        assumptions: [...s.assumptions, ...assumptions],
        ...(masq ? { dst: addr, dstPort: rs.port, dnat: to, ctstates: new Set(s.ctstates).add("DNAT") } : {}),
        ipvs: { protocol: s.protocol, address: s.dst, port: s.dstPort },
      };
      out.push(
        decide(
          addStep(st, {
            kind: "note",
            table: "ipvs",
            chain: label,
            target: "DNAT",
            probability: share,
            effect:
              `IPVS (${where}): virtual server ${label} ${vs.scheduler}${persistent} → real server ${to} ` +
              `(${rs.forward || "Masq"}, weight ${rs.weight}, ${rs.activeConn} active / ${rs.inactiveConn} inactive connections), ` +
              `${formatPercent(share)}${established ? "" : " of new connections"}` +
              (masq ? `: destination rewritten to ${to}` : ": forwarded without rewriting the destination"),
            depth: 0,
          }),
          {
            decision: "dnat",
            hook,
            table: "ipvs",
            chain: label,
            rule: `-> ${to} ${rs.forward || "Masq"} ${rs.weight}`,
          },
        ),
      );
    }
    if (hook !== "INPUT") return out;
    for (const st of out)
      this.ipvsForwarded.push(
        addStep(st, {
          kind: "note",
          effect: "IPVS sends the packet on through LOCAL_OUT and POSTROUTING",
          depth: 0,
        }),
      );
    return [];
  }

  runChain(table: Table, chain: Chain, from: number, state: PathState, depth: number): ChainEnd[] {
    const rules = chain.rules;
    for (let i = from; i < rules.length; i++) {
      const rule = rules[i] as Rule;
      const ev = evaluateRule(rule, state, this.ctx);
      if (ev.kind === "nomatch") {
        if (ev.note !== undefined)
          state = addStep(state, ruleStep(rule, `not matched: ${ev.note}`, depth, false));
        continue;
      }
      if (ev.kind === "match") return this.applyTarget(table, chain, i, state, depth, undefined);
      let branches = ev.branches;
      if (branches.some((b) => b.assumption !== undefined)) {
        if (this.unknownBranches >= this.maxUnknownBranches) {
          this.truncated = true;
          branches = branches.filter((b) => !b.matched).slice(-1);
        } else {
          this.unknownBranches++;
        }
      }
      const out: ChainEnd[] = [];
      for (const b of branches) {
        let s: PathState = {
          ...state,
          weight: state.weight * b.weight,
          assumptions:
            b.assumption === undefined
              ? state.assumptions
              : [...state.assumptions, `${rule.table}/${rule.chain} rule ${rule.index}: ${b.assumption}`],
        };
        if (b.matched) {
          out.push(...this.applyTarget(table, chain, i, s, depth, b));
        } else {
          s = addStep(s, ruleStep(rule, branchLabel(b, false), depth, false, b));
          out.push(...this.runChain(table, chain, i + 1, s, depth));
        }
      }
      return out;
    }
    return [{ state, end: "return" }];
  }

  applyTarget(
    table: Table,
    chain: Chain,
    i: number,
    state: PathState,
    depth: number,
    branch: TraceStep["branch"],
  ): ChainEnd[] {
    const rule = chain.rules[i] as Rule;
    const target = rule.target;
    const label = branch === undefined ? undefined : branchLabel(branch, true);
    const step = (s: PathState, effect: string) =>
      addStep(
        s,
        ruleStep(
          rule,
          label === undefined ? effect : label + effect.replace(/^matched/, ""),
          depth,
          true,
          branch,
        ),
      );
    const next = (s: PathState) => this.runChain(table, chain, i + 1, s, depth);
    if (target === undefined) return next(step(state, "matched; no target (counts only), continue"));
    switch (target.kind) {
      case "verdict": {
        const decided = ruleDecision(
          state,
          rule,
          target.verdict === "ACCEPT" ? "accept" : target.verdict === "DROP" ? "drop" : "reject",
        );
        return [
          { state: step(decided, `matched → ${target.verdict}`), end: "verdict", verdict: target.verdict },
        ];
      }
      case "return":
        return [{ state: step(state, "matched → RETURN"), end: "return" }];
      case "jump":
      case "goto": {
        const sub = table.chains.get(target.chain);
        if (sub === undefined || depth >= MAX_DEPTH) {
          return next(step(state, `matched → ${target.chain}: chain not found, continue`));
        }
        const entered = addStep(step(state, `matched → ${target.kind} ${target.chain}`), {
          kind: "chain",
          table: table.name,
          chain: sub.name,
          effect: `enter ${sub.name}`,
          depth: depth + 1,
        });
        const results = this.runChain(table, sub, 0, entered, depth + 1);
        if (target.kind === "goto") return results;
        const out: ChainEnd[] = [];
        for (const r of results) {
          if (r.end === "return")
            out.push(
              ...next(
                addStep(r.state, {
                  kind: "note",
                  table: table.name,
                  chain: chain.name,
                  effect: `back in ${chain.name}`,
                  depth,
                }),
              ),
            );
          else out.push(r);
        }
        return out;
      }
      case "dnat": {
        const ep = parseEndpoint(target.to, this.ruleset.family);
        if (ep === undefined)
          return next(step(state, `matched → DNAT ${target.to}: not understood, continue`));
        const ctstates = new Set(state.ctstates).add("DNAT");
        const s: PathState = {
          ...ruleDecision(state, rule, "dnat"),
          dst: ep.addr,
          dstPort: ep.port ?? state.dstPort,
          dnat: target.to,
          ctstates,
        };
        return [{ state: step(s, `matched → DNAT to ${target.to}`), end: "verdict", verdict: "ACCEPT" }];
      }
      case "snat":
        return [
          {
            state: step({ ...state, snat: target.to }, `matched → SNAT to ${target.to}`),
            end: "verdict",
            verdict: "ACCEPT",
          },
        ];
      case "masquerade":
        return [
          {
            state: step(
              { ...state, masquerade: true },
              "matched → MASQUERADE (source NAT to the outgoing interface address)",
            ),
            end: "verdict",
            verdict: "ACCEPT",
          },
        ];
      case "mark": {
        const mark = ((state.mark & ~target.mask) ^ target.value) >>> 0;
        return next(
          step(
            { ...state, mark },
            `matched → ${target.text}: mark 0x${state.mark.toString(16)} → 0x${mark.toString(16)}`,
          ),
        );
      }
      case "continue":
        return next(step(state, `matched → ${target.name} (non-terminating), continue`));
      case "unknown": {
        const assumption = `${rule.table}/${rule.chain} rule ${rule.index}: target ${target.name} not modelled — assumed to continue`;
        return next(
          step(
            { ...state, assumptions: [...state.assumptions, assumption] },
            `matched → ${target.text}: not modelled, assumed to continue`,
          ),
        );
      }
    }
  }

  /** Runs one hook: every base chain attached to it, in priority order. */
  runHook(
    hook: Hook,
    states: PathState[],
    finished: PathState[],
    finishedVerdicts: Verdict[],
    skipNat: boolean,
    ipvs = false,
  ): PathState[] {
    let current = states.map((s) => ({ ...s, hook }));
    const ipvsPriority =
      !ipvs || this.ipvs === undefined
        ? undefined
        : hook === "INPUT"
          ? IPVS_LOCAL_IN_PRIORITY
          : hook === "OUTPUT"
            ? IPVS_LOCAL_OUT_PRIORITY
            : undefined;
    let ipvsDone = ipvsPriority === undefined;
    const runIpvs = () => {
      ipvsDone = true;
      current = current.flatMap((s) => this.runIpvs(hook, s, finished, finishedVerdicts));
    };
    for (const { table, chain } of baseChainsFor(this.ruleset, hook)) {
      if (!ipvsDone && (chain.priority ?? 0) > ipvsPriority!) runIpvs();
      const next: PathState[] = [];
      for (const s of current) {
        const enter = (st: PathState) =>
          addStep(st, {
            kind: "chain",
            table: table.name,
            chain: chain.name,
            effect: `${table.name} ${chain.name}`,
            depth: 0,
          });
        if (table.name === "nat" && skipNat) {
          next.push(
            addStep(s, {
              kind: "note",
              table: "nat",
              chain: chain.name,
              effect: "nat not consulted: the connection's NAT was already set up on the way out",
              depth: 0,
            }),
          );
          continue;
        }
        if (table.name === "nat" && s.ctstates.has("ESTABLISHED")) {
          next.push(...this.replayNat(table, chain, s));
          continue;
        }
        for (const r of this.runChain(table, chain, 0, enter(s), 0)) {
          if (r.end === "verdict" && r.verdict !== "ACCEPT") {
            finished.push(r.state);
            finishedVerdicts.push(r.verdict);
          } else if (r.end === "return") {
            const policy = chain.policy ?? "ACCEPT";
            const st = decide(
              addStep(r.state, {
                kind: "policy",
                table: table.name,
                chain: chain.name,
                target: policy,
                effect: `end of ${chain.name}: policy ${policy}`,
                depth: 0,
              }),
              {
                decision: policy === "ACCEPT" ? "policy-accept" : "policy-drop",
                hook,
                table: table.name,
                chain: chain.name,
              },
            );
            if (policy === "ACCEPT") next.push(st);
            else {
              finished.push(st);
              finishedVerdicts.push(policy);
            }
          } else {
            next.push(r.state);
          }
        }
      }
      current = next;
    }
    if (!ipvsDone) runIpvs();
    return current;
  }

  /**
   * Established packets skip the nat table; conntrack applies what the connection's first packet
   * decided. We recompute that decision silently (as a NEW packet) and show it as one step.
   */
  replayNat(table: Table, chain: Chain, s: PathState): PathState[] {
    const first: PathState = { ...s, recording: false, mark: s.replayMark, ctstates: new Set(["NEW"]) };
    return this.runChain(table, chain, 0, first, 0).map((r) => {
      const changed: string[] = [];
      if (r.state.dnat !== s.dnat && r.state.dnat !== undefined)
        changed.push(`destination rewritten to ${r.state.dnat}`);
      if (r.state.masquerade && !s.masquerade) changed.push("source masqueraded");
      if (r.state.snat !== s.snat && r.state.snat !== undefined)
        changed.push(`source rewritten to ${r.state.snat}`);
      const ctstates = new Set(s.ctstates);
      if (r.state.dnat !== undefined) ctstates.add("DNAT");
      const restored: PathState = {
        ...r.state,
        ...(s.decidedBy === undefined && r.state.decidedBy === undefined
          ? {}
          : { decidedBy: pickDecision(s.decidedBy, r.state.decidedBy) }),
        recording: s.recording,
        steps: s.steps,
        mark: s.mark,
        replayMark: r.state.mark,
        ctstates,
        hook: s.hook,
      };
      return addStep(restored, {
        kind: "note",
        table: "nat",
        chain: chain.name,
        effect: `conntrack short-cut: established flow, nat ${chain.name} not traversed; the entry made by the first packet applies${changed.length === 0 ? " (no NAT)" : `: ${changed.join(", ")}`}`,
        depth: 0,
      });
    });
  }
}

function pickDecision(a: DecidingRule | undefined, b: DecidingRule | undefined): DecidingRule | undefined {
  if (a === undefined) return b;
  if (b === undefined) return a;
  return DECISION_RANK[a.decision] > DECISION_RANK[b.decision] ? a : b;
}

function branchLabel(b: NonNullable<TraceStep["branch"]>, matched: boolean): string {
  if (b.assumption !== undefined) return b.assumption;
  return `${matched ? "matched" : "not matched"} with probability ${formatPercent(b.weight)}`;
}

export function formatPercent(p: number): string {
  return `${(Math.round(p * 1e6) / 1e4).toString()}%`;
}

function collectPath(node: StepNode | undefined): StepNode[] {
  const out: StepNode[] = [];
  for (let n = node; n !== undefined; n = n.prev) out.push(n);
  return out.reverse();
}

function endpointString(addr: Address, port: number): string {
  return addr.family === "IPv6" ? `[${formatAddress(addr)}]:${port}` : `${formatAddress(addr)}:${port}`;
}

/** `IP`, `IP:PORT`, `[IPv6]:PORT` or a bare IPv6 address. */
function splitHostPort(text: string, flag: string, portRequired: boolean): { ip: string; port?: number } {
  const m =
    /^\[([^\]]+)\](?::(\d+))?$/.exec(text) ??
    (text.split(":").length === 2 ? /^([^:]+):(\d+)$/.exec(text) : null);
  const ip = m === null ? text : (m[1] as string);
  const portText = m === null ? undefined : m[2];
  if (parseIP(ip) === undefined) throw new InputError(flag, `not an IP address: ${text}`);
  if (portText === undefined) {
    if (portRequired) throw new InputError(flag, `needs a port (IP:PORT, [IPv6]:PORT): ${text}`);
    return { ip };
  }
  const port = Number(portText);
  if (!Number.isInteger(port) || port < 1 || port > 65535)
    throw new InputError(flag, `port out of range: ${text}`);
  return { ip, port };
}

/** The web view's `/api/trace?src=&dst=&proto=&from=&state=` query as `trace` flags. */
export function packetFromQuery(query: Readonly<Record<string, string>>): {
  packet: TracePacket;
  origin: Origin;
} {
  return packetFromFlags({
    src: query["src"] ?? "",
    dst: query["dst"] ?? "",
    ...(query["proto"] === undefined ? {} : { proto: query["proto"] }),
    ...(query["from"] === undefined ? {} : { from: query["from"] }),
    ...(query["state"] === undefined ? {} : { state: query["state"] }),
  });
}

/** Turns `trace` flags (`--src IP[:PORT] --dst IP:PORT [--proto] [--from] [--state]`) into a packet. */
export function packetFromFlags(flags: {
  readonly src: string;
  readonly dst: string;
  readonly proto?: string;
  readonly from?: string;
  readonly state?: string;
}): { packet: TracePacket; origin: Origin } {
  const src = splitHostPort(flags.src, "--src", false);
  const dst = splitHostPort(flags.dst, "--dst", true);
  const proto = (flags.proto ?? "tcp").toLowerCase();
  if (proto !== "tcp" && proto !== "udp" && proto !== "sctp")
    throw new InputError("--proto", `must be tcp, udp or sctp: ${flags.proto}`);
  const from = flags.from ?? "pod";
  if (from !== "pod" && from !== "node" && from !== "external")
    throw new InputError("--from", `must be pod, node or external: ${from}`);
  const state = (flags.state ?? "NEW").toUpperCase();
  if (state !== "NEW" && state !== "ESTABLISHED")
    throw new InputError("--state", `must be NEW or ESTABLISHED: ${flags.state}`);
  return {
    packet: {
      protocol: proto,
      src: src.ip,
      ...(src.port === undefined ? {} : { srcPort: src.port }),
      dst: dst.ip,
      dstPort: dst.port as number,
      state,
    },
    origin: from,
  };
}

/** Walks a packet through the ruleset in kernel hook order and returns every possible outcome. */
export function tracePacket(ruleset: Ruleset, packet: TracePacket, options: TraceOptions): TraceResult {
  const src = parseIP(packet.src);
  const dst = parseIP(packet.dst);
  if (src === undefined) throw new InputError("trace", `--src: not an IP address: ${packet.src}`);
  if (dst === undefined) throw new InputError("trace", `--dst: not an IP address: ${packet.dst}`);
  if (src.family !== ruleset.family || dst.family !== ruleset.family) {
    throw new InputError(
      "trace",
      `packet is ${src.family === dst.family ? src.family : "IPv4/6"} but the ruleset is ${ruleset.family}`,
    );
  }
  const localAddresses: Address[] = [];
  for (const a of options.localAddresses) {
    const parsed = parseIP(a);
    if (parsed === undefined) throw new InputError("trace", `local address is not an IP address: ${a}`);
    localAddresses.push(parsed);
  }
  const ctx: MatchContext = {
    localAddresses,
    recent: options.recent ?? "unknown",
    ...(options.ipsets === undefined ? {} : { ipsets: options.ipsets }),
    // A pod may sit behind a bridge (its CNI's); a client elsewhere or the node itself does not.
    ...(options.origin === "pod" ? {} : { bridged: false }),
  };
  const walker = new Walker(ruleset, ctx, options.maxUnknownBranches ?? 256, options.ipvs);
  const mark = (packet.mark ?? 0) >>> 0;
  const initial: PathState = {
    protocol: packet.protocol,
    src,
    ...(packet.srcPort === undefined ? {} : { srcPort: packet.srcPort }),
    dst,
    dstPort: packet.dstPort,
    ...(packet.inInterface === undefined ? {} : { inInterface: packet.inInterface }),
    ...(packet.outInterface === undefined ? {} : { outInterface: packet.outInterface }),
    mark,
    replayMark: mark,
    ctstates: new Set([packet.state ?? "NEW"]),
    weight: 1,
    assumptions: [],
    steps: undefined,
    recording: true,
    hook: options.origin === "node" ? "OUTPUT" : "PREROUTING",
    masquerade: false,
  };
  const finished: PathState[] = [];
  const verdicts: Verdict[] = [];
  const delivered: { state: PathState; delivery: "local" | "forwarded" }[] = [];
  const routed = (states: PathState[], why: string): { local: PathState[]; remote: PathState[] } => {
    const local: PathState[] = [];
    const remote: PathState[] = [];
    for (const s of states) {
      const isLocal = isLocalAddress(s.dst, ctx);
      const note = addStep(s, {
        kind: "note",
        effect: `routing (${why}): ${formatAddress(s.dst)} is ${isLocal ? "a local address → INPUT" : "not local → FORWARD"}`,
        depth: 0,
      });
      (isLocal ? local : remote).push(note);
    }
    return { local, remote };
  };
  if (options.origin === "node") {
    const out = walker.runHook("OUTPUT", [initial], finished, verdicts, false, true);
    const post = walker.runHook("POSTROUTING", out, finished, verdicts, false);
    for (const s of post) {
      if (isLocalAddress(s.dst, ctx)) {
        const looped = addStep(s, {
          kind: "note",
          effect: "destination is local: the packet loops back through lo",
          depth: 0,
        });
        const pre = walker.runHook("PREROUTING", [looped], finished, verdicts, true);
        for (const t of walker.runHook("INPUT", pre, finished, verdicts, true))
          delivered.push({ state: t, delivery: "local" });
      } else {
        delivered.push({ state: s, delivery: "forwarded" });
      }
    }
  } else {
    const pre = walker.runHook("PREROUTING", [initial], finished, verdicts, false);
    const { local, remote } = routed(pre, "after PREROUTING");
    for (const s of walker.runHook("INPUT", local, finished, verdicts, false, true))
      delivered.push({ state: s, delivery: "local" });
    const fwd = walker.runHook("FORWARD", remote, finished, verdicts, false);
    for (const s of walker.runHook("POSTROUTING", fwd, finished, verdicts, false))
      delivered.push({ state: s, delivery: "forwarded" });
    // IPVS's own output: nat OUTPUT is not consulted again (the connection's NAT is set up).
    const sent = walker.runHook("OUTPUT", walker.ipvsForwarded, finished, verdicts, true);
    for (const s of walker.runHook("POSTROUTING", sent, finished, verdicts, false))
      delivered.push({ state: s, delivery: isLocalAddress(s.dst, ctx) ? "local" : "forwarded" });
  }
  const order = new Map<TraceStep, number>();
  const toOutcome = (s: PathState, verdict: Verdict, delivery: TraceOutcome["delivery"]): TraceOutcome => {
    const path = collectPath(s.steps).map((n) => n.step);
    for (const step of path) if (!order.has(step)) order.set(step, order.size);
    const decision: Decision =
      s.decidedBy?.decision ??
      (verdict === "ACCEPT" ? "policy-accept" : verdict === "DROP" ? "drop" : "reject");
    return {
      probability: s.weight,
      verdict,
      decision,
      ...(s.decidedBy === undefined ? {} : { decidedBy: s.decidedBy }),
      destination: endpointString(s.dst, s.dstPort),
      ...(s.dnat === undefined ? {} : { dnat: s.dnat }),
      masquerade: s.masquerade,
      ...(s.snat === undefined ? {} : { snat: s.snat }),
      delivery,
      mark: s.mark,
      assumptions: s.assumptions,
      path,
    };
  };
  const outcomes: TraceOutcome[] = [
    ...delivered.map((d) => toOutcome(d.state, "ACCEPT", d.delivery)),
    ...finished.map((s, i) => toOutcome(s, verdicts[i] as Verdict, "dropped")),
  ];
  return { packet, origin: options.origin, steps: [...order.keys()], outcomes, truncated: walker.truncated };
}

function stepLine(step: TraceStep): string {
  const indent = "  ".repeat(step.depth + 1);
  switch (step.kind) {
    case "chain":
      return step.depth === 0 ? `[${step.hook}] ${step.table} ${step.chain}` : `${indent}→ ${step.chain}`;
    case "rule": {
      const counters =
        step.counters === undefined ? "" : ` [${step.counters.packets}:${step.counters.bytes}]`;
      return `${indent}${step.chain} #${step.ruleNumber} (line ${step.line})${counters}: ${step.rule}\n${indent}    ${step.effect}`;
    }
    default:
      return `${indent}${step.effect}`;
  }
}

const DECISION_TEXT: Readonly<Record<Decision, string>> = {
  dnat: "DNAT",
  accept: "explicit ACCEPT",
  "policy-accept": "policy ACCEPT",
  drop: "DROP",
  reject: "REJECT",
  "policy-drop": "policy DROP",
};

/** `decided by: DNAT, nat KUBE-SEP-… rule 2 (line 40)`, or which chain's policy let it through. */
export function decidedByText(o: TraceOutcome): string {
  const by = o.decidedBy;
  const what = DECISION_TEXT[o.decision];
  if (by === undefined) return `decided by: ${what} (no chain saw the packet)`;
  if (by.table === "ipvs")
    return `decided by: ${what}, IPVS virtual server ${by.chain} (${by.rule}) [${by.hook}]`;
  if (by.ruleNumber === undefined) {
    const none = o.decision === "policy-accept" ? "; no rule ended its walk" : "";
    return `decided by: ${what} of ${by.table} ${by.chain} [${by.hook}]${none}`;
  }
  return `decided by: ${what}, ${by.table} ${by.chain} rule ${by.ruleNumber} (line ${by.line}) [${by.hook}]`;
}

/** Human-readable report: outcomes first, then each path (a shared prefix is printed once). */
export function formatTrace(result: TraceResult): string {
  const p = result.packet;
  const lines: string[] = [];
  const srcPort = p.srcPort === undefined ? "" : `:${p.srcPort}`;
  lines.push(
    `packet ${p.protocol} ${p.src}${srcPort} → ${p.dst}:${p.dstPort} from ${result.origin} (${p.state ?? "NEW"})`,
  );
  lines.push("");
  lines.push("outcomes:");
  result.outcomes.forEach((o, i) => {
    const nat = o.dnat === undefined ? "" : `, DNAT → ${o.dnat}`;
    const masq = o.verdict === "ACCEPT" ? `, masquerade: ${o.masquerade ? "yes" : "no"}` : "";
    lines.push(
      `  ${i + 1}. ${formatPercent(o.probability)} ${o.verdict}${nat} (destination ${o.destination}, ${o.delivery})${masq}`,
    );
    lines.push(`       ${decidedByText(o)}`);
    for (const a of o.assumptions) lines.push(`       assumes ${a}`);
  });
  if (result.truncated) lines.push("  (some unknown matches were not explored both ways: too many branches)");
  let previous: readonly TraceStep[] = [];
  result.outcomes.forEach((o, i) => {
    lines.push("");
    lines.push(`path of outcome ${i + 1}:`);
    let shared = 0;
    while (shared < o.path.length && shared < previous.length && o.path[shared] === previous[shared])
      shared++;
    if (shared > 0) lines.push(`  (first ${shared} steps as outcome ${i})`);
    const rest = o.path.slice(shared);
    for (let k = 0; k < rest.length; k++) {
      const step = rest[k] as TraceStep;
      const after = rest[k + 1];
      // A chain entered and left without any rule matching reads better as one line.
      if (
        step.kind === "chain" &&
        step.depth > 0 &&
        after?.kind === "note" &&
        after.effect.startsWith("back in ")
      ) {
        lines.push(`${"  ".repeat(step.depth + 1)}→ ${step.chain}: no rule matched, ${after.effect}`);
        k++;
      } else {
        lines.push(stepLine(step));
      }
    }
    previous = o.path;
  });
  return lines.join("\n") + "\n";
}

/** Identifies the JSON layout of docs/trace-json.md; bumped on any incompatible change. */
export const TRACE_JSON_SCHEMA = "kube-proxy-ts/trace/v1";

/** JSON form (docs/trace-json.md; sets and shared step objects flattened). */
export function traceToJson(result: TraceResult): Record<string, unknown> {
  return {
    schema: TRACE_JSON_SCHEMA,
    packet: result.packet,
    origin: result.origin,
    truncated: result.truncated,
    outcomes: result.outcomes,
  };
}
