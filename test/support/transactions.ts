import {
  TransactionWriter,
  writtenTopLevel,
  type WrittenTopLevel,
} from "../../src/backends/iptables/transactions.ts";
import { payloadText } from "../../src/kernel/iptables.ts";
import type { RenderResult } from "../../src/backends/iptables/types.ts";

/** All transactions the proxier's `TransactionWriter` makes of a finished render, in order, as text. */
export function restoreTransactions(
  result: RenderResult,
  maxServicesPerTransaction: number,
  previous: WrittenTopLevel | null = null,
): string[] {
  const blocks = result.nat.serviceBlocks;
  if (blocks === null) throw new Error("restoreTransactions needs a render that kept its blocks");
  const writer = new TransactionWriter(
    maxServicesPerTransaction,
    previous,
    result.nat.fixedRuleLines,
    blocks.length,
  );
  const out: string[] = [];
  for (const block of blocks) {
    const transaction = writer.add(block);
    if (transaction !== null) out.push(payloadText(transaction));
  }
  out.push(...writer.finish(result, writtenTopLevel(result)).map(payloadText));
  return out;
}
