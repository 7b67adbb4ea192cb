/**
 * The names ipvs mode programs, as data (upstream pkg/proxy/ipvs/proxier.go and ipset.go): the
 * dummy interface, the iptables chains and their jumps, the ipsets with their types and the
 * comments upstream's rules carry, and which set feeds which iptables rule. See docs/ipvs-mode.md.
 */
import type { JumpRule } from "../../kernel/iptables.ts";
import type { IPFamily } from "../../ip.ts";
import { NAT_JUMP_CHAINS } from "../types.ts";

export const DUMMY_DEVICE = "kube-ipvs0";
export const DEFAULT_SCHEDULER = "rr";

export const KUBE_SERVICES = "KUBE-SERVICES";
export const KUBE_PROXY_FIREWALL = "KUBE-PROXY-FIREWALL";
export const KUBE_SOURCE_RANGES_FIREWALL = "KUBE-SOURCE-RANGES-FIREWALL";
export const KUBE_POSTROUTING = "KUBE-POSTROUTING";
export const KUBE_MARK_MASQ = "KUBE-MARK-MASQ";
export const KUBE_NODE_PORT = "KUBE-NODE-PORT";
export const KUBE_FORWARD = "KUBE-FORWARD";
export const KUBE_LOAD_BALANCER = "KUBE-LOAD-BALANCER";
export const KUBE_IPVS_FILTER = "KUBE-IPVS-FILTER";
export const KUBE_IPVS_OUT_FILTER = "KUBE-IPVS-OUT-FILTER";

/** Upstream `iptablesJumpChain`: the rules prepended to built-in chains (EnsureRule Prepend). */
export const IPVS_JUMP_CHAINS: readonly JumpRule[] = [
  ...NAT_JUMP_CHAINS,
  {
    table: "filter",
    srcChain: "FORWARD",
    extraArgs: [],
    comment: "kubernetes forwarding rules",
    dstChain: KUBE_FORWARD,
  },
  {
    table: "filter",
    srcChain: "INPUT",
    extraArgs: [],
    comment: "kubernetes health check rules",
    dstChain: KUBE_NODE_PORT,
  },
  {
    table: "filter",
    srcChain: "INPUT",
    extraArgs: [],
    comment: "kube-proxy firewall rules",
    dstChain: KUBE_PROXY_FIREWALL,
  },
  {
    table: "filter",
    srcChain: "FORWARD",
    extraArgs: [],
    comment: "kube-proxy firewall rules",
    dstChain: KUBE_PROXY_FIREWALL,
  },
  {
    table: "filter",
    srcChain: "INPUT",
    extraArgs: [],
    comment: "kubernetes ipvs access filter",
    dstChain: KUBE_IPVS_FILTER,
  },
  {
    table: "filter",
    srcChain: "OUTPUT",
    extraArgs: [],
    comment: "kubernetes ipvs access filter",
    dstChain: KUBE_IPVS_OUT_FILTER,
  },
];

/** Upstream `iptablesChains` (also `iptablesCleanupChains`): declared in every payload, in this order. */
export const IPVS_CHAINS: Readonly<Record<"nat" | "filter", readonly string[]>> = {
  nat: [KUBE_SERVICES, KUBE_POSTROUTING, KUBE_NODE_PORT, KUBE_LOAD_BALANCER, KUBE_MARK_MASQ],
  filter: [
    KUBE_FORWARD,
    KUBE_NODE_PORT,
    KUBE_PROXY_FIREWALL,
    KUBE_SOURCE_RANGES_FIREWALL,
    KUBE_IPVS_FILTER,
    KUBE_IPVS_OUT_FILTER,
  ],
};

export type IpsetType = "hash:ip" | "hash:ip,port" | "hash:ip,port,ip" | "hash:ip,port,net" | "bitmap:port";

