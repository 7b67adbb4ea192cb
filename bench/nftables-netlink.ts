/**
 * The nftables netlink writer (issue 12): a full sync of S Services × E endpoints by our writer
 * (render + plan + encode + send, `NftablesWriter` over `NetlinkNftablesKernel`) against, in the
 * same run and each in a throwaway network namespace of its own, bare netlink (exactly the
 * transactions our writer sent, encoded beforehand, sent on a plain socket: the kernel's own
 * cost) and bare `nft -f` of the same transactions; then two partial syncs on that table the
 * same three ways (one Service added, one endpoint of one Service replaced); then, on the bare
 * table, the kernel's cost of small probe transactions (where a small transaction's time goes at
 * that size); with `chunks`, the bare-netlink full sync of every size cut by several
 * Services-per-transaction policies (fixed sizes, or the writer's adaptive one); with `rss`, the
 * compiled daemon's peak RSS (VmHWM) in nftables mode on the same cluster.
 */
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { setTimeout as sleep } from "node:timers/promises";
import { performance } from "node:perf_hooks";
import { pino } from "pino";
import { stringify } from "yaml";
import { MARK_MASQ_CHAIN } from "../src/backends/nftables/names.ts";
import { encodeBatch } from "../src/backends/nftables/netlink/encode.ts";
import {
  anonymousSetTags,
  NetlinkNftablesKernel,
  readTableOverNetlink,
} from "../src/backends/nftables/netlink-kernel.ts";
import { NftablesWriter, servicesPerTransaction } from "../src/backends/nftables/proxier.ts";
import { renderNftables } from "../src/backends/nftables/render.ts";
import { upstreamTestSettings } from "../src/backends/nftables/settings.ts";
import {
  planChunkedFullSync,
  planFullSync,
  type NftCommand,
  type NftTransaction,
} from "../src/backends/nftables/transactions.ts";
import { NetlinkSocket } from "../src/kernel/netlink.ts";
import { Nft } from "../src/kernel/nft.ts";
import { spawnBackground } from "../src/kernel/spawn.ts";
import { realClock } from "../src/proxy/clock.ts";
import { servicePortKey, type Endpoint, type ProxyState, type ServicePort } from "../src/proxy/types.ts";
import { endpoint, proxyState, servicePort } from "../test/support/iptables-builders.ts";
import { runner, withBenchNetns } from "./netns.ts";
import { DAEMON_NODE_FLAGS } from "./startup.ts";
import { BENCH_NODE, syntheticManifests } from "./synthetic.ts";

/** Services per transaction: a fixed number, or the writer's default (`servicesPerTransaction`). */
export type ChunkPolicy = number | "adaptive";

export interface NetlinkBenchOptions {
  readonly sizes: ReadonlyArray<{ readonly services: number; readonly endpoints: number }>;
  /** Our writer's policy in the main comparison. */
  readonly servicesPerTransaction: ChunkPolicy;
  /** Also time bare netlink full syncs of every size under these policies. */
  readonly chunks: readonly ChunkPolicy[];
  /** Only those bare netlink full syncs: no writer, no partial syncs, no probes. */
  readonly chunksOnly?: boolean;
  /** Time bare `nft -f` of the full sync too (the partial syncs' nft -f is always timed). */
  readonly withNft: boolean;
  /** Time the probe transactions on each size's table. */
  readonly probes: boolean;
  /** Also measure the compiled daemon's peak RSS on each size (needs `npm run build`). */
  readonly daemonRss: boolean;
}

/** Wall and CPU time of this process (all its threads: the kernel's work in `send` is system time). */
export interface Timed {
  readonly wallS: number;
  readonly userS: number;
  readonly sysS: number;
}

export interface PartialRow {
  readonly change: string;
  readonly commands: number;
  readonly ours: Timed;
  readonly bareNetlink: Timed;
  readonly bareNftS: number;
  /** Table listings our writer made during this sync (a partial sync must make none). */
  readonly listings: number;
}

export interface ProbeRow {
  readonly probe: string;
  /** Median wall time of `rounds` bare-netlink sends of it on the big table. */
  readonly medianS: number;
  readonly rounds: number;
}

