/**
 * The see-inside tools' live read of our tables over netlink (the decoding is
 * ./netlink/listing.ts's): the ruleset's generation (NFT_MSG_GETGEN, which every committed
 * transaction changes, so a reader can keep what it parsed until it moves), every table by
 * name, and our `kube-proxy` tables — whole, or only what one Service's explanation needs: the
 * dispatch maps and sets, the `services` chain, and the chains the Service's map elements send
 * packets to, followed through their jumps, gotos and numgen maps.
 */
import { constants as osConstants } from "node:os";
import type { NftTable, NftTableFamily } from "../../netfilter/nft/model.ts";
import { NetlinkSocket, NetlinkSocketError } from "../../kernel/netlink.ts";
import { askGeneration } from "../../kernel/nft-generation.ts";
import { listingRequest, ListingDecoder, tablesRequest, type ListingRequest } from "./netlink/listing.ts";
import {
  CLUSTER_IPS_SET,
  FIREWALL_IPS_MAP,
  KUBE_PROXY_TABLE,
  NO_ENDPOINT_NODEPORTS_MAP,
  NO_ENDPOINT_SERVICES_MAP,
  NODEPORT_IPS_SET,
  SERVICE_IPS_MAP,
  SERVICE_NODEPORTS_MAP,
} from "./names.ts";

const READ_TIMEOUT_MS = 120_000;
const READ_MAX_DATAGRAMS = 1_000_000;
/** A walk through one Service's chains stops here (a Service has a few dozen). */
const MAX_SERVICE_CHAINS = 10_000;
export const DISPATCH_SETS = [
  CLUSTER_IPS_SET,
  NODEPORT_IPS_SET,
  FIREWALL_IPS_MAP,
  SERVICE_IPS_MAP,
  SERVICE_NODEPORTS_MAP,
  NO_ENDPOINT_SERVICES_MAP,
  NO_ENDPOINT_NODEPORTS_MAP,
];
const SERVICES_CHAIN = "services";

export interface NetlinkReading {
  /** The generation the read started at: a later read at the same generation would find the same. */
  readonly generation: number;
  /** Our tables (ip first). */
  readonly tables: readonly NftTable[];
  /** Every other table, by family and name. */
  readonly others: readonly { readonly family: NftTableFamily; readonly name: string }[];
}

class Reader {
  private seq = 1;

  constructor(private readonly socket: NetlinkSocket) {}

  /** Sends one request and hands each datagram of the answer on; false when the kernel said ENOENT. */
  async ask(
    request: (seq: number) => Buffer,
    sink: (datagram: Buffer) => void,
    what: string,
  ): Promise<boolean> {
    const errno = await this.socket.dump(
      request(this.seq++),
      { timeoutMs: READ_TIMEOUT_MS, maxDatagrams: READ_MAX_DATAGRAMS },
      sink,
    );
    if (errno === osConstants.errno.ENOENT) return false;
    if (errno !== 0) throw new NetlinkSocketError("dump", errno, what);
    return true;
  }

  generation(): Promise<number> {
    return askGeneration(this.socket, this.seq++, READ_TIMEOUT_MS);
  }

  table(decoder: ListingDecoder, family: "ip" | "ip6", r: ListingRequest): Promise<boolean> {
    const what = `${r.what} of table ${family} ${KUBE_PROXY_TABLE}`;
    const request = (seq: number): Buffer => listingRequest(family, KUBE_PROXY_TABLE, r, seq);
    switch (r.what) {
      case "sets":
      case "set":
        return this.ask(request, (d) => decoder.sets(d), what);
      case "elements":
        return this.ask(request, (d) => decoder.setElements(r.set, d), what);
      case "chains":
      case "chain":
        return this.ask(request, (d) => decoder.chainList(d), what);
      case "rules":
      case "chainRules":
        return this.ask(request, (d) => decoder.ruleList(d), what);
    }
  }
}

