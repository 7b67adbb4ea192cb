/**
 * The nf_tables ruleset's generation (NFT_MSG_GETGEN): one small netlink message, whose answer
 * changes with every committed transaction, ours or anyone's, and not with packet counters.
 * nftables mode's web view keeps a reading while it stays the same; so does iptables mode's on
 * iptables-nft, whose rules are nf_tables objects too.
 */
import { constants as osConstants } from "node:os";
import { NetlinkSocket, NetlinkSocketError } from "./netlink.ts";

/** linux/netfilter/nfnetlink.h, nf_tables.h, netlink.h. */
const NFNL_SUBSYS_NFTABLES = 10;
const NFT_MSG_NEWGEN = 15;
const NFT_MSG_GETGEN = 16;
const NFTA_GEN_ID = 1;
const NLM_F_REQUEST = 0x1;
const NLM_F_ACK = 0x4;
const NLMSG_HDRLEN = 16;
const NFGEN_HDRLEN = 4;
const NLA_TYPE_MASK = 0x3fff;

/** NFT_MSG_GETGEN: a netlink header and an nfgenmsg (AF_UNSPEC, version 0, res_id 0). */
export function generationRequest(seq: number): Buffer {
  const b = Buffer.alloc(NLMSG_HDRLEN + NFGEN_HDRLEN);
  b.writeUInt32LE(b.length, 0);
  b.writeUInt16LE((NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_GETGEN, 4);
  b.writeUInt16LE(NLM_F_REQUEST | NLM_F_ACK, 6);
  b.writeUInt32LE(seq, 8);
  return b;
}

/** The generation id in the answer to {@link generationRequest}, if this datagram holds it. */
export function decodeGeneration(datagram: Buffer): number | undefined {
  let off = 0;
  while (off + NLMSG_HDRLEN <= datagram.length) {
    const len = datagram.readUInt32LE(off);
    if (len < NLMSG_HDRLEN || off + len > datagram.length) return undefined;
    if (datagram.readUInt16LE(off + 4) === ((NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_NEWGEN)) {
      let a = off + NLMSG_HDRLEN + NFGEN_HDRLEN;
      while (a + 4 <= off + len) {
        const alen = datagram.readUInt16LE(a);
        if (alen < 4) return undefined;
        if ((datagram.readUInt16LE(a + 2) & NLA_TYPE_MASK) === NFTA_GEN_ID && alen >= 8)
          return datagram.readUInt32BE(a + 4);
        a += (alen + 3) & ~3;
      }
    }
    off += (len + 3) & ~3;
  }
  return undefined;
}

/** Asks `socket` for the generation (the nftables reader's socket, or one of its own). */
export async function askGeneration(socket: NetlinkSocket, seq: number, timeoutMs: number): Promise<number> {
  let id: number | undefined;
  const errno = await socket.dump(generationRequest(seq), { timeoutMs, maxDatagrams: 16 }, (d) => {
    id ??= decodeGeneration(d);
  });
  if (errno !== 0) throw new NetlinkSocketError("dump", errno, "generation");
  if (id === undefined)
    throw new NetlinkSocketError("dump", osConstants.errno.EPROTO, "no generation in the answer");
  return id;
}

/** The ruleset's generation now, in `netns` when given. */
export async function readNftGeneration(netns?: string, timeoutMs = 10_000): Promise<number> {
  const socket = NetlinkSocket.open(netns === undefined ? {} : { netns });
  try {
    return await askGeneration(socket, 1, timeoutMs);
  } finally {
    socket.close();
  }
}
