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
 *
 * `unchangedTopLevel`: the caller knows the kernel already holds exactly `topLevelTransaction`
 * (it wrote it in the last successful sync and nothing flushed it since). Then only the rewritten
 * Services' chains are written: on a 10,000-Service node an endpoint change no longer rewrites
 * 10,000 capture rules (upstream's partial sync does; the resulting kernel state is the same).
 */
export function restoreTransactions(
  result: RenderResult,
  maxServicesPerTransaction: number,
  unchangedTopLevel = false,
): string[] {
  if (unchangedTopLevel) return serviceChunks(result, maxServicesPerTransaction, true);
  if (result.nat.serviceBlocks.length <= maxServicesPerTransaction) return [result.payload];
  return [...serviceChunks(result, maxServicesPerTransaction, false), topLevelTransaction(result, true)];
}

/**
 * The service chains in transactions of at most `max` Services. With `deletions`, the stale
 * chains are flushed and deleted at the end of the last one: by then every chain that referred
 * to them has been rewritten (a stale chain still referred to from a capture rule means the
 * capture rules changed, and then this path is not taken).
 */
function serviceChunks(result: RenderResult, max: number, deletions: boolean): string[] {
  const blocks = result.nat.serviceBlocks;
  const stale = deletions ? result.nat.deletedChains : [];
  const markMasqRule = result.nat.fixedRuleLines.find((l) => l.startsWith(`-A ${KUBE_MARK_MASQ} `));
  const transactions: string[] = [];
  const chunkCount = Math.max(Math.ceil(blocks.length / max), stale.length > 0 ? 1 : 0);
  for (let i = 0; i < chunkCount; i++) {
    const chunk = blocks.slice(i * max, (i + 1) * max);
    const last = i === chunkCount - 1;
    const parts = [`*nat\n:${KUBE_MARK_MASQ} - [0:0]\n`];
    for (const block of chunk) parts.push(block.chainText);
    if (last) for (const c of stale) parts.push(`:${c} - [0:0]\n`);
    if (markMasqRule !== undefined) parts.push(`${markMasqRule}\n`);
    for (const block of chunk) parts.push(block.ruleText);
    if (last) for (const c of stale) parts.push(`-X ${c}\n`);
    parts.push("COMMIT\n");
    transactions.push(parts.join(""));
  }
  return transactions;
}

/**
 * Everything in a sync that is not a rewritten Service's own chains: the filter table, nat's
 * top-level chains with the capture rules, the nodeport tail and (`deletions`) the stale-chain
 * deletions. Without deletions it is what a caller compares with the last successful sync: when
 * identical, the kernel already holds it.
 */
export function topLevelTransaction(result: RenderResult, deletions: boolean): string {
  const stale = deletions ? result.nat.deletedChains : [];
  const lines = [
    "*filter",
    ...result.filter.chainLines,
    ...result.filter.ruleLines,
    "COMMIT",
    "*nat",
    ...result.nat.topChainLines,
    ...stale.map((c) => `:${c} - [0:0]`),
    ...result.nat.fixedRuleLines,
    ...result.nat.captureRuleLines,
    ...stale.map((c) => `-X ${c}`),
    ...result.nat.tailRuleLines,
    "COMMIT",
  ];
  return lines.join("\n") + "\n";
}
