/**
 * The packet tracer of nftables mode (docs/nftables.md §A.5): one packet through our table's
 * base chains, hook by hook in the kernel's order and, within a hook, by priority. It follows
 * jumps and gotos, looks keys up in the verdict maps, splits at `numgen random mod N vmap` into
 * one path per endpoint with its share, and tracks the masquerade mark up to the `masquerading`
 * chain. It reads exactly the statements nftables mode writes; a rule with anything else ends its
 * path as NOT UNDERSTOOD, never as a guess. Upstream's test tracer (pkg/proxy/nftables
 * helpers_test.go) is the model; unlike it, this one weighs the endpoints and walks the input or
 * forward hook depending on where the packet is routed after DNAT.
 */
import { canonicalIP, cidrContainsSloppy, familyOfSloppy, isLoopbackSloppy, joinHostPort } from "../../ip.ts";
import { formatPercent, type Origin, type TracePacket } from "../tracer.ts";
import type { Counters, NftRule, NftStatement, NftTable, NftVerdict } from "./model.ts";
import { tableLabel } from "./model.ts";

export interface NftTraceOptions {
  /** The node's addresses (`fib … type local`). Loopback is always local. */
  readonly localAddresses: readonly string[];
  readonly origin: Origin;
  /**
   * `kernel` (default): the affinity sets' elements in the dump are the clients the kernel
   * remembers; `new-client`: this client is in none of them.
   */
  readonly affinity?: "kernel" | "new-client";
}

export type NftVerdictWord = "ACCEPT" | "DROP" | "REJECT" | "NOT UNDERSTOOD";

export interface NftTraceStep {
  readonly hook: string;
  readonly chain: string;
  readonly ruleNumber?: number;
  readonly rule?: string;
  readonly counters?: Counters;
  readonly effect: string;
  readonly depth: number;
}

export interface NftTraceOutcome {
  readonly probability: number;
  readonly verdict: NftVerdictWord;
  /** `ip:port` after DNAT, if any. */
  readonly dnat?: string;
  /** Whether `masquerading` rewrote the source on the way out. */
  readonly masquerade: boolean;
  readonly delivery: "local" | "forwarded" | "dropped";
  readonly assumptions: readonly string[];
  /** What stopped the path when the verdict is NOT UNDERSTOOD. */
  readonly notUnderstood?: string;
  readonly path: readonly NftTraceStep[];
}

export interface NftTraceResult {
  readonly packet: TracePacket;
  readonly origin: Origin;
  /** `table ip kube-proxy`. */
  readonly table: string;
  readonly outcomes: readonly NftTraceOutcome[];
}

type Terminal = "accept" | "drop" | "reject" | "nat" | "unknown";

interface State {
  readonly protocol: string;
  readonly src: string;
  readonly dst: string;
  readonly dstPort: number;
  readonly mark: number;
  readonly weight: number;
  readonly hook: string;
  readonly dnat?: string;
  readonly masquerade: boolean;
  readonly assumptions: readonly string[];
  readonly steps: readonly NftTraceStep[];
  readonly notUnderstood?: string;
}

interface Flow {
  readonly st: State;
  /** `next`: go on with the next rule; `return`: the current chain is done. */
  readonly end: "next" | "return" | Terminal;
}

const MAX_DEPTH = 32;

class Tracer {
  private readonly local: Set<string>;

  constructor(
    private readonly table: NftTable,
    private readonly packet: TracePacket,
    private readonly options: NftTraceOptions,
  ) {
    this.local = new Set(options.localAddresses.map((a) => canonicalIP(a.split("/")[0] ?? a) ?? a));
  }

  isLocal(ip: string): boolean {
    const c = canonicalIP(ip);
    return c !== null && (this.local.has(c) || isLoopbackSloppy(c));
  }

  private step(st: State, rule: NftRule | null, chain: string, effect: string, depth: number): State {
    const s: NftTraceStep = {
      hook: st.hook,
      chain,
      ...(rule === null
        ? {}
        : {
            ruleNumber: rule.index,
            rule: rule.text,
            ...(rule.counters === undefined ? {} : { counters: rule.counters }),
          }),
      effect,
      depth,
    };
    return { ...st, steps: [...st.steps, s] };
  }

  private stop(st: State, rule: NftRule | null, chain: string, why: string, depth: number): Flow {
    return {
      st: { ...this.step(st, rule, chain, `NOT UNDERSTOOD: ${why}`, depth), notUnderstood: why },
      end: "unknown",
    };
  }

