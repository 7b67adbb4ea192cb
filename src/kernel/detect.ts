import type { Runner } from "./exec.ts";

export type DetectedBackend = "legacy" | "nft";

export interface BackendDetection {
  readonly backend: DetectedBackend;
  readonly reason: string;
}

/** Canary/hint chains that kubelet (≥ 1.17) creates in whichever backend the node really uses. */
const HINT_CHAIN = /^:(KUBE-IPTABLES-HINT|KUBE-KUBELET-CANARY)\s/m;

export interface DetectOptions {
  readonly netns?: string;
  readonly timeoutMs?: number;
}

/**
 * Pure decision of upstream iptables-wrappers, given the two backends' save outputs. `nftAll`
 * null: not read, because iptables-legacy holds no rule (nft wins whatever it holds).
 */
export function chooseBackend(saves: {
  readonly nftMangle: string;
  readonly legacyAll: string;
  readonly nftAll: string | null;
}): BackendDetection {
  if (HINT_CHAIN.test(saves.nftMangle)) {
    return { backend: "nft", reason: "kubelet hint/canary chain found in iptables-nft mangle table" };
  }
  if (HINT_CHAIN.test(saves.legacyAll)) {
    return { backend: "legacy", reason: "kubelet hint/canary chain found in iptables-legacy" };
  }
  if (saves.nftAll === null) return { backend: "nft", reason: "iptables-legacy holds no rules" };
  const legacyRules = countRules(saves.legacyAll);
  const nftRules = countRules(saves.nftAll);
  if (legacyRules > nftRules) {
    return { backend: "legacy", reason: `iptables-legacy has more rules (${legacyRules} > ${nftRules})` };
  }
  return { backend: "nft", reason: `iptables-nft has at least as many rules (${nftRules} ≥ ${legacyRules})` };
}

function countRules(saveOutput: string): number {
  let n = 0;
  for (const line of saveOutput.split("\n")) if (line.startsWith("-")) n++;
  return n;
}

/**
 * Which iptables backend the node uses (upstream iptables-wrappers): a kubelet hint chain in
 * one backend wins; else the backend holding more rules; else nft. nft's rules are counted only
 * when legacy holds some (without, nft wins anyway). Both families are looked at,
 * and a backend whose tools are missing or fail just contributes nothing.
 */
export async function detectBackend(runner: Runner, options: DetectOptions = {}): Promise<BackendDetection> {
  const save = async (argv: string[]): Promise<string> => {
    try {
      const result = await runner.run(argv, { netns: options.netns, timeoutMs: options.timeoutMs ?? 5_000 });
      return result.stdout;
    } catch {
      return "";
    }
  };
  const both = async (argvs: string[][]): Promise<string> => (await Promise.all(argvs.map(save))).join("\n");
  // The hint chains in nft's mangle table, each listed on its own: `iptables-nft-save -t mangle`
  // reads every table first (11 s at 10,000 Services here). `-t mangle` is only passed to nft:
  // for legacy it would make the kernel create that table.
  const hint = async (tool: string, chain: string): Promise<string> => {
    try {
      const result = await runner.run([tool, "-t", "mangle", "-S", chain], {
        netns: options.netns,
        timeoutMs: options.timeoutMs ?? 5_000,
        okExitCodes: [0, 1],
      });
      return result.exitCode === 0 ? `:${chain} - [0:0]` : "";
    } catch {
      return "";
    }
  };
  const nftMangle = (
    await Promise.all(
      ["iptables-nft", "ip6tables-nft"].flatMap((tool) =>
        ["KUBE-IPTABLES-HINT", "KUBE-KUBELET-CANARY"].map((chain) => hint(tool, chain)),
      ),
    )
  ).join("\n");
  const legacyAll = await both([["iptables-legacy-save"], ["ip6tables-legacy-save"]]);
  // Counting nft's rules means saving all of them (seconds at 10,000 Services): only when legacy has some.
  const nftAll =
    countRules(legacyAll) === 0 && !HINT_CHAIN.test(legacyAll)
      ? null
      : await both([["iptables-nft-save"], ["ip6tables-nft-save"]]);
  return chooseBackend({ nftMangle, legacyAll, nftAll });
}
