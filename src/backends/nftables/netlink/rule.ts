/**
 * The rule compiler: exactly the rule text the renderer emits (../render.ts, a small closed
 * grammar) into nf_tables expressions, as nft 1.0.6 compiles the same text (recorded with
 * `nft --debug=netlink`, test/fixtures/nftables/netlink/). nft's optimisations are repeated where
 * they change what `nft list` prints: a one-element anonymous set is a plain match, a prefix on a
 * byte boundary loads only its bytes. A shape outside the grammar is an error naming the rule.
 */
import { KubeProxyError } from "../../../errors.ts";
import { parseCIDRSloppy, parseIPSloppy } from "../../../ip.ts";
import { u32le, udata } from "./wire.ts";

export type Family = "ip" | "ip6";

export const enum Reg {
  Verdict = 0,
  R1 = 1,
  R2 = 2,
}

export type Verdict =
  | { readonly code: "accept" | "drop" | "return" }
  | { readonly code: "jump" | "goto"; readonly chain: string };

/** A set a rule refers to: named, or the rule's own anonymous set by index. */
export type SetRef = { readonly name: string } | { readonly anonymous: number };

export type Expr =
  | {
      readonly type: "payload";
      readonly base: "network" | "transport";
      readonly offset: number;
      readonly len: number;
      readonly dreg: number;
    }
  | { readonly type: "meta"; readonly key: MetaKey; readonly dreg: number }
  | { readonly type: "metaSet"; readonly key: MetaKey; readonly sreg: number }
  | { readonly type: "cmp"; readonly op: "eq" | "neq"; readonly sreg: number; readonly data: Buffer }
  | {
      readonly type: "bitwise";
      readonly sreg: number;
      readonly dreg: number;
      readonly mask: Buffer;
      readonly xor: Buffer;
      /** nft names the boolean operation explicitly for mark arithmetic (and only there). */
      readonly explicitOp?: true;
    }
  | {
      readonly type: "lookup";
      readonly sreg: number;
      readonly set: SetRef;
      readonly dreg: number | null;
      readonly invert: boolean;
    }
  | { readonly type: "immediate"; readonly dreg: number; readonly data: Buffer }
  | { readonly type: "verdict"; readonly verdict: Verdict }
  | { readonly type: "numgen"; readonly dreg: number; readonly modulus: number }
  | { readonly type: "fib"; readonly dreg: number; readonly flags: number; readonly result: number }
  | { readonly type: "ct"; readonly key: "state"; readonly dreg: number }
  | { readonly type: "nat"; readonly family: Family; readonly regAddr: number; readonly regProto: number }
  | { readonly type: "masq"; readonly flags: number }
  | { readonly type: "reject"; readonly icmpCode: number }
  | { readonly type: "dynset"; readonly set: string; readonly sreg: number };

export type MetaKey = "mark" | "iif" | "iifname" | "l4proto";

/** One element of an anonymous set or map. */
export interface AnonElement {
  readonly key: Buffer;
  readonly intervalEnd?: boolean;
  readonly verdict?: Verdict;
}

/** An anonymous set (`{ … }`) or verdict map (`vmap { … }`) a rule brings along. */
export interface AnonSet {
  readonly map: boolean;
  readonly interval: boolean;
  /** nft's datatype id of the key, and its length. */
  readonly keyType: number;
  readonly keyLen: number;
  readonly elements: readonly AnonElement[];
  /** The user data nft writes for it (key byte order, typeof…), so that `nft list` prints the same. */
  readonly userdata: Buffer;
}

export interface CompiledRule {
  readonly exprs: readonly Expr[];
  readonly anonSets: readonly AnonSet[];
  readonly comment: string | null;
}

/** A rule the compiler does not know: names it. */
export class RuleCompileError extends KubeProxyError {
  readonly code = "KPT_NFT_RULE_COMPILE";

  constructor(
    readonly chain: string,
    readonly rule: string,
    reason: string,
  ) {
    super(`cannot compile rule in chain ${chain} (${JSON.stringify(rule)}): ${reason}`);
  }
}

/** Resolves an interface name to its index (what `iif NAME` compiles to). */
export type IfIndexResolver = (name: string) => number;

/** nft's datatype ids (datatype.h). */
export const TYPE = { integer: 4, ipv4: 7, ipv6: 8, inetProto: 12, inetService: 13 } as const;
const TYPE_BITS = 6;

