/**
 * IP addresses, networks and families for the whole tool: one family type (`IPFamily`) and two
 * parsers that differ on purpose.
 *
 * Sloppy (`parseIPSloppy`, `parseCIDRSloppy`, and the string helpers built on them): compatible
 * with upstream `k8s.io/utils/net` (`ParseIPSloppy`, `ParseCIDRSloppy`: Go 1.16's parser, which
 * reads leading-zero IPv4 octets as DECIMAL) and with Go's `net.IP.String()` / `net.IPNet.String()`
 * printing. Legacy objects in etcd may still carry such addresses, and upstream re-prints them
 * canonically in every rule.
 *
 * Strict (`parseIP`, `parseCIDR`, and the `Address` / `Cidr` values): Node's `isIPv4` / `isIPv6`
 * grammar, into numbers (a plain number for IPv4, a bigint for IPv6) so that a scan of 10k rules
 * by the packet tracer stays cheap and a sandbox topology can count addresses.
 */
import { isIPv4, isIPv6 } from "node:net";

export type IPFamily = "IPv4" | "IPv6";

/** A parsed address: 4 bytes for IPv4 (incl. IPv4-mapped IPv6), 16 bytes for IPv6. */
export interface ParsedIP {
  readonly family: IPFamily;
  readonly bytes: Uint8Array;
}

export interface ParsedCIDR {
  readonly family: IPFamily;
  /** Network address (already masked), canonical. */
  readonly ip: string;
  readonly prefixLength: number;
  /** `ip/prefixLength` as Go's `IPNet.String()`. */
  readonly cidr: string;
  readonly bytes: Uint8Array;
}

// Go's net package refuses numbers at or above this while scanning digits.
const BIG = 0xffffff;

function isDigit(c: number): boolean {
  return c >= 48 && c <= 57;
}

/** Go `dtoi`: decimal prefix of s; returns [value, consumed] or null. */
function dtoi(s: string, start: number): [number, number] | null {
  let n = 0;
  let i = start;
  for (; i < s.length && isDigit(s.charCodeAt(i)); i++) {
    n = n * 10 + (s.charCodeAt(i) - 48);
    if (n >= BIG) return null;
  }
  if (i === start) return null;
  return [n, i];
}

function hexValue(c: number): number {
  if (c >= 48 && c <= 57) return c - 48;
  if (c >= 97 && c <= 102) return c - 87;
  if (c >= 65 && c <= 70) return c - 55;
  return -1;
}

/** Go `xtoi`: hexadecimal prefix of s; returns [value, end] or null. */
function xtoi(s: string, start: number): [number, number] | null {
  let n = 0;
  let i = start;
  for (; i < s.length; i++) {
    const v = hexValue(s.charCodeAt(i));
    if (v < 0) break;
    n = n * 16 + v;
    if (n >= BIG) return null;
  }
  if (i === start) return null;
  return [n, i];
}

function parseIPv4Bytes(s: string, start: number): Uint8Array | null {
  const out = new Uint8Array(4);
  let pos = start;
  for (let i = 0; i < 4; i++) {
    if (pos >= s.length) return null;
    if (i > 0) {
      if (s[pos] !== ".") return null;
      pos++;
    }
    const r = dtoi(s, pos);
    if (r === null || r[0] > 0xff) return null;
    out[i] = r[0];
    pos = r[1];
  }
  return pos === s.length ? out : null;
}

function parseIPv6Bytes(s: string): Uint8Array | null {
  const ip = new Uint8Array(16);
  let ellipsis = -1;
  let pos = 0;
  if (s.length >= 2 && s[0] === ":" && s[1] === ":") {
    ellipsis = 0;
    pos = 2;
    if (pos === s.length) return ip;
  }
  let i = 0;
  while (i < 16) {
    const r = xtoi(s, pos);
    if (r === null || r[0] > 0xffff) return null;
    const [n, c] = r;
    if (c < s.length && s[c] === ".") {
      if (ellipsis < 0 && i !== 12) return null;
      if (i + 4 > 16) return null;
      const ip4 = parseIPv4Bytes(s, pos);
      if (ip4 === null) return null;
      ip.set(ip4, i);
      pos = s.length;
      i += 4;
      break;
    }
    ip[i] = n >> 8;
    ip[i + 1] = n & 0xff;
    i += 2;
    pos = c;
    if (pos === s.length) break;
    if (s[pos] !== ":" || pos + 1 === s.length) return null;
    pos++;
    if (s[pos] === ":") {
      if (ellipsis >= 0) return null;
      ellipsis = i;
      pos++;
      if (pos === s.length) break;
    }
  }
  if (pos !== s.length) return null;
  if (i < 16) {
    if (ellipsis < 0) return null;
    const n = 16 - i;
    for (let j = i - 1; j >= ellipsis; j--) ip[j + n] = ip[j]!;
    for (let j = ellipsis + n - 1; j >= ellipsis; j--) ip[j] = 0;
  } else if (ellipsis >= 0) {
    return null;
  }
  return ip;
}

