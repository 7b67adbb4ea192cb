/**
 * The see-inside tools' reading of the kernel (pure): netlink dumps of tables, sets, elements,
 * chains and rules (the same messages ./decode.ts reads for the writer) into the nftables model
 * `trace`, `explain` and the web view use (src/netfilter/nft/model.ts). A rule comes back as the
 * text our renderer writes: its expressions are matched against the shapes the compiler
 * (./rule.ts) produces and printed in its grammar, then read by the same rule parser as a dump.
 * An expression outside that grammar (someone else's) is kept as its name, and the tracer stops
 * there. The requests are built here; the socket calls are ../netlink-listing.ts's.
 */
import { formatIP } from "../../../ip.ts";
import type {
  NftBaseHook,
  NftChain,
  NftElement,
  NftRule,
  NftSet,
  NftTable,
  NftTableFamily,
  NftVerdict,
} from "../../../netfilter/nft/model.ts";
import { parseRuleText } from "../../../netfilter/nft/parse.ts";
import {
  attrList,
  attrs,
  DATATYPE_NAMES,
  decodeElements,
  decodeExpr,
  dumpMessages,
  keyFields,
  keyText,
  udataComment,
  type DecodedExpr,
  type RawElement,
} from "./decode.ts";
import type { AnonSet, Family, Verdict } from "./rule.ts";
import { TYPE } from "./rule.ts";
import { BatchWriter, NLM_F_ACK, NLM_F_REQUEST } from "./wire.ts";
import {
  CHAIN_A,
  COUNTER_A,
  ELEMS_A,
  EXPR_A,
  HOOK_A,
  MSG,
  NFNL_SUBSYS_NFTABLES,
  NFPROTO as NFPROTO_OF,
  NLM_F_DUMP,
  RULE_A,
  SET_A,
  TABLE_A,
} from "./protocol.ts";

const NFPROTO: Readonly<Record<number, NftTableFamily>> = {
  1: "inet",
  2: "ip",
  3: "arp",
  5: "netdev",
  7: "bridge",
  10: "ip6",
};

const SET_F = { anonymous: 0x1, constant: 0x2, interval: 0x4, map: 0x8, timeout: 0x10, eval: 0x20 } as const;
const ELEM_F_INTERVAL_END = 1;
const UDATA_COMMENT = 0;
const UDATA_SET_COMMENT = 7;
const NFT_DATA_VERDICT = 0xffffff00;
const HOOK_NAMES = ["prerouting", "input", "forward", "output", "postrouting"] as const;
const PROTOCOLS: Readonly<Record<number, string>> = { 6: "tcp", 17: "udp", 132: "sctp" };
const RTN_LOCAL = 2;
const NF_NAT_RANGE_PROTO_RANDOM_FULLY = 0x10;
const IP_CT_NEW_BIT = 8;
const NETWORK = { ip: { saddr: 12, daddr: 16, len: 4 }, ip6: { saddr: 8, daddr: 24, len: 16 } } as const;

const str = (b: Buffer | undefined): string | undefined =>
  b === undefined ? undefined : b.toString("utf8").replace(/\0.*$/s, "");
const u32 = (b: Buffer | undefined): number | undefined =>
  b === undefined || b.length < 4 ? undefined : b.readUInt32BE(0);
const u64 = (b: Buffer | undefined): number | undefined =>
  b === undefined || b.length < 8 ? undefined : Number(b.readBigUInt64BE(0));

// --- requests ---------------------------------------------------------------------------------

type Request = { readonly type: number; readonly dump: boolean; readonly attrs: readonly [number, string][] };

function request(r: Request, family: number, seq: number): Buffer {
  const w = new BatchWriter();
  w.begin(
    (NFNL_SUBSYS_NFTABLES << 8) | r.type,
    NLM_F_REQUEST | (r.dump ? NLM_F_DUMP : NLM_F_ACK),
    seq,
    family,
  );
  for (const [type, value] of r.attrs) w.str(type, value);
  w.end();
  return w.finish();
}

/** Every table of every family (the foreign ones are only named). */
export function tablesRequest(seq: number): Buffer {
  return request({ type: MSG.getTable, dump: true, attrs: [] }, 0, seq);
}

