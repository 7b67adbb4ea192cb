/**
 * A node namespace holding the rules of N synthetic Services (bench/synthetic.ts's cluster), as
 * a full sync leaves them (iptables: the node's whole ruleset, restored with iptables-restore;
 * nftables: the table, written over netlink in bounded transactions). For the see-inside tools at 10,000
 * Services (bench/explain.ts, test/e2e/web/), without running the daemon.
 */
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { Runner } from "../../src/kernel/exec.ts";
import { renderIptables } from "../../src/backends/iptables/render.ts";
import { NetlinkNftablesKernel } from "../../src/backends/nftables/netlink-kernel.ts";
import { renderNftables } from "../../src/backends/nftables/render.ts";
import { planChunkedFullSync, planFullSync } from "../../src/backends/nftables/transactions.ts";
import type { NftablesRuleset, NftablesSettings } from "../../src/backends/nftables/types.ts";
import { buildProxyState } from "../../src/proxy/state.ts";
import { BENCH_NODE, benchSettings, nodeDump, syntheticCluster } from "../../bench/synthetic.ts";

export type ScaleMode = "iptables" | "nftables";

/** The rules of a scale node: iptables' restore payloads, or nftables mode's table. */
export type ScaleRules =
  | { readonly mode: "iptables"; readonly payloads: readonly string[] }
  | { readonly mode: "nftables"; readonly ruleset: NftablesRuleset };

/** The synthetic node's nftables settings (those of benchSettings()). */
function nftablesBenchSettings(): NftablesSettings {
  const b = benchSettings();
  return {
    family: "IPv4",
    nodeName: b.nodeName,
    nodeIP: b.nodeIP,
    masqueradeMark: b.masqueradeMark,
    masqueradeAll: false,
    localDetector: b.localDetector,
    nodePortAddresses: ["primary"],
    localAddresses: b.localAddresses,
    serviceCIDRs: [],
  };
}

/**
 * Renders the cluster's rules for `mode` on the synthetic node (pure, in this process):
 * iptables: the restore payload, then the built-in chains' jumps; nftables: the table.
 */
export function renderScaleRules(mode: ScaleMode, services: number, endpoints: number): ScaleRules {
  const cluster = syntheticCluster(services, endpoints);
  const { state } = buildProxyState(
    { services: cluster.services, endpointSlices: cluster.endpointSlices, node: null },
    { family: "IPv4", nodeName: BENCH_NODE },
  );
  if (mode === "iptables") {
    // The restore payload plus the built-in chains' jumps: what iptables-save shows after a sync
    // (render --node-ruleset gives the same through the writer, a minute slower at 10,000).
    const rendered = renderIptables({
      state,
      settings: benchSettings(),
      fullSync: true,
      changedServices: new Set(),
      existingNatChains: [],
    });
    return { mode, payloads: [rendered.payload, nodeDump("")] };
  }
  return { mode, ruleset: renderNftables({ state, settings: nftablesBenchSettings() }) };
}

/**
 * Loads rendered rules into `netns` (a fresh one: nothing of ours is there yet). iptables: each
 * payload from a file with iptables-restore; nftables: with the netlink writer in 250-Service
 * transactions, as the proxier's full sync does (one `nft -f` of 10,000 Services takes the
 * kernel minutes: docs/nftables-mode.md).
 */
export async function loadScaleRules(runner: Runner, netns: string, rules: ScaleRules): Promise<void> {
  if (rules.mode === "nftables") {
    const kernel = new NetlinkNftablesKernel({ family: "ip", netns });
    try {
      const chunked = planChunkedFullSync(rules.ruleset, null, null, true, {
        resetBaseChains: true,
        servicesPerTransaction: 250,
      });
      await kernel.applyAll(
        chunked?.transactions ?? [planFullSync(rules.ruleset, null, { resetBaseChains: true })],
      );
    } finally {
      kernel.close();
    }
    return;
  }
  const dir = mkdtempSync(join(tmpdir(), "kpt-scale-load-"));
  try {
    for (const [i, text] of rules.payloads.entries()) {
      const file = join(dir, `${i}.rules`);
      writeFileSync(file, text);
      // The jumps go into the built-in chains beside what the payload created.
      const argv = i === 0 ? ["iptables-restore", file] : ["iptables-restore", "--noflush", file];
      await runner.run(argv, { netns, timeoutMs: 600_000 });
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
