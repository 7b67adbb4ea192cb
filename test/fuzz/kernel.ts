/**
 * The sampled kernel check of the fuzz campaign: rendered payloads handed to the real
 * `iptables-restore --test` / `nft -c -f` inside a throwaway network namespace
 * (`kpt-fuzz-<random>`, deleted afterwards even on failure or Ctrl-C). Needs root.
 */
import { spawnSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import type { KernelSample } from "./campaign.ts";

export interface KernelVerdict {
  readonly sample: KernelSample;
  readonly accepted: boolean;
  readonly output: string;
}

function run(argv: readonly string[], input?: string): { status: number | null; output: string } {
  const r = spawnSync(argv[0]!, argv.slice(1), {
    input,
    encoding: "utf8",
    timeout: 30_000,
    maxBuffer: 64 * 1024 * 1024,
  });
  return { status: r.status, output: `${r.stdout ?? ""}${r.stderr ?? ""}${r.error?.message ?? ""}` };
}

export function checkInKernel(samples: readonly KernelSample[]): {
  netns: string;
  verdicts: KernelVerdict[];
} {
  const netns = `kpt-fuzz-${randomBytes(4).toString("hex")}`;
  const add = run(["ip", "netns", "add", netns]);
  if (add.status !== 0) throw new Error(`ip netns add ${netns}: ${add.output}`);
  const cleanup = (): void => {
    run(["ip", "netns", "delete", netns]);
  };
  const onSignal = (): void => {
    cleanup();
    process.exit(130);
  };
  process.once("SIGINT", onSignal);
  process.once("SIGTERM", onSignal);
  try {
    // nft resolves `iif NAME` when the rule is loaded: the bridge the BridgeInterface settings
    // variant names must exist (in this namespace only).
    const link = run(["ip", "-n", netns, "link", "add", "cbr0", "type", "veth", "peer", "name", "cbr0-peer"]);
    if (link.status !== 0) throw new Error(`ip link add cbr0 in ${netns}: ${link.output}`);
    const verdicts: KernelVerdict[] = [];
    for (const sample of samples.slice(0, 100)) {
      const argv =
        sample.mode === "nftables"
          ? ["nft", "-c", "-f", "-"]
          : [sample.family === "IPv4" ? "iptables-restore" : "ip6tables-restore", "--test", "--noflush"];
      const r = run(["ip", "netns", "exec", netns, ...argv], sample.payload);
      verdicts.push({ sample, accepted: r.status === 0, output: r.output.slice(0, 2000) });
    }
    return { netns, verdicts };
  } finally {
    process.removeListener("SIGINT", onSignal);
    process.removeListener("SIGTERM", onSignal);
    cleanup();
  }
}