export type ListingRequest =
  | { readonly what: "sets" | "chains" | "rules" }
  | { readonly what: "set"; readonly set: string }
  /** `holding`: decode only the elements whose attributes contain one of these byte strings. */
  | { readonly what: "elements"; readonly set: string; readonly holding?: readonly Buffer[] }
  | { readonly what: "chain" | "chainRules"; readonly chain: string };

/** One request about `table`: a dump of its sets, chains or rules, or one set, chain, set's elements or chain's rules. */
export function listingRequest(family: Family, table: string, r: ListingRequest, seq: number): Buffer {
  const f = NFPROTO_OF[family];
  switch (r.what) {
    case "sets":
      return request({ type: MSG.getSet, dump: true, attrs: [[SET_A.table, table]] }, f, seq);
    case "chains":
      return request({ type: MSG.getChain, dump: true, attrs: [[CHAIN_A.table, table]] }, f, seq);
    case "rules":
      return request({ type: MSG.getRule, dump: true, attrs: [[RULE_A.table, table]] }, f, seq);
    case "set":
      return request(
        {
          type: MSG.getSet,
          dump: false,
          attrs: [
            [SET_A.table, table],
            [SET_A.name, r.set],
          ],
        },
        f,
        seq,
      );
    case "elements":
      return request(
        {
          type: MSG.getSetElem,
          dump: true,
          attrs: [
            [ELEMS_A.table, table],
            [ELEMS_A.set, r.set],
          ],
        },
        f,
        seq,
      );
    case "chain":
      return request(
        {
          type: MSG.getChain,
          dump: false,
          attrs: [
            [CHAIN_A.table, table],
            [CHAIN_A.name, r.chain],
          ],
        },
        f,
        seq,
      );
    case "chainRules":
      return request(
        {
          type: MSG.getRule,
          dump: true,
          attrs: [
            [RULE_A.table, table],
            [RULE_A.chain, r.chain],
          ],
        },
        f,
        seq,
      );
  }
}

/** The nf_tables messages of one datagram with their nfgenmsg family. */
const messages = (datagram: Buffer) => dumpMessages([datagram]);

// --- rules back into the renderer's text ------------------------------------------------------

type Listed = DecodedExpr | { readonly type: "counter"; readonly packets: number; readonly bytes: number };

const hex8 = (n: number): string => `0x${n.toString(16).padStart(8, "0")}`;

function verdictWords(v: Verdict): string {
  return "chain" in v ? `${v.code} ${v.chain}` : v.code;
}

function nftVerdict(v: Verdict): NftVerdict {
  return "chain" in v ? { kind: v.code, target: v.chain } : { kind: v.code };
}

/** The CIDRs covering [lo, end) (end null: to the top of the address space). */
function rangeCidrs(lo: Buffer, end: Buffer | null): string[] {
  const bits = lo.length * 8;
  const toBig = (b: Buffer): bigint => BigInt(`0x${b.toString("hex") || "0"}`);
  const toBuf = (n: bigint): Buffer => Buffer.from(n.toString(16).padStart(lo.length * 2, "0"), "hex");
  let start = toBig(lo);
  const stop = end === null ? 1n << BigInt(bits) : toBig(end);
  const out: string[] = [];
  while (start < stop && out.length < 256) {
    let size = BigInt(bits);
    // The largest aligned block at `start` that fits before `stop`.
    while (size > 0n && (start & ((1n << size) - 1n)) !== 0n) size--;
    while (size > 0n && start + (1n << size) > stop) size--;
    out.push(`${formatIP(toBuf(start))}/${bits - Number(size)}`);
    start += 1n << size;
  }
  return out;
}

/** An anonymous address set's items as the renderer writes them (addresses or CIDRs). */
function addressItems(set: AnonSet): string[] {
  if (!set.interval) return set.elements.map((e) => formatIP(e.key));
  const sorted = [...set.elements].sort((a, b) => Buffer.compare(a.key, b.key));
  const out: string[] = [];
  for (let i = 0; i < sorted.length; i++) {
    const e = sorted[i]!;
    if (e.intervalEnd === true) continue;
    const next = sorted[i + 1];
    const items = rangeCidrs(e.key, next?.intervalEnd === true ? next.key : null);
    // A single address is written without its /32 (/128).
    for (const c of items) out.push(c.endsWith(`/${e.key.length * 8}`) ? c.replace(/\/\d+$/, "") : c);
  }
  return out;
}

