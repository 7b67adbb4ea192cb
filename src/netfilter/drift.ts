/**
 * Drift of iptables rulesets, for the modes that write iptables (iptables mode, ipvs mode's
 * chains): the kernel's `iptables-save` against the rules the mode would leave now. Rules are
 * compared by meaning, not text: the kernel prints what it was given in its own order and
 * spelling (`-d 10.0.0.1/32 -p tcp -m comment … -m tcp`, `--set-xmark` for `--or-mark`,
 * 11-digit probabilities), so both sides go through the same parser and each rule becomes a
 * canonical key of its matches and target.
 *
 * Ours are the chains of the intended ruleset and any stale chain the mode names
 * (`staleChain`); in the built-in chains, ours are the intended rules (the jump rules the
 * daemon ensures) and any other rule jumping to one of our chains. Everything else is foreign:
 * reported, never drift. Pure.
 */
import type { ProxyMode } from "../config/types.ts";
import { formatCIDR } from "../ip.ts";
import type { DriftReport, ForeignObject, ObjectDrift, ServiceDrift } from "../inspect/drift.ts";
import { objectDifferences } from "../inspect/drift.ts";
import type { Chain, Match, Rule, Ruleset, Target } from "./model.ts";

function matchKey(m: Match): string {
  const not = "negated" in m && m.negated ? "!" : "";
  switch (m.kind) {
    case "source":
    case "destination":
      return `${not}${m.kind}=${formatCIDR(m.cidr)}`;
    case "sourcePort":
    case "destinationPort":
      return `${not}${m.kind}=${m.ranges.map(([a, b]) => (a === b ? `${a}` : `${a}:${b}`)).join(",")}`;
    case "protocol":
      return `${not}protocol=${m.protocol}`;
    case "inInterface":
    case "outInterface":
      return `${not}${m.kind}=${m.name}`;
    case "addrtype":
      return `${not}addrtype-${m.side}=${m.types.join(",")}`;
    case "comment":
      return `comment=${m.text}`;
    case "mark":
      return `${not}mark=${m.value}/${m.mask}`;
    case "ctstate":
      return `${not}ctstate=${[...m.states].sort().join(",")}`;
    case "probability":
      return `probability=${m.probability}`;
    case "recent":
      return `${not}recent=${m.command},${m.name},${m.seconds ?? ""}`;
    case "accounting":
      return `accounting=${m.module}`;
    case "unknown":
      return `${m.module}:${m.text.replace(/\s+/g, " ").trim()}`;
    case "set":
    case "ipvs":
    case "physdev":
      return m.text.replace(/\s+/g, " ").trim();
  }
}

function targetKey(t: Target | undefined): string {
  if (t === undefined) return "";
  switch (t.kind) {
    case "verdict":
      return t.verdict;
    case "return":
      return "RETURN";
    case "jump":
    case "goto":
      return `${t.kind}:${t.chain}`;
    case "dnat":
      return `DNAT:${t.to}`;
    case "snat":
      return `SNAT:${t.to}`;
    case "masquerade":
      return `MASQUERADE:${/--random-fully/.test(t.text) ? "random-fully" : ""}`;
    case "mark":
      return `MARK:${t.value}/${t.mask}`;
    case "continue":
    case "unknown":
      return `${t.name}:${t.text.replace(/\s+/g, " ").trim()}`;
  }
}

/** The rule's meaning as a string: two spellings of one rule give the same key. */
export function ruleKey(rule: Rule): string {
  return `${rule.matches.map(matchKey).sort().join(" ")} -> ${targetKey(rule.target)}`;
}

const ruleText = (r: Rule): string => `-A ${r.chain} ${r.text}`;

/** `ns/name` of a rule's `--comment "ns/name:port …"`; null when the comment names no Service. */
function serviceOf(rule: Rule): string | null {
  const comment = rule.matches.find((m) => m.kind === "comment");
  if (comment?.kind !== "comment") return null;
  const m = /^([a-z0-9][-a-z0-9]*)\/([a-z0-9][-a-z0-9.]*?)(?::[^\s]*)?(?:\s|$)/.exec(comment.text);
  return m === null ? null : `${m[1]}/${m[2]}`;
}

const isJump = (r: Rule, chains: ReadonlySet<string>): boolean =>
  (r.target?.kind === "jump" || r.target?.kind === "goto") && chains.has(r.target.chain);

interface Pending {
  missing: Rule[];
  extra: Rule[];
  reordered: boolean;
  change: ObjectDrift["change"];
}

/** Multiset difference of two rule lists by key. */
export function ruleDiff(want: readonly Rule[], have: readonly Rule[]): { missing: Rule[]; extra: Rule[] } {
  const left = new Map<string, number>();
  for (const r of have) left.set(ruleKey(r), (left.get(ruleKey(r)) ?? 0) + 1);
  const missing: Rule[] = [];
  for (const r of want) {
    const k = ruleKey(r);
    const n = left.get(k) ?? 0;
    if (n > 0) left.set(k, n - 1);
    else missing.push(r);
  }
  const extra: Rule[] = [];
  for (const r of have) {
    const k = ruleKey(r);
    const n = left.get(k) ?? 0;
    if (n > 0) {
      left.set(k, n - 1);
      extra.push(r);
    }
  }
  return { missing, extra };
}

