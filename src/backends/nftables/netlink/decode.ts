/**
 * Reading a table back over netlink (pure): the dump requests (NFT_MSG_GETTABLE, GETCHAIN,
 * GETSET, GETRULE, GETSETELEM with NLM_F_DUMP) and the decoding of the kernel's answers into the
 * shapes the writer itself uses: a rule becomes the `CompiledRule` the compiler (./rule.ts)
 * produces for its text (expressions, its anonymous sets inline, its comment), an element of a
 * named set or map becomes an `NftElement` with the key printed as the renderer prints it. So a
 * rule the proxy wrote and the kernel's copy of it compare equal field by field (../reader.ts).
 * The socket calls are src/kernel/netlink.ts's; nothing here does I/O.
 */
import { formatIP } from "../../../ip.ts";
import type { NftElement } from "../types.ts";
import type { AnonSet, Expr, Family, MetaKey, Verdict } from "./rule.ts";
import { TYPE } from "./rule.ts";
import { BatchWriter, NLM_F_REQUEST } from "./wire.ts";
import {
  CHAIN_A,
  ELEMS_A,
  ELEM_A,
  HOOK_A,
  MSG,
  NFGEN_HDRLEN,
  NFNL_SUBSYS_NFTABLES,
  NFPROTO,
  NLMSG_HDRLEN,
  NLM_F_DUMP,
  RULE_A,
  SET_A,
  TABLE_A,
  VERDICT_A,
} from "./protocol.ts";

export const GET = {
  table: MSG.getTable,
  chain: MSG.getChain,
  rule: MSG.getRule,
  set: MSG.getSet,
  setElem: MSG.getSetElem,
} as const;
const NEW = {
  table: MSG.newTable,
  chain: MSG.newChain,
  rule: MSG.newRule,
  set: MSG.newSet,
  setElem: MSG.newSetElem,
} as const;
const NLA_TYPE_MASK = 0x3fff;

const DATA_VALUE = 1;
const DATA_VERDICT = 2;
const SET_F = { anonymous: 0x1, interval: 0x4, map: 0x8 } as const;
const ELEM_F_INTERVAL_END = 1;
const UDATA_COMMENT = 0;
const TYPE_BITS = 6;
const HOOK_NAMES = ["prerouting", "input", "forward", "output", "postrouting"] as const;
const META_KEYS: Readonly<Record<number, MetaKey>> = { 3: "mark", 4: "iif", 6: "iifname", 16: "l4proto" };
const PROTOCOL_NAMES: Readonly<Record<number, string>> = { 6: "tcp", 17: "udp", 132: "sctp" };
export const DATATYPE_NAMES: Readonly<Record<number, string>> = {
  [TYPE.ipv4]: "ipv4_addr",
  [TYPE.ipv6]: "ipv6_addr",
  [TYPE.inetProto]: "inet_proto",
  [TYPE.inetService]: "inet_service",
};
const DATATYPE_LEN: Readonly<Record<number, number>> = {
  [TYPE.ipv4]: 4,
  [TYPE.ipv6]: 16,
  [TYPE.inetProto]: 1,
  [TYPE.inetService]: 2,
};

/** One dump request: a GET message with NLM_F_DUMP, naming the table (and the set). */
export function dumpRequest(
  what: keyof typeof GET,
  family: Family,
  seq: number,
  names: { readonly table?: string; readonly set?: string } = {},
): Buffer {
  const w = new BatchWriter();
  w.begin((NFNL_SUBSYS_NFTABLES << 8) | GET[what], NLM_F_REQUEST | NLM_F_DUMP, seq, NFPROTO[family]);
  if (what === "setElem") {
    w.str(ELEMS_A.table, names.table!);
    w.str(ELEMS_A.set, names.set!);
  } else if (names.table !== undefined && what !== "table") {
    w.str(1, names.table);
  }
  w.end();
  return w.finish();
}

/** The attributes of one level: type → the last value of that type (nested ones unflagged). */
export function attrs(buf: Buffer): Map<number, Buffer> {
  const out = new Map<number, Buffer>();
  for (const [type, value] of attrList(buf)) out.set(type, value);
  return out;
}

