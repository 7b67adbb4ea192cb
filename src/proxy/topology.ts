/**
 * Endpoint selection per traffic policy and topology (upstream `pkg/proxy/topology.go`
 * `CategorizeEndpoints`). See docs/iptables.md §3.3.
 */
import { LABEL_TOPOLOGY_ZONE } from "../k8s/objects.ts";
import {
  DEFAULT_FEATURE_GATES,
  externallyAccessible,
  usesClusterEndpoints,
  usesLocalEndpoints,
} from "./serviceport.ts";
import type { FeatureGates } from "./serviceport.ts";
import type { Endpoint, ServicePort } from "./types.ts";

export type TopologyMode = "" | "PreferSameZone" | "PreferSameNode";

export interface CategorizedEndpoints {
  /** Endpoints for cluster-policy traffic (empty if the port does not use them). */
  readonly clusterEndpoints: readonly Endpoint[];
  /** Endpoints for local-policy traffic (empty if the port does not use them). */
  readonly localEndpoints: readonly Endpoint[];
  /** Union of the two: the endpoints that need KUBE-SEP chains. */
  readonly allReachableEndpoints: readonly Endpoint[];
  /** Any usable (ready, or serving-terminating) endpoint anywhere. */
  readonly hasAnyEndpoints: boolean;
}

/** Which topology restriction, if any, applies: decided from READY endpoints' hints only. */
export function topologyMode(
  endpoints: readonly Endpoint[],
  nodeName: string,
  zone: string,
  gates: FeatureGates = DEFAULT_FEATURE_GATES,
): TopologyMode {
  let hasForNode = false;
  let allHaveNodeHints = true;
  let hasForZone = false;
  let allHaveZoneHints = true;
  for (const ep of endpoints) {
    if (!ep.ready) continue;
    if (ep.zoneHints === null || ep.zoneHints.size === 0) allHaveZoneHints = false;
    else if (ep.zoneHints.has(zone)) hasForZone = true;
    if (ep.nodeHints === null || ep.nodeHints.size === 0) allHaveNodeHints = false;
    else if (ep.nodeHints.has(nodeName)) hasForNode = true;
  }
  if (gates.PreferSameTrafficDistribution && allHaveNodeHints && hasForNode) return "PreferSameNode";
  if (allHaveZoneHints && hasForZone) return "PreferSameZone";
  return "";
}

function availableForTopology(ep: Endpoint, mode: TopologyMode, nodeName: string, zone: string): boolean {
  switch (mode) {
    case "":
      return true;
    case "PreferSameNode":
      return ep.nodeHints?.has(nodeName) ?? false;
    case "PreferSameZone":
      return ep.zoneHints?.has(zone) ?? false;
  }
}

export function categorizeEndpoints(
  endpoints: readonly Endpoint[],
  svc: ServicePort,
  nodeName: string,
  nodeLabels: Readonly<Record<string, string>>,
  gates: FeatureGates = DEFAULT_FEATURE_GATES,
): CategorizedEndpoints {
  let clusterEndpoints: readonly Endpoint[] = [];
  let localEndpoints: readonly Endpoint[] = [];
  let hasAnyEndpoints = false;
  let mode: TopologyMode = "";
  let useServingTerminating = false;

  const cluster = usesClusterEndpoints(svc);
  if (cluster) {
    const zone = nodeLabels[LABEL_TOPOLOGY_ZONE] ?? "";
    mode = topologyMode(endpoints, nodeName, zone, gates);
    clusterEndpoints = endpoints.filter((ep) => ep.ready && availableForTopology(ep, mode, nodeName, zone));
    // No ready endpoint anywhere (topology never hides all ready ones): fall back to endpoints
    // that are shutting down but still serving, so connections drain instead of failing.
    if (clusterEndpoints.length === 0)
      clusterEndpoints = endpoints.filter((ep) => ep.serving && ep.terminating);
    if (clusterEndpoints.length > 0) hasAnyEndpoints = true;
  }

  if (!usesLocalEndpoints(svc)) {
    return { clusterEndpoints, localEndpoints, allReachableEndpoints: clusterEndpoints, hasAnyEndpoints };
  }

  let hasLocalReady = false;
  let hasLocalServingTerminating = false;
  for (const ep of endpoints) {
    if (ep.ready) {
      hasAnyEndpoints = true;
      if (ep.isLocal) hasLocalReady = true;
    } else if (ep.serving && ep.terminating) {
      hasAnyEndpoints = true;
      if (ep.isLocal) hasLocalServingTerminating = true;
    }
  }
  if (hasLocalReady) {
    localEndpoints = endpoints.filter((ep) => ep.isLocal && ep.ready);
  } else if (hasLocalServingTerminating) {
    useServingTerminating = true;
    localEndpoints = endpoints.filter((ep) => ep.isLocal && ep.serving && ep.terminating);
  }

  if (!cluster) {
    return { clusterEndpoints, localEndpoints, allReachableEndpoints: localEndpoints, hasAnyEndpoints };
  }
  if (mode === "" && !useServingTerminating) {
    // Every ready endpoint is in clusterEndpoints, so it already contains all local ready ones.
    return { clusterEndpoints, localEndpoints, allReachableEndpoints: clusterEndpoints, hasAnyEndpoints };
  }
  const union = new Map<string, Endpoint>();
  for (const ep of clusterEndpoints) union.set(ep.endpoint, ep);
  for (const ep of localEndpoints) union.set(ep.endpoint, ep);
  const allReachableEndpoints = [...union.values()].sort((a, b) =>
    a.endpoint < b.endpoint ? -1 : a.endpoint > b.endpoint ? 1 : 0,
  );
  return { clusterEndpoints, localEndpoints, allReachableEndpoints, hasAnyEndpoints };
}

/**
 * Which of a service port's policy chains its rules use, and where internal and external traffic
 * go (upstream's syncProxyRules, the same in every mode): the cluster-policy chain, the
 * local-policy chain, or nothing when the policy's endpoints are missing. `C` is the mode's chain
 * name.
 */
export interface TrafficPolicyPlan<C> {
  readonly usesClusterChain: boolean;
  readonly usesLocalChain: boolean;
  /** Where internal (ClusterIP) traffic goes: the local chain under internalTrafficPolicy Local. */
  readonly internalChain: C;
  readonly hasInternalEndpoints: boolean;
  /** Where external traffic goes after the short-circuits: the local chain under eTP Local. */
  readonly externalPolicyChain: C;
  readonly hasExternalEndpoints: boolean;
  /** The external-traffic chain (short-circuits for pod and host traffic) is needed even without external endpoints. */
  readonly usesExternalTrafficChain: boolean;
}

export function planTrafficPolicy<C>(
  sp: ServicePort,
  cat: CategorizedEndpoints,
  clusterChain: C,
  localChain: C,
): TrafficPolicyPlan<C> {
  const noLocal = cat.localEndpoints.length === 0;
  return {
    usesClusterChain: cat.clusterEndpoints.length > 0 && usesClusterEndpoints(sp),
    usesLocalChain: !noLocal && usesLocalEndpoints(sp),
    internalChain: sp.internalPolicyLocal ? localChain : clusterChain,
    hasInternalEndpoints: cat.hasAnyEndpoints && !(sp.internalPolicyLocal && noLocal),
    externalPolicyChain: sp.externalPolicyLocal ? localChain : clusterChain,
    hasExternalEndpoints: cat.hasAnyEndpoints && !(sp.externalPolicyLocal && noLocal),
    usesExternalTrafficChain: cat.hasAnyEndpoints && externallyAccessible(sp),
  };
}
