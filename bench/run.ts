/**
 * `npm run bench [-- options]`: the render benchmark (issue 3), the sync benchmark (issue 4) and
 * the start-up benchmark (issue 11) and, when asked for, the scale lab (issue 16), printed as
 * Markdown tables with the targets. See bench/README.md for what each number means.
 */
import { readFileSync, writeFileSync } from "node:fs";
import { loadavg } from "node:os";
import { parseArgs } from "node:util";
import { detectBackend } from "../src/kernel/detect.ts";
import { deleteLiveNetns, deleteNetnsOnSignals, runner } from "./netns.ts";
import { maybeRunRenderChild, renderTable, runRenderBenchmark } from "./render.ts";
import type { RenderRow } from "./render.ts";
import type { Backend } from "./restore.ts";
import {
  coldStartTable,
  DAEMON_NODE_FLAGS,
  runColdStart,
  runStartupBenchmark,
  startupTable,
} from "./startup.ts";
import type { ColdStartRow, StartupMode, StartupRow } from "./startup.ts";
import { parseDuration } from "../src/config/duration.ts";
import { runSoak, soakTable, writeSoakSvg } from "./soak.ts";
import { chunkingTable, runSyncBenchmark, syncTable } from "./sync.ts";
import { LAB_MODES, labDefaults, labGoal, labTable, runLab, writeLabCharts } from "./lab.ts";
import type { LabMode, LabRow } from "./lab.ts";
import { controlTable, runControlPlane } from "./lab/control.ts";
import type { ControlRow } from "./lab/control.ts";
import { runVmLab } from "./lab/vm.ts";
import {
  chunkTable,
  loadAverage,
  netlinkTable,
  partialTable,
  probeTable,
  runNetlinkBenchmark,
  type ChunkPolicy,
  type NetlinkRow,
} from "./nftables-netlink.ts";
import type { SyncRow } from "./sync.ts";

const USAGE = `usage: npm run bench -- [options]
  --sizes 1000,10000        Service counts (default: the issues' 1000,10000)
  --endpoints 10            endpoints per Service
  --quick                   a smoke run: 200 Services, 30 s cap, 1 render repeat
  --only render|sync|startup|nftables-netlink|lab|soak  run one benchmark (the scale lab and soak run only when asked for)
  --plot                    run the scale lab and write its SVG charts into docs/bench/
  --plot-from FILE          only draw the lab's charts (and print its table) from an earlier --json FILE
  --lab-sizes 100,1000,10000,30000  Service counts of the scale lab's data path (quick: 100,1000; up to 50000)
  --lab-parts data,control  the lab's parts: data (the data path), control (sync times against the
                            kernel's limit), ipvs (the data path in the emulated VM; opt-in)
  --control-sizes 1000,10000,30000  Service counts of the lab's control plane (quick: 1000; 50000 opt-in)
  --nft-file-max 1000       the lab's control plane times bare nft -f up to this many Services
  --vm-sizes 100,1000       Service counts of the lab's ipvs series in the VM (quick: 100)
  --lab-modes iptables-nft,iptables-legacy,nftables  the lab's series
  --lab-endpoints 1         endpoints per Service in the scale lab
  --lab-rounds 3            measurements per lab size and mode, each after the machine settled;
                            a row gives their medians (quick: 1)
  --connections 2000        new TCP connections (and first UDP packets) per lab measurement
  --nft-sizes 1000x10       nftables netlink benchmark sizes (SxE, comma-separated; e.g. 10000x10,5000x50)
  --nft-chunks 250,adaptive also time bare netlink full syncs of every size at these Services per
                            transaction ("adaptive": the writer's default, which grows with the table)
  --nft-chunks-only         nftables netlink benchmark: only those bare netlink full syncs
  --nft-policy adaptive     Services per transaction of our writer in the benchmark (a number or adaptive)
  --no-nft                  nftables netlink benchmark: skip bare nft -f of the full sync (partial syncs still compared)
  --no-nft-probes           nftables netlink benchmark: skip the small probe transactions
  --nft-rss                 nftables netlink benchmark: also the compiled daemon's VmHWM per size (npm run build first)
  --backends nft,legacy     iptables backends for the sync rows (default: detected, then the other)
  --cap-seconds 120         time cap for one kernel-tool measurement
  --repeats 2               render runs per size (first = cold, best of the rest = warm)
  --single-payload-max 1000 largest size at which one unchunked nft payload is timed
  --rounds 5                full syncs per sync row, each against its own bare replay (median ratio);
                            start-up rounds per size (default 3)
  --cold-runs 15            cold-start runs per CLI command (start-up benchmark; 0: skip the cold starts)
  --proxy-mode iptables     the start-up benchmark's daemon mode: iptables or nftables (no bare baseline)
  --json FILE               also write all results as JSON
  soak: --duration 2m       how long the churn runs (e.g. 30m)
        --sample-every 10s  how often RSS, heap, fds and sync latency are read
        --soak-services 100 most churned Services at once
        --churn-every 500ms one random manifest change this often
        --seed 1            the churn's random seed
        --svg docs/bench/soak.svg  where the plot goes`;