  private addressMatches(ip: string, text: string): boolean | null {
    if (text.includes("/")) return cidrContainsSloppy(text, ip);
    const a = canonicalIP(text);
    return a === null ? null : a === canonicalIP(ip);
  }

  /** Evaluates one match statement: true, false, or null when it cannot be decided. */
  private matches(st: State, s: NftStatement, rule: NftRule): { ok: boolean; assumption?: string } | null {
    switch (s.kind) {
      case "address": {
        const ip = s.field === "saddr" ? st.src : st.dst;
        let hit: boolean | null;
        if (s.value.kind === "address") hit = this.addressMatches(ip, s.value.text);
        else if (s.value.kind === "anonymous") {
          const each = s.value.items.map((x) => this.addressMatches(ip, x));
          hit = each.some((x) => x === null) ? null : each.some((x) => x === true);
        } else {
          const set = this.table.sets.get(s.value.name);
          if (set === undefined) return null;
          const affinity = set.flags.includes("dynamic") && set.flags.includes("timeout");
          if (affinity && this.options.affinity === "new-client") hit = false;
          else
            hit = set.elements.some((e) => e.key.length === 1 && this.addressMatches(ip, e.key[0]!) === true);
        }
        return hit === null ? null : { ok: hit !== s.negate };
      }
      case "port":
        return { ok: st.protocol === s.protocol && st.dstPort === s.port };
      case "ctState":
        return { ok: s.states.includes((this.packet.state ?? "NEW").toLowerCase()) };
      case "fibLocal":
        return { ok: this.isLocal(s.field === "saddr" ? st.src : st.dst) !== s.negate };
      case "l4proto":
        return { ok: st.protocol === s.protocol };
      case "interface": {
        const given = this.packet.inInterface;
        if (given !== undefined) {
          const hit = s.name.endsWith("*") ? given.startsWith(s.name.slice(0, -1)) : given === s.name;
          return { ok: hit !== s.negate };
        }
        // The local-traffic detector by interface means "from a pod on this node".
        const fromPod = this.options.origin === "pod";
        return {
          ok: fromPod !== s.negate,
          assumption: `a packet ${fromPod ? "from a pod arrives" : "from elsewhere does not arrive"} on ${s.name} (rule ${rule.index} of ${rule.chain})`,
        };
      }
      case "markTest":
        return { ok: ((st.mark & s.mask) === s.value) !== s.negate };
      default:
        return null;
    }
  }

  private lookup(st: State, s: NftStatement & { kind: "vmapLookup" }): NftVerdict | null | undefined {
    const map = this.table.sets.get(s.map);
    if (map === undefined) return undefined;
    const want =
      s.key === "l4proto.dport"
        ? [st.protocol, String(st.dstPort)]
        : [st.dst, st.protocol, String(st.dstPort)];
    const hit = map.elements.find(
      (e) =>
        e.key.length === want.length &&
        e.key.every((k, i) =>
          i === 0 && want.length === 3 ? this.addressMatches(want[0]!, k) === true : k === want[i],
        ),
    );
    return hit?.value ?? null;
  }

  private verdict(
    st: State,
    v: NftVerdict,
    chain: string,
    rule: NftRule,
    depth: number,
    why: string,
  ): Flow[] {
    switch (v.kind) {
      case "jump":
      case "goto": {
        const entered = this.step(st, rule, chain, `${why}${v.kind} ${v.target}`, depth);
        const flows = this.runChain(entered, v.target, depth + 1);
        return flows.map((f) =>
          f.end === "next" ? { st: f.st, end: v.kind === "goto" ? "return" : "next" } : f,
        );
      }
      case "return":
        return [{ st: this.step(st, rule, chain, `${why}return`, depth), end: "return" }];
      case "continue":
        return [{ st: this.step(st, rule, chain, `${why}continue`, depth), end: "next" }];
      case "accept":
        return [{ st: this.step(st, rule, chain, `${why}ACCEPT (this hook)`, depth), end: "accept" }];
      case "drop":
        return [{ st: this.step(st, rule, chain, `${why}DROP`, depth), end: "drop" }];
      case "reject":
        return [{ st: this.step(st, rule, chain, `${why}REJECT`, depth), end: "reject" }];
    }
  }

