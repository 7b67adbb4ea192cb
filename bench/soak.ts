/**
 * Soak (issue 13): the daemon in a sandbox node under continuous, bounded churn of its manifests
 * folder (Services and EndpointSlices added, changed and deleted at random) with HTTP traffic to a
 * stable Service the whole time. Every `sampleMs` it reads the daemon's own /metrics (resident
 * memory, V8 heap in use, open file descriptors, syncs and their mean duration since the last
 * sample); at the end it prints a table, fits a line to each series after the warm-up (the state
 * grows until the churned Services reach their bound) and flags a
 * series whose fitted growth is both large against its mean and large in absolute terms, and
 * writes the curves as an SVG plot. Nothing here may grow without bound.
 */
import { mkdirSync, writeFileSync } from "node:fs";
import { dirname } from "node:path";
import type { Sandbox } from "../src/sandbox/topology.ts";
import {
  disposeProxyNode,
  endpointSlice,
  nodeObject,
  ProxyDaemon,
  service,
  sleep,
  startProxyNode,
} from "../test/support/daemon.ts";
import type { KubeObject } from "../test/support/daemon.ts";
import { TrafficClient } from "../test/support/traffic.ts";
import type { TrafficSummary } from "../test/support/traffic.ts";

export interface SoakOptions {
  readonly durationMs: number;
  readonly sampleMs: number;
  /** Most churned Services present at once. */
  readonly maxServices: number;
  /** One random change to the manifests folder every this many ms. */
  readonly churnMs: number;
  readonly seed: number;
  readonly signal?: AbortSignal;
}

export interface SoakSample {
  readonly atS: number;
  readonly rssMB: number;
  readonly heapMB: number;
  readonly fds: number;
  /** Syncs (IPv4) since the previous sample and their mean duration. */
  readonly syncs: number;
  readonly meanSyncMs: number | null;
  readonly services: number;
  readonly changes: number;
}

export interface SeriesTrend {
  readonly name: string;
  readonly unit: string;
  readonly first: number;
  readonly last: number;
  readonly mean: number;
  /** Least-squares slope per hour over the samples after the warm-up. */
  readonly slopePerHour: number;
  /** Fitted change over the fitted window. */
  readonly fittedGrowth: number;
  readonly flagged: boolean;
}

export interface SoakResult {
  readonly samples: readonly SoakSample[];
  readonly trends: readonly SeriesTrend[];
  readonly traffic: TrafficSummary;
  /** Failed requests per sample interval (same index as samples). */
  readonly failuresPerSample: readonly number[];
  readonly durationS: number;
  readonly warmupS: number;
  readonly changes: number;
  readonly syncFailures: number;
}

const NODE = "node-1";
const NODE_IP = "192.168.50.1";
const CLIENT = "client";
const VIP = "10.1.0.80";
const PODS = { "web-a": "10.244.0.30", "web-b": "10.244.0.31" } as const;

/** A small deterministic generator (mulberry32), so a run's churn is a function of its seed. */
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 2 ** 32;
  };
}

function metric(text: string, name: string, labels = ""): number | undefined {
  for (const line of text.split("\n")) {
    if (!line.startsWith(name)) continue;
    const rest = line.slice(name.length);
    if (labels === "" ? !rest.startsWith(" ") && !rest.startsWith("{") : !rest.startsWith(`{${labels}`))
      continue;
    const value = Number(line.slice(line.lastIndexOf(" ") + 1));
    if (Number.isFinite(value)) return value;
  }
  return undefined;
}

/** One churned Service and its slice: random ports, 0–4 endpoints on another node. */
function churned(i: number, random: () => number): KubeObject[] {
  const name = `soak-${i}`;
  const port = 80 + Math.floor(random() * 8000);
  const protocol = random() < 0.2 ? ("UDP" as const) : ("TCP" as const);
  const endpoints = Array.from({ length: Math.floor(random() * 5) }, () => ({
    ip: `10.244.1.${2 + Math.floor(random() * 250)}`,
    node: "node-2",
  }));
  const unique = [...new Map(endpoints.map((e) => [e.ip, e])).values()];
  return [
    service({
      name,
      clusterIP: `10.1.${1 + Math.floor(i / 250)}.${1 + (i % 250)}`,
      ports: [{ name: "p", port, protocol }],
      ...(random() < 0.3 ? { type: "NodePort" as const } : {}),
    }),
    endpointSlice({ service: name, endpoints: unique, ports: [{ name: "p", port, protocol }] }),
  ];
}

