/**
 * The scale lab (issue 16): the data path of every mode that runs on this kernel, at growing
 * numbers of Services, measured side by side in one run.
 *
 * For each size N and mode, a fresh sandbox (a node namespace, a client pod and a server pod, pod
 * traffic routed through the node) runs the real daemon from a manifests folder of N synthetic
 * Services plus one target Service whose only endpoint is the server pod. The target sorts last,
 * so its rules are the last a packet reaches in iptables mode's KUBE-SERVICES list (checked).
 * Once it answers, the client opens `connections` new TCP connections to its ClusterIP at a fixed
 * rate, one after another, and sends as many first UDP packets from fresh sockets: every one is
 * a new conntrack entry that walks the rules. Recorded: connect and round-trip percentiles, the
 * node's softirq time per packet, and how long the daemon took from its start to the target
 * answering. Modes alternate their order from one size to the next.
 *
 * The data path is measured in steady state: the rules programmed, the daemon running and idle.
 * Each round reads the CPU the daemon and the children it reaped used while the probes ran, and
 * the table prints it, so a periodic task of the daemon overlapping the connections shows (until
 * commit b2adc0c, the nftables monitor's `nft list tables` burnt ~30 s of one CPU per sync
 * period at 30,000 Services, which was most of that size's p99).
 */
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { setTimeout as sleep } from "node:timers/promises";
import { Sandbox } from "../src/sandbox/topology.ts";
import { moduleArgv } from "../src/self.ts";
import type { BackgroundProcess } from "../src/kernel/spawn.ts";
import { BENCH_NODE } from "./synthetic.ts";
import { lineChart } from "./svg.ts";
import { LAB_ADDRESSES, writeLabFolder } from "./lab/manifests.ts";
import type { ControlRow } from "./lab/control.ts";
import { controlCharts } from "./lab/control.ts";
import { settle } from "./quiet.ts";
import { DAEMON_NODE_FLAGS } from "./startup.ts";
import { benchTempDir, removeBenchTempDir } from "./netns.ts";

const ROOT = fileURLToPath(new URL("..", import.meta.url));
const MAIN = join(ROOT, "dist/cli/main.js");
const {
  targetIP: TARGET_IP,
  targetPort: TARGET_PORT,
  serverIP: SERVER_IP,
  serverPort: SERVER_PORT,
  clientIP: CLIENT_IP,
} = LAB_ADDRESSES;

/** The modes that run in this kernel's network namespaces. */
export type LabMode = "iptables-nft" | "iptables-legacy" | "nftables";
export const LAB_MODES: readonly LabMode[] = ["iptables-nft", "iptables-legacy", "nftables"];

/**
 * The lab's defaults, which issue 16's budget decides: the default lab (data path and control
 * plane) within 30 minutes here, `--quick` within 3. The control plane at 50,000 Services is
 * opt-in (`--control-sizes 1000,10000,30000,50000`): nftables mode's full sync there and its
 * bare-netlink replay alone take longer than the rest of the lab together (bench/README.md,
 * "Budget of the default lab").
 */
export function labDefaults(quick: boolean): {
  readonly dataSizes: readonly number[];
  readonly controlSizes: readonly number[];
  readonly vmSizes: readonly number[];
  readonly rounds: number;
  readonly connections: number;
} {
  return quick
    ? { dataSizes: [100, 1000], controlSizes: [1000], vmSizes: [100], rounds: 1, connections: 300 }
    : {
        dataSizes: [100, 1000, 10_000, 30_000],
        controlSizes: [1000, 10_000, 30_000],
        vmSizes: [100, 1000],
        rounds: 3,
        connections: 2000,
      };
}

