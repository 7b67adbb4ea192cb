/**
 * IPVS and ipsets as the packet tracer sees them (pure): the virtual servers with their real
 * servers, how a scheduler shares new connections among them, and `-m set` membership. The
 * tables are read elsewhere (`ipvsadm -Ln`, `ipset save`); this file only answers questions about
 * a packet. Where IPVS sits in the hooks is the kernel's: LOCAL_IN at priority 99
 * (`NF_IP_PRI_NAT_SRC - 1`, after filter INPUT, before nat INPUT) for packets from elsewhere,
 * LOCAL_OUT at -98 (`NF_IP_PRI_NAT_DST + 2`, after nat OUTPUT, before filter OUTPUT) for the
 * node's own; a packet IPVS forwards from LOCAL_IN leaves through LOCAL_OUT and POSTROUTING.
 */
import type { Address } from "../ip.ts";
import { cidrContains, parseCIDR, parseIP, sameAddress } from "../ip.ts";

export const IPVS_LOCAL_IN_PRIORITY = 99;
export const IPVS_LOCAL_OUT_PRIORITY = -98;

export interface IpvsRealServerModel {
  readonly address: string;
  readonly port: number;
  readonly weight: number;
  /** Masq, Local, Route, Tunnel. */
  readonly forward: string;
  readonly activeConn: number;
  readonly inactiveConn: number;
}

export interface IpvsVirtualServerModel {
  readonly protocol: "TCP" | "UDP" | "SCTP";
  readonly address: string;
  readonly port: number;
  readonly scheduler: string;
  /** Persistence timeout in seconds; 0 = not persistent. */
  readonly persistence: number;
  readonly realServers: readonly IpvsRealServerModel[];
}

export interface IpsetModel {
  readonly name: string;
  readonly type: string;
  /** As `ipset save` prints them: `10.1.0.1,tcp:80`, `30080`, `10.0.0.0/8`. */
  readonly entries: readonly string[];
  /** Entries of a net type flagged `nomatch`: a packet whose most specific entry is one is not in. */
  readonly nomatch?: readonly string[];
}

/** What the tracer knows of IPVS and the ipsets on the node. */
export interface IpvsTraceModel {
  readonly virtualServers: readonly IpvsVirtualServerModel[];
}

/** `TCP 10.1.0.1:80`, `UDP [2001:db8::1]:53`. */
export function virtualServerLabel(
  vs: Pick<IpvsVirtualServerModel, "protocol" | "address" | "port">,
): string {
  return `${vs.protocol} ${hostPort(vs.address, vs.port)}`;
}

export function hostPort(ip: string, port: number): string {
  return ip.includes(":") ? `[${ip}]:${port}` : `${ip}:${port}`;
}

/** The virtual server a packet to `dst:port` over `protocol` hits (fwmark services are never made). */
export function findVirtualServer(
  model: IpvsTraceModel,
  protocol: string,
  dst: Address,
  port: number,
): IpvsVirtualServerModel | undefined {
  return model.virtualServers.find((vs) => {
    if (vs.protocol.toLowerCase() !== protocol || vs.port !== port) return false;
    const a = parseIP(vs.address);
    return a !== undefined && sameAddress(a, dst);
  });
}

/** Schedulers whose long-run share of new connections is each real server's weight over the sum. */
const WEIGHTED = new Set([
  "wrr",
  "wlc",
  "lc",
  "sed",
  "nq",
  "sh",
  "dh",
  "mh",
  "lblc",
  "lblcr",
  "fo",
  "ovf",
  "twos",
]);

/**
 * The share of new connections each real server gets. Weight 0 (a draining endpoint) gets none:
 * every scheduler skips it. rr takes the others in turn, whatever their weights; the others
 * follow the weights in the long run (`note` says what that assumes).
 */
export function realServerShares(vs: IpvsVirtualServerModel): {
  shares: { rs: IpvsRealServerModel; share: number }[];
  note?: string;
} {
  const live = vs.realServers.filter((rs) => rs.weight > 0);
  const total = live.reduce((sum, rs) => sum + rs.weight, 0);
  const shares = vs.realServers.map((rs) => ({
    rs,
    share: rs.weight <= 0 ? 0 : vs.scheduler === "rr" ? 1 / live.length : rs.weight / total,
  }));
  if (vs.scheduler === "rr" || vs.scheduler === "wrr" || live.length <= 1) return { shares };
  return {
    shares,
    note: WEIGHTED.has(vs.scheduler)
      ? `scheduler ${vs.scheduler} picks by load or by a hash of the client: the shares are the weights' (each real server's weight over their sum)`
      : `scheduler ${vs.scheduler} is not modelled: the shares are the weights'`,
  };
}

