/**
 * ipvs mode's kernel reader for the see-inside tools: per family, one dump holding the IPVS
 * table (`ipvsadm -Ln --exact`, with the connection counts), the ipsets (`ipset save`) and the
 * rules with counters (`iptables-save -c`). The IPVS and ipset lines travel as `#ipvsadm ` and
 * `#ipset ` comment lines in front of the iptables-save text, so that every reader of
 * iptables-save dumps (the web view) still reads the rules, and `splitDump` gets all three back.
 */
import type { Runner } from "../../kernel/exec.ts";
import { localAddresses as readLocalAddresses } from "../../kernel/ip.ts";
import type { IptablesInterface } from "../../kernel/iptables.ts";
import type { InspectionSource } from "../../inspect/types.ts";

export interface DumpParts {
  readonly ipvsadm: string;
  readonly ipset: string;
  readonly iptables: string;
}

const lines = (text: string): string[] => text.split("\n").filter((l) => l !== "");

/** Joins the three parts of a dump (pure). */
export function joinDump(parts: DumpParts): string {
  return [
    ...lines(parts.ipvsadm).map((l) => `#ipvsadm ${l}`),
    ...lines(parts.ipset).map((l) => `#ipset ${l}`),
    ...lines(parts.iptables),
    "",
  ].join("\n");
}

/** Splits a dump made by `joinDump` (pure). */
export function splitDump(text: string): DumpParts {
  const ipvsadm: string[] = [];
  const ipset: string[] = [];
  const iptables: string[] = [];
  for (const line of lines(text)) {
    if (line.startsWith("#ipvsadm ")) ipvsadm.push(line.slice(9));
    else if (line.startsWith("#ipset ")) ipset.push(line.slice(7));
    else iptables.push(line);
  }
  const text_ = (l: string[]) => (l.length === 0 ? "" : l.join("\n") + "\n");
  return { ipvsadm: text_(ipvsadm), ipset: text_(ipset), iptables: text_(iptables) };
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
