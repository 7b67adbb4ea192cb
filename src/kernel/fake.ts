import type { IPFamily } from "../ip.ts";
import { ExecError } from "./exec.ts";
import {
  payloadText,
  quoteRuleArg,
  restoreErrorFor,
  splitRuleArgs,
  versionAtLeast,
  waitFlagsFor,
  restoreWaitFlagsFor,
} from "./iptables.ts";
import type {
  IptablesInterface,
  IptablesVersion,
  RestoreOptions,
  RestorePayload,
  RulePosition,
  SaveOptions,
  Table,
} from "./iptables.ts";

const BUILTIN_CHAINS: Readonly<Record<Table, readonly string[]>> = {
  filter: ["INPUT", "FORWARD", "OUTPUT"],
  nat: ["PREROUTING", "INPUT", "OUTPUT", "POSTROUTING"],
  mangle: ["PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING"],
  raw: ["PREROUTING", "OUTPUT"],
  security: ["INPUT", "FORWARD", "OUTPUT"],
};

const TABLE_ORDER: readonly Table[] = ["raw", "mangle", "security", "nat", "filter"];

/** Targets provided by extensions rather than chains. */
const EXTENSION_TARGETS = new Set([
  "ACCEPT",
  "DROP",
  "RETURN",
  "QUEUE",
  "REJECT",
  "DNAT",
  "SNAT",
  "MASQUERADE",
  "REDIRECT",
  "MARK",
  "CONNMARK",
  "LOG",
  "NFLOG",
  "NOTRACK",
  "CT",
  "TPROXY",
  "NFQUEUE",
  "TCPMSS",
  "AUDIT",
  "CHECKSUM",
  "CLASSIFY",
  "TRACE",
]);

interface FakeChain {
  readonly builtin: boolean;
  policy: string;
  counters: string;
  /** Rule bodies as iptables-save prints them after `-A CHAIN `. */
  rules: string[];
}

type FakeTable = Map<string, FakeChain>;

/** One call made to the fake, for assertions in tests. */
export interface FakeCall {
  readonly op: string;
  readonly table?: Table;
  readonly chain?: string;
  readonly args?: readonly string[];
  readonly payload?: string;
  readonly noflush?: boolean;
  /** For "save": whether `-c` counters were asked for. */
  readonly counters?: boolean;
}

export interface FakeIptablesOptions {
  readonly family?: IPFamily;
  /** Version reported by `version()`; upstream's fake reports no random-fully support. */
  readonly version?: readonly number[];
  readonly hasRandomFully?: boolean;
}

class FakeFailure extends Error {
  constructor(
    readonly lineNumber: number,
    message: string,
  ) {
    super(message);
  }
}

/** Canonical text of a rule given as argv, so argv-built and payload-built rules compare equal. */
function ruleText(args: readonly string[]): string {
  return args.map(quoteRuleArg).join(" ");
}

function jumpTarget(args: readonly string[]): string | null {
  for (let i = 0; i < args.length - 1; i++) {
    if (args[i] === "-j" || args[i] === "-g" || args[i] === "--jump" || args[i] === "--goto") {
      return args[i + 1] ?? null;
    }
  }
  return null;
}

function cloneTables(tables: Map<Table, FakeTable>): Map<Table, FakeTable> {
  const copy = new Map<Table, FakeTable>();
  for (const [name, table] of tables) {
    const chains: FakeTable = new Map();
    for (const [chain, c] of table) chains.set(chain, { ...c, rules: [...c.rules] });
    copy.set(name, chains);
  }
  return copy;
}

function isTable(name: string): name is Table {
  return Object.hasOwn(BUILTIN_CHAINS, name);
}

/**
 * A stateful in-memory iptables for one family, in the spirit of upstream FakeIPTables:
 * restore payloads are parsed and applied atomically with --noflush semantics, rule jumps and
 * `-X` are checked like the kernel does, and `save()` prints an iptables-save style dump.
 */
export class FakeIptables implements IptablesInterface {
  readonly family: IPFamily;
  readonly calls: FakeCall[] = [];
  /** Number of payload lines (excluding blanks and comments) per restore call, in order. */
  readonly restoreLineCounts: number[] = [];
  private tables = new Map<Table, FakeTable>();
  private readonly versionInfo: IptablesVersion;
  /** When set, the next restore fails at this 1-based payload line without applying anything. */
  failNextRestoreAtLine: number | null = null;

  constructor(options: FakeIptablesOptions = {}) {
    this.family = options.family ?? "IPv4";
    const parts = options.version ?? [1, 8, 9];
    this.versionInfo = {
      text: parts.join("."),
      parts,
      hasRandomFully: options.hasRandomFully ?? false,
      waitFlags: waitFlagsFor(parts),
      restoreWaitFlags: restoreWaitFlagsFor(parts, versionAtLeast(parts, [1, 6, 2]) ? null : "v"),
    };
  }

