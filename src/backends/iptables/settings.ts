import type { KubeProxyConfiguration } from "../../config/types.ts";
import { nodeModelFor, UPSTREAM_TEST_LOCAL_ADDRESSES, type NodeInfo } from "../../proxy/node.ts";
import type { IPFamily } from "../../ip.ts";
import type { IptablesSettings } from "./types.ts";

/** Facts read from the kernel at start-up that change the rules. */
export interface KernelFacts {
  /** Addresses on the node's interfaces (CIDR notation or bare IPs). */
  readonly localAddresses: readonly string[];
  readonly hasRandomFully: boolean;
  readonly conntrackTCPLiberal: boolean;
  readonly nfacct: IptablesSettings["nfacct"];
}

export function iptablesSettingsFor(
  config: KubeProxyConfiguration,
  node: NodeInfo,
  family: IPFamily,
  kernel: KernelFacts,
): IptablesSettings {
  return {
    ...nodeModelFor(config, node, family, kernel.localAddresses),
    localhostNodePorts: config.iptables.localhostNodePorts,
    conntrackTCPLiberal: config.conntrack.tcpBeLiberal || kernel.conntrackTCPLiberal,
    nfacct: kernel.nfacct,
    hasRandomFully: kernel.hasRandomFully,
    largeClusterEndpointsThreshold: 1000,
  };
}

/** The node and kernel of upstream's unit-test fake proxier (docs/iptables.md §6.1). */
export function upstreamTestSettings(family: IPFamily): IptablesSettings {
  return {
    family,
    nodeName: "test-node",
    nodeIP: family === "IPv4" ? "192.168.0.2" : "2001:db8::1",
    masqueradeMark: "0x4000",
    masqueradeAll: false,
    localDetector: { mode: "ClusterCIDR", cidr: family === "IPv4" ? "10.0.0.0/8" : "fd00:10::/64" },
    localhostNodePorts: true,
    nodePortAddresses: [],
    localAddresses: UPSTREAM_TEST_LOCAL_ADDRESSES,
    conntrackTCPLiberal: false,
    nfacct: { ctStateInvalidDroppedPkts: true, localhostNodePortsAcceptedPkts: true },
    hasRandomFully: false,
    largeClusterEndpointsThreshold: 1000,
  };
}