function prefixBits(mask: Buffer): number {
  let n = 0;
  for (const byte of mask) {
    if (byte === 0xff) n += 8;
    else {
      for (let b = 0x80; b > 0 && (byte & b) !== 0; b >>= 1) n++;
      break;
    }
  }
  return n;
}

/**
 * The rule's text in the renderer's grammar, from its expressions (the inverse of ./rule.ts's
 * compiler). Returns the words of the shapes it recognised and, from the first it did not, the
 * expressions' names (an `unknown` statement for the parser).
 */
export function ruleText(
  exprs: readonly Listed[],
  anonymous: (name: string) => AnonSet | undefined,
  family: Family,
  ifName: (index: number) => string | null,
  comment: string | null,
): string {
  const net = NETWORK[family];
  const words: string[] = [];
  let i = 0;
  const at = (k: number): Listed | undefined => exprs[i + k];
  const fieldOf = (offset: number): "saddr" | "daddr" | null =>
    offset === net.saddr ? "saddr" : offset === net.daddr ? "daddr" : null;
  while (i < exprs.length) {
    const e = exprs[i]!;
    const e1 = at(1);
    const e2 = at(2);
    const e3 = at(3);
    if (e.type === "ct" && e1?.type === "bitwise" && e2?.type === "cmp" && e2.op === "neq") {
      if (e1.mask.length === 4 && e1.mask.readUInt32LE(0) === IP_CT_NEW_BIT) {
        words.push("ct state new");
        i += 3;
        continue;
      }
    }
    if (e.type === "payload" && e.base === "network") {
      const field = fieldOf(e.offset);
      if (field !== null && e.len === net.len) {
        if (e1?.type === "meta" && e1.key === "l4proto" && e2?.type === "payload" && e3?.type === "lookup") {
          if (e2.base === "transport" && e2.offset === 2 && "name" in e3.set && e3.dreg === 0) {
            words.push(`${family} ${field} . meta l4proto . th dport vmap @${e3.set.name}`);
            i += 4;
            continue;
          }
        }
        if (e1?.type === "lookup" && e1.dreg === null) {
          const not = e1.invert ? "!= " : "";
          const set = "name" in e1.set ? anonymous(e1.set.name) : undefined;
          if ("name" in e1.set && set === undefined) {
            words.push(`${family} ${field} ${not}@${e1.set.name}`);
            i += 2;
            continue;
          }
          if (set !== undefined && !set.map) {
            const items = addressItems(set);
            words.push(
              `${family} ${field} ${not}${items.length === 1 ? items[0]! : `{ ${items.join(" , ")} }`}`,
            );
            i += 2;
            continue;
          }
        }
        if (e1?.type === "dynset") {
          words.push(`update @${e1.set} { ${family} ${field} }`);
          i += 2;
          continue;
        }
        if (e1?.type === "bitwise" && e2?.type === "cmp" && e1.mask.length === net.len) {
          const not = e2.op === "neq" ? "!= " : "";
          words.push(`${family} ${field} ${not}${formatIP(e2.data)}/${prefixBits(e1.mask)}`);
          i += 3;
          continue;
        }
      }
      if (field !== null && e1?.type === "cmp" && e.len <= net.len && e1.data.length === e.len) {
        const not = e1.op === "neq" ? "!= " : "";
        const addr = Buffer.concat([e1.data, Buffer.alloc(net.len - e.len)]);
        words.push(`${family} ${field} ${not}${formatIP(addr)}${e.len === net.len ? "" : `/${e.len * 8}`}`);
        i += 2;
        continue;
      }
    }
    if (e.type === "meta" && e.key === "l4proto") {
      if (e1?.type === "payload" && e1.base === "transport" && e1.offset === 2 && e2?.type === "lookup") {
        if ("name" in e2.set && e2.dreg === 0) {
          words.push(`meta l4proto . th dport vmap @${e2.set.name}`);
          i += 3;
          continue;
        }
      }
      if (e1?.type === "cmp" && e1.op === "eq" && e1.data.length === 1) {
        words.push(`meta l4proto ${PROTOCOLS[e1.data[0]!] ?? String(e1.data[0])}`);
        i += 2;
        continue;
      }
    }
    if (e.type === "fib" && e1?.type === "cmp" && e1.data.length === 4 && e.result === 3) {
      const field = e.flags === 1 ? "saddr" : e.flags === 2 ? "daddr" : null;
      if (field !== null && e1.data.readUInt32LE(0) === RTN_LOCAL) {
        words.push(`fib ${field} type ${e1.op === "neq" ? "!= " : ""}local`);
        i += 2;
        continue;
      }
    }
    if (e.type === "meta" && e.key === "mark" && e1?.type === "bitwise" && e1.mask.length === 4) {
      const mask = e1.mask.readUInt32LE(0);
      const xor = e1.xor.readUInt32LE(0);
      if (e2?.type === "cmp" && e2.data.length === 4 && xor === 0) {
        const value = e2.data.readUInt32LE(0);
        words.push(
          `mark and ${hex8(mask)} ${e2.op === "eq" ? "==" : "!="} ${value === 0 ? "0" : hex8(value)}`,
        );
        i += 3;
        continue;
      }
      if (e2?.type === "metaSet" && e2.key === "mark") {
        words.push(mask === 0xffffffff ? `mark set mark xor ${hex8(xor)}` : `mark set mark or ${hex8(xor)}`);
        i += 3;
        continue;
      }
    }
    if (e.type === "meta" && (e.key === "iif" || e.key === "iifname") && e1?.type === "cmp") {
      const not = e1.op === "neq" ? "!= " : "";
      if (e.key === "iif" && e1.data.length === 4) {
        const index = e1.data.readUInt32LE(0);
        words.push(`iif ${not}${ifName(index) ?? String(index)}`);
      } else {
        const name = e1.data.toString("utf8").replace(/\0.*$/s, "");
        words.push(`iifname ${not}${name}${e1.data.length < 16 ? "*" : ""}`);
      }
      i += 2;
      continue;
    }
    if (e.type === "numgen" && e1?.type === "lookup" && "name" in e1.set && e1.dreg === 0) {
      const set = anonymous(e1.set.name);
      if (set !== undefined && set.map) {
        const entries = [...set.elements]
          .sort((a, b) => a.key.readUInt32LE(0) - b.key.readUInt32LE(0))
          .map(
            (x) => `${x.key.readUInt32LE(0)} : ${x.verdict === undefined ? "?" : verdictWords(x.verdict)}`,
          );
        words.push(`numgen random mod ${e.modulus} vmap { ${entries.join(" , ")} }`);
        i += 2;
        continue;
      }
    }
    if (e.type === "immediate" && e1?.type === "immediate" && e2?.type === "nat") {
      const addr = formatIP(e.data);
      const port = e1.data.length === 2 ? e1.data.readUInt16BE(0) : 0;
      words.push(`dnat to ${family === "ip6" ? `[${addr}]` : addr}:${port}`);
      i += 3;
      continue;
    }
    if (e.type === "masq") {
      words.push(
        (e.flags & NF_NAT_RANGE_PROTO_RANDOM_FULLY) !== 0 ? "masquerade fully-random" : "masquerade",
      );
      i++;
      continue;
    }
    if (e.type === "reject") {
      words.push("reject");
      i++;
      continue;
    }
    if (e.type === "counter") {
      words.push(`counter packets ${e.packets} bytes ${e.bytes}`);
      i++;
      continue;
    }
    if (e.type === "verdict") {
      words.push(verdictWords(e.verdict));
      i++;
      continue;
    }
    words.push(
      exprs
        .slice(i)
        .map((x) => (x.type === "unknown" ? x.name : x.type))
        .join(" "),
    );
    break;
  }
  const body = words.join(" ");
  return comment === null ? body : `${body} comment ${JSON.stringify(comment)}`;
}

