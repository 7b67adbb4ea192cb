/**
 * A NETLINK_NETFILTER socket: the transport of nf_tables batches, with no knowledge of what the
 * messages mean (the encoder is backends/nftables/netlink/). The socket calls go through koffi,
 * a foreign-function interface that ships prebuilt binaries for every platform inside its npm
 * package (no compiler needed on a fresh machine; docs/nftables-mode.md says why this one).
 * `send` and `recv` run on koffi's worker threads: the kernel processes a whole batch inside
 * `sendmsg`, holding the nf_tables commit lock, and that may take seconds at scale; the event
 * loop keeps serving health checks meanwhile.
 */
import { closeSync, openSync } from "node:fs";
import { constants as osConstants } from "node:os";
import { promisify } from "node:util";
import koffi from "koffi";
import { KubeProxyError } from "../errors.ts";

const AF_NETLINK = 16;
const SOCK_RAW = 3;
const SOCK_CLOEXEC = 0o2000000;
const NETLINK_NETFILTER = 12;
const SOL_SOCKET = 1;
const SO_SNDBUFFORCE = 32;
const SO_RCVBUFFORCE = 33;
const SO_RCVTIMEO = 20;
const SOL_NETLINK = 270;
const NETLINK_CAP_ACK = 10;
const NETLINK_EXT_ACK = 11;
const CLONE_NEWNET = 0x40000000;

const NLMSG_HDRLEN = 16;
const NLMSG_ERROR = 2;
const NLMSG_DONE = 3;
const NLM_F_ACK_TLVS = 0x200;
const NLMSGERR_ATTR_MSG = 1;

/** The receive buffer: errors are small (NETLINK_CAP_ACK), only a failing batch sends many. */
const RCVBUF_BYTES = 8 * 1024 * 1024;
/** A dump's datagram that takes longer than this inside `recv` fails the dump. */
const DUMP_RECV_TIMEOUT_MS = 5_000;
const DUMP_YIELD_EVERY = 32;
/** How long to wait for the rest of the replies once one message failed. */
const ERROR_GRACE_MS = 1_000;
/** Room the kernel wants beyond the message itself in the send buffer. */
const SNDBUF_SLACK = 64 * 1024;

/** A socket call failed; `errno` is the C errno, `syscall` the call. */
export class NetlinkSocketError extends KubeProxyError {
  readonly code = "KPT_NETLINK_SOCKET";

  constructor(
    readonly syscall: string,
    readonly errno: number,
    detail = "",
  ) {
    super(`netlink ${syscall} failed: ${errnoName(errno)}${detail === "" ? "" : ` (${detail})`}`);
  }
}

const ERRNO_NAMES = new Map<number, string>(
  Object.entries(osConstants.errno).map(([name, value]) => [value, name]),
);

/** `ENOENT (2)`: the symbolic name and the number, as the kernel's headers spell it. */
export function errnoName(errno: number): string {
  return `${ERRNO_NAMES.get(errno) ?? "errno"} (${errno})`;
}

/** What the kernel said about one message of a batch: errno 0 is the requested ack. */
export interface NetlinkReply {
  readonly seq: number;
  readonly errno: number;
  /** The kernel's extended-ack text (NETLINK_EXT_ACK), when it gave one. */
  readonly message: string | null;
}

interface Libc {
  socket(domain: number, type: number, protocol: number): number;
  bind(fd: number, addr: Buffer, len: number): number;
  setsockopt(fd: number, level: number, name: number, value: Buffer, len: number): number;
  close(fd: number): number;
  setns(fd: number, nstype: number): number;
  ifNameToIndex(name: string): number;
  ifIndexToName(index: number, name: Buffer): string | null;
  send: (fd: number, buf: Buffer, len: number, flags: number) => Promise<number>;
  recv: (fd: number, buf: Buffer, len: number, flags: number) => Promise<number>;
  /** On the calling thread: a dump's datagrams are ready at once, a worker hop costs more. */
  sendSync: (fd: number, buf: Buffer, len: number, flags: number) => number;
  recvSync: (fd: number, buf: Buffer, len: number, flags: number) => number;
}

let libc: Libc | null = null;