  version(): Promise<IptablesVersion> {
    return Promise.resolve(this.versionInfo);
  }

  restore(input: RestorePayload, options: RestoreOptions = {}): Promise<void> {
    const payload = payloadText(input);
    const noflush = options.noflush ?? true;
    this.calls.push({ op: "restore", payload, noflush });
    const argv = [
      this.family === "IPv4" ? "iptables-restore" : "ip6tables-restore",
      ...this.versionInfo.restoreWaitFlags,
    ];
    if (noflush) argv.push("--noflush");
    if (options.counters ?? true) argv.push("--counters");
    const work = cloneTables(this.tables);
    let counted = 0;
    try {
      counted = this.applyPayload(work, payload, noflush);
    } catch (err) {
      if (err instanceof FakeFailure) {
        const stderr = `iptables-restore: ${err.message}\niptables-restore: line ${err.lineNumber} failed\n`;
        return Promise.reject(restoreErrorFor(argv, 1, stderr, payload));
      }
      return Promise.reject(err);
    }
    this.tables = work;
    this.restoreLineCounts.push(counted);
    return Promise.resolve();
  }

  private applyPayload(work: Map<Table, FakeTable>, payload: string, noflush: boolean): number {
    const lines = payload.split("\n");
    let table: FakeTable | null = null;
    let counted = 0;
    for (let i = 0; i < lines.length; i++) {
      const n = i + 1;
      const line = (lines[i] ?? "").trim();
      if (line === "" || line.startsWith("#")) continue;
      counted++;
      if (this.failNextRestoreAtLine === n) {
        this.failNextRestoreAtLine = null;
        throw new FakeFailure(n, "injected failure");
      }
      if (line.startsWith("*")) {
        const name = line.slice(1);
        if (!isTable(name)) throw new FakeFailure(n, `unknown table ${name}`);
        table = tableOf(work, name);
        if (!noflush) {
          for (const [chain, c] of table) {
            if (c.builtin) c.rules = [];
            else table.delete(chain);
          }
        }
        continue;
      }
      if (table === null) throw new FakeFailure(n, "rule or chain outside a table");
      if (line === "COMMIT") {
        table = null;
        continue;
      }
      if (line.startsWith(":")) {
        const [chain, policy = "-", counters = "[0:0]"] = line.slice(1).split(/\s+/);
        if (chain === undefined || chain === "") throw new FakeFailure(n, "empty chain name");
        const existing = table.get(chain);
        if (existing === undefined) {
          table.set(chain, { builtin: false, policy: "-", counters: "[0:0]", rules: [] });
        } else {
          existing.rules = [];
          if (existing.builtin && policy !== "-") existing.policy = policy;
          existing.counters = counters;
        }
        continue;
      }
      // `iptables-save -c` output restores as is: the fake keeps no rule counters, so drop them.
      const args = splitRuleArgs(line.replace(/^\[\d+:\d+\]\s+/, ""));
      const [op, chain, ...rest] = args;
      if (chain === undefined) throw new FakeFailure(n, `missing chain in ${line}`);
      try {
        this.applyCommand(table, op ?? "", chain, rest);
      } catch (err) {
        if (err instanceof ExecError) throw new FakeFailure(n, err.stderr);
        throw err;
      }
    }
    if (table !== null) throw new FakeFailure(lines.length, "missing COMMIT");
    return counted;
  }

  /** One iptables command against a table (throws ExecError with the tool's exit code). */
  private applyCommand(table: FakeTable, op: string, chain: string, args: readonly string[]): void {
    const fail = (code: number, message: string): never => {
      throw new ExecError(["iptables", op, chain, ...args], code, message, "exit");
    };
    const target = table.get(chain);
    switch (op) {
      case "-N":
        if (target !== undefined) fail(1, "iptables: Chain already exists.");
        table.set(chain, { builtin: false, policy: "-", counters: "[0:0]", rules: [] });
        return;
      case "-X":
        if (target === undefined) return fail(1, "iptables: No chain/target/match by that name.");
        if (target.builtin) return fail(2, "iptables: Can't delete built-in chain.");
        if (target.rules.length > 0) return fail(1, "iptables: Directory not empty.");
        for (const [other, c] of table) {
          if (c.rules.some((r) => jumpTarget(splitRuleArgs(r)) === chain)) {
            return fail(1, `iptables: Too many links. (chain ${chain} referenced from ${other})`);
          }
        }
        table.delete(chain);
        return;
      case "-F":
        if (target === undefined) return fail(1, "iptables: No chain/target/match by that name.");
        target.rules = [];
        return;
      case "-A":
      case "-I": {
        if (target === undefined) return fail(1, "iptables: No chain/target/match by that name.");
        let ruleArgs = args;
        let index = 0;
        if (op === "-I" && args[0] !== undefined && /^\d+$/.test(args[0])) {
          index = Number(args[0]) - 1;
          ruleArgs = args.slice(1);
          if (index < 0) return fail(2, `iptables v1.8.9: Invalid rule number \`${args[0]}'`);
          if (index > target.rules.length) return fail(1, "iptables: Index of insertion too big.");
        }
        const jump = jumpTarget(ruleArgs);
        if (jump !== null && !EXTENSION_TARGETS.has(jump) && !table.has(jump)) {
          return fail(2, `Couldn't load target \`${jump}':No such file or directory`);
        }
        const text = ruleText(ruleArgs);
        if (op === "-A") target.rules.push(text);
        else target.rules.splice(index, 0, text);
        return;
      }
      case "-D": {
        if (target === undefined) return fail(1, "iptables: No chain/target/match by that name.");
        const text = ruleText(args);
        const at = target.rules.indexOf(text);
        if (at < 0) return fail(1, "iptables: Bad rule (does a matching rule exist in that chain?).");
        target.rules.splice(at, 1);
        return;
      }
      default:
        fail(2, `unknown option "${op}"`);
    }
  }

