import { InputError } from "../errors.ts";
import { COLUMN_HEADER, formatRuleColumns, targetName } from "./format.ts";
import type { Chain, Counters, Rule, Ruleset } from "./model.ts";
import { formatPercent } from "./tracer.ts";

export type EntryRole =
  | "cluster IP"
  | "external IP"
  | "loadbalancer IP"
  | "node port"
  | "health check node port"
  | "no endpoints"
  | "no local endpoints"
  | "firewall drop";

export type RuleRole =
  EntryRole | "masquerade" | "hairpin masquerade" | "affinity" | "endpoint" | "dnat" | "jump" | "other";

export interface ExplainedRule {
  readonly table: string;
  readonly chain: string;
  readonly ruleNumber: number;
  readonly line: number;
  readonly rule: Rule;
  readonly role: RuleRole;
  readonly servicePortName?: string;
  readonly counters?: Counters;
  /** For SVC/SVL → SEP rules: the share of new connections this rule takes. */
  readonly probability?: number;
  readonly dnat?: string;
}

export type ChainKind = "SVC" | "SVL" | "EXT" | "FW" | "SEP" | "other";

export interface ExplainedChain {
  readonly table: string;
  readonly name: string;
  readonly kind: ChainKind;
  readonly rules: readonly ExplainedRule[];
}

export interface ExplainedEndpoint {
  readonly servicePortName: string;
  /** KUBE-SVC-… or KUBE-SVL-… */
  readonly viaChain: string;
  readonly sepChain: string;
  readonly endpoint: string;
  readonly probability: number;
  readonly counters?: Counters;
}

export interface ServiceExplanation {
  readonly service: string;
  readonly port?: string;
  readonly servicePortNames: readonly string[];
  /** Capture rules in nat KUBE-SERVICES / KUBE-NODEPORTS, in chain order. */
  readonly entries: readonly ExplainedRule[];
  /** filter-table rules for the Service (REJECT/DROP/ACCEPT/firewall). */
  readonly filter: readonly ExplainedRule[];
  /** The nat chains reached from the entries, in first-reached order. */
  readonly chains: readonly ExplainedChain[];
  readonly endpoints: readonly ExplainedEndpoint[];
  /** nat KUBE-MARK-MASQ and KUBE-POSTROUTING: how the mark set above becomes a MASQUERADE. */
  readonly masquerade: readonly ExplainedRule[];
}

export interface ServiceRef {
  readonly namespace: string;
  readonly name: string;
  /** Service port name; omitted = every port. */
  readonly port?: string;
}

function commentOf(rule: Rule): string | undefined {
  for (const m of rule.matches) if (m.kind === "comment") return m.text;
  return undefined;
}

/** `ns/svc:port …` → `ns/svc:port` (upstream's sortIPTablesRules service-name rule, keeping the port). */
function servicePortNameOf(comment: string): string {
  const space = comment.indexOf(" ");
  return space < 0 ? comment : comment.slice(0, space);
}

function belongs(spn: string, ref: ServiceRef): boolean {
  const svc = `${ref.namespace}/${ref.name}`;
  if (ref.port === undefined) return spn === svc || spn.startsWith(`${svc}:`);
  return spn === `${svc}:${ref.port}` || (ref.port === "" && spn === svc);
}

function entryRole(comment: string): EntryRole {
  if (comment.endsWith(" has no endpoints")) return "no endpoints";
  if (comment.endsWith(" has no local endpoints")) return "no local endpoints";
  if (comment.includes(" traffic not accepted by ")) return "firewall drop";
  if (comment.endsWith(" health check node port")) return "health check node port";
  if (comment.endsWith(" cluster IP")) return "cluster IP";
  if (comment.endsWith(" external IP")) return "external IP";
  if (comment.endsWith(" loadbalancer IP")) return "loadbalancer IP";
  return "node port";
}

function chainKind(name: string): ChainKind {
  const prefix = /^KUBE-(SVC|SVL|EXT|FW|SEP)-/.exec(name)?.[1];
  return (prefix as ChainKind | undefined) ?? "other";
}

