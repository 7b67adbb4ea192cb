/** The `nft` tool, for what the proxy needs of it outside nftables mode's own writer. */
import type { Runner } from "./exec.ts";

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

export class Nft {
  constructor(
    private readonly runner: Runner,
    private readonly netns?: string,
  ) {}

  private run(args: readonly string[]) {
    return this.runner.run(["nft", ...args], {
      timeoutMs: 30_000,
      ...(this.netns === undefined ? {} : { netns: this.netns }),
    });
  }

  async listTables(): Promise<NftTable[]> {
    return parseTableList((await this.run(["list", "tables"])).stdout);
  }

  async deleteTable(table: NftTable): Promise<void> {
    await this.run(["delete", "table", table.family, table.name]);
  }
}
