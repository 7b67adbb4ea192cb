/**
 * Trace benchmark (issue 6): parse a rendered dump of S Services x E endpoints, then trace
 * packets through it. Parse and trace are timed separately; the target is a trace in ≤ 200 ms
 * after parsing. Each flow is traced once cold, then `repeats` more times (best shown).
 *
 *   node --import tsx bench/trace.ts [--services 10000] [--endpoints 10] [--repeats 5] [--cli]
 *
 * `--cli` also times `kube-proxy-ts trace --ruleset FILE` end to end (process start, tsx, read,
 * parse, trace, print), which is what a user waits for.
 */
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { renderIptables } from "../src/backends/iptables/render.ts";
import { selfArgv } from "../src/cli/self.ts";
import { formatAddress } from "../src/ip.ts";
import { parseIptablesSave } from "../src/netfilter/iptables-save.ts";
import type { Ruleset } from "../src/netfilter/model.ts";
import { tracePacket } from "../src/netfilter/tracer.ts";
import type { Origin, TracePacket } from "../src/netfilter/tracer.ts";
import { buildProxyState } from "../src/proxy/state.ts";
import { formatMs } from "./restore.ts";
import { runner } from "./netns.ts";
import { BENCH_NODE, benchSettings, nodeDump, syntheticCluster } from "./synthetic.ts";

const TARGET_MS = 200;

interface Flow {
  readonly name: string;
  readonly packet: TracePacket;
  readonly origin: Origin;
}

/** Cluster IPs in KUBE-SERVICES order: the first and last are the cheapest and dearest to reach. */
function clusterIPs(ruleset: Ruleset): { ip: string; port: number }[] {
  const out: { ip: string; port: number }[] = [];
  for (const rule of ruleset.tables.get("nat")?.chains.get("KUBE-SERVICES")?.rules ?? []) {
    const dst = rule.matches.find((m) => m.kind === "destination");
    const port = rule.matches.find((m) => m.kind === "destinationPort");
    if (dst?.kind === "destination" && port?.kind === "destinationPort")
      out.push({ ip: formatAddress(dst.cidr), port: port.ranges[0]?.[0] ?? 0 });
  }
  return out;
}

function flowsFor(ruleset: Ruleset): Flow[] {
  const ips = clusterIPs(ruleset);
  const first = ips[0];
  const last = ips.at(-1);
  if (first === undefined || last === undefined) throw new Error("no cluster IPs in the rendered dump");
  const pod = (name: string, dst: { ip: string; port: number }): Flow => ({
    name,
    origin: "pod",
    packet: { protocol: "tcp", src: "10.128.0.5", srcPort: 40000, dst: dst.ip, dstPort: dst.port },
  });
  return [
    pod("pod → first Service's ClusterIP", first),
    pod("pod → last Service's ClusterIP", last),
    pod("pod → an address no Service has (whole KUBE-SERVICES)", { ip: "10.95.255.254", port: 80 }),
    {
      name: "node → last Service's ClusterIP",
      origin: "node",
      packet: { protocol: "tcp", src: "192.168.0.2", dst: last.ip, dstPort: last.port },
    },
  ];
}

function time<T>(body: () => T): { value: T; ms: number } {
  const t = performance.now();
  const value = body();
  return { value, ms: performance.now() - t };
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      services: { type: "string", default: "10000" },
      endpoints: { type: "string", default: "10" },
      repeats: { type: "string", default: "5" },
      cli: { type: "boolean", default: false },
    },
  });
  const services = Number(values.services);
  const endpoints = Number(values.endpoints);
  const repeats = Number(values.repeats);
  if (![services, endpoints, repeats].every((n) => Number.isInteger(n) && n > 0))
    throw new Error("--services, --endpoints and --repeats take positive integers");

  const cluster = syntheticCluster(services, endpoints);
  const { state } = buildProxyState(
    { services: cluster.services, endpointSlices: cluster.endpointSlices, node: null },
    { family: "IPv4", nodeName: BENCH_NODE },
  );
  const settings = benchSettings();
  const rendered = renderIptables({
    state,
    settings,
    fullSync: true,
    changedServices: new Set(),
    existingNatChains: [],
  });
  const payload = nodeDump(rendered.payload);
  const lines = payload.split("\n").length;
  const parsed = time(() => parseIptablesSave(payload));
  const ruleset = parsed.value;
  const localAddresses = settings.localAddresses.map((a) => a.split("/")[0] ?? a);

  const out: string[] = [
    `## Trace: ${services} Services x ${endpoints} endpoints (${lines} dump lines, ${(Buffer.byteLength(payload) / 1e6).toFixed(1)} MB)`,
    "",
    `parse: ${formatMs(parsed.ms)}`,
    "",
    `| flow | outcomes (DNAT) | cold trace | best of ${repeats} | ≤ ${TARGET_MS} ms |`,
    "|---|---|---|---|---|",
  ];
  let worst = 0;
  for (const flow of flowsFor(ruleset)) {
    const trace = () => tracePacket(ruleset, flow.packet, { localAddresses, origin: flow.origin });
    const cold = time(trace);
    let best = Infinity;
    for (let i = 0; i < repeats; i++) best = Math.min(best, time(trace).ms);
    worst = Math.max(worst, cold.ms);
    out.push(
      `| ${flow.name} | ${cold.value.outcomes.length} (${cold.value.outcomes.filter((o) => o.dnat !== undefined).length}) | ${formatMs(cold.ms)} | ${formatMs(best)} | ${cold.ms <= TARGET_MS ? "yes" : "NO"} |`,
    );
  }
  out.push("", `slowest cold trace: ${formatMs(worst)} (target ≤ ${TARGET_MS} ms after parsing)`);

  if (values.cli === true) {
    const dir = mkdtempSync(join(tmpdir(), "kpt-bench-trace-"));
    try {
      const file = join(dir, "dump.txt");
      writeFileSync(file, payload);
      const last = clusterIPs(ruleset).at(-1);
      const result = await runner.run(
        selfArgv(["trace", "--ruleset", file, "--src", "10.128.0.5", "--dst", `${last?.ip}:${last?.port}`]),
        { timeoutMs: 120_000 },
      );
      out.push(
        `\`kube-proxy-ts trace --ruleset\` end to end (process start + parse + trace): ${formatMs(result.durationMs)}`,
      );
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  }
  process.stdout.write(out.join("\n") + "\n");
}

await main();
