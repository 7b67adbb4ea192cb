/**
 * nft's `--debug=mnl` dump (the bytes nft sends, one message at a time) read back into messages,
 * and a canonical form of an nf_tables batch for comparing ours with nft's: attributes decoded
 * recursively, set IDs renumbered by first appearance (both sides count differently), element
 * lists flattened to one element per entry (nft sends one message per `add element`, we group).
 */
export interface RawMessage {
  /** The nf_tables message type (low byte of nlmsg_type). */
  readonly type: number;
  /** Everything after nlmsghdr: nfgenmsg and the attributes. */
  readonly payload: Buffer;
}

// eslint-disable-next-line no-control-regex
const ANSI = /\x1b\[[0-9;]*m/g;

/** The messages of the dump's last batch (nft's cache queries before it are left out). */
export function parseMnlDump(text: string): RawMessage[] {
  const lines = text.replace(ANSI, "").split("\n");
  const msgs: Array<{ type: number; bytes: number[] }> = [];
  let cur: { type: number; bytes: number[] } | null = null;
  for (let i = 0; i < lines.length; i++) {
    const l = lines[i]!;
    if (/^\|\s+\d{10}\s+\|\s+\| message length/.test(l)) {
      const t = /^\|\s*(\d+)\s*\|/.exec(lines[i + 1] ?? "");
      cur = { type: Number(t?.[1] ?? -1), bytes: [] };
      msgs.push(cur);
      i += 3;
      continue;
    }
    const attr = /^\|(\d{5})\|([N-])([B-])\|(\d{5})\|/.exec(l);
    if (attr !== null && cur !== null) {
      const len = Number(attr[1]);
      const type = Number(attr[4]) | (attr[2] === "N" ? 0x8000 : 0) | (attr[3] === "B" ? 0x4000 : 0);
      cur.bytes.push(len & 0xff, len >> 8, type & 0xff, type >> 8);
      continue;
    }
    const data = /^\| ([0-9a-f]{2}) ([0-9a-f]{2}) ([0-9a-f]{2}) ([0-9a-f]{2}) {2}\|/.exec(l);
    if (data !== null && cur !== null) cur.bytes.push(...data.slice(1, 5).map((h) => parseInt(h, 16)));
  }
  const begin = msgs.findLastIndex((m) => m.type === 16 && m.bytes.join(",") === "0,0,0,10");
  const end = msgs.findIndex((m, i) => i > begin && m.type === 17);
  return msgs.slice(begin + 1, end).map((m) => ({ type: m.type & 0xff, payload: Buffer.from(m.bytes) }));
}

/** Our batch (begin … end) as messages, BATCH_BEGIN and BATCH_END left out. */
export function splitBatch(batch: Buffer): RawMessage[] {
  const out: RawMessage[] = [];
  for (let off = 0; off < batch.length;) {
    const len = batch.readUInt32LE(off);
    const type = batch.readUInt16LE(off + 4);
    if (type !== 16 && type !== 17)
      out.push({ type: type & 0xff, payload: batch.subarray(off + 16, off + len) });
    off += (len + 3) & ~3;
  }
  return out;
}

interface Attr {
  readonly type: number;
  readonly value: Buffer | Attr[];
}

function decode(buf: Buffer): Attr[] {
  const out: Attr[] = [];
  for (let off = 0; off + 4 <= buf.length;) {
    const len = buf.readUInt16LE(off);
    const rawType = buf.readUInt16LE(off + 2);
    if (len < 4) break;
    const body = buf.subarray(off + 4, off + len);
    out.push({ type: rawType, value: (rawType & 0x8000) !== 0 ? decode(body) : body });
    off += (len + 3) & ~3;
  }
  return out;
}

const isNested = (a: Attr): a is { type: number; value: Attr[] } => Array.isArray(a.value);

function show(a: Attr): string {
  return isNested(a) ? `${a.type}{${a.value.map(show).join(",")}}` : `${a.type}=${a.value.toString("hex")}`;
}

/** One line per message (one per element for element lists), set IDs renumbered. */
export function canonicalBatch(messages: readonly RawMessage[]): string[] {
  const ids = new Map<string, string>();
  const id = (raw: Buffer): Buffer => {
    const key = raw.toString("hex");
    if (!ids.has(key)) ids.set(key, `id${ids.size + 1}`);
    return Buffer.from(ids.get(key)!);
  };
  const renumber = (attrs: Attr[], idTypes: readonly number[]): Attr[] =>
    attrs.map((a) =>
      idTypes.includes(a.type) && Buffer.isBuffer(a.value) ? { type: a.type, value: id(a.value) } : a,
    );
  const lines: string[] = [];
  for (const m of messages) {
    const head = m.payload.subarray(0, 4).toString("hex");
    let attrs = decode(m.payload.subarray(4));
    if (m.type === 9) attrs = renumber(attrs, [10]);
    if (m.type === 12 || m.type === 14) {
      attrs = renumber(attrs, [4]);
      const list = attrs.find((a) => a.type === 0x8003);
      const rest = attrs.filter((a) => a.type !== 0x8003);
      if (list !== undefined && isNested(list)) {
        for (const e of list.value)
          lines.push(
            `${m.type} ${head} ${rest.map(show).join(",")} elem ${isNested(e) ? e.value.map(show).join(",") : ""}`,
          );
        continue;
      }
      attrs = rest;
    }
    if (m.type === 6) {
      attrs = attrs.map((a) => {
        if (a.type !== 0x8004 || !isNested(a)) return a;
        return {
          type: a.type,
          value: a.value.map((e) => {
            if (!isNested(e)) return e;
            const name = e.value.find((x) => x.type === 1);
            const kind = name !== undefined && !isNested(name) ? name.value.toString("latin1") : "";
            const idType = kind.startsWith("lookup") ? 4 : kind.startsWith("dynset") ? 2 : -1;
            return {
              type: e.type,
              value: e.value.map((x) =>
                x.type === 0x8002 && isNested(x) ? { type: x.type, value: renumber(x.value, [idType]) } : x,
              ),
            };
          }),
        };
      });
    }
    lines.push(`${m.type} ${head} ${attrs.map(show).join(",")}`);
  }
  return lines;
}
