import type { KubeProxyConfiguration } from "../../config/types.ts";
import { familyOf, isLoopbackSloppy, cidrContainsSloppy, type IPFamily } from "../../ip.ts";
import { nodeModelFor, type NodeInfo } from "../../proxy/node.ts";
import { DEFAULT_SCHEDULER, DUMMY_DEVICE } from "./names.ts";
import type { IpvsSettings } from "./types.ts";

/**
 * The settings of one family on a real node. ipvs mode reads the iptables section for the
 * masquerade bit and masquerade-all, as upstream does; an empty `--ipvs-scheduler` means rr.
 */
export function ipvsSettingsFor(
  config: KubeProxyConfiguration,
  node: NodeInfo,
  family: IPFamily,
  localAddresses: readonly string[],
  randomFully: boolean,
): IpvsSettings {
  return {
    ...nodeModelFor(config, node, family, localAddresses),
    scheduler: config.ipvs.scheduler === "" ? DEFAULT_SCHEDULER : config.ipvs.scheduler,
    randomFully,
  };
}

/** Upstream's ipvs unit-test fake proxier (`NewFakeProxier` in pkg/proxy/ipvs/proxier_test.go). */
export function upstreamTestSettings(family: IPFamily): IpvsSettings {
  return {
    family,
    nodeName: "test-node",
    // The fake proxier sets no node IP: no source range ever lets the node in.
    nodeIP: "",
    masqueradeMark: "0x4000",
    masqueradeAll: false,
    localDetector: { mode: "None" },
    nodePortAddresses: [],
    localAddresses: [],
    scheduler: DEFAULT_SCHEDULER,
    randomFully: false,
  };
}

/**
 * A family's node addresses as upstream's netlink handle counts them (`GetAllLocalAddressesExcept`
 * kube-ipvs0): no loopback, no IPv6 link-local. `addresses` are bare IPs or CIDR notation.
 */
export function nodeAddressesOf(addresses: readonly string[], family: IPFamily): string[] {
  const out = new Set<string>();
  for (const a of addresses) {
    const ip = a.split("/")[0]!;
    if (familyOf(ip) !== family || isLoopbackSloppy(ip)) continue;
    if (family === "IPv6" && cidrContainsSloppy("fe80::/10", ip)) continue;
    out.add(ip);
  }
  return [...out];
}

/** The node addresses of `byInterface` (from `ip -j addr`), kube-ipvs0's left out. */
export function nodeAddressesFromInterfaces(
  byInterface: ReadonlyMap<string, readonly string[]>,
  family: IPFamily,
): string[] {
  const all: string[] = [];
  for (const [name, addrs] of byInterface) if (name !== DUMMY_DEVICE) all.push(...addrs);
  return nodeAddressesOf(all, family);
}