const NETWORK = { ip: { saddr: 12, daddr: 16, len: 4 }, ip6: { saddr: 8, daddr: 24, len: 16 } } as const;
/** nft's proto_desc ids and header field indexes, for the typeof user data of address sets. */
const TYPEOF = { ip: { desc: 12, saddr: 11, daddr: 12 }, ip6: { desc: 13, saddr: 8, daddr: 9 } } as const;
const PROTOCOLS: Readonly<Record<string, number>> = { tcp: 6, udp: 17, sctp: 132 };
const RTN_LOCAL = 2;
const NFTA_FIB_F_SADDR = 1;
const NFTA_FIB_F_DADDR = 2;
const NFT_FIB_RESULT_ADDRTYPE = 3;
const NF_NAT_RANGE_PROTO_RANDOM_FULLY = 0x10;
const IP_CT_NEW_BIT = 8;
const ICMP_PORT_UNREACH = 3;
const ICMPV6_PORT_UNREACH = 4;
const IFNAMSIZ = 16;

/** The register of byte `offset` of a concatenation: nft names 16-byte-aligned ones NFT_REG_1…4. */
function concatReg(offset: number): number {
  const reg32 = 8 + offset / 4;
  return (reg32 - 8) % 4 === 0 ? 1 + (reg32 - 8) / 4 : reg32;
}

/** The datatype of a concatenation (`a . b . c`), as nft composes it. */
export function concatType(types: readonly number[]): number {
  let t = 0;
  for (const x of types) t = (t << TYPE_BITS) | x;
  return t;
}

function addrBytes(text: string, family: Family): Buffer {
  const ip = parseIPSloppy(text);
  if (ip === null || (ip.family === "IPv4") !== (family === "ip"))
    throw new Error(`not an ${family} address: ${text}`);
  return Buffer.from(ip.bytes);
}

interface Prefix {
  readonly addr: Buffer;
  readonly bits: number;
}

function parsePrefix(text: string, family: Family): Prefix {
  if (!text.includes("/")) {
    const addr = addrBytes(text, family);
    return { addr, bits: addr.length * 8 };
  }
  const c = parseCIDRSloppy(text);
  if (c === null || (c.family === "IPv4") !== (family === "ip"))
    throw new Error(`not an ${family} prefix: ${text}`);
  return { addr: Buffer.from(c.bytes), bits: c.prefixLength };
}

function maskBytes(bits: number, len: number): Buffer {
  const m = Buffer.alloc(len);
  for (let i = 0; i < len; i++) {
    const left = bits - i * 8;
    m[i] = left >= 8 ? 0xff : left <= 0 ? 0 : (0xff << (8 - left)) & 0xff;
  }
  return m;
}

function increment(b: Buffer): Buffer | null {
  const out = Buffer.from(b);
  for (let i = out.length - 1; i >= 0; i--) {
    if (out[i]! < 0xff) {
      out[i]!++;
      return out;
    }
    out[i] = 0;
  }
  return null;
}

/** Sorted, merged ranges of an interval set, as nft sends them (a leading end at zero). */
function intervalElements(prefixes: readonly Prefix[], len: number): AnonElement[] {
  const ranges = prefixes
    .map((p) => {
      const mask = maskBytes(p.bits, len);
      const lo = Buffer.alloc(len);
      const hi = Buffer.alloc(len);
      for (let i = 0; i < len; i++) {
        lo[i] = p.addr[i]! & mask[i]!;
        hi[i] = lo[i]! | (~mask[i]! & 0xff);
      }
      return { lo, hi };
    })
    .sort((a, b) => Buffer.compare(a.lo, b.lo));
  const merged: { lo: Buffer; hi: Buffer }[] = [];
  for (const r of ranges) {
    const last = merged.at(-1);
    // Overlapping and adjacent ranges become one, as nft's automerge does.
    const after = last === undefined ? null : increment(last.hi);
    if (last !== undefined && (after === null || Buffer.compare(r.lo, after) <= 0)) {
      if (Buffer.compare(r.hi, last.hi) > 0) last.hi = r.hi;
    } else merged.push({ ...r });
  }
  const out: AnonElement[] = [];
  if (merged[0]!.lo.some((x) => x !== 0)) out.push({ key: Buffer.alloc(len), intervalEnd: true });
  for (const r of merged) {
    out.push({ key: r.lo });
    const end = increment(r.hi);
    if (end !== null) out.push({ key: end, intervalEnd: true });
  }
  return out;
}

