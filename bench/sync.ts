/**
 * Sync benchmark (issue 4): the real IptablesProxier with the real Iptables wrapper, inside a
 * throwaway namespace. First full sync, then a partial sync after one endpoint of one Service
 * was replaced. The baseline is bare iptables-restore of exactly the transactions the proxier
 * wrote, into a second fresh namespace, timing only the restore calls.
 */
import { loadavg } from "node:os";
import { Registry } from "prom-client";
import type { RenderResult } from "../src/backends/iptables/types.ts";
import { IptablesProxier, type SyncReport } from "../src/backends/iptables/proxier.ts";
import { Iptables } from "../src/kernel/iptables.ts";
import type { IptablesInterface, RestoreOptions, RulePosition, Table } from "../src/kernel/iptables.ts";
import { createLogger } from "../src/log.ts";
import { ProxyStateStore } from "../src/proxy/changetracker.ts";
import { realClock } from "../src/proxy/clock.ts";
import { healthTimeoutForSyncPeriod, ProxyHealth } from "../src/proxy/health.ts";
import { createProxyMetrics } from "../src/proxy/metrics.ts";
import { runner, withBenchNetns } from "./netns.ts";
import type { Backend, Timing } from "./restore.ts";
import { formatMs, formatRatio, formatTiming, timeRestore, timeRestores } from "./restore.ts";
import { BENCH_NODE, benchSettings, sliceWithOneEndpointReplaced, syntheticCluster } from "./synthetic.ts";

/** Where the proxier's time went, from the wrapper's point of view. */
interface KernelCalls {
  restores: { payload: string; ms: number }[];
  /** iptables-save (stale-chain listing). */
  saveMs: number;
  /** Single iptables commands (jump rules, chain checks). */
  commandMs: number;
  commands: number;
}

const noCalls = (): KernelCalls => ({ restores: [], saveMs: 0, commandMs: 0, commands: 0 });

/** Delegates to the real Iptables and records every call's payload and wall time. */
class RecordingIptables implements IptablesInterface {
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

  async restore(payload: string, options?: RestoreOptions): Promise<void> {
    const started = performance.now();
    await this.inner.restore(payload, options);
    this.calls.restores.push({ payload, ms: performance.now() - started });
  }
  save(table?: Table) {
    return this.timed("saveMs", () => this.inner.save(table));
  }
  listChains(table: Table) {
    return this.timed("saveMs", () => this.inner.listChains(table));
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
  /** 1-minute load average before and after the row: the machine is shared. */
  readonly loadAverage: readonly [number, number];
  /** Bare restore of the whole sync as the single payload upstream writes (only where asked). */
  readonly singlePayload: Timing | null;
}

export interface SyncOptions {
  readonly sizes: readonly number[];
  readonly endpointsPerService: number;
  readonly backends: readonly Backend[];
  readonly capMs: number;
  /** Largest size at which the single-payload restore is timed on nft (legacy: every size). */
  readonly singlePayloadMax: number;
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
    payloadBytes: calls.restores.reduce((a, r) => a + Buffer.byteLength(r.payload), 0),
    bare: bare.total,
    bareEach: bare.each,
  };
}

/** The SEP chain whose DNAT goes to `ip`, among the chains a partial sync wrote. */
function endpointChainFor(result: RenderResult, ip: string): string | null {
  for (const block of result.nat.serviceBlocks) {
    const rule = block.ruleText.split("\n").find((l) => l.includes(`--to-destination ${ip}:`));
    if (rule !== undefined) return rule.split(" ")[1] ?? null;
  }
  return null;
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

  const logger = createLogger(0, "bench");
  logger.level = "warn";
  return withBenchNetns(async (netns) => {
    const ipt = new RecordingIptables(new Iptables({ runner, family: "IPv4", backend, netns }));
    const store = new ProxyStateStore({ family: "IPv4", nodeName: BENCH_NODE });
    for (const svc of cluster.services) store.serviceChanges.update(null, svc);
    for (const slice of cluster.endpointSlices) store.endpointsChanges.endpointSliceUpdate(slice, false);
    let lastResult: RenderResult | null = null;
    const proxier = new IptablesProxier({
      ipt,
      settings: benchSettings(),
      store,
      clock: realClock,
      log: logger,
      health: new ProxyHealth(healthTimeoutForSyncPeriod(30_000), realClock),
      metrics: createProxyMetrics(new Registry(), { mode: "iptables" }),
      syncPeriodMs: 30_000,
      onSync: (_report: SyncReport, _state, result) => {
        lastResult = result;
      },
    });
    proxier.setInitialized();

    log(`sync ${backend}: ${services} Services x ${eps} endpoints, full sync…`);
    let started = performance.now();
    const fullReport = await proxier.syncProxyRules();
    const fullMs = performance.now() - started;
    const fullCalls = ipt.take();
    const fullResult = lastResult as RenderResult | null;
    if (fullReport?.fullSync !== true || fullResult === null)
      throw new Error("first sync was not a full sync");
    log(`  ${formatMs(fullMs)} in ${fullCalls.restores.length} transaction(s); partial sync…`);

    if (!store.endpointsChanges.endpointSliceUpdate(changedSlice, false)) {
      throw new Error("the endpoint change was not seen as a change");
    }
    started = performance.now();
    const partialReport = await proxier.syncProxyRules();
    const partialMs = performance.now() - started;
    const partialCalls = ipt.take();
    const partialResult = lastResult as RenderResult | null;
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

    log(`  bare iptables-${backend}-restore of the same transactions in a fresh namespace…`);
    const bare = await withBenchNetns(async (bareNetns) => {
      const call = (payload: string) => ({
        backend,
        netns: bareNetns,
        payload,
        capMs: options.capMs,
        signal: options.signal,
      });
      const full = await timeRestores(fullCalls.restores.map((r) => call(r.payload)));
      const partial =
        full.total.status === "ok"
          ? await timeRestores(partialCalls.restores.map((r) => call(r.payload)))
          : { total: { status: "failed", ms: 0, error: "full restore did not complete" } as const, each: [] };
      return { full, partial };
    });
    log(`    full ${formatTiming(bare.full.total)}, partial ${formatTiming(bare.partial.total)}`);

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
    return {
      backend,
      services,
      endpointsPerService: eps,
      full: phase(fullMs, fullCalls, bare.full),
      partial: phase(partialMs, partialCalls, bare.partial),
      partialVerified,
      nextPartial,
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