export function attrList(buf: Buffer): Array<[number, Buffer]> {
  const out: Array<[number, Buffer]> = [];
  let off = 0;
  while (off + 4 <= buf.length) {
    const len = buf.readUInt16LE(off);
    if (len < 4 || off + len > buf.length) break;
    out.push([buf.readUInt16LE(off + 2) & NLA_TYPE_MASK, buf.subarray(off + 4, off + len)]);
    off += (len + 3) & ~3;
  }
  return out;
}

const str = (b: Buffer | undefined): string | undefined =>
  b === undefined ? undefined : b.toString("utf8").replace(/\0.*$/s, "");
const u32 = (b: Buffer | undefined): number | undefined => (b === undefined ? undefined : b.readUInt32BE(0));
const need = (b: number | undefined, what: string): number => {
  if (b === undefined) throw new Error(`netlink dump: ${what} missing`);
  return b;
};

/** libnftnl's user data (type, length, value) → the comment entry, if any. */
export function udataComment(b: Buffer | undefined, type: number): string | undefined {
  if (b === undefined) return undefined;
  let off = 0;
  while (off + 2 <= b.length) {
    const t = b[off]!;
    const len = b[off + 1]!;
    if (t === type) return b.toString("utf8", off + 2, off + 2 + len).replace(/\0.*$/s, "");
    off += 2 + len;
  }
  return undefined;
}

/** A netlink message of a dump: its nf_tables message type and its attributes. */
export interface DumpMessage {
  readonly type: number;
  readonly attrs: Buffer;
}

/** The nf_tables messages in datagrams of a dump, with their nfgenmsg family (NLMSG_DONE and errors are the socket's). */
export function dumpMessages(datagrams: readonly Buffer[]): (DumpMessage & { readonly family: number })[] {
  const out: (DumpMessage & { family: number })[] = [];
  for (const data of datagrams) {
    let off = 0;
    while (off + NLMSG_HDRLEN <= data.length) {
      const len = data.readUInt32LE(off);
      if (len < NLMSG_HDRLEN || off + len > data.length) break;
      const type = data.readUInt16LE(off + 4);
      if (type >> 8 === NFNL_SUBSYS_NFTABLES && len >= NLMSG_HDRLEN + NFGEN_HDRLEN)
        out.push({
          type: type & 0xff,
          family: data[off + NLMSG_HDRLEN]!,
          attrs: data.subarray(off + NLMSG_HDRLEN + NFGEN_HDRLEN, off + len),
        });
      off += (len + 3) & ~3;
    }
  }
  return out;
}

export function verdictOf(data: Buffer): Verdict | null {
  const d = attrs(data);
  const v = d.get(DATA_VERDICT);
  if (v === undefined) return null;
  const va = attrs(v);
  const code = need(u32(va.get(VERDICT_A.code)), "verdict code") | 0;
  const chain = str(va.get(VERDICT_A.chain));
  switch (code) {
    case 0:
      return { code: "drop" };
    case 1:
      return { code: "accept" };
    case -5:
      return { code: "return" };
    case -3:
    case -4:
      return { code: code === -3 ? "jump" : "goto", chain: chain ?? "" };
    default:
      throw new Error(`netlink dump: verdict code ${code}`);
  }
}

export function verdictText(v: Verdict): string {
  return "chain" in v ? `${v.code} ${v.chain}` : v.code;
}

/** An expression the compiler never produces (a counter someone added…): only its name is kept. */
export interface UnknownExpr {
  readonly type: "unknown";
  readonly name: string;
}

export type DecodedExpr = Expr | UnknownExpr;

const reg = (a: Map<number, Buffer>, type: number, what: string): number => need(u32(a.get(type)), what);
const value = (a: Map<number, Buffer>, type: number): Buffer => {
  const nested = a.get(type);
  const v = nested === undefined ? undefined : attrs(nested).get(DATA_VALUE);
  return Buffer.from(v ?? Buffer.alloc(0));
};

