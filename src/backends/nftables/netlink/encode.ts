/**
 * Typed commands (../transactions.ts) into one nf_tables netlink batch, as nft 1.0.6 encodes the
 * same `nft -f` text: BATCH_BEGIN, one message per command (element lists grouped per set and
 * split so that every nested attribute stays under 64 KiB), anonymous sets (`__set%d`,
 * `__map%d`, an ID unique in the batch; or named by us, `anonymousSetTag`) right before the rule
 * that uses them, BATCH_END. Only the
 * last message asks for an ack: errors come back anyway, tagged with the failing message's
 * sequence number, which `describe` maps back to the command (and so the object) that caused it.
 */
import { parseIPSloppy } from "../../../ip.ts";
import type { NftCommand } from "../transactions.ts";
import { BASE_CHAINS } from "../names.ts";
import type { NftContainer, NftElement } from "../types.ts";
import {
  compileRule,
  concatType,
  TYPE,
  type AnonSet,
  type Expr,
  type Family,
  type IfIndexResolver,
  type Verdict,
} from "./rule.ts";
import { BatchWriter, cstring, NLM_F_APPEND, NLM_F_CREATE, NLM_F_REQUEST, u32le, udata } from "./wire.ts";
import {
  CHAIN_A,
  ELEMS_A,
  ELEM_A,
  EXPR_A,
  HOOK_A,
  MSG,
  NFNL_MSG_BATCH_BEGIN,
  NFNL_MSG_BATCH_END,
  NFNL_SUBSYS_NFTABLES,
  NFPROTO,
  RULE_A,
  SET_A,
  TABLE_A,
  VERDICT_A,
} from "./protocol.ts";

const NFTA_LIST_ELEM = 1;
const SET_DESC_SIZE = 1;
const DATA_VALUE = 1;
const DATA_VERDICT = 2;
const NFT_DATA_VERDICT = 0xffffff00;
const SET_F = { anonymous: 0x1, constant: 0x2, interval: 0x4, map: 0x8, timeout: 0x10, eval: 0x20 } as const;
const ELEM_F_INTERVAL_END = 1;
const HOOKS: Readonly<Record<string, number>> = {
  prerouting: 0,
  input: 1,
  forward: 2,
  output: 3,
  postrouting: 4,
};
const VERDICT_CODE = { drop: 0, accept: 1, jump: -3, goto: -4, return: -5 } as const;
const META_KEY = { mark: 3, iif: 4, iifname: 6, l4proto: 16 } as const;
const UDATA_COMMENT = 0;
const UDATA_SET_KEYBYTEORDER = 0;
const UDATA_SET_DATABYTEORDER = 1;
const UDATA_SET_KEY_TYPEOF = 3;
const UDATA_SET_DATA_INTERVAL = 6;
const UDATA_SET_COMMENT = 7;
const BYTEORDER_BIG = 2;
const EXPR_CONCAT = 13;
/** Elements per message stop once the element list reaches this (its attribute length is 16-bit). */
const ELEMENTS_BUDGET = 60 * 1024;

/** nft's named datatypes: id, length, and whether the value is host- or network-ordered. */
const DATATYPES: Readonly<Record<string, { readonly id: number; readonly len: number }>> = {
  ipv4_addr: { id: TYPE.ipv4, len: 4 },
  ipv6_addr: { id: TYPE.ipv6, len: 16 },
  inet_proto: { id: TYPE.inetProto, len: 1 },
  inet_service: { id: TYPE.inetService, len: 2 },
};
const PROTOCOLS: Readonly<Record<string, number>> = { tcp: 6, udp: 17, sctp: 132 };

interface KeyLayout {
  readonly fields: readonly (keyof typeof DATATYPES)[];
  readonly type: number;
  readonly len: number;
  readonly map: boolean;
}

function keyLayout(c: { readonly type: string; readonly name: string }): KeyLayout {
  const [keyText, dataText] = c.type.split(" : ");
  if (dataText !== undefined && dataText !== "verdict")
    throw new Error(`${c.name}: unsupported map data ${dataText}`);
  const fields = keyText!.split(" . ");
  for (const f of fields) if (DATATYPES[f] === undefined) throw new Error(`${c.name}: unsupported type ${f}`);
  const types = fields.map((f) => DATATYPES[f]!);
  const concat = fields.length > 1;
  return {
    fields,
    type: concat ? concatType(types.map((t) => t.id)) : types[0]!.id,
    len: concat ? types.reduce((n, t) => n + ((t.len + 3) & ~3), 0) : types[0]!.len,
    map: dataText !== undefined,
  };
}

