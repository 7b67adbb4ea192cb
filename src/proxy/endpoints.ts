/**
 * EndpointSlices → endpoints per service port (upstream `EndpointSliceCache`,
 * `newBaseEndpointInfo`). See docs/iptables.md §3.2.
 */
import { InvalidObjectError } from "../errors.ts";
import { LABEL_SERVICE_NAME } from "../k8s/objects.ts";
import type { EndpointSlice, EndpointSliceEndpoint } from "../k8s/objects.ts";
import { formatIP, isCanonicalIPv4, joinHostPort, parseIPSloppy } from "../ip.ts";
import type { FeatureGates } from "./serviceport.ts";
import { servicePortKey } from "./types.ts";
import type { IPFamily } from "../ip.ts";
import type { Endpoint } from "./types.ts";

export interface EndpointsContext {
  readonly family: IPFamily;
  readonly nodeName: string;
  readonly gates: FeatureGates;
}

export interface ServiceEndpoints {
  /** Keyed by `servicePortKey`; lists sorted by endpoint string, deduplicated. */
  readonly byPort: ReadonlyMap<string, readonly Endpoint[]>;
  readonly warnings: InvalidObjectError[];
}

/** `ns/service` the slice belongs to, or null when the service-name label is missing/empty. */
export function sliceServiceName(slice: EndpointSlice): string | null {
  const svc = slice.metadata.labels[LABEL_SERVICE_NAME];
  return svc === undefined || svc === "" ? null : `${slice.metadata.namespace}/${svc}`;
}

/**
 * All endpoints of one Service from its slices (which must all carry the same service-name
 * label). Slices are visited in name order so that deduplication does not depend on arrival
 * order (upstream iterates a Go map).
 */
export function serviceEndpoints(slices: readonly EndpointSlice[], ctx: EndpointsContext): ServiceEndpoints {
  const parts = inSliceNameOrder(slices, (s) => s.metadata.name).map((slice) => sliceEndpoints(slice, ctx));
  return { byPort: mergeEndpoints(parts.map((p) => p.byPort)), warnings: parts.flatMap((p) => p.warnings) };
}

/**
 * One slice's endpoints per service port, sorted and deduplicated: what the change tracker keeps
 * per slice, computed once when the slice arrives rather than on every sync that touches its Service.
 */
export function sliceEndpoints(slice: EndpointSlice, ctx: EndpointsContext): ServiceEndpoints {
  const lists = new Map<string, Endpoint[]>();
  const warnings: InvalidObjectError[] = [];
  const svcLabel = slice.metadata.labels[LABEL_SERVICE_NAME];
  if (slice.addressType !== ctx.family || svcLabel === undefined || svcLabel === "") {
    return { byPort: lists, warnings };
  }
  const ips = canonicalAddresses(slice, ctx.family, warnings);
  for (const p of slice.ports) {
    if (p.name === null || p.port === null || p.port === 0) continue;
    const key = servicePortKey({
      namespace: slice.metadata.namespace,
      name: svcLabel,
      port: p.name,
      protocol: p.protocol,
    });
    const list = lists.get(key) ?? [];
    for (let i = 0; i < ips.length; i++) {
      const ip = ips[i];
      if (ip === null || ip === undefined) continue;
      list.push(makeEndpoint(slice.endpoints[i]!, ip, p.port, ctx));
    }
    lists.set(key, list);
  }
  const byPort = new Map<string, Endpoint[]>();
  for (const [key, list] of lists) {
    if (list.length > 0) byPort.set(key, dedupSorted(sortEndpoints(list)));
  }
  return { byPort, warnings };
}

/**
 * A Service's slices (or what is kept of them) in name order: deduplication across slices must not
 * depend on arrival order (upstream iterates a Go map).
 */
export function inSliceNameOrder<T>(items: readonly T[], nameOf: (item: T) => string): readonly T[] {
  return items.length > 1 ? [...items].sort((a, b) => cmp(nameOf(a), nameOf(b))) : items;
}

