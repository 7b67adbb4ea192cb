/**
 * iptables mode's drift check: the kernel's `iptables-save` against the node ruleset the proxy
 * would leave now (node.ts), compared by meaning (../../netfilter/drift.ts).
 *
 * Ours are the chains of the intended ruleset and any stale per-Service chain (KUBE-SVC-…,
 * KUBE-SEP-…); in the built-in chains, ours are the jump rules the daemon ensures (and any other
 * rule jumping to one of our chains). Everything else is foreign: reported, never drift.
 */
import type { IPFamily } from "../../ip.ts";
import type { DriftReport } from "../../inspect/drift.ts";
import { PROXY_CANARY_CHAIN } from "../../kernel/canary.ts";
import { compareRulesets } from "../../netfilter/drift.ts";
import { parseIptablesSave } from "../../netfilter/iptables-save.ts";
import { isServiceChainName } from "./chains.ts";

/**
 * Compares the kernel's dump with the intended node ruleset, both `iptables-save` text of one
 * family; pure.
 */
export function iptablesDrift(intendedText: string, kernelText: string, family: IPFamily): DriftReport {
  const intended = parseIptablesSave(intendedText, { family });
  const kernel = parseIptablesSave(kernelText, { family });
  return compareRulesets(intended, kernel, {
    mode: "iptables",
    staleChain: isServiceChainName,
    // The canary is the kernel monitor's: it notices it gone and forces a full sync itself.
    ignoreChain: (name) => name === PROXY_CANARY_CHAIN,
  });
}
