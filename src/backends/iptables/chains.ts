/**
 * Chain names, fixed chains and small formatting helpers of upstream kube-proxy's iptables
 * mode (docs/iptables.md §1, §2). Pure functions only; the kernel layer consumes the jump-chain table.
 */
import type { JumpRule } from "../../kernel/iptables.ts";
import { NAT_JUMP_CHAINS } from "../types.ts";
import { hash } from "node:crypto";

export const KUBE_SERVICES = "KUBE-SERVICES";
export const KUBE_EXTERNAL_SERVICES = "KUBE-EXTERNAL-SERVICES";
export const KUBE_NODEPORTS = "KUBE-NODEPORTS";
export const KUBE_POSTROUTING = "KUBE-POSTROUTING";
export const KUBE_MARK_MASQ = "KUBE-MARK-MASQ";
export const KUBE_FORWARD = "KUBE-FORWARD";
export const KUBE_PROXY_FIREWALL = "KUBE-PROXY-FIREWALL";
export const KUBE_FIREWALL = "KUBE-FIREWALL";
export const KUBE_PROXY_CANARY = "KUBE-PROXY-CANARY";
/** Created and deleted inside one transaction to check nat's top-level chains (transactions.ts). */
export const KUBE_PROXY_PROBE = "KUBE-PROXY-PROBE";

export const LARGE_CLUSTER_ENDPOINTS_THRESHOLD = 1000;

export const NFACCT_CT_STATE_INVALID_DROPPED_PKTS = "ct_state_invalid_dropped_pkts";
export const NFACCT_LOCALHOST_NPS_ACCEPTED_PKTS = "localhost_nps_accepted_pkts";

const CT_NEW = ["-m", "conntrack", "--ctstate", "NEW"] as const;

/**
 * `iptablesJumpChains` followed by `iptablesKubeletJumpChains`, in upstream order. Each is
 * ensured with EnsureChain + EnsureRule(Prepend) on every full sync.
 */
export const JUMP_CHAINS: readonly JumpRule[] = [
  {
    table: "filter",
    srcChain: "INPUT",
    extraArgs: CT_NEW,
    comment: "kubernetes externally-visible service portals",
    dstChain: KUBE_EXTERNAL_SERVICES,
  },
  {
    table: "filter",
    srcChain: "FORWARD",
    extraArgs: CT_NEW,
    comment: "kubernetes externally-visible service portals",
    dstChain: KUBE_EXTERNAL_SERVICES,
  },
  {
    table: "filter",
    srcChain: "INPUT",
    extraArgs: [],
    comment: "kubernetes health check service ports",
    dstChain: KUBE_NODEPORTS,
  },
  {
    table: "filter",
    srcChain: "FORWARD",
    extraArgs: CT_NEW,
    comment: "kubernetes service portals",
    dstChain: KUBE_SERVICES,
  },
  {
    table: "filter",
    srcChain: "OUTPUT",
    extraArgs: CT_NEW,
    comment: "kubernetes service portals",
    dstChain: KUBE_SERVICES,
  },
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
    extraArgs: CT_NEW,
    comment: "kubernetes load balancer firewall",
    dstChain: KUBE_PROXY_FIREWALL,
  },
  {
    table: "filter",
    srcChain: "OUTPUT",
    extraArgs: CT_NEW,
    comment: "kubernetes load balancer firewall",
    dstChain: KUBE_PROXY_FIREWALL,
  },
  {
    table: "filter",
    srcChain: "FORWARD",
    extraArgs: CT_NEW,
    comment: "kubernetes load balancer firewall",
    dstChain: KUBE_PROXY_FIREWALL,
  },
  ...NAT_JUMP_CHAINS,
  { table: "filter", srcChain: "INPUT", extraArgs: [], comment: "", dstChain: KUBE_FIREWALL },
  { table: "filter", srcChain: "OUTPUT", extraArgs: [], comment: "", dstChain: KUBE_FIREWALL },
];

const BASE32_CODES = Array.from("ABCDEFGHIJKLMNOPQRSTUVWXYZ234567", (c) => c.charCodeAt(0));
const base32Digits: number[] = new Array<number>(16).fill(0);

/**
 * The first 16 characters of RFC 4648 base32 of `bytes` (needs the first 10 bytes only), made in
 * one call from character codes: appended one character at a time, the name became a rope of
 * five strings (V8 starts ropes at 13 characters), and the memo keeps every Service's chain names.
 */
function base32Prefix16(bytes: Uint8Array): string {
  let buffer = 0;
  let bits = 0;
  let n = 0;
  for (let i = 0; i < 10; i++) {
    buffer = (buffer << 8) | (bytes[i] ?? 0);
    bits += 8;
    while (bits >= 5) {
      bits -= 5;
      base32Digits[n++] = BASE32_CODES[(buffer >>> bits) & 31]!;
    }
    buffer &= (1 << bits) - 1;
  }
  return String.fromCharCode(...base32Digits);
}