/** Least-squares slope of y over x (x in seconds); 0 with fewer than two points. */
function slope(xs: readonly number[], ys: readonly number[]): number {
  const n = xs.length;
  if (n < 2) return 0;
  const mx = xs.reduce((a, b) => a + b, 0) / n;
  const my = ys.reduce((a, b) => a + b, 0) / n;
  let num = 0;
  let den = 0;
  for (let k = 0; k < n; k++) {
    num += (xs[k]! - mx) * (ys[k]! - my);
    den += (xs[k]! - mx) ** 2;
  }
  return den === 0 ? 0 : num / den;
}

/**
 * A series is flagged when its fitted growth over the window after the warm-up is more than 10%
 * of its mean and more than `absolute` (5 MB of memory, 5 descriptors): noise on a flat series
 * stays below both, a steady leak of that size over the run does not.
 */
export function trend(
  name: string,
  unit: string,
  samples: readonly SoakSample[],
  warmupS: number,
  value: (s: SoakSample) => number,
  absolute: number,
): SeriesTrend {
  const window = samples.filter((s) => s.atS >= warmupS);
  const xs = window.map((s) => s.atS);
  const ys = window.map(value);
  const perSecond = slope(xs, ys);
  const span = xs.length < 2 ? 0 : xs.at(-1)! - xs[0]!;
  const fittedGrowth = perSecond * span;
  const mean = ys.length === 0 ? 0 : ys.reduce((a, b) => a + b, 0) / ys.length;
  return {
    name,
    unit,
    first: ys[0] ?? Number.NaN,
    last: ys.at(-1) ?? Number.NaN,
    mean,
    slopePerHour: perSecond * 3600,
    fittedGrowth,
    flagged: fittedGrowth > absolute && fittedGrowth > 0.1 * mean,
  };
}