function explained(rule: Rule, role: RuleRole, extra: Partial<ExplainedRule> = {}): ExplainedRule {
  const comment = commentOf(rule);
  return {
    table: rule.table,
    chain: rule.chain,
    ruleNumber: rule.index,
    line: rule.line,
    rule,
    role,
    ...(comment === undefined ? {} : { servicePortName: servicePortNameOf(comment) }),
    ...(rule.counters === undefined ? {} : { counters: rule.counters }),
    ...extra,
  };
}

const ENTRY_CHAINS: Readonly<Record<string, readonly string[]>> = {
  nat: ["KUBE-SERVICES", "KUBE-NODEPORTS"],
  filter: ["KUBE-SERVICES", "KUBE-EXTERNAL-SERVICES", "KUBE-NODEPORTS", "KUBE-PROXY-FIREWALL"],
};

function explainChain(chain: Chain, table: string): ExplainedRule[] {
  let remaining = 1;
  return chain.rules.map((rule) => {
    const target = targetName(rule);
    if (target === "KUBE-MARK-MASQ")
      return explained(rule, chain.name.startsWith("KUBE-SEP-") ? "hairpin masquerade" : "masquerade");
    if (rule.target?.kind === "dnat") return explained(rule, "dnat", { dnat: rule.target.to });
    if (
      target.startsWith("KUBE-SEP-") &&
      (chain.name.startsWith("KUBE-SVC-") || chain.name.startsWith("KUBE-SVL-"))
    ) {
      if (rule.matches.some((m) => m.kind === "recent")) return explained(rule, "affinity");
      const p = rule.matches.find((m) => m.kind === "probability");
      const share = p === undefined ? remaining : remaining * p.probability;
      remaining -= share;
      return explained(rule, "endpoint", { probability: share });
    }
    return explained(rule, table === "nat" && target.startsWith("KUBE-") ? "jump" : "other");
  });
}

/**
 * The seed document's walk for one Service: capture rules → KUBE-SVC (per-endpoint share from
 * the statistic chain) → KUBE-SEP → DNAT, plus masquerade and filter rules, with counters.
 */
export function explainService(ruleset: Ruleset, ref: ServiceRef): ServiceExplanation {
  const entries: ExplainedRule[] = [];
  const filter: ExplainedRule[] = [];
  const spns = new Set<string>();
  for (const [tableName, chainNames] of Object.entries(ENTRY_CHAINS)) {
    const table = ruleset.tables.get(tableName);
    if (table === undefined) continue;
    for (const chainName of chainNames) {
      for (const rule of table.chains.get(chainName)?.rules ?? []) {
        const comment = commentOf(rule);
        if (comment === undefined) continue;
        const spn = servicePortNameOf(comment);
        if (!belongs(spn, ref)) continue;
        spns.add(spn);
        const role = entryRole(comment);
        (tableName === "nat" ? entries : filter).push(explained(rule, role));
      }
    }
  }
  const nat = ruleset.tables.get("nat");
  const chains: ExplainedChain[] = [];
  const endpoints: ExplainedEndpoint[] = [];
  const seen = new Set<string>();
  const queue = entries.map((e) => targetName(e.rule));
  while (nat !== undefined && queue.length > 0) {
    const name = queue.shift() as string;
    if (seen.has(name) || name === "KUBE-MARK-MASQ" || !name.startsWith("KUBE-")) continue;
    seen.add(name);
    const chain = nat.chains.get(name);
    if (chain === undefined) continue;
    const rules = explainChain(chain, "nat");
    chains.push({ table: "nat", name, kind: chainKind(name), rules });
    for (const r of rules) queue.push(targetName(r.rule));
  }
  const byName = new Map(chains.map((c) => [c.name, c]));
  for (const c of chains) {
    for (const r of c.rules) {
      if (r.role !== "endpoint") continue;
      const sep = targetName(r.rule);
      const dnat = byName.get(sep)?.rules.find((x) => x.role === "dnat");
      endpoints.push({
        servicePortName: r.servicePortName ?? "",
        viaChain: c.name,
        sepChain: sep,
        endpoint: dnat?.dnat ?? "?",
        probability: r.probability ?? 0,
        ...(dnat?.counters === undefined ? {} : { counters: dnat.counters }),
      });
    }
  }
  const service = `${ref.namespace}/${ref.name}`;
  if (entries.length === 0 && filter.length === 0) {
    throw new InputError(
      "explain",
      `no rules for Service ${service}${ref.port === undefined ? "" : ` port ${ref.port}`} in this ruleset`,
    );
  }
  const masquerade = ["KUBE-MARK-MASQ", "KUBE-POSTROUTING"].flatMap((name) =>
    (nat?.chains.get(name)?.rules ?? []).map((rule) => explained(rule, "masquerade")),
  );
  return {
    service,
    ...(ref.port === undefined ? {} : { port: ref.port }),
    masquerade,
    servicePortNames: [...spns].sort(),
    entries,
    filter,
    chains,
    endpoints,
  };
}

