import { isIPv4, isIPv6 } from "node:net";

export type Family = 4 | 6;

/** An address or network. IPv4 keeps a plain number so the hot path of a 10k-rule scan stays cheap. */
export type Cidr =
  | { readonly family: 4; readonly addr: number; readonly prefix: number }
  | { readonly family: 6; readonly addr: bigint; readonly prefix: number };

export type Address =
  { readonly family: 4; readonly addr: number } | { readonly family: 6; readonly addr: bigint };

function parseV4(text: string): number {
  const parts = text.split(".");
  let value = 0;
  for (const part of parts) value = value * 256 + Number(part);
  return value >>> 0;
}

function parseV6(text: string): bigint {
  let head = text;
  let tailV4: number | undefined;
  const lastColon = text.lastIndexOf(":");
  if (text.includes(".")) {
    tailV4 = parseV4(text.slice(lastColon + 1));
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

export function parseAddress(text: string): Address | undefined {
  const v4 = fastV4(text);
  if (v4 !== undefined) return { family: 4, addr: v4 };
  if (isIPv4(text)) return { family: 4, addr: parseV4(text) };
  if (isIPv6(text)) return { family: 6, addr: parseV6(text) };
  return undefined;
}

/** `10.0.0.0/8`, `10.0.1.1` (= /32), `fd00::/64`; undefined if not an address. */
export function parseCidr(text: string): Cidr | undefined {
  const slash = text.indexOf("/");
  const ipText = slash < 0 ? text : text.slice(0, slash);
  const address = parseAddress(ipText);
  if (address === undefined) return undefined;
  const max = address.family === 4 ? 32 : 128;
  const prefix = slash < 0 ? max : Number(text.slice(slash + 1));
  if (
    !Number.isInteger(prefix) ||
    prefix < 0 ||
    prefix > max ||
    (slash >= 0 && !/^\d+$/.test(text.slice(slash + 1)))
  ) {
    return undefined;
  }
  return address.family === 4
    ? { family: 4, addr: address.addr, prefix }
    : { family: 6, addr: address.addr, prefix };
}

export function cidrContains(cidr: Cidr, address: Address): boolean {
  if (cidr.family === 4 && address.family === 4) {
    if (cidr.prefix === 0) return true;
    const shift = 32 - cidr.prefix;
    return cidr.addr >>> shift === address.addr >>> shift;
  }
  if (cidr.family === 6 && address.family === 6) {
    const shift = BigInt(128 - cidr.prefix);
    return cidr.addr >> shift === address.addr >> shift;
  }
  return false;
}

export function formatAddress(address: Address): string {
  if (address.family === 4) {
    const a = address.addr;
    return `${a >>> 24}.${(a >>> 16) & 255}.${(a >>> 8) & 255}.${a & 255}`;
  }
  const groups: string[] = [];
  for (let i = 7; i >= 0; i--) groups.push(((address.addr >> BigInt(i * 16)) & 0xffffn).toString(16));
  let bestStart = -1;
  let bestLen = 0;
  for (let i = 0; i < 8;) {
    if (groups[i] !== "0") {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && groups[j] === "0") j++;
    if (j - i > bestLen && j - i > 1) {
      bestStart = i;
      bestLen = j - i;
    }
    i = j;
  }
  if (bestStart < 0) return groups.join(":");
  return `${groups.slice(0, bestStart).join(":")}::${groups.slice(bestStart + bestLen).join(":")}`;
}

export function formatCidr(cidr: Cidr): string {
  return `${formatAddress(cidr)}/${cidr.prefix}`;
}

export function isLoopback(address: Address): boolean {
  return address.family === 4 ? address.addr >>> 24 === 127 : address.addr === 1n;
}

export function isMulticast(address: Address): boolean {
  return address.family === 4 ? address.addr >>> 28 === 0xe : address.addr >> 120n === 0xffn;
}

export function sameAddress(a: Address, b: Address): boolean {
  return a.family === b.family && a.addr === b.addr;
}