function keyBytes(layout: KeyLayout, key: string): Buffer {
  const parts = key.split(" . ");
  if (parts.length !== layout.fields.length)
    throw new Error(`key ${JSON.stringify(key)} has ${parts.length} fields`);
  const concat = parts.length > 1;
  const out: Buffer[] = [];
  parts.forEach((text, i) => {
    const field = layout.fields[i]!;
    let b: Buffer;
    if (field === "ipv4_addr" || field === "ipv6_addr") {
      const ip = parseIPSloppy(text);
      if (ip === null || (ip.family === "IPv4") !== (field === "ipv4_addr"))
        throw new Error(`not an ${field}: ${text}`);
      b = Buffer.from(ip.bytes);
    } else if (field === "inet_proto") {
      const n = PROTOCOLS[text];
      if (n === undefined) throw new Error(`unknown protocol ${text}`);
      b = Buffer.from([n]);
    } else {
      const port = Number(text);
      if (!/^\d+$/.test(text) || port > 65535) throw new Error(`not a port: ${text}`);
      b = Buffer.alloc(2);
      b.writeUInt16BE(port, 0);
    }
    out.push(concat ? Buffer.concat([b, Buffer.alloc(((b.length + 3) & ~3) - b.length)]) : b);
  });
  return Buffer.concat(out);
}

function parseVerdict(text: string): Verdict {
  const m = /^(jump|goto) (\S+)$/.exec(text);
  if (m !== null) return { code: m[1] as "jump" | "goto", chain: m[2]! };
  if (text === "drop" || text === "accept" || text === "return") return { code: text };
  throw new Error(`unsupported verdict ${JSON.stringify(text)}`);
}

/** The user data nft writes for a named set or map of our table. */
function containerUserdata(c: NftContainer, layout: KeyLayout): Buffer {
  const entries: Array<readonly [number, Buffer]> = [];
  if (layout.fields.length === 1) entries.push([UDATA_SET_KEYBYTEORDER, u32le(BYTEORDER_BIG)]);
  else
    entries.push(
      [UDATA_SET_KEYBYTEORDER, u32le(0)],
      [UDATA_SET_DATABYTEORDER, u32le(0)],
      [
        UDATA_SET_KEY_TYPEOF,
        udata([
          [0, u32le(EXPR_CONCAT)],
          [1, Buffer.alloc(0)],
        ]),
      ],
      [UDATA_SET_DATA_INTERVAL, u32le(0)],
    );
  if (c.comment !== undefined) entries.push([UDATA_SET_COMMENT, cstring(c.comment)]);
  return udata(entries);
}

/** Where one command ended up in a batch (for naming the object of a kernel error). */
export interface EncodedBatch {
  readonly bytes: Buffer;
  readonly firstSeq: number;
  /** The message that asks for the ack: its reply ends the exchange. */
  readonly lastSeq: number;
  readonly messages: number;
  /**
   * The command (and how it was sent) behind the message `seq` of a batch encoded from
   * `commands` (the same list again: a batch does not keep its commands, which a chunked full
   * sync lists anew for every batch); null for BATCH_BEGIN/END.
   */
  describe(seq: number, commands: readonly NftCommand[]): string | null;
}

export interface EncodeOptions {
  readonly family: Family;
  readonly table: string;
  readonly firstSeq: number;
  readonly ifIndex: IfIndexResolver;
  /** The declared type of a set or map created by an earlier batch (`ipv4_addr`, `… : verdict`). */
  readonly containerType: (name: string) => string | undefined;
  /**
   * Encode into this (emptied) writer, and return its bytes uncopied: valid until the writer is
   * reset. Without it, a fresh writer and a copy.
   */
  readonly writer?: BatchWriter;
  /**
   * A text (letters, digits) unique to this batch among all batches ever sent to the table.
   * Without it, anonymous sets are named as nft names them (`__map%d`: the kernel picks the
   * number) and their elements name the set. With it, they are named `__map<tag>_<n>` here and
   * their elements refer to the set by ID alone. Same objects, as `nft list` shows them, but
   * cheaper for the kernel on a large table: it picks a `%d` number by parsing the name of every
   * set of the table (twice beyond 32,768 of them), and it looks an element list's set up by name
   * in the table's list of sets before trying the ID (docs/nftables-mode.md).
   */
  readonly anonymousSetTag?: string;
}

