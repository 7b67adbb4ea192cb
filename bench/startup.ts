/**
 * Start-up benchmark (issue 11): what a user waits for.
 *
 * 1. CLI cold start: `kube-proxy-ts --version` and `render` of the seed example, each a fresh
 *    compiled process, against a bare `node -e 0` measured interleaved in the same run.
 * 2. Start to working Services: the compiled daemon started inside a fresh network namespace on a
 *    manifests folder of S Services x E endpoints, the clock running from just before the process
 *    is spawned until a poll of the kernel sees every Service's jump in KUBE-SERVICES. The baseline
 *    is bare iptables-restore of the transactions our proxier writes for the same cluster, into
 *    another fresh namespace, timing only the restore calls; the ratio is the median over rounds.
 *    The daemon's RSS is read from /proc when the Services work and again once it is idle.
 *    `proxyMode: "nftables"` starts the daemon in nftables mode and polls the `service-ips` map
 *    instead; that mode has no bare-restore baseline here (bench/nftables-netlink.ts has its own).
 */
import { existsSync, readFileSync, writeFileSync } from "node:fs";
import { loadavg } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { setTimeout as sleep } from "node:timers/promises";
import { stringify } from "yaml";
import { spawnBackground } from "../src/kernel/spawn.ts";
import type { BackgroundProcess } from "../src/kernel/spawn.ts";
import { benchTempDir, removeBenchTempDir, runner, withBenchNetns } from "./netns.ts";
import { settle } from "./quiet.ts";
import type { Backend, Timing } from "./restore.ts";
import { formatMs, formatRatio, formatTiming, timeRestores } from "./restore.ts";
import { benchProxier } from "./sync.ts";
import { BENCH_NODE, syntheticCluster, syntheticManifests } from "./synthetic.ts";

const ROOT = fileURLToPath(new URL("..", import.meta.url));
const MAIN = join(ROOT, "dist/cli/main.js");

/**
 * The node flags the image runs the daemon with (deploy/Dockerfile's `ENV NODE_OPTIONS`, its one
 * source): the daemon is measured as it is deployed. The CLI cold starts run without them, as a
 * workstation's `kube-proxy-ts` does.
 */
export const DAEMON_NODE_FLAGS: readonly string[] = (
  /^ENV NODE_OPTIONS=(.+)$/m.exec(readFileSync(join(ROOT, "deploy/Dockerfile"), "utf8"))?.[1] ?? ""
)
  .split(/\s+/)
  .filter((flag) => flag !== "");
const SEED = join(ROOT, "examples/seed-nginx");
const POLL_MS = 50;

export type StartupMode = "iptables" | "nftables";

export interface StartupOptions {
  readonly sizes: readonly number[];
  /** The daemon's `--proxy-mode`. */
  readonly proxyMode: StartupMode;
  readonly endpointsPerService: number;
  readonly backend: Backend;
  readonly rounds: number;
  /** Cold-start runs per command. */
  readonly coldRuns: number;
  readonly capMs: number;
  readonly signal: AbortSignal;
}

export interface ColdStartRow {
  readonly command: string;
  readonly medianMs: number;
  readonly minMs: number;
  readonly medianRssKB: number;
  /** Median CPU time (user + system), NaN without GNU time. */
  readonly medianCpuMs: number;
  /** Median of `node -e 0` measured interleaved with it, wall and CPU. */
  readonly bareNodeMs: number;
  readonly bareNodeCpuMs: number;
}

export interface StartupRound {
  readonly oursMs: number;
  /** null in nftables mode: no bare baseline. */
  readonly bare: Timing | null;
}

export interface StartupRow {
  readonly proxyMode: StartupMode;
  readonly services: number;
  readonly endpointsPerService: number;
  readonly folderBytes: number;
  readonly transactions: number;
  readonly rounds: readonly StartupRound[];
  /** Daemon RSS when every Service worked, and after 5 s idle (first round). */
  readonly rssWorkingMB: number;
  readonly rssIdleMB: number;
  /** The daemon's peak RSS (VmHWM) when every Service worked (first round). */
  readonly peakMB: number;
  /** The daemon's user + system CPU time from its start until every Service worked (each round). */
  readonly cpuMs: readonly number[];
  /** 1-minute load average when each round's daemon worked. */
  readonly load: readonly number[];
}

const median = (xs: readonly number[]): number => {
  const sorted = [...xs].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  return sorted.length % 2 === 1 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
};

const GNU_TIME = "/usr/bin/time";

