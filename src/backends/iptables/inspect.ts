/** iptables mode's kernel reader for the see-inside tools: `iptables-save -c` per family. */
import type { Runner } from "../../kernel/exec.ts";
import { localAddresses as readLocalAddresses } from "../../kernel/ip.ts";
import type { IptablesInterface } from "../../kernel/iptables.ts";
import type { InspectionSource } from "../../inspect/types.ts";

/**
 * Reads the live rules with counters through the iptables wrappers (one per IP family the proxy
 * runs, with the backend it detected: its save tool knows where the rules are) and the node's
 * addresses, in `netns` when given.
 */
export function iptablesInspectionSource(
  runner: Runner,
  iptables: readonly Pick<IptablesInterface, "save">[],
  netns?: string,
): InspectionSource {
  return {
    async read() {
      const dumps = await Promise.all(iptables.map((ipt) => ipt.save(undefined, { counters: true })));
      // `ip addr` gives address/prefix; the tracer wants bare addresses.
      const local = (await readLocalAddresses(runner, netns)).map((a) => a.replace(/\/\d+$/, ""));
      return { mode: "iptables", dumps, localAddresses: local };
    },
  };
}