export interface NetlinkRow {
  readonly services: number;
  readonly endpoints: number;
  readonly transactions: number;
  readonly ours: Timed;
  readonly bareNetlink: Timed;
  readonly bareNftS: number | null;
  readonly partials: readonly PartialRow[];
  readonly probes: readonly ProbeRow[];
  /** The benchmark process's peak RSS so far (three namespaces' writers and batches). */
  readonly benchPeakRssMB: number;
  /** The compiled daemon's VmHWM after its first full sync of this cluster; null = not measured. */
  readonly daemonPeakRssMB: number | null;
}

export interface ChunkRow {
  readonly services: number;
  readonly endpoints: number;
  readonly policy: ChunkPolicy;
  /** Services per transaction under that policy at this size. */
  readonly servicesPerTransaction: number;
  readonly transactions: number;
  readonly bareNetlink: Timed;
}

const perTransaction = (policy: ChunkPolicy, services: number): number =>
  policy === "adaptive" ? servicesPerTransaction(services) : policy;

const settings = upstreamTestSettings("IPv4");
const log = pino({ level: "silent" });
const PROBE_ROUNDS = 5;

async function timed<T>(body: () => Promise<T>): Promise<{ result: T; time: Timed }> {
  const cpu = process.cpuUsage();
  const start = performance.now();
  const result = await body();
  const wallS = (performance.now() - start) / 1000;
  const used = process.cpuUsage(cpu);
  return { result, time: { wallS, userS: used.user / 1e6, sysS: used.system / 1e6 } };
}

function scaleState(services: number, endpoints: number): ProxyState {
  const entries: Array<[ServicePort, Endpoint[]]> = [];
  for (let i = 0; i < services; i++) {
    const eps: Endpoint[] = [];
    for (let j = 0; j < endpoints; j++) {
      const n = i * endpoints + j;
      eps.push(endpoint(`10.${(n >> 16) & 255}.${(n >> 8) & 255}.${n & 255}`, 8080));
    }
    entries.push([scaleService(i), eps]);
  }
  return proxyState(entries);
}

/** Service i: a ClusterIP in 172.16.0.0/12, a NodePort (unique up to 70,000 Services) on every other one. */
function scaleService(i: number): ServicePort {
  return servicePort({
    namespace: `ns${i % 20}`,
    name: `svc${i}`,
    portName: "http",
    clusterIP: `172.${16 + (i >> 16)}.${(i >> 8) & 255}.${i & 255}`,
    nodePort: i % 2 === 0 ? 30000 + (i >> 1) : 0,
  });
}

/**
 * `state` with one Service more, or with the endpoints of one Service replaced: every other
 * ServicePort and endpoint list is the same object, as the daemon's state store keeps them.
 */
function withService(state: ProxyState, sp: ServicePort, eps: readonly Endpoint[]): ProxyState {
  const key = servicePortKey(sp.name);
  const services = new Map(state.services);
  const endpoints = new Map(state.endpoints);
  services.set(key, sp);
  endpoints.set(
    key,
    [...eps].sort((a, b) => (a.endpoint < b.endpoint ? -1 : a.endpoint > b.endpoint ? 1 : 0)),
  );
  return { ...state, services, endpoints };
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
  /** Anonymous set names as our writer gives them (unique in the table). */
  readonly tag: () => string;
}

/** Sends pre-encoded batches on a plain socket in `netns`; only the exchanges are timed. */
async function bareNetlink(
  netns: string,
  transactions: readonly NftTransaction[],
  seq: Session,
): Promise<Timed> {
  const types = seq.types;
  const batches = transactions.map((t) => {
    const before = new Map(types);
    const commands = t.commands;
    for (const c of commands)
      if (c.what === "container" && c.verb === "add") types.set(c.container.name, c.container.type);
    const b = encodeBatch(commands, {
      family: "ip",
      table: "kube-proxy",
      firstSeq: seq.next,
      ifIndex: () => 1,
      containerType: (n) => before.get(n),
      anonymousSetTag: seq.tag(),
    });
    seq.next += b.messages;
    return b;
  });
  const socket = NetlinkSocket.open({ netns });
  try {
    const { time } = await timed(async () => {
      for (const [i, b] of batches.entries()) {
        const replies = await socket.transact(b.bytes, {
          lastSeq: b.lastSeq,
          timeoutMs: 600_000,
          maxReplies: b.messages + 1,
        });
        const failed = replies.find((r) => r.errno !== 0);
        if (failed !== undefined)
          throw new Error(
            `bare netlink: ${b.describe(failed.seq, transactions[i]!.commands)} failed: errno ${failed.errno}`,
          );
      }
    });
    return time;
  } finally {
    socket.close();
  }
}

