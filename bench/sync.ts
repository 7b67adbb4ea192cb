/**
 * Sync benchmark (issue 4): the real IptablesProxier with the real Iptables wrapper, inside a
 * throwaway namespace. First full sync, then a partial sync after one endpoint of one Service
 * was replaced. The baseline is bare iptables-restore of exactly the transactions the proxier
 * wrote, into a second fresh namespace, timing only the restore calls.
 */
import { loadavg } from "node:os";
import { Registry } from "prom-client";
import type { RenderResult } from "../src/backends/iptables/types.ts";
import { iptablesProxier, maxServicesPerTransaction } from "../src/backends/iptables/proxier.ts";
import { Iptables } from "../src/kernel/iptables.ts";
import type {
  IptablesInterface,
  RestoreOptions,
  RestorePayload,
  RulePosition,
  Table,
} from "../src/kernel/iptables.ts";
import { createLogger } from "../src/log.ts";
import { ProxyStateStore } from "../src/proxy/changetracker.ts";
import { realClock } from "../src/proxy/clock.ts";
import { healthTimeoutForSyncPeriod, ProxyHealth } from "../src/proxy/health.ts";
import { createProxyMetrics } from "../src/proxy/metrics.ts";
import { runner, withBenchNetns } from "./netns.ts";
import { settle } from "./quiet.ts";
import type { Backend, Timing } from "./restore.ts";
import { formatMs, formatRatio, formatTiming, timeRestore, timeRestores } from "./restore.ts";
import {
  BENCH_NODE,
  benchSettings,
  sliceWithOneEndpointReplaced,
  syntheticCluster,
  syntheticService,
} from "./synthetic.ts";
import type { SyntheticCluster } from "./synthetic.ts";

/** Where the proxier's time went, from the wrapper's point of view. */
export interface KernelCalls {
  restores: { payload: RestorePayload; ms: number; startedAt: number }[];
  /** iptables-save (stale-chain listing). */
  saveMs: number;
  /** Single iptables commands (jump rules, chain checks). */
  commandMs: number;
  commands: number;
}

const byteLength = (payload: RestorePayload): number =>
  typeof payload === "string"
    ? Buffer.byteLength(payload)
    : payload.reduce((a, p) => a + Buffer.byteLength(p), 0);

const noCalls = (): KernelCalls => ({ restores: [], saveMs: 0, commandMs: 0, commands: 0 });

/** Delegates to the real Iptables and records every call's payload and wall time. */
export class RecordingIptables implements IptablesInterface {
  calls: KernelCalls = noCalls();

  constructor(private readonly inner: Iptables) {}

  get family() {
    return this.inner.family;
  }

  /** Returns what was recorded since the last take. */
  take(): KernelCalls {
    const out = this.calls;
    this.calls = noCalls();
    return out;
  }

  private async timed<T>(kind: "saveMs" | "commandMs", op: () => Promise<T>): Promise<T> {
    const started = performance.now();
    try {
      return await op();
    } finally {
      this.calls[kind] += performance.now() - started;
      if (kind === "commandMs") this.calls.commands++;
    }
  }

  async restore(payload: RestorePayload, options?: RestoreOptions): Promise<void> {
    const started = performance.now();
    await this.inner.restore(payload, options);
    this.calls.restores.push({ payload, ms: performance.now() - started, startedAt: started });
  }
  save(table?: Table) {
    return this.timed("saveMs", () => this.inner.save(table));
  }
  ensureChain(table: Table, chain: string) {
    return this.timed("commandMs", () => this.inner.ensureChain(table, chain));
  }
  ensureRule(position: RulePosition, table: Table, chain: string, args: readonly string[]) {
    return this.timed("commandMs", () => this.inner.ensureRule(position, table, chain, args));
  }
  deleteRule(table: Table, chain: string, args: readonly string[]) {
    return this.timed("commandMs", () => this.inner.deleteRule(table, chain, args));
  }
  flushChain(table: Table, chain: string) {
    return this.timed("commandMs", () => this.inner.flushChain(table, chain));
  }
  deleteChain(table: Table, chain: string) {
    return this.timed("commandMs", () => this.inner.deleteChain(table, chain));
  }
  chainExists(table: Table, chain: string) {
    return this.timed("commandMs", () => this.inner.chainExists(table, chain));
  }
  version() {
    return this.inner.version();
  }
}

