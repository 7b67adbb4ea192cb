import { clusterCIDRFor, familyOf, primaryNodeIP, type NodeInfo } from "../../config/node.ts";
import type { KubeProxyConfiguration } from "../../config/types.ts";
import type { IPFamily } from "../../proxy/types.ts";
import { formatMasqueradeMark } from "./chains.ts";
import type { IptablesSettings, LocalDetector } from "./types.ts";

/** Facts read from the kernel at start-up that change the rules. */
export interface KernelFacts {
  /** Addresses on the node's interfaces (CIDR notation or bare IPs). */
  readonly localAddresses: readonly string[];
  readonly hasRandomFully: boolean;
  readonly conntrackTCPLiberal: boolean;
  readonly nfacct: IptablesSettings["nfacct"];
}

/** Upstream's local traffic detector for one family (pkg/proxy/util/localdetector.go). */
export function localDetectorFor(
  config: KubeProxyConfiguration,
  node: NodeInfo,
  family: IPFamily,
): LocalDetector {
  switch (config.detectLocalMode) {
    case "ClusterCIDR": {
      const cidr = clusterCIDRFor(config, family);
      return cidr === null ? { mode: "None" } : { mode: "ClusterCIDR", cidr };
    }
    case "NodeCIDR": {
      const cidr = node.podCIDRs.find((c) => familyOf(c) === family);
      return cidr === undefined ? { mode: "None" } : { mode: "NodeCIDR", cidr };
    }
    case "BridgeInterface":
      return { mode: "BridgeInterface", interfaceName: config.detectLocal.bridgeInterface };
    case "InterfaceNamePrefix":
      return { mode: "InterfaceNamePrefix", prefix: config.detectLocal.interfaceNamePrefix };
  }
}

/** `--nodeport-addresses` with the `primary` keyword expanded (upstream server.go). */
export function expandNodePortAddresses(config: KubeProxyConfiguration, node: NodeInfo): string[] {
  const list = config.nodePortAddresses ?? [];
  if (list.length === 1 && list[0] === "primary") {
    const out: string[] = [];
    for (const family of ["IPv4", "IPv6"] as const) {
      const ip = primaryNodeIP(config, node, family);
      if (ip !== "127.0.0.1" && ip !== "::1") out.push(family === "IPv4" ? `${ip}/32` : `${ip}/128`);
    }
    return out;
  }
  return [...list];
}

export function iptablesSettingsFor(
  config: KubeProxyConfiguration,
  node: NodeInfo,
  family: IPFamily,
  kernel: KernelFacts,
): IptablesSettings {
  return {
    family,
    nodeName: node.name,
    nodeIP: primaryNodeIP(config, node, family),
    masqueradeMark: formatMasqueradeMark(config.iptables.masqueradeBit),
    masqueradeAll: config.iptables.masqueradeAll,
    localDetector: localDetectorFor(config, node, family),
    localhostNodePorts: config.iptables.localhostNodePorts,
    nodePortAddresses: expandNodePortAddresses(config, node),
    localAddresses: kernel.localAddresses,
    conntrackTCPLiberal: config.conntrack.tcpBeLiberal || kernel.conntrackTCPLiberal,
    nfacct: kernel.nfacct,
    hasRandomFully: kernel.hasRandomFully,
    largeClusterEndpointsThreshold: 1000,
  };
}

/** The node and kernel of upstream's unit-test fake proxier (spec §6.1). */
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
    localAddresses: [
      "127.0.0.1/8",
      "::1/128",
      "192.168.0.2/24",
      "192.168.1.2/24",
      "192.168.99.11/24",
      "2001:db8::1/64",
      "2001:db8:1::2/64",
    ],
    conntrackTCPLiberal: false,
    nfacct: { ctStateInvalidDroppedPkts: true, localhostNodePortsAcceptedPkts: true },
    hasRandomFully: false,
    largeClusterEndpointsThreshold: 1000,
  };
}