const UDATA_KEYBYTEORDER = 0;
const UDATA_DATABYTEORDER = 1;
const UDATA_MERGE_ELEMENTS = 2;
const UDATA_KEY_TYPEOF = 3;
const UDATA_DATA_TYPEOF = 4;
const UDATA_DATA_INTERVAL = 6;
const BYTEORDER_HOST = 1;
const BYTEORDER_BIG = 2;
const EXPR_PAYLOAD = 7;
const EXPR_VERDICT = 1;

function typeofPayload(family: Family, field: "saddr" | "daddr"): Buffer {
  const t = TYPEOF[family];
  const data = udata([
    [0, u32le(t.desc)],
    [1, u32le(t[field])],
  ]);
  return udata([
    [0, u32le(EXPR_PAYLOAD)],
    [1, data],
  ]);
}

/** The user data nft writes for a `numgen … vmap` map: the same bytes for every one. */
const NUMGEN_MAP_USERDATA = udata([
  [UDATA_KEYBYTEORDER, u32le(BYTEORDER_HOST)],
  [UDATA_DATABYTEORDER, u32le(0)],
  [
    UDATA_DATA_TYPEOF,
    udata([
      [0, u32le(EXPR_VERDICT)],
      [1, Buffer.alloc(0)],
    ]),
  ],
  [UDATA_DATA_INTERVAL, u32le(0)],
]);

class Compiler {
  readonly exprs: Expr[] = [];
  readonly anonSets: AnonSet[] = [];
  private i = 0;
  /** The protocol a preceding `meta l4proto X` matched (dnat needs one). */
  private l4proto: string | null = null;

  constructor(
    private readonly tokens: readonly string[],
    private readonly family: Family,
    private readonly ifIndex: IfIndexResolver,
  ) {}

  private peek(k = 0): string | undefined {
    return this.tokens[this.i + k];
  }

  private next(): string {
    const t = this.tokens[this.i++];
    if (t === undefined) throw new Error("the rule ends too early");
    return t;
  }

  private expect(...words: string[]): void {
    for (const w of words) {
      const t = this.next();
      if (t !== w) throw new Error(`expected ${JSON.stringify(w)}, found ${JSON.stringify(t)}`);
    }
  }

  private setRef(token: string): { readonly name: string } {
    if (!token.startsWith("@") || token.length < 2)
      throw new Error(`expected @set, found ${JSON.stringify(token)}`);
    return { name: token.slice(1) };
  }

  /** `{ a , b }` (or `{ a,b }`): the items between the braces. */
  private braceList(): string[] {
    this.expect("{");
    const parts: string[] = [];
    for (;;) {
      const t = this.next();
      if (t === "}") break;
      parts.push(t);
    }
    return parts
      .join(" ")
      .split(",")
      .map((s) => s.trim())
      .filter((s) => s !== "");
  }

  run(): void {
    while (this.i < this.tokens.length) this.statement();
  }

  private statement(): void {
    const t = this.next();
    switch (t) {
      case "ip":
      case "ip6":
        return this.address(t);
      case "meta":
        return this.meta();
      case "fib":
        return this.fib();
      case "mark":
        return this.mark();
      case "ct":
        this.expect("state", "new");
        this.exprs.push(
          { type: "ct", key: "state", dreg: Reg.R1 },
          { type: "bitwise", sreg: Reg.R1, dreg: Reg.R1, mask: u32le(IP_CT_NEW_BIT), xor: u32le(0) },
          { type: "cmp", op: "neq", sreg: Reg.R1, data: u32le(0) },
        );
        return;
      case "iif":
      case "iifname":
        return this.iif(t);
      case "numgen":
        return this.numgen();
      case "update":
        return this.update();
      case "masquerade":
        this.expect("fully-random");
        this.exprs.push({ type: "masq", flags: NF_NAT_RANGE_PROTO_RANDOM_FULLY });
        return;
      case "dnat":
        return this.dnat();
      case "reject":
        this.exprs.push({
          type: "reject",
          icmpCode: this.family === "ip" ? ICMP_PORT_UNREACH : ICMPV6_PORT_UNREACH,
        });
        return;
      case "accept":
      case "drop":
      case "return":
        this.exprs.push({ type: "verdict", verdict: { code: t } });
        return;
      case "jump":
      case "goto":
        this.exprs.push({ type: "verdict", verdict: { code: t, chain: this.next() } });
        return;
      default:
        throw new Error(`unknown word ${JSON.stringify(t)}`);
    }
  }

