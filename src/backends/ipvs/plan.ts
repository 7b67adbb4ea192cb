/**
 * The pure diff of ipvs mode: what the kernel holds (or what the last accepted sync left there)
 * against what the renderer wants, as the ipvsadm, ipset and ip commands that close the gap.
 * It keeps upstream's rules (pkg/proxy/ipvs/proxier.go `syncService`, `syncEndpoint`,
 * `cleanLegacyService`, graceful_termination.go): a virtual server is added or edited in place,
 * a real server that goes away is deleted at once when it carries no connection (or is UDP or
 * SCTP), and otherwise gets weight 0 and waits in the graceful-termination list; virtual servers
 * nobody wants are deleted unless `--ipvs-exclude-cidrs` covers them.
 */
import { cidrContainsSloppy, familyOf, joinHostPort, type IPFamily } from "../../ip.ts";
import type { IpvsRealServerEntry, IpvsServiceEntry } from "../../kernel/ipvs.ts";
import { realServerKey, virtualServerKey } from "./render.ts";
import type { IpsetState, IpvsDesiredState, RealServer, VirtualServer } from "./types.ts";

/** `ipvsadm` option naming the protocol of a service address. */
function protocolFlag(protocol: VirtualServer["protocol"]): string {
  return protocol === "TCP" ? "-t" : protocol === "UDP" ? "-u" : "--sctp-service";
}

function serviceOptions(vs: VirtualServer): string {
  let text = `-s ${vs.scheduler}`;
  if (vs.persistence > 0) text += ` -p ${vs.persistence}`;
  if (vs.schedFlags.length > 0) text += ` -b ${vs.schedFlags.join(",")}`;
  return text;
}

const vsAddress = (vs: Pick<VirtualServer, "protocol" | "address" | "port">): string =>
  `${protocolFlag(vs.protocol)} ${joinHostPort(vs.address, vs.port)}`;

/** `-A -t 10.0.0.1:80 -s rr [-p 10800] [-b mh-port]` (also `ipvsadm -S`'s format). */
export function addServiceLine(vs: VirtualServer, verb: "-A" | "-E" = "-A"): string {
  return `${verb} ${vsAddress(vs)} ${serviceOptions(vs)}`;
}

export function deleteServiceLine(vs: Pick<VirtualServer, "protocol" | "address" | "port">): string {
  return `-D ${vsAddress(vs)}`;
}

/** `-a -t 10.0.0.1:80 -r 10.180.0.1:80 -m -w 1`: masquerade (NAT) forwarding, as upstream. */
export function realServerLine(
  vs: Pick<VirtualServer, "protocol" | "address" | "port">,
  rs: RealServer,
  verb: "-a" | "-e" = "-a",
): string {
  return `${verb} ${vsAddress(vs)} -r ${realServerKey(rs)} -m -w ${rs.weight}`;
}

export function deleteRealServerLine(
  vs: Pick<VirtualServer, "protocol" | "address" | "port">,
  rs: Pick<RealServer, "address" | "port">,
): string {
  return `-d ${vsAddress(vs)} -r ${realServerKey(rs)}`;
}

/** Upstream's hashsize/maxelem defaults, and bitmap:port's full range. */
export function createSetLine(set: Pick<IpsetState, "name" | "type" | "family">): string {
  return set.type === "bitmap:port"
    ? `create ${set.name} bitmap:port range 0-65535`
    : `create ${set.name} ${set.type} family ${set.family} hashsize 1024 maxelem 65536`;
}

/** A real server waiting for its connections to end before it is deleted. */
export interface GracefulItem {
  readonly vs: Pick<VirtualServer, "protocol" | "address" | "port">;
  readonly rs: Pick<RealServer, "address" | "port">;
}

/** `TCP:10.0.0.1:80/10.180.0.1:80` (upstream `GetUniqueRSName`). */
export function gracefulKey(item: GracefulItem): string {
  return `${virtualServerKey(item.vs)}/${realServerKey(item.rs)}`;
}

/** UDP and SCTP real servers are deleted at once (expire_nodest_conn ends their flows). */
export function needsGracefulTermination(protocol: VirtualServer["protocol"]): boolean {
  return protocol === "TCP";
}