export interface LabOptions {
  readonly sizes: readonly number[];
  readonly endpointsPerService: number;
  readonly modes: readonly LabMode[];
  /** New connections (and first UDP packets) per measurement. */
  readonly connections: number;
  /**
   * Measurements per size and mode (each after the machine settled): a row gives the median of
   * the rounds' percentiles, so one scheduling hiccup in one round does not make its p99.
   */
  readonly rounds: number;
  readonly ratePerSecond: number;
  /** Cap on the daemon's time to program one size. */
  readonly programCapMs: number;
  readonly signal: AbortSignal;
}

export interface Percentiles {
  readonly count: number;
  readonly failed: number;
  readonly p50: number | null;
  readonly p99: number | null;
  readonly p999: number | null;
  readonly softirqMsPerPacket: number;
}

export interface LabRow {
  /** "ipvs": measured inside the VM (bench/lab/vm.ts), see `emulated`. */
  readonly mode: LabMode | "ipvs";
  /** Set when the row was measured in an emulated VM: the accelerator ("tcg"). */
  readonly emulated?: string;
  readonly services: number;
  readonly endpointsPerService: number;
  /** Daemon start → the target Service answers; null when not within the cap. */
  readonly programmedMs: number | null;
  readonly tcp: Percentiles | null;
  readonly udp: Percentiles | null;
  /** The daemon's peak RSS (VmHWM) once the target answered and the probes ran, MB. */
  readonly daemonHwmMB: number | null;
  readonly note: string;
  /** Each round's own percentiles (`tcp`/`udp` are their medians); absent in older results. */
  readonly rounds?: readonly LabRound[];
}

export interface LabRound {
  readonly tcp: Percentiles;
  readonly udp: Percentiles;
  /**
   * CPU the daemon and the children it reaped (nft, iptables-save…) used while the round's
   * probes ran, ms: the data path is measured with the rules programmed and the daemon idle, and
   * this says whether it was. Absent in older results.
   */
  readonly daemonCpuMs?: number | null;
}

/** USER_HZ of /proc/PID/stat (100 on every Linux this runs on). */
const CLK_TCK = 100;

/**
 * utime + stime + cutime + cstime of a /proc/PID/stat line, ms (pure). The fields are counted
 * after the command name's closing parenthesis, which may itself hold spaces or parentheses.
 */
export function processCpuMs(stat: string): number {
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  // Fields 14–17 of proc(5), numbered from 1 with the pid: 12–15 after "pid (comm) ".
  const ticks = [11, 12, 13, 14].reduce((sum, i) => sum + Number(fields[i] ?? NaN), 0);
  if (!Number.isFinite(ticks)) throw new Error(`not a /proc/PID/stat line: ${stat.slice(0, 80)}`);
  return (ticks * 1000) / CLK_TCK;
}

function daemonCpuMs(daemon: BackgroundProcess): number | null {
  if (daemon.pid === undefined || !daemon.running) return null;
  try {
    return processCpuMs(readFileSync(`/proc/${daemon.pid}/stat`, "utf8"));
  } catch {
    return null;
  }
}

const medianOf = (values: readonly (number | null)[]): number | null => {
  const known = values.filter((v): v is number => v !== null).sort((a, b) => a - b);
  if (known.length === 0) return null;
  const mid = Math.floor(known.length / 2);
  return known.length % 2 === 1 ? known[mid]! : (known[mid - 1]! + known[mid]!) / 2;
};

/** The rounds of one probe as one: counts summed, percentiles and softirq per packet their medians. */
export function combineRounds(rounds: readonly Percentiles[]): Percentiles {
  return {
    count: rounds.reduce((n, r) => n + r.count, 0),
    failed: rounds.reduce((n, r) => n + r.failed, 0),
    p50: medianOf(rounds.map((r) => r.p50)),
    p99: medianOf(rounds.map((r) => r.p99)),
    p999: medianOf(rounds.map((r) => r.p999)),
    softirqMsPerPacket: medianOf(rounds.map((r) => r.softirqMsPerPacket)) ?? 0,
  };
}