/** One expression; `lookup` and `dynset` keep the set's name (anonymous ones resolved later). */
export function decodeExpr(
  name: string,
  data: Buffer | undefined,
): DecodedExpr | { lookupName: string; expr: Expr } {
  const a = data === undefined ? new Map<number, Buffer>() : attrs(data);
  switch (name) {
    case "payload": {
      const base = u32(a.get(2));
      if (base !== 1 && base !== 2) return { type: "unknown", name };
      return {
        type: "payload",
        base: base === 1 ? "network" : "transport",
        offset: reg(a, 3, "payload offset"),
        len: reg(a, 4, "payload len"),
        dreg: reg(a, 1, "payload dreg"),
      };
    }
    case "meta": {
      const key = META_KEYS[need(u32(a.get(2)), "meta key")];
      if (key === undefined) return { type: "unknown", name };
      if (a.has(3)) return { type: "metaSet", key, sreg: reg(a, 3, "meta sreg") };
      return { type: "meta", key, dreg: reg(a, 1, "meta dreg") };
    }
    case "cmp": {
      const op = u32(a.get(2));
      if (op !== 0 && op !== 1) return { type: "unknown", name };
      return { type: "cmp", op: op === 0 ? "eq" : "neq", sreg: reg(a, 1, "cmp sreg"), data: value(a, 3) };
    }
    case "bitwise":
      if ((u32(a.get(6)) ?? 0) !== 0) return { type: "unknown", name };
      return {
        type: "bitwise",
        sreg: reg(a, 1, "bitwise sreg"),
        dreg: reg(a, 2, "bitwise dreg"),
        mask: value(a, 4),
        xor: value(a, 5),
      };
    case "lookup":
      return {
        lookupName: str(a.get(1)) ?? "",
        expr: {
          type: "lookup",
          sreg: reg(a, 2, "lookup sreg"),
          set: { name: str(a.get(1)) ?? "" },
          dreg: a.has(3) ? reg(a, 3, "lookup dreg") : null,
          invert: ((u32(a.get(5)) ?? 0) & 1) === 1,
        },
      };
    case "immediate": {
      const d = a.get(2);
      const v = d === undefined ? null : verdictOf(d);
      if (v !== null) return { type: "verdict", verdict: v };
      return { type: "immediate", dreg: reg(a, 1, "immediate dreg"), data: value(a, 2) };
    }
    case "numgen":
      return { type: "numgen", dreg: reg(a, 1, "numgen dreg"), modulus: reg(a, 2, "numgen modulus") };
    case "fib":
      return {
        type: "fib",
        dreg: reg(a, 1, "fib dreg"),
        result: reg(a, 2, "fib result"),
        flags: reg(a, 3, "fib flags"),
      };
    case "ct":
      if (u32(a.get(2)) !== 0 || !a.has(1)) return { type: "unknown", name };
      return { type: "ct", key: "state", dreg: reg(a, 1, "ct dreg") };
    case "nat": {
      const fam = u32(a.get(2));
      if (u32(a.get(1)) !== 1 || (fam !== NFPROTO.ip && fam !== NFPROTO.ip6))
        return { type: "unknown", name };
      return {
        type: "nat",
        family: fam === NFPROTO.ip ? "ip" : "ip6",
        regAddr: reg(a, 3, "nat addr"),
        regProto: reg(a, 5, "nat proto"),
      };
    }
    case "masq":
      return { type: "masq", flags: u32(a.get(1)) ?? 0 };
    case "reject":
      return { type: "reject", icmpCode: a.get(2)?.[0] ?? 0 };
    case "dynset":
      return { type: "dynset", set: str(a.get(1)) ?? "", sreg: reg(a, 4, "dynset sreg") };
    default:
      return { type: "unknown", name };
  }
}

const hex = (b: Buffer): string => b.toString("hex");

function anonKey(s: AnonSet): string {
  const elements = s.elements
    .map(
      (e) =>
        `${hex(e.key)}${e.intervalEnd === true ? "/end" : ""}${e.verdict === undefined ? "" : `: ${verdictText(e.verdict)}`}`,
    )
    .sort();
  return `{${s.map ? "map" : "set"}${s.interval ? " interval" : ""} ${s.keyLen}b ${elements.join(", ")}}`;
}

