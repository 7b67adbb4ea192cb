/**
 * iptables mode behind the backend contract. The pure parts (render, the rulesets reader, drift)
 * load with this module; the runtime (runtime.ts: platform checks, proxiers, canary, clean-up)
 * and the node-ruleset writer load when first used.
 */
import type { ProxyBackend, RenderTarget } from "../types.ts";
import { iptablesRulesets } from "./inspect.ts";
import { iptablesDrift } from "./drift.ts";
import { renderIptables } from "./render.ts";
import { iptablesSettingsFor, upstreamTestSettings } from "./settings.ts";

function targetSettings(target: RenderTarget) {
  return target.upstreamTestSettings
    ? upstreamTestSettings(target.family)
    : iptablesSettingsFor(target.config, target.node, target.family, {
        localAddresses: target.localAddresses,
        hasRandomFully: target.kernel.randomFully,
        conntrackTCPLiberal: false,
        nfacct: {
          ctStateInvalidDroppedPkts: target.kernel.nfacct,
          localhostNodePortsAcceptedPkts: target.kernel.nfacct,
        },
      });
}

function render(target: RenderTarget) {
  const result = renderIptables({
    state: target.state,
    settings: targetSettings(target),
    fullSync: true,
    changedServices: new Set(),
    existingNatChains: null,
  });
  return {
    consumer: target.family === "IPv4" ? "iptables-restore" : "ip6tables-restore",
    text: result.payload,
  };
}

async function renderNode(target: RenderTarget) {
  return {
    consumer: iptablesRulesets.dumpTool(target.family),
    text: await (await import("./node.ts")).nodeRulesetAfterSync(targetSettings(target), target.state),
  };
}

export const iptablesBackend: ProxyBackend = {
  mode: "iptables",
  open: async (ctx) => (await import("./runtime.ts")).open(ctx),
  cleanup: async (ctx) => (await import("./runtime.ts")).cleanup(ctx),
  render,
  renderNode,
  rulesets: iptablesRulesets,
  drift: iptablesDrift,
};
