import type { IptablesInterface, JumpRule } from "../../src/kernel/iptables.ts";
import { ensureJumpRulesOneByOne, jumpRuleTables, jumpRulesSection } from "../../src/kernel/iptables.ts";

/**
 * Installs the jump rules on their own, as a full sync does (the proxier puts the same sections
 * in front of its first transaction): each table read once with iptables-save, what is missing
 * added in one restore per table (`jumpRulesSection`), or rule by rule when the dump is unclear.
 */
export async function ensureJumpRules(ipt: IptablesInterface, rows: readonly JumpRule[]): Promise<void> {
  for (const table of jumpRuleTables(rows)) {
    const section = jumpRulesSection(rows, table, await ipt.save(table));
    if (section === "uncertain") await ensureJumpRulesOneByOne(ipt, rows, table);
    else if (section !== "") await ipt.restore(section, { noflush: true, counters: false });
  }
}
