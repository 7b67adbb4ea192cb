/**
 * The scale lab's control-plane series (issue 16): per mode and number of Services, the full sync,
 * one endpoint changed and one Service added, each against the kernel's own cost of the same
 * transactions in the same run. It runs the existing benchmarks, one size at a time:
 * iptables-nft and iptables-legacy are the sync benchmark (bench/sync.ts: the real proxier against
 * bare iptables-restore of its transactions), nftables is the netlink benchmark
 * (bench/nftables-netlink.ts: the real writer against bare netlink of the same batches, and bare
 * `nft -f`). The modes' order alternates from one size to the next, as in the data path.
 */
import { loadavg } from "node:os";
import { runNetlinkBenchmark } from "../nftables-netlink.ts";
import type { NetlinkRow } from "../nftables-netlink.ts";
import type { Timing } from "../restore.ts";
import { lineChart } from "../svg.ts";
import type { Series } from "../svg.ts";
import { runSyncBenchmark } from "../sync.ts";
import type { SyncPhase, SyncRow } from "../sync.ts";
import type { LabMode } from "../lab.ts";

export interface ControlOptions {
  readonly sizes: readonly number[];
  readonly endpointsPerService: number;
  readonly modes: readonly LabMode[];
  /** Cap of one bare restore. */
  readonly capMs: number;
  /** Largest size at which bare `nft -f` is timed too (it is minutes at 10,000 x 10). */
  readonly nftFileMax: number;
  readonly signal: AbortSignal;
}

/** Ours and the kernel's limit for one operation, ms; `bare` null when it did not complete. */
export interface ControlTiming {
  readonly oursMs: number;
  readonly bareMs: number | null;
  /** nftables only: bare `nft -f` of the same transactions. */
  readonly nftFileMs?: number | null;
}

export interface ControlRow {
  readonly mode: LabMode;
  readonly services: number;
  readonly endpointsPerService: number;
  /** Set when the measurement failed (then the timings are zero and not drawn). */
  readonly error?: string;
  /** What the kernel-limit column is. */
  readonly bare: string;
  readonly transactions: number;
  readonly full: ControlTiming;
  readonly endpointChange: ControlTiming;
  readonly addService: ControlTiming;
  /** The benchmark process's peak RSS so far, MB (the daemon's is in the data-path rows). */
  readonly benchPeakRssMB: number;
  readonly elapsedS: number;
  readonly loadAverage: readonly [number, number];
}

const okMs = (t: Timing): number | null => (t.status === "ok" ? t.ms : null);
const timing = (p: SyncPhase): ControlTiming => ({ oursMs: p.wallMs, bareMs: okMs(p.bare) });

export function fromSyncRow(mode: LabMode, r: SyncRow, elapsedS: number): ControlRow {
  return {
    mode,
    services: r.services,
    endpointsPerService: r.endpointsPerService,
    bare: `iptables-${r.backend}-restore`,
    transactions: r.full.transactions,
    full: timing(r.full),
    endpointChange: timing(r.partial),
    addService: timing(r.addOne),
    benchPeakRssMB: Math.round(process.resourceUsage().maxRSS / 1024),
    elapsedS,
    loadAverage: r.loadAverage,
  };
}

export function fromNetlinkRow(r: NetlinkRow, elapsedS: number, load: readonly [number, number]): ControlRow {
  const partial = (change: string): ControlTiming => {
    const p = r.partials.find((x) => x.change === change);
    if (p === undefined) return { oursMs: 0, bareMs: null };
    return { oursMs: p.ours.wallS * 1000, bareMs: p.bareNetlink.wallS * 1000, nftFileMs: p.bareNftS * 1000 };
  };
  return {
    mode: "nftables",
    services: r.services,
    endpointsPerService: r.endpoints,
    bare: "netlink",
    transactions: r.transactions,
    full: {
      oursMs: r.ours.wallS * 1000,
      bareMs: r.bareNetlink.wallS * 1000,
      nftFileMs: r.bareNftS === null ? null : r.bareNftS * 1000,
    },
    endpointChange: partial("replace one endpoint"),
    addService: partial("add one Service"),
    benchPeakRssMB: r.benchPeakRssMB,
    elapsedS,
    loadAverage: load,
  };
}

export async function runControlPlane(
  options: ControlOptions,
  log: (line: string) => void,
): Promise<ControlRow[]> {
  const rows: ControlRow[] = [];
  const eps = options.endpointsPerService;
  for (const [i, services] of options.sizes.entries()) {
    const modes = i % 2 === 0 ? options.modes : [...options.modes].reverse();
    for (const mode of modes) {
      if (options.signal.aborted) return rows;
      log(`lab control plane: ${mode} at ${services} x ${eps}`);
      const started = performance.now();
      const loadBefore = loadavg()[0] ?? 0;
      try {
        const measured = await oneSize(mode, services, options, log);
        rows.push(...measured);
        for (const line of controlTable(measured).split("\n").slice(2)) log(`  ${line}`);
      } catch (err) {
        // One size failing (a restore past its timeout on a loaded machine) ends that row only.
        if (options.signal.aborted) throw err;
        const error = (err as Error).message.split("\n")[0]!.slice(0, 300);
        log(`  failed: ${error}`);
        const none: ControlTiming = { oursMs: 0, bareMs: null };
        rows.push({
          mode,
          services,
          endpointsPerService: eps,
          error,
          bare: "",
          transactions: 0,
          full: none,
          endpointChange: none,
          addService: none,
          benchPeakRssMB: Math.round(process.resourceUsage().maxRSS / 1024),
          elapsedS: (performance.now() - started) / 1000,
          loadAverage: [loadBefore, loadavg()[0] ?? 0],
        });
      }
    }
  }
  return rows;
}