// --- the decoder -------------------------------------------------------------------------------

interface RawSet {
  readonly name: string;
  readonly flags: number;
  readonly keyType: number;
  readonly keyLen: number;
  readonly dataType: number | undefined;
  readonly timeoutMs: number | undefined;
  readonly comment: string | undefined;
}

interface RawRule {
  readonly chain: string;
  readonly handle: number | undefined;
  readonly exprs: readonly Listed[];
  readonly comment: string | null;
}

interface RawChain {
  readonly name: string;
  /** The kernel numbers chains as they are created: the order `nft list` shows them in. */
  readonly handle?: number;
  readonly base?: NftBaseHook;
  readonly comment?: string;
}

const setFlagWords = (flags: number): string[] => {
  const out: string[] = [];
  if ((flags & SET_F.constant) !== 0) out.push("constant");
  if ((flags & SET_F.interval) !== 0) out.push("interval");
  if ((flags & SET_F.eval) !== 0) out.push("dynamic");
  if ((flags & SET_F.timeout) !== 0) out.push("timeout");
  return out;
};

/**
 * One family's table (`kube-proxy`) from the answers to {@link listingRequest}, fed in any order
 * and then turned into the model by {@link finish}; the family's other tables are only named
 * ({@link tableList}).
 */
export class ListingDecoder {
  private exists = false;
  private comment: string | undefined;
  private readonly rawSets = new Map<string, RawSet>();
  private readonly elements = new Map<string, RawElement[]>();
  private readonly chains = new Map<string, RawChain>();
  private readonly rules = new Map<string, RawRule[]>();