function loadLibc(): Libc {
  if (libc !== null) return libc;
  const lib = koffi.load("libc.so.6");
  const send = lib.func("long send(int fd, const void *buf, size_t len, int flags)");
  const recv = lib.func("long recv(int fd, void *buf, size_t len, int flags)");
  libc = {
    socket: lib.func("int socket(int domain, int type, int protocol)"),
    bind: lib.func("int bind(int fd, const void *addr, uint32_t len)"),
    setsockopt: lib.func("int setsockopt(int fd, int level, int name, const void *value, uint32_t len)"),
    close: lib.func("int close(int fd)"),
    setns: lib.func("int setns(int fd, int nstype)"),
    ifNameToIndex: lib.func("unsigned int if_nametoindex(const char *name)"),
    ifIndexToName: lib.func("const char *if_indextoname(unsigned int index, _Out_ char *name)"),
    send: promisify(send.async) as Libc["send"],
    recv: promisify(recv.async) as Libc["recv"],
    sendSync: send as Libc["sendSync"],
    recvSync: recv as Libc["recvSync"],
  };
  return libc;
}

function int32(value: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeInt32LE(value, 0);
  return b;
}

export interface NetlinkSocketOptions {
  /** Open the socket in this named network namespace (`/run/netns/NAME`) instead of ours. */
  readonly netns?: string;
}

export interface TransactOptions {
  /** The sequence number of the message whose reply ends the exchange (the last one acked). */
  readonly lastSeq: number;
  /** Give up waiting for the replies after this long. */
  readonly timeoutMs: number;
  /** Give up after this many reply messages (a batch of N messages sends at most N + 1). */
  readonly maxReplies: number;
}

/** The kernel did not answer a batch in time: whether it was applied is unknown. */
export class NetlinkTimeoutError extends KubeProxyError {
  readonly code = "KPT_NETLINK_TIMEOUT";
}

export class NetlinkSocket {
  private sndbuf = 0;
  private closed = false;
  private readonly dumpBuffer = Buffer.alloc(256 * 1024);

  private constructor(
    private readonly lib: Libc,
    private readonly fd: number,
    private readonly netns: string | undefined,
  ) {}

  /** The index of an interface in the socket's namespace (what `iif NAME` matches). */
  ifIndex(name: string): number {
    const lookup = (): number => this.lib.ifNameToIndex(name);
    const index = this.netns === undefined ? lookup() : inNetns(this.lib, this.netns, lookup);
    if (index === 0) throw new NetlinkSocketError("if_nametoindex", koffi.errno(), name);
    return index;
  }

  /** The name of interface `index` in the socket's namespace (what `iif` holds), or null when there is none. */
  ifName(index: number): string | null {
    const buf = Buffer.alloc(16);
    const lookup = (): string | null => this.lib.ifIndexToName(index, buf);
    const found = this.netns === undefined ? lookup() : inNetns(this.lib, this.netns, lookup);
    return found === null ? null : buf.toString("utf8").replace(/\0.*$/s, "");
  }

  /** A bound NETLINK_NETFILTER socket with extended acks, capped acks and a large receive buffer. */
  static open(options: NetlinkSocketOptions = {}): NetlinkSocket {
    const lib = loadLibc();
    const fd =
      options.netns === undefined ? createSocket(lib) : inNetns(lib, options.netns, () => createSocket(lib));
    const socket = new NetlinkSocket(lib, fd, options.netns);
    try {
      socket.setInt(SOL_SOCKET, SO_RCVBUFFORCE, RCVBUF_BYTES, "SO_RCVBUFFORCE");
      socket.setInt(SOL_NETLINK, NETLINK_EXT_ACK, 1, "NETLINK_EXT_ACK");
      socket.setInt(SOL_NETLINK, NETLINK_CAP_ACK, 1, "NETLINK_CAP_ACK");
      const addr = Buffer.alloc(12);
      addr.writeUInt16LE(AF_NETLINK, 0);
      if (lib.bind(fd, addr, addr.length) !== 0) throw new NetlinkSocketError("bind", koffi.errno());
    } catch (error) {
      socket.close();
      throw error;
    }
    return socket;
  }

  private setInt(level: number, name: number, value: number, what: string): void {
    if (this.lib.setsockopt(this.fd, level, name, int32(value), 4) !== 0)
      throw new NetlinkSocketError("setsockopt", koffi.errno(), what);
  }