  private address(word: Family): void {
    if (word !== this.family) throw new Error(`${word} match in an ${this.family} table`);
    const field = this.next();
    if (field !== "saddr" && field !== "daddr")
      throw new Error(`unknown ${word} field ${JSON.stringify(field)}`);
    const net = NETWORK[this.family];
    const offset = net[field];
    if (this.peek() === ".") {
      this.expect(".", "meta", "l4proto", ".", "th", "dport", "vmap");
      const set = this.setRef(this.next());
      this.exprs.push(
        { type: "payload", base: "network", offset, len: net.len, dreg: Reg.R1 },
        { type: "meta", key: "l4proto", dreg: concatReg(net.len) },
        { type: "payload", base: "transport", offset: 2, len: 2, dreg: concatReg(net.len + 4) },
        { type: "lookup", sreg: Reg.R1, set, dreg: Reg.Verdict, invert: false },
      );
      return;
    }
    let invert = false;
    if (this.peek() === "!=") {
      this.next();
      invert = true;
    }
    const value = this.peek();
    if (value === undefined) throw new Error("the rule ends too early");
    if (value.startsWith("@")) {
      this.next();
      this.exprs.push(
        { type: "payload", base: "network", offset, len: net.len, dreg: Reg.R1 },
        { type: "lookup", sreg: Reg.R1, set: this.setRef(value), dreg: null, invert },
      );
      return;
    }
    const items = value === "{" ? this.braceList() : [this.next()];
    const prefixes = items.map((s) => parsePrefix(s, this.family));
    if (prefixes.length === 1) return this.prefixMatch(offset, prefixes[0]!, invert);
    const interval = items.some((s) => s.includes("/"));
    const keyType = this.family === "ip" ? TYPE.ipv4 : TYPE.ipv6;
    const ud: Array<readonly [number, Buffer]> = [[UDATA_KEYBYTEORDER, u32le(BYTEORDER_BIG)]];
    if (interval) ud.push([UDATA_MERGE_ELEMENTS, u32le(1)]);
    ud.push([UDATA_KEY_TYPEOF, typeofPayload(this.family, field)]);
    const elements = interval
      ? intervalElements(prefixes, net.len)
      : [...new Map(prefixes.map((p) => [p.addr.toString("hex"), { key: p.addr }])).values()];
    const index =
      this.anonSets.push({ map: false, interval, keyType, keyLen: net.len, elements, userdata: udata(ud) }) -
      1;
    this.exprs.push(
      { type: "payload", base: "network", offset, len: net.len, dreg: Reg.R1 },
      { type: "lookup", sreg: Reg.R1, set: { anonymous: index }, dreg: null, invert },
    );
  }

  private prefixMatch(offset: number, p: Prefix, invert: boolean): void {
    const full = NETWORK[this.family].len;
    if (p.bits === 0) throw new Error("a zero-length prefix matches everything");
    const op = invert ? "neq" : "eq";
    if (p.bits % 8 === 0) {
      const len = p.bits / 8;
      this.exprs.push(
        { type: "payload", base: "network", offset, len, dreg: Reg.R1 },
        { type: "cmp", op, sreg: Reg.R1, data: p.addr.subarray(0, len) },
      );
      return;
    }
    const mask = maskBytes(p.bits, full);
    const net = Buffer.alloc(full);
    for (let k = 0; k < full; k++) net[k] = p.addr[k]! & mask[k]!;
    this.exprs.push(
      { type: "payload", base: "network", offset, len: full, dreg: Reg.R1 },
      { type: "bitwise", sreg: Reg.R1, dreg: Reg.R1, mask, xor: Buffer.alloc(full) },
      { type: "cmp", op, sreg: Reg.R1, data: net },
    );
  }

