import type { Cidr, IPFamily } from "../ip.ts";
import { parseCIDR } from "../ip.ts";
import type { Chain, Counters, Hook, IpvsCondition, Match, Rule, Ruleset, Table, Target } from "./model.ts";
import { IPTABLES_BUILTINS, RulesetParseError } from "./model.ts";

/**
 * Splits one rule line the way iptables-restore does: whitespace separates words, double quotes
 * group, and inside quotes a backslash escapes the next character (iptables-save writes `\"`
 * and `\\` there).
 */
export function tokenize(line: string): string[] | undefined {
  if (!line.includes('"')) return line.split(/\s+/).filter((w) => w !== "");
  if (!line.includes("\\") && !line.includes("\t")) return splitOnQuotes(line);
  const words: string[] = [];
  const word = WORD;
  word.lastIndex = 0;
  while (word.lastIndex < line.length) {
    const at = word.lastIndex;
    const m = word.exec(line);
    if (m === null) {
      if (line.slice(at).trim() !== "") return undefined;
      break;
    }
    const w = m[1] as string;
    words.push(w.includes('"') ? w.replace(QUOTED, unquote) : w);
  }
  return words;
}

/** Fast path for lines without backslashes or tabs (nearly every line of a dump). */
function splitOnQuotes(line: string): string[] | undefined {
  const parts = line.split('"');
  if (parts.length % 2 === 0) return undefined;
  const words: string[] = [];
  // Whether the last word touches what follows (no space in between), as in `a"b c"`.
  let open = false;
  for (let k = 0; k < parts.length; k++) {
    const part = parts[k] as string;
    if (k % 2 === 1) {
      if (open) words[words.length - 1] += part;
      else words.push(part);
      open = true;
      continue;
    }
    if (part === "") continue;
    const pieces = part.split(" ");
    for (let j = 0; j < pieces.length; j++) {
      const piece = pieces[j] as string;
      if (piece === "") continue;
      if (j === 0 && open) words[words.length - 1] += piece;
      else words.push(piece);
    }
    open = pieces[pieces.length - 1] !== "";
  }
  return words;
}

const WORD = /\s*((?:[^\s"]+|"(?:[^"\\]|\\.)*")+)/y;
const QUOTED = /"((?:[^"\\]|\\.)*)"/g;
const ESCAPE = /\\(.)/g;

function unquote(_quoted: string, inner: string): string {
  return inner.replace(ESCAPE, "$1");
}

interface ModuleOption {
  readonly name: string;
  readonly negated: boolean;
  readonly values: string[];
}

class RuleSyntaxError extends Error {}

const GENERIC: Readonly<Record<string, string>> = {
  "-p": "p",
  "--protocol": "p",
  "-s": "s",
  "--source": "s",
  "--src": "s",
  "-d": "d",
  "--destination": "d",
  "--dst": "d",
  "-i": "i",
  "--in-interface": "i",
  "-o": "o",
  "--out-interface": "o",
  "-m": "m",
  "--match": "m",
  "-j": "j",
  "--jump": "j",
  "-g": "g",
  "--goto": "g",
  "-f": "f",
  "--fragment": "f",
};

const CONTINUING_TARGETS = new Set([
  "LOG",
  "NFLOG",
  "ULOG",
  "NOTRACK",
  "CT",
  "CONNMARK",
  "TRACE",
  "CLASSIFY",
  "TCPMSS",
  "DSCP",
  "TOS",
  "TTL",
  "HL",
  "AUDIT",
  "CHECKSUM",
  "SET",
  "SECMARK",
  "CONNSECMARK",
  "IDLETIMER",
  "LED",
  "NFACCT",
]);

/** Options whose value is free text (it may start with "-"). */
const FREE_TEXT = new Set(["--comment", "--log-prefix", "--nfacct-name", "--nflog-prefix"]);

