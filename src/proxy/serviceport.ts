/**
 * Service → ServicePorts for one IP family (upstream `serviceToServiceMap`,
 * `newBaseServiceInfo`, `pkg/api/v1/service/util.go`). See docs/iptables.md §3.1.
 */
import { InvalidObjectError } from "../errors.ts";
import type { Service } from "../k8s/objects.ts";
import { canonicalIP, parseCIDRSloppy, parseIPSloppy } from "../ip.ts";
import type { IPFamily } from "../ip.ts";
import type { ServicePort } from "./types.ts";

export interface FeatureGates {
  /** `status.loadBalancer.ingress[].ipMode: Proxy` ⇒ no rules for that address. GA, default on. */
  readonly LoadBalancerIPMode: boolean;
  /** Honour `hints.forNodes` (PreferSameNode traffic distribution). Default on. */
  readonly PreferSameTrafficDistribution: boolean;
}

export const DEFAULT_FEATURE_GATES: FeatureGates = {
  LoadBalancerIPMode: true,
  PreferSameTrafficDistribution: true,
};

export function resolveFeatureGates(gates: Partial<FeatureGates> | undefined): FeatureGates {
  return { ...DEFAULT_FEATURE_GATES, ...gates };
}

/** API default of `sessionAffinityConfig.clientIP.timeoutSeconds`. */
export const DEFAULT_CLIENT_IP_TIMEOUT_SECONDS = 10800;

export interface ServicePortsResult {
  readonly ports: ServicePort[];
  /** Addresses/ranges dropped because they do not parse (upstream logs and drops them). */
  readonly warnings: InvalidObjectError[];
}

/** upstream `ShouldSkipService`: headless and ExternalName Services are not proxied. */
export function shouldSkipService(svc: Service): boolean {
  const ip = svc.spec.clusterIP;
  return ip === "" || ip === "None" || svc.spec.type === "ExternalName";
}

/** upstream `GetClusterIPByFamily`; "" when the Service has no ClusterIP of this family. */
export function clusterIPForFamily(svc: Service, family: IPFamily): string {
  const spec = svc.spec;
  if (spec.ipFamilies.length === 0) {
    if (spec.clusterIP === "" || spec.clusterIP === "None") return "";
    const isV6 = parseIPSloppy(spec.clusterIP)?.family === "IPv6";
    return isV6 === (family === "IPv6") ? spec.clusterIP : "";
  }
  const idx = spec.ipFamilies.indexOf(family);
  return idx >= 0 ? (spec.clusterIPs[idx] ?? "") : "";
}

/** Service-level "externally accessible" used for eTP (note: an empty `type` is not ClusterIP). */
function serviceExternallyAccessible(svc: Service): boolean {
  const t = svc.spec.type;
  return t === "LoadBalancer" || t === "NodePort" || (t === "ClusterIP" && svc.spec.externalIPs.length > 0);
}

export function externalPolicyLocal(svc: Service): boolean {
  return serviceExternallyAccessible(svc) && svc.spec.externalTrafficPolicy === "Local";
}

export function internalPolicyLocal(svc: Service): boolean {
  return svc.spec.internalTrafficPolicy === "Local";
}

function serviceName(svc: Service): string {
  return `Service ${svc.metadata.namespace}/${svc.metadata.name}`;
}

export function servicePortsForFamily(
  svc: Service,
  family: IPFamily,
  gates: FeatureGates = DEFAULT_FEATURE_GATES,
): ServicePortsResult {
  const warnings: InvalidObjectError[] = [];
  if (shouldSkipService(svc)) return { ports: [], warnings };
  const rawClusterIP = clusterIPForFamily(svc, family);
  if (rawClusterIP === "") return { ports: [], warnings };
  const clusterIP = canonicalIP(rawClusterIP);
  if (clusterIP === null) {
    warnings.push(
      new InvalidObjectError(serviceName(svc), "spec.clusterIPs", `invalid ${family} ClusterIP ignored`),
    );
    return { ports: [], warnings };
  }
  const spec = svc.spec;
  const object = serviceName(svc);

  const externalIPs: string[] = [];
  spec.externalIPs.forEach((raw, i) => {
    const ip = parseIPSloppy(raw);
    if (ip === null) {
      if (raw.trim() !== "")
        warnings.push(new InvalidObjectError(object, `spec.externalIPs[${i}]`, "invalid IP ignored"));
    } else if (ip.family === family) {
      externalIPs.push(canonicalIP(raw)!);
    }
  });

  const sourceRanges: string[] = [];
  spec.loadBalancerSourceRanges.forEach((raw, i) => {
    const trimmed = raw.trim();
    const cidr = parseCIDRSloppy(trimmed);
    if (cidr === null) {
      if (trimmed !== "") {
        warnings.push(
          new InvalidObjectError(object, `spec.loadBalancerSourceRanges[${i}]`, "invalid CIDR ignored"),
        );
      }
    } else if (cidr.family === family) {
      sourceRanges.push(cidr.cidr);
    }
  });

  const lbVIPs: string[] = [];
  svc.status.loadBalancerIngress.forEach((ing, i) => {
    if (ing.ip === "") return;
    // Proxy-mode load balancers deliver traffic to the node themselves; no VIP rules needed.
    const vipMode = !gates.LoadBalancerIPMode || ing.ipMode === null || ing.ipMode === "VIP";
    if (!vipMode) return;
    const ip = parseIPSloppy(ing.ip);
    if (ip === null) {
      warnings.push(
        new InvalidObjectError(object, `status.loadBalancer.ingress[${i}].ip`, "invalid IP ignored"),
      );
    } else if (ip.family === family) {
      lbVIPs.push(canonicalIP(ing.ip)!);
    }
  });

  const eLocal = externalPolicyLocal(svc);
  const iLocal = internalPolicyLocal(svc);
  const sessionAffinity =
    spec.sessionAffinity === "ClientIP"
      ? {
          type: "ClientIP" as const,
          maxAgeSeconds: spec.sessionAffinityTimeoutSeconds ?? DEFAULT_CLIENT_IP_TIMEOUT_SECONDS,
        }
      : null;
  let healthCheckNodePort = 0;
  if (spec.type === "LoadBalancer" && eLocal) {
    if (spec.healthCheckNodePort === 0) {
      warnings.push(
        new InvalidObjectError(object, "spec.healthCheckNodePort", "Service has no healthcheck nodeport"),
      );
    } else {
      healthCheckNodePort = spec.healthCheckNodePort;
    }
  }

  const ports = spec.ports.map((p): ServicePort => ({
    name: { namespace: svc.metadata.namespace, name: svc.metadata.name, port: p.name, protocol: p.protocol },
    clusterIP,
    port: p.port,
    protocol: p.protocol,
    nodePort: p.nodePort,
    externalIPs,
    loadBalancerVIPs: lbVIPs,
    loadBalancerSourceRanges: sourceRanges,
    sessionAffinity,
    externalPolicyLocal: eLocal,
    internalPolicyLocal: iLocal,
    healthCheckNodePort,
  }));
  return { ports, warnings };
}

/** Port-level: reachable from outside the cluster network (NodePort, LB VIP or external IP). */
export function externallyAccessible(sp: ServicePort): boolean {
  return sp.nodePort !== 0 || sp.loadBalancerVIPs.length > 0 || sp.externalIPs.length > 0;
}

export function usesClusterEndpoints(sp: ServicePort): boolean {
  return !sp.internalPolicyLocal || externallyAccessible(sp);
}

export function usesLocalEndpoints(sp: ServicePort): boolean {
  return sp.internalPolicyLocal || (sp.externalPolicyLocal && externallyAccessible(sp));
}