/**
 * Variables of this machine's environment that a user's node does not have and that cost every
 * Node.js process its start-up: NODE_EXTRA_CA_CERTS makes node read and parse a CA bundle before
 * running anything (on the development machine ~100 ms of the 120 ms of `node -e 0`). The cold
 * starts run without them, ours and the bare node alike; the report says which were removed.
 */
export const STARTUP_NOISE_VARIABLES = ["NODE_EXTRA_CA_CERTS"] as const;

function withoutNoise(argv: readonly string[]): string[] {
  const set = STARTUP_NOISE_VARIABLES.filter((v) => process.env[v] !== undefined);
  return set.length === 0 ? [...argv] : ["env", ...set.flatMap((v) => ["-u", v]), ...argv];
}

/**
 * Wall time of one process run to completion, and, when GNU time is installed, its peak RSS and
 * CPU time (user + system: what the load of a shared machine barely changes).
 */
async function timeProcess(argv: readonly string[]): Promise<{ ms: number; rssKB: number; cpuMs: number }> {
  const withTime = existsSync(GNU_TIME);
  const command = withoutNoise(argv);
  const started = performance.now();
  const result = await runner.run(
    withTime ? [GNU_TIME, "-f", "maxrss=%M cpu=%U+%S", "--", ...command] : command,
    { timeoutMs: 60_000 },
  );
  const ms = performance.now() - started;
  if (result.stdout.length === 0) throw new Error(`${argv.join(" ")} printed nothing`);
  const rss = /maxrss=(\d+)/.exec(result.stderr)?.[1];
  const cpu = /cpu=([\d.]+)\+([\d.]+)/.exec(result.stderr);
  return {
    ms,
    rssKB: rss === undefined ? Number.NaN : Number(rss),
    cpuMs: cpu === null ? Number.NaN : 1000 * (Number(cpu[1]) + Number(cpu[2])),
  };
}

export async function runColdStart(
  options: StartupOptions,
  log: (line: string) => void,
): Promise<ColdStartRow[]> {
  const node = process.execPath;
  const commands: [string, string[]][] = [
    ["kube-proxy-ts --version", [node, MAIN, "--version"]],
    ["kube-proxy-ts render -f examples/seed-nginx", [node, MAIN, "render", "-f", SEED]],
  ];
  const bare = [node, "-e", "console.log(0)"];
  const rows: ColdStartRow[] = [];
  for (const [name, argv] of commands) {
    log(`cold start: ${name}, ${options.coldRuns} runs…`);
    await settle();
    const ours: number[] = [];
    const oursCpu: number[] = [];
    const baseline: number[] = [];
    const baselineCpu: number[] = [];
    const rss: number[] = [];
    for (let i = 0; i < options.coldRuns; i++) {
      const bareRun = await timeProcess(bare);
      baseline.push(bareRun.ms);
      baselineCpu.push(bareRun.cpuMs);
      const run = await timeProcess(argv);
      ours.push(run.ms);
      oursCpu.push(run.cpuMs);
      rss.push(run.rssKB);
    }
    rows.push({
      command: name,
      medianMs: median(ours),
      minMs: Math.min(...ours),
      medianRssKB: median(rss),
      medianCpuMs: median(oursCpu),
      bareNodeMs: median(baseline),
      bareNodeCpuMs: median(baselineCpu),
    });
  }
  return rows;
}

/** Writes the cluster as one YAML file per namespace plus the Node; returns the folder's size. */
function writeManifests(dir: string, services: number, eps: number): number {
  const { node, byNamespace } = syntheticManifests(services, eps);
  let bytes = 0;
  const write = (name: string, docs: readonly unknown[]) => {
    const text = docs.map((d) => stringify(d)).join("---\n");
    writeFileSync(join(dir, name), text);
    bytes += Buffer.byteLength(text);
  };
  write("node.yaml", [node]);
  for (const [namespace, objects] of byNamespace) write(`${namespace}.yaml`, objects);
  return bytes;
}

/**
 * Services the kernel sends to their chains now: KUBE-SERVICES jumps to a Service chain, or in
 * nftables mode the `service-ips` elements that go to a Service chain.
 */
async function serviceJumps(mode: StartupMode, backend: Backend, netns: string): Promise<number> {
  const argv =
    mode === "nftables"
      ? ["nft", "list", "map", "ip", "kube-proxy", "service-ips"]
      : [`iptables-${backend}`, "-w", "5", "-t", "nat", "-S", "KUBE-SERVICES"];
  const target = mode === "nftables" ? "goto service-" : " -j KUBE-SVC-";
  try {
    const { stdout } = await runner.run(argv, { netns, timeoutMs: 30_000 });
    return stdout.split(target).length - 1;
  } catch {
    return 0;
  }
}

