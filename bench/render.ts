/**
 * Render benchmark (issue 3): buildProxyState + renderIptables for S Services x E endpoints,
 * against `iptables-restore --test` of the same payload on both iptables backends.
 *
 * Each size is rendered in its own child process so that its peak RSS is its own (the
 * high-water mark of a process never goes down), and the child hands the payload back through a
 * temporary file for the kernel tools.
 */
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { renderIptables } from "../src/backends/iptables/render.ts";
import { buildProxyState } from "../src/proxy/state.ts";
import { runner, withBenchNetns } from "./netns.ts";
import type { Backend, Timing } from "./restore.ts";
import { formatMs, formatRatio, formatTiming, timeRestore } from "./restore.ts";
import { BENCH_NODE, benchSettings, syntheticCluster } from "./synthetic.ts";

const MB = 1024 * 1024;

/** What the child measures for one size. Times in ms, sizes in bytes. */
export interface RenderSample {
  readonly services: number;
  readonly endpointsPerService: number;
  /** Generating + decoding the API objects (not part of the render; shown for scale). */
  readonly decodeMs: number;
  /** First run in a fresh process: what a daemon's first full sync pays. */
  readonly cold: { readonly stateMs: number; readonly renderMs: number };
  /** Fastest of the repeated runs (JIT warm), when repeats > 1. */
  readonly warm: { readonly stateMs: number; readonly renderMs: number } | null;
  readonly rssAfterInputs: number;
  readonly peakRss: number;
  readonly payloadBytes: number;
  readonly payloadLines: number;
  readonly natRules: number;
  readonly largeClusterMode: boolean;
}

/** The child side: everything in this process, payload written to `payloadPath`. */
export function renderSample(
  services: number,
  endpointsPerService: number,
  repeats: number,
  payloadPath: string,
): RenderSample {
  let t = performance.now();
  const cluster = syntheticCluster(services, endpointsPerService);
  const decodeMs = performance.now() - t;
  const rssAfterInputs = process.memoryUsage().rss;
  let peakSampled = rssAfterInputs;
  const settings = benchSettings();
  const runs: { stateMs: number; renderMs: number }[] = [];
  let payload = "";
  let natRules = 0;
  let largeClusterMode = false;
  for (let i = 0; i < repeats; i++) {
    t = performance.now();
    const { state, problems } = buildProxyState(
      { services: cluster.services, endpointSlices: cluster.endpointSlices, node: null },
      { family: "IPv4", nodeName: BENCH_NODE },
    );
    const stateMs = performance.now() - t;
    if (problems.length > 0) throw new Error(`synthetic objects rejected: ${problems[0]?.message}`);
    t = performance.now();
    const result = renderIptables({
      state,
      settings,
      fullSync: true,
      changedServices: new Set(),
      existingNatChains: [],
    });
    const renderMs = performance.now() - t;
    peakSampled = Math.max(peakSampled, process.memoryUsage().rss);
    runs.push({ stateMs, renderMs });
    payload = result.payload;
    natRules = result.counts.natRulesWritten;
    largeClusterMode = result.largeClusterMode;
  }
  const cold = runs[0];
  if (cold === undefined) throw new RangeError("repeats must be ≥ 1");
  const warmRuns = runs.slice(1);
  const warm =
    warmRuns.length === 0
      ? null
      : warmRuns.reduce((a, b) => (a.stateMs + a.renderMs <= b.stateMs + b.renderMs ? a : b));
  // maxRSS is in KiB and also sees peaks between samples (e.g. inside the final join).
  const peakRss = Math.max(peakSampled, process.resourceUsage().maxRSS * 1024);
  writeFileSync(payloadPath, payload);
  let payloadLines = 0;
  for (let i = payload.indexOf("\n"); i >= 0; i = payload.indexOf("\n", i + 1)) payloadLines++;
  return {
    services,
    endpointsPerService,
    decodeMs,
    cold,
    warm,
    rssAfterInputs,
    peakRss,
    payloadBytes: Buffer.byteLength(payload),
    payloadLines,
    natRules,
    largeClusterMode,
  };
}

export interface RenderOptions {
  readonly sizes: readonly number[];
  readonly endpointsPerService: number;
  readonly repeats: number;
  readonly capMs: number;
  readonly backends: readonly Backend[];
  readonly signal: AbortSignal;
}

