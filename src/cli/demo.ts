import { mkdtempSync, renameSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { InputError, KubeProxyError } from "../errors.ts";
import { ExecError } from "../kernel/exec.ts";
import type { BackgroundProcess } from "../kernel/spawn.ts";
import { explainService, formatExplanation } from "../netfilter/explain.ts";
import { parseIptablesSave } from "../netfilter/iptables-save.ts";
import { probeHttp, type ProbeReport } from "../sandbox/client.ts";
import {
  addSeedPod,
  buildSeedTopology,
  removeSeedPod,
  SEED,
  seedManifests,
  seedPod,
  type SeedPod,
} from "../sandbox/seed.ts";
import { Sandbox } from "../sandbox/topology.ts";
import { selfArgv } from "./self.ts";

class DemoFailure extends KubeProxyError {
  readonly code = "KPT_DEMO_FAILED";
}

interface DemoOptions {
  readonly requests: number;
  readonly keep: boolean;
  readonly mode: DemoMode;
}

type DemoMode = "iptables" | "nftables";

/** How the demo reads one mode's objects in the node namespace: endpoint count, and the walk. */
interface ModeWalk {
  readonly endpoints: (sandbox: Sandbox) => Promise<number>;
  readonly walk: (sandbox: Sandbox, only?: "svc") => Promise<string>;
  readonly title: string;
}

const WALKS: Readonly<Record<DemoMode, ModeWalk>> = {
  iptables: {
    endpoints: async (sandbox) => endpointsInRules(parseIptablesSave(await save(sandbox))),
    walk,
    title:
      "Why: the seed's walk KUBE-SERVICES → KUBE-SVC-… → KUBE-SEP-… → DNAT, from the live kernel (iptables -t nat -vnL columns)",
  },
  nftables: {
    // The mode's own explainer, run in the node namespace against the live table.
    endpoints: async (sandbox) => {
      try {
        const out = await explainInNode(sandbox, ["-o", "json", "--no-conntrack"]);
        return new Set(
          (JSON.parse(out) as { view: { endpoints: { endpoint: string }[] } }).view.endpoints.map(
            (e) => e.endpoint,
          ),
        ).size;
      } catch (error) {
        // No table or no objects for the Service yet: the daemon has not synced.
        if (error instanceof ExecError) return 0;
        throw error;
      }
    },
    walk: async (sandbox, only) => {
      const text = await explainInNode(sandbox, []);
      const part = only === "svc" ? (/\nendpoints \(share[\s\S]*?\n\n/.exec(text)?.[0] ?? text) : text;
      return part
        .trim()
        .split("\n")
        .map((l) => (l === "" ? l : `    ${l}`))
        .join("\n");
    },
    title:
      "Why: the seed's walk services → @service-ips → service-… → numgen → endpoint-… → DNAT, from the live table (nft -j list table ip kube-proxy), with conntrack entries per endpoint",
  },
};

async function explainInNode(sandbox: Sandbox, extra: readonly string[]): Promise<string> {
  const argv = selfArgv(["explain", "--proxy-mode", "nftables", SERVICE, ...extra]);
  return (await sandbox.exec(NODE, argv, { timeoutMs: 30_000 })).stdout;
}

function demoMode(value: unknown): DemoMode {
  if (value === undefined || value === "iptables") return "iptables";
  if (value === "nftables") return "nftables";
  throw new InputError(
    "--proxy-mode",
    `the demo runs iptables or nftables mode, not ${JSON.stringify(value)}`,
  );
}

const NODE = SEED.node.name;
const SERVICE = `${SEED.namespace}/${SEED.service}`;

function say(text = ""): void {
  process.stdout.write(`${text}\n`);
}

function step(n: number, title: string): void {
  say();
  say(`━━ ${n}. ${title}`);
}

/** "nginx-…-abcde  10 ██████████ 50%" lines: how the answers spread over the pods. */
function spread(report: ProbeReport, expectedPods: readonly string[]): string {
  const total = report.results.length;
  const lines = expectedPods.map((pod) => {
    const n = report.byPod[pod] ?? 0;
    const pct = total === 0 ? 0 : Math.round((100 * n) / total);
    return `    ${pod.padEnd(28)} ${String(n).padStart(4)}  ${"█".repeat(Math.round(pct / 4)).padEnd(25)} ${pct}%`;
  });
  const failures = Object.entries(report.errors).map(([kind, n]) => `${n} ${kind}`);
  lines.push(
    `    ${failures.length === 0 ? `all ${total} requests answered` : `FAILED: ${failures.join(", ")}`}`,
  );
  return lines.join("\n");
}

function failedCount(report: ProbeReport): number {
  return Object.values(report.errors).reduce((a, b) => a + (b ?? 0), 0);
}

/**
 * `kube-proxy-ts demo`: the seed document's walk on a real kernel. A sandbox of network
 * namespaces (node, nginx pods, external client) runs the real daemon against built-in
 * manifests; real requests show the load-balancing, the live rules show why; then the Service is
 * scaled up and down while traffic flows. Everything is torn down at the end, also on failure.
 */
export async function demoCommand(raw: Record<string, unknown>): Promise<void> {
  if (process.getuid?.() !== 0)
    throw new InputError("demo", "needs root (it creates network namespaces); run it with sudo");
  const options: DemoOptions = {
    requests: Number(raw["requests"] ?? 20),
    keep: raw["keep"] === true,
    mode: demoMode(raw["proxyMode"]),
  };
  const mode = WALKS[options.mode];
  if (!Number.isInteger(options.requests) || options.requests < 1 || options.requests > 500) {
    throw new InputError("--requests", "must be an integer from 1 to 500");
  }
  await Sandbox.sweep("kptdemo").catch(() => undefined);
  const sandbox = await Sandbox.create({ prefix: "kptdemo" });
  const manifests = mkdtempSync(join(tmpdir(), "kpt-demo-"));
  let daemon: BackgroundProcess | null = null;
  let failures = 0;
  try {
    step(1, "Sandbox: one node, two nginx pods, one external client (network namespaces, real kernel)");
    const topo = await buildSeedTopology(sandbox, { pods: 2 });
    say(`    node ${NODE} ${SEED.node.ipv4} (pod CIDR ${SEED.node.podCIDR}), client ${SEED.external.ipv4}`);
    for (const pod of topo.pods) say(`    pod ${pod.name} ${pod.ipv4}`);
    let pods: SeedPod[] = [seedPod(0), seedPod(1)];
    writeManifests(manifests, pods);
    say(`    Service ${SERVICE}: ClusterIP ${SEED.clusterIP}:${SEED.port}, NodePort ${SEED.nodePort}`);

    step(
      2,
      `Start kube-proxy-ts in the node namespace (${options.mode} mode, manifests folder as the source)`,
    );
    daemon = sandbox.spawn(
      NODE,
      selfArgv([
        "--manifests",
        manifests,
        "--hostname-override",
        NODE,
        "--cluster-cidr",
        "10.244.0.0/16",
        "--iptables-min-sync-period",
        "0s",
        "--healthz-bind-address",
        "127.0.0.1:10256",
        "--metrics-bind-address",
        "127.0.0.1:10249",
        "--proxy-mode",
        options.mode,
      ]),
    );
    await waitForEndpoints(sandbox, 2, daemon, mode);
    say("    rules programmed");

    step(
      3,
      `Traffic: ${options.requests} requests to the ClusterIP from a pod, and to the NodePort from outside`,
    );
    const fromPod = await probeHttp(sandbox, pods[0]!.name, {
      host: SEED.clusterIP,
      port: SEED.port,
      count: options.requests,
    });
    say(`  ${SEED.clusterIP}:${SEED.port} from pod ${pods[0]!.name}:`);
    say(
      spread(
        fromPod,
        pods.map((p) => p.name),
      ),
    );
    const fromOutside = await probeHttp(sandbox, SEED.external.name, {
      host: SEED.node.ipv4,
      port: SEED.nodePort,
      count: options.requests,
    });
    say(`  ${SEED.node.ipv4}:${SEED.nodePort} (NodePort) from the external client:`);
    say(
      spread(
        fromOutside,
        pods.map((p) => p.name),
      ),
    );
    failures += failedCount(fromPod) + failedCount(fromOutside);

    step(4, mode.title);
    say(await mode.walk(sandbox));

    step(5, "Scale up: a third pod joins; the rules and the spread change");
    const third = await addSeedPod(sandbox);
    pods = [...pods, seedPod(2)];
    say(`    pod ${third.pod.name} ${third.pod.ipv4} added to the EndpointSlice`);
    writeManifests(manifests, pods);
    await waitForEndpoints(sandbox, 3, daemon, mode);
    const scaled = await probeHttp(sandbox, pods[0]!.name, {
      host: SEED.clusterIP,
      port: SEED.port,
      count: options.requests * 3,
    });
    say(
      spread(
        scaled,
        pods.map((p) => p.name),
      ),
    );
    failures += failedCount(scaled);
    say(await mode.walk(sandbox, "svc"));

    step(6, "Scale down while traffic flows: the endpoint leaves the rules first, then its pod goes away");
    const leaving = pods[1]!;
    const load = probeHttp(sandbox, SEED.external.name, {
      host: SEED.node.ipv4,
      port: SEED.nodePort,
      count: options.requests * 4,
      timeoutMs: 2000,
    });
    pods = pods.filter((p) => p.name !== leaving.name);
    writeManifests(manifests, pods);
    await waitForEndpoints(sandbox, 2, daemon, mode);
    await removeSeedPod(sandbox, leaving.name);
    say(`    pod ${leaving.name} removed`);
    const during = await load;
    say("  requests sent during the scale-down:");
    say(spread(during, [...pods.map((p) => p.name), leaving.name]));
    failures += failedCount(during);

    say();
    if (failures > 0) throw new DemoFailure(`${failures} request(s) failed`);
    say("Demo complete: every request was answered. Tearing the sandbox down.");
  } finally {
    if (options.keep) {
      sandbox.release();
      say(`--keep: leaving sandbox ${sandbox.id} (namespaces ${sandbox.prefix}-${sandbox.id}-*) in place`);
    } else {
      await sandbox.dispose();
      rmSync(manifests, { recursive: true, force: true });
    }
  }
}

/** The seed manifests into `dir`, each replaced in one rename. */
export function writeManifests(dir: string, pods: readonly SeedPod[]): void {
  for (const [file, text] of Object.entries(seedManifests(pods))) {
    // Write-then-rename in the same folder: the daemon's watcher never sees a half-written file.
    const temp = join(dir, `.${file}.tmp`);
    writeFileSync(temp, text);
    renameSync(temp, join(dir, file));
  }
}

async function save(sandbox: Sandbox): Promise<string> {
  return (await sandbox.exec(NODE, ["iptables-save", "-c"])).stdout;
}

/** Waits (bounded) until the mode's objects send the Service to exactly `n` endpoints. */
async function waitForEndpoints(
  sandbox: Sandbox,
  n: number,
  daemon: BackgroundProcess,
  mode: ModeWalk,
): Promise<void> {
  const deadline = Date.now() + 30_000;
  while (Date.now() < deadline) {
    if (!daemon.running) throw new DemoFailure(`kube-proxy-ts exited early:\n${daemon.stderr.slice(-2000)}`);
    if ((await mode.endpoints(sandbox)) === n) return;
    await new Promise((resolve) => setTimeout(resolve, 200));
  }
  throw new DemoFailure(
    `the rules did not reach ${n} endpoints within 30 s; daemon log:\n${daemon.stderr.slice(-2000)}`,
  );
}

function endpointsInRules(ruleset: ReturnType<typeof parseIptablesSave>): number {
  try {
    return explainService(ruleset, { namespace: SEED.namespace, name: SEED.service }).endpoints.length;
  } catch (error) {
    // No rules for the Service yet: the daemon has not synced.
    if (error instanceof InputError) return 0;
    throw error;
  }
}

async function walk(sandbox: Sandbox, only?: "svc"): Promise<string> {
  const ruleset = parseIptablesSave(await save(sandbox));
  let text = formatExplanation(
    explainService(ruleset, { namespace: SEED.namespace, name: SEED.service }),
    ruleset.family,
  );
  if (only === "svc") {
    const start = text.indexOf("Chain KUBE-SVC-");
    if (start >= 0) text = text.slice(start).split("\n\n")[0] ?? text;
  }
  return text
    .split("\n")
    .map((l) => (l === "" ? l : `    ${l}`))
    .join("\n");
}