export async function runSoak(options: SoakOptions, log: (line: string) => void): Promise<SoakResult> {
  const random = prng(options.seed);
  let sandbox: Sandbox | undefined;
  let daemon: ProxyDaemon | undefined;
  let client: TrafficClient | undefined;
  try {
    sandbox = await startProxyNode("kptsoak", {
      node: { name: NODE, ipv4: NODE_IP, podCIDR: "10.244.0.0/24", defaultGateways: ["192.168.50.254"] },
      client: { name: CLIENT, ipv4: "192.168.50.2", routes: ["10.1.0.0/16"] },
      pods: PODS,
      podServer: { udpPort: null, readyTimeoutMs: 30_000 },
    });
    daemon = await ProxyDaemon.start(sandbox, {
      node: NODE,
      // The last --iptables-min-sync-period wins over the test default of 0 s: upstream's 1 s.
      args: ["--cluster-cidr", "10.244.0.0/16", "--iptables-min-sync-period", "1s"],
      manifests: {
        "node.yaml": nodeObject({ name: NODE, ips: [NODE_IP], podCIDRs: ["10.244.0.0/24"] }),
        "web.yaml": [
          service({ name: "web", clusterIP: VIP, ports: [{ name: "http", port: 80 }] }),
          endpointSlice({
            service: "web",
            endpoints: Object.entries(PODS).map(([pod, ip]) => ({ ip, node: NODE, pod })),
            ports: [{ name: "http", port: 80 }],
          }),
        ],
      },
    });
    const clientStarted = Date.now();
    client = await TrafficClient.start(sandbox, CLIENT, "load", {
      host: VIP,
      port: 80,
      intervalMs: 100,
      timeoutMs: 2_000,
      maxMs: options.durationMs + 120_000,
    });
    const present = new Set<number>();
    let nextId = 0;
    let changes = 0;
    const churnOnce = () => {
      const r = random();
      const d = daemon!;
      const adding = present.size < options.maxServices / 2 ? r < 0.7 : r < 0.35;
      if ((adding && present.size < options.maxServices) || present.size === 0) {
        const i = nextId++;
        present.add(i);
        d.write(`soak-${i}.yaml`, churned(i, random));
      } else if (r < 0.6) {
        const victims = [...present];
        const i = victims[Math.floor(random() * victims.length)]!;
        present.delete(i);
        d.remove(`soak-${i}.yaml`);
      } else {
        const victims = [...present];
        const i = victims[Math.floor(random() * victims.length)]!;
        d.write(`soak-${i}.yaml`, churned(i, random));
      }
      changes++;
    };

    const samples: SoakSample[] = [];
    const started = Date.now();
    let lastSum = 0;
    let lastCount = 0;
    let nextSample = started;
    let syncFailures = 0;
    while (Date.now() - started < options.durationMs) {
      if (options.signal?.aborted) throw new Error("soak interrupted");
      if (!daemon.running) throw new Error(`the daemon exited during the soak${daemon.logTail()}`);
      if (Date.now() >= nextSample) {
        const text = await daemon.metrics();
        const sum = metric(text, "kubeproxy_sync_proxy_rules_duration_seconds_sum", 'ip_family="IPv4"') ?? 0;
        const count =
          metric(text, "kubeproxy_sync_proxy_rules_duration_seconds_count", 'ip_family="IPv4"') ?? 0;
        syncFailures = metric(text, "kubeproxy_sync_proxy_rules_iptables_restore_failures_total") ?? 0;
        const syncs = count - lastCount;
        const sample: SoakSample = {
          atS: (Date.now() - started) / 1000,
          rssMB: (metric(text, "process_resident_memory_bytes") ?? Number.NaN) / 2 ** 20,
          heapMB: (metric(text, "nodejs_heap_size_used_bytes") ?? Number.NaN) / 2 ** 20,
          fds: metric(text, "process_open_fds") ?? Number.NaN,
          syncs,
          meanSyncMs: syncs > 0 ? ((sum - lastSum) / syncs) * 1000 : null,
          services: present.size,
          changes,
        };
        lastSum = sum;
        lastCount = count;
        samples.push(sample);
        log(
          `soak ${Math.round(sample.atS)} s: rss ${sample.rssMB.toFixed(1)} MB, heap ${sample.heapMB.toFixed(1)} MB, ` +
            `fds ${sample.fds}, ${syncs} syncs (mean ${sample.meanSyncMs?.toFixed(0) ?? "-"} ms), ` +
            `${present.size} churned Services, ${changes} changes`,
        );
        nextSample += options.sampleMs;
      }
      churnOnce();
      await sleep(options.churnMs);
    }
    const durationS = (Date.now() - started) / 1000;
    const traffic = await client.stop();
    client = undefined;
    // The client's failure times count from its own start (its first answer came before ours).
    const offsetMs = started - clientStarted;
    const failuresPerSample = samples.map((s, k) => {
      const from = (k === 0 ? -Infinity : samples[k - 1]!.atS * 1000) + offsetMs;
      const to = s.atS * 1000 + offsetMs;
      return traffic.failures.filter((f) => f.atMs >= from && f.atMs < to).length;
    });
    // The warm-up, left out of the fits: the first fifth of the run (at least two samples), and
    // until the churned Services first reach 90% of their bound (the state grows until then).
    const filled = samples.find((s) => s.services >= 0.9 * options.maxServices)?.atS ?? durationS;
    const warmupS = Math.max(samples[1]?.atS ?? 0, durationS / 5, Math.min(filled, durationS / 2));
    const trends = [
      trend("resident memory", "MB", samples, warmupS, (s) => s.rssMB, 5),
      trend("V8 heap used", "MB", samples, warmupS, (s) => s.heapMB, 5),
      trend("open file descriptors", "", samples, warmupS, (s) => s.fds, 5),
    ];
    return { samples, trends, traffic, failuresPerSample, durationS, warmupS, changes, syncFailures };
  } finally {
    await client?.stop().catch(() => undefined);
    await disposeProxyNode(daemon, sandbox);
  }
}