  constructor(
    private readonly family: Family,
    private readonly table: string,
    private readonly ifName: (index: number) => string | null,
  ) {}

  /** Every table in a datagram of {@link tablesRequest}'s answer, and ours' comment. */
  tables(datagram: Buffer): { family: NftTableFamily; name: string }[] {
    const out: { family: NftTableFamily; name: string }[] = [];
    for (const m of messages(datagram)) {
      if (m.type !== MSG.newTable) continue;
      const a = attrs(m.attrs);
      const family = NFPROTO[m.family];
      const name = str(a.get(TABLE_A.name)) ?? "";
      if (family === undefined) continue;
      out.push({ family, name });
      if (family === this.family && name === this.table) {
        this.exists = true;
        this.comment = udataComment(a.get(TABLE_A.userdata), UDATA_COMMENT);
      }
    }
    return out;
  }

  sets(datagram: Buffer): void {
    for (const m of messages(datagram)) {
      if (m.type !== MSG.newSet) continue;
      const a = attrs(m.attrs);
      if (str(a.get(SET_A.table)) !== this.table) continue;
      const name = str(a.get(SET_A.name)) ?? "";
      this.rawSets.set(name, {
        name,
        flags: u32(a.get(SET_A.flags)) ?? 0,
        keyType: u32(a.get(SET_A.keyType)) ?? 0,
        keyLen: u32(a.get(SET_A.keyLen)) ?? 0,
        dataType: u32(a.get(SET_A.dataType)),
        timeoutMs: u64(a.get(SET_A.timeout)),
        comment: udataComment(a.get(SET_A.userdata), UDATA_SET_COMMENT),
      });
    }
  }

  /** The sets read so far, anonymous ones included. */
  setNames(): string[] {
    return [...this.rawSets.keys()];
  }

  /**
   * The elements of `set` in a datagram; with `holding`, only those whose attributes contain
   * one of those byte strings (a chain name, a comment, a key) are decoded: of a map every Service has
   * elements in, one Service's are a handful of 10,000.
   */
  setElements(set: string, datagram: Buffer, holding?: readonly Buffer[]): void {
    const list = this.elements.get(set) ?? [];
    for (const m of messages(datagram)) {
      if (m.type !== MSG.newSetElem) continue;
      if (holding === undefined) {
        for (const e of decodeElements([m])) list.push(e);
        continue;
      }
      const nested = attrs(m.attrs).get(ELEMS_A.elements);
      if (nested === undefined) continue;
      for (const [type, e] of attrList(nested)) {
        if (!holding.some((h) => e.includes(h))) continue;
        const one = Buffer.alloc(4 + e.length);
        one.writeUInt16LE(4 + e.length, 0);
        one.writeUInt16LE(type, 2);
        e.copy(one, 4);
        const single = Buffer.alloc(4 + one.length);
        single.writeUInt16LE(4 + one.length, 0);
        single.writeUInt16LE(ELEMS_A.elements, 2);
        one.copy(single, 4);
        for (const d of decodeElements([{ type: MSG.newSetElem, attrs: single }])) list.push(d);
      }
    }
    this.elements.set(set, list);
  }

