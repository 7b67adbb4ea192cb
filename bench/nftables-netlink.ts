/**
 * The nftables netlink writer (issue 12): a full sync of S Services × E endpoints by our writer
 * (render + plan + encode + send, `NftablesWriter` over `NetlinkNftablesKernel`) against, in the
 * same run and each in a throwaway network namespace of its own, bare netlink (the same
 * transactions, encoded beforehand, sent on a plain socket: the kernel's own cost) and bare
 * `nft -f` of the same transactions; then one Service added to that table the same three ways;
 * and, with `--chunks`, the bare-netlink full sync cut at several Services-per-transaction sizes.
 */
import { performance } from "node:perf_hooks";
import { pino } from "pino";
import { encodeBatch } from "../src/backends/nftables/netlink/encode.ts";
import { NetlinkNftablesKernel, readTableOverNetlink } from "../src/backends/nftables/netlink-kernel.ts";
import { NftablesWriter } from "../src/backends/nftables/proxier.ts";
import { renderNftables } from "../src/backends/nftables/render.ts";
import { upstreamTestSettings } from "../src/backends/nftables/settings.ts";
import {
  planChunkedFullSync,
  planFullSync,
  planPartialSync,
  type NftTransaction,
} from "../src/backends/nftables/transactions.ts";
import { NetlinkSocket } from "../src/kernel/netlink.ts";
import { Nft } from "../src/kernel/nft.ts";
import { realClock } from "../src/proxy/clock.ts";
import type { Endpoint, ProxyState, ServicePort } from "../src/proxy/types.ts";
import { endpoint, proxyState, servicePort } from "../test/support/iptables-builders.ts";
import { runner, withBenchNetns } from "./netns.ts";

export interface NetlinkBenchOptions {
  readonly sizes: ReadonlyArray<{ readonly services: number; readonly endpoints: number }>;
  readonly servicesPerTransaction: number;
  /** Also time bare netlink full syncs at these Services-per-transaction sizes (first size only). */
  readonly chunks: readonly number[];
  readonly withNft: boolean;
}

export interface NetlinkRow {
  readonly services: number;
  readonly endpoints: number;
  readonly transactions: number;
  readonly oursS: number;
  readonly bareNetlinkS: number;
  readonly bareNftS: number | null;
  readonly addOneOursS: number;
  readonly addOneBareNetlinkS: number;
  readonly addOneBareNftS: number | null;
  /** Then one endpoint of one Service replaced (a rollout step), the same three ways. */
  readonly changeOneOursS: number;
  readonly changeOneBareNetlinkS: number;
  readonly changeOneBareNftS: number | null;
  readonly peakRssMB: number;
}

export interface ChunkRow {
  readonly services: number;
  readonly endpoints: number;
  readonly servicesPerTransaction: number;
  readonly bareNetlinkS: number;
}

const settings = upstreamTestSettings("IPv4");
const log = pino({ level: "silent" });
const seconds = (start: number): number => (performance.now() - start) / 1000;

/** `changed`: the index of a Service whose first endpoint is replaced by a new pod IP. */
function scaleState(services: number, endpoints: number, extra = 0, changed = -1): ProxyState {
  const entries: Array<[ServicePort, Endpoint[]]> = [];
  for (let i = 0; i < services + extra; i++) {
    const sp = servicePort({
      namespace: `ns${i % 20}`,
      name: `svc${i}`,
      portName: "http",
      clusterIP: `172.${16 + (i >> 16)}.${(i >> 8) & 255}.${i & 255}`,
      nodePort: i % 2 === 0 ? 30000 + (i % 30000) : 0,
    });
    const eps: Endpoint[] = [];
    for (let j = 0; j < endpoints; j++) {
      const n = i * endpoints + j;
      const ip =
        i === changed && j === 0
          ? `10.250.${(i >> 8) & 255}.${i & 255}`
          : `10.${(n >> 16) & 255}.${(n >> 8) & 255}.${n & 255}`;
      eps.push(endpoint(ip, 8080));
    }
    entries.push([sp, eps]);
  }
  return proxyState(entries);
}