function quoteWord(word: string): string {
  return /^[^\s"\\]+$/.test(word) ? word : `"${word.replace(/[\\"]/g, (c) => `\\${c}`)}"`;
}

function optionText(module: string, options: readonly ModuleOption[]): string {
  const parts = [`-m ${module}`];
  for (const o of options)
    parts.push(`${o.negated ? "! " : ""}${o.name}${o.values.map((v) => ` ${quoteWord(v)}`).join("")}`);
  return parts.join(" ");
}

function parseNumber(text: string): number {
  const n = Number(text);
  if (!Number.isFinite(n) || text.trim() === "") throw new RuleSyntaxError(`not a number: ${text}`);
  return n;
}

function parsePortRanges(text: string): [number, number][] {
  return text.split(",").map((part) => {
    const [lo = "", hi] = part.split(":");
    const low = lo === "" ? 0 : parseNumber(lo);
    const high = hi === undefined ? low : hi === "" ? 65535 : parseNumber(hi);
    return [low, high];
  });
}

function parseMarkPair(text: string): { value: number; mask: number | undefined } {
  const [v = "", m] = text.split("/");
  return { value: parseNumber(v) >>> 0, mask: m === undefined ? undefined : parseNumber(m) >>> 0 };
}

function first(o: ModuleOption): string {
  const v = o.values[0];
  if (v === undefined) throw new RuleSyntaxError(`${o.name} needs a value`);
  return v;
}

function unknownModule(module: string, options: readonly ModuleOption[]): Match[] {
  return [{ kind: "unknown", module, text: optionText(module, options) }];
}

/** Converts one `-m module --opt …` group into matches; anything not modelled becomes an "unknown" match. */
function moduleMatches(module: string, options: readonly ModuleOption[]): Match[] {
  const out: Match[] = [];
  switch (module) {
    case "tcp":
    case "udp":
    case "sctp":
    case "udplite":
      for (const o of options) {
        if (o.name === "--dport" || o.name === "--destination-port") {
          out.push({ kind: "destinationPort", negated: o.negated, ranges: parsePortRanges(first(o)) });
        } else if (o.name === "--sport" || o.name === "--source-port") {
          out.push({ kind: "sourcePort", negated: o.negated, ranges: parsePortRanges(first(o)) });
        } else {
          out.push({ kind: "unknown", module, text: optionText(module, [o]) });
        }
      }
      return out;
    case "multiport":
      for (const o of options) {
        if (o.name === "--dports" || o.name === "--destination-ports") {
          out.push({ kind: "destinationPort", negated: o.negated, ranges: parsePortRanges(first(o)) });
        } else if (o.name === "--sports" || o.name === "--source-ports") {
          out.push({ kind: "sourcePort", negated: o.negated, ranges: parsePortRanges(first(o)) });
        } else {
          out.push({ kind: "unknown", module, text: optionText(module, [o]) });
        }
      }
      return out;
    case "comment":
      return options.map((o) => ({ kind: "comment", text: o.values.join(" ") }));
    case "mark":
      for (const o of options) {
        if (o.name !== "--mark") return unknownModule(module, options);
        const { value, mask } = parseMarkPair(first(o));
        out.push({ kind: "mark", negated: o.negated, value, mask: mask ?? 0xffffffff });
      }
      return out;
    case "conntrack":
    case "state":
      for (const o of options) {
        if (o.name === "--ctstate" || o.name === "--state") {
          out.push({ kind: "ctstate", negated: o.negated, states: first(o).toUpperCase().split(",") });
        } else {
          out.push({ kind: "unknown", module, text: optionText(module, [o]) });
        }
      }
      return out;
    case "addrtype":
      for (const o of options) {
        if (o.name === "--src-type" || o.name === "--dst-type") {
          const side = o.name === "--src-type" ? "src" : "dst";
          out.push({ kind: "addrtype", side, negated: o.negated, types: first(o).toUpperCase().split(",") });
        } else {
          return unknownModule(module, options);
        }
      }
      return out;
    case "statistic": {
      const mode = options.find((o) => o.name === "--mode")?.values[0];
      const p = options.find((o) => o.name === "--probability");
      if (mode !== "random" || p === undefined || p.negated || options.length !== 2)
        return unknownModule(module, options);
      return [{ kind: "probability", probability: parseNumber(first(p)) }];
    }
    case "recent": {
      const commands = options.filter((o) => ["--rcheck", "--update", "--set", "--remove"].includes(o.name));
      const name = options.find((o) => o.name === "--name")?.values[0] ?? "DEFAULT";
      const seconds = options.find((o) => o.name === "--seconds")?.values[0];
      const modelled = new Set([
        "--rcheck",
        "--update",
        "--set",
        "--remove",
        "--name",
        "--seconds",
        "--reap",
        "--rsource",
        "--mask",
      ]);
      const command = commands[0];
      if (commands.length !== 1 || command === undefined || options.some((o) => !modelled.has(o.name)))
        return unknownModule(module, options);
      return [
        {
          kind: "recent",
          negated: command.negated,
          command: command.name.slice(2) as "rcheck" | "update" | "set" | "remove",
          name,
          ...(seconds === undefined ? {} : { seconds: parseNumber(seconds) }),
        },
      ];
    }
    case "nfacct":
      return [{ kind: "accounting", module }];
    case "set": {
      const o = options[0];
      const flags = o?.values[1]?.split(",") ?? [];
      if (
        options.length !== 1 ||
        o?.name !== "--match-set" ||
        o.values.length !== 2 ||
        flags.some((f) => f !== "src" && f !== "dst")
      )
        return unknownModule(module, options);
      return [
        {
          kind: "set",
          negated: o.negated,
          name: first(o),
          flags: flags as ("src" | "dst")[],
          text: optionText(module, options),
        },
      ];
    }
    case "ipvs": {
      const names = {
        "--ipvs": "ipvs",
        "--vaddr": "vaddr",
        "--vport": "vport",
        "--vproto": "vproto",
      } as const;
      const conditions = [];
      for (const o of options) {
        const option = names[o.name as keyof typeof names] as IpvsCondition["option"] | undefined;
        if (option === undefined) return unknownModule(module, options);
        conditions.push({ option, negated: o.negated, value: option === "ipvs" ? "" : first(o) });
      }
      return [{ kind: "ipvs", conditions, text: optionText(module, options) }];
    }
    case "physdev":
      if (options.length !== 1 || options[0]?.name !== "--physdev-is-in")
        return unknownModule(module, options);
      return [{ kind: "physdev", negated: options[0].negated, text: optionText(module, options) }];
    default:
      return unknownModule(module, options);
  }
}

function markTarget(options: readonly ModuleOption[], text: string): Target {
  const o = options[0];
  if (options.length !== 1 || o === undefined) return { kind: "unknown", name: "MARK", text };
  const { value, mask } = parseMarkPair(first(o));
  switch (o.name) {
    case "--set-xmark":
      return { kind: "mark", value, mask: mask ?? 0xffffffff, text };
    case "--set-mark":
      return { kind: "mark", value, mask: ((mask ?? 0xffffffff) | value) >>> 0, text };
    case "--or-mark":
      return { kind: "mark", value, mask: value, text };
    case "--xor-mark":
      return { kind: "mark", value, mask: 0, text };
    case "--and-mark":
      return { kind: "mark", value: 0, mask: ~value >>> 0, text };
    default:
      return { kind: "unknown", name: "MARK", text };
  }
}

function optionValue(options: readonly ModuleOption[], name: string): string | undefined {
  return options.find((o) => o.name === name)?.values[0];
}

/** Options each modelled target accepts; anything else is a malformed rule, not a guess. */
const TARGET_OPTIONS: Readonly<Record<string, readonly string[]>> = {
  ACCEPT: [],
  DROP: [],
  RETURN: [],
  NOTRACK: [],
  REJECT: ["--reject-with"],
  DNAT: ["--to-destination", "--random", "--persistent"],
  SNAT: ["--to-source", "--random", "--random-fully", "--persistent"],
  MASQUERADE: ["--to-ports", "--random", "--random-fully"],
  MARK: ["--set-xmark", "--set-mark", "--or-mark", "--xor-mark", "--and-mark"],
};

function targetText(name: string, options: readonly ModuleOption[]): string {
  let text = name;
  for (const o of options) {
    text += ` ${o.negated ? "! " : ""}${o.name}`;
    for (const v of o.values) text += ` ${quoteWord(v)}`;
  }
  return text;
}

const JUMP_OPTIONS: readonly string[] = [];

function buildTarget(name: string, options: readonly ModuleOption[], table: Table): Target {
  const isChain = table.chains.has(name);
  const allowed = TARGET_OPTIONS[name] ?? (isChain ? JUMP_OPTIONS : undefined);
  if (allowed !== undefined) {
    for (const o of options) {
      if (!allowed.includes(o.name) || o.negated)
        throw new RuleSyntaxError(`target ${name} does not take ${o.name}`);
    }
  }
  switch (name) {
    case "ACCEPT":
    case "DROP":
    case "REJECT":
      return { kind: "verdict", verdict: name, text: targetText(name, options) };
    case "RETURN":
      return { kind: "return" };
    case "DNAT":
      return { kind: "dnat", to: optionValue(options, "--to-destination") ?? "" };
    case "SNAT":
      return { kind: "snat", to: optionValue(options, "--to-source") ?? "" };
    case "MASQUERADE":
      return { kind: "masquerade", text: targetText(name, options) };
    case "MARK":
      return markTarget(options, targetText(name, options));
    default:
      if (isChain) return { kind: "jump", chain: name };
      if (CONTINUING_TARGETS.has(name)) return { kind: "continue", name, text: targetText(name, options) };
      return { kind: "unknown", name, text: targetText(name, options) };
  }
}

interface ParsedRule {
  readonly matches: Match[];
  readonly target: Target | undefined;
  readonly family: IPFamily | undefined;
}

function needValue(words: readonly string[], i: number, flag: string): string {
  const v = words[i];
  if (v === undefined) throw new RuleSyntaxError(`${flag} needs a value`);
  return v;
}

function needCidr(text: string): Cidr {
  const parsed = parseCIDR(text);
  if (parsed === undefined) throw new RuleSyntaxError(`not an address: ${text}`);
  return parsed;
}

const IMPLICIT_MODULES = new Set(["tcp", "udp", "sctp", "udplite"]);

function parseRuleWords(words: readonly string[], start: number, table: Table): ParsedRule {
  const matches: Match[] = [];
  let family: IPFamily | undefined;
  let module: string | undefined;
  let moduleOptions: ModuleOption[] = [];
  let implicitModule: string | undefined;
  const groups: { module: string; options: ModuleOption[] }[] = [];
  let targetName: string | undefined;
  let gotoChain: string | undefined;
  const targetOptions: ModuleOption[] = [];
  let negate = false;

  for (let i = start; i < words.length; i++) {
    const word = words[i] as string;
    if (word === "!") {
      negate = true;
      continue;
    }
    const generic = targetName === undefined ? GENERIC[word] : undefined;
    if (generic !== undefined) {
      const negated = negate;
      negate = false;
      const value = needValue(words, ++i, word);
      if (generic === "p") {
        const protocol = value.toLowerCase();
        matches.push({ kind: "protocol", negated, protocol });
        if (IMPLICIT_MODULES.has(protocol)) implicitModule = protocol;
      } else if (generic === "s" || generic === "d") {
        const cidr = needCidr(value);
        family ??= cidr.family;
        matches.push({ kind: generic === "s" ? "source" : "destination", negated, cidr });
      } else if (generic === "i" || generic === "o") {
        matches.push({ kind: generic === "i" ? "inInterface" : "outInterface", negated, name: value });
      } else if (generic === "f") {
        i--;
        matches.push({ kind: "unknown", module: "fragment", text: `${negated ? "! " : ""}-f` });
      } else {
        if (module !== undefined) groups.push({ module, options: moduleOptions });
        module = undefined;
        moduleOptions = [];
        if (generic === "m") module = value;
        else if (generic === "j") targetName = value;
        else gotoChain = value;
      }
      continue;
    }
    if (!word.startsWith("--")) throw new RuleSyntaxError(`unexpected word "${word}"`);
    const option: ModuleOption = { name: word, negated: negate, values: [] };
    negate = false;
    // Free text: the first word is taken whatever it looks like (upstream's fake iptables even
    // prints multi-word comments unquoted, so later plain words are kept too).
    if (FREE_TEXT.has(word) && i + 1 < words.length) option.values.push(words[++i] as string);
    while (i + 1 < words.length && !(words[i + 1] as string).startsWith("-") && words[i + 1] !== "!") {
      option.values.push(words[++i] as string);
    }
    if (targetName !== undefined) {
      targetOptions.push(option);
    } else if (module !== undefined) {
      moduleOptions.push(option);
    } else if (implicitModule !== undefined) {
      groups.push({ module: implicitModule, options: [option] });
    } else {
      throw new RuleSyntaxError(`option ${word} outside any match module`);
    }
  }
  if (negate) throw new RuleSyntaxError(`dangling "!"`);
  if (module !== undefined) groups.push({ module, options: moduleOptions });
  for (const g of groups) for (const m of moduleMatches(g.module, g.options)) matches.push(m);
  let target: Target | undefined;
  if (gotoChain !== undefined) target = { kind: "goto", chain: gotoChain };
  else if (targetName !== undefined) target = buildTarget(targetName, targetOptions, table);
  return { matches, target, family };
}

function parseCounters(text: string): Counters | undefined {
  const m = /^\[(\d+):(\d+)\]$/.exec(text);
  return m === null ? undefined : { packets: Number(m[1]), bytes: Number(m[2]) };
}

export interface ParseOptions {
  /** Force the family; otherwise taken from the `# Generated by ip6tables-save` header or the first address. */
  readonly family?: IPFamily;
  /** A slice of a dump (./slice.ts): each line's number in the whole dump. */
  readonly lineNumbers?: readonly number[];
  /** A slice of a dump: each rule line's number in its chain in the whole dump (0: not a rule). */
  readonly ruleNumbers?: readonly number[];
}

/**
 * Parses `iptables-save [-c]` / `ip6tables-save [-c]` output (every table, foreign rules too)
 * and iptables-restore payloads (repeated table sections are merged, `-X` deletes a chain).
 */
export function parseIptablesSave(text: string, options: ParseOptions = {}): Ruleset {
  const state: SaveParseState = {
    tables: new Map(),
    family: options.family,
    familyFrom: options.family === undefined ? "" : "as asked",
    inferred: undefined,
    table: undefined,
    tableLine: 0,
    ruleNumber: undefined,
  };
  const lines = text.split("\n");
  const { lineNumbers, ruleNumbers } = options;
  const lineOf = (n: number): number => lineNumbers?.[n] ?? n + 1;
  let n = 0;
  try {
    for (; n < lines.length; n++) {
      const rule = ruleNumbers?.[n];
      state.ruleNumber = rule === undefined || rule === 0 ? undefined : rule;
      parseLine(state, (lines[n] as string).trim(), lineOf(n));
    }
  } catch (error) {
    if (error instanceof LineError) throw new RulesetParseError(lineOf(n), lines[n] as string, error.message);
    throw error;
  }
  if (state.table !== undefined)
    throw new RulesetParseError(state.tableLine, `*${state.table.name}`, "table has no COMMIT");
  return { family: state.family ?? state.inferred ?? "IPv4", source: "iptables-save", tables: state.tables };
}

class LineError extends Error {}

/** `# Generated by ip6tables-save v1.8.9`, or a tool that says it prints what ip6tables-save would. */
const GENERATED_BY_IP6TABLES = /^# Generated by .*\bip6tables-save\b/;

interface SaveParseState {
  readonly tables: Map<string, Table>;
  family: IPFamily | undefined;
  /** Why the ruleset is of `family` or `inferred`, for the mixed-family error. */
  familyFrom: string;
  inferred: IPFamily | undefined;
  table: Table | undefined;
  tableLine: number;
  /** The current line's rule number when the text is a slice of a dump. */
  ruleNumber: number | undefined;
}

function parseLine(state: SaveParseState, line: string, lineNumber: number): void {
  if (line === "") return;
  if (line.startsWith("#")) {
    if (state.family === undefined && GENERATED_BY_IP6TABLES.test(line)) {
      state.family = "IPv6";
      state.familyFrom = `by its header on line ${lineNumber}`;
    }
    return;
  }
  if (line.startsWith("*")) {
    if (state.table !== undefined)
      throw new LineError(`table "${state.table.name}" started on line ${state.tableLine} has no COMMIT`);
    const name = line.slice(1);
    if (!/^[a-z]+$/.test(name)) throw new LineError("bad table name");
    const table = state.tables.get(name) ?? { name, chains: new Map() };
    state.tables.set(name, table);
    state.table = table;
    state.tableLine = lineNumber;
    return;
  }
  const table = state.table;
  if (table === undefined) throw new LineError("outside of a table (missing *table line)");
  if (line === "COMMIT") {
    state.table = undefined;
    return;
  }
  if (line.startsWith(":")) {
    declareChain(table, line);
    return;
  }
  const words = tokenize(line);
  if (words === undefined) throw new LineError("unterminated quote");
  let at = 0;
  let counters: Counters | undefined;
  if (words[0]?.startsWith("[")) {
    counters = parseCounters(words[0]);
    if (counters === undefined) throw new LineError("bad counters");
    at = 1;
  }
  const op = words[at];
  const chainName = words[at + 1];
  if (op === "-X") {
    if (chainName === undefined) throw new LineError("-X needs a chain");
    const chain = table.chains.get(chainName);
    if (chain === undefined) throw new LineError(`chain ${chainName} was not declared`);
    if (chain.rules.length > 0) throw new LineError(`chain ${chainName} is deleted but has rules`);
    table.chains.delete(chainName);
    return;
  }
  if (op !== "-A" && op !== "--append")
    throw new LineError(`unsupported line (expected -A, a chain declaration, * or COMMIT)`);
  if (chainName === undefined) throw new LineError("-A needs a chain");
  const chain = table.chains.get(chainName);
  if (chain === undefined) throw new LineError(`chain ${chainName} was not declared`);
  let parsed: ParsedRule;
  try {
    parsed = parseRuleWords(words, at + 2, table);
  } catch (error) {
    if (error instanceof RuleSyntaxError) throw new LineError(error.message);
    throw error;
  }
  if (parsed.family !== undefined) {
    const known = state.family ?? state.inferred;
    // One dump is one family's tables: a dual-stack render pasted whole would trace both
    // families' rules as one, so say so instead of walking it.
    if (known !== undefined && known !== parsed.family)
      throw new LineError(
        `${parsed.family} address in an ${known} ruleset (${known} ${state.familyFrom}); ` +
          "a dump holds one IP family: split a dual-stack render, or pick one with --ip-family",
      );
    if (known === undefined) {
      state.inferred = parsed.family;
      state.familyFrom = `from its first address, on line ${lineNumber}`;
    }
  }
  const textStart = line.indexOf(chainName, line.indexOf(op) + op.length) + chainName.length;
  const rule: Rule = {
    table: table.name,
    chain: chainName,
    index: state.ruleNumber ?? chain.rules.length + 1,
    line: lineNumber,
    text: line.slice(textStart).trim(),
    matches: parsed.matches,
    counters,
    target: parsed.target,
  };
  chain.rules.push(rule);
}

const CHAIN_DECLARATION = /^:(\S+)\s+(\S+)(?:\s+\[(\d+):(\d+)\])?$/;

function declareChain(table: Table, line: string): void {
  const m = CHAIN_DECLARATION.exec(line);
  if (m === null) throw new LineError("bad chain declaration");
  const [, name = "", policy = ""] = m;
  const builtin = IPTABLES_BUILTINS[table.name]?.[name as Hook];
  if (policy !== "-" && policy !== "ACCEPT" && policy !== "DROP")
    throw new LineError(`bad policy "${policy}"`);
  if (policy !== "-" && builtin === undefined)
    throw new LineError(`chain ${name} is not a built-in chain of table ${table.name}`);
  const chain: Chain = {
    name,
    rules: table.chains.get(name)?.rules ?? [],
    policy: policy === "-" ? undefined : policy,
    hook: builtin === undefined ? undefined : (name as Hook),
    priority: builtin,
    counters: m[3] === undefined ? undefined : { packets: Number(m[3]), bytes: Number(m[4]) },
  };
  table.chains.set(name, chain);
}