  chainList(datagram: Buffer): void {
    for (const m of messages(datagram)) {
      if (m.type !== MSG.newChain) continue;
      const a = attrs(m.attrs);
      if (str(a.get(CHAIN_A.table)) !== this.table) continue;
      const name = str(a.get(CHAIN_A.name)) ?? "";
      const hook = a.get(CHAIN_A.hook);
      const comment = udataComment(a.get(CHAIN_A.userdata), UDATA_COMMENT);
      let base: NftBaseHook | undefined;
      if (hook !== undefined) {
        const h = attrs(hook);
        const num = u32(h.get(HOOK_A.num)) ?? 0;
        const type = str(a.get(CHAIN_A.type));
        base = {
          type: type === "nat" || type === "route" ? type : "filter",
          hook: HOOK_NAMES[num] ?? String(num),
          priority: (u32(h.get(HOOK_A.priority)) ?? 0) | 0,
          policy: u32(a.get(CHAIN_A.policy)) === 0 ? "drop" : "accept",
        };
      }
      const handle = u64(a.get(CHAIN_A.handle));
      this.chains.set(name, {
        name,
        ...(handle === undefined ? {} : { handle }),
        ...(base === undefined ? {} : { base }),
        ...(comment === undefined ? {} : { comment }),
      });
    }
  }

  /** The chains read so far. */
  chainNames(): string[] {
    return [...this.chains.keys()];
  }

  ruleList(datagram: Buffer): void {
    for (const m of messages(datagram)) {
      if (m.type !== MSG.newRule) continue;
      const a = attrs(m.attrs);
      if (str(a.get(RULE_A.table)) !== this.table) continue;
      const chain = str(a.get(RULE_A.chain)) ?? "";
      const exprs: Listed[] = [];
      for (const [, e] of attrList(a.get(RULE_A.expressions) ?? Buffer.alloc(0))) {
        const ea = attrs(e);
        const name = str(ea.get(EXPR_A.name)) ?? "";
        if (name === "counter") {
          const c = attrs(ea.get(EXPR_A.data) ?? Buffer.alloc(0));
          exprs.push({
            type: "counter",
            packets: u64(c.get(COUNTER_A.packets)) ?? 0,
            bytes: u64(c.get(COUNTER_A.bytes)) ?? 0,
          });
          continue;
        }
        const d = decodeExpr(name, ea.get(EXPR_A.data));
        exprs.push("lookupName" in d ? d.expr : d);
      }
      const list = this.rules.get(chain) ?? [];
      list.push({
        chain,
        handle: u64(a.get(RULE_A.handle)),
        exprs,
        comment: udataComment(a.get(RULE_A.userdata), UDATA_COMMENT) ?? null,
      });
      this.rules.set(chain, list);
    }
  }

  /**
   * Keeps of the elements read of `set` only those `keep` wants (one Service's, of a map that
   * holds every Service's): what is not kept is never decoded further.
   */
  pruneElements(set: string, keep: (e: RawElement) => boolean): void {
    const list = this.elements.get(set);
    if (list !== undefined) this.elements.set(set, list.filter(keep));
  }

  /** The first `length` bytes of the keys of the elements read of `set` (an address), in hex. */
  elementKeys(set: string, length: number): string[] {
    return (this.elements.get(set) ?? []).map((e) => e.key.subarray(0, length).toString("hex"));
  }

  /** The chains the elements read of `set` send packets to. */
  elementTargets(set: string): string[] {
    const out: string[] = [];
    for (const e of this.elements.get(set) ?? [])
      if (e.verdict !== null && "chain" in e.verdict) out.push(e.verdict.chain);
    return out;
  }