function commandLabel(cmd: NftCommand): string {
  switch (cmd.what) {
    case "table":
      return "table";
    case "chain":
      return `${cmd.verb} chain ${cmd.chain}`;
    case "container":
      return cmd.verb === "add"
        ? `add ${cmd.container.kind} ${cmd.container.name}`
        : `${cmd.verb} ${cmd.kind} ${cmd.name}`;
    case "rule":
      return `add rule to chain ${cmd.chain}: ${cmd.rule}`;
    case "element":
      return cmd.verb === "add"
        ? `add element ${cmd.element.container} { ${cmd.element.key} }`
        : `delete element ${cmd.container} { ${cmd.key} }`;
  }
}

/**
 * A batch's commands read once, in order, with one of lookahead: the commands of a chunk of a
 * large full sync are made as they are encoded, so that none of them outlives its message
 * (held for the whole encoding, they were promoted to the old generation batch after batch).
 */
class Cursor {
  private index = 0;
  private current: IteratorResult<NftCommand>;
  private following: IteratorResult<NftCommand> | null = null;

  constructor(private readonly source: Iterator<NftCommand>) {
    this.current = source.next();
  }

  /** The command at `i`, which is the one last asked for or the one after it; undefined at the end. */
  at(i: number): NftCommand | undefined {
    if (i === this.index + 1) {
      this.current = this.following ?? this.source.next();
      this.following = null;
      this.index = i;
    } else if (i !== this.index) throw new Error(`command ${i} asked for at ${this.index}`);
    return this.current.done === true ? undefined : this.current.value;
  }
}

class Encoder {
  readonly w: BatchWriter;
  private seq: number;
  private setId = 0;
  /**
   * For each message after BATCH_BEGIN, the first and the last command it carries (two numbers
   * per message, not an object: a batch of a large sync has tens of thousands of messages, and
   * this outlives the encoding while the kernel applies the batch), and what it does where that
   * is not the command itself (by message).
   */
  readonly origin: number[] = [];
  readonly notes = new Map<number, string>();
  private lastMessageAt = -1;
  private readonly layouts = new Map<string, KeyLayout>();
  /** IDs of the named sets this batch creates: nft names them by ID too. */
  private readonly namedIds = new Map<string, number>();
  private readonly nfproto: number;

  private readonly commands: Cursor;

  constructor(
    private readonly options: EncodeOptions,
    commands: Iterable<NftCommand>,
  ) {
    this.commands = new Cursor(commands[Symbol.iterator]());
    this.seq = options.firstSeq;
    this.nfproto = NFPROTO[options.family];
    this.w = options.writer ?? new BatchWriter();
    this.w.reset();
  }

  private begin(type: number, flags: number, from: number, to = from, note = ""): void {
    this.lastMessageAt = this.w.position;
    this.w.begin((NFNL_SUBSYS_NFTABLES << 8) | type, NLM_F_REQUEST | flags, this.seq++, this.nfproto);
    if (note !== "") this.notes.set(this.origin.length >> 1, note);
    this.origin.push(from, to);
  }

  private table(): void {
    this.w.str(1, this.options.table);
  }

  run(): EncodedBatch {
    const { w } = this;
    const firstSeq = this.seq;
    w.begin(NFNL_MSG_BATCH_BEGIN, NLM_F_REQUEST, this.seq++, 0, NFNL_SUBSYS_NFTABLES);
    w.end();
    for (let i = 0; this.commands.at(i) !== undefined;) i = this.command(i);
    if (this.lastMessageAt >= 0) w.requestAck(this.lastMessageAt);
    const lastSeq = this.seq - 1;
    w.begin(NFNL_MSG_BATCH_END, NLM_F_REQUEST, this.seq++, 0, NFNL_SUBSYS_NFTABLES);
    w.end();
    const { origin, notes } = this;
    return {
      bytes: this.options.writer === undefined ? w.finish() : w.view(),
      firstSeq,
      lastSeq,
      messages: this.seq - firstSeq,
      describe(seq: number, commands: readonly NftCommand[]): string | null {
        const message = seq - firstSeq - 1;
        const from = origin[2 * message];
        const to = origin[2 * message + 1];
        if (from === undefined || to === undefined || message < 0) return null;
        const first = commandLabel(commands[from]!);
        const span = to > from ? ` (and ${to - from} more in the same message)` : "";
        return `${notes.get(message) ?? ""}${first}${span}`;
      },
    };
  }