/**
 * `base32(sha256(s))[0:16]`, upstream `portProtoHash` / endpoint chain hash (docs/iptables.md §1.2). Not
 * cached: the renderer's per-ServicePort memo already keeps unchanged Services from being hashed
 * again, and a cache of every name costs memory at 10,000 Services.
 */
export function hash16(s: string): string {
  // One-shot hashing: no Hash object per name (about 5x faster cold, 1.5x warm, for 110,000 names).
  return base32Prefix16(hash("sha256", s, "buffer"));
}

/** Hash input of the per-service-port chains: ServicePortName string + lowercase protocol. */
function portProtoHash(spnString: string, protocol: string): string {
  return hash16(spnString + protocol.toLowerCase());
}

/** The four per-service-port chains (same hash), computed with one hash lookup. */
export function servicePortChainNames(
  spnString: string,
  protocol: string,
): {
  readonly cluster: string;
  readonly local: string;
  readonly external: string;
  readonly firewall: string;
} {
  const h = portProtoHash(spnString, protocol);
  return {
    cluster: "KUBE-SVC-" + h,
    local: "KUBE-SVL-" + h,
    external: "KUBE-EXT-" + h,
    firewall: "KUBE-FW-" + h,
  };
}

export function serviceChainName(spnString: string, protocol: string): string {
  return "KUBE-SVC-" + portProtoHash(spnString, protocol);
}

export function serviceLocalChainName(spnString: string, protocol: string): string {
  return "KUBE-SVL-" + portProtoHash(spnString, protocol);
}

export function externalChainName(spnString: string, protocol: string): string {
  return "KUBE-EXT-" + portProtoHash(spnString, protocol);
}

export function firewallChainName(spnString: string, protocol: string): string {
  return "KUBE-FW-" + portProtoHash(spnString, protocol);
}

/** `KUBE-SEP-` + hash of ServicePortName string + lowercase protocol + endpoint string. */
export function endpointChainName(spnString: string, protocol: string, endpoint: string): string {
  // Joined into one flat string: the memo keeps one per endpoint, and a rope of prefix and hash
  // takes a third more.
  return ["KUBE-SEP-", hash16(spnString + protocol.toLowerCase() + endpoint)].join("");
}

const SERVICE_CHAIN_PREFIXES = ["KUBE-SVC-", "KUBE-SVL-", "KUBE-SEP-", "KUBE-FW-", "KUBE-EXT-"];

/** Chains kube-proxy owns per service port; stale ones are flushed and deleted (docs/iptables.md §4.4). */
export function isServiceChainName(chain: string): boolean {
  return SERVICE_CHAIN_PREFIXES.some((p) => chain.startsWith(p));
}

const TEN_POW_10 = 10n ** 10n;

/**
 * Go `fmt.Sprintf("%0.10f", x)` for 0 <= x < 2^53: the exact binary value of the double,
 * rounded half-to-even at the 10th decimal. `toFixed(10)` differs on exact ties (k = 2048).
 */
export function formatFixed10(x: number): string {
  if (!Number.isFinite(x) || x < 0 || x >= 2 ** 53) {
    throw new RangeError(`cannot format ${x}`);
  }
  const view = new DataView(new ArrayBuffer(8));
  view.setFloat64(0, x);
  const bits = view.getBigUint64(0);
  const biasedExp = Number((bits >> 52n) & 0x7ffn);
  const fraction = bits & ((1n << 52n) - 1n);
  // x = mantissa * 2^exp exactly.
  const mantissa = biasedExp === 0 ? fraction : fraction | (1n << 52n);
  const exp = (biasedExp === 0 ? 1 : biasedExp) - 1075;
  let scaled: bigint;
  if (exp >= 0) {
    scaled = (mantissa << BigInt(exp)) * TEN_POW_10;
  } else {
    const denominator = 1n << BigInt(-exp);
    const numerator = mantissa * TEN_POW_10;
    scaled = numerator / denominator;
    const twiceRemainder = 2n * (numerator % denominator);
    if (twiceRemainder > denominator || (twiceRemainder === denominator && scaled % 2n === 1n)) {
      scaled += 1n;
    }
  }
  const digits = scaled.toString().padStart(11, "0");
  return `${digits.slice(0, -10)}.${digits.slice(-10)}`;
}

const probabilityCache: string[] = [];

/** `%0.10f` of 1/k, the `-m statistic --probability` argument for the k-th last endpoint. */
export function computeProbability(k: number): string {
  if (!Number.isInteger(k) || k < 1) throw new RangeError(`probability index must be >= 1, got ${k}`);
  let p = probabilityCache[k];
  if (p === undefined) {
    p = formatFixed10(1 / k);
    probabilityCache[k] = p;
  }
  return p;
}