export interface SyncPhase {
  readonly wallMs: number;
  readonly transactions: number;
  readonly restoreMs: number;
  readonly saveMs: number;
  readonly commandMs: number;
  readonly commands: number;
  readonly payloadBytes: number;
  /** Bare iptables-restore of the same transactions into a fresh namespace. */
  readonly bare: Timing;
  /** Each bare transaction's time, in order (the last one swaps the capture rules). */
  readonly bareEach: readonly number[];
  /** Each of our restore calls' time, in the same order. */
  readonly restoreEach: readonly number[];
}

export interface SyncRow {
  readonly backend: Backend;
  readonly services: number;
  readonly endpointsPerService: number;
  readonly full: SyncPhase;
  readonly partial: SyncPhase;
  /** The new endpoint was found in the kernel after the partial sync. */
  readonly partialVerified: boolean;
  /**
   * A second one-endpoint partial sync right after the first. In large-cluster mode the first
   * one after a long full sync also lists the nat table (stale-chain cleanup is due once per
   * sync period); this one shows the usual partial sync between two listings.
   */
  readonly nextPartial: { readonly wallMs: number; readonly restoreMs: number; readonly saveMs: number };
  /** One Service added after the partial syncs (its bare restore lands on the same table). */
  readonly addOne: SyncPhase & { readonly fullSync: boolean };
  /** 1-minute load average before and after the row: the machine is shared. */
  readonly loadAverage: readonly [number, number];
  /** Bare restore of the whole sync as the single payload upstream writes (only where asked). */
  readonly singlePayload: Timing | null;
  /** Every full-sync round (the first is `full`), each ours against bare in fresh namespaces. */
  readonly rounds: readonly FullSyncRound[];
}

export interface FullSyncRound {
  readonly oursMs: number;
  readonly bare: Timing;
  /** Our wall time outside the restore calls. */
  readonly outsideMs: number;
  /** The bare replay ran before our sync in this round. */
  readonly bareFirst: boolean;
}

const median = (values: readonly number[]): number => {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = Math.floor(sorted.length / 2);
  return sorted.length % 2 === 1 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
};

/** Median of the rounds' ours/bare ratios; null when a bare replay did not complete. */
export function medianRatio(rounds: readonly FullSyncRound[]): number | null {
  const ratios: number[] = [];
  for (const r of rounds) {
    if (r.bare.status !== "ok") return null;
    ratios.push(r.oursMs / r.bare.ms);
  }
  return ratios.length === 0 ? null : median(ratios);
}

export interface SyncOptions {
  readonly sizes: readonly number[];
  readonly endpointsPerService: number;
  readonly backends: readonly Backend[];
  readonly capMs: number;
  /** Largest size at which the single-payload restore is timed on nft (legacy: every size). */
  readonly singlePayloadMax: number;
  /** Full-sync rounds (ours and bare, alternating which goes first): the ratio is their median. */
  readonly rounds: number;
  readonly signal: AbortSignal;
}

function phase(
  wallMs: number,
  calls: KernelCalls,
  bare: { total: Timing; each: readonly number[] },
): SyncPhase {
  return {
    wallMs,
    transactions: calls.restores.length,
    restoreMs: calls.restores.reduce((a, r) => a + r.ms, 0),
    saveMs: calls.saveMs,
    commandMs: calls.commandMs,
    commands: calls.commands,
    payloadBytes: calls.restores.reduce((a, r) => a + byteLength(r.payload), 0),
    bare: bare.total,
    bareEach: bare.each,
    restoreEach: calls.restores.map((r) => r.ms),
  };
}

/** Wall time of a sync spent outside the restore calls: before the first, between them, after the last. */
function outsideRestores(
  startedAt: number,
  endedAt: number,
  calls: KernelCalls,
): { before: number; between: number; after: number; total: number } {
  const first = calls.restores[0];
  const last = calls.restores.at(-1);
  if (first === undefined || last === undefined) {
    return { before: endedAt - startedAt, between: 0, after: 0, total: endedAt - startedAt };
  }
  let between = 0;
  for (let i = 1; i < calls.restores.length; i++) {
    const previous = calls.restores[i - 1]!;
    between += calls.restores[i]!.startedAt - (previous.startedAt + previous.ms);
  }
  const before = first.startedAt - startedAt;
  const after = endedAt - (last.startedAt + last.ms);
  return { before, between, after, total: before + between + after };
}

/** The SEP chain whose DNAT goes to `ip`, among the chains a partial sync wrote. */
function endpointChainFor(result: RenderResult, ip: string): string | null {
  for (const block of result.nat.serviceBlocks ?? []) {
    const rule = block.ruleText.split("\n").find((l) => l.includes(`--to-destination ${ip}:`));
    if (rule !== undefined) return rule.split(" ")[1] ?? null;
  }
  return null;
}