async function bareNft(netns: string, transactions: readonly NftTransaction[]): Promise<number> {
  const nft = new Nft(runner, netns);
  const start = performance.now();
  for (const t of transactions) await nft.apply(t.payload, 1_800_000);
  return (performance.now() - start) / 1000;
}

const tx = (commands: NftCommand[]): NftTransaction => ({ payload: "", commands });
const PROBE_CHAIN = "bench-probe";
const PROBE_KEY = "172.31.255.254 . tcp . 80";

/**
 * Small transactions whose kernel time on a large table says where a partial sync's time goes:
 * the fixed cost of a transaction, an element without and with a verdict that jumps to a chain,
 * a chain, a rule without and with a jump, a rule with an anonymous verdict map. Each is undone
 * (untimed) before the next round.
 */
const PROBES: ReadonlyArray<{
  readonly name: string;
  readonly apply: NftCommand[];
  readonly undo: NftCommand[];
}> = [
  {
    name: "add table (no change)",
    apply: [{ verb: "add", what: "table", comment: "rules for kube-proxy" }],
    undo: [],
  },
  {
    name: "one element, no verdict (cluster-ips)",
    apply: [{ verb: "add", what: "element", element: { container: "cluster-ips", key: "172.31.255.254" } }],
    undo: [{ verb: "delete", what: "element", container: "cluster-ips", key: "172.31.255.254" }],
  },
  {
    name: "one element with goto (service-ips)",
    apply: [
      {
        verb: "add",
        what: "element",
        element: { container: "service-ips", key: PROBE_KEY, value: `goto ${MARK_MASQ_CHAIN}` },
      },
    ],
    undo: [{ verb: "delete", what: "element", container: "service-ips", key: PROBE_KEY }],
  },
  {
    name: "one element with drop (no-endpoint-services)",
    apply: [
      {
        verb: "add",
        what: "element",
        element: { container: "no-endpoint-services", key: PROBE_KEY, value: "drop" },
      },
    ],
    undo: [{ verb: "delete", what: "element", container: "no-endpoint-services", key: PROBE_KEY }],
  },
  {
    name: "one empty chain",
    apply: [{ verb: "add", what: "chain", chain: PROBE_CHAIN }],
    undo: [{ verb: "delete", what: "chain", chain: PROBE_CHAIN }],
  },
  {
    name: "chain + rule, no jump",
    apply: [
      { verb: "add", what: "chain", chain: PROBE_CHAIN },
      { verb: "add", what: "rule", chain: PROBE_CHAIN, rule: "ip saddr 10.255.0.1 drop" },
    ],
    undo: [
      { verb: "flush", what: "chain", chain: PROBE_CHAIN },
      { verb: "delete", what: "chain", chain: PROBE_CHAIN },
    ],
  },
  {
    name: "chain + rule with jump",
    apply: [
      { verb: "add", what: "chain", chain: PROBE_CHAIN },
      { verb: "add", what: "rule", chain: PROBE_CHAIN, rule: `ip saddr 10.255.0.1 jump ${MARK_MASQ_CHAIN}` },
    ],
    undo: [
      { verb: "flush", what: "chain", chain: PROBE_CHAIN },
      { verb: "delete", what: "chain", chain: PROBE_CHAIN },
    ],
  },
  {
    name: "chain + numgen vmap rule (anonymous map)",
    apply: [
      { verb: "add", what: "chain", chain: PROBE_CHAIN },
      {
        verb: "add",
        what: "rule",
        chain: PROBE_CHAIN,
        rule: `numgen random mod 2 vmap { 0 : goto ${MARK_MASQ_CHAIN} , 1 : goto ${MARK_MASQ_CHAIN} }`,
      },
    ],
    undo: [
      { verb: "flush", what: "chain", chain: PROBE_CHAIN },
      { verb: "delete", what: "chain", chain: PROBE_CHAIN },
    ],
  },
];

