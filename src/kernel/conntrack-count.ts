import type { IPFamily } from "../proxy/types.ts";
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

/**
 * Flows per endpoint. A flow points at an endpoint when its reply comes from it: after DNAT
 * the reply direction's source is the endpoint, whatever address the client dialled.
 */
export function countFlowsByEndpoint(
  entries: readonly ConntrackEntry[],
  endpoints: readonly EndpointKey[],
): Map<string, number> {
  const counts = new Map<string, number>(endpoints.map((e) => [key(e.protocol, e.endpoint), 0]));
  for (const entry of entries) {
    const k = key(entry.protocol, joinHostPort(entry.replySrc, entry.replySport));
    const n = counts.get(k);
    if (n !== undefined) counts.set(k, n + 1);
  }
  return counts;
}

/** The count `countFlowsByEndpoint` holds for one endpoint. */
export function flowCount(counts: ReadonlyMap<string, number>, endpoint: EndpointKey): number {
  return counts.get(key(endpoint.protocol, endpoint.endpoint)) ?? 0;
}
