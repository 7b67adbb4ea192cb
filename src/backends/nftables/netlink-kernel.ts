/**
 * The netlink writer's kernel side: each transaction (the same typed commands `nft -f` would get)
 * encoded by ./netlink/encode.ts and sent as one batch on a NETLINK_NETFILTER socket. A refused
 * batch changes nothing (nf_tables aborts the whole transaction); the error names the object
 * behind every failing message ("add chain service-…: File exists").
 */
import { randomBytes } from "node:crypto";
import { constants as osConstants } from "node:os";
import { KubeProxyError } from "../../errors.ts";
import {
  errnoName,
  NetlinkSocket,
  NetlinkSocketError,
  type NetlinkSocketOptions,
} from "../../kernel/netlink.ts";
import { dumpRequest, TableDumpDecoder, type TableDump } from "./netlink/decode.ts";
import { encodeBatch, type EncodedBatch } from "./netlink/encode.ts";
import { BatchWriter } from "./netlink/wire.ts";
import type { IfIndexResolver } from "./netlink/rule.ts";
import { isAffinitySetName, KUBE_PROXY_TABLE } from "./names.ts";
import {
  transactionCommands,
  transactionSize,
  type NftCommand,
  type NftTransaction,
} from "./transactions.ts";

/** The usual meaning of the errnos nf_tables returns (what nft prints). */
const ERRNO_TEXT: Readonly<Record<number, string>> = {
  [osConstants.errno.EEXIST]: "File exists",
  [osConstants.errno.ENOENT]: "No such file or directory",
  [osConstants.errno.EBUSY]: "Device or resource busy",
  [osConstants.errno.EINVAL]: "Invalid argument",
  [osConstants.errno.EPERM]: "Operation not permitted",
  [osConstants.errno.EOPNOTSUPP]: "Operation not supported",
  [osConstants.errno.ENOSPC]: "No space left on device",
  [osConstants.errno.ELOOP]: "Too many levels of symbolic links",
  [osConstants.errno.ENOMEM]: "Cannot allocate memory",
  [osConstants.errno.EMLINK]: "Too many links",
};

export interface FailedObject {
  /** The command behind the failing message (`add chain service-…`). */
  readonly object: string;
  readonly errno: number;
  readonly kernelMessage: string | null;
}

/** The kernel refused a netlink batch: nothing of it was applied. */
export class NftNetlinkTransactionError extends KubeProxyError {
  readonly code = "KPT_NFT_NETLINK";

  constructor(readonly failures: readonly FailedObject[]) {
    const shown = failures.slice(0, 5).map((f) => {
      const text = ERRNO_TEXT[f.errno] ?? errnoName(f.errno);
      const extra = f.kernelMessage === null ? "" : ` (${f.kernelMessage})`;
      return `${f.object}: ${text}${extra}`;
    });
    const more = failures.length > 5 ? `; and ${failures.length - 5} more` : "";
    super(`the kernel refused the netlink transaction: ${shown.join("; ")}${more}`);
  }
}

/**
 * Tags for the anonymous sets of successive batches (`EncodeOptions.anonymousSetTag`): seven
 * random base-36 characters for this writer, then the batch's number. Unique in the table as long
 * as no other writer drew the same seven characters (1 in 78 billion) and added sets to it.
 */
export function anonymousSetTags(): () => string {
  const writer = (randomBytes(5).readUIntBE(0, 5) % 36 ** 7).toString(36).padStart(7, "0");
  let batch = 0;
  return () => `${writer}${(++batch).toString(36)}`;
}

export interface NetlinkKernelOptions extends NetlinkSocketOptions {
  readonly family: "ip" | "ip6";
  /** Bound on waiting for the kernel's answer to one batch. */
  readonly timeoutMs?: number;
}

export class NetlinkNftablesKernel {
  private socket: NetlinkSocket | null = null;
  private seq = 1;
  /** Types of the sets and maps this writer created (partial syncs add elements without them). */
  private readonly containerTypes = new Map<string, string>();
  private readonly nextTag = anonymousSetTags();

  constructor(private readonly options: NetlinkKernelOptions) {}

  private open(): NetlinkSocket {
    this.socket ??= NetlinkSocket.open(this.options.netns === undefined ? {} : { netns: this.options.netns });
    return this.socket;
  }

  async apply(transaction: NftTransaction): Promise<void> {
    await this.applyAll([transaction]);
  }

