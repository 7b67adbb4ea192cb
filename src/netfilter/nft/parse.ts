/**
 * Reads nftables dumps into the model of ./model.ts: the `nft -f` commands our renderer and
 * upstream's knftables fake print (`add chain ip kube-proxy …`), the block syntax of
 * `nft list ruleset` / `nft list table`, and `nft -j` JSON. Every table is read; which of them
 * is ours is the caller's business (foreign tables are reported, never traced).
 */
import type {
  Counters,
  NftAddressValue,
  NftBaseHook,
  NftChain,
  NftElement,
  NftRule,
  NftRuleset,
  NftSet,
  NftStatement,
  NftTable,
  NftTableFamily,
  NftVerdict,
} from "./model.ts";
import { statementText as statementTextFor } from "./model.ts";

/** A dump that is not nftables text or JSON we can read; names the line or object. */
export class NftDumpParseError extends Error {
  constructor(
    message: string,
    readonly line?: number,
  ) {
    super(line === undefined ? message : `line ${line}: ${message}`);
  }
}

const FAMILIES: readonly NftTableFamily[] = ["ip", "ip6", "inet", "arp", "bridge", "netdev"];
const isFamily = (s: string | undefined): s is NftTableFamily =>
  s !== undefined && (FAMILIES as readonly string[]).includes(s);

/** nft's named priorities (for the ip, ip6 and inet families). */
const PRIORITY_NAMES: Readonly<Record<string, number>> = {
  raw: -300,
  mangle: -150,
  dstnat: -100,
  filter: 0,
  security: 50,
  srcnat: 100,
};

export function parsePriority(text: string): number | null {
  const m = /^\s*(-?\d+|[a-z]+)\s*(?:([+-])\s*(\d+))?\s*$/.exec(text);
  if (m === null) return null;
  const base = /^-?\d+$/.test(m[1]!) ? Number(m[1]) : PRIORITY_NAMES[m[1]!];
  if (base === undefined) return null;
  const offset = m[2] === undefined ? 0 : (m[2] === "-" ? -1 : 1) * Number(m[3]);
  return base + offset;
}

// --- tokens ------------------------------------------------------------------------------------

/** Words, quoted strings (kept with their quotes) and `{ … }` groups (kept whole, braces included). */
export function tokenize(text: string): string[] {
  const out: string[] = [];
  let i = 0;
  while (i < text.length) {
    const c = text[i]!;
    if (/\s/.test(c)) {
      i++;
      continue;
    }
    if (c === '"') {
      const end = text.indexOf('"', i + 1);
      const stop = end < 0 ? text.length : end + 1;
      out.push(text.slice(i, stop));
      i = stop;
      continue;
    }
    if (c === "{") {
      let depth = 0;
      let j = i;
      let quoted = false;
      for (; j < text.length; j++) {
        const d = text[j]!;
        if (d === '"') quoted = !quoted;
        else if (!quoted && d === "{") depth++;
        else if (!quoted && d === "}" && --depth === 0) break;
      }
      out.push(text.slice(i, j + 1));
      i = j + 1;
      continue;
    }
    let j = i;
    while (j < text.length && !/\s/.test(text[j]!) && text[j] !== "{" && text[j] !== '"') j++;
    out.push(text.slice(i, j));
    i = j;
  }
  return out;
}

const unquote = (t: string): string => (t.startsWith('"') && t.endsWith('"') ? t.slice(1, -1) : t);
const groupBody = (t: string): string => t.slice(1, -1).trim();

/** Splits a group's body on top-level commas (outside quotes). */
function splitTopLevel(body: string, sep: string): string[] {
  const parts: string[] = [];
  let quoted = false;
  let depth = 0;
  let start = 0;
  for (let i = 0; i < body.length; i++) {
    const c = body[i];
    if (c === '"') quoted = !quoted;
    else if (!quoted && c === "{") depth++;
    else if (!quoted && c === "}") depth--;
    else if (!quoted && depth === 0 && c === sep) {
      parts.push(body.slice(start, i));
      start = i + 1;
    }
  }
  parts.push(body.slice(start));
  return parts.map((p) => p.trim()).filter((p) => p !== "");
}

function parseNumber(text: string): number | null {
  if (/^0x[0-9a-f]+$/i.test(text)) return parseInt(text, 16);
  if (/^\d+$/.test(text)) return Number(text);
  return null;
}

function verdictFromTokens(tokens: readonly string[]): NftVerdict | null {
  const [w, target] = tokens;
  if ((w === "jump" || w === "goto") && target !== undefined) return { kind: w, target };
  if (w === "accept" || w === "drop" || w === "return" || w === "reject" || w === "continue")
    return { kind: w };
  return null;
}

// --- rules -------------------------------------------------------------------------------------

interface RuleParts {
  statements: NftStatement[];
  comment?: string;
  counters?: Counters;
}

