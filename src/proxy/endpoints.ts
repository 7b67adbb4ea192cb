/**
 * EndpointSlices → endpoints per service port (upstream `EndpointSliceCache`,
 * `newBaseEndpointInfo`). See spec §3.2.
 */
import { InvalidObjectError } from "../errors.ts";
import { LABEL_SERVICE_NAME } from "../k8s/objects.ts";
import type { EndpointSlice } from "../k8s/objects.ts";
import { formatIP, joinHostPort, parseIPSloppy } from "./ip.ts";
import type { FeatureGates } from "./serviceport.ts";
import { servicePortKey } from "./types.ts";
import type { Endpoint, IPFamily, ServicePortName } from "./types.ts";

export interface EndpointsContext {
  readonly family: IPFamily;
  readonly nodeName: string;
  readonly gates: FeatureGates;
}

export interface ServiceEndpoints {
  /** Keyed by `servicePortKey`; lists sorted by endpoint string, deduplicated. */
  readonly byPort: Map<string, Endpoint[]>;
  readonly warnings: InvalidObjectError[];
}

/** `ns/service` the slice belongs to, or null when the service-name label is missing/empty. */
export function sliceServiceName(slice: EndpointSlice): string | null {
  const svc = slice.metadata.labels[LABEL_SERVICE_NAME];
  return svc === undefined || svc === "" ? null : `${slice.metadata.namespace}/${svc}`;
}

function sliceObjectName(slice: EndpointSlice): string {
  return `EndpointSlice ${slice.metadata.namespace}/${slice.metadata.name}`;
}

/**
 * All endpoints of one Service from its slices (which must all carry the same service-name
 * label). Slices are visited in name order so that deduplication does not depend on arrival
 * order (upstream iterates a Go map).
 */
export function serviceEndpoints(slices: readonly EndpointSlice[], ctx: EndpointsContext): ServiceEndpoints {
  const sets = new Map<string, Map<string, Endpoint>>();
  const warnings: InvalidObjectError[] = [];
  const ordered = [...slices].sort((a, b) => cmp(a.metadata.name, b.metadata.name));
  for (const slice of ordered) {
    if (slice.addressType !== ctx.family) continue;
    const svcLabel = slice.metadata.labels[LABEL_SERVICE_NAME];
    if (svcLabel === undefined || svcLabel === "") continue;
    const converted = convertEndpoints(slice, ctx, warnings);
    for (const p of slice.ports) {
      if (p.name === null || p.port === null || p.port === 0) continue;
      const spn: ServicePortName = {
        namespace: slice.metadata.namespace,
        name: svcLabel,
        port: p.name,
        protocol: p.protocol,
      };
      const key = servicePortKey(spn);
      let set = sets.get(key);
      if (set === undefined) {
        set = new Map();
        sets.set(key, set);
      }
      for (const c of converted) {
        const ep = makeEndpoint(c, p.port);
        // Overlapping slices (e.g. during a rollout) may list the same endpoint; prefer the
        // non-terminating view of it.
        if (!set.has(ep.endpoint) || !ep.terminating) set.set(ep.endpoint, ep);
      }
    }
  }
  const byPort = new Map<string, Endpoint[]>();
  for (const [key, set] of sets) {
    if (set.size === 0) continue;
    byPort.set(key, sortEndpoints([...set.values()]));
  }
  return { byPort, warnings };
}

interface ConvertedEndpoint {
  readonly ip: string;
  readonly ready: boolean;
  readonly serving: boolean;
  readonly terminating: boolean;
  readonly isLocal: boolean;
  readonly zoneHints: ReadonlySet<string> | null;
  readonly nodeHints: ReadonlySet<string> | null;
  readonly nodeName: string | null;
  readonly zone: string | null;
}

function convertEndpoints(
  slice: EndpointSlice,
  ctx: EndpointsContext,
  warnings: InvalidObjectError[],
): ConvertedEndpoint[] {
  const out: ConvertedEndpoint[] = [];
  slice.endpoints.forEach((e, i) => {
    const addr = e.addresses[0];
    if (addr === undefined) return;
    const ip = parseIPSloppy(addr);
    if (ip === null || ip.family !== ctx.family) {
      warnings.push(
        new InvalidObjectError(
          sliceObjectName(slice),
          `endpoints[${i}].addresses[0]`,
          ip === null ? "invalid IP ignored" : `${ip.family} address in a ${ctx.family} slice ignored`,
        ),
      );
      return;
    }
    out.push({
      ip: formatIP(ip.bytes),
      ready: e.ready === null || e.ready,
      serving: e.serving === null || e.serving,
      terminating: e.terminating === true,
      isLocal: e.nodeName !== null && e.nodeName === ctx.nodeName,
      zoneHints: e.zoneHints !== null && e.zoneHints.length > 0 ? new Set(e.zoneHints) : null,
      nodeHints:
        ctx.gates.PreferSameTrafficDistribution && e.nodeHints !== null && e.nodeHints.length > 0
          ? new Set(e.nodeHints)
          : null,
      nodeName: e.nodeName,
      zone: e.zone,
    });
  });
  return out;
}

function makeEndpoint(c: ConvertedEndpoint, port: number): Endpoint {
  return { ...c, port, endpoint: joinHostPort(c.ip, port) };
}

/** Byte order of the endpoint string, as Go's `<` on strings (ASCII only, so code units match). */
export function sortEndpoints(eps: Endpoint[]): Endpoint[] {
  return eps.sort((a, b) => cmp(a.endpoint, b.endpoint));
}

function cmp(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}
