/** iptables mode's kernel reader for the see-inside tools: `iptables-save -c` per family. */
import { InputError } from "../../errors.ts";
import { detectBackend, type BackendDetection } from "../../kernel/detect.ts";
import type { Runner } from "../../kernel/exec.ts";
import { localAddresses as readLocalAddresses } from "../../kernel/ip.ts";
import { Iptables, type IptablesInterface } from "../../kernel/iptables.ts";
import type { IPFamily } from "../../ip.ts";
import { parseIptablesSave } from "../../netfilter/iptables-save.ts";
import { RulesetParseError, type Ruleset } from "../../netfilter/model.ts";
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

/** Parses a dump; a line the parser rejects is named together with where the dump came from. */
export function parseRuleset(text: string, origin: string, family?: IPFamily): Ruleset {
  try {
    return parseIptablesSave(text, family === undefined ? {} : { family });
  } catch (error) {
    if (error instanceof RulesetParseError) throw new InputError(origin, error.message, { cause: error });
    throw error;
  }
}

/**
 * The node's live rules as the daemon sees them: the backend (nft or legacy) is detected the way
 * the daemon detects it, so a host whose unsuffixed `iptables` points at the other backend is
 * still read where kube-proxy-ts writes.
 */
export interface LiveKernel {
  readonly detection: BackendDetection;
  /** e.g. `iptables-nft-save -c`. */
  saveCommand(family: IPFamily): string;
  /** That family's save output with counters, parsed. */
  ruleset(family: IPFamily): Promise<Ruleset>;
}

export async function liveKernel(runner: Runner): Promise<LiveKernel> {
  const detection = await detectBackend(runner);
  const iptables = (family: IPFamily): Iptables =>
    new Iptables({ runner, family, backend: detection.backend });
  const saveCommand = (family: IPFamily): string => `${iptables(family).binaries.save} -c`;
  return {
    detection,
    saveCommand,
    async ruleset(family) {
      const dump = await iptables(family).save(undefined, { counters: true });
      return parseRuleset(dump, saveCommand(family), family);
    },
  };
}
