/**
 * Test-side normaliser of iptables-restore documents, as upstream's golden tests use it
 * (docs/iptables.md §6.2: `ParseIPTablesDump`, `sortIPTablesRules`, `checkIPTablesRuleJumps`).
 */

export interface DumpRule {
  readonly chain: string;
  readonly raw: string;
}

export interface DumpChain {
  readonly name: string;
  readonly packets: string;
  readonly bytes: string;
  readonly rules: DumpRule[];
  deleted: boolean;
}

export interface DumpTable {
  readonly name: string;
  readonly chains: DumpChain[];
}

export class DumpParseError extends Error {
  readonly code = "KPT_TEST_DUMP_PARSE";
}

const CHAIN_RE = /^:([^ ]*) - \[([0-9]*):([0-9]*)\]$/;
const RULE_RE = /^-A ([^ ]*) (.*)$/;
const DELETE_RE = /^-X (.*)$/;

/** Upstream `ParseIPTablesDump`: tables with declared chains, their rules and deletions. */
export function parseIPTablesDump(data: string): DumpTable[] {
  const tables: DumpTable[] = [];
  let table: DumpTable | null = null;
  const trimmed = data.replace(/^\n+/, "").replace(/\n+$/, "");
  for (const rawLine of trimmed.split("\n")) {
    const line = rawLine.trim();
    if (line === "" || line.startsWith("#")) continue;
    if (table === null) {
      if (!line.startsWith("*")) throw new DumpParseError(`expected table, got ${JSON.stringify(line)}`);
      table = { name: line.slice(1), chains: [] };
      tables.push(table);
      continue;
    }
    if (line === "COMMIT") {
      table = null;
      continue;
    }
    const current: DumpTable = table;
    const findChain = (name: string): DumpChain => {
      const chain = current.chains.find((c) => c.name === name);
      if (chain === undefined) throw new DumpParseError(`chain ${name} used but not declared`);
      return chain;
    };
    let m = CHAIN_RE.exec(line);
    if (m !== null) {
      const name = m[1] ?? "";
      if (current.chains.some((c) => c.name === name)) {
        throw new DumpParseError(`chain ${name} declared twice`);
      }
      current.chains.push({ name, packets: m[2] ?? "0", bytes: m[3] ?? "0", rules: [], deleted: false });
      continue;
    }
    m = RULE_RE.exec(line);
    if (m !== null) {
      const chain = findChain(m[1] ?? "");
      if (chain.deleted) throw new DumpParseError(`rule added to deleted chain ${chain.name}`);
      chain.rules.push({ chain: chain.name, raw: line });
      continue;
    }
    m = DELETE_RE.exec(line);
    if (m !== null) {
      const chain = findChain(m[1] ?? "");
      if (chain.rules.length > 0) throw new DumpParseError(`deleted chain ${chain.name} has rules`);
      chain.deleted = true;
      continue;
    }
    throw new DumpParseError(`unparseable line ${JSON.stringify(line)}`);
  }
  if (table !== null) throw new DumpParseError(`table ${table.name} lacks COMMIT`);
  return tables;
}

const WORD_RE = /(?:^|\s)("[^"]*"|[^"]\S*)/g;

/** The value after `--comment`, quotes trimmed; null when the rule has no comment. */
export function ruleComment(raw: string): string | null {
  const words = [...raw.matchAll(WORD_RE)].map((m) => m[1] ?? "");
  const i = words.indexOf("--comment");
  if (i < 0 || i + 1 >= words.length) return null;
  return (words[i + 1] ?? "").replace(/^"+|"+$/g, "");
}

function serviceNameOf(raw: string): string | null {
  const comment = ruleComment(raw);
  if (comment === null) return null;
  const cut = comment.search(/[ :]/);
  return cut < 0 ? comment : comment.slice(0, cut);
}

function chainRank(name: string): [number, string] {
  if (name === "KUBE-NODEPORTS") return [0, ""];
  if (name === "KUBE-SERVICES") return [1, ""];
  if (name.startsWith("KUBE-")) return [2, name];
  return [3, name];
}

