import { KubeProxyError } from "../errors.ts";
import type { IPFamily } from "../ip.ts";
import { ExecError } from "./exec.ts";
import type { ExecResult, Runner } from "./exec.ts";

export type Table = "filter" | "nat" | "mangle" | "raw" | "security";

/** Which iptables flavour to drive: an explicit backend, or whatever the unsuffixed binaries point to. */
export type IptablesBackend = "legacy" | "nft" | "default";

export type RulePosition = "prepend" | "append";

export interface RestoreOptions {
  /** Only chains named in `:CHAIN` lines are flushed (default true, as kube-proxy always uses it). */
  readonly noflush?: boolean;
  /** Restore the `[packets:bytes]` counters given in the payload (default true). */
  readonly counters?: boolean;
}

export interface IptablesVersion {
  /** e.g. "1.8.9" */
  readonly text: string;
  readonly parts: readonly number[];
  /** `MASQUERADE --random-fully` is supported (≥ 1.6.2). */
  readonly hasRandomFully: boolean;
  /** Lock-wait flags put before every `iptables` command. */
  readonly waitFlags: readonly string[];
  /** Lock-wait flags for `iptables-restore`. */
  readonly restoreWaitFlags: readonly string[];
}

export interface SaveOptions {
  /** `-c`: every rule line starts with its `[packets:bytes]` counters (default false). */
  readonly counters?: boolean;
  /** Instead of the wrapper's timeout: the see-inside tools read 400,000 rules at 10,000 Services. */
  readonly timeoutMs?: number;
}

/**
 * An iptables-restore input: text, or the pieces of a text in order (a large sync passes its
 * blocks as they are, see `ProcessRunner`'s stdin).
 */
export type RestorePayload = string | readonly string[];

/** The text of a payload given as pieces. */
export function payloadText(payload: RestorePayload): string {
  return typeof payload === "string" ? payload : payload.join("");
}

/** What the proxier, the canary monitor and cleanup need from one IP family's iptables. */
export interface IptablesInterface {
  readonly family: IPFamily;
  restore(payload: RestorePayload, options?: RestoreOptions): Promise<void>;
  /** `iptables-save [-c] [-t table]` output. */
  save(table?: Table, options?: SaveOptions): Promise<string>;
  /** Creates the chain; resolves true if it already existed. */
  ensureChain(table: Table, chain: string): Promise<boolean>;
  /** Adds the rule unless an identical one exists; resolves true if it already existed. */
  ensureRule(position: RulePosition, table: Table, chain: string, args: readonly string[]): Promise<boolean>;
  /** Deletes the rule if present (absence is not an error). */
  deleteRule(table: Table, chain: string, args: readonly string[]): Promise<void>;
  flushChain(table: Table, chain: string): Promise<void>;
  deleteChain(table: Table, chain: string): Promise<void>;
  chainExists(table: Table, chain: string): Promise<boolean>;
  version(): Promise<IptablesVersion>;
}

/** iptables-restore rejected a payload; nothing of it was applied. */
export class RestoreError extends KubeProxyError {
  readonly code = "KPT_IPTABLES_RESTORE";

  constructor(
    readonly argv: readonly string[],
    readonly exitCode: number | null,
    readonly stderr: string,
    /** 1-based payload line the tool blamed, or null if its message named none. */
    readonly line: number | null,
    readonly lineText: string | null,
    /** A few payload lines around `line`, for logs. */
    readonly context: readonly { readonly line: number; readonly text: string }[],
    options?: { cause?: unknown },
  ) {
    const where = line === null ? "" : ` at line ${line}: ${lineText ?? ""}`;
    const detail = stderr.trim() === "" ? "" : ` (${stderr.trim().split("\n").join("; ")})`;
    super(`${argv.join(" ")} failed${where}${detail}`, options);
  }
}

const LINE_PATTERNS: readonly RegExp[] = [
  // legacy and nft, parse-time problems: "Error occurred at line: 6"
  /Error occurred at line: (\d+)/,
  // legacy, commit-time problems: "iptables-restore: line 4 failed"
  /\bline (\d+) failed\b/,
  // nft, kernel-rejected batch entries: "line 5: CHAIN_DEL failed (Device or resource busy): chain KUBE-B"
  /^line (\d+): /m,
];

/** The payload line number an iptables-restore error message blames, if any. */
export function parseRestoreErrorLine(stderr: string): number | null {
  for (const pattern of LINE_PATTERNS) {
    const match = pattern.exec(stderr);
    if (match?.[1] !== undefined) return Number(match[1]);
  }
  return null;
}

const CONTEXT_LINES = 3;