/** Connections (and UDP first packets) each probe sends first and does not count (bench/lab/agent.ts). */
const LAB_WARMUP = 20;

const agent = (args: readonly string[]) => moduleArgv(import.meta.url, "./lab/agent.ts", args);

async function probe(
  sandbox: Sandbox,
  kind: "tcp" | "udp",
  count: number,
  rate: number,
  timeoutMs: number,
): Promise<Percentiles> {
  const argv = agent([kind, "--host", TARGET_IP, "--port", String(TARGET_PORT), "--count", String(count)]);
  const warmup = count > 1 ? ["--warmup", String(LAB_WARMUP)] : [];
  const result = await sandbox.exec("client", [...argv, "--rate", String(rate), ...warmup], { timeoutMs });
  return percentilesOf(result.stdout);
}

/** The agent's last output line (bench/lab/agent.ts) as percentiles, softirq time per packet. */
export function percentilesOf(agentStdout: string): Percentiles {
  const line = agentStdout.trim().split("\n").pop() ?? "";
  const parsed = JSON.parse(line) as Omit<Percentiles, "softirqMsPerPacket"> & { softirqMs: number };
  return {
    count: parsed.count,
    failed: parsed.failed,
    p50: parsed.p50,
    p99: parsed.p99,
    p999: parsed.p999,
    softirqMsPerPacket: parsed.softirqMs / Math.max(1, parsed.count),
  };
}

/** The last Service jump of KUBE-SERVICES must be the target's, or the series measures the wrong thing. */
async function checkTargetIsLast(sandbox: Sandbox, mode: LabMode): Promise<void> {
  if (mode === "nftables") return;
  const tool = mode === "iptables-legacy" ? "iptables-legacy" : "iptables-nft";
  const { stdout } = await sandbox.exec("node-0", [tool, "-w", "5", "-t", "nat", "-S", "KUBE-SERVICES"], {
    timeoutMs: 120_000,
  });
  const jumps = stdout.split("\n").filter((l) => l.includes(" -j KUBE-SVC-"));
  const last = jumps[jumps.length - 1] ?? "";
  if (!last.includes("zz-lab/target:"))
    throw new Error(`the target's rule is not the last Service jump: ${last}`);
}

async function waitForTarget(
  sandbox: Sandbox,
  daemon: BackgroundProcess,
  capMs: number,
): Promise<number | null> {
  const started = performance.now();
  while (performance.now() - started < capMs) {
    if (!daemon.running) throw new Error(`the daemon exited:\n${daemon.stderr.slice(-2000)}`);
    try {
      const one = await probe(sandbox, "tcp", 1, 100, 30_000);
      if (one.count === 1) return performance.now() - started;
    } catch {
      // Not yet: the agent printed nothing usable.
    }
    await sleep(250);
  }
  return null;
}

/** VmHWM of the daemon (`ip netns exec` execs it, so the pid is the daemon's), MB. */
function daemonHwmMB(daemon: BackgroundProcess): number | null {
  if (daemon.pid === undefined || !daemon.running) return null;
  try {
    const kb = /^VmHWM:\s+(\d+)/m.exec(readFileSync(`/proc/${daemon.pid}/status`, "utf8"))?.[1];
    return kb === undefined ? null : Math.round(Number(kb) / 1024);
  } catch {
    return null;
  }
}

