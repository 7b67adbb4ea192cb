/**
 * The node as every proxy mode sees it (upstream's `NodeInfo` pieces of `cmd/kube-proxy/app` and
 * `pkg/proxy/util`): its IPs and pod CIDRs, how "from a local pod" is recognised, which addresses
 * NodePorts answer on, and the masquerade mark. A mode's settings extend `NodeModel` with what
 * only it needs (iptables: nfacct, --random-fully, large-cluster threshold).
 */
import type { KubeProxyConfiguration } from "../config/types.ts";
import type { Node } from "../k8s/objects.ts";
import { familyOf, isUnspecified, parseCIDRSloppy } from "../ip.ts";
import type { IPFamily } from "../ip.ts";

/** What the proxy knows about its own node: from flags, the Node object, or the host. */
export interface NodeInfo {
  readonly name: string;
  /** Node IPs in Node-object order (InternalIP first, then ExternalIP). */
  readonly ips: readonly string[];
  /** spec.podCIDRs. */
  readonly podCIDRs: readonly string[];
  readonly labels: Readonly<Record<string, string>>;
}

/**
 * The proxy's view of its node from the Node object (when there is one): IPs InternalIP first,
 * then ExternalIP, as upstream's `GetNodeHostIPs`.
 */
export function nodeInfoFromObject(name: string, node: Node | null): NodeInfo {
  if (node === null) return { name, ips: [], podCIDRs: [], labels: {} };
  const byType = (type: string) => node.status.addresses.filter((a) => a.type === type).map((a) => a.address);
  return {
    name,
    ips: [...byType("InternalIP"), ...byType("ExternalIP")],
    podCIDRs: [...node.spec.podCIDRs],
    labels: { ...(node.metadata.labels ?? {}) },
  };
}

/**
 * The primary node IP of a family: `bindAddress` when set, else the Node object's first IP of
 * that family, else loopback (upstream `detectNodeIPs`). An unspecified bindAddress (`0.0.0.0`,
 * `::`, or any spelling upstream's sloppy parser reads as one, e.g. `0:0::0`) is not a node IP.
 */
export function primaryNodeIP(
  config: Pick<KubeProxyConfiguration, "bindAddress">,
  node: NodeInfo,
  family: IPFamily,
): string {
  if (
    config.bindAddress !== "" &&
    !isUnspecified(config.bindAddress) &&
    familyOf(config.bindAddress) === family
  ) {
    return config.bindAddress;
  }
  const fromNode = node.ips.find((ip) => familyOf(ip) === family);
  if (fromNode !== undefined) return fromNode;
  return family === "IPv4" ? "127.0.0.1" : "::1";
}

/** The CIDRs of one family from a comma-separated `clusterCIDR`. */
export function clusterCIDRFor(
  config: Pick<KubeProxyConfiguration, "clusterCIDR">,
  family: IPFamily,
): string | null {
  const cidrs = config.clusterCIDR
    .split(",")
    .map((c) => c.trim())
    .filter((c) => c !== "");
  return cidrs.find((c) => familyOf(c) === family) ?? null;
}

/** How "traffic from a local pod" is recognised (upstream `LocalTrafficDetector`). */
export type LocalDetector =
  | { readonly mode: "None" }
  | { readonly mode: "ClusterCIDR" | "NodeCIDR"; readonly cidr: string }
  | { readonly mode: "BridgeInterface"; readonly interfaceName: string }
  | { readonly mode: "InterfaceNamePrefix"; readonly prefix: string };

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
      // Upstream matches on the parsed network's String(): masked, without leading zeros.
      const cidr = node.podCIDRs.map(parseCIDRSloppy).find((c) => c !== null && c.family === family);
      return cidr === undefined || cidr === null ? { mode: "None" } : { mode: "NodeCIDR", cidr: cidr.cidr };
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

/** Go `%#08x` of `1 << bit`: digits zero-padded to 8, then `0x` (docs/iptables.md §2.2). */
export function formatMasqueradeMark(bit: number): string {
  if (!Number.isInteger(bit) || bit < 0 || bit > 31) {
    throw new RangeError(`masquerade bit must be an integer in [0, 31], got ${bit}`);
  }
  return "0x" + ((1 << bit) >>> 0).toString(16).padStart(8, "0");
}

/** The node of one IP family, as every mode's renderer needs it. */
export interface NodeModel {
  readonly family: IPFamily;
  readonly nodeName: string;
  /** Primary node IP of this family (bindAddress > Node object > loopback). */
  readonly nodeIP: string;
  /** As printed in rules: `0x00004000` in production, `0x4000` in upstream's tests. */
  readonly masqueradeMark: string;
  readonly masqueradeAll: boolean;
  readonly localDetector: LocalDetector;
  /** CIDRs from `--nodeport-addresses` (`primary` already expanded); empty = all. */
  readonly nodePortAddresses: readonly string[];
  /** Addresses on the node's interfaces (CIDR or bare IP), both families; used with nodePortAddresses. */
  readonly localAddresses: readonly string[];
}

export function nodeModelFor(
  config: KubeProxyConfiguration,
  node: NodeInfo,
  family: IPFamily,
  localAddresses: readonly string[],
): NodeModel {
  return {
    family,
    nodeName: node.name,
    nodeIP: primaryNodeIP(config, node, family),
    masqueradeMark: formatMasqueradeMark(config.iptables.masqueradeBit),
    masqueradeAll: config.iptables.masqueradeAll,
    localDetector: localDetectorFor(config, node, family),
    nodePortAddresses: expandNodePortAddresses(config, node),
    localAddresses,
  };
}

/**
 * The interface addresses of the node in upstream's unit-test fake proxiers (iptables and
 * nftables mode alike), which their goldens were written against.
 */
export const UPSTREAM_TEST_LOCAL_ADDRESSES: readonly string[] = [
  "127.0.0.1/8",
  "::1/128",
  "192.168.0.2/24",
  "192.168.1.2/24",
  "192.168.99.11/24",
  "2001:db8::1/64",
  "2001:db8:1::2/64",
];