  private evalRule(st0: State, rule: NftRule, from: number, depth: number): Flow[] {
    let st = st0;
    const chain = rule.chain;
    for (let i = from; i < rule.statements.length; i++) {
      const s = rule.statements[i]!;
      switch (s.kind) {
        case "counter":
        case "updateSet":
          if (s.kind === "updateSet")
            st = this.step(st, rule, chain, `remembers the client in @${s.set}`, depth);
          continue;
        case "markSet": {
          const mark = s.op === "or" ? st.mark | s.value : st.mark ^ s.value;
          st = this.step({ ...st, mark }, rule, chain, `mark set to 0x${mark.toString(16)}`, depth);
          continue;
        }
        case "dnat": {
          const port = s.port ?? st.dstPort;
          const dnat = joinHostPort(s.address, port);
          return [
            {
              st: {
                ...this.step(st, rule, chain, `DNAT → ${dnat}`, depth),
                dnat,
                dst: s.address,
                dstPort: port,
              },
              end: "nat",
            },
          ];
        }
        case "masquerade":
          return [
            {
              st: {
                ...this.step(
                  st,
                  rule,
                  chain,
                  "MASQUERADE (source → the outgoing interface's address)",
                  depth,
                ),
                masquerade: true,
              },
              end: "nat",
            },
          ];
        case "verdict":
          return this.verdict(st, s.verdict, chain, rule, depth, "");
        case "vmapLookup": {
          const v = this.lookup(st, s);
          if (v === undefined) return [this.stop(st, rule, chain, `map @${s.map} does not exist`, depth)];
          if (v === null) return [{ st, end: "next" }];
          const key =
            s.key === "l4proto.dport"
              ? `${st.protocol} . ${st.dstPort}`
              : `${st.dst} . ${st.protocol} . ${st.dstPort}`;
          return this.verdict(st, v, chain, rule, depth, `@${s.map}[${key}] → `);
        }
        case "numgen": {
          const out: Flow[] = [];
          let covered = 0;
          for (const e of s.entries) {
            if (e.index < 0 || e.index >= s.mod) continue;
            covered++;
            const branch = { ...st, weight: st.weight / s.mod };
            out.push(
              ...this.verdict(
                branch,
                e.verdict,
                chain,
                rule,
                depth,
                `numgen ${e.index} of ${s.mod} (${formatPercent(1 / s.mod)}) → `,
              ),
            );
          }
          if (covered < s.mod)
            out.push({ st: { ...st, weight: (st.weight * (s.mod - covered)) / s.mod }, end: "next" });
          return out;
        }
        case "unknown":
          return [
            this.stop(
              st,
              rule,
              chain,
              `statement ${JSON.stringify(s.text)} in rule ${rule.index} of ${chain}`,
              depth,
            ),
          ];
        default: {
          const m = this.matches(st, s, rule);
          if (m === null)
            return [this.stop(st, rule, chain, `cannot evaluate ${JSON.stringify(rule.text)}`, depth)];
          if (!m.ok) return [{ st, end: "next" }];
          if (m.assumption !== undefined) st = { ...st, assumptions: [...st.assumptions, m.assumption] };
        }
      }
    }
    return [{ st: this.step(st, rule, chain, "matched", depth), end: "next" }];
  }

  runChain(st: State, name: string, depth: number): Flow[] {
    const chain = this.table.chains.get(name);
    if (chain === undefined) return [this.stop(st, null, name, `chain ${name} does not exist`, depth)];
    if (depth > MAX_DEPTH) return [this.stop(st, null, name, "jumps nested too deep (a loop?)", depth)];
    const run = (s: State, i: number): Flow[] => {
      const rule = chain.rules[i];
      if (rule === undefined) return [{ st: s, end: "next" }];
      const out: Flow[] = [];
      for (const f of this.evalRule(s, rule, 0, depth)) {
        if (f.end === "next") out.push(...run(f.st, i + 1));
        else if (f.end === "return") out.push({ st: f.st, end: "next" });
        else out.push(f);
      }
      return out;
    };
    return run(st, 0);
  }

  /** The base chains of one hook, by priority; NAT chains only see a connection's first packet. */
  runHook(st: State, hook: string): Flow[] {
    const chains = [...this.table.chains.values()]
      .filter((c) => c.base?.hook === hook)
      .filter((c) => c.base?.type !== "nat" || (this.packet.state ?? "NEW") === "NEW")
      .sort((a, b) => a.base!.priority - b.base!.priority);
    let flows: Flow[] = [{ st: { ...st, hook }, end: "next" }];
    for (const c of chains) {
      const next: Flow[] = [];
      for (const f of flows) {
        if (f.end !== "next") {
          next.push(f);
          continue;
        }
        const entered = this.step(
          f.st,
          null,
          c.name,
          `base chain (${c.base!.type} ${hook} priority ${c.base!.priority})`,
          0,
        );
        for (const r of this.runChain(entered, c.name, 1)) {
          if (r.end === "next" && c.base!.policy === "drop")
            next.push({ st: this.step(r.st, null, c.name, "policy DROP", 0), end: "drop" });
          else next.push({ st: r.st, end: r.end === "accept" || r.end === "nat" ? "next" : r.end });
        }
      }
      flows = next;
    }
    return flows;
  }
}