function fullTransactions(state: ProxyState, perTransaction: number): readonly NftTransaction[] {
  const ruleset = renderNftables({ state, settings });
  const options = { resetBaseChains: true, servicesPerTransaction: perTransaction };
  const chunked = planChunkedFullSync(ruleset, null, null, true, options);
  return chunked?.transactions ?? [planFullSync(ruleset, null, options)];
}

/** What one namespace's bare-netlink exchanges share: sequence numbers, the sets created. */
interface Session {
  next: number;
  readonly types: Map<string, string>;
}

/** Sends pre-encoded batches on a plain socket in `netns`; seconds spent in the kernel exchange. */
async function bareNetlink(netns: string, transactions: readonly NftTransaction[], seq: Session) {
  const types = seq.types;
  const batches = transactions.map((t) => {
    for (const c of t.commands)
      if (c.what === "container" && c.verb === "add") types.set(c.container.name, c.container.type);
    const b = encodeBatch(t.commands, {
      family: "ip",
      table: "kube-proxy",
      firstSeq: seq.next,
      ifIndex: () => 1,
      containerType: (n) => types.get(n),
    });
    seq.next += b.messages;
    return b;
  });
  const socket = NetlinkSocket.open({ netns });
  try {
    const start = performance.now();
    for (const b of batches) {
      const replies = await socket.transact(b.bytes, {
        lastSeq: b.lastSeq,
        timeoutMs: 600_000,
        maxReplies: b.messages + 1,
      });
      const failed = replies.find((r) => r.errno !== 0);
      if (failed !== undefined)
        throw new Error(`bare netlink: ${b.describe(failed.seq)} failed: errno ${failed.errno}`);
    }
    return seconds(start);
  } finally {
    socket.close();
  }
}

async function bareNft(netns: string, transactions: readonly NftTransaction[]): Promise<number> {
  const nft = new Nft(runner, netns);
  const start = performance.now();
  for (const t of transactions) await nft.apply(t.payload, 1_800_000);
  return seconds(start);
}

