import { PROXY_CANARY_CHAIN } from "../../kernel/canary.ts";
import { chainsFromSave, jumpRuleArgs } from "../../kernel/iptables.ts";
import type { IptablesInterface, JumpRule, Table } from "../../kernel/iptables.ts";
import { isServiceChainName } from "./chains.ts";

/** kubelet owns KUBE-FIREWALL (it creates the same chain), so cleanup leaves it and its jumps alone. */
const KUBELET_SHARED_CHAIN = "KUBE-FIREWALL";

const CLEANUP_CHAINS: Readonly<Record<"nat" | "filter", readonly string[]>> = {
  nat: ["KUBE-SERVICES", "KUBE-NODEPORTS", "KUBE-POSTROUTING", "KUBE-MARK-MASQ", PROXY_CANARY_CHAIN],
  filter: [
    "KUBE-SERVICES",
    "KUBE-EXTERNAL-SERVICES",
    "KUBE-FORWARD",
    "KUBE-NODEPORTS",
    "KUBE-PROXY-FIREWALL",
    PROXY_CANARY_CHAIN,
  ],
};

/** The restore payload flushing and deleting every kube-proxy chain present in `existing` (pure). */
export function cleanupPayload(table: "nat" | "filter", existing: readonly string[]): string | null {
  const present = new Set(existing);
  const doomed = [
    ...CLEANUP_CHAINS[table].filter((c) => present.has(c)),
    ...existing.filter((c) => isServiceChainName(c)),
  ];
  if (doomed.length === 0) return null;
  const lines = [
    `*${table}`,
    ...doomed.map((c) => `:${c} - [0:0]`),
    ...doomed.map((c) => `-X ${c}`),
    "COMMIT",
    "",
  ];
  return lines.join("\n");
}

export interface CleanupResult {
  /** Every failure met on the way; cleanup carries on past each one, as upstream does. */
  readonly errors: readonly unknown[];
}

/**
 * Upstream `CleanupLeftovers` for one family: remove the jump rules from built-in chains, then
 * flush and delete kube-proxy's nat and filter chains in one restore each, then the mangle
 * canary. Foreign chains and rules are never touched.
 */
export async function cleanupLeftovers(
  ipt: IptablesInterface,
  jumpRows: readonly JumpRule[],
): Promise<CleanupResult> {
  const errors: unknown[] = [];
  for (const row of jumpRows) {
    if (row.dstChain === KUBELET_SHARED_CHAIN) continue;
    try {
      await ipt.deleteRule(row.table, row.srcChain, jumpRuleArgs(row));
    } catch (err) {
      errors.push(err);
    }
  }
  for (const table of ["nat", "filter"] as const) {
    try {
      const payload = cleanupPayload(table, chainsFromSave(await ipt.save(table), table));
      if (payload !== null) await ipt.restore(payload, { noflush: true, counters: true });
    } catch (err) {
      errors.push(err);
    }
  }
  const mangle: Table = "mangle";
  await ipt.deleteChain(mangle, PROXY_CANARY_CHAIN).catch(() => undefined);
  return { errors };
}