export function restoreErrorFor(
  argv: readonly string[],
  exitCode: number | null,
  stderr: string,
  payload: string,
  cause?: unknown,
): RestoreError {
  const line = parseRestoreErrorLine(stderr);
  const lines = payload.split("\n");
  const context: { line: number; text: string }[] = [];
  let lineText: string | null = null;
  if (line !== null && line >= 1 && line <= lines.length) {
    lineText = lines[line - 1] ?? null;
    const from = Math.max(1, line - CONTEXT_LINES);
    const to = Math.min(lines.length, line + CONTEXT_LINES);
    for (let n = from; n <= to; n++) context.push({ line: n, text: lines[n - 1] ?? "" });
  }
  return new RestoreError(argv, exitCode, stderr, line, lineText, context, { cause });
}

/** Parses "v1.8.9" out of `iptables --version` / `iptables-restore --version` output. */
export function parseIptablesVersion(output: string): number[] | null {
  const match = /v(\d+(?:\.\d+)+)/.exec(output);
  if (match?.[1] === undefined) return null;
  return match[1].split(".").map(Number);
}

export function versionAtLeast(parts: readonly number[], min: readonly number[]): boolean {
  for (let i = 0; i < Math.max(parts.length, min.length); i++) {
    const a = parts[i] ?? 0;
    const b = min[i] ?? 0;
    if (a !== b) return a > b;
  }
  return true;
}

const WAIT_FLAGS_FULL = ["-w", "5", "-W", "100000"];

/** Upstream `getIPTablesWaitFlag`. */
export function waitFlagsFor(parts: readonly number[]): string[] {
  if (versionAtLeast(parts, [1, 6, 1])) return [...WAIT_FLAGS_FULL];
  if (versionAtLeast(parts, [1, 4, 22])) return ["-w", "5"];
  if (versionAtLeast(parts, [1, 4, 20])) return ["-w"];
  return [];
}

/**
 * Upstream `getIPTablesRestoreWaitFlag`: full flags from 1.6.2; an older iptables-restore that
 * answers `--version` is assumed to have a backported `-w`.
 */
export function restoreWaitFlagsFor(parts: readonly number[], restoreVersionOutput: string | null): string[] {
  if (versionAtLeast(parts, [1, 6, 2])) return [...WAIT_FLAGS_FULL];
  if (restoreVersionOutput !== null && parseIptablesVersion(restoreVersionOutput) !== null) return ["-w"];
  return [];
}

