/**
 * The nf_tables netlink protocol's numbers that the writer (./encode.ts) and both readers
 * (./decode.ts, ./listing.ts) share: linux/netfilter/nfnetlink.h, nf_tables.h and netlink.h.
 */
export const NFNL_SUBSYS_NFTABLES = 10;
export const NFNL_MSG_BATCH_BEGIN = 16;
export const NFNL_MSG_BATCH_END = 17;
export const NLM_F_DUMP = 0x300;
export const NLMSG_HDRLEN = 16;
/** struct nfgenmsg, after the netlink header. */
export const NFGEN_HDRLEN = 4;
/** enum nf_tables_msg_types. */
export const MSG = {
  newTable: 0,
  getTable: 1,
  newChain: 3,
  getChain: 4,
  delChain: 5,
  newRule: 6,
  getRule: 7,
  delRule: 8,
  newSet: 9,
  getSet: 10,
  delSet: 11,
  newSetElem: 12,
  getSetElem: 13,
  delSetElem: 14,
} as const;
/** The nfgenmsg family of the tables this proxy writes. */
export const NFPROTO = { ip: 2, ip6: 10 } as const;

/** Attribute numbers (enum nft_*_attributes), by the object they belong to. */
export const TABLE_A = { name: 1, flags: 2, userdata: 6 } as const;
export const CHAIN_A = { table: 1, handle: 2, name: 3, hook: 4, policy: 5, type: 7, userdata: 12 } as const;
export const HOOK_A = { num: 1, priority: 2 } as const;
export const RULE_A = { table: 1, chain: 2, handle: 3, expressions: 4, userdata: 7 } as const;
export const EXPR_A = { name: 1, data: 2 } as const;
export const SET_A = {
  table: 1,
  name: 2,
  flags: 3,
  keyType: 4,
  keyLen: 5,
  dataType: 6,
  dataLen: 7,
  desc: 9,
  id: 10,
  timeout: 11,
  userdata: 13,
} as const;
export const ELEMS_A = { table: 1, set: 2, elements: 3, setId: 4 } as const;
export const ELEM_A = { key: 1, data: 2, flags: 3, userdata: 6 } as const;
export const VERDICT_A = { code: 1, chain: 2 } as const;
export const COUNTER_A = { bytes: 1, packets: 2 } as const;
