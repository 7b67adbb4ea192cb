import { JUMP_CHAINS } from "../../src/backends/iptables/chains.ts";
import type { IptablesInterface, JumpRule } from "../../src/kernel/iptables.ts";
import { ensureJumpRulesOneByOne, jumpRuleTables, jumpRulesSection } from "../../src/kernel/iptables.ts";

/**
 * Installs the jump rules on their own, as a full sync does (the proxier puts the same sections
 * in front of the transaction that carries its top level): each table read once with iptables-save, what is missing
 * added in one restore per table (`jumpRulesSection`), or rule by rule when the dump is unclear.
 */
export async function ensureJumpRules(ipt: IptablesInterface, rows: readonly JumpRule[]): Promise<void> {
  for (const table of jumpRuleTables(rows)) {
    const section = jumpRulesSection(rows, table, await ipt.save(table));
    if (section === "uncertain") await ensureJumpRulesOneByOne(ipt, rows, table);
    else if (section !== "") await ipt.restore(section, { noflush: true, counters: false });
  }
}

/**
 * The rows of the proxier's own jump-rule table (`JUMP_CHAINS`, upstream order) for the given
 * `table srcChain>dstChain` pairs, e.g. `"nat OUTPUT>KUBE-SERVICES"`; throws on a pair it lacks.
 */
export function jumpRows(...pairs: readonly string[]): JumpRule[] {
  const key = (r: JumpRule) => `${r.table} ${r.srcChain}>${r.dstChain}`;
  for (const pair of pairs) {
    if (!JUMP_CHAINS.some((r) => key(r) === pair)) throw new Error(`no jump rule ${pair} in JUMP_CHAINS`);
  }
  return JUMP_CHAINS.filter((r) => pairs.includes(key(r)));
}