/** Quotes one argv element the way iptables-save prints it, so rules can be compared with save output. */
export function quoteRuleArg(arg: string): string {
  if (arg !== "" && !/[\s"'\\]/.test(arg)) return arg;
  return `"${arg.replace(/(["\\])/g, "\\$1")}"`;
}

/** Splits an iptables-save rule line into argv elements, honouring double quotes. */
export function splitRuleArgs(text: string): string[] {
  const args: string[] = [];
  let current = "";
  let inToken = false;
  let quoted = false;
  for (let i = 0; i < text.length; i++) {
    const ch = text[i] ?? "";
    if (quoted) {
      if (ch === "\\" && i + 1 < text.length) {
        current += text[++i] ?? "";
      } else if (ch === '"') {
        quoted = false;
      } else {
        current += ch;
      }
    } else if (ch === '"') {
      quoted = true;
      inToken = true;
    } else if (/\s/.test(ch)) {
      if (inToken) args.push(current);
      current = "";
      inToken = false;
    } else {
      current += ch;
      inToken = true;
    }
  }
  if (inToken) args.push(current);
  return args;
}

/** Chain names of one table section in iptables-save output, in order. */
export function chainsFromSave(saveOutput: string, table: Table): string[] {
  return chainsOfSection(saveSectionLines(saveOutput, table));
}

/** Chain names declared in one table section's lines (`saveSectionLines`), in order. */
function chainsOfSection(lines: readonly string[]): string[] {
  const chains: string[] = [];
  for (const line of lines) {
    if (!line.startsWith(":")) continue;
    const name = line.slice(1).split(/\s+/)[0];
    if (name !== undefined && name !== "") chains.push(name);
  }
  return chains;
}

/** The lines of one table's section (between `*table` and `COMMIT`) of an iptables-save dump. */
export function saveSectionLines(saveOutput: string, table: Table): string[] {
  const lines: string[] = [];
  let current: string | null = null;
  for (const raw of saveOutput.split("\n")) {
    const line = raw.trim();
    if (line.startsWith("*")) current = line.slice(1);
    else if (line === "COMMIT") current = null;
    else if (current === table) lines.push(line);
  }
  return lines;
}

export interface IptablesOptions {
  readonly runner: Runner;
  readonly family: IPFamily;
  readonly backend?: IptablesBackend;
  /** Every command runs inside this network namespace. */
  readonly netns?: string;
  /** Per-command timeout (default 30 s; restore of a large payload may need more). */
  readonly timeoutMs?: number;
  readonly restoreTimeoutMs?: number;
}

/** The binaries for one family and backend, e.g. `ip6tables-nft-restore`. */
export function iptablesBinaries(
  family: IPFamily,
  backend: IptablesBackend,
): { iptables: string; save: string; restore: string } {
  const base = family === "IPv4" ? "iptables" : "ip6tables";
  const flavour = backend === "default" ? base : `${base}-${backend}`;
  return { iptables: flavour, save: `${flavour}-save`, restore: `${flavour}-restore` };
}

const DEFAULT_TIMEOUT_MS = 30_000;
const DEFAULT_RESTORE_TIMEOUT_MS = 120_000;

/** One IP family's iptables, driven through its command-line tools (upstream `utiliptables.runner`). */
export class Iptables implements IptablesInterface {
  readonly family: IPFamily;
  readonly binaries: { iptables: string; save: string; restore: string };
  private readonly runner: Runner;
  private readonly netns: string | undefined;
  private readonly timeoutMs: number;
  private readonly restoreTimeoutMs: number;
  private versionPromise: Promise<IptablesVersion> | null = null;

  constructor(options: IptablesOptions) {
    this.runner = options.runner;
    this.family = options.family;
    this.netns = options.netns;
    this.binaries = iptablesBinaries(options.family, options.backend ?? "default");
    this.timeoutMs = options.timeoutMs ?? DEFAULT_TIMEOUT_MS;
    this.restoreTimeoutMs = options.restoreTimeoutMs ?? DEFAULT_RESTORE_TIMEOUT_MS;
  }

  version(): Promise<IptablesVersion> {
    this.versionPromise ??= this.detectVersion().catch((err: unknown) => {
      // A failed probe (tool missing for now) must not be cached forever.
      this.versionPromise = null;
      throw err;
    });
    return this.versionPromise;
  }

  private async detectVersion(): Promise<IptablesVersion> {
    const result = await this.exec([this.binaries.iptables, "--version"]);
    const parts = parseIptablesVersion(result.stdout + result.stderr);
    if (parts === null) {
      throw new ExecError(result.argv, result.exitCode, `unparseable version: ${result.stdout}`, "exit");
    }
    let restoreOutput: string | null = null;
    if (!versionAtLeast(parts, [1, 6, 2])) {
      restoreOutput = await this.exec([this.binaries.restore, "--version"], [0, 1, 2]).then(
        (r) => (r.exitCode === 0 ? r.stdout + r.stderr : null),
        () => null,
      );
    }
    return {
      text: parts.join("."),
      parts,
      hasRandomFully: versionAtLeast(parts, [1, 6, 2]),
      waitFlags: waitFlagsFor(parts),
      restoreWaitFlags: restoreWaitFlagsFor(parts, restoreOutput),
    };
  }

  async restore(payload: RestorePayload, options: RestoreOptions = {}): Promise<void> {
    const { restoreWaitFlags } = await this.version();
    const argv = [this.binaries.restore, ...restoreWaitFlags];
    if (options.noflush ?? true) argv.push("--noflush");
    if (options.counters ?? true) argv.push("--counters");
    try {
      await this.runner.run(argv, { stdin: payload, netns: this.netns, timeoutMs: this.restoreTimeoutMs });
    } catch (err) {
      if (err instanceof ExecError) {
        throw restoreErrorFor(err.argv, err.exitCode, err.stderr, payloadText(payload), err);
      }
      throw err;
    }
  }

  async save(table?: Table, options: SaveOptions = {}): Promise<string> {
    const argv = [this.binaries.save];
    if (options.counters === true) argv.push("-c");
    if (table !== undefined) argv.push("-t", table);
    if (options.timeoutMs === undefined) return (await this.exec(argv)).stdout;
    return (await this.runner.run(argv, { netns: this.netns, timeoutMs: options.timeoutMs })).stdout;
  }

  async ensureChain(table: Table, chain: string): Promise<boolean> {
    const result = await this.command(["-N", chain, "-t", table], [0, 1]);
    return result.exitCode === 1;
  }

  async ensureRule(
    position: RulePosition,
    table: Table,
    chain: string,
    args: readonly string[],
  ): Promise<boolean> {
    if (await this.ruleExists(table, chain, args)) return true;
    await this.command([position === "prepend" ? "-I" : "-A", chain, "-t", table, ...args]);
    return false;
  }

  async deleteRule(table: Table, chain: string, args: readonly string[]): Promise<void> {
    if (!(await this.ruleExists(table, chain, args))) return;
    await this.command(["-D", chain, "-t", table, ...args]);
  }

  async flushChain(table: Table, chain: string): Promise<void> {
    await this.command(["-F", chain, "-t", table]);
  }

  async deleteChain(table: Table, chain: string): Promise<void> {
    await this.command(["-X", chain, "-t", table]);
  }

  /**
   * One chain as `iptables -t TABLE -S CHAIN -v` lists it (its policy or `-N` line, then its
   * rules with `-c PACKETS BYTES`), or null when the chain is not there. The see-inside tools
   * read one Service's chains this way: the tool reads only that chain.
   */
  async listChain(table: Table, chain: string, timeoutMs?: number): Promise<string | null> {
    const { waitFlags } = await this.version();
    const result = await this.runner.run(
      [this.binaries.iptables, ...waitFlags, "-t", table, "-S", chain, "-v"],
      {
        netns: this.netns,
        timeoutMs: timeoutMs ?? this.timeoutMs,
        okExitCodes: [0, 1],
      },
    );
    return result.exitCode === 0 ? result.stdout : null;
  }

  async chainExists(table: Table, chain: string): Promise<boolean> {
    const result = await this.command(["-S", chain, "-t", table], [0, 1]);
    return result.exitCode === 0;
  }

  private async ruleExists(table: Table, chain: string, args: readonly string[]): Promise<boolean> {
    const result = await this.command(["-C", chain, "-t", table, ...args], [0, 1]);
    return result.exitCode === 0;
  }

  private async command(args: readonly string[], okExitCodes?: readonly number[]): Promise<ExecResult> {
    const { waitFlags } = await this.version();
    return this.exec([this.binaries.iptables, ...waitFlags, ...args], okExitCodes);
  }

  private exec(argv: readonly string[], okExitCodes?: readonly number[]): Promise<ExecResult> {
    return this.runner.run(argv, { netns: this.netns, timeoutMs: this.timeoutMs, okExitCodes });
  }
}

/**
 * One row of the jump-rule table (docs/iptables.md §2.3): a rule in a built-in chain jumping to a
 * kube-proxy chain.
 */
export interface JumpRule {
  readonly table: Table;
  readonly srcChain: string;
  readonly extraArgs: readonly string[];
  /** "" = no comment match. */
  readonly comment: string;
  readonly dstChain: string;
}

/** `extraArgs ++ -m comment --comment C ++ -j dst`, as upstream passes to EnsureRule/DeleteRule. */
export function jumpRuleArgs(row: JumpRule): string[] {
  const args = [...row.extraArgs];
  if (row.comment !== "") args.push("-m", "comment", "--comment", row.comment);
  args.push("-j", row.dstChain);
  return args;
}

/**
 * What one table needs for its jump rules, read from that table's `iptables-save` output: the
 * `iptables-restore` section adding what is missing (`:CHAIN` for missing chains, `-I SRC 1 …`
 * in row order, which ends in the same order as prepending one by one; "" when nothing is
 * missing), or "uncertain" when a rule's target chain exists but the dump does not show the rule
 * as we would print it: this iptables might print it differently, so that table must go through
 * the one-command-at-a-time check, which never duplicates a rule.
 */
export function jumpRulesSection(
  rows: readonly JumpRule[],
  table: Table,
  dump: string,
): string | "uncertain" {
  const lines = saveSectionLines(dump, table);
  const chains = new Set(chainsOfSection(lines));
  const present = new Set(lines);
  const declare = new Set<string>();
  const inserts: string[] = [];
  for (const row of rows) {
    if (row.table !== table) continue;
    const args = jumpRuleArgs(row).map(quoteRuleArg).join(" ");
    if (present.has(`-A ${row.srcChain} ${args}`)) continue;
    if (chains.has(row.dstChain)) return "uncertain";
    declare.add(row.dstChain);
    inserts.push(`-I ${row.srcChain} 1 ${args}`);
  }
  if (inserts.length === 0) return "";
  return [`*${table}`, ...[...declare].map((c) => `:${c} - [0:0]`), ...inserts, "COMMIT", ""].join("\n");
}

/** The tables of `rows`, in the order of their first row. */
export function jumpRuleTables(rows: readonly JumpRule[]): Table[] {
  return [...new Set(rows.map((r) => r.table))];
}

/** Upstream EnsureChain + EnsureRule for each row of one table, one command at a time. */
export async function ensureJumpRulesOneByOne(
  ipt: IptablesInterface,
  rows: readonly JumpRule[],
  table: Table,
): Promise<void> {
  for (const row of rows) {
    if (row.table !== table) continue;
    await ipt.ensureChain(row.table, row.dstChain);
    await ipt.ensureRule("prepend", row.table, row.srcChain, jumpRuleArgs(row));
  }
}