export async function runNetlinkBenchmark(options: NetlinkBenchOptions, progress: (line: string) => void) {
  const rows: NetlinkRow[] = [];
  const chunkRows: ChunkRow[] = [];
  for (const { services, endpoints } of options.sizes) {
    progress(`nftables netlink: ${services} x ${endpoints}`);
    const state = scaleState(services, endpoints);
    const grown = scaleState(services, endpoints, 1);
    const row = await withBenchNetns((oursNs) =>
      withBenchNetns((bareNs) =>
        withBenchNetns(async (nftNs) => {
          const kernel = new NetlinkNftablesKernel({ family: "ip", netns: oursNs });
          const writer = new NftablesWriter({
            kernel: {
              apply: (t) => kernel.apply(t),
              read: () => readTableOverNetlink({ family: "ip", netns: oursNs }),
            },
            settings,
            clock: realClock,
            log,
            servicesPerTransaction: options.servicesPerTransaction,
          });
          try {
            let start = performance.now();
            await writer.write({
              state,
              fullSync: true,
              changedServices: new Set(),
              onTransaction: () => undefined,
            });
            const oursS = seconds(start);
            const transactions = fullTransactions(state, options.servicesPerTransaction);
            const seq: Session = { next: 1, types: new Map() };
            const bareNetlinkS = await bareNetlink(bareNs, transactions, seq);
            const bareNftS = options.withNft ? await bareNft(nftNs, transactions) : null;

            const before = planChunkedFullSync(renderNftables({ state, settings }), null, null, true, {
              resetBaseChains: true,
              servicesPerTransaction: options.servicesPerTransaction,
            })!.after;
            const added = new Set([`ns${services % 20}/svc${services}`]);
            const addOne = planPartialSync(
              renderNftables({ state: grown, settings }),
              before,
              added,
              new Set(),
            );
            start = performance.now();
            await writer.write({
              state: grown,
              fullSync: false,
              changedServices: added,
              onTransaction: () => undefined,
            });
            const addOneOursS = seconds(start);
            const addOneBareNetlinkS = await bareNetlink(bareNs, [addOne], seq);
            const addOneBareNftS = options.withNft ? await bareNft(nftNs, [addOne]) : null;

            const middle = Math.floor(services / 2);
            const rolled = scaleState(services, endpoints, 1, middle);
            const changedKey = new Set([`ns${middle % 20}/svc${middle}`]);
            const changeOne = planPartialSync(
              renderNftables({ state: rolled, settings }),
              addOne.after,
              changedKey,
              new Set(),
            );
            start = performance.now();
            await writer.write({
              state: rolled,
              fullSync: false,
              changedServices: changedKey,
              onTransaction: () => undefined,
            });
            const changeOneOursS = seconds(start);
            const changeOneBareNetlinkS = await bareNetlink(bareNs, [changeOne], seq);
            const changeOneBareNftS = options.withNft ? await bareNft(nftNs, [changeOne]) : null;
            return {
              services,
              endpoints,
              transactions: transactions.length,
              oursS,
              bareNetlinkS,
              bareNftS,
              addOneOursS,
              addOneBareNetlinkS,
              addOneBareNftS,
              changeOneOursS,
              changeOneBareNetlinkS,
              changeOneBareNftS,
              peakRssMB: Math.round(process.resourceUsage().maxRSS / 1024),
            };
          } finally {
            kernel.close();
          }
        }),
      ),
    );
    rows.push(row);
  }
  const first = options.sizes[0];
  if (first !== undefined) {
    const state = scaleState(first.services, first.endpoints);
    for (const perTransaction of options.chunks) {
      progress(
        `nftables netlink: ${first.services} x ${first.endpoints}, ${perTransaction} Services per transaction`,
      );
      const bareNetlinkS = await withBenchNetns((ns) =>
        bareNetlink(ns, fullTransactions(state, perTransaction), { next: 1, types: new Map() }),
      );
      chunkRows.push({ ...first, servicesPerTransaction: perTransaction, bareNetlinkS });
    }
  }
  return { rows, chunkRows };
}

const f = (s: number): string => s.toFixed(2);

export function netlinkTable(rows: readonly NetlinkRow[]): string {
  const lines = [
    "| Services × endpoints | transactions | ours full (s) | bare netlink (s) | ours / bare netlink | bare nft -f (s) | nft / ours | add one: ours (s) | add one: bare netlink (s) | add one: bare nft -f (s) | peak RSS (MB) |",
    "|---|---|---|---|---|---|---|---|---|---|---|",
  ];
  for (const r of rows)
    lines.push(
      `| ${r.services} × ${r.endpoints} | ${r.transactions} | ${f(r.oursS)} | ${f(r.bareNetlinkS)} | ${(r.oursS / r.bareNetlinkS).toFixed(2)}× | ${r.bareNftS === null ? "—" : f(r.bareNftS)} | ${r.bareNftS === null ? "—" : (r.bareNftS / r.oursS).toFixed(2) + "×"} | ${f(r.addOneOursS)} | ${f(r.addOneBareNetlinkS)} | ${r.addOneBareNftS === null ? "—" : f(r.addOneBareNftS)} | ${r.peakRssMB} |`,
    );
  return lines.join("\n");
}

export function chunkTable(rows: readonly ChunkRow[]): string {
  if (rows.length === 0) return "";
  const lines = [
    "| Services × endpoints | Services per transaction | bare netlink full sync (s) |",
    "|---|---|---|",
  ];
  for (const r of rows)
    lines.push(`| ${r.services} × ${r.endpoints} | ${r.servicesPerTransaction} | ${f(r.bareNetlinkS)} |`);
  return lines.join("\n");
}