/** Go `To4()` on a 16-byte address: the IPv4 part of an IPv4-mapped address, else null. */
function mappedToV4(b: Uint8Array): Uint8Array | null {
  for (let i = 0; i < 10; i++) if (b[i] !== 0) return null;
  if (b[10] !== 0xff || b[11] !== 0xff) return null;
  return b.slice(12);
}

/** `netutils.ParseIPSloppy`: null when not an address (no zones, no surrounding spaces). */
export function parseIPSloppy(s: string): ParsedIP | null {
  for (let i = 0; i < s.length; i++) {
    const c = s[i];
    if (c === ".") {
      const b = parseIPv4Bytes(s, 0);
      return b === null ? null : { family: "IPv4", bytes: b };
    }
    if (c === ":") {
      const b = parseIPv6Bytes(s);
      if (b === null) return null;
      const v4 = mappedToV4(b);
      return v4 === null ? { family: "IPv6", bytes: b } : { family: "IPv4", bytes: v4 };
    }
  }
  return null;
}

/** Go `net.IP.String()` for a 4- or 16-byte address (RFC 5952 for IPv6). */
export function formatIP(bytes: Uint8Array): string {
  if (bytes.length === 4) return `${bytes[0]}.${bytes[1]}.${bytes[2]}.${bytes[3]}`;
  const v4 = mappedToV4(bytes);
  if (v4 !== null) return formatIP(v4);
  const groups: number[] = [];
  for (let i = 0; i < 16; i += 2) groups.push((bytes[i]! << 8) | bytes[i + 1]!);
  return formatIPv6Groups(groups);
}