/**
 * A proxier wired as `src/cli/run.ts` wires it, with its state store fed the whole cluster. The
 * daemon reads the iptables version at start-up (for its settings), before its first sync.
 */
export async function benchProxier(backend: Backend, netns: string, cluster: SyntheticCluster) {
  const logger = createLogger(0, "bench");
  logger.level = "warn";
  const ipt = new RecordingIptables(new Iptables({ runner, family: "IPv4", backend, netns }));
  const store = new ProxyStateStore({ family: "IPv4", nodeName: BENCH_NODE });
  for (const svc of cluster.services) store.serviceChanges.update(null, svc);
  for (const slice of cluster.endpointSlices) store.endpointsChanges.endpointSliceUpdate(slice, false);
  let last: RenderResult | null = null;
  const proxier = iptablesProxier({
    ipt,
    settings: benchSettings(),
    store,
    clock: realClock,
    log: logger,
    health: new ProxyHealth(healthTimeoutForSyncPeriod(30_000), realClock),
    metrics: createProxyMetrics(new Registry(), { mode: "iptables" }),
    syncPeriodMs: 30_000,
    maxServicesPerTransaction: maxServicesPerTransaction(backend),
    onSync: (report) => {
      last = report.details;
    },
  });
  proxier.setInitialized();
  await ipt.version();
  return { ipt, store, proxier, lastResult: (): RenderResult | null => last };
}

/**
 * Before a timed full sync or bare replay: wait for the CPUs to be idle (the kernel frees a
 * deleted namespace's rules in the background); say so when the machine stayed busy.
 */
async function quiet(log: (line: string) => void): Promise<void> {
  const { waitedMs, idle } = await settle();
  if (idle < 0.85)
    log(
      `    machine still busy after ${formatMs(waitedMs)} (CPUs ${(100 * idle).toFixed(0)}% idle); measuring anyway`,
    );
}

/** One more first full sync of the same cluster, with a fresh proxier, in `netns`. */
async function timedFullSync(
  backend: Backend,
  netns: string,
  cluster: SyntheticCluster,
  log: (line: string) => void,
): Promise<{ wallMs: number; outsideMs: number }> {
  const { ipt, proxier } = await benchProxier(backend, netns, cluster);
  await quiet(log);
  const started = performance.now();
  const report = await proxier.syncProxyRules();
  const wallMs = performance.now() - started;
  if (report?.fullSync !== true) throw new Error("the round's sync was not a full sync");
  const outside = outsideRestores(started, started + wallMs, ipt.take());
  return { wallMs, outsideMs: outside.total };
}

