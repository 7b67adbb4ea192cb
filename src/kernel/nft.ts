/**
 * The `nft` tool: transactions fed on stdin (`nft -f -`, one atomic batch), the listing of the
 * tables (and, for the see-inside tools, of the whole table as JSON), the probe
 * that nf_tables works here, and table deletion for cleanup.
 */
import { KubeProxyError } from "../errors.ts";
import { ExecError, type Runner } from "./exec.ts";

export type NftFamily = "ip" | "ip6" | "inet" | "arp" | "bridge" | "netdev";

export interface NftTable {
  readonly family: NftFamily;
  readonly name: string;
}

/** `nft list tables` output: one `table FAMILY NAME` line per table. */
export function parseTableList(output: string): NftTable[] {
  const tables: NftTable[] = [];
  for (const line of output.split("\n")) {
    const m = /^table (ip|ip6|inet|arp|bridge|netdev) (\S+)$/.exec(line.trim());
    if (m !== null) tables.push({ family: m[1] as NftFamily, name: m[2]! });
  }
  return tables;
}

/**
 * `nft -j list chains|sets FAMILY` output reduced to the objects of one table (the listing
 * covers every table of the family; foreign ones are skipped).
 */
export function parseObjectNames(json: string, kind: "chain" | "set", table: string): string[] {
  const parsed = JSON.parse(json) as { nftables?: Array<Record<string, { table?: string; name?: string }>> };
  const names: string[] = [];
  for (const item of parsed.nftables ?? []) {
    const obj = item[kind];
    if (obj !== undefined && obj.table === table && typeof obj.name === "string") names.push(obj.name);
  }
  return names;
}

/** nft refused a transaction; carries the command nft named (its `-f` line) when it named one. */
export class NftTransactionError extends KubeProxyError {
  readonly code = "KPT_NFT_TRANSACTION";

  constructor(
    readonly stderr: string,
    /** 1-based line of the payload nft reported, or null. */
    readonly line: number | null,
    /** That line of the payload, or null. */
    readonly command: string | null,
    options?: { cause?: unknown },
  ) {
    const where = command === null ? "" : ` (line ${line}: ${command})`;
    super(`nft -f rejected the transaction${where}: ${stderr.trim()}`, options);
  }
}

/** The payload line nft's error names (`/dev/stdin:LINE:COL-COL: Error: …`). */
export function failingLine(stderr: string, payload: string): { line: number; command: string } | null {
  const m = /(?:^|\n)[^\n:]*:(\d+):\d+(?:-\d+)?: Error:/.exec(stderr);
  if (m === null) return null;
  const line = Number(m[1]);
  const command = payload.split("\n")[line - 1];
  return command === undefined ? null : { line, command };
}

export class Nft {
  constructor(
    private readonly runner: Runner,
    private readonly netns?: string,
  ) {}

  private run(args: readonly string[], stdin?: string, timeoutMs = 30_000) {
    return this.runner.run(["nft", ...args], {
      timeoutMs,
      ...(stdin === undefined ? {} : { stdin }),
      ...(this.netns === undefined ? {} : { netns: this.netns }),
    });
  }

  async listTables(): Promise<NftTable[]> {
    return parseTableList((await this.run(["list", "tables"])).stdout);
  }

  async deleteTable(table: NftTable): Promise<void> {
    await this.run(["delete", "table", table.family, table.name]);
  }

  /** Runs one transaction: all of `payload` or nothing (the kernel's batch semantics). */
  async apply(payload: string, timeoutMs = 600_000): Promise<void> {
    try {
      await this.run(["-f", "-"], payload, timeoutMs);
    } catch (err) {
      if (!(err instanceof ExecError) || err.reason !== "exit") throw err;
      const at = failingLine(err.stderr, payload);
      throw new NftTransactionError(err.stderr, at?.line ?? null, at?.command ?? null, { cause: err });
    }
  }

  /**
   * Upstream's platform check (knftables `Check`, i.e. `nft --check`): adding our table, which
   * the kernel validates without committing. A table that exists already (a restart over our
   * own) is left as it is: an add-and-delete transaction would delete it, and every Service
   * with it until the first sync.
   */
  async probe(family: "ip" | "ip6", table: string): Promise<void> {
    await this.run(["--check", "-f", "-"], `add table ${family} ${table}\n`, 30_000);
  }

  async version(): Promise<string> {
    return (await this.run(["--version"])).stdout.trim();
  }
}