/**
 * A Service's endpoints from its slices' own lists (`sliceEndpoints`), given in slice-name order.
 * Deduplicating each slice first and then the merged list keeps the same endpoint as
 * deduplicating all of them at once: the last one that is not terminating, else the first.
 * A Service with one slice gets that slice's map itself (the change tracker keeps both, and a
 * copy per Service added a map per Service): neither is changed once made.
 */
export function mergeEndpoints(
  parts: readonly ReadonlyMap<string, readonly Endpoint[]>[],
): ReadonlyMap<string, readonly Endpoint[]> {
  if (parts.length === 1) return parts[0]!;
  const lists = new Map<string, Endpoint[]>();
  for (const part of parts) {
    for (const [key, eps] of part) {
      const list = lists.get(key);
      if (list === undefined) lists.set(key, [...eps]);
      else list.push(...eps);
    }
  }
  for (const [key, list] of lists) lists.set(key, dedupSorted(sortEndpoints(list)));
  return lists;
}

/** Canonical `addresses[0]` per endpoint (aligned with `slice.endpoints`), null when unusable. */
function canonicalAddresses(
  slice: EndpointSlice,
  family: IPFamily,
  warnings: InvalidObjectError[],
): (string | null)[] {
  return slice.endpoints.map((e, i) => {
    const addr = e.addresses[0];
    if (addr === undefined) return null;
    if (family === "IPv4" && isCanonicalIPv4(addr)) return addr;
    const ip = parseIPSloppy(addr);
    if (ip === null || ip.family !== family) {
      warnings.push(
        new InvalidObjectError(
          `EndpointSlice ${slice.metadata.namespace}/${slice.metadata.name}`,
          `endpoints[${i}].addresses[0]`,
          ip === null ? "invalid IP ignored" : `${ip.family} address in a ${family} slice ignored`,
        ),
      );
      return null;
    }
    return formatIP(ip.bytes);
  });
}

function hintSet(names: readonly string[] | null): ReadonlySet<string> | null {
  return names !== null && names.length > 0 ? new Set(names) : null;
}

// Spelled out (no object spread): this runs once per endpoint per port.
function makeEndpoint(e: EndpointSliceEndpoint, ip: string, port: number, ctx: EndpointsContext): Endpoint {
  return {
    ip,
    port,
    endpoint: joinHostPort(ip, port),
    ready: e.ready === null || e.ready,
    serving: e.serving === null || e.serving,
    terminating: e.terminating === true,
    isLocal: e.nodeName !== null && e.nodeName === ctx.nodeName,
    zoneHints: hintSet(e.zoneHints),
    nodeHints: ctx.gates.PreferSameTrafficDistribution ? hintSet(e.nodeHints) : null,
    nodeName: e.nodeName,
    zone: e.zone,
  };
}

/**
 * Overlapping slices (e.g. during a rollout) may list the same endpoint: a later entry replaces
 * an earlier one unless it is terminating (prefer the running pod over one shutting down that
 * had the same IP). The sort is stable, so duplicates are adjacent in arrival order.
 */
function dedupSorted(sorted: Endpoint[]): Endpoint[] {
  let w = 0;
  for (let r = 0; r < sorted.length; r++) {
    const ep = sorted[r]!;
    if (w > 0 && sorted[w - 1]!.endpoint === ep.endpoint) {
      if (!ep.terminating) sorted[w - 1] = ep;
    } else {
      sorted[w++] = ep;
    }
  }
  sorted.length = w;
  return sorted;
}

/** Byte order of the endpoint string, as Go's `<` on strings (ASCII only, so code units match). */
export function sortEndpoints(eps: Endpoint[]): Endpoint[] {
  return eps.sort((a, b) => cmp(a.endpoint, b.endpoint));
}

function cmp(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}