async function oneRow(
  backend: Backend,
  services: number,
  options: SyncOptions,
  log: (line: string) => void,
): Promise<SyncRow> {
  const eps = options.endpointsPerService;
  const cluster = syntheticCluster(services, eps);
  const changedIndex = Math.floor(services / 2);
  const changedSlice = sliceWithOneEndpointReplaced(changedIndex, eps);
  const newIP = changedSlice.endpoints[0]?.addresses[0] ?? "";
  const nextSlice = sliceWithOneEndpointReplaced((changedIndex + 1) % services, eps);
  const loadBefore = loadavg()[0] ?? 0;

  return withBenchNetns(async (netns) => {
    const { ipt, store, proxier, lastResult } = await benchProxier(backend, netns, cluster);

    log(`sync ${backend}: ${services} Services x ${eps} endpoints, full sync…`);
    await quiet(log);
    let started = performance.now();
    const fullReport = await proxier.syncProxyRules();
    const fullMs = performance.now() - started;
    const fullCalls = ipt.take();
    const fullResult = lastResult();
    if (fullReport?.fullSync !== true || fullResult === null)
      throw new Error("first sync was not a full sync");
    const outside = outsideRestores(started, started + fullMs, fullCalls);
    log(
      `  ${formatMs(fullMs)} in ${fullCalls.restores.length} transaction(s); outside the restores: ` +
        `${formatMs(outside.before)} before the first, ${formatMs(outside.between)} between, ${formatMs(outside.after)} after; partial sync…`,
    );

    if (!store.endpointsChanges.endpointSliceUpdate(changedSlice, false)) {
      throw new Error("the endpoint change was not seen as a change");
    }
    started = performance.now();
    const partialReport = await proxier.syncProxyRules();
    const partialMs = performance.now() - started;
    const partialCalls = ipt.take();
    const partialResult = lastResult();
    if (partialReport?.fullSync !== false || partialReport.updatedServices !== 1 || partialResult === null) {
      throw new Error(`second sync was not a one-Service partial sync: ${JSON.stringify(partialReport)}`);
    }
    log(`  ${formatMs(partialMs)} in ${partialCalls.restores.length} transaction(s); checking the kernel…`);
    const sep = endpointChainFor(partialResult, newIP);
    const listed =
      sep === null
        ? ""
        : (
            await runner.run([`iptables-${backend}`, "-w", "5", "-t", "nat", "-S", sep], {
              netns,
              timeoutMs: 120_000,
            })
          ).stdout;
    const partialVerified = listed.includes(`--to-destination ${newIP}:`);

    store.endpointsChanges.endpointSliceUpdate(nextSlice, false);
    started = performance.now();
    const nextReport = await proxier.syncProxyRules();
    const nextMs = performance.now() - started;
    const nextCalls = ipt.take();
    if (nextReport?.fullSync !== false) throw new Error("third sync was not a partial sync");
    const nextPartial = {
      wallMs: nextMs,
      restoreMs: nextCalls.restores.reduce((a, r) => a + r.ms, 0),
      saveMs: nextCalls.saveMs,
    };
    log(`  next partial sync: ${formatMs(nextMs)}`);

    const added = syntheticService(services, eps);
    store.serviceChanges.update(null, added.service);
    store.endpointsChanges.endpointSliceUpdate(added.endpointSlice, false);
    started = performance.now();
    const addReport = await proxier.syncProxyRules();
    const addMs = performance.now() - started;
    const addCalls = ipt.take();
    log(
      `  one Service added: ${formatMs(addMs)} in ${addCalls.restores.length} transaction(s); ` +
        `restore ${formatMs(addCalls.restores.reduce((a, r) => a + r.ms, 0))}, save ${formatMs(addCalls.saveMs)}`,
    );

    log(`  bare iptables-${backend}-restore of the same transactions in a fresh namespace…`);
    /** The bare restores of what the proxier wrote, into `netns`. */
    const bareCalls = (netns: string, calls: KernelCalls) =>
      calls.restores.map((r) => ({
        backend,
        netns,
        payload: r.payload,
        capMs: options.capMs,
        signal: options.signal,
      }));
    const bare = await withBenchNetns(async (bareNetns) => {
      await quiet(log);
      const full = await timeRestores(bareCalls(bareNetns, fullCalls));
      const notRun = (why: string) => ({ total: { status: "failed", ms: 0, error: why } as const, each: [] });
      const partial =
        full.total.status === "ok"
          ? await timeRestores(bareCalls(bareNetns, partialCalls))
          : notRun("full restore did not complete");
      // The next partial sync's transactions untimed, so that the added Service's land on the table ours had.
      const next =
        partial.total.status === "ok" ? await timeRestores(bareCalls(bareNetns, nextCalls)) : partial;
      const addOne =
        next.total.status === "ok"
          ? await timeRestores(bareCalls(bareNetns, addCalls))
          : notRun("an earlier restore did not complete");
      return { full, partial, addOne };
    });
    log(
      `    full ${formatTiming(bare.full.total)}, partial ${formatTiming(bare.partial.total)}, add one ${formatTiming(bare.addOne.total)}`,
    );

    let singlePayload: Timing | null = null;
    // iptables-legacy-restore rewrites the whole table per transaction, so its single payload is
    // cheap at every size; iptables-nft-restore's is super-linear, hence the size limit.
    const timeSingle = backend === "legacy" || services <= options.singlePayloadMax;
    if (timeSingle && fullCalls.restores.length > 1) {
      log(`  one single payload with iptables-${backend}-restore (cap ${formatMs(options.capMs)})…`);
      singlePayload = await withBenchNetns((singleNetns) =>
        timeRestore({
          backend,
          netns: singleNetns,
          payload: fullResult.payload,
          capMs: options.capMs,
          signal: options.signal,
        }),
      );
      log(`    ${formatTiming(singlePayload)}`);
    }
    const rounds: FullSyncRound[] = [
      {
        oursMs: fullMs,
        bare: bare.full.total,
        outsideMs: outside.total,
        bareFirst: false,
      },
    ];
    for (let round = 2; round <= options.rounds; round++) {
      const bareFirst = round % 2 === 0;
      log(
        `  full sync round ${round} of ${options.rounds} (${bareFirst ? "bare replay first" : "ours first"})…`,
      );
      const replay = () =>
        withBenchNetns(async (bareNetns) => {
          await quiet(log);
          return timeRestores(bareCalls(bareNetns, fullCalls));
        });
      const bareRound = bareFirst ? await replay() : null;
      const ours = await withBenchNetns((roundNetns) => timedFullSync(backend, roundNetns, cluster, log));
      const bareTotal = (bareRound ?? (await replay())).total;
      rounds.push({ oursMs: ours.wallMs, bare: bareTotal, outsideMs: ours.outsideMs, bareFirst });
      log(`    ours ${formatMs(ours.wallMs)}, bare ${formatTiming(bareTotal)}`);
    }
    return {
      backend,
      services,
      endpointsPerService: eps,
      rounds,
      full: phase(fullMs, fullCalls, bare.full),
      partial: phase(partialMs, partialCalls, bare.partial),
      partialVerified,
      nextPartial,
      addOne: { ...phase(addMs, addCalls, bare.addOne), fullSync: addReport?.fullSync === true },
      singlePayload,
      loadAverage: [loadBefore, loadavg()[0] ?? 0],
    };
  });
}