function section(
  title: string,
  rules: readonly ExplainedRule[],
  family: Ruleset["family"],
  annotate: (r: ExplainedRule) => string,
): string[] {
  const lines = [title, COLUMN_HEADER];
  for (const r of rules) {
    const note = annotate(r);
    lines.push(formatRuleColumns(r.rule, family) + (note === "" ? "" : `   ← ${note}`));
  }
  return lines;
}

/** Text report in `iptables -vnL --line-numbers` columns, annotated with roles and shares. */
export function formatExplanation(ex: ServiceExplanation, family: Ruleset["family"]): string {
  const lines: string[] = [
    `Service ${ex.service}${ex.port === undefined ? "" : ` port ${ex.port}`} (${ex.servicePortNames.join(", ")})`,
    "",
  ];
  const byChain = new Map<string, ExplainedRule[]>();
  for (const e of ex.entries) byChain.set(`nat ${e.chain}`, [...(byChain.get(`nat ${e.chain}`) ?? []), e]);
  for (const [key, rules] of byChain)
    lines.push(
      ...section(
        `Chain ${key.split(" ")[1]} (nat, rules for this Service only)`,
        rules,
        family,
        (r) => r.role,
      ),
      "",
    );
  for (const c of ex.chains) {
    lines.push(
      ...section(`Chain ${c.name} (nat)`, c.rules, family, (r) => {
        if (r.role === "endpoint") return `${formatPercent(r.probability ?? 0)} of new connections`;
        if (r.role === "dnat") return `endpoint ${r.dnat}`;
        return r.role === "other" || r.role === "jump" ? "" : r.role;
      }),
      "",
    );
  }
  const filterChains = new Map<string, ExplainedRule[]>();
  for (const f of ex.filter) filterChains.set(f.chain, [...(filterChains.get(f.chain) ?? []), f]);
  for (const [name, rules] of filterChains)
    lines.push(
      ...section(`Chain ${name} (filter, rules for this Service only)`, rules, family, (r) => r.role),
      "",
    );
  if (ex.masquerade.length > 0) {
    lines.push(
      ...section(
        "Chains KUBE-MARK-MASQ, KUBE-POSTROUTING (nat, shared by all Services)",
        ex.masquerade,
        family,
        (r) => r.chain,
      ),
      "",
    );
  }
  lines.push("endpoints:");
  if (ex.endpoints.length === 0) lines.push("  (none: new connections are not DNATed)");
  for (const e of ex.endpoints) {
    const counters = e.counters === undefined ? "" : `, ${e.counters.packets} pkts ${e.counters.bytes} bytes`;
    lines.push(
      `  ${e.servicePortName} via ${e.viaChain}: ${e.endpoint} (${e.sepChain}) ${formatPercent(e.probability)}${counters}`,
    );
  }
  return lines.join("\n") + "\n";
}

function ruleJson(r: ExplainedRule): unknown {
  const { rule, ...rest } = r;
  return { ...rest, rule: `-A ${rule.chain} ${rule.text}`, target: targetName(rule) };
}

/** JSON form: rules as their dump text (parsed addresses hold bigints, which JSON cannot carry). */
export function explanationToJson(ex: ServiceExplanation): unknown {
  return {
    ...ex,
    entries: ex.entries.map(ruleJson),
    filter: ex.filter.map(ruleJson),
    chains: ex.chains.map((c) => ({ ...c, rules: c.rules.map(ruleJson) })),
    masquerade: ex.masquerade.map(ruleJson),
  };
}