/** Decodes one rule's text; what it cannot read becomes one `unknown` statement with the rest. */
export function parseRuleText(text: string): RuleParts {
  const t = tokenize(text);
  const statements: NftStatement[] = [];
  let comment: string | undefined;
  let counters: Counters | undefined;
  let i = 0;
  const unknown = (): void => {
    statements.push({ kind: "unknown", text: t.slice(i).join(" ") });
    i = t.length;
  };
  const negation = (): boolean => {
    if (t[i] === "!=") {
      i++;
      return true;
    }
    if (t[i] === "==") i++;
    return false;
  };
  while (i < t.length) {
    const w = t[i]!;
    const next = t[i + 1];
    if ((w === "ip" || w === "ip6") && (next === "daddr" || next === "saddr")) {
      if (next === "daddr" && t[i + 2] === "." && t[i + 3] === "meta" && t[i + 4] === "l4proto") {
        if (t[i + 5] === "." && t[i + 6] === "th" && t[i + 7] === "dport" && t[i + 8] === "vmap") {
          const map = t[i + 9];
          if (map?.startsWith("@") === true) {
            statements.push({ kind: "vmapLookup", key: "daddr.l4proto.dport", map: map.slice(1) });
            i += 10;
            continue;
          }
        }
        unknown();
        continue;
      }
      i += 2;
      const negate = negation();
      const v = t[i];
      if (v === undefined) {
        i--;
        unknown();
        continue;
      }
      i++;
      const value: NftAddressValue = v.startsWith("@")
        ? { kind: "set", name: v.slice(1) }
        : v.startsWith("{")
          ? { kind: "anonymous", items: splitTopLevel(groupBody(v), ",") }
          : { kind: "address", text: v };
      statements.push({ kind: "address", field: next, negate, value });
      continue;
    }
    if (w === "meta" && next === "l4proto") {
      if (t[i + 2] === "." && t[i + 3] === "th" && t[i + 4] === "dport" && t[i + 5] === "vmap") {
        const map = t[i + 6];
        if (map?.startsWith("@") === true) {
          statements.push({ kind: "vmapLookup", key: "l4proto.dport", map: map.slice(1) });
          i += 7;
          continue;
        }
        unknown();
        continue;
      }
      i += 2;
      if (t[i] === "==") i++;
      const proto = t[i];
      if (proto === undefined || !/^[a-z]+$/.test(proto)) {
        unknown();
        continue;
      }
      statements.push({ kind: "l4proto", protocol: proto });
      i++;
      continue;
    }
    // `mark and M == V` (ours) / `meta mark & M == V` (nft's listing).
    if (w === "mark" || (w === "meta" && next === "mark")) {
      const j = w === "mark" ? i + 1 : i + 2;
      if (t[j] === "and" || t[j] === "&") {
        const mask = parseNumber(t[j + 1] ?? "");
        const op = t[j + 2];
        const value = parseNumber(t[j + 3] ?? "");
        if (mask !== null && value !== null && (op === "==" || op === "!=")) {
          statements.push({ kind: "markTest", mask, value, negate: op === "!=" });
          i = j + 4;
          continue;
        }
      }
      if (t[j] === "set") {
        // `mark set mark or M` / `meta mark set meta mark | M`
        const k = t[j + 1] === "mark" ? j + 2 : t[j + 1] === "meta" && t[j + 2] === "mark" ? j + 3 : -1;
        const op = k < 0 ? undefined : t[k];
        const value = k < 0 ? null : parseNumber(t[k + 1] ?? "");
        const kind = op === "or" || op === "|" ? "or" : op === "xor" || op === "^" ? "xor" : null;
        if (kind !== null && value !== null) {
          statements.push({ kind: "markSet", op: kind, value });
          i = k + 2;
          continue;
        }
      }
      unknown();
      continue;
    }
    if (w === "ct" && next === "state") {
      i += 2;
      if (t[i] === "==" || t[i] === "in") i++;
      const states = (t[i] ?? "").split(",").filter((s) => s !== "");
      if (states.length === 0 || !states.every((s) => /^[a-z]+$/.test(s))) {
        i -= 2;
        unknown();
        continue;
      }
      statements.push({ kind: "ctState", states });
      i++;
      continue;
    }
    if (w === "fib" && (next === "saddr" || next === "daddr") && t[i + 2] === "type") {
      i += 3;
      const negate = negation();
      if (t[i] !== "local") {
        unknown();
        continue;
      }
      statements.push({ kind: "fibLocal", field: next, negate });
      i++;
      continue;
    }
    if ((w === "tcp" || w === "udp" || w === "sctp") && next === "dport") {
      const port = parseNumber(t[i + 2] ?? "");
      if (port === null) {
        unknown();
        continue;
      }
      statements.push({ kind: "port", protocol: w, port });
      i += 3;
      continue;
    }
    if (w === "iif" || w === "iifname") {
      i++;
      const negate = negation();
      const name = t[i];
      if (name === undefined) {
        unknown();
        continue;
      }
      statements.push({ kind: "interface", match: w, negate, name: unquote(name) });
      i++;
      continue;
    }
    if (w === "numgen" && next === "random" && t[i + 2] === "mod") {
      const mod = parseNumber(t[i + 3] ?? "");
      let j = i + 4;
      if (t[j] === "offset") j += 2;
      const group = t[j + 1];
      if (mod === null || t[j] !== "vmap" || group?.startsWith("{") !== true) {
        unknown();
        continue;
      }
      const entries: { index: number; verdict: NftVerdict }[] = [];
      let ok = true;
      for (const part of splitTopLevel(groupBody(group), ",")) {
        const [idx, colon, ...rest] = tokenize(part);
        const index = parseNumber(idx ?? "");
        const verdict = verdictFromTokens(rest);
        if (index === null || colon !== ":" || verdict === null) ok = false;
        else entries.push({ index, verdict });
      }
      if (!ok) {
        unknown();
        continue;
      }
      statements.push({ kind: "numgen", mod, entries });
      i = j + 2;
      continue;
    }
    if (w === "masquerade") {
      const fullyRandom = next === "fully-random" || next === "random,fully-random";
      statements.push({ kind: "masquerade", fullyRandom });
      i += fullyRandom ? 2 : 1;
      continue;
    }
    if (w === "dnat") {
      let j = i + 1;
      if (t[j] === "ip" || t[j] === "ip6") j++;
      const target = t[j + 1];
      if (t[j] !== "to" || target === undefined) {
        unknown();
        continue;
      }
      const m = /^\[([^\]]+)\]:(\d+)$/.exec(target) ?? /^([^:]+):(\d+)$/.exec(target);
      statements.push(
        m === null
          ? { kind: "dnat", address: target, port: null }
          : { kind: "dnat", address: m[1]!, port: Number(m[2]) },
      );
      i = j + 2;
      continue;
    }
    if (w === "update" && next?.startsWith("@") === true && t[i + 2]?.startsWith("{") === true) {
      statements.push({ kind: "updateSet", set: next.slice(1) });
      i += 3;
      continue;
    }
    if (w === "counter") {
      const packets = t[i + 1] === "packets" ? parseNumber(t[i + 2] ?? "") : null;
      const bytes = t[i + 3] === "bytes" ? parseNumber(t[i + 4] ?? "") : null;
      if (packets !== null && bytes !== null) {
        counters = { packets, bytes };
        statements.push({ kind: "counter", counters });
        i += 5;
      } else {
        counters = { packets: 0, bytes: 0 };
        statements.push({ kind: "counter", counters });
        i += 1;
      }
      continue;
    }
    if (w === "comment" && next !== undefined) {
      comment = unquote(next);
      i += 2;
      continue;
    }
    if (w === "reject") {
      // `reject` or nft's `reject with icmp type port-unreachable`: the same verdict to us.
      statements.push({ kind: "verdict", verdict: { kind: "reject" } });
      i++;
      if (t[i] === "with") i = Math.min(t.length, i + 4);
      continue;
    }
    const verdict = verdictFromTokens([w, next ?? ""]);
    if (verdict !== null) {
      statements.push({ kind: "verdict", verdict });
      i += verdict.kind === "jump" || verdict.kind === "goto" ? 2 : 1;
      continue;
    }
    unknown();
  }
  return {
    statements,
    ...(comment === undefined ? {} : { comment }),
    ...(counters === undefined ? {} : { counters }),
  };
}