/** A `/proc/PID/status` field in kB (VmRSS, VmHWM), as MB. */
function statusMB(pid: number, field: string): number {
  const status = readFileSync(`/proc/${pid}/status`, "utf8");
  const kb = Number(new RegExp(`^${field}:\\s+(\\d+)`, "m").exec(status)?.[1] ?? Number.NaN);
  return kb / 1024;
}

/** The user + system CPU time a process used so far (`/proc/PID/stat`, clock ticks of 10 ms). */
function cpuMsOf(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
  // Fields after the command name, which is in parentheses and may contain spaces: utime is 14th.
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return (Number(fields[11]) + Number(fields[12])) * 10;
}

interface DaemonRun {
  readonly ms: number;
  readonly cpuMs: number;
  readonly load: number;
  readonly rssWorkingMB: number;
  readonly peakMB: number;
  readonly rssIdleMB: number;
}

/** The daemon from process spawn to every Service in the kernel; stopped before returning. */
async function timedDaemonStart(
  mode: StartupMode,
  backend: Backend,
  netns: string,
  dir: string,
  services: number,
  capMs: number,
): Promise<DaemonRun> {
  const argv = [
    process.execPath,
    ...DAEMON_NODE_FLAGS,
    MAIN,
    "--proxy-mode",
    mode,
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
  ];
  const started = performance.now();
  const daemon: BackgroundProcess = spawnBackground(withoutNoise(argv), { netns });
  try {
    for (;;) {
      if (!daemon.running) throw new Error(`the daemon exited before its Services worked:\n${daemon.stderr}`);
      if ((await serviceJumps(mode, backend, netns)) >= services) break;
      if (performance.now() - started > capMs)
        throw new Error(`Services not programmed after ${formatMs(capMs)}`);
      await sleep(POLL_MS);
    }
    const ms = performance.now() - started;
    const pid = daemon.pid;
    if (pid === undefined) throw new Error("the daemon has no pid");
    const cpuMs = cpuMsOf(pid);
    const rssWorkingMB = statusMB(pid, "VmRSS");
    const peakMB = statusMB(pid, "VmHWM");
    const load = loadavg()[0]!;
    await sleep(5_000);
    return { ms, cpuMs, load, rssWorkingMB, peakMB, rssIdleMB: statusMB(pid, "VmRSS") };
  } finally {
    await daemon.stop(10_000);
  }
}

async function oneRow(
  services: number,
  options: StartupOptions,
  log: (line: string) => void,
): Promise<StartupRow> {
  const eps = options.endpointsPerService;
  const { backend, proxyMode } = options;
  const withBaseline = proxyMode === "iptables";
  const dir = benchTempDir("kpt-bench-manifests-");
  try {
    const folderBytes = writeManifests(dir, services, eps);
    log(
      `start-up (${proxyMode}): ${services} Services x ${eps} endpoints (${(folderBytes / 1e6).toFixed(1)} MB of YAML)…`,
    );
    // The baseline's transactions: what our proxier writes for this cluster, recorded in a scratch namespace.
    const calls = withBaseline
      ? await withBenchNetns(async (scratch) => {
          const { ipt, proxier } = await benchProxier(backend, scratch, syntheticCluster(services, eps));
          await proxier.syncProxyRules();
          return ipt.take();
        })
      : null;
    const bareOnce = (): Promise<Timing | null> =>
      calls === null
        ? Promise.resolve(null)
        : withBenchNetns(async (netns) => {
            await settle();
            return (
              await timeRestores(
                calls.restores.map((r) => ({
                  backend,
                  netns,
                  payload: r.payload,
                  capMs: options.capMs,
                  signal: options.signal,
                })),
              )
            ).total;
          });
    const oursOnce = () =>
      withBenchNetns(async (netns) => {
        await settle();
        return timedDaemonStart(proxyMode, backend, netns, dir, services, options.capMs);
      });
    const rounds: StartupRound[] = [];
    const cpuMs: number[] = [];
    const load: number[] = [];
    let first: DaemonRun | null = null;
    for (let round = 1; round <= options.rounds; round++) {
      const bareFirst = round % 2 === 0;
      const bareBefore = bareFirst ? await bareOnce() : null;
      const ours = await oursOnce();
      const bare = bareFirst ? bareBefore : await bareOnce();
      first ??= ours;
      rounds.push({ oursMs: ours.ms, bare });
      cpuMs.push(ours.cpuMs);
      load.push(ours.load);
      log(
        `  round ${round}: daemon ${formatMs(ours.ms)} (CPU ${formatMs(ours.cpuMs)}, peak RSS ${ours.peakMB.toFixed(0)} MB, load ${ours.load.toFixed(1)})` +
          (bare === null ? "" : `, bare restores ${formatTiming(bare)}`),
      );
    }
    return {
      proxyMode,
      services,
      endpointsPerService: eps,
      folderBytes,
      transactions: calls?.restores.length ?? Number.NaN,
      rounds,
      rssWorkingMB: first?.rssWorkingMB ?? Number.NaN,
      rssIdleMB: first?.rssIdleMB ?? Number.NaN,
      peakMB: first?.peakMB ?? Number.NaN,
      cpuMs,
      load,
    };
  } finally {
    removeBenchTempDir(dir);
  }
}