export interface RenderRow {
  readonly sample: RenderSample;
  readonly tools: ReadonlyMap<Backend, Timing>;
}

const CHILD_FLAG = "--render-child";

/** Argv of a child run of `bench/run.ts` measuring one size. */
function childArgv(services: number, options: RenderOptions, payloadPath: string): string[] {
  const runTs = fileURLToPath(new URL("./run.ts", import.meta.url));
  return [
    process.execPath,
    ...process.execArgv,
    runTs,
    CHILD_FLAG,
    JSON.stringify({ services, eps: options.endpointsPerService, repeats: options.repeats, payloadPath }),
  ];
}

/** If this process is a render child, does the work, prints the JSON sample and returns true. */
export function maybeRunRenderChild(argv: readonly string[]): boolean {
  const i = argv.indexOf(CHILD_FLAG);
  if (i < 0) return false;
  const spec = JSON.parse(argv[i + 1] ?? "{}") as {
    services: number;
    eps: number;
    repeats: number;
    payloadPath: string;
  };
  const sample = renderSample(spec.services, spec.eps, spec.repeats, spec.payloadPath);
  process.stdout.write(JSON.stringify(sample) + "\n");
  return true;
}

export async function runRenderBenchmark(
  options: RenderOptions,
  log: (line: string) => void,
): Promise<RenderRow[]> {
  const rows: RenderRow[] = [];
  const dir = mkdtempSync(join(tmpdir(), "kpt-bench-"));
  try {
    for (const services of options.sizes) {
      const payloadPath = join(dir, `payload-${services}.txt`);
      log(`render: ${services} Services x ${options.endpointsPerService} endpoints…`);
      const child = await runner.run(childArgv(services, options, payloadPath), {
        timeoutMs: 30 * 60_000,
        signal: options.signal,
      });
      const sample = JSON.parse(child.stdout) as RenderSample;
      log(
        `  state ${formatMs(sample.cold.stateMs)} + render ${formatMs(sample.cold.renderMs)}, ` +
          `peak RSS ${(sample.peakRss / MB).toFixed(0)} MB, ${sample.payloadLines} lines`,
      );
      const payload = readFileSync(payloadPath, "utf8");
      rmSync(payloadPath);
      const tools = new Map<Backend, Timing>();
      for (const backend of options.backends) {
        log(`  iptables-${backend}-restore --test (cap ${formatMs(options.capMs)})…`);
        const timing = await withBenchNetns((netns) =>
          timeRestore({ backend, netns, payload, test: true, capMs: options.capMs, signal: options.signal }),
        );
        log(`    ${formatTiming(timing)}`);
        tools.set(backend, timing);
      }
      rows.push({ sample, tools });
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  return rows;
}

export function renderTable(rows: readonly RenderRow[], backends: readonly Backend[]): string {
  const head = [
    "Services x eps",
    "buildProxyState",
    "renderIptables",
    "total (cold)",
    "total (warm)",
    "peak RSS",
    "RSS after inputs",
    "payload",
    ...backends.map((b) => `iptables-${b}-restore --test`),
    ...backends.map((b) => `ratio vs ${b}`),
  ];
  const lines = [`| ${head.join(" | ")} |`, `|${head.map(() => "---").join("|")}|`];
  for (const { sample: s, tools } of rows) {
    const total = s.cold.stateMs + s.cold.renderMs;
    const cells = [
      `${s.services.toLocaleString("en-US")} x ${s.endpointsPerService}`,
      formatMs(s.cold.stateMs),
      formatMs(s.cold.renderMs),
      formatMs(total),
      s.warm === null ? "-" : formatMs(s.warm.stateMs + s.warm.renderMs),
      `${(s.peakRss / MB).toFixed(0)} MB`,
      `${(s.rssAfterInputs / MB).toFixed(0)} MB`,
      `${(s.payloadBytes / MB).toFixed(1)} MB, ${s.payloadLines.toLocaleString("en-US")} lines`,
      ...backends.map((b) => {
        const t = tools.get(b);
        return t === undefined ? "-" : formatTiming(t);
      }),
      ...backends.map((b) => {
        const t = tools.get(b);
        return t === undefined ? "-" : formatRatio(total, t);
      }),
    ];
    lines.push(`| ${cells.join(" | ")} |`);
  }
  return lines.join("\n");
}
