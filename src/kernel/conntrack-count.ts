import type { IPFamily } from "../ip.ts";
import type { ConntrackEntry, ConntrackOptions } from "./conntrack.ts";
import { joinHostPort, parseConntrackList } from "./conntrack.ts";
import type { Runner } from "./exec.ts";

/** Every flow of one family, all protocols (of the given network namespace). */
export async function listConntrackEntries(
  runner: Runner,
  family: IPFamily,
  options: ConntrackOptions = {},
): Promise<ConntrackEntry[]> {
  const result = await runner.run(["conntrack", "-L", "-f", family === "IPv4" ? "ipv4" : "ipv6"], {
    netns: options.netns,
    timeoutMs: options.timeoutMs ?? 30_000,
  });
  return parseConntrackList(result.stdout);
}

/** An endpoint as a KUBE-SEP DNAT names it, with the protocol its rule matches. */
export interface EndpointKey {
  readonly protocol: string;
  /** `ip:port` / `[ipv6]:port`, as `--to-destination` writes it. */
  readonly endpoint: string;
}

function key(protocol: string, endpoint: string): string {
  return `${protocol.toLowerCase()} ${endpoint}`;
}

/** An address a Service is reached at; no `ip` = any of the node's addresses (a node port). */
export interface Frontend {
  readonly protocol: string;
  readonly ip?: string;
  readonly port: number;
}

function reachedThrough(entry: ConntrackEntry, frontends: readonly Frontend[]): boolean {
  // An undisturbed reply tuple means no DNAT: the client dialled the pod itself.
  if (entry.origDst === entry.replySrc && entry.origDport === entry.replySport) return false;
  return frontends.some(
    (f) =>
      f.protocol.toLowerCase() === entry.protocol &&
      f.port === entry.origDport &&
      (f.ip === undefined || f.ip === entry.origDst),
  );
}

/**
 * A Service's flows per endpoint. A flow points at an endpoint when its reply comes from it
 * (after DNAT the reply's source is the endpoint) and it was sent to one of the Service's
 * frontends: pods serve several Services, and a flow to another one is not this one's.
 */
export function countFlowsByEndpoint(
  entries: readonly ConntrackEntry[],
  endpoints: readonly EndpointKey[],
  frontends: readonly Frontend[],
): Map<string, number> {
  const counts = new Map<string, number>(endpoints.map((e) => [key(e.protocol, e.endpoint), 0]));
  for (const entry of entries) {
    const k = key(entry.protocol, joinHostPort(entry.replySrc, entry.replySport));
    const n = counts.get(k);
    if (n !== undefined && reachedThrough(entry, frontends)) counts.set(k, n + 1);
  }
  return counts;
}

/** The count `countFlowsByEndpoint` holds for one endpoint. */
export function flowCount(counts: ReadonlyMap<string, number>, endpoint: EndpointKey): number {
  return counts.get(key(endpoint.protocol, endpoint.endpoint)) ?? 0;
}

/** One endpoint's count of a Service's live flows, as `explain --conntrack` reports it. */
export interface EndpointFlows {
  readonly servicePortName: string;
  readonly endpoint: string;
  readonly protocol: string;
  readonly flows: number;
}

/** Lists the family's flows and counts the Service's per endpoint (`explain --conntrack`, live). */
export async function readEndpointFlows(
  runner: Runner,
  family: IPFamily,
  endpoints: readonly (EndpointKey & { readonly servicePortName: string })[],
  frontends: readonly Frontend[],
): Promise<EndpointFlows[]> {
  const counts = countFlowsByEndpoint(await listConntrackEntries(runner, family), endpoints, frontends);
  return endpoints.map((k) => ({
    servicePortName: k.servicePortName,
    endpoint: k.endpoint,
    protocol: k.protocol,
    flows: flowCount(counts, k),
  }));
}