export async function runStartupBenchmark(
  options: StartupOptions,
  log: (line: string) => void,
): Promise<StartupRow[]> {
  const rows: StartupRow[] = [];
  for (const services of options.sizes) rows.push(await oneRow(services, options, log));
  return rows;
}

export function coldStartTable(rows: readonly ColdStartRow[]): string {
  const cpu = (ms: number) => (Number.isNaN(ms) ? "n/a" : formatMs(ms));
  const removed = STARTUP_NOISE_VARIABLES.filter((v) => process.env[v] !== undefined);
  const lines = [
    "| command | median | fastest | CPU (median) | peak RSS (median) | bare `node -e` (median, CPU) | ours − bare node |",
    "|---|---|---|---|---|---|---|",
  ];
  for (const r of rows) {
    lines.push(
      `| \`${r.command}\` | ${formatMs(r.medianMs)} | ${formatMs(r.minMs)} | ${cpu(r.medianCpuMs)} | ${Number.isNaN(r.medianRssKB) ? "n/a (no GNU time)" : `${(r.medianRssKB / 1024).toFixed(0)} MB`} | ` +
        `${formatMs(r.bareNodeMs)}, ${cpu(r.bareNodeCpuMs)} | ${formatMs(r.medianMs - r.bareNodeMs)} |`,
    );
  }
  if (removed.length > 0)
    lines.push(
      "",
      `Run without ${removed.join(", ")} (set here, not on a user's node: it slows every node start).`,
    );
  return lines.join("\n");
}

/** Median of the rounds' ratios, or null when a bare run did not complete (or there is none). */
export function startupRatio(row: StartupRow): number | null {
  const ratios: number[] = [];
  for (const r of row.rounds) {
    if (r.bare === null || r.bare.status !== "ok") return null;
    ratios.push(r.oursMs / r.bare.ms);
  }
  return ratios.length === 0 ? null : median(ratios);
}

export function startupTable(rows: readonly StartupRow[]): string {
  const lines = [
    "| mode | Services x eps | YAML | transactions | start → working (each round) | CPU to working (each round) | load (each round) | bare restores (each round) | median ratio | peak RSS (VmHWM) | RSS working | RSS idle (+5 s) |",
    "|---|---|---|---|---|---|---|---|---|---|---|---|",
  ];
  for (const r of rows) {
    const ratio = startupRatio(r);
    const bare = r.rounds.map((x) => (x.bare === null ? "n/a" : formatTiming(x.bare))).join(", ");
    const ratios =
      ratio !== null
        ? `${ratio.toFixed(2)}×`
        : r.rounds.map((x) => (x.bare === null ? "n/a" : formatRatio(x.oursMs, x.bare))).join(", ");
    lines.push(
      `| ${r.proxyMode} | ${r.services.toLocaleString("en-US")} x ${r.endpointsPerService} | ${(r.folderBytes / 1e6).toFixed(1)} MB | ` +
        `${Number.isNaN(r.transactions) ? "n/a" : r.transactions} | ${r.rounds.map((x) => formatMs(x.oursMs)).join(", ")} | ` +
        `${r.cpuMs.map(formatMs).join(", ")} | ${r.load.map((l) => l.toFixed(1)).join(", ")} | ${bare} | ${ratios} | ` +
        `${r.peakMB.toFixed(0)} MB | ${r.rssWorkingMB.toFixed(0)} MB | ${r.rssIdleMB.toFixed(0)} MB |`,
    );
  }
  return lines.join("\n");
}