function outcomeOf(f: Flow, delivery: NftTraceOutcome["delivery"]): NftTraceOutcome {
  const verdict: NftVerdictWord =
    f.end === "drop"
      ? "DROP"
      : f.end === "reject"
        ? "REJECT"
        : f.end === "unknown"
          ? "NOT UNDERSTOOD"
          : "ACCEPT";
  return {
    probability: f.st.weight,
    verdict,
    ...(f.st.dnat === undefined ? {} : { dnat: f.st.dnat }),
    masquerade: f.st.masquerade,
    delivery: verdict === "ACCEPT" ? delivery : "dropped",
    assumptions: f.st.assumptions,
    ...(f.st.notUnderstood === undefined ? {} : { notUnderstood: f.st.notUnderstood }),
    path: f.st.steps,
  };
}

/** Every way `packet` can go through `table`, each with its probability. */
export function traceNftPacket(
  table: NftTable,
  packet: TracePacket,
  options: NftTraceOptions,
): NftTraceResult {
  const t = new Tracer(table, packet, options);
  const start: State = {
    protocol: packet.protocol,
    src: packet.src,
    dst: packet.dst,
    dstPort: packet.dstPort,
    mark: packet.mark ?? 0,
    weight: 1,
    hook: "",
    masquerade: false,
    assumptions: [],
    steps: [],
  };
  const outcomes: NftTraceOutcome[] = [];
  const first = options.origin === "node" ? "output" : "prerouting";
  for (const f of t.runHook(start, first)) {
    if (f.end !== "next") {
      outcomes.push(outcomeOf(f, "dropped"));
      continue;
    }
    const local = t.isLocal(f.st.dst);
    const hooks =
      options.origin === "node" ? ["postrouting"] : local ? ["input"] : ["forward", "postrouting"];
    let flows: Flow[] = [f];
    for (const hook of hooks) flows = flows.flatMap((x) => (x.end === "next" ? t.runHook(x.st, hook) : [x]));
    for (const x of flows) outcomes.push(outcomeOf(x, local ? "local" : "forwarded"));
  }
  return { packet, origin: options.origin, table: tableLabel(table), outcomes };
}

/** Our table of the packet's family in a ruleset (`table ip kube-proxy` / `table ip6 kube-proxy`). */
export function familyOfPacket(packet: TracePacket): "ip" | "ip6" {
  return familyOfSloppy(packet.dst) === "IPv6" ? "ip6" : "ip";
}

export function formatNftTrace(result: NftTraceResult): string {
  const p = result.packet;
  const lines: string[] = [];
  const srcPort = p.srcPort === undefined ? "" : `:${p.srcPort}`;
  lines.push(
    `packet ${p.protocol} ${p.src}${srcPort} → ${p.dst}:${p.dstPort} from ${result.origin} (${p.state ?? "NEW"}) through ${result.table}`,
  );
  lines.push("", "outcomes:");
  result.outcomes.forEach((o, i) => {
    const nat = o.dnat === undefined ? "" : `, DNAT → ${o.dnat}`;
    const masq = o.verdict === "ACCEPT" ? `, masquerade: ${o.masquerade ? "yes" : "no"}` : "";
    lines.push(`  ${i + 1}. ${formatPercent(o.probability)} ${o.verdict}${nat} (${o.delivery})${masq}`);
    if (o.notUnderstood !== undefined) lines.push(`       not understood: ${o.notUnderstood}`);
    for (const a of o.assumptions) lines.push(`       assumes ${a}`);
  });
  result.outcomes.forEach((o, i) => {
    lines.push("", `path of outcome ${i + 1}:`);
    for (const s of o.path) {
      const where = s.ruleNumber === undefined ? s.chain : `${s.chain} rule ${s.ruleNumber}`;
      const counters =
        s.counters === undefined ? "" : ` [${s.counters.packets} pkts, ${s.counters.bytes} bytes]`;
      lines.push(`${"  ".repeat(s.depth + 1)}${s.hook} ${where}: ${s.effect}${counters}`);
      if (s.rule !== undefined) lines.push(`${"  ".repeat(s.depth + 2)}${s.rule}`);
    }
  });
  return lines.join("\n") + "\n";
}

export function nftTraceToJson(result: NftTraceResult): unknown {
  return { packet: result.packet, origin: result.origin, table: result.table, outcomes: result.outcomes };
}