export interface KernelView {
  /** Every virtual server in the table (all families; foreign ones too). */
  readonly ipvs: readonly IpvsServiceEntry[];
  /** Our sets by name; absent sets are created. */
  readonly ipsets: ReadonlyMap<string, readonly string[]>;
  /** This family's addresses on kube-ipvs0. */
  readonly boundAddresses: readonly string[];
}

export interface PlanOptions {
  readonly family: IPFamily;
  /** The proxier's first sync: real servers left with another weight are set back to 1. */
  readonly initialSync: boolean;
  readonly excludeCIDRs: readonly string[];
  /** Keys (`gracefulKey`) of the real servers waiting in the graceful-termination list. */
  readonly graceful: ReadonlySet<string>;
}

export interface IpvsPlan {
  readonly ipsetLines: readonly string[];
  /** Virtual-server and real-server additions, edits and deletions (`ipvsadm -R`). */
  readonly ipvsLines: readonly string[];
  readonly addAddresses: readonly string[];
  readonly deleteAddresses: readonly string[];
  /** Stale virtual servers, deleted after the iptables rules moved on (upstream's order). */
  readonly deleteServiceLines: readonly string[];
  /** Real servers newly given weight 0, to delete once their connections end. */
  readonly newlyGraceful: readonly GracefulItem[];
  /** Keys that left the graceful list (the endpoint came back, or its virtual server went). */
  readonly leftGraceful: readonly string[];
  /** A removed TCP real server's connection counts are unknown (a partial sync's cached view). */
  readonly needsConnectionCounts: boolean;
}

const hasConnections = (rs: IpvsRealServerEntry): boolean => rs.activeConn + rs.inactiveConn !== 0;

function sameService(vs: VirtualServer, cur: IpvsServiceEntry): boolean {
  return (
    vs.scheduler === cur.scheduler &&
    vs.persistence === cur.persistence &&
    [...vs.schedFlags].sort().join(",") === [...cur.schedFlags].sort().join(",")
  );
}

export function planIpvs(desired: IpvsDesiredState, kernel: KernelView, options: PlanOptions): IpvsPlan {
  const ipvsLines: string[] = [];
  const deleteServiceLines: string[] = [];
  const newlyGraceful: GracefulItem[] = [];
  const leftGraceful: string[] = [];
  let needsConnectionCounts = false;

  const current = new Map<string, IpvsServiceEntry>();
  for (const entry of kernel.ipvs) current.set(virtualServerKey(entry), entry);

  const wanted = new Set<string>();
  for (const d of desired.virtualServers) {
    const key = virtualServerKey(d.vs);
    if (wanted.has(key)) continue;
    wanted.add(key);
    const cur = current.get(key);
    if (cur === undefined) ipvsLines.push(addServiceLine(d.vs));
    else if (!sameService(d.vs, cur)) ipvsLines.push(addServiceLine(d.vs, "-E"));

    const curRS = new Map<string, IpvsRealServerEntry>();
    for (const rs of cur?.realServers ?? []) curRS.set(realServerKey(rs), rs);
    const wantedRS = new Set<string>();
    for (const rs of d.realServers) {
      const rsKey = realServerKey(rs);
      wantedRS.add(rsKey);
      const present = curRS.get(rsKey);
      const gKey = gracefulKey({ vs: d.vs, rs });
      if (present === undefined) {
        ipvsLines.push(realServerLine(d.vs, rs));
      } else if (options.graceful.has(gKey)) {
        // Back before it drained: upstream deletes it from the list and the kernel, then re-adds it.
        leftGraceful.push(gKey);
        ipvsLines.push(deleteRealServerLine(d.vs, rs), realServerLine(d.vs, rs));
      } else if (options.initialSync && present.weight !== rs.weight) {
        ipvsLines.push(realServerLine(d.vs, rs, "-e"));
      }
    }
    for (const [rsKey, rs] of curRS) {
      if (wantedRS.has(rsKey)) continue;
      const item = { vs: d.vs, rs };
      if (options.graceful.has(gracefulKey(item))) continue;
      if (!needsGracefulTermination(d.vs.protocol)) {
        ipvsLines.push(deleteRealServerLine(d.vs, rs));
      } else if (Number.isNaN(rs.activeConn)) {
        needsConnectionCounts = true;
      } else if (!hasConnections(rs)) {
        ipvsLines.push(deleteRealServerLine(d.vs, rs));
      } else {
        ipvsLines.push(realServerLine(d.vs, { address: rs.address, port: rs.port, weight: 0 }, "-e"));
        newlyGraceful.push(item);
      }
    }
  }

  for (const [key, cur] of current) {
    if (wanted.has(key)) continue;
    if (familyOf(cur.address) !== options.family) continue;
    if (options.excludeCIDRs.some((c) => cidrContainsSloppy(c, cur.address))) continue;
    deleteServiceLines.push(deleteServiceLine(cur));
    for (const rs of cur.realServers) {
      const gKey = gracefulKey({ vs: cur, rs });
      if (options.graceful.has(gKey)) leftGraceful.push(gKey);
    }
  }

  const ipsetLines: string[] = [];
  for (const set of desired.ipsets) {
    ipsetLines.push(createSetLine(set));
    const have = new Set((kernel.ipsets.get(set.name) ?? []).map(normaliseEntry));
    const want = new Set(set.entries.map(normaliseEntry));
    for (const entry of have) if (!want.has(entry)) ipsetLines.push(`del ${set.name} ${entry}`);
    for (const entry of set.entries)
      if (!have.has(normaliseEntry(entry))) ipsetLines.push(`add ${set.name} ${entry}`);
  }

  const bound = new Set(kernel.boundAddresses);
  const want = new Set(desired.bindAddresses);
  return {
    ipsetLines,
    ipvsLines,
    addAddresses: desired.bindAddresses.filter((a) => !bound.has(a)),
    deleteAddresses: [...bound].filter((a) => !want.has(a)).sort(),
    deleteServiceLines,
    newlyGraceful,
    leftGraceful,
    needsConnectionCounts,
  };
}

