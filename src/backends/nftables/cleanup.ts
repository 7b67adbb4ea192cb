/**
 * What nftables mode leaves in the kernel, removed (upstream nftables `CleanupLeftovers`): its
 * two tables, `ip kube-proxy` and `ip6 kube-proxy`, whole. Any other table is foreign and stays.
 * Runs before this version can run the mode itself, because iptables mode's start-up cleans up a
 * node that ran nftables mode before, as upstream's does.
 */
import { Nft, type NftTable } from "../../kernel/nft.ts";
import type { CleanupReport, PlatformContext } from "../types.ts";

export const NFTABLES_TABLE = "kube-proxy";

/** The tables of ours among those listed (pure). */
export function ourTables(tables: readonly NftTable[]): NftTable[] {
  return tables.filter((t) => t.name === NFTABLES_TABLE && (t.family === "ip" || t.family === "ip6"));
}

export async function cleanupNftables(ctx: PlatformContext): Promise<CleanupReport> {
  const nft = new Nft(ctx.runner);
  let tables: NftTable[];
  try {
    tables = await nft.listTables();
  } catch (err) {
    // No nft tool or no nf_tables in this kernel: there can be nothing of ours (upstream skips too).
    ctx.log.debug({ err }, "nftables not usable: no nftables leftovers to clean up");
    return { mode: "nftables", errors: [] };
  }
  const errors: unknown[] = [];
  for (const table of ourTables(tables)) {
    try {
      await nft.deleteTable(table);
      ctx.log.info(
        { table: `${table.family} ${table.name}` },
        "Deleted nftables table left by nftables mode",
      );
    } catch (err) {
      errors.push(err);
    }
  }
  return { mode: "nftables", errors };
}