export interface CompareOptions {
  readonly mode: ProxyMode;
  /** A kernel chain the intended ruleset lacks that is still ours (stale, to delete). */
  readonly staleChain: (name: string) => boolean;
  /** A chain left out of the comparison altogether (someone else watches it). */
  readonly ignoreChain?: (name: string) => boolean;
}

export function compareRulesets(intended: Ruleset, kernel: Ruleset, options: CompareOptions): DriftReport {
  const family = intended.family;
  const { staleChain } = options;
  // per Service (null = node level) → per "table chain" → pending drift
  const drift = new Map<string | null, Map<string, { table: string; chain: string; d: Pending }>>();
  const foreign: ForeignObject[] = [];
  const add = (service: string | null, table: string, chain: string, d: Pending) => {
    let byChain = drift.get(service);
    if (byChain === undefined) drift.set(service, (byChain = new Map()));
    const key = `${table} ${chain}`;
    const entry = byChain.get(key);
    if (entry === undefined) byChain.set(key, { table, chain, d });
    else {
      entry.d.missing.push(...d.missing);
      entry.d.extra.push(...d.extra);
      entry.d.reordered ||= d.reordered;
    }
  };
  /** Splits one chain's rule differences by the Service each rule belongs to. */
  const addRules = (table: string, chain: Chain, missing: Rule[], extra: Rule[], owner: string | null) => {
    const groups = new Map<string | null, { missing: Rule[]; extra: Rule[] }>();
    const put = (r: Rule, side: "missing" | "extra") => {
      const s = owner ?? serviceOf(r);
      let g = groups.get(s);
      if (g === undefined) groups.set(s, (g = { missing: [], extra: [] }));
      g[side].push(r);
    };
    for (const r of missing) put(r, "missing");
    for (const r of extra) put(r, "extra");
    for (const [s, g] of groups) add(s, table, chain.name, { ...g, reordered: false, change: "changed" });
  };
  const tables = new Set([...intended.tables.keys(), ...kernel.tables.keys()]);
  for (const tableName of tables) {
    const want = intended.tables.get(tableName)?.chains ?? new Map<string, Chain>();
    const have = kernel.tables.get(tableName)?.chains ?? new Map<string, Chain>();
    const ours = new Set<string>();
    for (const [name, chain] of want) if (chain.hook === undefined) ours.add(name);
    for (const name of have.keys()) if (staleChain(name)) ours.add(name);
    for (const name of new Set([...want.keys(), ...have.keys()])) {
      if (options.ignoreChain?.(name) === true) continue;
      const w = want.get(name);
      const h = have.get(name);
      const builtin = (w ?? h)?.hook !== undefined;
      if (builtin) {
        // Built-in chains are shared: compare only our jump rules, the rest is foreign.
        const mine = w?.rules ?? [];
        const keys = new Set(mine.map(ruleKey));
        const kernelMine = (h?.rules ?? []).filter((r) => keys.has(ruleKey(r)) || isJump(r, ours));
        for (const r of h?.rules ?? [])
          if (!keys.has(ruleKey(r)) && !isJump(r, ours))
            foreign.push({ kind: "rule", table: tableName, name, rule: ruleText(r) });
        const { missing, extra } = ruleDiff(mine, kernelMine);
        if (h === undefined && w !== undefined && mine.length > 0) {
          addRules(tableName, w, missing, [], null);
          continue;
        }
        if (missing.length + extra.length > 0) addRules(tableName, (w ?? h)!, missing, extra, null);
        continue;
      }
      if (!ours.has(name)) {
        if (h !== undefined) foreign.push({ kind: "chain", table: tableName, name });
        continue;
      }
      const owner = serviceChainOwner(w ?? h!, staleChain);
      if (w === undefined) {
        add(owner, tableName, name, { missing: [], extra: [...h!.rules], reordered: false, change: "extra" });
        continue;
      }
      if (h === undefined) {
        add(owner, tableName, name, {
          missing: [...w.rules],
          extra: [],
          reordered: false,
          change: "missing",
        });
        continue;
      }
      const { missing, extra } = ruleDiff(w.rules, h.rules);
      if (missing.length + extra.length > 0) {
        addRules(tableName, w, missing, extra, staleChain(name) ? owner : null);
        continue;
      }
      const sameOrder = w.rules.every((r, i) => ruleKey(r) === ruleKey(h.rules[i]!));
      if (!sameOrder)
        add(owner, tableName, name, { missing: [], extra: [], reordered: true, change: "changed" });
    }
  }
  const services: ServiceDrift[] = [...drift]
    .sort(([a], [b]) => (a === null ? -1 : b === null ? 1 : a.localeCompare(b)))
    .map(([service, byChain]) => ({
      service,
      objects: [...byChain.values()].map(({ table, chain, d }) => ({
        kind: "chain",
        table,
        name: chain,
        change: d.change,
        missing: d.missing.map(ruleText),
        extra: d.extra.map(ruleText),
        reordered: d.reordered,
      })),
    }));
  const differences = services.reduce(
    (n, s) => n + s.objects.reduce((m, o) => m + objectDifferences(o), 0),
    0,
  );
  return { mode: options.mode, family, inSync: differences === 0, differences, services, foreign };
}

/** The Service a per-Service chain belongs to (from its rules' comments); null for node chains. */
function serviceChainOwner(chain: Chain, staleChain: (name: string) => boolean): string | null {
  if (!staleChain(chain.name)) return null;
  for (const r of chain.rules) {
    const s = serviceOf(r);
    if (s !== null) return s;
  }
  return null;
}