export async function runSyncBenchmark(
  options: SyncOptions,
  log: (line: string) => void,
): Promise<SyncRow[]> {
  const rows: SyncRow[] = [];
  for (const services of options.sizes) {
    for (const backend of options.backends) rows.push(await oneRow(backend, services, options, log));
  }
  return rows;
}

const size = (r: SyncRow) => `${r.services.toLocaleString("en-US")} x ${r.endpointsPerService}`;

export function syncTable(rows: readonly SyncRow[]): string {
  const head = [
    "backend",
    "Services x eps",
    "transactions",
    "full sync (ours)",
    "of which restore / save / other cmds",
    "bare restore, same transactions",
    "ratio ours/bare",
    "rounds: ours / bare (ratio)",
    "median ratio",
    "partial sync (ours)",
    "of which restore / save",
    "bare partial restore",
    "partial / full",
    "next partial (ours)",
    "next partial / full",
    "new endpoint in kernel",
    "load avg",
  ];
  const lines = [`| ${head.join(" | ")} |`, `|${head.map(() => "---").join("|")}|`];
  for (const r of rows) {
    lines.push(
      `| ${[
        r.backend,
        size(r),
        `${r.full.transactions} (${(r.full.payloadBytes / 1024 / 1024).toFixed(1)} MB)`,
        formatMs(r.full.wallMs),
        `${formatMs(r.full.restoreMs)} / ${formatMs(r.full.saveMs)} / ${formatMs(r.full.commandMs)} (${r.full.commands})`,
        formatTiming(r.full.bare),
        formatRatio(r.full.wallMs, r.full.bare),
        r.rounds
          .map(
            (round) =>
              `${formatMs(round.oursMs)} / ${formatTiming(round.bare)} (${formatRatio(round.oursMs, round.bare)})`,
          )
          .join("; "),
        ((m) => (m === null ? "n/a" : `**${m.toFixed(3)}×**`))(medianRatio(r.rounds)),
        `${formatMs(r.partial.wallMs)} (${r.partial.transactions} tx, ${(r.partial.payloadBytes / 1024 / 1024).toFixed(1)} MB)`,
        `${formatMs(r.partial.restoreMs)} / ${formatMs(r.partial.saveMs)}`,
        formatTiming(r.partial.bare),
        `${((100 * r.partial.wallMs) / r.full.wallMs).toFixed(1)}%`,
        `${formatMs(r.nextPartial.wallMs)} (restore ${formatMs(r.nextPartial.restoreMs)})`,
        `${((100 * r.nextPartial.wallMs) / r.full.wallMs).toFixed(1)}%`,
        r.partialVerified ? "yes" : "NO",
        `${r.loadAverage[0].toFixed(1)} → ${r.loadAverage[1].toFixed(1)}`,
      ].join(" | ")} |`,
    );
  }
  return lines.join("\n");
}

export function chunkingTable(rows: readonly SyncRow[]): string {
  const measured = rows.filter((r) => r.singlePayload !== null);
  if (measured.length === 0) return "";
  const lines = [
    "| backend | Services x eps | one payload (upstream layout) | same rules in bounded transactions |",
    "|---|---|---|---|",
  ];
  for (const r of measured) {
    const each = r.full.bareEach;
    const detail =
      each.length > 2
        ? `; first chunk ${formatMs(each[0]!)}, last chunk ${formatMs(each[each.length - 2]!)}, final ${formatMs(each[each.length - 1]!)}`
        : "";
    lines.push(
      `| ${r.backend} | ${size(r)} | ${formatTiming(r.singlePayload!)} | ${formatTiming(r.full.bare)} (${r.full.transactions} transactions${detail}) |`,
    );
  }
  return lines.join("\n");
}