function byteCompare(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

function sortRulesByService(rules: DumpRule[], lastRuleMarker: boolean): DumpRule[] {
  const isLast = (r: DumpRule): boolean =>
    lastRuleMarker && (ruleComment(r.raw) ?? "").includes("must be the last rule");
  return [...rules].sort((a, b) => {
    const aLast = isLast(a);
    const bLast = isLast(b);
    if (aLast || bLast) return aLast === bLast ? 0 : aLast ? 1 : -1;
    const an = serviceNameOf(a.raw);
    const bn = serviceNameOf(b.raw);
    if (an === null || bn === null) return 0;
    return byteCompare(an, bn);
  });
}

/** Upstream `sortIPTablesRules`: the canonical form golden files are stored in. */
export function sortIPTablesRules(data: string): string {
  const tables = parseIPTablesDump(data.replace(/^[ \t\n]+/, ""));
  tables.sort((a, b) => byteCompare(a.name, b.name));
  let out = "";
  for (const table of tables) {
    const chains = [...table.chains].sort((a, b) => {
      const [ar, an] = chainRank(a.name);
      const [br, bn] = chainRank(b.name);
      return ar !== br ? ar - br : byteCompare(an, bn);
    });
    out += `*${table.name}\n`;
    for (const c of chains) out += `:${c.name} - [${c.packets}:${c.bytes}]\n`;
    for (const c of chains) {
      let rules = c.rules;
      const key = `${table.name}/${c.name}`;
      if (key === "filter/KUBE-NODEPORTS" || key === "nat/KUBE-NODEPORTS" || key === "filter/KUBE-SERVICES") {
        rules = sortRulesByService(rules, false);
      } else if (key === "nat/KUBE-SERVICES") {
        rules = sortRulesByService(rules, true);
      }
      for (const r of rules) out += `${r.raw}\n`;
    }
    for (const c of chains) if (c.deleted) out += `-X ${c.name}\n`;
    out += "COMMIT\n";
  }
  return out;
}

const BUILTIN_TARGETS = new Set(["ACCEPT", "REJECT", "DROP", "MARK", "RETURN", "DNAT", "SNAT", "MASQUERADE"]);
const MAY_BE_EMPTY = new Set(["KUBE-NODEPORTS"]);
const MAY_BE_UNUSED = new Set([
  "KUBE-SERVICES",
  "KUBE-EXTERNAL-SERVICES",
  "KUBE-NODEPORTS",
  "KUBE-POSTROUTING",
  "KUBE-FORWARD",
  "KUBE-MARK-MASQ",
  "KUBE-PROXY-FIREWALL",
  "KUBE-FIREWALL",
]);

function jumpTarget(raw: string): string | null {
  const words = [...raw.matchAll(WORD_RE)].map((m) => m[1] ?? "");
  const i = words.indexOf("-j");
  return i < 0 ? null : (words[i + 1] ?? null);
}

/** Upstream `checkIPTablesRuleJumps`: returns the problems found (empty = consistent). */
export function checkIPTablesRuleJumps(data: string): string[] {
  const problems: string[] = [];
  for (const table of parseIPTablesDump(data)) {
    const created = new Set(table.chains.filter((c) => !c.deleted).map((c) => c.name));
    const filled = new Set(table.chains.filter((c) => c.rules.length > 0).map((c) => c.name));
    const jumped = new Set<string>();
    for (const c of table.chains) {
      for (const r of c.rules) {
        const t = jumpTarget(r.raw);
        if (t !== null && !BUILTIN_TARGETS.has(t)) jumped.add(t);
      }
    }
    const sorted = (s: Iterable<string>): string => [...s].sort().join(", ");
    const missing = [...new Set([...jumped, ...filled])].filter((c) => !created.has(c));
    if (missing.length > 0) {
      problems.push(`${table.name}: chains used but were not created: ${sorted(missing)}`);
    }
    const empty = [...jumped].filter((c) => !filled.has(c) && !MAY_BE_EMPTY.has(c));
    if (empty.length > 0) {
      problems.push(`${table.name}: chains jumped to but have no rules: ${sorted(empty)}`);
    }
    const unused = [...created].filter((c) => !jumped.has(c) && !MAY_BE_UNUSED.has(c));
    if (unused.length > 0) {
      problems.push(`${table.name}: chains created but not used: ${sorted(unused)}`);
    }
  }
  return problems;
}