  private meta(): void {
    this.expect("l4proto");
    if (this.peek() === ".") {
      this.expect(".", "th", "dport", "vmap");
      const set = this.setRef(this.next());
      this.exprs.push(
        { type: "meta", key: "l4proto", dreg: Reg.R1 },
        { type: "payload", base: "transport", offset: 2, len: 2, dreg: concatReg(4) },
        { type: "lookup", sreg: Reg.R1, set, dreg: Reg.Verdict, invert: false },
      );
      return;
    }
    const proto = this.next();
    const number = PROTOCOLS[proto];
    if (number === undefined) throw new Error(`unknown protocol ${JSON.stringify(proto)}`);
    this.l4proto = proto;
    this.exprs.push(
      { type: "meta", key: "l4proto", dreg: Reg.R1 },
      { type: "cmp", op: "eq", sreg: Reg.R1, data: Buffer.from([number]) },
    );
  }

  private fib(): void {
    const which = this.next();
    if (which !== "saddr" && which !== "daddr") throw new Error(`unknown fib key ${JSON.stringify(which)}`);
    this.expect("type", "local");
    this.exprs.push(
      {
        type: "fib",
        dreg: Reg.R1,
        flags: which === "saddr" ? NFTA_FIB_F_SADDR : NFTA_FIB_F_DADDR,
        result: NFT_FIB_RESULT_ADDRTYPE,
      },
      { type: "cmp", op: "eq", sreg: Reg.R1, data: u32le(RTN_LOCAL) },
    );
  }

  private mark(): void {
    const t = this.next();
    if (t === "and") {
      const mask = this.number(this.next());
      this.expect("==");
      const value = this.number(this.next());
      this.exprs.push(
        { type: "meta", key: "mark", dreg: Reg.R1 },
        { type: "bitwise", sreg: Reg.R1, dreg: Reg.R1, mask: u32le(mask), xor: u32le(0), explicitOp: true },
        { type: "cmp", op: "eq", sreg: Reg.R1, data: u32le(value) },
      );
      return;
    }
    if (t !== "set") throw new Error(`unknown mark expression ${JSON.stringify(t)}`);
    this.expect("mark");
    const op = this.next();
    const bits = this.number(this.next());
    let mask: number;
    if (op === "xor") mask = 0xffffffff;
    else if (op === "or") mask = ~bits >>> 0;
    else throw new Error(`unknown mark operation ${JSON.stringify(op)}`);
    this.exprs.push(
      { type: "meta", key: "mark", dreg: Reg.R1 },
      { type: "bitwise", sreg: Reg.R1, dreg: Reg.R1, mask: u32le(mask), xor: u32le(bits), explicitOp: true },
      { type: "metaSet", key: "mark", sreg: Reg.R1 },
    );
  }

  private number(text: string): number {
    if (!/^(0x[0-9a-fA-F]{1,8}|[0-9]{1,10})$/.test(text))
      throw new Error(`not a 32-bit number: ${JSON.stringify(text)}`);
    const n = Number(text);
    if (n > 0xffffffff) throw new Error(`not a 32-bit number: ${JSON.stringify(text)}`);
    return n;
  }

  private iif(word: "iif" | "iifname"): void {
    let op: "eq" | "neq" = "eq";
    if (this.peek() === "!=") {
      this.next();
      op = "neq";
    }
    const name = this.next().replace(/^"(.*)"$/, "$1");
    if (word === "iif") {
      const index = this.ifIndex(name);
      this.exprs.push(
        { type: "meta", key: "iif", dreg: Reg.R1 },
        { type: "cmp", op, sreg: Reg.R1, data: u32le(index) },
      );
      return;
    }
    const wildcard = name.endsWith("*");
    const text = wildcard ? name.slice(0, -1) : name;
    if (text.length === 0 || text.length >= IFNAMSIZ)
      throw new Error(`bad interface name ${JSON.stringify(name)}`);
    const data = wildcard
      ? Buffer.from(text)
      : Buffer.concat([Buffer.from(text), Buffer.alloc(IFNAMSIZ - text.length)]);
    this.exprs.push({ type: "meta", key: "iifname", dreg: Reg.R1 }, { type: "cmp", op, sreg: Reg.R1, data });
  }