  private command(table: Table, op: string, chain: string, args: readonly string[] = []): void {
    this.calls.push({ op, table, chain, args });
    this.applyCommand(tableOf(this.tables, table), op, chain, args);
  }

  /**
   * With `counters`, rule lines carry a `[0:0]` prefix like `iptables-save -c` prints them: the
   * fake sends no packets, so every rule counter is zero.
   */
  save(table?: Table, options: SaveOptions = {}): Promise<string> {
    const counters = options.counters === true;
    this.calls.push(counters ? { op: "save", table, counters } : { op: "save", table });
    const prefix = counters ? "[0:0] " : "";
    if (table !== undefined) tableOf(this.tables, table);
    const out: string[] = ["# Generated by iptables-save v1.8.9 (fake)"];
    for (const name of TABLE_ORDER) {
      if (table !== undefined && name !== table) continue;
      const chains = this.tables.get(name);
      if (chains === undefined) continue;
      out.push(`*${name}`);
      const ordered = [
        ...BUILTIN_CHAINS[name],
        ...[...chains.keys()].filter((c) => !chains.get(c)?.builtin).sort(),
      ];
      for (const chain of ordered) {
        const c = chains.get(chain);
        if (c !== undefined) out.push(`:${chain} ${c.policy} ${c.counters}`);
      }
      for (const chain of ordered) {
        for (const rule of chains.get(chain)?.rules ?? []) out.push(`${prefix}-A ${chain} ${rule}`);
      }
      out.push("COMMIT");
    }
    out.push("# Completed (fake)");
    return Promise.resolve(out.join("\n") + "\n");
  }

  async ensureChain(table: Table, chain: string): Promise<boolean> {
    if (tableOf(this.tables, table).has(chain)) {
      this.calls.push({ op: "-N", table, chain });
      return true;
    }
    this.command(table, "-N", chain);
    return false;
  }

  async ensureRule(
    position: RulePosition,
    table: Table,
    chain: string,
    args: readonly string[],
  ): Promise<boolean> {
    if (this.hasRule(table, chain, args)) return true;
    this.command(table, position === "prepend" ? "-I" : "-A", chain, args);
    return false;
  }

  async deleteRule(table: Table, chain: string, args: readonly string[]): Promise<void> {
    if (!this.hasRule(table, chain, args)) return;
    this.command(table, "-D", chain, args);
  }

  async flushChain(table: Table, chain: string): Promise<void> {
    this.command(table, "-F", chain);
  }

  async deleteChain(table: Table, chain: string): Promise<void> {
    this.command(table, "-X", chain);
  }

  async chainExists(table: Table, chain: string): Promise<boolean> {
    this.calls.push({ op: "-S", table, chain });
    return tableOf(this.tables, table).has(chain);
  }

  /** Rules of one chain as iptables-save prints them after `-A CHAIN ` (test helper). */
  rules(table: Table, chain: string): readonly string[] {
    return [...(this.tables.get(table)?.get(chain)?.rules ?? [])];
  }

  /** Total number of rules in a table, or in all tables. */
  ruleCount(table?: Table): number {
    let n = 0;
    for (const [name, chains] of this.tables) {
      if (table !== undefined && name !== table) continue;
      for (const c of chains.values()) n += c.rules.length;
    }
    return n;
  }

  private hasRule(table: Table, chain: string, args: readonly string[]): boolean {
    this.calls.push({ op: "-C", table, chain, args });
    // Like `iptables -C`, a missing chain reads as "rule absent"; the following -I/-A then fails.
    return tableOf(this.tables, table).get(chain)?.rules.includes(ruleText(args)) ?? false;
  }
}

function tableOf(tables: Map<Table, FakeTable>, name: Table): FakeTable {
  let table = tables.get(name);
  if (table === undefined) {
    table = new Map();
    for (const chain of BUILTIN_CHAINS[name]) {
      table.set(chain, { builtin: true, policy: "ACCEPT", counters: "[0:0]", rules: [] });
    }
    tables.set(name, table);
  }
  return table;
}