function parseSizes(text: string): number[] {
  const sizes = text.split(",").map((s) => Number(s.trim()));
  if (sizes.some((n) => !Number.isInteger(n) || n < 1)) throw new Error(`bad --sizes: ${text}`);
  return sizes;
}

function parseBackends(text: string): Backend[] {
  const out = text.split(",").map((s) => s.trim());
  for (const b of out) if (b !== "nft" && b !== "legacy") throw new Error(`bad backend: ${b}`);
  return out as Backend[];
}

function positive(text: string, flag: string): number {
  const n = Number(text);
  if (!Number.isFinite(n) || n <= 0) throw new Error(`bad ${flag}: ${text}`);
  return n;
}

/** `--only soak`: the soak (bench/soak.ts), its table on stdout and its plot in `--svg`. */
async function soak(values: Record<string, string | boolean | undefined>): Promise<void> {
  const text = (name: string) => String(values[name]);
  const options = {
    durationMs: parseDuration(text("duration"), "--duration"),
    sampleMs: parseDuration(text("sample-every"), "--sample-every"),
    maxServices: Math.floor(positive(text("soak-services"), "--soak-services")),
    churnMs: parseDuration(text("churn-every"), "--churn-every"),
    seed: Math.floor(Number(text("seed"))),
  };
  const started = new Date();
  const load = loadavg()
    .map((l) => l.toFixed(2))
    .join(" ");
  console.log(`# kube-proxy-ts soak, ${started.toISOString()}`);
  console.log(
    `node ${process.version}; ${options.durationMs / 1000} s, a sample every ${options.sampleMs / 1000} s, ` +
      `one change every ${options.churnMs} ms, at most ${options.maxServices} churned Services, seed ${options.seed}; ` +
      `load average at the start ${load}\n`,
  );
  const result = await runSoak(options, (line) => console.error(line));
  console.log(soakTable(result));
  console.log(
    `\nload average at the end ${loadavg()
      .map((l) => l.toFixed(2))
      .join(" ")}`,
  );
  const svg = text("svg");
  writeSoakSvg(
    svg,
    result,
    `kube-proxy-ts soak ${started.toISOString().slice(0, 16)}Z: ${Math.round(result.durationS)} s, ${result.changes} changes`,
  );
  console.log(`plot: ${svg}`);
  if (values.json !== undefined)
    writeFileSync(String(values.json), JSON.stringify({ started, options, result }));
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      sizes: { type: "string" },
      endpoints: { type: "string", default: "10" },
      quick: { type: "boolean", default: false },
      only: { type: "string" },
      backends: { type: "string" },
      "cap-seconds": { type: "string" },
      repeats: { type: "string" },
      "single-payload-max": { type: "string", default: "1000" },
      rounds: { type: "string" },
      "cold-runs": { type: "string" },
      "proxy-mode": { type: "string", default: "iptables" },
      json: { type: "string" },
      plot: { type: "boolean", default: false },
      "plot-from": { type: "string" },
      "lab-sizes": { type: "string" },
      "lab-modes": { type: "string" },
      connections: { type: "string" },
      "lab-endpoints": { type: "string", default: "1" },
      "lab-rounds": { type: "string" },
      "lab-parts": { type: "string", default: "data,control" },
      "control-sizes": { type: "string" },
      "nft-file-max": { type: "string", default: "1000" },
      "vm-sizes": { type: "string" },
      duration: { type: "string", default: "2m" },
      "sample-every": { type: "string", default: "10s" },
      "soak-services": { type: "string", default: "100" },
      "churn-every": { type: "string", default: "500ms" },
      seed: { type: "string", default: "1" },
      svg: { type: "string", default: "docs/bench/soak.svg" },
      "nft-sizes": { type: "string" },
      "nft-chunks": { type: "string" },
      "nft-chunks-only": { type: "boolean", default: false },
      "nft-policy": { type: "string", default: "adaptive" },
      "no-nft": { type: "boolean", default: false },
      "no-nft-probes": { type: "boolean", default: false },
      "nft-rss": { type: "boolean", default: false },
      help: { type: "boolean", default: false },
    },
  });
  if (values.help) {
    console.log(USAGE);
    return;
  }
  if (values["plot-from"] !== undefined) {
    const saved = JSON.parse(readFileSync(values["plot-from"], "utf8")) as {
      started: string;
      lab?: LabRow[];
      labControl?: ControlRow[];
    };
    const rows = saved.lab ?? [];
    const control = saved.labControl ?? [];
    if (rows.length + control.length === 0) throw new Error(`${values["plot-from"]} has no scale-lab rows`);
    if (rows.length > 0) console.log(`${labTable(rows)}\n\n${labGoal(rows)}`);
    if (control.length > 0) console.log(`\n${controlTable(control)}`);
    console.log(`\nCharts: ${writeLabCharts(rows, control, new Date(saved.started)).join(", ")}`);
    return;
  }
  const quick = values.quick;
  const sizes = parseSizes(values.sizes ?? (quick ? "200" : "1000,10000"));
  const endpointsPerService = Math.floor(positive(values.endpoints, "--endpoints"));
  const capMs = 1000 * positive(values["cap-seconds"] ?? (quick ? "30" : "120"), "--cap-seconds");
  const repeats = Math.floor(positive(values.repeats ?? (quick ? "1" : "2"), "--repeats"));
  const only = values.only;
  if (only !== undefined && !["render", "sync", "startup", "nftables-netlink", "lab", "soak"].includes(only))
    throw new Error(`bad --only: ${only}`);
  const plot = values.plot;
  const runs = (name: string) =>
    name === "lab" ? only === "lab" || plot : only === undefined ? !plot : only === name;
  if (only === "soak") {
    await soak(values);
    return;
  }

  const abort = new AbortController();
  deleteNetnsOnSignals(abort);
  const log = (line: string) => console.error(line);
  const detected = await detectBackend(runner);
  const syncBackends =
    values.backends === undefined
      ? ([detected.backend, detected.backend === "nft" ? "legacy" : "nft"] as Backend[])
      : parseBackends(values.backends);
  const started = new Date();
  console.log(`# kube-proxy-ts benchmarks, ${started.toISOString()}`);
  console.log(
    `node ${process.version}, detected iptables backend: ${detected.backend} (${detected.reason}); ` +
      `sizes ${sizes.join(", ")} Services x ${endpointsPerService} endpoints; cap ${capMs / 1000} s`,
  );

  let renderRows: RenderRow[] = [];
  let syncRows: SyncRow[] = [];
  let coldRows: ColdStartRow[] = [];
  let startupRows: StartupRow[] = [];
  let labRows: LabRow[] = [];
  let labControlRows: ControlRow[] = [];
  let netlinkRows: NetlinkRow[] = [];
  try {
    if (runs("render")) {
      const backends: Backend[] = ["nft", "legacy"];
      renderRows = await runRenderBenchmark(
        { sizes, endpointsPerService, repeats, capMs, backends, signal: abort.signal },
        log,
      );
      console.log("\n## Render (issue 3): buildProxyState + renderIptables vs iptables-restore --test\n");
      console.log(renderTable(renderRows, backends));
      console.log("\nTargets at 10,000 Services: render total ≤ 0.25× the kernel tool; peak RSS ≤ 300 MB.");
    }
    if (runs("sync")) {
      syncRows = await runSyncBenchmark(
        {
          sizes,
          endpointsPerService,
          backends: syncBackends,
          capMs,
          singlePayloadMax: positive(values["single-payload-max"], "--single-payload-max"),
          rounds: Math.floor(positive(values.rounds ?? (quick ? "1" : "5"), "--rounds")),
          signal: abort.signal,
        },
        log,
      );
      console.log("\n## Sync (issue 4): IptablesProxier.syncProxyRules in a network namespace\n");
      console.log(syncTable(syncRows));
      console.log(
        "\nTargets: full sync ≤ 1.15× bare restore of the same transactions (median of the rounds' ratios); partial ≤ 10% of full.",
      );
      const chunking = chunkingTable(syncRows);
      if (chunking !== "") console.log(`\n### Why chunking\n\n${chunking}`);
    }
    if (runs("startup")) {
      const proxyMode = values["proxy-mode"];
      if (proxyMode !== "iptables" && proxyMode !== "nftables")
        throw new Error(`bad --proxy-mode: ${proxyMode}`);
      const startupOptions = {
        sizes,
        proxyMode: proxyMode as StartupMode,
        endpointsPerService,
        backend: detected.backend,
        rounds: Math.floor(positive(values.rounds ?? (quick ? "1" : "3"), "--rounds")),
        coldRuns:
          values["cold-runs"] === "0"
            ? 0
            : Math.floor(positive(values["cold-runs"] ?? (quick ? "3" : "15"), "--cold-runs")),
        capMs,
        signal: abort.signal,
      };
      if (startupOptions.coldRuns > 0) {
        coldRows = await runColdStart(startupOptions, log);
        console.log("\n## Start-up (issue 11): CLI cold start, compiled build\n");
        console.log(coldStartTable(coldRows));
        console.log("\nTarget: `render` of the seed example ≤ 150 ms.");
      }
      startupRows = await runStartupBenchmark(startupOptions, log);
      console.log(
        proxyMode === "iptables"
          ? `\n## Start-up (issue 11): daemon start to working Services vs bare iptables-${detected.backend}-restore\n`
          : "\n## Start-up (issue 11): daemon start to working Services, nftables mode\n",
      );
      console.log(startupTable(startupRows));
      console.log(
        `\nThe daemon runs as the image runs it: node ${DAEMON_NODE_FLAGS.join(" ")} (deploy/Dockerfile's NODE_OPTIONS).` +
          "\nTargets: start → working ≤ 1.5× the bare restores (median of the rounds' ratios); daemon RSS ≤ 200 MB after 10,000 x 10.",
      );
    }
    if (runs("lab")) {
      const modes = (values["lab-modes"] ?? LAB_MODES.join(",")).split(",").map((m) => m.trim());
      for (const m of modes) if (!LAB_MODES.includes(m as LabMode)) throw new Error(`bad --lab-modes: ${m}`);
      const parts = new Set(values["lab-parts"].split(",").map((p) => p.trim()));
      for (const p of parts)
        if (!["data", "control", "ipvs"].includes(p)) throw new Error(`bad --lab-parts: ${p}`);
      const labEndpoints = Math.floor(positive(values["lab-endpoints"], "--lab-endpoints"));
      const defaults = labDefaults(quick);
      const connections = Math.floor(
        positive(values.connections ?? String(defaults.connections), "--connections"),
      );
      const took: string[] = [];
      const timed = async <T>(part: string, body: () => Promise<T>): Promise<T> => {
        const t0 = performance.now();
        const out = await body();
        took.push(`${part} ${((performance.now() - t0) / 60_000).toFixed(1)} min`);
        return out;
      };
      if (parts.has("data")) {
        labRows = await timed("data path", () =>
          runLab(
            {
              sizes: parseSizes(values["lab-sizes"] ?? defaults.dataSizes.join(",")),
              endpointsPerService: labEndpoints,
              modes: modes as LabMode[],
              connections,
              rounds: Math.floor(positive(values["lab-rounds"] ?? String(defaults.rounds), "--lab-rounds")),
              ratePerSecond: 500,
              programCapMs: 10 * capMs,
              signal: abort.signal,
            },
            log,
          ),
        );
      }
      if (parts.has("ipvs")) {
        const vmRows = await timed("ipvs in the VM", () =>
          runVmLab(
            {
              sizes: parseSizes(values["vm-sizes"] ?? defaults.vmSizes.join(",")),
              endpointsPerService: labEndpoints,
              connections,
              ratePerSecond: 500,
              programCapMs: 10 * capMs,
            },
            log,
          ),
        );
        labRows = [...labRows, ...vmRows];
      }
      if (parts.has("control")) {
        labControlRows = await timed("control plane", () =>
          runControlPlane(
            {
              sizes: parseSizes(values["control-sizes"] ?? defaults.controlSizes.join(",")),
              endpointsPerService: labEndpoints,
              modes: modes as LabMode[],
              capMs: 10 * capMs,
              nftFileMax: positive(values["nft-file-max"], "--nft-file-max"),
              signal: abort.signal,
            },
            log,
          ),
        );
      }
      if (labRows.length > 0) {
        console.log("\n## Scale lab (issue 16): the data path at growing numbers of Services\n");
        console.log(`${labTable(labRows)}\n\n${labGoal(labRows)}`);
      }
      if (labControlRows.length > 0) {
        console.log("\n## Scale lab (issue 16): the control plane against the kernel's own limit\n");
        console.log(controlTable(labControlRows));
      }
      console.log(
        `\nLab parts took: ${took.join(", ")}; load average now ${loadavg()
          .map((l) => l.toFixed(2))
          .join(" ")}`,
      );
      if (plot) console.log(`\nCharts: ${writeLabCharts(labRows, labControlRows, started).join(", ")}`);
    }
    if (runs("nftables-netlink")) {
      const nftSizes = (values["nft-sizes"] ?? (quick ? "200x10" : "1000x10")).split(",").map((t) => {
        const m = /^(\d+)x(\d+)$/.exec(t.trim());
        if (m === null) throw new Error(`bad --nft-sizes: ${t}`);
        return { services: Number(m[1]), endpoints: Number(m[2]) };
      });
      const policy = (text: string): ChunkPolicy => {
        if (text.trim() === "adaptive") return "adaptive";
        const n = Number(text);
        if (!Number.isInteger(n) || n <= 0) throw new Error(`bad Services per transaction: ${text}`);
        return n;
      };
      const chunks = values["nft-chunks"] === undefined ? [] : values["nft-chunks"].split(",").map(policy);
      const result = await runNetlinkBenchmark(
        {
          sizes: nftSizes,
          servicesPerTransaction: policy(values["nft-policy"]),
          chunks,
          chunksOnly: values["nft-chunks-only"],
          withNft: !values["no-nft"],
          probes: !values["no-nft-probes"],
          daemonRss: values["nft-rss"],
        },
        log,
      );
      netlinkRows = result.rows;
      console.log(
        `\n## nftables mode over netlink (issue 12): full sync, IPv4 (load now ${loadAverage()})\n`,
      );
      console.log(netlinkTable(result.rows));
      console.log("\n### Partial syncs on that table\n");
      console.log(partialTable(result.rows));
      const probes = probeTable(result.rows);
      if (probes !== "")
        console.log(`\n### What one small transaction costs the kernel on that table\n\n${probes}`);
      console.log(
        "\nTargets: full sync ≤ 1.2× bare netlink of the same batches; a partial sync ≤ 1.2× bare netlink and ≥ 5× faster than nft -f of it; daemon VmHWM ≤ 200 MB at 10,000 × 10.",
      );
      const chunking = chunkTable(result.chunkRows);
      if (chunking !== "") console.log(`\n### Services per transaction\n\n${chunking}`);
    }
  } finally {
    await deleteLiveNetns();
  }
  if (values.json !== undefined) {
    writeFileSync(
      values.json,
      JSON.stringify(
        {
          started,
          detected,
          render: renderRows,
          sync: syncRows,
          coldStart: coldRows,
          startup: startupRows,
          lab: labRows,
          labControl: labControlRows,
          nftablesNetlink: netlinkRows,
        },
        (_k, v: unknown) => (v instanceof Map ? Object.fromEntries(v) : v),
      ),
    );
  }
}

if (!maybeRunRenderChild(process.argv)) {
  main().catch(async (err: unknown) => {
    await deleteLiveNetns();
    console.error(err);
    process.exit(1);
  });
}