/** RFC 5952 text of eight 16-bit groups: the longest run (two or more; the first one wins a tie) of zero groups becomes "::". */
function formatIPv6Groups(groups: readonly number[]): string {
  let bestStart = -1;
  let bestLen = 0;
  for (let i = 0; i < 8;) {
    if (groups[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && groups[j] === 0) j++;
    if (j - i > bestLen) {
      bestStart = i;
      bestLen = j - i;
    }
    i = j;
  }
  if (bestLen < 2) return groups.map((g) => g.toString(16)).join(":");
  const head = groups.slice(0, bestStart).map((g) => g.toString(16));
  const tail = groups.slice(bestStart + bestLen).map((g) => g.toString(16));
  return `${head.join(":")}::${tail.join(":")}`;
}

const CANONICAL_IPV4 = /^(?:(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.){3}(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)$/;

/** Already in canonical dotted-decimal form (the common case; lets hot paths skip parsing). */
export function isCanonicalIPv4(s: string): boolean {
  return CANONICAL_IPV4.test(s);
}

/** `ParseIPSloppy(s).String()`, or null for an invalid address. */
export function canonicalIP(s: string): string | null {
  if (isCanonicalIPv4(s)) return s;
  const ip = parseIPSloppy(s);
  return ip === null ? null : formatIP(ip.bytes);
}

export function familyOfSloppy(s: string): IPFamily | null {
  return parseIPSloppy(s)?.family ?? null;
}

/**
 * `netutils.ParseCIDRSloppy(s)` followed by `IPNet.String()`: the MASKED network. The prefix
 * length is decimal and may have leading zeros (`/025`). An IPv4-mapped network whose mask
 * covers the mapping prefix prints (and counts) as IPv4, as in Go.
 */
export function parseCIDRSloppy(s: string): ParsedCIDR | null {
  const slash = s.indexOf("/");
  if (slash < 0) return null;
  const addr = s.slice(0, slash);
  let bytes: Uint8Array | null = parseIPv4Bytes(addr, 0);
  if (bytes === null) bytes = parseIPv6Bytes(addr);
  if (bytes === null) return null;
  const r = dtoi(s, slash + 1);
  if (r === null || r[1] !== s.length || r[0] > bytes.length * 8) return null;
  let prefix = r[0];
  const masked = maskBytes(bytes, prefix);
  let out = masked;
  if (masked.length === 16) {
    const v4 = mappedToV4(masked);
    if (v4 !== null && prefix >= 96) {
      out = v4;
      prefix -= 96;
    }
  }
  const ip = formatIP(out);
  return {
    family: out.length === 4 ? "IPv4" : "IPv6",
    ip,
    prefixLength: prefix,
    cidr: `${ip}/${prefix}`,
    bytes: out,
  };
}

function maskBytes(bytes: Uint8Array, prefix: number): Uint8Array {
  const out = new Uint8Array(bytes.length);
  for (let i = 0; i < bytes.length; i++) {
    const bits = Math.max(0, Math.min(8, prefix - i * 8));
    out[i] = bytes[i]! & ((0xff << (8 - bits)) & 0xff);
  }
  return out;
}

/** Whether `ip` lies in `cidr` (both sloppy-parsed; different families never match). */
export function cidrContainsSloppy(cidr: string, ip: string): boolean {
  const net = parseCIDRSloppy(cidr);
  const addr = parseIPSloppy(ip);
  if (net === null || addr === null) return false;
  return cidrContains({ ...toAddress(net), prefix: net.prefixLength }, toAddress(addr));
}

export function isLoopbackSloppy(ip: string): boolean {
  const addr = parseIPSloppy(ip);
  return addr !== null && isLoopback(toAddress(addr));
}

export function isUnspecified(ip: string): boolean {
  const addr = parseIPSloppy(ip);
  return addr !== null && addr.bytes.every((b) => b === 0);
}

/** `0.0.0.0/0` or `::/0`: upstream's nodePortAddresses treats these as "all local addresses". */
export function isZeroCIDR(cidr: string): boolean {
  const net = parseCIDRSloppy(cidr);
  return net !== null && net.prefixLength === 0;
}

/** `net.JoinHostPort(ip, port)`. */
export function joinHostPort(ip: string, port: number): string {
  // Joined, not concatenated: the result is one flat string, not a rope of two (a proxy keeps
  // one per endpoint per port: 3 MB of ropes at 100,000 endpoints).
  return ip.includes(":") ? ["[", ip, "]:", port].join("") : [ip, port].join(":");
}

// Strict parsing into numbers: the packet tracer, the web view, the sandbox.

/** An address or network. IPv4 keeps a plain number so the hot path of a 10k-rule scan stays cheap. */
export type Cidr =
  | { readonly family: "IPv4"; readonly addr: number; readonly prefix: number }
  | { readonly family: "IPv6"; readonly addr: bigint; readonly prefix: number };

export type Address =
  { readonly family: "IPv4"; readonly addr: number } | { readonly family: "IPv6"; readonly addr: bigint };

function parseV4Number(text: string): number {
  const parts = text.split(".");
  let value = 0;
  for (const part of parts) value = value * 256 + Number(part);
  return value >>> 0;
}

function parseV6BigInt(text: string): bigint {
  let head = text;
  let tailV4: number | undefined;
  const lastColon = text.lastIndexOf(":");
  if (text.includes(".")) {
    tailV4 = parseV4Number(text.slice(lastColon + 1));
    head = text.slice(0, lastColon + 1) + "0:0";
  }
  const [left = "", right] = head.split("::");
  const leftGroups = left === "" ? [] : left.split(":");
  const rightGroups = right === undefined || right === "" ? [] : right.split(":");
  const missing = 8 - leftGroups.length - rightGroups.length;
  const groups = [
    ...leftGroups,
    ...Array<string>(right === undefined ? 0 : missing).fill("0"),
    ...rightGroups,
  ];
  let value = 0n;
  for (const g of groups) value = (value << 16n) | BigInt(parseInt(g, 16));
  if (tailV4 !== undefined) value = (value & ~0xffffffffn) | BigInt(tailV4);
  return value;
}

/** Dotted quad without leading zeros (what iptables-save prints); undefined otherwise. */
function fastV4(text: string): number | undefined {
  let value = 0;
  let part = 0;
  let digits = 0;
  let dots = 0;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c === 46) {
      if (digits === 0 || part > 255) return undefined;
      value = value * 256 + part;
      part = 0;
      digits = 0;
      dots++;
    } else if (c >= 48 && c <= 57) {
      if (digits > 0 && part === 0) return undefined;
      part = part * 10 + (c - 48);
      digits++;
    } else {
      return undefined;
    }
  }
  if (dots !== 3 || digits === 0 || part > 255) return undefined;
  return (value * 256 + part) >>> 0;
}

/** Strict (Node's `isIPv4` / `isIPv6`): no leading zeros; undefined if not an address. */
export function parseIP(text: string): Address | undefined {
  const v4 = fastV4(text);
  if (v4 !== undefined) return { family: "IPv4", addr: v4 };
  if (isIPv4(text)) return { family: "IPv4", addr: parseV4Number(text) };
  if (isIPv6(text)) return { family: "IPv6", addr: parseV6BigInt(text) };
  return undefined;
}