export function soakTable(result: SoakResult): string {
  const rows = result.samples.map((s, k) => {
    const ms = s.meanSyncMs === null ? "–" : `${Math.round(s.meanSyncMs)}`;
    return `| ${Math.round(s.atS)} | ${s.rssMB.toFixed(1)} | ${s.heapMB.toFixed(1)} | ${s.fds} | ${s.syncs} | ${ms} | ${s.services} | ${s.changes} | ${result.failuresPerSample[k] ?? 0} |`;
  });
  const answers = result.traffic.answers;
  const failed = result.traffic.failures.length;
  const trendRows = result.trends.map(
    (t) =>
      `| ${t.name} | ${t.first.toFixed(1)} | ${t.last.toFixed(1)} | ${t.mean.toFixed(1)} | ${t.slopePerHour >= 0 ? "+" : ""}${t.slopePerHour.toFixed(1)} ${t.unit}/h | ${t.fittedGrowth >= 0 ? "+" : ""}${t.fittedGrowth.toFixed(1)} ${t.unit} | ${t.flagged ? "**possible leak**" : "no"} |`,
  );
  return [
    "| t (s) | RSS (MB) | heap used (MB) | open fds | syncs | mean sync (ms) | churned Services | changes | failed requests |",
    "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ...rows,
    "",
    `${Math.round(result.durationS)} s, ${result.changes} manifest changes, ${answers} requests answered, ${failed} failed, ` +
      `${result.syncFailures} failed restores. Trends fitted after the first ${Math.round(result.warmupS)} s:`,
    "",
    "| series | first | last | mean | slope | fitted growth | flag |",
    "|---|---:|---:|---:|---:|---:|---|",
    ...trendRows,
  ].join("\n");
}

/** The curves as a plain SVG: one panel per series over time, min and max labelled. */
export function soakSvg(result: SoakResult, title: string): string {
  const width = 720;
  const panelHeight = 120;
  const left = 70;
  const right = 20;
  const top = 40;
  const gap = 40;
  const series: { name: string; values: (number | null)[] }[] = [
    { name: "resident memory (MB)", values: result.samples.map((s) => s.rssMB) },
    { name: "V8 heap used (MB)", values: result.samples.map((s) => s.heapMB) },
    { name: "open file descriptors", values: result.samples.map((s) => s.fds) },
    { name: "mean sync duration (ms)", values: result.samples.map((s) => s.meanSyncMs) },
    { name: "failed requests per sample", values: result.failuresPerSample.map((n) => n) },
  ];
  const xs = result.samples.map((s) => s.atS);
  const maxX = Math.max(1, ...xs);
  const height = top + series.length * (panelHeight + gap);
  const esc = (s: string) => s.replace(/&/g, "&amp;").replace(/</g, "&lt;");
  const parts = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" font-family="sans-serif" font-size="11">`,
    `<rect width="100%" height="100%" fill="white"/>`,
    `<text x="${left}" y="20" font-size="13">${esc(title)}</text>`,
  ];
  series.forEach((s, k) => {
    const y0 = top + k * (panelHeight + gap);
    const defined = s.values.filter((v): v is number => v !== null && Number.isFinite(v));
    const lo = Math.min(0, ...defined);
    const hi = Math.max(1, ...defined) * 1.1;
    const px = (x: number) => left + ((width - left - right) * x) / maxX;
    const py = (v: number) => y0 + panelHeight - (panelHeight * (v - lo)) / (hi - lo);
    parts.push(
      `<text x="${left}" y="${y0 - 6}">${esc(s.name)}</text>`,
      `<rect x="${left}" y="${y0}" width="${width - left - right}" height="${panelHeight}" fill="none" stroke="#999"/>`,
      `<text x="${left - 6}" y="${y0 + 10}" text-anchor="end">${hi.toFixed(hi < 10 ? 1 : 0)}</text>`,
      `<text x="${left - 6}" y="${y0 + panelHeight}" text-anchor="end">${lo.toFixed(0)}</text>`,
      `<text x="${width - right}" y="${y0 + panelHeight + 14}" text-anchor="end">${Math.round(maxX)} s</text>`,
    );
    const points = s.values
      .map((v, i) =>
        v === null || !Number.isFinite(v) ? null : `${px(xs[i]!).toFixed(1)},${py(v).toFixed(1)}`,
      )
      .filter((p): p is string => p !== null);
    if (points.length > 0)
      parts.push(`<polyline fill="none" stroke="#1f6fb4" stroke-width="1.5" points="${points.join(" ")}"/>`);
  });
  parts.push("</svg>", "");
  return parts.join("\n");
}

export function writeSoakSvg(path: string, result: SoakResult, title: string): void {
  mkdirSync(dirname(path), { recursive: true });
  writeFileSync(path, soakSvg(result, title));
}