/** One element of a set or map: `KEY [. KEY…] [comment "…"] [expires …] [: VERDICT]`. */
export function parseElementText(text: string): NftElement {
  const t = tokenize(text);
  const key: string[] = [];
  let comment: string | undefined;
  let value: NftVerdict | undefined;
  let i = 0;
  while (i < t.length) {
    const w = t[i]!;
    if (w === ":") {
      value = verdictFromTokens(t.slice(i + 1)) ?? undefined;
      if (value === undefined)
        throw new NftDumpParseError(`unreadable element value in ${JSON.stringify(text)}`);
      break;
    }
    if (w === "comment") {
      comment = unquote(t[i + 1] ?? "");
      i += 2;
    } else if (w === "expires" || w === "timeout") {
      i += 2;
    } else if (w === ".") {
      i++;
    } else {
      key.push(w);
      i++;
    }
  }
  return { key, ...(value === undefined ? {} : { value }), ...(comment === undefined ? {} : { comment }) };
}

// --- text dumps -------------------------------------------------------------------------------

interface MutableTable {
  family: NftTableFamily;
  name: string;
  comment?: string;
  chains: Map<string, { name: string; base?: NftBaseHook; comment?: string; rules: NftRule[] }>;
  sets: Map<string, { -readonly [K in keyof NftSet]: NftSet[K] } & { elements: NftElement[] }>;
}