/** `10.0.0.0/8`, `10.0.1.1` (= /32), `fd00::/64`; undefined if not an address. */
export function parseCIDR(text: string): Cidr | undefined {
  const slash = text.indexOf("/");
  const ipText = slash < 0 ? text : text.slice(0, slash);
  const address = parseIP(ipText);
  if (address === undefined) return undefined;
  const max = address.family === "IPv4" ? 32 : 128;
  const prefix = slash < 0 ? max : Number(text.slice(slash + 1));
  if (
    !Number.isInteger(prefix) ||
    prefix < 0 ||
    prefix > max ||
    (slash >= 0 && !/^\d+$/.test(text.slice(slash + 1)))
  ) {
    return undefined;
  }
  return address.family === "IPv4"
    ? { family: "IPv4", addr: address.addr, prefix }
    : { family: "IPv6", addr: address.addr, prefix };
}

export function cidrContains(cidr: Cidr, address: Address): boolean {
  if (cidr.family === "IPv4" && address.family === "IPv4") {
    if (cidr.prefix === 0) return true;
    const shift = 32 - cidr.prefix;
    return cidr.addr >>> shift === address.addr >>> shift;
  }
  if (cidr.family === "IPv6" && address.family === "IPv6") {
    const shift = BigInt(128 - cidr.prefix);
    return cidr.addr >> shift === address.addr >> shift;
  }
  return false;
}

export function formatAddress(address: Address): string {
  if (address.family === "IPv4") {
    const a = address.addr;
    return `${a >>> 24}.${(a >>> 16) & 255}.${(a >>> 8) & 255}.${a & 255}`;
  }
  const groups: number[] = [];
  for (let i = 7; i >= 0; i--) groups.push(Number((address.addr >> BigInt(i * 16)) & 0xffffn));
  return formatIPv6Groups(groups);
}

/** `addr/prefix` as parsed (not masked; see `networkOf`). */
export function formatCIDR(cidr: Cidr): string {
  return `${formatAddress(cidr)}/${cidr.prefix}`;
}

export function isLoopback(address: Address): boolean {
  return address.family === "IPv4" ? address.addr >>> 24 === 127 : address.addr === 1n;
}

export function isMulticast(address: Address): boolean {
  return address.family === "IPv4" ? address.addr >>> 28 === 0xe : address.addr >> 120n === 0xffn;
}

export function sameAddress(a: Address, b: Address): boolean {
  return a.family === b.family && a.addr === b.addr;
}

/** A network written with its prefix length (`10.244.0.77/24`), normalised to its network address (`10.244.0.0/24`); undefined otherwise. */
export function parseNetwork(text: string): Cidr | undefined {
  const cidr = text.includes("/") ? parseCIDR(text) : undefined;
  return cidr === undefined ? undefined : networkOf(cidr);
}

function networkOf(cidr: Cidr): Cidr {
  if (cidr.family === "IPv4") {
    const mask = cidr.prefix === 0 ? 0 : (0xffffffff << (32 - cidr.prefix)) >>> 0;
    return { family: "IPv4", addr: (cidr.addr & mask) >>> 0, prefix: cidr.prefix };
  }
  const hostBits = BigInt(128 - cidr.prefix);
  return { family: "IPv6", addr: (cidr.addr >> hostBits) << hostBits, prefix: cidr.prefix };
}

/** The n-th address of a CIDR's network (1 = the first host, the conventional gateway). */
export function nthAddress(cidr: Cidr, n: number): Address {
  const network = networkOf(cidr);
  return network.family === "IPv4"
    ? { family: "IPv4", addr: network.addr + n }
    : { family: "IPv6", addr: network.addr + BigInt(n) };
}

/** The family of an address or of a CIDR's address (strict); null for anything else. */
export function familyOf(ipOrCIDR: string): IPFamily | null {
  return parseIP(ipOrCIDR.split("/")[0] ?? "")?.family ?? null;
}

/** The numeric form of a sloppy-parsed address. */
function toAddress(ip: ParsedIP): Address {
  if (ip.family === "IPv4") return { family: "IPv4", addr: ip.bytes.reduce((acc, b) => acc * 256 + b, 0) };
  return { family: "IPv6", addr: ip.bytes.reduce((acc, b) => (acc << 8n) | BigInt(b), 0n) };
}

/** 4 or 6: the family as the web view's JSON and its rule keys spell it. */
export function ipVersion(family: IPFamily): 4 | 6 {
  return family === "IPv4" ? 4 : 6;
}