function exprKey(e: DecodedExpr, anon: readonly AnonSet[]): string {
  switch (e.type) {
    case "payload":
      return `payload ${e.base}+${e.offset}/${e.len} => r${e.dreg}`;
    case "meta":
      return `meta ${e.key} => r${e.dreg}`;
    case "metaSet":
      return `meta set ${e.key} r${e.sreg}`;
    case "cmp":
      return `cmp ${e.op} r${e.sreg} ${hex(e.data)}`;
    case "bitwise":
      return `bitwise r${e.sreg} & ${hex(e.mask)} ^ ${hex(e.xor)} => r${e.dreg}`;
    case "lookup": {
      const set = "name" in e.set ? `@${e.set.name}` : anonKey(anon[e.set.anonymous]!);
      const to = e.dreg === null ? "" : ` => r${e.dreg}`;
      return `lookup${e.invert ? " !" : ""} r${e.sreg} ${set}${to}`;
    }
    case "immediate":
      return `immediate ${hex(e.data)} => r${e.dreg}`;
    case "verdict":
      return verdictText(e.verdict);
    case "numgen":
      return `numgen random mod ${e.modulus} => r${e.dreg}`;
    case "fib":
      return `fib flags ${e.flags} result ${e.result} => r${e.dreg}`;
    case "ct":
      return `ct ${e.key} => r${e.dreg}`;
    case "nat":
      return `dnat ${e.family} addr r${e.regAddr} proto r${e.regProto}`;
    case "masq":
      return `masq flags ${e.flags}`;
    case "reject":
      return `reject icmp ${e.icmpCode}`;
    case "dynset":
      return `dynset @${e.set} r${e.sreg}`;
    case "unknown":
      return `${e.name} (not written by kube-proxy-ts)`;
  }
}

/**
 * A rule's meaning as one line: its expressions in order (registers, bytes in hex, anonymous
 * sets by content with their elements sorted) and its comment. The rule compiled from the
 * proxy's text and the kernel's copy of it give the same line; it is also how a rule the proxy
 * did not write is shown.
 */
export function ruleKey(rule: {
  readonly exprs: readonly DecodedExpr[];
  readonly anonSets: readonly AnonSet[];
  readonly comment: string | null;
}): string {
  const body = rule.exprs.map((e) => exprKey(e, rule.anonSets)).join("; ");
  return rule.comment === null ? body : `${body} comment ${JSON.stringify(rule.comment)}`;
}

export interface DumpedChain {
  readonly name: string;
  /** Base chains: their hook; absent for regular chains. */
  readonly hook?: { readonly type: string; readonly hook: string; readonly priority: number };
  readonly comment?: string;
  /** Each rule as `ruleKey` gives it, in the chain's order. */
  readonly rules: readonly string[];
}

/** A named set or map of the table. */
export interface DumpedSet {
  readonly name: string;
  readonly kind: "set" | "map";
  /** `ipv4_addr . inet_proto . inet_service : verdict`; null when a field's type is not one we know. */
  readonly type: string | null;
  /** Elements with keys printed as the renderer prints them; null when not read (affinity sets, unknown types). */
  readonly elements: readonly NftElement[] | null;
}

/** One family's `kube-proxy` table as the kernel holds it, and the family's other tables. */
export interface TableDump {
  readonly exists: boolean;
  readonly comment: string | null;
  readonly otherTables: readonly string[];
  readonly chains: readonly DumpedChain[];
  readonly sets: readonly DumpedSet[];
}

interface RawSet {
  readonly name: string;
  readonly flags: number;
  readonly keyType: number;
  readonly keyLen: number;
  readonly userdata: Buffer;
}

function decodeSetMessage(m: DumpMessage, table: string): RawSet | null {
  const a = attrs(m.attrs);
  if (str(a.get(SET_A.table)) !== table) return null;
  return {
    name: str(a.get(SET_A.name)) ?? "",
    flags: u32(a.get(SET_A.flags)) ?? 0,
    keyType: u32(a.get(SET_A.keyType)) ?? 0,
    keyLen: u32(a.get(SET_A.keyLen)) ?? 0,
    userdata: Buffer.from(a.get(SET_A.userdata) ?? Buffer.alloc(0)),
  };
}

