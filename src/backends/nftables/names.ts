/**
 * Names in nftables mode (upstream pkg/proxy/nftables): the fixed objects of `table ip|ip6
 * kube-proxy`, the base chains as data (name, type, hook, priority), and the hashed names of the
 * per-Service-port and per-endpoint chains and sets. Everything lives inside our own table, so no
 * name carries a `KUBE-` prefix.
 */
import { hash } from "node:crypto";
import type { ServicePortName } from "../../proxy/types.ts";

export const KUBE_PROXY_TABLE = "kube-proxy";
export const TABLE_COMMENT = "rules for kube-proxy";

export const SERVICES_CHAIN = "services";
export const SERVICE_IPS_MAP = "service-ips";
export const SERVICE_NODEPORTS_MAP = "service-nodeports";
export const NODEPORT_IPS_SET = "nodeport-ips";
export const CLUSTER_IPS_SET = "cluster-ips";
export const SERVICE_ENDPOINTS_CHECK_CHAIN = "service-endpoints-check";
export const NODEPORT_ENDPOINTS_CHECK_CHAIN = "nodeport-endpoints-check";
export const NO_ENDPOINT_SERVICES_MAP = "no-endpoint-services";
export const NO_ENDPOINT_NODEPORTS_MAP = "no-endpoint-nodeports";
export const REJECT_CHAIN = "reject-chain";
export const CLUSTER_IPS_CHECK_CHAIN = "cluster-ips-check";
export const FIREWALL_IPS_MAP = "firewall-ips";
export const FIREWALL_CHECK_CHAIN = "firewall-check";
export const MARK_MASQ_CHAIN = "mark-for-masquerade";
export const MASQUERADING_CHAIN = "masquerading";

export type BaseChainType = "filter" | "nat";
export type BaseChainHook = "prerouting" | "input" | "forward" | "output" | "postrouting";

export interface BaseChain {
  readonly name: string;
  readonly type: BaseChainType;
  readonly hook: BaseChainHook;
  /** Numeric: the kernel lists priorities as numbers, and so does upstream's fake. */
  readonly priority: number;
}

/**
 * The chains bound to netfilter hooks, upstream's `nftablesBaseChains` (v1.35). The firewall
 * check must see the pre-DNAT destination, so it runs at dstnat-10; the no-endpoint and
 * cluster-IP checks reject, which prerouting did not allow before kernel 5.9, so they sit on
 * input/forward/output at the normal filter priority, after DNAT.
 */
export const BASE_CHAINS: readonly BaseChain[] = [
  { name: "filter-prerouting-pre-dnat", type: "filter", hook: "prerouting", priority: -110 },
  { name: "filter-output-pre-dnat", type: "filter", hook: "output", priority: -110 },
  { name: "filter-input", type: "filter", hook: "input", priority: 0 },
  { name: "filter-forward", type: "filter", hook: "forward", priority: 0 },
  { name: "filter-output", type: "filter", hook: "output", priority: 0 },
  { name: "nat-prerouting", type: "nat", hook: "prerouting", priority: -100 },
  { name: "nat-output", type: "nat", hook: "output", priority: -100 },
  { name: "nat-postrouting", type: "nat", hook: "postrouting", priority: 100 },
];

export interface JumpChain {
  readonly srcChain: string;
  readonly dstChain: string;
  /** Match in front of the jump ("" for none). */
  readonly match: string;
}

/** The jumps from the base chains, in the order each base chain holds them (`nftablesJumpChains`). */
export const JUMP_CHAINS: readonly JumpChain[] = [
  { srcChain: "filter-prerouting-pre-dnat", dstChain: FIREWALL_CHECK_CHAIN, match: "ct state new" },
  { srcChain: "filter-output-pre-dnat", dstChain: FIREWALL_CHECK_CHAIN, match: "ct state new" },
  { srcChain: "filter-input", dstChain: NODEPORT_ENDPOINTS_CHECK_CHAIN, match: "ct state new" },
  { srcChain: "filter-input", dstChain: SERVICE_ENDPOINTS_CHECK_CHAIN, match: "ct state new" },
  { srcChain: "filter-forward", dstChain: SERVICE_ENDPOINTS_CHECK_CHAIN, match: "ct state new" },
  { srcChain: "filter-forward", dstChain: CLUSTER_IPS_CHECK_CHAIN, match: "ct state new" },
  { srcChain: "filter-output", dstChain: SERVICE_ENDPOINTS_CHECK_CHAIN, match: "ct state new" },
  { srcChain: "filter-output", dstChain: CLUSTER_IPS_CHECK_CHAIN, match: "ct state new" },
  { srcChain: "nat-output", dstChain: SERVICES_CHAIN, match: "" },
  { srcChain: "nat-prerouting", dstChain: SERVICES_CHAIN, match: "" },
  { srcChain: "nat-postrouting", dstChain: MASQUERADING_CHAIN, match: "" },
];