  /**
   * Sends one batch in one `send` (the kernel applies a batch only as one message) and collects
   * the replies until the one for `lastSeq`, bounded in count and time. Replies other than acks
   * and errors (there are none for batches) are ignored.
   */
  async transact(batch: Buffer, options: TransactOptions): Promise<NetlinkReply[]> {
    if (this.closed) throw new NetlinkSocketError("send", osConstants.errno.EBADF, "socket closed");
    if (batch.length + SNDBUF_SLACK > this.sndbuf) {
      // The kernel doubles the value; a batch larger than the buffer is refused with EMSGSIZE.
      this.setInt(SOL_SOCKET, SO_SNDBUFFORCE, batch.length + SNDBUF_SLACK, "SO_SNDBUFFORCE");
      this.sndbuf = batch.length + SNDBUF_SLACK;
    }
    const sent = await this.lib.send(this.fd, batch, batch.length, 0);
    if (sent < 0) throw new NetlinkSocketError("send", koffi.errno(), `${batch.length} bytes`);
    if (sent !== batch.length)
      throw new NetlinkSocketError(
        "send",
        osConstants.errno.EMSGSIZE,
        `sent ${sent} of ${batch.length} bytes`,
      );
    let deadline = Date.now() + options.timeoutMs;
    let failed = false;
    const replies: NetlinkReply[] = [];
    const buf = Buffer.alloc(256 * 1024);
    let messages = 0;
    while (messages < options.maxReplies) {
      const left = deadline - Date.now();
      if (left <= 0) {
        // After an error the batch is aborted: what came is all there is to know.
        if (failed) return replies;
        break;
      }
      this.setRecvTimeout(Math.min(left, 1_000));
      const n = await this.lib.recv(this.fd, buf, buf.length, 0);
      if (n < 0) {
        const errno = koffi.errno();
        if (errno === osConstants.errno.EAGAIN || errno === osConstants.errno.EINTR) continue;
        throw new NetlinkSocketError("recv", errno);
      }
      for (const reply of parseReplies(buf.subarray(0, n))) {
        messages++;
        replies.push(reply);
        if (reply.seq === options.lastSeq) return replies;
        if (reply.errno !== 0 && !failed) {
          failed = true;
          deadline = Math.min(deadline, Date.now() + ERROR_GRACE_MS);
        }
      }
    }
    throw new NetlinkTimeoutError(
      `no reply from the kernel for message ${options.lastSeq} within ${options.timeoutMs} ms (${messages} replies)`,
    );
  }

  /**
   * Sends one dump request (NLM_F_DUMP) and collects the datagrams of its answer up to
   * NLMSG_DONE, handing each to `onDatagram` as it comes (a large table is never held whole),
   * bounded in count and time. Returns 0, or the errno of a refusal (an error instead of the
   * dump, e.g. ENOENT for a table that is not there). The kernel fills each datagram inside
   * `recv` without waiting for anything (no commit lock), so the calls are made on this thread,
   * yielding to the event loop every few datagrams: a read of a large table is thousands of
   * dumps, and a worker-thread hop per call cost more than the kernel's work on a loaded machine.
   */
  async dump(
    request: Buffer,
    options: { readonly timeoutMs: number; readonly maxDatagrams: number },
    onDatagram: (datagram: Buffer) => void,
  ): Promise<number> {
    if (this.closed) throw new NetlinkSocketError("send", osConstants.errno.EBADF, "socket closed");
    const seq = request.readUInt32LE(8);
    const sent = this.lib.sendSync(this.fd, request, request.length, 0);
    if (sent !== request.length) throw new NetlinkSocketError("send", koffi.errno(), "dump request");
    const deadline = Date.now() + options.timeoutMs;
    let datagrams = 0;
    this.setRecvTimeout(Math.min(options.timeoutMs, DUMP_RECV_TIMEOUT_MS));
    while (datagrams < options.maxDatagrams) {
      if (Date.now() >= deadline) break;
      if (datagrams % DUMP_YIELD_EVERY === DUMP_YIELD_EVERY - 1) await new Promise((r) => setImmediate(r));
      const n = this.lib.recvSync(this.fd, this.dumpBuffer, this.dumpBuffer.length, 0);
      if (n < 0) {
        const errno = koffi.errno();
        if (errno === osConstants.errno.EAGAIN || errno === osConstants.errno.EINTR) continue;
        throw new NetlinkSocketError("recv", errno);
      }
      const data = Buffer.from(this.dumpBuffer.subarray(0, n));
      let off = 0;
      let done = false;
      while (off + NLMSG_HDRLEN <= data.length) {
        const len = data.readUInt32LE(off);
        if (len < NLMSG_HDRLEN || off + len > data.length) break;
        const type = data.readUInt16LE(off + 4);
        if (data.readUInt32LE(off + 8) === seq) {
          if (type === NLMSG_DONE) done = true;
          else if (type === NLMSG_ERROR) {
            const errno = -data.readInt32LE(off + NLMSG_HDRLEN);
            if (errno !== 0) return errno;
            done = true;
          }
        }
        off += (len + 3) & ~3;
      }
      datagrams++;
      onDatagram(data);
      if (done) return 0;
    }
    throw new NetlinkTimeoutError(
      `no end of the dump from the kernel within ${options.timeoutMs} ms (${datagrams} datagrams)`,
    );
  }