async function runProbes(netns: string, session: Session): Promise<ProbeRow[]> {
  const rows: ProbeRow[] = [];
  for (const probe of PROBES) {
    const times: number[] = [];
    for (let r = 0; r < PROBE_ROUNDS; r++) {
      times.push((await bareNetlink(netns, [tx(probe.apply)], session)).wallS);
      if (probe.undo.length > 0) await bareNetlink(netns, [tx(probe.undo)], session);
    }
    times.sort((a, b) => a - b);
    rows.push({ probe: probe.name, medianS: times[times.length >> 1]!, rounds: PROBE_ROUNDS });
  }
  return rows;
}

const MAIN = fileURLToPath(new URL("../dist/cli/main.js", import.meta.url));

function status(pid: number, field: string): number {
  const text = readFileSync(`/proc/${pid}/status`, "utf8");
  return Number(new RegExp(`^${field}:\\s+(\\d+)`, "m").exec(text)?.[1] ?? Number.NaN) / 1024;
}

/** How many of the families the daemon logged at start (`"families":[…]`) have logged a sync. */
function everyFamilySynced(stderr: string): boolean {
  const families = /"families":\[([^\]]*)\]/.exec(stderr)?.[1]?.split(",").length;
  return families !== undefined && stderr.split('"msg":"SyncProxyRules complete"').length - 1 >= families;
}

/**
 * The compiled daemon in nftables mode on a manifests folder of this cluster, in a fresh
 * namespace, run as the image runs it (DAEMON_NODE_FLAGS): its VmHWM once the first sync of
 * every family is done and it has logged nothing for 3 s. (Until 2026-12-03 evening this waited
 * for the first family's sync only: the small IPv6 one, so a VmHWM could be read while the IPv4
 * sync was still under way.)
 */
