/**
 * Builders of renderer inputs for iptables unit and property tests: model values as the model
 * layer would produce them (canonical IPs, sorted endpoints), and the upstream fake proxier.
 */
import { upstreamTestSettings } from "../../src/backends/iptables/settings.ts";
import type { IptablesSettings } from "../../src/backends/iptables/types.ts";
import type { IPFamily } from "../../src/ip.ts";
import type { Endpoint, Protocol, ProxyState, ServicePort } from "../../src/proxy/types.ts";
import { servicePortKey } from "../../src/proxy/types.ts";

export interface ServicePortInit extends Partial<Omit<ServicePort, "name">> {
  readonly namespace: string;
  readonly name: string;
  readonly portName?: string;
}

export function servicePort(init: ServicePortInit): ServicePort {
  const protocol: Protocol = init.protocol ?? "TCP";
  return {
    name: { namespace: init.namespace, name: init.name, port: init.portName ?? "", protocol },
    clusterIP: init.clusterIP ?? "172.30.0.1",
    port: init.port ?? 80,
    protocol,
    nodePort: init.nodePort ?? 0,
    externalIPs: init.externalIPs ?? [],
    loadBalancerVIPs: init.loadBalancerVIPs ?? [],
    loadBalancerSourceRanges: init.loadBalancerSourceRanges ?? [],
    sessionAffinity: init.sessionAffinity ?? null,
    externalPolicyLocal: init.externalPolicyLocal ?? false,
    internalPolicyLocal: init.internalPolicyLocal ?? false,
    healthCheckNodePort: init.healthCheckNodePort ?? 0,
  };
}

export interface EndpointInit {
  readonly ready?: boolean;
  readonly serving?: boolean;
  readonly terminating?: boolean;
  readonly isLocal?: boolean;
  readonly zoneHints?: readonly string[];
  readonly nodeHints?: readonly string[];
}

export function endpoint(ip: string, port: number, init: EndpointInit = {}): Endpoint {
  return {
    ip,
    port,
    endpoint: ip.includes(":") ? `[${ip}]:${port}` : `${ip}:${port}`,
    ready: init.ready ?? true,
    serving: init.serving ?? init.ready ?? true,
    terminating: init.terminating ?? false,
    isLocal: init.isLocal ?? false,
    zoneHints: init.zoneHints === undefined ? null : new Set(init.zoneHints),
    nodeHints: init.nodeHints === undefined ? null : new Set(init.nodeHints),
    nodeName: init.isLocal === true ? "test-node" : null,
    zone: null,
  };
}

/** A ProxyState from (service port, endpoints) pairs; endpoints sorted as upstream's map. */
export function proxyState(
  entries: readonly (readonly [ServicePort, readonly Endpoint[]])[],
  options: { family?: IPFamily; nodeLabels?: Record<string, string> } = {},
): ProxyState {
  const services = new Map<string, ServicePort>();
  const endpoints = new Map<string, Endpoint[]>();
  for (const [sp, eps] of entries) {
    const key = servicePortKey(sp.name);
    services.set(key, sp);
    if (eps.length > 0) {
      endpoints.set(
        key,
        [...eps].sort((a, b) => (a.endpoint < b.endpoint ? -1 : a.endpoint > b.endpoint ? 1 : 0)),
      );
    }
  }
  return { family: options.family ?? "IPv4", services, endpoints, nodeLabels: options.nodeLabels ?? {} };
}

/** Upstream `NewFakeProxier` (docs/iptables.md §6.1). */
export const FAKE_PROXIER_SETTINGS: IptablesSettings = upstreamTestSettings("IPv4");

/** The fake proxier for IPv6 tests: fd00:10::/64 detector, node IP 2001:db8::1. */
export const FAKE_PROXIER_SETTINGS_V6: IptablesSettings = {
  ...FAKE_PROXIER_SETTINGS,
  family: "IPv6",
  nodeIP: "2001:db8::1",
  localDetector: { mode: "ClusterCIDR", cidr: "fd00:10::/64" },
  localhostNodePorts: false,
};
