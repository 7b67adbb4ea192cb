import type { IPFamily } from "../ip.ts";
import { ExecError } from "./exec.ts";
import type { Runner } from "./exec.ts";

/** One conntrack flow: the original direction tuple and the reply direction tuple. */
export interface ConntrackEntry {
  readonly protocol: string;
  readonly origSrc: string;
  readonly origDst: string;
  readonly origSport: number;
  readonly origDport: number;
  readonly replySrc: string;
  readonly replyDst: string;
  readonly replySport: number;
  readonly replyDport: number;
}

/** The fields `conntrack -D` matches on when deleting a stale UDP flow. */
export interface UdpFlowFilter {
  readonly origDst: string;
  readonly origDport: number;
  readonly replySrc: string;
  readonly replySport: number;
}

export interface ConntrackOptions {
  readonly netns?: string;
  readonly timeoutMs?: number;
}

const PROTOCOLS = new Set(["tcp", "udp", "sctp", "icmp", "icmpv6", "udplite", "dccp", "gre"]);

/**
 * Parses `conntrack -L` output (default or `-o extended`): the first src/dst/sport/dport group
 * is the original direction, the second the reply direction. Lines without ports are skipped.
 */
export function parseConntrackList(output: string): ConntrackEntry[] {
  const entries: ConntrackEntry[] = [];
  for (const line of output.split("\n")) {
    const tokens = line.trim().split(/\s+/);
    const protocol = tokens.find((t) => PROTOCOLS.has(t));
    if (protocol === undefined) continue;
    const seen: Record<string, string[]> = { src: [], dst: [], sport: [], dport: [] };
    for (const token of tokens) {
      const eq = token.indexOf("=");
      if (eq <= 0) continue;
      const values = seen[token.slice(0, eq)];
      if (values !== undefined) values.push(token.slice(eq + 1));
    }
    const [origSrc, replySrc] = seen.src ?? [];
    const [origDst, replyDst] = seen.dst ?? [];
    const [origSport, replySport] = (seen.sport ?? []).map(Number);
    const [origDport, replyDport] = (seen.dport ?? []).map(Number);
    if (
      origSrc === undefined ||
      replySrc === undefined ||
      origDst === undefined ||
      replyDst === undefined ||
      origSport === undefined ||
      replySport === undefined ||
      origDport === undefined ||
      replyDport === undefined
    ) {
      continue;
    }
    entries.push({
      protocol,
      origSrc,
      origDst,
      origSport,
      origDport,
      replySrc,
      replyDst,
      replySport,
      replyDport,
    });
  }
  return entries;
}

function familyArg(family: IPFamily): string {
  return family === "IPv4" ? "ipv4" : "ipv6";
}

/** All UDP flows of one family (of the given network namespace). */
export async function listUdpEntries(
  runner: Runner,
  family: IPFamily,
  options: ConntrackOptions = {},
): Promise<ConntrackEntry[]> {
  const result = await runner.run(["conntrack", "-L", "-p", "udp", "-f", familyArg(family)], {
    netns: options.netns,
    timeoutMs: options.timeoutMs ?? 30_000,
  });
  return parseConntrackList(result.stdout).filter((e) => e.protocol === "udp");
}

/** Number from "conntrack v1.4.7 (conntrack-tools): 3 flow entries have been deleted." */
export function parseDeletedCount(stderr: string): number {
  const match = /(\d+) flow entr(?:y|ies) ha(?:s|ve) been deleted/.exec(stderr);
  return match?.[1] === undefined ? 0 : Number(match[1]);
}

/**
 * Deletes the UDP flows matching the filter; resolves the number deleted. conntrack exits 1
 * when nothing matched (the flow may have expired meanwhile): that is not an error.
 */