async function oneRun(
  services: number,
  mode: LabMode,
  options: LabOptions,
  log: (s: string) => void,
): Promise<LabRow> {
  const dir = benchTempDir("kpt-lab-");
  const sandbox = await Sandbox.create({ prefix: "kptlab" });
  try {
    writeLabFolder(dir, services, options.endpointsPerService);
    await sandbox.addNode(BENCH_NODE, { ipv4: "192.168.61.1", podCIDR: "10.244.0.0/24" });
    await sandbox.addPod(BENCH_NODE, "client", { ipv4: CLIENT_IP });
    await sandbox.addPod(BENCH_NODE, "server", { ipv4: SERVER_IP });
    const server = sandbox.spawn("server", agent(["serve", "--port", String(SERVER_PORT)]));
    await server.waitForLine(/"ready":true/, 30_000);
    if (mode === "iptables-legacy") {
      // What kubelet does on a legacy node, and what the daemon's backend detection looks for.
      await sandbox.exec(BENCH_NODE, ["iptables-legacy", "-t", "mangle", "-N", "KUBE-IPTABLES-HINT"]);
    }
    const proxyMode = mode === "nftables" ? "nftables" : "iptables";
    const daemon = sandbox.spawn(BENCH_NODE, [
      process.execPath,
      ...DAEMON_NODE_FLAGS,
      MAIN,
      "--proxy-mode",
      proxyMode,
      "--manifests",
      dir,
      "--hostname-override",
      BENCH_NODE,
      "--cluster-cidr",
      "10.244.0.0/16",
      "--healthz-bind-address",
      "",
      "--metrics-bind-address",
      "",
    ]);
    const programmedMs = await waitForTarget(sandbox, daemon, options.programCapMs);
    if (programmedMs === null) {
      return {
        mode,
        services,
        endpointsPerService: options.endpointsPerService,
        programmedMs,
        tcp: null,
        udp: null,
        daemonHwmMB: daemonHwmMB(daemon),
        note: "not programmed within the cap",
      };
    }
    await checkTargetIsLast(sandbox, mode);
    const timeoutMs = 60_000 + (2000 * options.connections) / options.ratePerSecond;
    const rounds: LabRound[] = [];
    for (let round = 0; round < options.rounds && !options.signal.aborted; round++) {
      // The daemon's work after the target answered (the sync's tail, freeing the last size's
      // namespace) runs on the same CPUs as the packets: wait for it, bounded.
      const quiet = await settle();
      const cpuBefore = daemonCpuMs(daemon);
      const tcp = await probe(sandbox, "tcp", options.connections, options.ratePerSecond, timeoutMs);
      const udp = await probe(sandbox, "udp", options.connections, options.ratePerSecond, timeoutMs);
      const cpuAfter = daemonCpuMs(daemon);
      const cpu = cpuBefore === null || cpuAfter === null ? null : cpuAfter - cpuBefore;
      rounds.push({ tcp, udp, daemonCpuMs: cpu });
      log(
        `  ${mode} at ${services}, round ${round + 1}/${options.rounds} (idle ${(100 * quiet.idle).toFixed(0)}% before, ` +
          `daemon CPU during it ${cpu === null ? "unknown" : `${cpu.toFixed(0)} ms`}): ` +
          `TCP connect p50/p99 ${tcp.p50?.toFixed(3)}/${tcp.p99?.toFixed(3)} ms, UDP RTT p50/p99 ${udp.p50?.toFixed(3)}/${udp.p99?.toFixed(3)} ms`,
      );
    }
    const tcp = combineRounds(rounds.map((r) => r.tcp));
    const udp = combineRounds(rounds.map((r) => r.udp));
    log(
      `  ${mode} at ${services}: programmed in ${(programmedMs / 1000).toFixed(1)} s; TCP connect p50/p99 ` +
        `${tcp.p50?.toFixed(3)}/${tcp.p99?.toFixed(3)} ms, UDP RTT p50/p99 ${udp.p50?.toFixed(3)}/${udp.p99?.toFixed(3)} ms (median of ${rounds.length} rounds)`,
    );
    return {
      mode,
      services,
      endpointsPerService: options.endpointsPerService,
      programmedMs,
      tcp,
      udp,
      daemonHwmMB: daemonHwmMB(daemon),
      note: "",
      rounds,
    };
  } finally {
    await sandbox.dispose();
    removeBenchTempDir(dir);
  }
}