class Builder {
  readonly tables = new Map<string, MutableTable>();

  table(family: NftTableFamily, name: string): MutableTable {
    const key = `${family} ${name}`;
    let t = this.tables.get(key);
    if (t === undefined) {
      t = { family, name, chains: new Map(), sets: new Map() };
      this.tables.set(key, t);
    }
    return t;
  }

  chain(t: MutableTable, name: string) {
    let c = t.chains.get(name);
    if (c === undefined) {
      c = { name, rules: [] };
      t.chains.set(name, c);
    }
    return c;
  }

  set(t: MutableTable, kind: "set" | "map", name: string) {
    let s = t.sets.get(name);
    if (s === undefined) {
      s = { kind, name, type: [], flags: [], elements: [] };
      t.sets.set(name, s);
    }
    return s;
  }

  addRule(t: MutableTable, chain: string, text: string, handle?: number): void {
    const c = this.chain(t, chain);
    const parts = parseRuleText(text);
    c.rules.push({
      chain,
      index: c.rules.length + 1,
      text,
      ...parts,
      ...(handle === undefined ? {} : { handle }),
    });
  }

  build(): NftRuleset {
    return {
      tables: [...this.tables.values()].map((t): NftTable => ({
        family: t.family,
        name: t.name,
        ...(t.comment === undefined ? {} : { comment: t.comment }),
        chains: new Map([...t.chains].map(([k, c]) => [k, c as NftChain])),
        sets: new Map([...t.sets].map(([k, s]) => [k, s as NftSet])),
      })),
    };
  }
}

/** Reads `type X hook Y priority Z ; policy P ;` and `comment "…"` clauses of a chain. */
function chainProperties(text: string): { base?: NftBaseHook; comment?: string } {
  const out: { base?: NftBaseHook; comment?: string } = {};
  for (const clause of splitTopLevel(text, ";")) {
    const m = /^type (filter|nat|route) hook (\S+)(?: device \S+)? priority (.+)$/.exec(clause);
    if (m !== null) {
      const priority = parsePriority(m[3]!);
      if (priority === null) throw new NftDumpParseError(`unreadable chain priority ${JSON.stringify(m[3])}`);
      out.base = { type: m[1] as NftBaseHook["type"], hook: m[2]!, priority, policy: "accept" };
      continue;
    }
    const p = /^policy (accept|drop)$/.exec(clause);
    if (p !== null && out.base !== undefined) {
      out.base = { ...out.base, policy: p[1] as "accept" | "drop" };
      continue;
    }
    const c = /^comment (".*")$/.exec(clause);
    if (c !== null) out.comment = unquote(c[1]!);
  }
  return out;
}

/** Applies the `type`, `flags`, `timeout`, `comment` and `elements = { … }` clauses of a set. */
function setProperties(s: MutableTable["sets"] extends Map<string, infer V> ? V : never, text: string): void {
  for (const clause of splitTopLevel(text, ";")) {
    const type = /^typeof (.+)$|^type (.+)$/.exec(clause);
    if (type !== null) {
      const body = (type[2] ?? type[1] ?? "").split(":")[0]!;
      s.type = body.split(" . ").map((x) => x.trim());
      continue;
    }
    const flags = /^flags (.+)$/.exec(clause);
    if (flags !== null) {
      s.flags = flags[1]!.split(",").map((f) => f.trim());
      continue;
    }
    const timeout = /^timeout (\S+)$/.exec(clause);
    if (timeout !== null) {
      s.timeoutSeconds = durationSeconds(timeout[1]!);
      continue;
    }
    const comment = /^comment (".*")$/.exec(clause);
    if (comment !== null) {
      s.comment = unquote(comment[1]!);
      continue;
    }
    const elements = /^elements = (\{[\s\S]*\})$/.exec(clause);
    if (elements !== null) {
      for (const e of splitTopLevel(groupBody(elements[1]!), ",")) s.elements.push(parseElementText(e));
    }
  }
}

/** `10800s`, `3h`, `2h59m58s`, `1d`. */
export function durationSeconds(text: string): number {
  let total = 0;
  for (const m of text.matchAll(/(\d+)(d|h|ms|m|s)/g)) {
    const n = Number(m[1]);
    total +=
      m[2] === "d" ? n * 86400 : m[2] === "h" ? n * 3600 : m[2] === "m" ? n * 60 : m[2] === "s" ? n : 0;
  }
  return total;
}

const ADD_LINE = /^(?:add|create) (table|chain|set|map|rule|element) (\S+) (\S+)(?: (.*))?$/;

