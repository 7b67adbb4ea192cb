/**
 * The netlink wire format as nf_tables reads it: `nlmsghdr` (host order), `nfgenmsg`, and
 * type-length-value attributes padded to 4 bytes, nested ones flagged NLA_F_NESTED. Numbers in
 * nf_tables attributes are big-endian; register contents are raw bytes chosen by the caller.
 * One growing buffer holds a whole batch, so encoding allocates little at any size.
 */
import { KubeProxyError } from "../../../errors.ts";

export const NLM_F_REQUEST = 0x1;
export const NLM_F_ACK = 0x4;
export const NLM_F_CREATE = 0x400;
export const NLM_F_APPEND = 0x800;
const NLA_F_NESTED = 0x8000;
/** Attribute lengths are 16-bit. */
export const MAX_ATTR_LENGTH = 0xffff;

/** An attribute grew past what its 16-bit length can say (the caller splits such lists). */
export class NetlinkEncodeError extends KubeProxyError {
  readonly code = "KPT_NETLINK_ENCODE";
}

/**
 * Writes go forward only into a zero-filled buffer, so padding is never written; numbers are
 * stored byte by byte (cheaper than Buffer's methods for the hundreds of thousands of small
 * attributes of a large sync).
 */
export class BatchWriter {
  private buf = Buffer.alloc(1 << 16);
  private off = 0;
  private msgStart = -1;

  get length(): number {
    return this.off;
  }

  private ensure(n: number): void {
    if (this.off + n <= this.buf.length) return;
    let size = this.buf.length * 2;
    while (size < this.off + n) size *= 2;
    const next = Buffer.alloc(size);
    this.buf.copy(next, 0, 0, this.off);
    this.buf = next;
  }

  private le16(v: number, at: number): void {
    this.buf[at] = v & 0xff;
    this.buf[at + 1] = (v >>> 8) & 0xff;
  }

  private le32(v: number, at: number): void {
    const b = this.buf;
    b[at] = v & 0xff;
    b[at + 1] = (v >>> 8) & 0xff;
    b[at + 2] = (v >>> 16) & 0xff;
    b[at + 3] = (v >>> 24) & 0xff;
  }

  private be32(v: number, at: number): void {
    const b = this.buf;
    b[at] = (v >>> 24) & 0xff;
    b[at + 1] = (v >>> 16) & 0xff;
    b[at + 2] = (v >>> 8) & 0xff;
    b[at + 3] = v & 0xff;
  }

  /** Starts a message: nlmsghdr + nfgenmsg (family, version 0, resource id big-endian). */
  begin(type: number, flags: number, seq: number, family: number, resId = 0): void {
    this.ensure(20);
    const o = this.off;
    this.msgStart = o;
    this.le32(0, o);
    this.le16(type, o + 4);
    this.le16(flags, o + 6);
    this.le32(seq, o + 8);
    this.le32(0, o + 12);
    this.buf[o + 16] = family;
    this.buf[o + 17] = 0;
    this.buf[o + 18] = (resId >>> 8) & 0xff;
    this.buf[o + 19] = resId & 0xff;
    this.off += 20;
  }

  end(): void {
    this.le32(this.off - this.msgStart, this.msgStart);
    this.msgStart = -1;
  }

  /** Sets NLM_F_ACK on the message that starts at `offset` (the last one of a batch). */
  requestAck(offset: number): void {
    this.buf[offset + 6]! |= NLM_F_ACK;
  }

  /** Where the next message starts. */
  get position(): number {
    return this.off;
  }

  bytes(type: number, value: Uint8Array): void {
    const n = value.length;
    const len = 4 + n;
    if (len > MAX_ATTR_LENGTH) throw new NetlinkEncodeError(`attribute ${type} of ${len} bytes`);
    const padded = (len + 3) & ~3;
    this.ensure(padded);
    const o = this.off;
    this.le16(len, o);
    this.le16(type, o + 2);
    if (n <= 32) for (let i = 0; i < n; i++) this.buf[o + 4 + i] = value[i]!;
    else this.buf.set(value, o + 4);
    this.off += padded;
  }

  u32(type: number, value: number): void {
    this.ensure(8);
    const o = this.off;
    this.le16(8, o);
    this.le16(type, o + 2);
    this.be32(value >>> 0, o + 4);
    this.off += 8;
  }

  u64(type: number, value: bigint): void {
    this.ensure(12);
    this.le16(12, this.off);
    this.le16(type, this.off + 2);
    this.buf.writeBigUInt64BE(value, this.off + 4);
    this.off += 12;
  }

  /** A NUL-terminated string. */
  str(type: number, value: string): void {
    // At most 3 bytes per UTF-16 unit; the bytes past the string stay zero (NUL and padding).
    this.ensure(4 + value.length * 3 + 4);
    const o = this.off;
    const n = value.length <= 64 ? this.ascii(value, o + 4) : this.buf.write(value, o + 4);
    const len = 4 + n + 1;
    if (len > MAX_ATTR_LENGTH) throw new NetlinkEncodeError(`attribute ${type} of ${len} bytes`);
    this.le16(len, o);
    this.le16(type, o + 2);
    this.off += (len + 3) & ~3;
  }

  /**
   * A short string byte by byte when it is ASCII (names, rule comments: most strings of a
   * batch), which costs less than a call into Buffer's UTF-8 writer; `buf.write` otherwise.
   */
  private ascii(value: string, at: number): number {
    const b = this.buf;
    for (let i = 0; i < value.length; i++) {
      const c = value.charCodeAt(i);
      if (c > 0x7f) {
        b.fill(0, at, at + i);
        return b.write(value, at);
      }
      b[at + i] = c;
    }
    return value.length;
  }

  /** Opens a nested attribute; `close` it with the returned offset once its body is written. */
  open(): number {
    this.ensure(4);
    const start = this.off;
    this.off += 4;
    return start;
  }

  close(type: number, start: number): void {
    const len = this.off - start;
    if (len > MAX_ATTR_LENGTH) throw new NetlinkEncodeError(`nested attribute ${type} of ${len} bytes`);
    this.le16(len, start);
    this.le16(type | NLA_F_NESTED, start + 2);
  }

  nest(type: number, body: () => void): void {
    const start = this.open();
    body();
    this.close(type, start);
  }

  /** The bytes written so far (a copy). */
  finish(): Buffer {
    return Buffer.from(this.buf.subarray(0, this.off));
  }

  /**
   * The bytes written so far, not copied: valid until `reset`. A writer that sends one batch
   * while it encodes the next keeps two writers and reuses their grown buffers, instead of
   * growing and copying a fresh one per batch (tens of megabytes over a large sync).
   */
  view(): Buffer {
    return this.buf.subarray(0, this.off);
  }

  /** Empty again, its buffer kept (zero-filled where it was written, as writes expect). */
  reset(): void {
    this.buf.fill(0, 0, this.off);
    this.off = 0;
    this.msgStart = -1;
  }
}

/** libnftnl's user data: one-byte type, one-byte length, value (comments end with NUL). */
export function udata(entries: ReadonlyArray<readonly [number, Buffer]>): Buffer {
  const parts: Buffer[] = [];
  for (const [type, value] of entries) parts.push(Buffer.from([type, value.length]), value);
  return Buffer.concat(parts);
}

export const cstring = (s: string): Buffer => Buffer.from(s + "\0");

export function u32le(v: number): Buffer {
  // From Buffer's shared pool (every byte is written): the rule compiler makes one per number.
  const b = Buffer.allocUnsafe(4);
  b.writeUInt32LE(v >>> 0, 0);
  return b;
}
