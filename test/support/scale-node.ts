/**
 * A node namespace holding the rules of N synthetic Services (bench/synthetic.ts's cluster), as
 * a full sync leaves them: `render` of the objects (iptables: the node's whole ruleset, restored
 * with iptables-restore; nftables: the `nft -f` payload). For the see-inside tools at 10,000
 * Services (bench/explain.ts, test/e2e/web/), without running the daemon.
 */
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { renderCommand } from "../../src/cli/render.ts";
import type { Runner } from "../../src/kernel/exec.ts";
import { renderIptables } from "../../src/backends/iptables/render.ts";
import { buildProxyState } from "../../src/proxy/state.ts";
import {
  BENCH_NODE,
  benchSettings,
  nodeDump,
  syntheticCluster,
  syntheticManifests,
} from "../../bench/synthetic.ts";

export type ScaleMode = "iptables" | "nftables";

/**
 * Renders the cluster's rules for `mode` on the synthetic node (pure, in this process): what to
 * load, in order (iptables: the restore payload, then the built-in chains' jumps).
 */
export async function renderScaleRules(
  mode: ScaleMode,
  services: number,
  endpoints: number,
): Promise<string[]> {
  if (mode === "iptables") {
    // The restore payload plus the built-in chains' jumps: what iptables-save shows after a sync
    // (render --node-ruleset gives the same through the writer, a minute slower at 10,000).
    const cluster = syntheticCluster(services, endpoints);
    const { state } = buildProxyState(
      { services: cluster.services, endpointSlices: cluster.endpointSlices, node: null },
      { family: "IPv4", nodeName: BENCH_NODE },
    );
    const rendered = renderIptables({
      state,
      settings: benchSettings(),
      fullSync: true,
      changedServices: new Set(),
      existingNatChains: [],
    });
    return [rendered.payload, nodeDump("")];
  }
  const dir = mkdtempSync(join(tmpdir(), "kpt-scale-"));
  try {
    const { node, byNamespace } = syntheticManifests(services, endpoints);
    writeFileSync(join(dir, "node.json"), JSON.stringify(node));
    for (const [ns, objects] of byNamespace)
      writeFileSync(
        join(dir, `${ns}.json`),
        JSON.stringify({ apiVersion: "v1", kind: "List", items: objects }),
      );
    return [
      await renderCommand({
        filename: [dir],
        proxyMode: mode,
        hostnameOverride: BENCH_NODE,
        ipFamily: "IPv4",
      }),
    ];
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/**
 * Loads rendered rules into `netns` (a fresh one: nothing of ours is there yet), each from a file.
 */
export async function loadScaleRules(
  runner: Runner,
  netns: string,
  mode: ScaleMode,
  inputs: readonly string[],
): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), "kpt-scale-load-"));
  try {
    for (const [i, text] of inputs.entries()) {
      const file = join(dir, `${i}.rules`);
      writeFileSync(file, text);
      // The jumps go into the built-in chains beside what the payload created.
      const argv =
        mode === "nftables"
          ? ["nft", "-f", file]
          : i === 0
            ? ["iptables-restore", file]
            : ["iptables-restore", "--noflush", file];
      await runner.run(argv, { netns, timeoutMs: 600_000 });
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