  /**
   * The transactions in order, each its own batch, stopping at the first the kernel refuses. The
   * next batch is encoded while the kernel works on the current one (the send runs on a worker
   * thread), and sent only once the current one was accepted.
   */
  async applyAll(
    transactions: readonly NftTransaction[],
    onSend?: (transaction: NftTransaction) => void,
  ): Promise<void> {
    const todo = transactions.filter((t) => transactionSize(t) > 0);
    if (todo.length === 0) return;
    const socket = this.open();
    // Set types as they will be once the batches before the one being encoded are applied.
    const types = new Map(this.containerTypes);
    let seq = this.seq;
    // One batch is sent while the next is encoded: two writers, taken in turn, their buffers
    // reused from batch to batch (and dropped with this call).
    const writers = [new BatchWriter(), new BatchWriter()] as const;
    let turn = 0;
    const prepare = (transaction: NftTransaction): Prepared => {
      // The container commands, for the set types of the batches after this one.
      const containers: NftCommand[] = [];
      const commands = function* (): Generator<NftCommand> {
        for (const c of transactionCommands(transaction)) {
          if (c.what === "container") containers.push(c);
          yield c;
        }
      };
      const batch = encodeBatch(commands(), {
        writer: writers[turn++ % 2]!,
        family: this.options.family,
        table: KUBE_PROXY_TABLE,
        firstSeq: seq,
        ifIndex: (name) => socket.ifIndex(name),
        containerType: (name) => types.get(name),
        anonymousSetTag: this.nextTag(),
      });
      for (const c of containers) remember(types, c);
      seq = (batch.firstSeq + batch.messages) % 0x7fffffff || 1;
      return { batch, types: new Map(types), nextSeq: seq };
    };
    let next: Prepared = prepare(todo[0]!);
    for (let k = 0; k < todo.length; k++) {
      const current = next;
      this.seq = current.nextSeq;
      onSend?.(todo[k]!);
      const sending = this.exchange(socket, current.batch, todo[k]!);
      let encodeError: unknown = null;
      if (k + 1 < todo.length) {
        try {
          next = prepare(todo[k + 1]!);
        } catch (error) {
          encodeError = error;
        }
      }
      await sending;
      this.containerTypes.clear();
      for (const [name, type] of current.types) this.containerTypes.set(name, type);
      if (encodeError !== null) {
        onSend?.(todo[k + 1]!);
        throw encodeError;
      }
    }
  }

  private async exchange(
    socket: NetlinkSocket,
    batch: EncodedBatch,
    transaction: NftTransaction,
  ): Promise<void> {
    const replies = await socket.transact(batch.bytes, {
      lastSeq: batch.lastSeq,
      timeoutMs: this.options.timeoutMs ?? 600_000,
      maxReplies: batch.messages + 1,
    });
    const refused = replies.filter((r) => r.errno !== 0);
    if (refused.length === 0) return;
    // Listed again (a chunk's commands are not kept while the kernel applies them).
    const commands = transaction.commands;
    const failures = refused.map((r) => ({
      object: batch.describe(r.seq, commands) ?? `message ${r.seq}`,
      errno: r.errno,
      kernelMessage: r.message,
    }));
    throw new NftNetlinkTransactionError(failures);
  }

  close(): void {
    this.socket?.close();
    this.socket = null;
  }
}

interface Prepared {
  readonly batch: EncodedBatch;
  /** The set types once this batch is applied. */
  readonly types: ReadonlyMap<string, string>;
  readonly nextSeq: number;
}

function remember(types: Map<string, string>, c: NftCommand): void {
  if (c.what !== "container") return;
  if (c.verb === "add") types.set(c.container.name, c.container.type);
  else if (c.verb === "delete") types.delete(c.name);
}

/** Reading bounds: a 10,000-Service table is tens of megabytes in a few thousand datagrams. */
const READ_TIMEOUT_MS = 120_000;
const READ_MAX_DATAGRAMS = 1_000_000;

export interface TableRead {
  readonly dump: TableDump;
  /** Interface indexes as the kernel that was read numbers them (what `iif NAME` holds). */
  readonly ifIndex: IfIndexResolver;
}

/**
 * Reads one family's `kube-proxy` table over netlink, on a socket of its own (a write may be
 * using the writer's): the family's tables, then our table's sets, the elements of every set
 * but the affinity sets (the kernel fills those), its chains and its rules, each one NLM_F_DUMP
 * request decoded as it arrives (./netlink/decode.ts).
 */
export async function readTableOverNetlink(
  options: NetlinkSocketOptions & { readonly family: "ip" | "ip6" },
): Promise<TableRead> {
  const socket = NetlinkSocket.open(options.netns === undefined ? {} : { netns: options.netns });
  try {
    const decoder = new TableDumpDecoder(KUBE_PROXY_TABLE);
    let seq = 1;
    const dump = async (
      what: Parameters<typeof dumpRequest>[0],
      sink: (datagram: Buffer) => void,
      set?: string,
    ): Promise<void> => {
      const request = dumpRequest(what, options.family, seq++, {
        table: KUBE_PROXY_TABLE,
        ...(set === undefined ? {} : { set }),
      });
      const errno = await socket.dump(
        request,
        { timeoutMs: READ_TIMEOUT_MS, maxDatagrams: READ_MAX_DATAGRAMS },
        sink,
      );
      // The table (or a set) went away between two dumps: what was read stands.
      if (errno !== 0 && errno !== osConstants.errno.ENOENT)
        throw new NetlinkSocketError("dump", errno, `${what} of table ${options.family} ${KUBE_PROXY_TABLE}`);
    };
    await dump("table", (d) => decoder.tables(d));
    if (decoder.tableExists) {
      await dump("set", (d) => decoder.sets(d));
      for (const set of decoder.setsToRead(isAffinitySetName))
        await dump("setElem", (d) => decoder.setElements(set, d), set);
      await dump("chain", (d) => decoder.chainList(d));
      await dump("rule", (d) => decoder.ruleList(d));
    }
    return { dump: decoder.finish(), ifIndex: (name) => socket.ifIndex(name) };
  } finally {
    socket.close();
  }
}
