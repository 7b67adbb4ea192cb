import { isIPv4, isIPv6 } from "node:net";
import { SandboxError } from "./errors.ts";

export type IPFamily = 4 | 6;

/** A parsed CIDR such as 10.244.0.0/24 or fd00:10:244::/64, normalised to its network address. */
export interface Cidr {
  readonly family: IPFamily;
  readonly network: bigint;
  readonly prefixLength: number;
}

const BITS: Record<IPFamily, number> = { 4: 32, 6: 128 };

export function familyOf(ip: string): IPFamily {
  if (isIPv4(ip)) return 4;
  if (isIPv6(ip)) return 6;
  throw new SandboxError(`not an IP address: ${JSON.stringify(ip)}`);
}

export function ipToBigInt(ip: string): bigint {
  if (familyOf(ip) === 4) {
    return ip.split(".").reduce((acc, octet) => (acc << 8n) | BigInt(Number(octet)), 0n);
  }
  const [head = "", tail] = ip.split("::");
  const groups = (part: string): string[] => (part === "" ? [] : part.split(":"));
  const left = groups(head);
  const right = tail === undefined ? [] : groups(tail);
  const missing = 8 - left.length - right.length;
  const all = [...left, ...Array<string>(tail === undefined ? 0 : missing).fill("0"), ...right];
  return all.reduce((acc, group) => (acc << 16n) | BigInt(parseInt(group, 16)), 0n);
}

export function bigIntToIp(value: bigint, family: IPFamily): string {
  if (family === 4) {
    return [24n, 16n, 8n, 0n].map((shift) => String((value >> shift) & 0xffn)).join(".");
  }
  const groups = Array.from({ length: 8 }, (_, i) => (value >> BigInt(112 - 16 * i)) & 0xffffn);
  return compressIPv6(groups.map((group) => group.toString(16)));
}

/** RFC 5952 text form: the longest run (two or more) of zero groups becomes "::". */
function compressIPv6(groups: readonly string[]): string {
  let bestStart = -1;
  let bestLength = 1;
  for (let start = 0; start < groups.length;) {
    let end = start;
    while (end < groups.length && groups[end] === "0") end++;
    if (end - start > bestLength) {
      bestStart = start;
      bestLength = end - start;
    }
    start = end === start ? start + 1 : end;
  }
  if (bestStart < 0) return groups.join(":");
  const before = groups.slice(0, bestStart).join(":");
  const after = groups.slice(bestStart + bestLength).join(":");
  return `${before}::${after}`;
}

export function parseCidr(text: string): Cidr {
  const [ip = "", length, extra] = text.split("/");
  const family = familyOf(ip);
  const prefixLength = Number(length);
  if (extra !== undefined || length === undefined || !/^\d+$/.test(length) || prefixLength > BITS[family]) {
    throw new SandboxError(`not a CIDR: ${JSON.stringify(text)}`);
  }
  const hostBits = BigInt(BITS[family] - prefixLength);
  const network = (ipToBigInt(ip) >> hostBits) << hostBits;
  return { family, network, prefixLength };
}

export function cidrToString(cidr: Cidr): string {
  return `${bigIntToIp(cidr.network, cidr.family)}/${cidr.prefixLength}`;
}

export function cidrContains(cidr: Cidr, ip: string): boolean {
  if (familyOf(ip) !== cidr.family) return false;
  const hostBits = BigInt(BITS[cidr.family] - cidr.prefixLength);
  return ipToBigInt(ip) >> hostBits === cidr.network >> hostBits;
}

/** The n-th address of a CIDR (1 = the first host, the conventional gateway). */
export function nthAddress(cidr: Cidr, n: number): string {
  return bigIntToIp(cidr.network + BigInt(n), cidr.family);
}
