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

  /** Starts a message: nlmsghdr + nfgenmsg (family, version 0, resource id big-endian). */
  begin(type: number, flags: number, seq: number, family: number, resId = 0): void {
    this.ensure(20);
    this.msgStart = this.off;
    this.buf.writeUInt32LE(0, this.off);
    this.buf.writeUInt16LE(type, this.off + 4);
    this.buf.writeUInt16LE(flags, this.off + 6);
    this.buf.writeUInt32LE(seq, this.off + 8);
    this.buf.writeUInt32LE(0, this.off + 12);
    this.buf.writeUInt8(family, this.off + 16);
    this.buf.writeUInt8(0, this.off + 17);
    this.buf.writeUInt16BE(resId, this.off + 18);
    this.off += 20;
  }

  end(): void {
    this.buf.writeUInt32LE(this.off - this.msgStart, this.msgStart);
    this.msgStart = -1;
  }

  /** Sets NLM_F_ACK on the message that starts at `offset` (the last one of a batch). */
  requestAck(offset: number): void {
    this.buf.writeUInt16LE(this.buf.readUInt16LE(offset + 6) | NLM_F_ACK, offset + 6);
  }

  /** Where the next message starts. */
  get position(): number {
    return this.off;
  }

  bytes(type: number, value: Buffer): void {
    const len = 4 + value.length;
    if (len > MAX_ATTR_LENGTH) throw new NetlinkEncodeError(`attribute ${type} of ${len} bytes`);
    const padded = (len + 3) & ~3;
    this.ensure(padded);
    this.buf.writeUInt16LE(len, this.off);
    this.buf.writeUInt16LE(type, this.off + 2);
    value.copy(this.buf, this.off + 4);
    this.buf.fill(0, this.off + len, this.off + padded);
    this.off += padded;
  }

  u32(type: number, value: number): void {
    this.ensure(8);
    this.buf.writeUInt16LE(8, this.off);
    this.buf.writeUInt16LE(type, this.off + 2);
    this.buf.writeUInt32BE(value >>> 0, this.off + 4);
    this.off += 8;
  }

  u64(type: number, value: bigint): void {
    this.ensure(12);
    this.buf.writeUInt16LE(12, this.off);
    this.buf.writeUInt16LE(type, this.off + 2);
    this.buf.writeBigUInt64BE(value, this.off + 4);
    this.off += 12;
  }

  /** A NUL-terminated string. */
  str(type: number, value: string): void {
    const n = Buffer.byteLength(value);
    const len = 4 + n + 1;
    if (len > MAX_ATTR_LENGTH) throw new NetlinkEncodeError(`attribute ${type} of ${len} bytes`);
    const padded = (len + 3) & ~3;
    this.ensure(padded);
    this.buf.writeUInt16LE(len, this.off);
    this.buf.writeUInt16LE(type, this.off + 2);
    this.buf.write(value, this.off + 4);
    this.buf.fill(0, this.off + 4 + n, this.off + padded);
    this.off += padded;
  }

  nest(type: number, body: () => void): void {
    this.ensure(4);
    const start = this.off;
    this.off += 4;
    body();
    const len = this.off - start;
    if (len > MAX_ATTR_LENGTH) throw new NetlinkEncodeError(`nested attribute ${type} of ${len} bytes`);
    this.buf.writeUInt16LE(len, start);
    this.buf.writeUInt16LE(type | NLA_F_NESTED, start + 2);
  }

  /** The bytes written so far (a copy). */
  finish(): Buffer {
    return Buffer.from(this.buf.subarray(0, this.off));
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
  const b = Buffer.alloc(4);
  b.writeUInt32LE(v >>> 0, 0);
  return b;
}