/** ipset prints a host network without its prefix length: compare both spellings as one. */
function normaliseEntry(entry: string): string {
  return entry.replace(/\/(32|128)$/, "");
}

/**
 * Upstream's graceful-termination check (about once a minute): each waiting real server is
 * deleted once its connections are gone, or dropped from the list when it is gone already.
 */
export function planGracefulDeletions(
  items: readonly GracefulItem[],
  ipvs: readonly IpvsServiceEntry[],
): { lines: string[]; done: string[] } {
  const byKey = new Map<string, IpvsServiceEntry>();
  for (const e of ipvs) byKey.set(virtualServerKey(e), e);
  const lines: string[] = [];
  const done: string[] = [];
  for (const item of items) {
    const rs = byKey
      .get(virtualServerKey(item.vs))
      ?.realServers.find((r) => realServerKey(r) === realServerKey(item.rs));
    if (rs === undefined) {
      done.push(gracefulKey(item));
      continue;
    }
    if (needsGracefulTermination(item.vs.protocol) && hasConnections(rs)) continue;
    lines.push(deleteRealServerLine(item.vs, rs));
    done.push(gracefulKey(item));
  }
  return { lines, done };
}

/** What a sync leaves in the kernel, as the next partial sync's view (connection counts unknown). */
export function kernelAfter(desired: IpvsDesiredState, graceful: readonly GracefulItem[]): KernelView {
  const entries = new Map<string, { vs: VirtualServer; rs: IpvsRealServerEntry[] }>();
  const unknown = { activeConn: Number.NaN, inactiveConn: Number.NaN, forward: "Masq" };
  for (const d of desired.virtualServers) {
    const key = virtualServerKey(d.vs);
    if (entries.has(key)) continue;
    entries.set(key, { vs: d.vs, rs: d.realServers.map((rs) => ({ ...rs, ...unknown })) });
  }
  for (const item of graceful) {
    const e = entries.get(virtualServerKey(item.vs));
    if (e === undefined) continue;
    if (!e.rs.some((r) => realServerKey(r) === realServerKey(item.rs)))
      e.rs.push({ address: item.rs.address, port: item.rs.port, weight: 0, ...unknown });
  }
  return {
    ipvs: [...entries.values()].map(({ vs, rs }) => ({ ...vs, realServers: rs })),
    ipsets: new Map(desired.ipsets.map((s) => [s.name, s.entries])),
    boundAddresses: desired.bindAddresses,
  };
}
