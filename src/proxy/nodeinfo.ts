import type { NodeInfo } from "../config/node.ts";
import type { Node } from "../k8s/objects.ts";

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