/** The ipsets upstream creates (its IPv4 names; `ipsetName` gives a family's name). */
export const SET = {
  loopBack: "KUBE-LOOP-BACK",
  clusterIP: "KUBE-CLUSTER-IP",
  externalIP: "KUBE-EXTERNAL-IP",
  externalIPLocal: "KUBE-EXTERNAL-IP-LOCAL",
  loadBalancer: "KUBE-LOAD-BALANCER",
  loadBalancerFW: "KUBE-LOAD-BALANCER-FW",
  loadBalancerLocal: "KUBE-LOAD-BALANCER-LOCAL",
  loadBalancerSourceIP: "KUBE-LOAD-BALANCER-SOURCE-IP",
  loadBalancerSourceCIDR: "KUBE-LOAD-BALANCER-SOURCE-CIDR",
  nodePortTCP: "KUBE-NODE-PORT-TCP",
  nodePortLocalTCP: "KUBE-NODE-PORT-LOCAL-TCP",
  nodePortUDP: "KUBE-NODE-PORT-UDP",
  nodePortLocalUDP: "KUBE-NODE-PORT-LOCAL-UDP",
  nodePortSCTP: "KUBE-NODE-PORT-SCTP-HASH",
  nodePortLocalSCTP: "KUBE-NODE-PORT-LOCAL-SCTP-HASH",
  healthCheckNodePort: "KUBE-HEALTH-CHECK-NODE-PORT",
  ipvsIPs: "KUBE-IPVS-IPS",
} as const;

export type SetKey = keyof typeof SET;

export interface IpsetInfo {
  readonly key: SetKey;
  readonly type: IpsetType;
  /** What upstream puts in the `-m comment` of the rules matching the set. */
  readonly comment: string;
}

/** Upstream `ipsetInfo`, in its order. */
export const IPSET_INFO: readonly IpsetInfo[] = [
  {
    key: "loopBack",
    type: "hash:ip,port,ip",
    comment: "Kubernetes endpoints dst ip:port, source ip for solving hairpin purpose",
  },
  {
    key: "clusterIP",
    type: "hash:ip,port",
    comment: "Kubernetes service cluster ip + port for masquerade purpose",
  },
  {
    key: "externalIP",
    type: "hash:ip,port",
    comment: "Kubernetes service external ip + port for masquerade and filter purpose",
  },
  {
    key: "externalIPLocal",
    type: "hash:ip,port",
    comment: "Kubernetes service external ip + port with externalTrafficPolicy=local",
  },
  { key: "loadBalancer", type: "hash:ip,port", comment: "Kubernetes service lb portal" },
  {
    key: "loadBalancerFW",
    type: "hash:ip,port",
    comment: "Kubernetes service load balancer ip + port for load balancer with sourceRange",
  },
  {
    key: "loadBalancerLocal",
    type: "hash:ip,port",
    comment: "Kubernetes service load balancer ip + port with externalTrafficPolicy=local",
  },
  {
    key: "loadBalancerSourceIP",
    type: "hash:ip,port,ip",
    comment: "Kubernetes service load balancer ip + port + source IP for packet filter purpose",
  },
  {
    key: "loadBalancerSourceCIDR",
    type: "hash:ip,port,net",
    comment: "Kubernetes service load balancer ip + port + source cidr for packet filter purpose",
  },
  { key: "nodePortTCP", type: "bitmap:port", comment: "Kubernetes nodeport TCP port for masquerade purpose" },
  {
    key: "nodePortLocalTCP",
    type: "bitmap:port",
    comment: "Kubernetes nodeport TCP port with externalTrafficPolicy=local",
  },
  { key: "nodePortUDP", type: "bitmap:port", comment: "Kubernetes nodeport UDP port for masquerade purpose" },
  {
    key: "nodePortLocalUDP",
    type: "bitmap:port",
    comment: "Kubernetes nodeport UDP port with externalTrafficPolicy=local",
  },
  {
    key: "nodePortSCTP",
    type: "hash:ip,port",
    comment: "Kubernetes nodeport SCTP port for masquerade purpose with type 'hash ip:port'",
  },
  {
    key: "nodePortLocalSCTP",
    type: "hash:ip,port",
    comment: "Kubernetes nodeport SCTP port with externalTrafficPolicy=local with type 'hash ip:port'",
  },
  { key: "healthCheckNodePort", type: "bitmap:port", comment: "Kubernetes health check node port" },
  { key: "ipvsIPs", type: "hash:ip", comment: "Addresses on the ipvs interface" },
];

/** Sets that older versions created and this one no longer does; cleanup still removes them. */
export const LEGACY_SETS: readonly string[] = ["KUBE-NODE-PORT-SCTP", "KUBE-NODE-PORT-LOCAL-SCTP"];