export async function deleteUdpFlow(
  runner: Runner,
  family: IPFamily,
  filter: UdpFlowFilter,
  options: ConntrackOptions = {},
): Promise<number> {
  const argv = [
    "conntrack",
    "-D",
    "-p",
    "udp",
    "-f",
    familyArg(family),
    "--orig-dst",
    filter.origDst,
    "--orig-port-dst",
    String(filter.origDport),
    "--reply-src",
    filter.replySrc,
    "--reply-port-src",
    String(filter.replySport),
  ];
  const result = await runner.run(argv, {
    netns: options.netns,
    timeoutMs: options.timeoutMs ?? 10_000,
    okExitCodes: [0, 1],
  });
  const deleted = parseDeletedCount(result.stderr + result.stdout);
  if (result.exitCode === 1 && deleted === 0 && !/0 flow entries/.test(result.stderr)) {
    throw new ExecError(result.argv, 1, result.stderr, "exit");
  }
  return deleted;
}

/** `ip:port`, bracketing IPv6 like Go's net.JoinHostPort (and like `Endpoint.endpoint`). */
export function joinHostPort(ip: string, port: number): string {
  return ip.includes(":") ? `[${ip}]:${port}` : `${ip}:${port}`;
}

/**
 * What the UDP conntrack reconciler compares flows against (upstream `conntrack/cleanup.go`).
 * `frontends`: `joinHostPort(clusterIP|externalIP|lbVIP, port)` → serving endpoints
 * (`joinHostPort(ip, port)`); `nodePorts`: nodePort → serving endpoints.
 */
export interface UdpConntrackModel {
  readonly frontends: ReadonlyMap<string, ReadonlySet<string>>;
  readonly nodePorts: ReadonlyMap<number, ReadonlySet<string>>;
}

/** The UDP flows whose reply source is no longer a serving endpoint of the frontend they were sent to. */
export function staleUdpEntries(
  entries: readonly ConntrackEntry[],
  model: UdpConntrackModel,
): ConntrackEntry[] {
  const stale: ConntrackEntry[] = [];
  for (const entry of entries) {
    if (entry.protocol !== "udp") continue;
    const reply = joinHostPort(entry.replySrc, entry.replySport);
    const viaFrontend = model.frontends.get(joinHostPort(entry.origDst, entry.origDport));
    if (viaFrontend !== undefined) {
      if (!viaFrontend.has(reply)) stale.push(entry);
      continue;
    }
    const viaNodePort = model.nodePorts.get(entry.origDport);
    if (viaNodePort !== undefined && !viaNodePort.has(reply)) stale.push(entry);
  }
  return stale;
}

/** One delete per distinct filter tuple: several client flows of one stale backend go in one call. */
export function staleUdpFilters(stale: readonly ConntrackEntry[]): UdpFlowFilter[] {
  const byKey = new Map<string, UdpFlowFilter>();
  for (const e of stale) {
    const key = `${joinHostPort(e.origDst, e.origDport)}|${joinHostPort(e.replySrc, e.replySport)}`;
    if (!byKey.has(key)) {
      byKey.set(key, {
        origDst: e.origDst,
        origDport: e.origDport,
        replySrc: e.replySrc,
        replySport: e.replySport,
      });
    }
  }
  return [...byKey.values()];
}

export interface UdpReconcileResult {
  readonly deleted: number;
  readonly failures: readonly unknown[];
}

/** Lists the family's UDP flows, deletes the stale ones; a failed delete is reported, not thrown. */
export async function reconcileUdpConntrack(
  runner: Runner,
  family: IPFamily,
  model: UdpConntrackModel,
  options: ConntrackOptions = {},
): Promise<UdpReconcileResult> {
  const entries = await listUdpEntries(runner, family, options);
  let deleted = 0;
  const failures: unknown[] = [];
  for (const filter of staleUdpFilters(staleUdpEntries(entries, model))) {
    try {
      deleted += await deleteUdpFlow(runner, family, filter, options);
    } catch (err) {
      failures.push(err);
    }
  }
  return { deleted, failures };
}
