/**
 * Whole-state construction: decoded objects → ProxyState for one family. Used for one-shot
 * rendering (manifests, `render`, goldens); the live daemon uses the incremental trackers in
 * changetracker.ts, which share every conversion function with this file.
 */
import { InvalidObjectError } from "../errors.ts";
import { LABEL_HEADLESS, LABEL_SERVICE_PROXY_NAME, namespacedName } from "../k8s/objects.ts";
import type { EndpointSlice, Node, ObjectMeta, Service } from "../k8s/objects.ts";
import { serviceEndpoints, sliceServiceName } from "./endpoints.ts";
import { resolveFeatureGates, servicePortsForFamily } from "./serviceport.ts";
import type { FeatureGates } from "./serviceport.ts";
import { servicePortKey } from "./types.ts";
import type { IPFamily } from "../ip.ts";
import type { Endpoint, ProxyState, ServicePort } from "./types.ts";

export type { FeatureGates } from "./serviceport.ts";
export { DEFAULT_FEATURE_GATES } from "./serviceport.ts";

export interface ProxyStateOptions {
  readonly family: IPFamily;
  readonly nodeName: string;
  readonly featureGates?: Partial<FeatureGates>;
  /** Our `--service-proxy-name`-style identity: objects labelled with it ARE ours. */
  readonly serviceProxyName?: string;
}

export interface ProxyStateInput {
  readonly services: readonly Service[];
  readonly endpointSlices: readonly EndpointSlice[];
  readonly node: Node | null;
}

export interface ProxyStateResult {
  readonly state: ProxyState;
  /** Objects that were skipped entirely. */
  readonly problems: InvalidObjectError[];
  /** Objects used without some value (e.g. an unparseable external IP), as upstream. */
  readonly warnings: InvalidObjectError[];
}

/**
 * upstream's informer label selector `!service.kubernetes.io/service-proxy-name,
 * !service.kubernetes.io/headless`: objects meant for another proxy, or headless slices, are
 * not ours. A proxy that has a name takes the objects carrying exactly that name.
 */
export function isForThisProxy(meta: ObjectMeta, serviceProxyName?: string): boolean {
  if (meta.labels[LABEL_HEADLESS] !== undefined) return false;
  const proxyName = meta.labels[LABEL_SERVICE_PROXY_NAME];
  if (proxyName === undefined) return true;
  return serviceProxyName !== undefined && serviceProxyName !== "" && proxyName === serviceProxyName;
}

export function missingServiceNameProblem(slice: EndpointSlice): InvalidObjectError {
  return new InvalidObjectError(
    `EndpointSlice ${slice.metadata.namespace}/${slice.metadata.name}`,
    'metadata.labels["kubernetes.io/service-name"]',
    "missing: the slice cannot be attributed to a Service",
  );
}

export function buildProxyState(input: ProxyStateInput, options: ProxyStateOptions): ProxyStateResult {
  const gates = resolveFeatureGates(options.featureGates);
  const problems: InvalidObjectError[] = [];
  const warnings: InvalidObjectError[] = [];
  const services = new Map<string, ServicePort>();
  const seenServices = new Set<string>();

  for (const svc of input.services) {
    if (!isForThisProxy(svc.metadata, options.serviceProxyName)) continue;
    const nn = namespacedName(svc.metadata);
    if (seenServices.has(nn)) {
      problems.push(new InvalidObjectError(`Service ${nn}`, "metadata.name", "duplicate Service ignored"));
      continue;
    }
    seenServices.add(nn);
    const r = servicePortsForFamily(svc, options.family, gates);
    warnings.push(...r.warnings);
    for (const sp of r.ports) services.set(servicePortKey(sp.name), sp);
  }

  const slicesByService = new Map<string, EndpointSlice[]>();
  const seenSlices = new Set<string>();
  for (const slice of input.endpointSlices) {
    if (!isForThisProxy(slice.metadata, options.serviceProxyName)) continue;
    if (slice.addressType !== options.family) continue;
    const sliceNN = namespacedName(slice.metadata);
    if (seenSlices.has(sliceNN)) {
      problems.push(
        new InvalidObjectError(
          `EndpointSlice ${sliceNN}`,
          "metadata.name",
          "duplicate EndpointSlice ignored",
        ),
      );
      continue;
    }
    seenSlices.add(sliceNN);
    const svcNN = sliceServiceName(slice);
    if (svcNN === null) {
      problems.push(missingServiceNameProblem(slice));
      continue;
    }
    let list = slicesByService.get(svcNN);
    if (list === undefined) {
      list = [];
      slicesByService.set(svcNN, list);
    }
    list.push(slice);
  }

  const endpoints = new Map<string, readonly Endpoint[]>();
  const ctx = { family: options.family, nodeName: options.nodeName, gates };
  for (const slices of slicesByService.values()) {
    const r = serviceEndpoints(slices, ctx);
    warnings.push(...r.warnings);
    for (const [key, eps] of r.byPort) endpoints.set(key, eps);
  }

  return {
    state: {
      family: options.family,
      services,
      endpoints,
      nodeLabels: input.node?.metadata.labels ?? {},
    },
    problems,
    warnings,
  };
}

/**
 * Per Service (`ns/name`), the number of distinct IPs of local READY endpoints across its ports
 * (upstream `EndpointsMap.LocalReadyEndpoints`): what a healthCheckNodePort server reports.
 */
export function localReadyEndpoints(state: ProxyState): Map<string, number> {
  const ips = new Map<string, Set<string>>();
  for (const [key, eps] of state.endpoints) {
    // Keys are `ns/name[:port]/PROTOCOL`; names and ports never contain '/' or ':'.
    const [ns, rest] = key.split("/", 2);
    const nn = `${ns}/${(rest ?? "").split(":", 1)[0]}`;
    for (const ep of eps) {
      if (!ep.ready || !ep.isLocal) continue;
      let set = ips.get(nn);
      if (set === undefined) {
        set = new Set();
        ips.set(nn, set);
      }
      set.add(ep.ip);
    }
  }
  const out = new Map<string, number>();
  for (const [nn, set] of ips) out.set(nn, set.size);
  return out;
}