export interface RawElement {
  readonly key: Buffer;
  readonly flags: number;
  readonly verdict: Verdict | null;
  readonly comment: string | undefined;
}

export function decodeElements(messages: readonly DumpMessage[]): RawElement[] {
  const out: RawElement[] = [];
  for (const m of messages) {
    if (m.type !== NEW.setElem) continue;
    const list = attrs(m.attrs).get(ELEMS_A.elements);
    if (list === undefined) continue;
    for (const [, e] of attrList(list)) {
      const a = attrs(e);
      const data = a.get(ELEM_A.data);
      out.push({
        key: value(a, ELEM_A.key),
        flags: u32(a.get(ELEM_A.flags)) ?? 0,
        verdict: data === undefined ? null : verdictOf(data),
        comment: udataComment(a.get(ELEM_A.userdata), UDATA_COMMENT),
      });
    }
  }
  return out;
}

/** The datatype ids of a (possibly concatenated) key type, as nft composes them. */
export function keyFields(keyType: number, keyLen: number): number[] | null {
  const single = DATATYPE_LEN[keyType];
  if (single !== undefined) return single === keyLen ? [keyType] : null;
  const fields: number[] = [];
  let t = keyType;
  while (t > 0 && fields.length < 8) {
    fields.unshift(t & ((1 << TYPE_BITS) - 1));
    t = Math.floor(t / (1 << TYPE_BITS));
  }
  if (fields.some((f) => DATATYPE_LEN[f] === undefined)) return null;
  const len = fields.reduce((n, f) => n + ((DATATYPE_LEN[f]! + 3) & ~3), 0);
  return len === keyLen ? fields : null;
}

export function keyText(fields: readonly number[], key: Buffer): string {
  const concat = fields.length > 1;
  const parts: string[] = [];
  let off = 0;
  for (const f of fields) {
    const len = DATATYPE_LEN[f]!;
    const b = key.subarray(off, off + len);
    off += concat ? (len + 3) & ~3 : len;
    if (f === TYPE.ipv4 || f === TYPE.ipv6) parts.push(formatIP(b));
    else if (f === TYPE.inetProto) parts.push(PROTOCOL_NAMES[b[0]!] ?? String(b[0]));
    else parts.push(String(b.readUInt16BE(0)));
  }
  return parts.join(" . ");
}

/**
 * Decodes one table's dumps as they arrive, in the order a reader requests them: tables, sets,
 * the elements of each set (`setsToRead`), chains, rules. Rules are reduced to their `ruleKey`
 * datagram by datagram, so a dump of a large table is never held whole.
 */
export class TableDumpDecoder {
  private exists = false;
  private comment: string | null = null;
  private readonly otherTables: string[] = [];
  private readonly rawSets = new Map<string, RawSet>();
  private readonly elements = new Map<string, RawElement[]>();
  private readonly anon = new Map<string, AnonSet>();
  private readonly chains: Array<{ name: string; hook?: DumpedChain["hook"]; comment?: string }> = [];
  private readonly rules = new Map<string, string[]>();

  constructor(private readonly table: string) {}

  tables(datagram: Buffer): void {
    for (const m of dumpMessages([datagram])) {
      if (m.type !== NEW.table) continue;
      const a = attrs(m.attrs);
      const name = str(a.get(TABLE_A.name)) ?? "";
      if (name !== this.table) {
        this.otherTables.push(name);
        continue;
      }
      this.exists = true;
      this.comment = udataComment(a.get(TABLE_A.userdata), UDATA_COMMENT) ?? null;
    }
  }

  get tableExists(): boolean {
    return this.exists;
  }

  sets(datagram: Buffer): void {
    for (const m of dumpMessages([datagram])) {
      if (m.type !== NEW.set) continue;
      const s = decodeSetMessage(m, this.table);
      if (s !== null) this.rawSets.set(s.name, s);
    }
  }

  /** The sets whose elements to dump: every one but those `skip` names (affinity sets). */
  setsToRead(skip: (name: string) => boolean): string[] {
    return [...this.rawSets.keys()].filter((n) => !skip(n));
  }

