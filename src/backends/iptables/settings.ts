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
