/**
 * The backend-independent model of what kube-proxy programs, in upstream's vocabulary
 * (pkg/proxy: ServicePortName, ServicePort, Endpoint). Everything here is plain data: already
 * validated, canonicalised (IPs re-printed as upstream does) and filtered to one IP family.
 */

import type { IPFamily } from "../ip.ts";

export type Protocol = "TCP" | "UDP" | "SCTP";

/** Identifies one port of one Service (upstream `proxy.ServicePortName`). */
export interface ServicePortName {
  readonly namespace: string;
  readonly name: string;
  /** The Service port's `name`; "" for an unnamed port. */
  readonly port: string;
  readonly protocol: Protocol;
}

/** `ns/name` or `ns/name:port` — upstream `ServicePortName.String()`. */
export function servicePortNameString(spn: ServicePortName): string {
  const base = `${spn.namespace}/${spn.name}`;
  return spn.port === "" ? base : `${base}:${spn.port}`;
}

/** Map key for a service port: the name string plus the protocol (unique per Service). */
export function servicePortKey(spn: ServicePortName): string {
  return `${servicePortNameString(spn)}/${spn.protocol}`;
}

export interface SessionAffinityClientIP {
  readonly type: "ClientIP";
  readonly maxAgeSeconds: number;
}

/** One Service port as seen by the proxier of one IP family (upstream `BaseServicePortInfo`). */
export interface ServicePort {
  readonly name: ServicePortName;
  /** Canonical ClusterIP of this family. */
  readonly clusterIP: string;
  readonly port: number;
  readonly protocol: Protocol;
  /** 0 = none. */
  readonly nodePort: number;
  /** Canonical, this family only, spec order. */
  readonly externalIPs: readonly string[];
  /** LB ingress IPs with ipMode VIP (or unset), canonical, this family only, ingress order. */
  readonly loadBalancerVIPs: readonly string[];
  /** Masked networks (`ipnet.String()`), this family only, spec order. */
  readonly loadBalancerSourceRanges: readonly string[];
  readonly sessionAffinity: SessionAffinityClientIP | null;
  readonly externalPolicyLocal: boolean;
  readonly internalPolicyLocal: boolean;
  /** 0 = none. */
  readonly healthCheckNodePort: number;
}

/** One endpoint of one service port (upstream `BaseEndpointInfo`). */
export interface Endpoint {
  /** Canonical IP. */
  readonly ip: string;
  readonly port: number;
  /** `ip:port` or `[ip]:port` — the string used for hashing and sorting. */
  readonly endpoint: string;
  readonly ready: boolean;
  readonly serving: boolean;
  readonly terminating: boolean;
  readonly isLocal: boolean;
  /** `hints.forZones[].name`; null when the endpoint has no zone hints. */
  readonly zoneHints: ReadonlySet<string> | null;
  /** `hints.forNodes[].name`; null when absent (or the feature gate is off). */
  readonly nodeHints: ReadonlySet<string> | null;
  /** EndpointSlice `nodeName`, for display. */
  readonly nodeName: string | null;
  /** EndpointSlice `zone`, for display. */
  readonly zone: string | null;
}

/**
 * Everything a renderer needs about the cluster, for one family.
 * `services` and `endpoints` are keyed by `servicePortKey`. Endpoint lists are sorted by
 * endpoint string (byte order), deduplicated, as upstream's EndpointsMap.
 */
export interface ProxyState {
  readonly family: IPFamily;
  readonly services: ReadonlyMap<string, ServicePort>;
  readonly endpoints: ReadonlyMap<string, readonly Endpoint[]>;
  /** Labels of this node (for topology: `topology.kubernetes.io/zone`). */
  readonly nodeLabels: Readonly<Record<string, string>>;
}

/** The order every renderer writes service ports in: by name string, then protocol. */
export function compareServicePorts(a: ServicePort, b: ServicePort): number {
  const an = servicePortNameString(a.name);
  const bn = servicePortNameString(b.name);
  if (an !== bn) return an < bn ? -1 : 1;
  if (a.protocol !== b.protocol) return a.protocol < b.protocol ? -1 : 1;
  return 0;
}
