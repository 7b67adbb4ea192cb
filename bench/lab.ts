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
 */
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { setTimeout as sleep } from "node:timers/promises";
import { Sandbox } from "../src/sandbox/topology.ts";
import { moduleArgv } from "../src/self.ts";
import type { BackgroundProcess } from "../src/kernel/spawn.ts";
import { BENCH_NODE, syntheticManifests } from "./synthetic.ts";
import { lineChart } from "./svg.ts";

const ROOT = fileURLToPath(new URL("..", import.meta.url));
const MAIN = join(ROOT, "dist/cli/main.js");
const TARGET_IP = "10.111.255.250";
const TARGET_PORT = 80;
const SERVER_PORT = 8080;
const SERVER_IP = "10.244.0.20";
const CLIENT_IP = "10.244.0.10";

export type LabMode = "iptables-nft" | "iptables-legacy" | "nftables";
export const LAB_MODES: readonly LabMode[] = ["iptables-nft", "iptables-legacy", "nftables"];

export interface LabOptions {
  readonly sizes: readonly number[];
  readonly endpointsPerService: number;
  readonly modes: readonly LabMode[];
  /** New connections (and first UDP packets) per measurement. */
  readonly connections: number;
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
  readonly mode: LabMode;
  readonly services: number;
  readonly endpointsPerService: number;
  /** Daemon start → the target Service answers; null when not within the cap. */
  readonly programmedMs: number | null;
  readonly tcp: Percentiles | null;
  readonly udp: Percentiles | null;
  readonly note: string;
}

function writeFolder(dir: string, services: number, eps: number): void {
  const { node, byNamespace } = syntheticManifests(services, eps);
  const list = (items: unknown[]) => JSON.stringify({ apiVersion: "v1", kind: "List", items });
  writeFileSync(join(dir, "node.json"), list([node]));
  for (const [namespace, objects] of byNamespace)
    writeFileSync(join(dir, `${namespace}.json`), list(objects));
  // `zz-lab/target` sorts after every `bench-*` Service.
  const target = {
    apiVersion: "v1",
    kind: "Service",
    metadata: { name: "target", namespace: "zz-lab" },
    spec: {
      type: "ClusterIP",
      clusterIP: TARGET_IP,
      clusterIPs: [TARGET_IP],
      ports: [
        { name: "tcp", protocol: "TCP", port: TARGET_PORT },
        { name: "udp", protocol: "UDP", port: TARGET_PORT },
      ],
    },
  };
  const slice = {
    apiVersion: "discovery.k8s.io/v1",
    kind: "EndpointSlice",
    metadata: { name: "target-lab", namespace: "zz-lab", labels: { "kubernetes.io/service-name": "target" } },
    addressType: "IPv4",
    endpoints: [{ addresses: [SERVER_IP], conditions: { ready: true }, nodeName: BENCH_NODE }],
    ports: [
      { name: "tcp", protocol: "TCP", port: SERVER_PORT },
      { name: "udp", protocol: "UDP", port: SERVER_PORT },
    ],
  };
  writeFileSync(join(dir, "zz-lab.json"), list([target, slice]));
}

const agent = (args: readonly string[]) => moduleArgv(import.meta.url, "./lab/agent.ts", args);

