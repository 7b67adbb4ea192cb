import { TransactionWriter, type WrittenTopLevel } from "../../src/backends/iptables/transactions.ts";
import type { RenderResult } from "../../src/backends/iptables/types.ts";

/** All transactions the proxier's `TransactionWriter` makes of a finished render, in order. */
export function restoreTransactions(
  result: RenderResult,
  maxServicesPerTransaction: number,
  previous: WrittenTopLevel | null = null,
): string[] {
  const blocks = result.nat.serviceBlocks;
  const writer = new TransactionWriter(
    maxServicesPerTransaction,
    previous,
    result.nat.fixedRuleLines,
    blocks.length,
  );
  const out: string[] = [];
  for (const block of blocks) {
    const transaction = writer.add(block);
    if (transaction !== null) out.push(transaction);
  }
  out.push(...writer.finish(result));
  return out;
}