async function daemonPeakRss(services: number, endpoints: number): Promise<number> {
  const dir = mkdtempSync(join(tmpdir(), "kpt-bench-nft-manifests-"));
  try {
    const { node, byNamespace } = syntheticManifests(services, endpoints);
    writeFileSync(join(dir, "node.yaml"), stringify(node));
    for (const [namespace, objects] of byNamespace)
      writeFileSync(join(dir, `${namespace}.yaml`), objects.map((o) => stringify(o)).join("---\n"));
    return await withBenchNetns(async (netns) => {
      const daemon = spawnBackground(
        [
          process.execPath,
          ...DAEMON_NODE_FLAGS,
          MAIN,
          "--proxy-mode",
          "nftables",
          "--manifests",
          dir,
          "--hostname-override",
          BENCH_NODE,
          "--cluster-cidr",
          "10.128.0.0/10",
          "--healthz-bind-address",
          "",
          "--metrics-bind-address",
          "",
          "--v",
          "1",
        ],
        { netns },
      );
      try {
        const started = performance.now();
        let last = "";
        let quietSince = performance.now();
        for (;;) {
          if (!daemon.running) throw new Error(`the daemon exited:\n${daemon.stderr}`);
          if (performance.now() - started > 1_200_000)
            throw new Error("the daemon's first sync took > 20 min");
          const text = daemon.stderr;
          if (text !== last) {
            last = text;
            quietSince = performance.now();
          } else if (everyFamilySynced(text) && performance.now() - quietSince > 3_000) break;
          await sleep(250);
        }
        return status(daemon.pid!, "VmHWM");
      } finally {
        await daemon.stop(10_000);
      }
    });
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

export async function runNetlinkBenchmark(options: NetlinkBenchOptions, progress: (line: string) => void) {
  const rows: NetlinkRow[] = [];
  const chunkRows: ChunkRow[] = [];
  for (const { services, endpoints } of options.sizes) {
    progress(`nftables netlink: ${services} x ${endpoints} (load ${loadAverage()})`);
    const state = scaleState(services, endpoints);
    for (const policy of options.chunks) {
      const size = perTransaction(policy, services);
      const transactions = fullTransactions(state, size);
      const bare = await withBenchNetns((ns) =>
        bareNetlink(ns, transactions, { next: 1, types: new Map(), tag: anonymousSetTags() }),
      );
      const label = policy === "adaptive" ? `adaptive (${size})` : `${size}`;
      progress(
        `  ${label} Services per transaction, ${transactions.length} transactions: bare netlink ${fmt(bare)} (load ${loadAverage()})`,
      );
      chunkRows.push({
        services,
        endpoints,
        policy,
        servicesPerTransaction: size,
        transactions: transactions.length,
        bareNetlink: bare,
      });
    }
    if (options.chunksOnly === true) continue;
    const row = await withBenchNetns((oursNs) =>
      withBenchNetns((bareNs) =>
        withBenchNetns(async (nftNs) => {
          const kernel = new NetlinkNftablesKernel({ family: "ip", netns: oursNs });
          let sent: NftTransaction[] = [];
          let listings = 0;
          const writer = new NftablesWriter({
            kernel: {
              apply: (t) => {
                sent.push(t);
                return kernel.apply(t);
              },
              applyAll: (ts, onSend) => {
                sent.push(...ts);
                return kernel.applyAll(ts, onSend);
              },
              read: () => {
                listings++;
                return readTableOverNetlink({ family: "ip", netns: oursNs });
              },
            },
            settings,
            clock: realClock,
            log,
            ...(options.servicesPerTransaction === "adaptive"
              ? {}
              : { servicesPerTransaction: options.servicesPerTransaction }),
          });
          const session: Session = { next: 1, types: new Map(), tag: anonymousSetTags() };
          const sync = async (s: ProxyState, changed: ReadonlySet<string> | null) => {
            sent = [];
            listings = 0;
            const { time } = await timed(() =>
              writer.write({
                state: s,
                fullSync: changed === null,
                changedServices: changed ?? new Set(),
                onTransaction: () => undefined,
              }),
            );
            return { time, transactions: sent, listings };
          };
          try {
            const full = await sync(state, null);
            progress(`  ours ${fmt(full.time)}; bare netlink…`);
            const bare = await bareNetlink(bareNs, full.transactions, session);
            progress(`  bare netlink ${fmt(bare)}${options.withNft ? "; bare nft -f…" : ""}`);
            // Without the nft -f full sync, the nft namespace gets the same table over netlink
            // (untimed), so that the partial syncs' nft -f still runs on a table of this size.
            const nftSession: Session = { next: 1, types: new Map(), tag: anonymousSetTags() };
            const bareNftS = options.withNft ? await bareNft(nftNs, full.transactions) : null;
            if (!options.withNft) await bareNetlink(nftNs, full.transactions, nftSession);

            const partials: PartialRow[] = [];
            const partial = async (change: string, next: ProxyState, service: string) => {
              const ours = await sync(next, new Set([service]));
              const bareNl = await bareNetlink(bareNs, ours.transactions, session);
              const nftS = await bareNft(nftNs, ours.transactions);
              const commands = ours.transactions.reduce((n, t) => n + t.commands.length, 0);
              partials.push({
                change,
                commands,
                ours: ours.time,
                bareNetlink: bareNl,
                bareNftS: nftS,
                listings: ours.listings,
              });
              progress(
                `  ${change}: ours ${fmt(ours.time)}, bare netlink ${fmt(bareNl)}, nft -f ${nftS.toFixed(3)} s`,
              );
              return next;
            };
            const added = scaleService(services);
            let now = await partial(
              "add one Service",
              withService(state, added, [endpoint("10.254.0.1", 8080), endpoint("10.254.0.2", 8080)]),
              `${added.name.namespace}/${added.name.name}`,
            );
            const first = scaleService(0);
            const firstKey = servicePortKey(first.name);
            const eps = [...now.endpoints.get(firstKey)!];
            eps[0] = endpoint("10.254.1.1", 8080);
            now = await partial(
              "replace one endpoint",
              withService(now, now.services.get(firstKey)!, eps),
              `${first.name.namespace}/${first.name.name}`,
            );
            const probes = options.probes ? await runProbes(bareNs, session) : [];
            for (const p of probes) progress(`  probe ${p.probe}: ${(p.medianS * 1000).toFixed(1)} ms`);
            return {
              services,
              endpoints,
              transactions: full.transactions.length,
              ours: full.time,
              bareNetlink: bare,
              bareNftS,
              partials,
              probes,
              benchPeakRssMB: Math.round(process.resourceUsage().maxRSS / 1024),
              daemonPeakRssMB: null,
            };
          } finally {
            kernel.close();
          }
        }),
      ),
    );
    const daemonPeakRssMB = options.daemonRss ? Math.round(await daemonPeakRss(services, endpoints)) : null;
    if (daemonPeakRssMB !== null) progress(`  daemon VmHWM ${daemonPeakRssMB} MB`);
    rows.push({ ...row, daemonPeakRssMB });
  }
  return { rows, chunkRows };
}

export function loadAverage(): string {
  return readFileSync("/proc/loadavg", "utf8").split(" ").slice(0, 3).join(" ");
}

const f = (s: number): string => (s < 1 ? s.toFixed(3) : s.toFixed(2));
const fmt = (t: Timed): string => `${f(t.wallS)} s (cpu ${f(t.userS)} + ${f(t.sysS)})`;
const ratio = (a: number, b: number): string => `${(a / b).toFixed(2)}×`;

export function netlinkTable(rows: readonly NetlinkRow[]): string {
  const lines = [
    "| Services × endpoints | transactions | ours full: wall (user + sys) | bare netlink: wall (user + sys) | ours / bare (wall) | ours / bare (cpu) | bare nft -f | nft / ours | daemon VmHWM | bench peak RSS |",
    "|---|---|---|---|---|---|---|---|---|---|",
  ];
  for (const r of rows) {
    const cpu = (t: Timed) => t.userS + t.sysS;
    lines.push(
      `| ${r.services} × ${r.endpoints} | ${r.transactions} | ${fmt(r.ours)} | ${fmt(r.bareNetlink)} | ` +
        `${ratio(r.ours.wallS, r.bareNetlink.wallS)} | ${ratio(cpu(r.ours), cpu(r.bareNetlink))} | ` +
        `${r.bareNftS === null ? "—" : `${f(r.bareNftS)} s`} | ${r.bareNftS === null ? "—" : ratio(r.bareNftS, r.ours.wallS)} | ` +
        `${r.daemonPeakRssMB === null ? "—" : `${r.daemonPeakRssMB} MB`} | ${r.benchPeakRssMB} MB |`,
    );
  }
  return lines.join("\n");
}

export function partialTable(rows: readonly NetlinkRow[]): string {
  const lines = [
    "| Services × endpoints | change | commands | ours: wall (user + sys) | bare netlink: wall (user + sys) | ours / bare | bare nft -f | nft -f / ours | table listings |",
    "|---|---|---|---|---|---|---|---|---|",
  ];
  for (const r of rows)
    for (const p of r.partials)
      lines.push(
        `| ${r.services} × ${r.endpoints} | ${p.change} | ${p.commands} | ${fmt(p.ours)} | ${fmt(p.bareNetlink)} | ` +
          `${ratio(p.ours.wallS, p.bareNetlink.wallS)} | ${f(p.bareNftS)} s | ${ratio(p.bareNftS, p.ours.wallS)} | ${p.listings} |`,
      );
  return lines.join("\n");
}

export function probeTable(rows: readonly NetlinkRow[]): string {
  const withProbes = rows.filter((r) => r.probes.length > 0);
  if (withProbes.length === 0) return "";
  const names = withProbes[0]!.probes.map((p) => p.probe);
  const lines = [
    `| probe transaction (bare netlink, median of ${PROBE_ROUNDS}) | ${withProbes.map((r) => `${r.services} × ${r.endpoints}`).join(" | ")} |`,
    `|---|${withProbes.map(() => "---").join("|")}|`,
  ];
  for (const [i, name] of names.entries())
    lines.push(
      `| ${name} | ${withProbes.map((r) => `${(r.probes[i]!.medianS * 1000).toFixed(1)} ms`).join(" | ")} |`,
    );
  return lines.join("\n");
}

export function chunkTable(rows: readonly ChunkRow[]): string {
  if (rows.length === 0) return "";
  const lines = [
    "| Services × endpoints | policy | Services per transaction | transactions | bare netlink full sync: wall (user + sys) |",
    "|---|---|---|---|---|",
  ];
  for (const r of rows)
    lines.push(
      `| ${r.services} × ${r.endpoints} | ${r.policy === "adaptive" ? "adaptive" : "fixed"} | ${r.servicesPerTransaction} | ${r.transactions} | ${fmt(r.bareNetlink)} |`,
    );
  return lines.join("\n");
}