async function probe(
  sandbox: Sandbox,
  kind: "tcp" | "udp",
  count: number,
  rate: number,
  timeoutMs: number,
): Promise<Percentiles> {
  const argv = agent([kind, "--host", TARGET_IP, "--port", String(TARGET_PORT), "--count", String(count)]);
  const result = await sandbox.exec("client", [...argv, "--rate", String(rate)], { timeoutMs });
  const line = result.stdout.trim().split("\n").pop() ?? "";
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

async function oneRun(
  services: number,
  mode: LabMode,
  options: LabOptions,
  log: (s: string) => void,
): Promise<LabRow> {
  const dir = mkdtempSync(join(tmpdir(), "kpt-lab-"));
  const sandbox = await Sandbox.create({ prefix: "kptlab" });
  try {
    writeFolder(dir, services, options.endpointsPerService);
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
        note: "not programmed within the cap",
      };
    }
    await checkTargetIsLast(sandbox, mode);
    const timeoutMs = 60_000 + (2000 * options.connections) / options.ratePerSecond;
    const tcp = await probe(sandbox, "tcp", options.connections, options.ratePerSecond, timeoutMs);
    const udp = await probe(sandbox, "udp", options.connections, options.ratePerSecond, timeoutMs);
    log(
      `  ${mode} at ${services}: programmed in ${(programmedMs / 1000).toFixed(1)} s; TCP connect p50/p99 ` +
        `${tcp.p50?.toFixed(3)}/${tcp.p99?.toFixed(3)} ms, UDP RTT p50/p99 ${udp.p50?.toFixed(3)}/${udp.p99?.toFixed(3)} ms`,
    );
    return {
      mode,
      services,
      endpointsPerService: options.endpointsPerService,
      programmedMs,
      tcp,
      udp,
      note: "",
    };
  } finally {
    await sandbox.dispose();
    rmSync(dir, { recursive: true, force: true });
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

export function labTable(rows: readonly LabRow[]): string {
  const out = [
    "| mode | Services x eps | programmed in | TCP connect p50 / p99 / p99.9 (ms) | UDP first-packet RTT p50 / p99 / p99.9 (ms) | softirq per packet (TCP) | failed |",
    "|---|---|---|---|---|---|---|",
  ];
  for (const r of rows) {
    out.push(
      `| ${r.mode} | ${r.services.toLocaleString("en-US")} x ${r.endpointsPerService} | ` +
        `${r.programmedMs === null ? r.note : `${(r.programmedMs / 1000).toFixed(1)} s`} | ` +
        `${ms(r.tcp?.p50)} / ${ms(r.tcp?.p99)} / ${ms(r.tcp?.p999)} | ${ms(r.udp?.p50)} / ${ms(r.udp?.p99)} / ${ms(r.udp?.p999)} | ` +
        `${r.tcp === null ? "—" : `${(r.tcp.softirqMsPerPacket * 1000).toFixed(1)} µs`} | ` +
        `${(r.tcp?.failed ?? 0) + (r.udp?.failed ?? 0)} |`,
    );
  }
  return out.join("\n");
}

/** The pictures: first-packet latency (median and p99), and time to program, against the number of Services. */
export function labCharts(rows: readonly LabRow[], subtitle: string): Record<string, string> {
  const series = (pick: (r: LabRow) => number | null) =>
    [...new Set(rows.map((r) => r.mode))].map((mode) => ({
      name: mode,
      points: rows
        .filter((r) => r.mode === mode)
        .map((r) => ({ x: r.services, y: pick(r) }))
        .filter((p): p is { x: number; y: number } => p.y !== null),
    }));
  const latency = (which: "p50" | "p99", title: string) =>
    lineChart({
      title: `New TCP connection through a ClusterIP: ${title} connect latency`,
      subtitle,
      xLabel: "Services programmed (log scale)",
      yLabel: `${title} connect latency (ms)`,
      series: series((r) => r.tcp?.[which] ?? null),
    });
  return {
    "lab-latency-p50.svg": latency("p50", "median"),
    "lab-latency-p99.svg": latency("p99", "p99"),
    "lab-programming.svg": lineChart({
      title: "Daemon start to the last Service answering",
      subtitle,
      xLabel: "Services programmed (log scale)",
      yLabel: "seconds",
      series: series((r) => (r.programmedMs === null ? null : r.programmedMs / 1000)),
    }),
  };
}

/** Writes the charts of `rows` into docs/bench/; returns the paths written. */
export function writeLabCharts(rows: readonly LabRow[], started: Date): string[] {
  const eps = rows[0]?.endpointsPerService ?? 1;
  const subtitle = `${started.toISOString().slice(0, 10)}, ${eps} endpoint(s) per Service, node ${process.version}`;
  const dir = fileURLToPath(new URL("../docs/bench/", import.meta.url));
  mkdirSync(dir, { recursive: true });
  return Object.entries(labCharts(rows, subtitle)).map(([name, svg]) => {
    writeFileSync(join(dir, name), svg);
    return `docs/bench/${name}`;
  });
}
