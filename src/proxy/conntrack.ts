/** The model the UDP conntrack reconciler (src/kernel/conntrack.ts) compares flows against. */
import type { UdpConntrackModel } from "../kernel/conntrack.ts";
import { joinHostPort } from "../ip.ts";
import type { ProxyState } from "./types.ts";

/** Builds the reconciler model from one family's proxy state: UDP ports with serving endpoints only. */
export function udpConntrackModel(state: ProxyState): UdpConntrackModel {
  const frontends = new Map<string, Set<string>>();
  const nodePorts = new Map<number, Set<string>>();
  for (const [key, svc] of state.services) {
    if (svc.protocol !== "UDP") continue;
    // Topology, traffic policy and terminating state are deliberately ignored: any serving endpoint is legitimate.
    const serving = new Set(
      (state.endpoints.get(key) ?? []).filter((ep) => ep.serving).map((ep) => joinHostPort(ep.ip, ep.port)),
    );
    if (serving.size === 0) continue;
    frontends.set(joinHostPort(svc.clusterIP, svc.port), serving);
    for (const ip of svc.externalIPs) frontends.set(joinHostPort(ip, svc.port), serving);
    for (const ip of svc.loadBalancerVIPs) frontends.set(joinHostPort(ip, svc.port), serving);
    if (svc.nodePort !== 0) nodePorts.set(svc.nodePort, serving);
  }
  return { frontends, nodePorts };
}