  /** Encodes the command at `i` (and the element commands grouped with it); returns the next index. */
  private command(i: number): number {
    const cmd = this.commands.at(i)!;
    const { w } = this;
    switch (cmd.what) {
      case "table":
        this.begin(MSG.newTable, NLM_F_CREATE, i);
        w.str(TABLE_A.name, this.options.table);
        w.u32(TABLE_A.flags, 0);
        w.bytes(TABLE_A.userdata, udata([[UDATA_COMMENT, cstring(cmd.comment)]]));
        w.end();
        return i + 1;
      case "chain":
        if (cmd.verb === "add") {
          this.begin(MSG.newChain, NLM_F_CREATE, i);
          this.table();
          w.str(CHAIN_A.name, cmd.chain);
          const base = BASE_CHAINS.find((c) => c.name === cmd.chain);
          if (base !== undefined) {
            w.str(CHAIN_A.type, base.type);
            w.nest(CHAIN_A.hook, () => {
              w.u32(HOOK_A.num, HOOKS[base.hook]!);
              w.u32(HOOK_A.priority, base.priority);
            });
          } else if (cmd.comment !== undefined) {
            w.bytes(CHAIN_A.userdata, udata([[UDATA_COMMENT, cstring(cmd.comment)]]));
          }
        } else if (cmd.verb === "flush") {
          this.begin(MSG.delRule, 0, i);
          this.table();
          w.str(RULE_A.chain, cmd.chain);
        } else {
          this.begin(MSG.delChain, 0, i);
          this.table();
          w.str(CHAIN_A.name, cmd.chain);
        }
        w.end();
        return i + 1;
      case "container":
        if (cmd.verb === "add") this.newSet(cmd.container, i);
        else {
          this.begin(cmd.verb === "flush" ? MSG.delSetElem : MSG.delSet, 0, i);
          if (cmd.verb === "flush") {
            // nft's order for a flush: the set's name before its table.
            w.str(ELEMS_A.set, cmd.name);
            this.table();
          } else {
            this.table();
            w.str(SET_A.name, cmd.name);
          }
          w.end();
        }
        return i + 1;
      case "rule":
        this.rule(cmd.chain, cmd.rule, i);
        return i + 1;
      case "element":
        return this.elements(i);
    }
  }

  private layout(name: string): KeyLayout {
    const l = this.layouts.get(name);
    if (l !== undefined) return l;
    // Not declared earlier in this batch (newSet records those): declared by an earlier one.
    const type = this.options.containerType(name);
    if (type === undefined) throw new Error(`elements of ${name}, a set of unknown type`);
    const layout = keyLayout({ name, type });
    this.layouts.set(name, layout);
    return layout;
  }

  private newSet(c: NftContainer, i: number): void {
    const { w } = this;
    const layout = keyLayout(c);
    this.layouts.set(c.name, layout);
    let flags = layout.map ? SET_F.map : 0;
    for (const f of c.flags ?? []) {
      if (f === "dynamic") flags |= SET_F.eval;
      else if (f === "timeout") flags |= SET_F.timeout;
      else if (f === "interval") flags |= SET_F.interval;
      else throw new Error(`${c.name}: unsupported set flag ${f}`);
    }
    this.begin(MSG.newSet, NLM_F_CREATE, i);
    this.table();
    w.str(SET_A.name, c.name);
    w.u32(SET_A.flags, flags);
    w.u32(SET_A.keyType, layout.type);
    w.u32(SET_A.keyLen, layout.len);
    if (layout.map) {
      w.u32(SET_A.dataType, NFT_DATA_VERDICT);
      w.u32(SET_A.dataLen, 0);
    }
    const id = ++this.setId;
    // A set added twice in one batch keeps the ID of its first add for references (as nft).
    if (!this.namedIds.has(c.name)) this.namedIds.set(c.name, id);
    w.u32(SET_A.id, id);
    if (c.timeoutSeconds !== undefined) w.u64(SET_A.timeout, BigInt(c.timeoutSeconds) * 1000n);
    w.bytes(SET_A.userdata, containerUserdata(c, layout));
    w.end();
  }

