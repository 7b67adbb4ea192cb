import { KUBE_MARK_MASQ } from "./chains.ts";
import type { RenderResult } from "./types.ts";

/**
 * Splits one sync into iptables-restore transactions.
 *
 * The kernel tools' cost grows super-linearly with the size of one payload (iptables-nft
 * restore of 10,000 Services in one piece does not finish in useful time) and roughly linearly
 * with bounded pieces. Up to `maxServicesPerTransaction` rewritten Services, the result is the
 * single payload upstream writes, byte for byte. Beyond that, the per-Service chains go first in
 * bounded transactions, and one last transaction swaps in the capture rules, the filter table and
 * the stale-chain deletions. Ordering keeps every intermediate kernel state consistent:
 *   - a Service's chains (EXT → FW → SVC/SVL → SEP) always travel together, so every jump inside a
 *     transaction lands on a chain created in the same or an earlier transaction;
 *   - no capture rule points at a new chain before that chain exists, because capture rules only
 *     change in the last transaction;
 *   - stale chains are deleted only in the last transaction, after the capture rules that could
 *     reach them are gone.
 * KUBE-MARK-MASQ (jumped to from service chains) is declared and refilled in every chunk, so a
 * first sync on a clean host works too; re-declaring it inside one atomic restore never leaves it
 * empty for a packet.
 */
export function restoreTransactions(result: RenderResult, maxServicesPerTransaction: number): string[] {
  const blocks = result.nat.serviceBlocks;
  if (blocks.length <= maxServicesPerTransaction) return [result.payload];

  const markMasqRule = result.nat.fixedRuleLines.find((l) => l.startsWith(`-A ${KUBE_MARK_MASQ} `));
  const transactions: string[] = [];
  for (let start = 0; start < blocks.length; start += maxServicesPerTransaction) {
    const chunk = blocks.slice(start, start + maxServicesPerTransaction);
    const lines = ["*nat", `:${KUBE_MARK_MASQ} - [0:0]`];
    for (const block of chunk) lines.push(...block.chainLines);
    if (markMasqRule !== undefined) lines.push(markMasqRule);
    for (const block of chunk) lines.push(...block.ruleLines);
    lines.push("COMMIT");
    transactions.push(lines.join("\n") + "\n");
  }

  const final = [
    "*filter",
    ...result.filter.chainLines,
    ...result.filter.ruleLines,
    "COMMIT",
    "*nat",
    ...result.nat.topChainLines,
    ...result.nat.deletedChains.map((c) => `:${c} - [0:0]`),
    ...result.nat.fixedRuleLines,
    ...result.nat.captureRuleLines,
    ...result.nat.deletedChains.map((c) => `-X ${c}`),
    ...result.nat.tailRuleLines,
    "COMMIT",
  ];
  transactions.push(final.join("\n") + "\n");
  return transactions;
}