async function oneSize(
  mode: LabMode,
  services: number,
  options: ControlOptions,
  log: (line: string) => void,
): Promise<ControlRow[]> {
  const eps = options.endpointsPerService;
  const started = performance.now();
  const loadBefore = loadavg()[0] ?? 0;
  const elapsedS = () => (performance.now() - started) / 1000;
  if (mode === "nftables") {
    const { rows } = await runNetlinkBenchmark(
      {
        sizes: [{ services, endpoints: eps }],
        servicesPerTransaction: "adaptive",
        chunks: [],
        withNft: services <= options.nftFileMax,
        probes: false,
        daemonRss: false,
      },
      log,
    );
    return rows.map((r) => fromNetlinkRow(r, elapsedS(), [loadBefore, loadavg()[0] ?? 0]));
  }
  const rows = await runSyncBenchmark(
    {
      sizes: [services],
      endpointsPerService: eps,
      backends: [mode === "iptables-nft" ? "nft" : "legacy"],
      capMs: options.capMs,
      singlePayloadMax: 0,
      rounds: 1,
      signal: options.signal,
    },
    log,
  );
  return rows.map((r) => fromSyncRow(mode, r, elapsedS()));
}

const fmt = (ms: number | null | undefined): string =>
  ms === null || ms === undefined ? "—" : ms >= 1000 ? `${(ms / 1000).toFixed(2)} s` : `${ms.toFixed(0)} ms`;
const ratio = (t: ControlTiming): string =>
  t.bareMs === null || t.bareMs <= 0 ? "—" : `${(t.oursMs / t.bareMs).toFixed(2)}×`;
const cell = (t: ControlTiming): string =>
  `${fmt(t.oursMs)} / ${fmt(t.bareMs)} (${ratio(t)})${t.nftFileMs === undefined ? "" : `; nft -f ${fmt(t.nftFileMs)}`}`;

export function controlTable(rows: readonly ControlRow[]): string {
  const out = [
    "| mode | Services x eps | kernel limit | transactions | full sync: ours / limit (ratio) | one endpoint changed | one Service added | bench peak RSS | took | load avg |",
    "|---|---|---|---|---|---|---|---|---|---|",
  ];
  for (const r of rows) {
    const measured =
      r.error === undefined
        ? `bare ${r.bare} | ${r.transactions} | ${cell(r.full)} | ${cell(r.endpointChange)} | ${cell(r.addService)}`
        : `failed: ${r.error} | | | |`;
    out.push(
      `| ${r.mode} | ${r.services.toLocaleString("en-US")} x ${r.endpointsPerService} | ${measured} | ` +
        `${r.benchPeakRssMB} MB | ${r.elapsedS.toFixed(0)} s | ${r.loadAverage[0].toFixed(1)} → ${r.loadAverage[1].toFixed(1)} |`,
    );
  }
  return out.join("\n");
}

/**
 * Per operation one chart: each mode's time (solid) and, in the same colour, dashed, the
 * kernel's own time for the same transactions; nftables also gets `nft -f` (dotted).
 */
export function controlCharts(rows: readonly ControlRow[], subtitle: string): Record<string, string> {
  const modes = [...new Set(rows.map((r) => r.mode))];
  const chart = (pick: (r: ControlRow) => ControlTiming, what: string): string => {
    const series: Series[] = modes.flatMap((mode, colour) => {
      const of = rows.filter((r) => r.mode === mode && r.error === undefined);
      const line = (
        name: string,
        y: (t: ControlTiming) => number | null | undefined,
        dash?: "dashed" | "dotted",
      ) => ({
        name,
        colour,
        ...(dash === undefined ? {} : { dash }),
        points: of
          .map((r) => ({ x: r.services, y: y(pick(r)) }))
          .filter((p): p is { x: number; y: number } => p.y !== null && p.y !== undefined)
          .map((p) => ({ x: p.x, y: p.y / 1000 })),
      });
      return [
        line(mode, (t) => t.oursMs),
        line(`${mode} bare`, (t) => t.bareMs, "dashed"),
        ...(mode === "nftables" ? [line("nft -f", (t) => t.nftFileMs, "dotted")] : []),
      ].filter((s) => s.points.length > 0);
    });
    return lineChart({
      title: `${what}: ours (solid) against the kernel's own cost (dashed)`,
      subtitle: `${subtitle}; bare = the same transactions by iptables-restore or a plain netlink socket`,
      xLabel: "Services (log scale)",
      yLabel: "seconds",
      series,
    });
  };
  return {
    "lab-control-full-sync.svg": chart((r) => r.full, "Full sync"),
    "lab-control-endpoint-change.svg": chart((r) => r.endpointChange, "One endpoint changed"),
    "lab-control-add-service.svg": chart((r) => r.addService, "One Service added"),
  };
}