export async function runLab(options: LabOptions, log: (s: string) => void): Promise<LabRow[]> {
  const rows: LabRow[] = [];
  options.sizes.forEach((n, i) => log(`lab: size ${i + 1}/${options.sizes.length}: ${n} Services`));
  for (const [i, services] of options.sizes.entries()) {
    const modes = i % 2 === 0 ? options.modes : [...options.modes].reverse();
    for (const mode of modes) {
      if (options.signal.aborted) return rows;
      rows.push(await oneRun(services, mode, options, log));
    }
  }
  return rows;
}

const ms = (v: number | null | undefined) => (v === null || v === undefined ? "—" : v.toFixed(3));

const modeName = (r: LabRow) =>
  r.emulated === undefined ? r.mode : `${r.mode} (VM, ${r.emulated} emulated)`;

/** The daemon's CPU over all the row's rounds (with the children it reaped); "—" when not read. */
function daemonCpuCell(r: LabRow): string {
  const cpu = (r.rounds ?? []).map((round) => round.daemonCpuMs ?? null);
  if (cpu.length === 0 || cpu.includes(null)) return "—";
  return `${(cpu as number[]).reduce((a, b) => a + b, 0).toFixed(0)} ms in ${cpu.length} rounds`;
}

export function labTable(rows: readonly LabRow[]): string {
  const out = [
    "| mode | Services x eps | programmed in | TCP connect p50 / p99 / p99.9 (ms) | UDP first-packet RTT p50 / p99 / p99.9 (ms) | softirq per packet (TCP) | failed | daemon peak RSS | daemon CPU while measured |",
    "|---|---|---|---|---|---|---|---|---|",
  ];
  for (const r of rows) {
    out.push(
      `| ${modeName(r)} | ${r.services.toLocaleString("en-US")} x ${r.endpointsPerService} | ` +
        `${r.programmedMs === null ? r.note : `${(r.programmedMs / 1000).toFixed(1)} s`} | ` +
        `${ms(r.tcp?.p50)} / ${ms(r.tcp?.p99)} / ${ms(r.tcp?.p999)} | ${ms(r.udp?.p50)} / ${ms(r.udp?.p99)} / ${ms(r.udp?.p999)} | ` +
        `${r.tcp === null ? "—" : `${(r.tcp.softirqMsPerPacket * 1000).toFixed(1)} µs`} | ` +
        `${(r.tcp?.failed ?? 0) + (r.udp?.failed ?? 0)} | ${(r.daemonHwmMB ?? null) === null ? "—" : `${r.daemonHwmMB} MB`} | ` +
        `${daemonCpuCell(r)} |`,
    );
  }
  return out.join("\n");
}

/**
 * Issue 16's goal, computed from the rows: nftables mode's first-packet p99 at its largest size
 * against its smallest (≤ 1.1×), for TCP connects and UDP first packets.
 */
export function labGoal(rows: readonly LabRow[]): string {
  const nft = rows
    .filter((r) => r.mode === "nftables" && r.tcp !== null)
    .sort((a, b) => a.services - b.services);
  const [small, large] = [nft[0], nft[nft.length - 1]];
  if (small === undefined || large === undefined || small === large)
    return "Goal (nftables p99 at the largest size ≤ 1.1× at the smallest): needs two nftables sizes.";
  const one = (kind: "tcp" | "udp", label: string) => {
    const [a, b] = [small[kind]?.p99 ?? null, large[kind]?.p99 ?? null];
    if (a === null || b === null) return `${label}: —`;
    const ratio = b / a;
    return `${label} ${b.toFixed(3)} / ${a.toFixed(3)} ms = ${ratio.toFixed(2)}× (${ratio <= 1.1 ? "met" : "not met"})`;
  };
  return (
    `Goal: nftables first-packet p99 at ${large.services.toLocaleString("en-US")} ≤ 1.1× at ` +
    `${small.services.toLocaleString("en-US")} Services: ${one("tcp", "TCP connect")}; ${one("udp", "UDP round trip")}.`
  );
}

