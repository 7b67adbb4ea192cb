/**
 * Explain benchmark (issue 14): `explain` of one Service in a dump of S Services x E endpoints.
 * Times the command as a user runs it on a dump (read, the Service's slice, parse, explain,
 * format) for the first, a middle and the last Service, against parsing the whole dump and
 * explaining from that (what `explain` did before). Target: ≤ 1 s per Service.
 *
 *   node --import tsx bench/explain.ts [--services 10000] [--endpoints 10] [--repeats 3]
 */
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { renderIptables } from "../src/backends/iptables/render.ts";
import { explainCommand } from "../src/cli/explain.ts";
import { explainService } from "../src/netfilter/explain.ts";
import { parseIptablesSave } from "../src/netfilter/iptables-save.ts";
import { buildProxyState } from "../src/proxy/state.ts";
import { formatMs } from "./restore.ts";
import { BENCH_NODE, benchSettings, nodeDump, syntheticCluster } from "./synthetic.ts";

const TARGET_MS = 1000;

async function time<T>(body: () => Promise<T> | T): Promise<{ value: T; ms: number }> {
  const t = performance.now();
  const value = await body();
  return { value, ms: performance.now() - t };
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      services: { type: "string", default: "10000" },
      endpoints: { type: "string", default: "10" },
      repeats: { type: "string", default: "3" },
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
  const rendered = renderIptables({
    state,
    settings: benchSettings(),
    fullSync: true,
    changedServices: new Set(),
    existingNatChains: [],
  });
  const dump = nodeDump(rendered.payload);
  const picks = [0, Math.floor(services / 2), services - 1].map((i) => cluster.services[i]!.metadata);
  const dir = mkdtempSync(join(tmpdir(), "kpt-bench-explain-"));
  const out: string[] = [
    `## Explain: ${services} Services x ${endpoints} endpoints (${dump.split("\n").length} dump lines, ${(Buffer.byteLength(dump) / 1e6).toFixed(1)} MB)`,
    "",
    `| Service | \`explain --ruleset\`, cold | best of ${repeats} | whole-dump parse + explain | ratio | ≤ ${TARGET_MS} ms |`,
    "|---|---|---|---|---|---|",
  ];
  try {
    const file = join(dir, "dump.txt");
    writeFileSync(file, dump);
    for (const meta of picks) {
      const ref = `${meta.namespace}/${meta.name}`;
      const run = () => explainCommand(ref, { ruleset: file, output: "json" });
      const cold = await time(run);
      if (!cold.value.includes('"service"')) throw new Error(`no explanation for ${ref}`);
      let best = Infinity;
      for (let i = 0; i < repeats; i++) best = Math.min(best, (await time(run)).ms);
      const whole = await time(() =>
        explainService(parseIptablesSave(dump), { namespace: meta.namespace, name: meta.name }),
      );
      out.push(
        `| ${ref} | ${formatMs(cold.ms)} | ${formatMs(best)} | ${formatMs(whole.ms)} | ${(whole.ms / best).toFixed(1)}x | ${cold.ms <= TARGET_MS ? "yes" : "NO"} |`,
      );
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  process.stdout.write(out.join("\n") + "\n");
}

await main();
