import { hostname } from "node:os";
import { isIP } from "node:net";
import type { IPFamily } from "../proxy/types.ts";
import type { KubeProxyConfiguration } from "./types.ts";

/** What the proxy knows about its own node: from flags, the Node object, or the host. */
export interface NodeInfo {
  readonly name: string;
  /** Node IPs in Node-object order (InternalIP first, then ExternalIP). */
  readonly ips: readonly string[];
  /** spec.podCIDRs. */
  readonly podCIDRs: readonly string[];
  readonly labels: Readonly<Record<string, string>>;
}

/** Upstream: hostnameOverride (trimmed, lower-cased) or the OS hostname. */
export function nodeName(config: Pick<KubeProxyConfiguration, "hostnameOverride">): string {
  const override = config.hostnameOverride.trim().toLowerCase();
  return override !== "" ? override : hostname().trim().toLowerCase();
}

export function familyOf(ip: string): IPFamily | null {
  const bare = ip.split("/")[0] ?? "";
  const v = isIP(bare);
  return v === 4 ? "IPv4" : v === 6 ? "IPv6" : null;
}

function isUnspecified(ip: string): boolean {
  return ip === "0.0.0.0" || ip === "::";
}

/**
 * The primary node IP of a family: `bindAddress` when set, else the Node object's first IP of
 * that family, else loopback (upstream `detectNodeIPs`).
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