  /** The chains the rules read so far send packets to (jump, goto, numgen maps), by name. */
  targets(chain: string): string[] {
    const out = new Set<string>();
    for (const r of this.rules.get(chain) ?? []) {
      for (const e of r.exprs) {
        if (e.type === "verdict" && "chain" in e.verdict) out.add(e.verdict.chain);
        if (e.type === "lookup" && "name" in e.set && e.dreg === 0) {
          for (const x of this.elements.get(e.set.name) ?? [])
            if (x.verdict !== null && "chain" in x.verdict) out.add(x.verdict.chain);
        }
      }
    }
    return [...out];
  }

  /** The sets the rules of `chain` look up or update, by name (anonymous ones included). */
  setsOf(chain: string): string[] {
    const out = new Set<string>();
    for (const r of this.rules.get(chain) ?? [])
      for (const e of r.exprs) {
        if (e.type === "lookup" && "name" in e.set) out.add(e.set.name);
        if (e.type === "dynset") out.add(e.set);
      }
    return [...out];
  }

  private anonymous(name: string): AnonSet | undefined {
    const s = this.rawSets.get(name);
    if (s === undefined || (s.flags & SET_F.anonymous) === 0) return undefined;
    return {
      map: (s.flags & SET_F.map) !== 0,
      interval: (s.flags & SET_F.interval) !== 0,
      keyType: s.keyType,
      keyLen: s.keyLen,
      elements: (this.elements.get(name) ?? []).map((e) => ({
        key: e.key,
        ...((e.flags & ELEM_F_INTERVAL_END) !== 0 ? { intervalEnd: true } : {}),
        ...(e.verdict === null ? {} : { verdict: e.verdict }),
      })),
      userdata: Buffer.alloc(0),
    };
  }

  private namedSet(s: RawSet): NftSet {
    const map = (s.flags & SET_F.map) !== 0 || s.dataType === NFT_DATA_VERDICT;
    const fields = keyFields(s.keyType, s.keyLen);
    const type =
      fields === null
        ? [s.keyType === TYPE.integer ? "integer" : `type ${s.keyType}`]
        : fields.map((f) => DATATYPE_NAMES[f]!);
    const elements: NftElement[] = (this.elements.get(s.name) ?? []).map((e) => ({
      key: fields === null ? [e.key.toString("hex")] : keyText(fields, e.key).split(" . "),
      ...(e.verdict === null ? {} : { value: nftVerdict(e.verdict) }),
      ...(e.comment === undefined ? {} : { comment: e.comment }),
    }));
    return {
      kind: map ? "map" : "set",
      name: s.name,
      type,
      flags: setFlagWords(s.flags),
      ...(s.timeoutMs === undefined ? {} : { timeoutSeconds: Math.round(s.timeoutMs / 1000) }),
      ...(s.comment === undefined ? {} : { comment: s.comment }),
      elements,
    };
  }

  /** The table as read (chains in the order they were read, rules in chain order); null when it is not there. */
  finish(): NftTable | null {
    if (!this.exists) return null;
    const anonymous = (name: string): AnonSet | undefined => this.anonymous(name);
    const chains = new Map<string, NftChain>();
    const chainOf = (name: string): RawChain => this.chains.get(name) ?? { name };
    // A part of the table read chain by chain comes back in the whole table's order.
    const names = [...this.chains.values()]
      .sort((a, b) => (a.handle ?? 0) - (b.handle ?? 0))
      .map((c) => c.name);
    for (const name of this.rules.keys()) if (!this.chains.has(name)) names.push(name);
    for (const name of names) {
      const { handle: _, ...c } = chainOf(name);
      const rules: NftRule[] = (this.rules.get(name) ?? []).map((r, k) => {
        const text = ruleText(r.exprs, anonymous, this.family, this.ifName, r.comment);
        return {
          chain: name,
          index: k + 1,
          text,
          ...parseRuleText(text),
          ...(r.handle === undefined ? {} : { handle: r.handle }),
        };
      });
      chains.set(name, { ...c, rules });
    }
    const sets = new Map<string, NftSet>();
    for (const s of this.rawSets.values())
      if ((s.flags & SET_F.anonymous) === 0) sets.set(s.name, this.namedSet(s));
    return {
      family: this.family,
      name: this.table,
      ...(this.comment === undefined ? {} : { comment: this.comment }),
      chains,
      sets,
    };
  }
}