/** `add …` command lines (our `nft -f` payloads, upstream's knftables dumps). */
function applyCommand(b: Builder, line: string, lineNo: number): void {
  const m = ADD_LINE.exec(line);
  if (m === null) {
    const flush = /^(flush|delete) (table|chain|set|map) (\S+) (\S+)(?: (\S+))?$/.exec(line);
    if (flush === null) throw new NftDumpParseError(`not an nft command: ${line}`, lineNo);
    const [, verb, kind, family, tableName, object] = flush;
    if (!isFamily(family)) throw new NftDumpParseError(`unknown family ${family}`, lineNo);
    const t = b.table(family, tableName!);
    if (kind === "table") {
      if (verb === "delete") b.tables.delete(`${family} ${tableName}`);
      else for (const c of t.chains.values()) c.rules = [];
    } else if (kind === "chain" && object !== undefined) {
      if (verb === "delete") t.chains.delete(object);
      else b.chain(t, object).rules = [];
    } else if (object !== undefined) {
      if (verb === "delete") t.sets.delete(object);
      else {
        const s = t.sets.get(object);
        if (s !== undefined) s.elements = [];
      }
    }
    return;
  }
  const [, kind, family, tableName, rest = ""] = m;
  if (!isFamily(family)) throw new NftDumpParseError(`unknown family ${family}`, lineNo);
  const t = b.table(family, tableName!);
  const [first = "", ...others] = tokenize(rest);
  const remainder = rest.slice(rest.indexOf(first) + first.length).trim();
  switch (kind) {
    case "table": {
      if (first.startsWith("{")) {
        const c = /comment (".*?")/.exec(groupBody(first));
        if (c !== null) t.comment = unquote(c[1]!);
      }
      return;
    }
    case "chain": {
      const c = b.chain(t, first);
      const props = others[0]?.startsWith("{") === true ? chainProperties(groupBody(others[0])) : {};
      if (props.base !== undefined) c.base = props.base;
      if (props.comment !== undefined) c.comment = props.comment;
      return;
    }
    case "set":
    case "map": {
      const s = b.set(t, kind, first);
      if (others[0]?.startsWith("{") === true) setProperties(s, groupBody(others[0]));
      return;
    }
    case "rule":
      b.addRule(t, first, remainder);
      return;
    case "element": {
      const s = t.sets.get(first) ?? b.set(t, "set", first);
      const group = others[0];
      if (group?.startsWith("{") !== true)
        throw new NftDumpParseError(`element without { … }: ${line}`, lineNo);
      for (const e of splitTopLevel(groupBody(group), ",")) s.elements.push(parseElementText(e));
      return;
    }
  }
}

