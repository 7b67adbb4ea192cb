/**
 * ipvs mode's kernel reader for the see-inside tools: per family, one dump holding the IPVS
 * table (`ipvsadm -Ln --exact --stats` is not needed: -Ln carries the connection counts), the
 * ipsets (`ipset save`) and the rules with counters (`iptables-save -c`), each under a header
 * line `#### ipvsadm`, `#### ipset`, `#### iptables` so that readers can split them again.
 */
import type { Runner } from "../../kernel/exec.ts";
import { localAddresses as readLocalAddresses } from "../../kernel/ip.ts";
import type { IptablesInterface } from "../../kernel/iptables.ts";
import type { InspectionSource } from "../../inspect/types.ts";

export const DUMP_SECTIONS = ["ipvsadm", "ipset", "iptables"] as const;
export type DumpSection = (typeof DUMP_SECTIONS)[number];

/** Joins the three parts of a dump (pure). */
export function joinDump(parts: Readonly<Record<DumpSection, string>>): string {
  return DUMP_SECTIONS.map(
    (s) => `#### ${s}\n${parts[s].endsWith("\n") || parts[s] === "" ? parts[s] : parts[s] + "\n"}`,
  ).join("");
}

/** Splits a dump made by `joinDump` (pure); a missing part is "". */
export function splitDump(text: string): Record<DumpSection, string> {
  const out: Record<DumpSection, string> = { ipvsadm: "", ipset: "", iptables: "" };
  let current: DumpSection | null = null;
  for (const line of text.split("\n")) {
    const m = /^#### (ipvsadm|ipset|iptables)$/.exec(line);
    if (m !== null) {
      current = m[1] as DumpSection;
      continue;
    }
    if (current !== null) out[current] += `${line}\n`;
  }
  for (const s of DUMP_SECTIONS) out[s] = out[s].replace(/\n+$/, "\n").replace(/^\n$/, "");
  return out;
}

export function ipvsInspectionSource(
  runner: Runner,
  iptables: readonly Pick<IptablesInterface, "save">[],
  netns?: string,
): InspectionSource {
  const opts = { timeoutMs: 30_000, ...(netns === undefined ? {} : { netns }) };
  return {
    async read() {
      const [ipvs, sets] = await Promise.all([
        runner.run(["ipvsadm", "-Ln", "--exact"], opts),
        runner.run(["ipset", "save"], opts),
      ]);
      const dumps = await Promise.all(
        iptables.map(async (ipt) =>
          joinDump({
            ipvsadm: ipvs.stdout,
            ipset: sets.stdout,
            iptables: await ipt.save(undefined, { counters: true }),
          }),
        ),
      );
      const local = (await readLocalAddresses(runner, netns)).map((a) => a.replace(/\/\d+$/, ""));
      return { mode: "ipvs", dumps, localAddresses: local };
    },
  };
}