  private numgen(): void {
    this.expect("random", "mod");
    const modulus = this.number(this.next());
    this.expect("vmap");
    const elements = this.vmapEntries() ?? this.vmapEntriesOfList(this.braceList());
    if (elements.length === 0 || modulus === 0) throw new Error("an empty numgen map");
    const index =
      this.anonSets.push({
        map: true,
        interval: false,
        keyType: TYPE.integer,
        keyLen: 4,
        elements,
        userdata: NUMGEN_MAP_USERDATA,
      }) - 1;
    this.exprs.push(
      { type: "numgen", dreg: Reg.R1, modulus },
      { type: "lookup", sreg: Reg.R1, set: { anonymous: index }, dreg: Reg.Verdict, invert: false },
    );
  }

  /**
   * `{ 0 : goto a , 1 : goto b }` read token by token, the renderer's spelling (a numgen map of
   * 50 endpoints is 250 tokens); null, with nothing consumed, for any other spelling of it, which
   * `vmapEntriesOfList` then reads.
   */
  private vmapEntries(): AnonElement[] | null {
    const t = this.tokens;
    let k = this.i;
    if (t[k++] !== "{") return null;
    const out: AnonElement[] = [];
    for (;;) {
      const index = t[k];
      const colon = t[k + 1];
      const verb = t[k + 2];
      const chain = t[k + 3];
      const after = t[k + 4];
      if (
        index === undefined ||
        !/^\d+$/.test(index) ||
        colon !== ":" ||
        (verb !== "goto" && verb !== "jump")
      )
        return null;
      if (chain === undefined || chain === "," || chain === "}" || chain.includes(",")) return null;
      if (after !== "," && after !== "}") return null;
      out.push({ key: u32le(Number(index)), verdict: { code: verb, chain } });
      k += 5;
      if (after === "}") break;
    }
    this.i = k;
    return out;
  }

  private vmapEntriesOfList(entries: readonly string[]): AnonElement[] {
    return entries.map((entry) => {
      const m = /^(\d+) : (goto|jump) (\S+)$/.exec(entry);
      if (m === null) throw new Error(`bad vmap entry ${JSON.stringify(entry)}`);
      return { key: u32le(Number(m[1])), verdict: { code: m[2] as "goto" | "jump", chain: m[3]! } };
    });
  }

  private update(): void {
    const set = this.setRef(this.next()).name;
    this.expect("{", this.family, "saddr", "}");
    const net = NETWORK[this.family];
    this.exprs.push(
      { type: "payload", base: "network", offset: net.saddr, len: net.len, dreg: Reg.R1 },
      { type: "dynset", set, sreg: Reg.R1 },
    );
  }

  private dnat(): void {
    this.expect("to");
    if (this.l4proto === null) throw new Error("dnat to a port needs a protocol match before it");
    const target = this.next();
    const m =
      this.family === "ip" ? /^([0-9.]+):(\d+)$/.exec(target) : /^\[([0-9a-fA-F:.]+)\]:(\d+)$/.exec(target);
    if (m === null) throw new Error(`bad dnat target ${JSON.stringify(target)}`);
    const port = Number(m[2]);
    if (port < 1 || port > 65535) throw new Error(`bad port in ${JSON.stringify(target)}`);
    const portBytes = Buffer.from([port >>> 8, port & 0xff]);
    this.exprs.push(
      { type: "immediate", dreg: Reg.R1, data: addrBytes(m[1]!, this.family) },
      { type: "immediate", dreg: Reg.R2, data: portBytes },
      { type: "nat", family: this.family, regAddr: Reg.R1, regProto: Reg.R2 },
    );
  }
}

const COMMENT = / comment "((?:[^"\\]|\\.)*)"$/;

/** Compiles one rule body (`ip daddr 10.0.0.1 jump x comment "…"`). */
export function compileRule(
  chain: string,
  rule: string,
  family: Family,
  ifIndex: IfIndexResolver,
): CompiledRule {
  let body = rule;
  let comment: string | null = null;
  const m = rule.includes(' comment "') ? COMMENT.exec(rule) : null;
  if (m !== null) {
    comment = JSON.parse(`"${m[1]!}"`) as string;
    body = rule.slice(0, m.index);
  }
  const compiler = new Compiler(
    body.split(" ").filter((t) => t !== ""),
    family,
    ifIndex,
  );
  try {
    compiler.run();
  } catch (error) {
    throw new RuleCompileError(chain, rule, error instanceof Error ? error.message : String(error));
  }
  if (compiler.exprs.length === 0) throw new RuleCompileError(chain, rule, "an empty rule");
  return { exprs: compiler.exprs, anonSets: compiler.anonSets, comment };
}