/** The block syntax of `nft list ruleset`. */
function parseBlocks(b: Builder, lines: readonly string[]): void {
  let table: MutableTable | null = null;
  let chain: ReturnType<Builder["chain"]> | null = null;
  let set: ReturnType<Builder["set"]> | null = null;
  let setText = "";
  let depth = 0;
  lines.forEach((raw, idx) => {
    const lineNo = idx + 1;
    const line = raw.trim();
    if (line === "" || line.startsWith("#")) return;
    if (set !== null) {
      if (line === "}" && depth === 0) {
        setProperties(set, setText);
        set = null;
        setText = "";
        return;
      }
      for (const ch of line) depth += ch === "{" ? 1 : ch === "}" ? -1 : 0;
      // A clause per line; multi-line element lists continue until their braces close.
      setText += depth > 0 || line.endsWith(",") ? `${line} ` : `${line};`;
      return;
    }
    if (table === null) {
      const m = /^table (\S+) (\S+) \{$/.exec(line);
      if (m === null || !isFamily(m[1])) throw new NftDumpParseError(`expected a table, got ${line}`, lineNo);
      table = b.table(m[1], m[2]!);
      return;
    }
    if (chain !== null) {
      if (line === "}") {
        chain = null;
        return;
      }
      if (/^type (filter|nat|route) hook /.test(line)) {
        const props = chainProperties(line);
        if (props.base !== undefined) chain.base = props.base;
        return;
      }
      if (chain.rules.length === 0 && /^comment ".*"$/.test(line)) {
        chain.comment = unquote(line.slice("comment ".length));
        return;
      }
      const handle = /\s# handle (\d+)$/.exec(line);
      const text = handle === null ? line : line.slice(0, handle.index);
      b.addRule(table, chain.name, text, handle === null ? undefined : Number(handle[1]));
      return;
    }
    if (line === "}") {
      table = null;
      return;
    }
    const obj = /^(chain|set|map) (\S+) \{$/.exec(line);
    if (obj !== null) {
      if (obj[1] === "chain") chain = b.chain(table, obj[2]!);
      else set = b.set(table, obj[1] as "set" | "map", obj[2]!);
      return;
    }
    const comment = /^comment (".*")$/.exec(line);
    if (comment !== null) {
      table.comment = unquote(comment[1]!);
      return;
    }
    if (/^flags /.test(line)) return;
    throw new NftDumpParseError(`unexpected line in ${table.family} ${table.name}: ${line}`, lineNo);
  });
  if (table !== null || chain !== null || set !== null)
    throw new NftDumpParseError("the dump ends inside a block");
}

function parseText(text: string): NftRuleset {
  const b = new Builder();
  const lines = text.split("\n");
  const first = lines.find((l) => l.trim() !== "" && !l.trim().startsWith("#"))?.trim() ?? "";
  if (/^table \S+ \S+ \{$/.test(first)) parseBlocks(b, lines);
  else
    lines.forEach((raw, idx) => {
      const line = raw.trim();
      if (line !== "" && !line.startsWith("#")) applyCommand(b, line, idx + 1);
    });
  return b.build();
}

// --- JSON (nft -j) ------------------------------------------------------------------------------

type Json = unknown;
const isObj = (v: Json): v is Record<string, Json> =>
  typeof v === "object" && v !== null && !Array.isArray(v);
const str = (v: Json): string | undefined => (typeof v === "string" ? v : undefined);
const num = (v: Json): number | undefined => (typeof v === "number" ? v : undefined);
/** The single key of a one-key object (`{"payload": {…}}` → ["payload", {…}]). */
function only(v: Json): [string, Json] | null {
  if (!isObj(v)) return null;
  const keys = Object.keys(v);
  return keys.length === 1 ? [keys[0]!, v[keys[0]!]] : null;
}

function jsonVerdict(v: Json): NftVerdict | null {
  const o = only(v);
  if (o === null) return null;
  const [k, body] = o;
  if ((k === "jump" || k === "goto") && isObj(body) && typeof body["target"] === "string")
    return { kind: k, target: body["target"] };
  if (k === "accept" || k === "drop" || k === "return" || k === "continue") return { kind: k };
  if (k === "reject") return { kind: "reject" };
  return null;
}

/** An address, prefix or anonymous-set item as text (`10.0.0.0/8`). */
function jsonAddress(v: Json): string | null {
  if (typeof v === "string") return v;
  const o = only(v);
  if (o !== null && o[0] === "prefix" && isObj(o[1])) {
    const addr = str(o[1]["addr"]);
    const len = num(o[1]["len"]);
    if (addr !== undefined && len !== undefined) return `${addr}/${len}`;
  }
  if (o !== null && o[0] === "range" && Array.isArray(o[1]) && o[1].length === 2)
    return `${String(o[1][0])}-${String(o[1][1])}`;
  return null;
}

function jsonKeyPart(v: Json): string | null {
  if (typeof v === "number") return String(v);
  return jsonAddress(v);
}

function isField(v: Json, protocol: string, field: string): boolean {
  const o = only(v);
  return (
    o !== null &&
    o[0] === "payload" &&
    isObj(o[1]) &&
    o[1]["protocol"] === protocol &&
    o[1]["field"] === field
  );
}
function isMeta(v: Json, key: string): boolean {
  const o = only(v);
  return o !== null && o[0] === "meta" && isObj(o[1]) && o[1]["key"] === key;
}

function jsonMatch(m: Record<string, Json>): NftStatement | null {
  const op = str(m["op"]);
  const left = m["left"];
  const right = m["right"];
  const negate = op === "!=";
  if (op !== "==" && op !== "!=" && op !== "in") return null;
  for (const ipX of ["ip", "ip6"]) {
    for (const field of ["saddr", "daddr"] as const) {
      if (!isField(left, ipX, field)) continue;
      if (typeof right === "string" && right.startsWith("@"))
        return { kind: "address", field, negate, value: { kind: "set", name: right.slice(1) } };
      const o = only(right);
      if (o !== null && o[0] === "set" && Array.isArray(o[1])) {
        const items = o[1].map(jsonAddress);
        if (items.some((x) => x === null)) return null;
        return { kind: "address", field, negate, value: { kind: "anonymous", items: items as string[] } };
      }
      const a = jsonAddress(right);
      return a === null ? null : { kind: "address", field, negate, value: { kind: "address", text: a } };
    }
  }
  const l = only(left);
  if (l !== null && l[0] === "ct" && isObj(l[1]) && l[1]["key"] === "state") {
    const states = Array.isArray(right) ? right.map(str) : [str(right)];
    if (states.some((s) => s === undefined)) return null;
    return { kind: "ctState", states: states as string[] };
  }
  if (l !== null && l[0] === "fib" && isObj(l[1]) && l[1]["result"] === "type" && right === "local") {
    const flags = l[1]["flags"];
    const field = Array.isArray(flags) && flags.length === 1 ? flags[0] : flags;
    if (field === "saddr" || field === "daddr") return { kind: "fibLocal", field, negate };
    return null;
  }
  if (isMeta(left, "l4proto") && typeof right === "string" && !negate)
    return { kind: "l4proto", protocol: right };
  if ((isMeta(left, "iif") || isMeta(left, "iifname")) && typeof right === "string")
    return { kind: "interface", match: isMeta(left, "iif") ? "iif" : "iifname", negate, name: right };
  if (l !== null && l[0] === "&" && Array.isArray(l[1]) && isMeta(l[1][0], "mark")) {
    const mask = num(l[1][1]);
    const value = num(right);
    if (mask !== undefined && value !== undefined) return { kind: "markTest", mask, value, negate };
  }
  for (const proto of ["tcp", "udp", "sctp"]) {
    if (isField(left, proto, "dport") && typeof right === "number" && !negate)
      return { kind: "port", protocol: proto, port: right };
  }
  return null;
}

function jsonStatement(e: Json): NftStatement | { comment: string } | null {
  const o = only(e);
  if (o === null) return null;
  const [k, body] = o;
  if (k === "match" && isObj(body)) return jsonMatch(body);
  if (k === "vmap" && isObj(body)) {
    const key = body["key"];
    const data = body["data"];
    const concat = only(key);
    if (concat !== null && concat[0] === "concat" && Array.isArray(concat[1]) && typeof data === "string") {
      const parts = concat[1];
      const map = data.replace(/^@/, "");
      if (
        parts.length === 3 &&
        (isField(parts[0], "ip", "daddr") || isField(parts[0], "ip6", "daddr")) &&
        isMeta(parts[1], "l4proto") &&
        isField(parts[2], "th", "dport")
      )
        return { kind: "vmapLookup", key: "daddr.l4proto.dport", map };
      if (parts.length === 2 && isMeta(parts[0], "l4proto") && isField(parts[1], "th", "dport"))
        return { kind: "vmapLookup", key: "l4proto.dport", map };
      return null;
    }
    if (concat !== null && concat[0] === "numgen" && isObj(concat[1]) && concat[1]["mode"] === "random") {
      const mod = num(concat[1]["mod"]);
      const set = only(data);
      if (mod === undefined || set === null || set[0] !== "set" || !Array.isArray(set[1])) return null;
      const entries: { index: number; verdict: NftVerdict }[] = [];
      for (const pair of set[1]) {
        if (!Array.isArray(pair) || pair.length !== 2) return null;
        const index = num(pair[0]);
        const verdict = jsonVerdict(pair[1]);
        if (index === undefined || verdict === null) return null;
        entries.push({ index, verdict });
      }
      return { kind: "numgen", mod, entries };
    }
    return null;
  }
  if (k === "mangle" && isObj(body) && isMeta(body["key"], "mark")) {
    const v = only(body["value"]);
    if (v !== null && (v[0] === "|" || v[0] === "^") && Array.isArray(v[1]) && isMeta(v[1][0], "mark")) {
      const value = num(v[1][1]);
      if (value !== undefined) return { kind: "markSet", op: v[0] === "|" ? "or" : "xor", value };
    }
    return null;
  }
  if (k === "masquerade") {
    const flags = isObj(body) ? body["flags"] : undefined;
    const list = Array.isArray(flags) ? flags : [flags];
    return { kind: "masquerade", fullyRandom: list.includes("fully-random") };
  }
  if (k === "dnat" && isObj(body)) {
    const address = str(body["addr"]);
    if (address === undefined) return null;
    return { kind: "dnat", address, port: num(body["port"]) ?? null };
  }
  if (k === "set" && isObj(body) && body["op"] === "update" && typeof body["set"] === "string")
    return { kind: "updateSet", set: body["set"].replace(/^@/, "") };
  if (k === "counter" && isObj(body)) {
    return {
      kind: "counter",
      counters: { packets: num(body["packets"]) ?? 0, bytes: num(body["bytes"]) ?? 0 },
    };
  }
  if (k === "comment" && typeof body === "string") return { comment: body };
  const verdict = jsonVerdict(e);
  return verdict === null ? null : { kind: "verdict", verdict };
}

function jsonElement(e: Json): NftElement | null {
  let keyJson: Json = e;
  let value: NftVerdict | undefined;
  let comment: string | undefined;
  if (Array.isArray(e) && e.length === 2) {
    keyJson = e[0];
    const v = jsonVerdict(e[1]);
    if (v === null) return null;
    value = v;
  }
  const el = only(keyJson);
  if (el !== null && el[0] === "elem" && isObj(el[1])) {
    comment = str(el[1]["comment"]);
    keyJson = el[1]["val"];
  }
  const concat = only(keyJson);
  const parts = concat !== null && concat[0] === "concat" && Array.isArray(concat[1]) ? concat[1] : [keyJson];
  const key = parts.map(jsonKeyPart);
  if (key.some((k) => k === null)) return null;
  return {
    key: key as string[],
    ...(value === undefined ? {} : { value }),
    ...(comment === undefined ? {} : { comment }),
  };
}

function parseJson(text: string): NftRuleset {
  let doc: Json;
  try {
    doc = JSON.parse(text);
  } catch (err) {
    throw new NftDumpParseError(`not JSON: ${(err as Error).message}`);
  }
  return parseNftJson(doc);
}

/** `nft -j` output already through JSON.parse (a reader may drop what it does not need first). */
export function parseNftJson(doc: unknown): NftRuleset {
  if (!isObj(doc) || !Array.isArray(doc["nftables"])) throw new NftDumpParseError('no "nftables" array');
  const b = new Builder();
  const tableOf = (o: Record<string, Json>, what: string): MutableTable => {
    const family = str(o["family"]);
    const table = str(o["table"]) ?? str(o["name"]);
    if (!isFamily(family) || table === undefined)
      throw new NftDumpParseError(`${what} without family or table`);
    return b.table(family, table);
  };
  doc["nftables"].forEach((item, idx) => {
    const o = only(item);
    if (o === null || !isObj(o[1])) return;
    const [kind, body] = o;
    const where = `nftables[${idx}] (${kind})`;
    switch (kind) {
      case "table": {
        const t = tableOf(body, where);
        const comment = str(body["comment"]);
        if (comment !== undefined) t.comment = comment;
        return;
      }
      case "chain": {
        const name = str(body["name"]);
        if (name === undefined) throw new NftDumpParseError(`${where}: chain without a name`);
        const c = b.chain(tableOf(body, where), name);
        const hook = str(body["hook"]);
        const type = str(body["type"]);
        const prio = body["prio"];
        if (hook !== undefined && (type === "filter" || type === "nat" || type === "route")) {
          const priority = typeof prio === "number" ? prio : parsePriority(String(prio));
          if (priority === null) throw new NftDumpParseError(`${where}: unreadable priority`);
          c.base = { type, hook, priority, policy: body["policy"] === "drop" ? "drop" : "accept" };
        }
        const comment = str(body["comment"]);
        if (comment !== undefined) c.comment = comment;
        return;
      }
      case "set":
      case "map": {
        const name = str(body["name"]);
        if (name === undefined) throw new NftDumpParseError(`${where}: ${kind} without a name`);
        const s = b.set(tableOf(body, where), kind, name);
        const type = body["type"];
        s.type = Array.isArray(type) ? type.map(String) : [String(type)];
        const flags = body["flags"];
        s.flags = Array.isArray(flags) ? flags.map(String) : typeof flags === "string" ? [flags] : [];
        const timeout = num(body["timeout"]);
        if (timeout !== undefined) s.timeoutSeconds = timeout;
        const comment = str(body["comment"]);
        if (comment !== undefined) s.comment = comment;
        const elem = body["elem"];
        for (const e of Array.isArray(elem) ? elem : []) {
          const parsed = jsonElement(e);
          if (parsed === null)
            throw new NftDumpParseError(`${where}: unreadable element ${JSON.stringify(e)}`);
          s.elements.push(parsed);
        }
        return;
      }
      case "rule": {
        const chain = str(body["chain"]);
        if (chain === undefined) throw new NftDumpParseError(`${where}: rule without a chain`);
        const t = tableOf(body, where);
        const c = b.chain(t, chain);
        const statements: NftStatement[] = [];
        let comment = str(body["comment"]);
        let counters: Counters | undefined;
        for (const e of Array.isArray(body["expr"]) ? body["expr"] : []) {
          const s = jsonStatement(e);
          if (s === null) statements.push({ kind: "unknown", text: JSON.stringify(e) });
          else if ("comment" in s) comment = s.comment;
          else {
            if (s.kind === "counter") counters = s.counters;
            statements.push(s);
          }
        }
        const ipX = t.family === "ip6" ? "ip6" : "ip";
        const text = [
          ...statements.map((s) => statementTextFor(s, ipX)),
          ...(comment === undefined ? [] : [`comment ${JSON.stringify(comment)}`]),
        ].join(" ");
        const handle = num(body["handle"]);
        c.rules.push({
          chain,
          index: c.rules.length + 1,
          text,
          statements,
          ...(comment === undefined ? {} : { comment }),
          ...(counters === undefined ? {} : { counters }),
          ...(handle === undefined ? {} : { handle }),
        });
        return;
      }
      default:
        return;
    }
  });
  return b.build();
}

/** Reads a dump in any of the three forms (JSON when it starts with `{`). */
export function parseNftDump(text: string): NftRuleset {
  return text.trimStart().startsWith("{") ? parseJson(text) : parseText(text);
}