  private rule(chain: string, text: string, i: number): void {
    const { w } = this;
    const compiled = compileRule(chain, text, this.options.family, this.options.ifIndex);
    const anon = compiled.anonSets.map((s) => this.anonymousSet(s, i));
    this.begin(MSG.newRule, NLM_F_CREATE | NLM_F_APPEND, i);
    this.table();
    w.str(RULE_A.chain, chain);
    const list = w.open();
    for (const e of compiled.exprs) {
      const item = w.open();
      this.expr(e, anon);
      w.close(NFTA_LIST_ELEM, item);
    }
    w.close(RULE_A.expressions, list);
    if (compiled.comment !== null)
      w.bytes(RULE_A.userdata, udata([[UDATA_COMMENT, cstring(compiled.comment)]]));
    w.end();
  }

  /** NEWSET + NEWSETELEM(s) of an anonymous set; returns its name and ID for the lookup. */
  private anonymousSet(s: AnonSet, i: number): { name: string; id: number } {
    const { w } = this;
    const id = ++this.setId;
    const tag = this.options.anonymousSetTag;
    const name = `${s.map ? "__map" : "__set"}${tag === undefined ? "%d" : `${tag}_${id.toString(36)}`}`;
    let flags = SET_F.anonymous | SET_F.constant;
    if (s.map) flags |= SET_F.map;
    if (s.interval) flags |= SET_F.interval;
    this.begin(MSG.newSet, NLM_F_CREATE, i, i, "anonymous set of ");
    this.table();
    w.str(SET_A.name, name);
    w.u32(SET_A.flags, flags);
    w.u32(SET_A.keyType, s.keyType);
    w.u32(SET_A.keyLen, s.keyLen);
    if (s.map) {
      w.u32(SET_A.dataType, NFT_DATA_VERDICT);
      w.u32(SET_A.dataLen, 0);
    }
    w.u32(SET_A.id, id);
    w.nest(SET_A.desc, () => w.u32(SET_DESC_SIZE, s.elements.length));
    w.bytes(SET_A.userdata, s.userdata);
    w.end();
    let k = 0;
    while (k < s.elements.length) {
      this.begin(MSG.newSetElem, NLM_F_CREATE, i, i, "elements of the anonymous set of ");
      this.table();
      if (tag === undefined) w.str(ELEMS_A.set, name);
      w.u32(ELEMS_A.setId, id);
      const start = w.position;
      let n = 0;
      const list = w.open();
      do {
        const e = s.elements[k++]!;
        const item = w.open();
        if (e.intervalEnd === true) w.u32(ELEM_A.flags, ELEM_F_INTERVAL_END);
        const key = w.open();
        w.bytes(DATA_VALUE, e.key);
        w.close(ELEM_A.key, key);
        if (e.verdict !== undefined) this.verdictData(ELEM_A.data, e.verdict);
        w.close(++n, item);
      } while (k < s.elements.length && w.position - start < ELEMENTS_BUDGET);
      w.close(ELEMS_A.elements, list);
      w.end();
    }
    return { name, id };
  }

  private verdictData(type: number, v: Verdict): void {
    const { w } = this;
    const outer = w.open();
    const inner = w.open();
    w.u32(VERDICT_A.code, VERDICT_CODE[v.code]);
    if ("chain" in v) w.str(VERDICT_A.chain, v.chain);
    w.close(DATA_VERDICT, inner);
    w.close(type, outer);
  }

  private expr(e: Expr, anon: readonly { name: string; id: number }[]): void {
    const { w } = this;
    const name = e.type === "metaSet" ? "meta" : e.type === "verdict" ? "immediate" : e.type;
    w.str(EXPR_A.name, name);
    const data = w.open();
    this.exprData(e, anon);
    w.close(EXPR_A.data, data);
  }

  private value(type: number, bytes: Uint8Array): void {
    const { w } = this;
    const at = w.open();
    w.bytes(DATA_VALUE, bytes);
    w.close(type, at);
  }