  setElements(set: string, datagram: Buffer): void {
    const list = this.elements.get(set) ?? [];
    list.push(...decodeElements(dumpMessages([datagram])));
    this.elements.set(set, list);
    const s = this.rawSets.get(set);
    if (s === undefined || (s.flags & SET_F.anonymous) === 0) return;
    this.anon.set(set, {
      map: (s.flags & SET_F.map) !== 0,
      interval: (s.flags & SET_F.interval) !== 0,
      keyType: s.keyType,
      keyLen: s.keyLen,
      elements: list.map((e) => ({
        key: e.key,
        ...((e.flags & ELEM_F_INTERVAL_END) !== 0 ? { intervalEnd: true } : {}),
        ...(e.verdict === null ? {} : { verdict: e.verdict }),
      })),
      userdata: s.userdata,
    });
  }

  chainList(datagram: Buffer): void {
    for (const m of dumpMessages([datagram])) {
      if (m.type !== NEW.chain) continue;
      const a = attrs(m.attrs);
      if (str(a.get(CHAIN_A.table)) !== this.table) continue;
      const name = str(a.get(CHAIN_A.name)) ?? "";
      const hookAttr = a.get(CHAIN_A.hook);
      const comment = udataComment(a.get(CHAIN_A.userdata), UDATA_COMMENT);
      let hook: DumpedChain["hook"];
      if (hookAttr !== undefined) {
        const h = attrs(hookAttr);
        const num = need(u32(h.get(HOOK_A.num)), "hook number");
        hook = {
          type: str(a.get(CHAIN_A.type)) ?? "",
          hook: HOOK_NAMES[num] ?? String(num),
          priority: need(u32(h.get(HOOK_A.priority)), "hook priority") | 0,
        };
      }
      this.chains.push({
        name,
        ...(hook === undefined ? {} : { hook }),
        ...(comment === undefined ? {} : { comment }),
      });
    }
  }

  ruleList(datagram: Buffer): void {
    for (const m of dumpMessages([datagram])) {
      if (m.type !== NEW.rule) continue;
      const a = attrs(m.attrs);
      if (str(a.get(RULE_A.table)) !== this.table) continue;
      const chain = str(a.get(RULE_A.chain)) ?? "";
      const exprs: DecodedExpr[] = [];
      const anonSets: AnonSet[] = [];
      for (const [, e] of attrList(a.get(RULE_A.expressions) ?? Buffer.alloc(0))) {
        const ea = attrs(e);
        const d = decodeExpr(str(ea.get(1)) ?? "", ea.get(2));
        if (!("lookupName" in d)) {
          exprs.push(d);
          continue;
        }
        const content = this.anon.get(d.lookupName);
        if (content === undefined || d.expr.type !== "lookup") exprs.push(d.expr);
        else exprs.push({ ...d.expr, set: { anonymous: anonSets.push(content) - 1 } });
      }
      const comment = udataComment(a.get(RULE_A.userdata), UDATA_COMMENT) ?? null;
      const list = this.rules.get(chain) ?? [];
      list.push(ruleKey({ exprs, anonSets, comment }));
      this.rules.set(chain, list);
    }
  }

  finish(): TableDump {
    const sets: DumpedSet[] = [];
    for (const s of this.rawSets.values()) {
      if ((s.flags & SET_F.anonymous) !== 0) continue;
      const map = (s.flags & SET_F.map) !== 0;
      const fields = keyFields(s.keyType, s.keyLen);
      const elems = this.elements.get(s.name);
      sets.push({
        name: s.name,
        kind: map ? "map" : "set",
        type:
          fields === null
            ? null
            : fields.map((f) => DATATYPE_NAMES[f]!).join(" . ") + (map ? " : verdict" : ""),
        elements:
          elems === undefined || fields === null
            ? null
            : elems.map((e) => ({
                container: s.name,
                key: keyText(fields, e.key),
                ...(e.comment === undefined ? {} : { comment: e.comment }),
                ...(e.verdict === null ? {} : { value: verdictText(e.verdict) }),
              })),
      });
    }
    return {
      exists: this.exists,
      comment: this.comment,
      otherTables: [...this.otherTables].sort(),
      chains: this.chains.map((c) => ({ ...c, rules: this.rules.get(c.name) ?? [] })),
      sets,
    };
  }
}