/** One series per mode of `rows`, the points `pick` gives (null: left out). */
function seriesOf(rows: readonly LabRow[], pick: (r: LabRow) => number | null) {
  return [...new Set(rows.map(modeName))].map((name) => ({
    name,
    points: rows
      .filter((r) => modeName(r) === name)
      .map((r) => ({ x: r.services, y: pick(r) }))
      .filter((p): p is { x: number; y: number } => p.y !== null),
  }));
}

/**
 * The pictures: first-packet latency (median and p99), time to program and the daemon's peak
 * RSS against the number of Services. Rows measured in the emulated VM get a chart of their own:
 * under TCG every packet costs milliseconds, which would flatten the other lines.
 */
export function labCharts(rows: readonly LabRow[], subtitle: string): Record<string, string> {
  const native = rows.filter((r) => r.emulated === undefined);
  const emulated = rows.filter((r) => r.emulated !== undefined);
  const latency = (which: "p50" | "p99", title: string, of: readonly LabRow[], where = "") =>
    lineChart({
      title: `New TCP connection through a ClusterIP: ${title} connect latency${where}`,
      subtitle,
      xLabel: "Services programmed (log scale)",
      yLabel: `${title} connect latency (ms)`,
      series: seriesOf(of, (r) => r.tcp?.[which] ?? null),
    });
  const charts: Record<string, string> = {};
  if (native.length > 0) {
    charts["lab-latency-p50.svg"] = latency("p50", "median", native);
    charts["lab-latency-p99.svg"] = latency("p99", "p99", native);
    charts["lab-programming.svg"] = lineChart({
      title: "Daemon start to the last Service answering",
      subtitle,
      xLabel: "Services programmed (log scale)",
      yLabel: "seconds",
      series: seriesOf(native, (r) => (r.programmedMs === null ? null : r.programmedMs / 1000)),
    });
  }
  if (native.some((r) => (r.daemonHwmMB ?? null) !== null)) {
    charts["lab-daemon-rss.svg"] = lineChart({
      title: "The daemon's peak RSS (VmHWM) after programming and the probes",
      subtitle,
      xLabel: "Services programmed (log scale)",
      yLabel: "MB",
      // Rows saved before the lab read the daemon's RSS have none.
      series: seriesOf(native, (r) => r.daemonHwmMB ?? null),
    });
  }
  if (emulated.length > 0) {
    const where = " (in the emulated VM)";
    charts["lab-ipvs-vm-latency.svg"] = lineChart({
      title: `New TCP connection through a ClusterIP${where}`,
      subtitle: `${subtitle}; QEMU without hardware virtualisation: compare the shape, not the values`,
      xLabel: "Services programmed (log scale)",
      yLabel: "connect latency (ms)",
      series: (["p50", "p99"] as const).flatMap((which) =>
        seriesOf(emulated, (r) => r.tcp?.[which] ?? null).map((s) => ({ ...s, name: `${s.name} ${which}` })),
      ),
    });
  }
  return charts;
}

/** Writes the charts of the rows there are into docs/bench/; returns the paths written. */
export function writeLabCharts(
  rows: readonly LabRow[],
  control: readonly ControlRow[],
  started: Date,
): string[] {
  const eps = rows[0]?.endpointsPerService ?? control[0]?.endpointsPerService ?? 1;
  const subtitle = `${started.toISOString().slice(0, 10)}, ${eps} endpoint(s) per Service, node ${process.version}`;
  const dir = fileURLToPath(new URL("../docs/bench/", import.meta.url));
  mkdirSync(dir, { recursive: true });
  const charts = {
    ...labCharts(rows, subtitle),
    ...(control.length > 0 ? controlCharts(control, subtitle) : {}),
  };
  return Object.entries(charts).map(([name, svg]) => {
    writeFileSync(join(dir, name), svg);
    return `docs/bench/${name}`;
  });
}