async function withSocket<T>(
  netns: string | undefined,
  body: (r: Reader, s: NetlinkSocket) => Promise<T>,
): Promise<T> {
  const socket = NetlinkSocket.open(netns === undefined ? {} : { netns });
  try {
    return await body(new Reader(socket), socket);
  } finally {
    socket.close();
  }
}

/** The ruleset's generation now. */
export function readGeneration(netns?: string): Promise<number> {
  return withSocket(netns, (r) => r.generation());
}

export interface ServiceName {
  readonly namespace: string;
  readonly name: string;
}

/**
 * Every table of every family, by name: one NFT_MSG_GETTABLE dump, which the kernel answers
 * without walking any table's contents. `nft list tables` (nftables 1.0.6) fetches its whole
 * cache first — sets, elements, chains and rules — which at 30,000 Services runs past 30 s of
 * CPU; the monitor asks every sync period (bench/README.md, the scale lab's p99).
 */
export function listTablesOverNetlink(
  netns?: string,
): Promise<{ readonly family: NftTableFamily; readonly name: string }[]> {
  return withSocket(netns, async (reader) => {
    const listed = new ListingDecoder("ip", KUBE_PROXY_TABLE, () => null);
    const tables: { family: NftTableFamily; name: string }[] = [];
    await reader.ask(tablesRequest, (d) => tables.push(...listed.tables(d)), "tables");
    return tables;
  });
}

/** What to read of our tables. */
export type ListingPart =
  | { readonly part: "all" }
  /** The dispatch sets and maps with their elements, no chain: the web view's list of Services. */
  | { readonly part: "dispatch" }
  /** What explaining one Service needs. */
  | { readonly part: "service"; readonly service: ServiceName }
  /**
   * These chains (with their rules and the sets their rules name, elements included) and these
   * sets, of one family's table: a packet's trace reads what it passes, round by round.
   */
  | {
      readonly part: "named";
      readonly family: "ip" | "ip6";
      readonly chains: readonly string[];
      readonly sets: readonly string[];
    };

const MAPS_WITH_TARGETS = [SERVICE_IPS_MAP, SERVICE_NODEPORTS_MAP, FIREWALL_IPS_MAP];
const MAPS_WITH_COMMENTS = [NO_ENDPOINT_SERVICES_MAP, NO_ENDPOINT_NODEPORTS_MAP];