/** What `-m set --match-set NAME FLAGS` looks at, per flag. */
export interface SetPacket {
  readonly protocol: string;
  readonly src: Address;
  readonly srcPort?: number;
  readonly dst: Address;
  readonly dstPort?: number;
}

const entryPorts = (text: string): { protocol: string; port: number } | undefined => {
  const m = /^(?:(tcp|udp|sctp|udplite):)?(\d+)$/.exec(text);
  return m === null ? undefined : { protocol: m[1] ?? "tcp", port: Number(m[2]) };
};

/** `10.0.0.0/8` (or a bare address, a host network) → its prefix when it holds `a`, else -1. */
function netPrefix(text: string, a: Address): number {
  const cidr = parseCIDR(text.includes("/") ? text : `${text}/${a.family === "IPv4" ? 32 : 128}`);
  return cidr !== undefined && cidrContains(cidr, a) ? cidr.prefix : -1;
}

/**
 * Whether the packet is in the set, the fields taken from the sides `flags` names (`dst,dst,src`);
 * undefined when the set's type is not modelled. Types: hash:ip, hash:ip,port, hash:ip,port,ip,
 * hash:ip,port,net and bitmap:port (the ones ipvs mode creates), hash:net and hash:net,port. In
 * the net types the most specific entry that holds the packet decides, as in the kernel: an entry
 * flagged `nomatch` there means not in the set.
 */
export function setContains(
  set: IpsetModel,
  flags: readonly ("src" | "dst")[],
  p: SetPacket,
): boolean | undefined {
  const ip = (i: number): Address => (flags[i] === "src" ? p.src : p.dst);
  const port = (i: number): number | undefined => (flags[i] === "src" ? p.srcPort : p.dstPort);
  const sameIp = (text: string, a: Address): boolean => {
    const parsed = parseIP(text);
    return parsed !== undefined && sameAddress(parsed, a);
  };
  const samePort = (text: string, i: number): boolean => {
    const e = entryPorts(text);
    return e !== undefined && e.protocol === p.protocol && e.port === port(i);
  };
  const nomatch = new Set(set.nomatch ?? []);
  /** The net types: `net` is the entry's net part and `rest` checks the others. */
  const mostSpecific = (net: (parts: string[]) => string, rest: (parts: string[]) => boolean, at: number) => {
    let best = -1;
    let member = false;
    for (const e of set.entries) {
      const parts = e.split(",");
      if (!rest(parts)) continue;
      const prefix = netPrefix(net(parts), ip(at));
      if (prefix > best) {
        best = prefix;
        member = !nomatch.has(e);
      }
    }
    return member;
  };
  const parts = (entry: string): string[] => entry.split(",");
  switch (set.type) {
    case "hash:ip":
      return set.entries.some((e) => sameIp(e, ip(0)));
    case "hash:net":
      return mostSpecific(
        ([n = ""]) => n,
        () => true,
        0,
      );
    case "hash:net,port":
      return mostSpecific(
        ([n = ""]) => n,
        ([, b = ""]) => samePort(b, 1),
        0,
      );
    case "hash:ip,port":
      return set.entries.some((e) => {
        const [a = "", b = ""] = parts(e);
        return sameIp(a, ip(0)) && samePort(b, 1);
      });
    case "hash:ip,port,ip":
      return set.entries.some((e) => {
        const [a = "", b = "", c = ""] = parts(e);
        return sameIp(a, ip(0)) && samePort(b, 1) && sameIp(c, ip(2));
      });
    case "hash:ip,port,net":
      return mostSpecific(
        ([, , c = ""]) => c,
        ([a = "", b = ""]) => sameIp(a, ip(0)) && samePort(b, 1),
        2,
      );
    case "bitmap:port":
      return set.entries.some((e) => {
        const [lo = "", hi] = e.split("-");
        const value = port(0);
        return value !== undefined && value >= Number(lo) && value <= Number(hi ?? lo);
      });
    default:
      return undefined;
  }
}
