import type { KubeProxyConfiguration } from "../../config/types.ts";
import {
  formatMasqueradeMark,
  nodeModelFor,
  UPSTREAM_TEST_LOCAL_ADDRESSES,
  type NodeInfo,
} from "../../proxy/node.ts";
import { familyOf, type IPFamily } from "../../ip.ts";
import type { NftablesSettings } from "./types.ts";

/**
 * The settings of one family on a real node. nftables mode reads its own configuration section
 * (`nftables.masqueradeBit`, `nftables.masqueradeAll`); `--masquerade-all` writes the iptables
 * section, so either turns it on. Upstream defaults `--nodeport-addresses` to `primary` in this
 * mode (`platformApplyDefaults`): NodePorts answer on the node's primary IPs only.
 * `serviceCIDRs` holds both families' (ServiceCIDR objects or --service-cluster-ip-range).
 */
export function nftablesSettingsFor(
  config: KubeProxyConfiguration,
  node: NodeInfo,
  family: IPFamily,
  localAddresses: readonly string[],
  serviceCIDRs: readonly string[],
): NftablesSettings {
  const effective: KubeProxyConfiguration = {
    ...config,
    nodePortAddresses: config.nodePortAddresses ?? ["primary"],
  };
  return {
    ...nodeModelFor(effective, node, family, localAddresses),
    masqueradeMark: formatMasqueradeMark(config.nftables.masqueradeBit),
    masqueradeAll: config.nftables.masqueradeAll || config.iptables.masqueradeAll,
    serviceCIDRs: serviceCIDRsOf(serviceCIDRs, family),
  };
}

/** This family's Service CIDRs (upstream `OnServiceCIDRsChanged` filters the same way). */
export function serviceCIDRsOf(cidrs: readonly string[], family: IPFamily): string[] {
  return cidrs.filter((c) => familyOf(c) === family);
}

/** The node of upstream's nftables unit-test fake proxier (`NewFakeProxier` in proxier_test.go). */
export function upstreamTestSettings(family: IPFamily): NftablesSettings {
  const ipv4 = family === "IPv4";
  return {
    family,
    nodeName: "test-node",
    nodeIP: ipv4 ? "192.168.0.2" : "2001:db8::1",
    masqueradeMark: "0x4000",
    masqueradeAll: false,
    localDetector: { mode: "ClusterCIDR", cidr: ipv4 ? "10.0.0.0/8" : "fd00:10::/64" },
    nodePortAddresses: ["192.168.0.2/32", "2001:db8::1/128"],
    localAddresses: UPSTREAM_TEST_LOCAL_ADDRESSES,
    serviceCIDRs: [ipv4 ? "172.30.0.0/16" : "fd00:10:96::/112"],
  };
}