/** Reads one family's table: whole, its dispatch sets only, or only what explaining a Service needs. */
async function readOurTable(
  reader: Reader,
  socket: NetlinkSocket,
  family: "ip" | "ip6",
  tablesDatagrams: readonly Buffer[],
  what: ListingPart,
): Promise<NftTable | null> {
  const decoder = new ListingDecoder(family, KUBE_PROXY_TABLE, (i) => socket.ifName(i));
  for (const d of tablesDatagrams) decoder.tables(d);
  const ask = (r: ListingRequest): Promise<boolean> => reader.table(decoder, family, r);
  if (what.part === "all") {
    if (!(await ask({ what: "sets" }))) return decoder.finish();
    for (const set of decoder.setNames()) await ask({ what: "elements", set });
    await ask({ what: "chains" });
    await ask({ what: "rules" });
    return decoder.finish();
  }
  if (what.part === "named") {
    const setsRead = new Set<string>();
    const readSet = async (set: string): Promise<void> => {
      if (setsRead.has(set)) return;
      setsRead.add(set);
      if (await ask({ what: "set", set })) await ask({ what: "elements", set });
    };
    for (const set of what.sets) await readSet(set);
    for (const chain of what.chains) {
      if (!(await ask({ what: "chain", chain }))) continue;
      await ask({ what: "chainRules", chain });
      for (const set of decoder.setsOf(chain)) await readSet(set);
    }
    return decoder.finish();
  }
  if (what.part === "dispatch") {
    for (const set of DISPATCH_SETS)
      if (await ask({ what: "set", set })) await ask({ what: "elements", set });
    return decoder.finish();
  }
  const service = what.service;
  // Of the maps every Service has elements in, only this Service's are decoded (and kept).
  const own = `-${service.namespace}/${service.name}/`;
  const base = `${service.namespace}/${service.name}`;
  for (const [maps, holding] of [
    [MAPS_WITH_TARGETS, own],
    [MAPS_WITH_COMMENTS, base],
  ] as const)
    for (const set of maps)
      if (await ask({ what: "set", set }))
        await ask({ what: "elements", set, holding: [Buffer.from(holding)] });
  for (const map of MAPS_WITH_TARGETS)
    decoder.pruneElements(
      map,
      (e) => e.verdict !== null && "chain" in e.verdict && e.verdict.chain.includes(own),
    );
  for (const map of MAPS_WITH_COMMENTS)
    decoder.pruneElements(map, (e) => e.comment === base || e.comment?.startsWith(`${base}:`) === true);
  // Of the cluster IPs, the Service's own (its frontends' addresses).
  const addressLength = family === "ip" ? 4 : 16;
  const addresses = [
    ...new Set(
      [...MAPS_WITH_TARGETS, ...MAPS_WITH_COMMENTS].flatMap((m) => decoder.elementKeys(m, addressLength)),
    ),
  ];
  if (await ask({ what: "set", set: CLUSTER_IPS_SET }))
    await ask({
      what: "elements",
      set: CLUSTER_IPS_SET,
      holding: addresses.map((a) => Buffer.from(a, "hex")),
    });
  decoder.pruneElements(CLUSTER_IPS_SET, (e) => addresses.includes(e.key.toString("hex")));
  if (await ask({ what: "set", set: NODEPORT_IPS_SET }))
    await ask({ what: "elements", set: NODEPORT_IPS_SET });
  const queue = [SERVICES_CHAIN, ...MAPS_WITH_TARGETS.flatMap((m) => decoder.elementTargets(m))];
  const seen = new Set<string>();
  const setsRead = new Set(DISPATCH_SETS);
  while (queue.length > 0 && seen.size < MAX_SERVICE_CHAINS) {
    const chain = queue.shift()!;
    if (seen.has(chain)) continue;
    seen.add(chain);
    if (!(await ask({ what: "chain", chain }))) continue;
    await ask({ what: "chainRules", chain });
    for (const set of decoder.setsOf(chain)) {
      if (setsRead.has(set)) continue;
      setsRead.add(set);
      if (await ask({ what: "set", set })) await ask({ what: "elements", set });
    }
    // The fixed chains (services, mark-for-masquerade…) are not followed: only the Service's own.
    if (chain !== SERVICES_CHAIN)
      for (const t of decoder.targets(chain))
        if (!seen.has(t) && t.includes(`-${service.namespace}/${service.name}/`)) queue.push(t);
  }
  return decoder.finish();
}

/**
 * Our tables as the kernel holds them now, over netlink, and the names of all other tables:
 * whole, or only a part of them (`what`). A whole read of 10,000 Services costs the kernel
 * itself tens of seconds (each datagram of a dump walks the table from its start), a part of
 * it milliseconds.
 */
export async function readTablesOverNetlink(
  options: { readonly netns?: string; readonly what?: ListingPart } = {},
): Promise<NetlinkReading> {
  return withSocket(options.netns, async (reader, socket) => {
    const generation = await reader.generation();
    const datagrams: Buffer[] = [];
    await reader.ask(tablesRequest, (d) => datagrams.push(d), "tables");
    const listed = new ListingDecoder("ip", KUBE_PROXY_TABLE, () => null);
    const all = datagrams.flatMap((d) => listed.tables(d));
    const tables: NftTable[] = [];
    for (const family of ["ip", "ip6"] as const) {
      if (!all.some((t) => t.family === family && t.name === KUBE_PROXY_TABLE)) continue;
      if (options.what?.part === "named" && options.what.family !== family) continue;
      const table = await readOurTable(reader, socket, family, datagrams, options.what ?? { part: "all" });
      if (table !== null) tables.push(table);
    }
    const others = all.filter(
      (t) => !(t.name === KUBE_PROXY_TABLE && (t.family === "ip" || t.family === "ip6")),
    );
    return { generation, tables, others };
  });
}