/** ipset's limit on set names. */
const MAX_SET_NAME = 31;

/**
 * A set's name in one family: IPv6 sets swap the `KUBE-` prefix for `KUBE-6-` so both families
 * coexist, cut to ipset's 31 characters (upstream `NewIPSet`).
 */
export function ipsetName(key: SetKey, family: IPFamily): string {
  const name = SET[key];
  if (family === "IPv4") return name;
  return name.replace(/^KUBE-/, "KUBE-6-").slice(0, MAX_SET_NAME);
}

/** Every set name ipvs mode may have created in any family, legacy ones included (for cleanup). */
export function allIpsetNames(): string[] {
  const names = new Set<string>();
  for (const info of IPSET_INFO)
    for (const family of ["IPv4", "IPv6"] as const) names.add(ipsetName(info.key, family));
  for (const legacy of LEGACY_SETS) {
    names.add(legacy);
    names.add(legacy.replace(/^KUBE-/, "KUBE-6-").slice(0, MAX_SET_NAME));
  }
  return [...names];
}

/**
 * Upstream `ipsetWithIptablesChain`: a rule `-A FROM [-p PROTO] -m comment --comment C -m set
 * --match-set SET MATCH -j TO` for each non-empty set, in this order (the LOCAL node-port sets
 * before the others, so that their RETURN comes first).
 */
export interface SetRule {
  readonly key: SetKey;
  readonly table: "nat" | "filter";
  readonly from: string;
  readonly to: string;
  readonly match: string;
  readonly protocol: "" | "tcp" | "udp" | "sctp";
}

export const SET_RULES: readonly SetRule[] = [
  {
    key: "loopBack",
    table: "nat",
    from: KUBE_POSTROUTING,
    to: "MASQUERADE",
    match: "dst,dst,src",
    protocol: "",
  },
  {
    key: "loadBalancer",
    table: "nat",
    from: KUBE_SERVICES,
    to: KUBE_LOAD_BALANCER,
    match: "dst,dst",
    protocol: "",
  },
  {
    key: "loadBalancerLocal",
    table: "nat",
    from: KUBE_LOAD_BALANCER,
    to: "RETURN",
    match: "dst,dst",
    protocol: "",
  },
  {
    key: "nodePortLocalTCP",
    table: "nat",
    from: KUBE_NODE_PORT,
    to: "RETURN",
    match: "dst",
    protocol: "tcp",
  },
  {
    key: "nodePortTCP",
    table: "nat",
    from: KUBE_NODE_PORT,
    to: KUBE_MARK_MASQ,
    match: "dst",
    protocol: "tcp",
  },
  {
    key: "nodePortLocalUDP",
    table: "nat",
    from: KUBE_NODE_PORT,
    to: "RETURN",
    match: "dst",
    protocol: "udp",
  },
  {
    key: "nodePortUDP",
    table: "nat",
    from: KUBE_NODE_PORT,
    to: KUBE_MARK_MASQ,
    match: "dst",
    protocol: "udp",
  },
  {
    key: "nodePortLocalSCTP",
    table: "nat",
    from: KUBE_NODE_PORT,
    to: "RETURN",
    match: "dst,dst",
    protocol: "sctp",
  },
  {
    key: "nodePortSCTP",
    table: "nat",
    from: KUBE_NODE_PORT,
    to: KUBE_MARK_MASQ,
    match: "dst,dst",
    protocol: "sctp",
  },
  {
    key: "loadBalancerFW",
    table: "filter",
    from: KUBE_PROXY_FIREWALL,
    to: KUBE_SOURCE_RANGES_FIREWALL,
    match: "dst,dst",
    protocol: "",
  },
  {
    key: "loadBalancerSourceCIDR",
    table: "filter",
    from: KUBE_SOURCE_RANGES_FIREWALL,
    to: "RETURN",
    match: "dst,dst,src",
    protocol: "",
  },
  {
    key: "loadBalancerSourceIP",
    table: "filter",
    from: KUBE_SOURCE_RANGES_FIREWALL,
    to: "RETURN",
    match: "dst,dst,src",
    protocol: "",
  },
];