/** nftables' object name limit (knftables `NameLengthMax`). */
const NAME_LENGTH_MAX = 256;
/** Longest prefix (`external-`, `affinity-`…) including its hyphen. */
const PREFIX_LENGTH_MAX = 16;
const BASE_LENGTH_MAX = NAME_LENGTH_MAX - PREFIX_LENGTH_MAX;

export const PREFIX_CLUSTER = "service-";
export const PREFIX_LOCAL = "local-";
export const PREFIX_EXTERNAL = "external-";
export const PREFIX_FIREWALL = "firewall-";
export const PREFIX_ENDPOINT = "endpoint-";
export const PREFIX_AFFINITY = "affinity-";

const BASE32_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";

const BASE32_CODES = [...BASE32_ALPHABET].map((c) => c.charCodeAt(0));

/**
 * The first 8 characters of RFC 4648 base32 of `bytes` (5 bytes are enough), made in one call
 * from character codes: appended one character at a time it was a rope of several strings, and
 * the render memo keeps every chain name of every Service.
 */
function base32Prefix8(bytes: Uint8Array): string {
  // 40 bits: the high 8 apart, so that the rest fits a 32-bit integer.
  const high = bytes[0] ?? 0;
  const low =
    (((bytes[1] ?? 0) << 24) | ((bytes[2] ?? 0) << 16) | ((bytes[3] ?? 0) << 8) | (bytes[4] ?? 0)) >>> 0;
  return String.fromCharCode(
    BASE32_CODES[high >>> 3]!,
    BASE32_CODES[((high & 7) << 2) | (low >>> 30)]!,
    BASE32_CODES[(low >>> 25) & 31]!,
    BASE32_CODES[(low >>> 20) & 31]!,
    BASE32_CODES[(low >>> 15) & 31]!,
    BASE32_CODES[(low >>> 10) & 31]!,
    BASE32_CODES[(low >>> 5) & 31]!,
    BASE32_CODES[low & 31]!,
  );
}

/**
 * Upstream `hashAndTruncate`: the name behind 8 characters of its own hash, so that names cut at
 * the length limit stay unique and names differing in one digit look different.
 */
export function hashAndTruncate(name: string): string {
  // Joined: one flat string, not a rope (the render memo keeps them all).
  const out = [base32Prefix8(hash("sha256", name, "buffer")), name].join("-");
  return out.length > BASE_LENGTH_MAX ? `${out.slice(0, BASE_LENGTH_MAX - 3)}...` : out;
}

/**
 * `HASH-ns/svc/proto/portName`. Namespace, Service and port names are [a-z0-9-] and the protocol
 * is a word, all legal in chain names; "/" separates them because none of them can contain it.
 */
export function servicePortChainNameBase(spn: ServicePortName, protocol: string): string {
  return hashAndTruncate(`${spn.namespace}/${spn.name}/${protocol}/${spn.port}`);
}

/** `HASH-ns/svc/proto/portName__ip/port`; an IPv6 address's colons (illegal in names) become dots. */
export function servicePortEndpointChainNameBase(
  spn: ServicePortName,
  protocol: string,
  ip: string,
  port: number,
): string {
  const safeIP = ip.replaceAll(":", ".");
  return hashAndTruncate(`${spn.namespace}/${spn.name}/${protocol}/${spn.port}__${safeIP}/${port}`);
}

/** Service-port and endpoint chains always contain "/"; the fixed chains never do. */
export function isServiceChainName(chain: string): boolean {
  return chain.includes("/");
}

export function isAffinitySetName(set: string): boolean {
  return set.startsWith(PREFIX_AFFINITY);
}