  private setRecvTimeout(ms: number): void {
    const tv = Buffer.alloc(16);
    tv.writeBigInt64LE(BigInt(Math.floor(ms / 1000)), 0);
    tv.writeBigInt64LE(BigInt((ms % 1000) * 1000), 8);
    if (this.lib.setsockopt(this.fd, SOL_SOCKET, SO_RCVTIMEO, tv, 16) !== 0)
      throw new NetlinkSocketError("setsockopt", koffi.errno(), "SO_RCVTIMEO");
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.lib.close(this.fd);
  }
}

function createSocket(lib: Libc): number {
  const fd = lib.socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_NETFILTER);
  if (fd < 0) throw new NetlinkSocketError("socket", koffi.errno(), "AF_NETLINK, NETLINK_NETFILTER");
  return fd;
}

/**
 * Runs `body` with this thread in another network namespace and switches back before
 * returning. All of it is synchronous, so no other JavaScript (and no child process spawned
 * from it) runs in the borrowed namespace; a socket keeps the namespace it was created in.
 */
function inNetns<T>(lib: Libc, netns: string, body: () => T): T {
  if (!/^[A-Za-z0-9_.-]+$/.test(netns))
    throw new NetlinkSocketError(
      "setns",
      osConstants.errno.EINVAL,
      `bad namespace name ${JSON.stringify(netns)}`,
    );
  const own = openSync("/proc/thread-self/ns/net", "r");
  try {
    const target = openSync(`/run/netns/${netns}`, "r");
    try {
      if (lib.setns(target, CLONE_NEWNET) !== 0) throw new NetlinkSocketError("setns", koffi.errno(), netns);
    } finally {
      closeSync(target);
    }
    const back = (): void => {
      if (lib.setns(own, CLONE_NEWNET) !== 0) throw new NetlinkSocketError("setns", koffi.errno(), "back");
    };
    let result: T;
    try {
      result = body();
    } catch (error) {
      back();
      throw error;
    }
    back();
    return result;
  } finally {
    closeSync(own);
  }
}

/** The acks and errors in one datagram of replies. */
export function parseReplies(data: Buffer): NetlinkReply[] {
  const replies: NetlinkReply[] = [];
  let off = 0;
  while (off + NLMSG_HDRLEN <= data.length) {
    const len = data.readUInt32LE(off);
    if (len < NLMSG_HDRLEN || off + len > data.length) break;
    const type = data.readUInt16LE(off + 4);
    const flags = data.readUInt16LE(off + 6);
    if (type === NLMSG_ERROR && len >= NLMSG_HDRLEN + 4 + NLMSG_HDRLEN) {
      const errno = -data.readInt32LE(off + NLMSG_HDRLEN);
      const original = off + NLMSG_HDRLEN + 4;
      const seq = data.readUInt32LE(original + 8);
      let message: string | null = null;
      if ((flags & NLM_F_ACK_TLVS) !== 0) {
        // NETLINK_CAP_ACK: only the original header is echoed; the TLVs follow it.
        let a = original + NLMSG_HDRLEN;
        while (a + 4 <= off + len) {
          const alen = data.readUInt16LE(a);
          const atype = data.readUInt16LE(a + 2) & 0x3fff;
          if (alen < 4) break;
          // The other TLVs (offset, policy) are not needed to name the failing object.
          if (atype === NLMSGERR_ATTR_MSG)
            message = data.toString("utf8", a + 4, a + alen).replace(/\0+$/, "");
          a += (alen + 3) & ~3;
        }
      }
      replies.push({ seq, errno, message });
    }
    off += (len + 3) & ~3;
  }
  return replies;
}
