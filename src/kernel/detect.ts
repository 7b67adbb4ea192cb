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

/** Pure decision of upstream iptables-wrappers, given the two backends' save outputs. */
export function chooseBackend(saves: {
  readonly nftMangle: string;
  readonly legacyAll: string;
  readonly nftAll: string;
}): BackendDetection {
  if (HINT_CHAIN.test(saves.nftMangle)) {
    return { backend: "nft", reason: "kubelet hint/canary chain found in iptables-nft mangle table" };
  }
  if (HINT_CHAIN.test(saves.legacyAll)) {
    return { backend: "legacy", reason: "kubelet hint/canary chain found in iptables-legacy" };
  }
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
 * one backend wins; else the backend holding more rules; else nft. Both families are looked at,
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
  // `-t mangle` is only passed to nft: for legacy it would make the kernel create that table.
  const nftMangle = await both([
    ["iptables-nft-save", "-t", "mangle"],
    ["ip6tables-nft-save", "-t", "mangle"],
  ]);
  const legacyAll = await both([["iptables-legacy-save"], ["ip6tables-legacy-save"]]);
  const nftAll = await both([["iptables-nft-save"], ["ip6tables-nft-save"]]);
  return chooseBackend({ nftMangle, legacyAll, nftAll });
}