  private exprData(e: Expr, anon: readonly { name: string; id: number }[]): void {
    const { w } = this;
    {
      switch (e.type) {
        case "payload":
          w.u32(1, e.dreg);
          w.u32(2, e.base === "network" ? 1 : 2);
          w.u32(3, e.offset);
          w.u32(4, e.len);
          return;
        case "meta":
          w.u32(2, META_KEY[e.key]);
          w.u32(1, e.dreg);
          return;
        case "metaSet":
          w.u32(2, META_KEY[e.key]);
          w.u32(3, e.sreg);
          return;
        case "cmp":
          w.u32(1, e.sreg);
          w.u32(2, e.op === "eq" ? 0 : 1);
          this.value(3, e.data);
          return;
        case "bitwise":
          w.u32(1, e.sreg);
          w.u32(2, e.dreg);
          if (e.explicitOp === true) w.u32(6, 0);
          w.u32(3, e.mask.length);
          this.value(4, e.mask);
          this.value(5, e.xor);
          return;
        case "lookup": {
          w.u32(2, e.sreg);
          if (e.dreg !== null) w.u32(3, e.dreg);
          if ("name" in e.set) {
            w.str(1, e.set.name);
            const id = this.namedIds.get(e.set.name);
            if (id !== undefined) w.u32(4, id);
          } else {
            const a = anon[e.set.anonymous]!;
            w.str(1, a.name);
            w.u32(4, a.id);
          }
          if (e.invert) w.u32(5, 1);
          return;
        }
        case "immediate":
          w.u32(1, e.dreg);
          this.value(2, e.data);
          return;
        case "verdict":
          w.u32(1, 0);
          this.verdictData(2, e.verdict);
          return;
        case "numgen":
          w.u32(1, e.dreg);
          w.u32(2, e.modulus);
          w.u32(3, 1);
          w.u32(4, 0);
          return;
        case "fib":
          w.u32(3, e.flags);
          w.u32(2, e.result);
          w.u32(1, e.dreg);
          return;
        case "ct":
          w.u32(2, 0);
          w.u32(1, e.dreg);
          return;
        case "nat":
          w.u32(1, 1);
          w.u32(2, NFPROTO[e.family]);
          w.u32(3, e.regAddr);
          w.u32(5, e.regProto);
          w.u32(7, 2);
          return;
        case "masq":
          w.u32(1, e.flags);
          return;
        case "reject":
          w.u32(1, 0);
          w.bytes(2, Buffer.from([e.icmpCode]));
          return;
        case "dynset":
          w.u32(4, e.sreg);
          w.u32(3, 1);
          w.str(1, e.set);
          if (this.namedIds.has(e.set)) w.u32(2, this.namedIds.get(e.set)!);
          return;
      }
    }
  }

  /** A run of element commands of one verb on one set, in as few messages as fit. */
  private elements(i: number): number {
    const { w } = this;
    const first = this.commands.at(i)!;
    if (first.what !== "element") throw new Error("not an element command");
    const container = first.verb === "add" ? first.element.container : first.container;
    const layout = this.layout(container);
    let j = i;
    const same = (c: NftCommand | undefined): c is NftCommand & { what: "element" } =>
      c !== undefined &&
      c.what === "element" &&
      c.verb === first.verb &&
      (c.verb === "add" ? c.element.container : c.container) === container;
    while (same(this.commands.at(j))) {
      const from = j;
      this.begin(
        first.verb === "add" ? MSG.newSetElem : MSG.delSetElem,
        first.verb === "add" ? NLM_F_CREATE : 0,
        from,
      );
      this.table();
      w.str(ELEMS_A.set, container);
      const id = this.namedIds.get(container);
      if (id !== undefined) w.u32(ELEMS_A.setId, id);
      const start = w.position;
      let n = 0;
      const list = w.open();
      do {
        const c = this.commands.at(j++)!;
        if (c.what !== "element") throw new Error("not an element command");
        // libnftnl numbers the entries of an element list 1, 2, … (the kernel ignores the type).
        const item = w.open();
        if (c.verb === "add") this.element(layout, c.element);
        else this.value(ELEM_A.key, keyBytes(layout, c.key));
        w.close(++n, item);
      } while (w.position - start < ELEMENTS_BUDGET && same(this.commands.at(j)));
      w.close(ELEMS_A.elements, list);
      w.end();
      this.origin[this.origin.length - 1] = j - 1;
    }
    return j;
  }

  private element(layout: KeyLayout, e: NftElement): void {
    const { w } = this;
    this.value(ELEM_A.key, keyBytes(layout, e.key));
    if (layout.map) {
      if (e.value === undefined) throw new Error(`element ${e.key} of map ${e.container} has no value`);
      this.verdictData(ELEM_A.data, parseVerdict(e.value));
    }
    if (e.comment !== undefined) w.bytes(ELEM_A.userdata, udata([[UDATA_COMMENT, cstring(e.comment)]]));
  }
}

/**
 * One batch of `commands` (one transaction: the kernel applies all of it or nothing), read once
 * in order: sets and maps are declared before their elements.
 */
export function encodeBatch(commands: Iterable<NftCommand>, options: EncodeOptions): EncodedBatch {
  return new Encoder(options, commands).run();
}
