/**
 * nftables mode's explainer and its `trace` / `explain` commands on upstream's
 * TestOverallNFTablesRules table (rendered by our renderer), and the web view's live source over
 * a fake kernel reader: no kernel.
 */
import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import {
  explainNftService,
  nftablesInspectionSource,
  nftablesInspector,
  type NftablesKernelReader,
  parseChainName,
  readLiveNftables,
  readNftablesDump,
} from "../../../src/backends/nftables/inspect.ts";
import { renderNftables } from "../../../src/backends/nftables/render.ts";
import { upstreamTestSettings } from "../../../src/backends/nftables/settings.ts";
import { planFullSync } from "../../../src/backends/nftables/transactions.ts";
import { explainCommand } from "../../../src/cli/explain.ts";
import { traceCommand } from "../../../src/cli/trace.ts";
import { InputError } from "../../../src/errors.ts";
import { whyNoTraffic } from "../../../src/inspect/model.ts";
import type { Runner } from "../../../src/kernel/exec.ts";
import { loadNftablesState } from "../../support/nftables-golden.ts";
import { ScriptRunner } from "../kernel/script-runner.ts";

const FIXTURES = new URL("../../fixtures/nftables/", import.meta.url);
const SETTINGS = upstreamTestSettings("IPv4");
const state = loadNftablesState(
  readFileSync(new URL("OverallNFTablesRules.yaml", FIXTURES), "utf8"),
  "overall",
  SETTINGS,
);
const payload = planFullSync(renderNftables({ state, settings: SETTINGS, featureGates: {} }), null, {
  resetBaseChains: false,
}).payload;
const foreign =
  "add table inet filter\nadd chain inet filter input { type filter hook input priority 0 ; }\nadd rule inet filter input tcp dport 22 accept\n";
const reading = readNftablesDump({ text: payload + foreign, origin: "test" });
const table = reading.tables[0]!;

/** A runner that must not be used: these commands read dumps only. */
const noKernel: Runner = {
  run: () => Promise.reject(new Error("no kernel in unit tests")),
} as unknown as Runner;

test("our table is traced, a foreign one only reported", () => {
  assert.deepEqual(
    reading.tables.map((t) => `${t.family} ${t.name}`),
    ["ip kube-proxy"],
  );
  assert.deepEqual(reading.foreign, ["table inet filter"]);
});

test("chain names carry the Service port", () => {
  assert.deepEqual(parseChainName("endpoint-5OJB2KTY-ns1/svc1/tcp/p80__10.180.0.1/80"), {
    prefix: "endpoint",
    namespace: "ns1",
    name: "svc1",
    protocol: "tcp",
    port: "p80",
  });
  assert.equal(parseChainName("services"), null);
});

test("a ClusterIP Service: one frontend, its endpoint with all of the traffic", () => {
  const ex = explainNftService(table, { namespace: "ns1", name: "svc1" });
  assert.ok(ex !== null);
  assert.deepEqual(
    ex.view.frontends.map((f) => [f.kind, f.destination, f.action]),
    [["cluster IP", "172.30.0.41:80 (tcp)", "load-balance"]],
  );
  assert.deepEqual(
    ex.view.endpoints.map((e) => [e.endpoint, e.share]),
    [["10.180.0.1:80", 1]],
  );
  assert.deepEqual(whyNoTraffic(ex.view), []);
});

test("eTP Local without local endpoints: external addresses DROP, the cluster IP still balances", () => {
  const ex = explainNftService(table, { namespace: "ns2", name: "svc2" });
  assert.ok(ex !== null);
  const dropped = ex.view.frontends
    .filter((f) => f.action === "drop")
    .map((f) => [f.kind, f.destination, f.reason]);
  assert.deepEqual(dropped, [
    ["external address", "192.168.99.22:80 (tcp)", "no local endpoints"],
    ["external address", "1.2.3.4:80 (tcp)", "no local endpoints"],
    ["node port", "node port 3001 (tcp) on 192.168.0.2", "no local endpoints"],
  ]);
  assert.equal(whyNoTraffic(ex.view).length, 3);
});

test("source ranges and no endpoints are told as such", () => {
  const svc5 = explainNftService(table, { namespace: "ns5", name: "svc5" });
  const fw = svc5?.view.frontends.find((f) => f.reason === "source not allowed");
  assert.deepEqual(fw?.allowedSources, ["203.0.113.0/25"]);
  const svc6 = explainNftService(table, { namespace: "ns6", name: "svc6" });
  assert.deepEqual(
    svc6?.view.frontends.map((f) => [f.action, f.reason]),
    [["reject", "no endpoints"]],
  );
  assert.equal(explainNftService(table, { namespace: "ns9", name: "nope" }), null);
});

test("trace and explain --proxy-mode nftables read a --ruleset file", async () => {
  const dir = mkdtempSync(join(tmpdir(), "kpt-nftinspect-"));
  try {
    const file = join(dir, "table.nft");
    writeFileSync(file, payload + foreign);
    const out = await traceCommand(
      {
        proxyMode: "nftables",
        ruleset: file,
        src: "203.0.113.130",
        dst: "5.6.7.8:80",
        from: "external",
        localAddresses: "192.168.0.2",
      },
      noKernel,
    );
    assert.match(out, /foreign tables \(not ours, not traced\): table inet filter/);
    assert.match(out, /100% DROP \(dropped\)/);
    const json = JSON.parse(
      await traceCommand(
        { proxyMode: "nftables", ruleset: file, src: "10.0.0.2", dst: "172.30.0.44:80", output: "json" },
        noKernel,
      ),
    ) as { outcomes: { dnat: string; probability: number }[] };
    assert.deepEqual(
      json.outcomes.map((o) => [o.dnat, o.probability]),
      [
        ["10.180.0.4:80", 0.5],
        ["10.180.0.5:80", 0.5],
      ],
    );
    const explained = await explainCommand("ns6/svc6", { proxyMode: "nftables", ruleset: file }, noKernel);
    assert.match(
      explained,
      /ns6\/svc6:p80 has no endpoints: packets to 172\.30\.0\.46:80 \(tcp\) are REJECTed/,
    );
    await assert.rejects(
      explainCommand("ns9/nope", { proxyMode: "nftables", ruleset: file }, noKernel),
      InputError,
    );
    await assert.rejects(
      nftablesInspector.trace({
        packet: { protocol: "tcp", src: "fd00::1", dst: "fd00::2", dstPort: 80 },
        origin: "pod",
        dump: { text: payload, origin: "payload" },
        format: "text",
        runner: noKernel,
      }),
      /no table ip6 kube-proxy/,
    );
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test("the web view's source keeps its reading while the generation stays, and reads parts only when asked", async () => {
  const seed = readFileSync(new URL("dumps/seed.json", FIXTURES), "utf8");
  const tables = readNftablesDump({ text: seed, origin: "seed" }).tables;
  let generation = 7;
  const reads: string[] = [];
  const kernel: NftablesKernelReader = {
    generation: () => Promise.resolve(generation),
    tables: (options) => {
      reads.push(`${options.netns} ${options.what?.part}`);
      return Promise.resolve({ generation, tables, others: [{ family: "inet", name: "filter" }] });
    },
  };
  let address = "10.0.0.1/24";
  const runner = new ScriptRunner((argv) =>
    argv.join(" ") === "ip -j addr show"
      ? { stdout: JSON.stringify([{ addr_info: [{ local: address.split("/")[0], prefixlen: 24 }] }]) }
      : { exitCode: 1, stderr: `unexpected ${argv.join(" ")}` },
  );
  const source = nftablesInspectionSource(runner, "node-ns", kernel);
  const first = await source.read();
  assert.equal(first.mode, "nftables");
  assert.deepEqual(reads, ["node-ns dispatch"], "the list needs the dispatch maps only");
  const web = first.web!;
  assert.deepEqual(
    web.services.map((s) => s.service),
    ["default/nginx"],
  );
  assert.equal(
    web.service(4, "default", "nginx"),
    undefined,
    "a Service's part is not read before it is asked for",
  );
  assert.throws(() => web.rules("", 10), /whole table was not read/);
  await web.prepare!({ kind: "service", family: 4, namespace: "default", name: "nginx" });
  await web.prepare!({ kind: "service", family: 4, namespace: "default", name: "nginx" });
  assert.deepEqual(reads, ["node-ns dispatch", "node-ns service"], "one read of the Service's part");
  assert.equal(web.service(4, "default", "nginx")?.service, "default/nginx");
  assert.deepEqual(web.counters(new Set()), {});
  // The trace form reads what its packet passes (here the fake serves it all in one round).
  const flags = { src: "10.244.0.5:40000", dst: "10.1.125.152:80" };
  await web.prepare!({ kind: "trace", flags });
  assert.deepEqual(reads, ["node-ns dispatch", "node-ns service", "node-ns named"]);
  const partTrace = web.trace(flags) as { outcomes: { dnat?: string }[] };
  assert.deepEqual(partTrace.outcomes.map((o) => o.dnat).sort(), ["10.244.0.10:80", "10.244.0.9:80"]);
  assert.throws(() => web.trace({ ...flags, dst: "10.1.125.153:80" }), /whole table was not read/);
  reads.pop();
  await web.prepare!({ kind: "table" });
  assert.deepEqual(reads, ["node-ns dispatch", "node-ns service", "node-ns all"]);
  assert.deepEqual(web.trace(flags), partTrace, "the whole table traces the same");
  assert.ok(web.rules("", 10).total > 0);
  const again = await source.read();
  assert.equal(again.web, web, "same generation: the same snapshot, nothing read again");
  assert.equal(reads.length, 3);
  address = "10.0.0.2/24";
  const moved = await source.read();
  assert.notEqual(moved.web, web, "new addresses: a new snapshot");
  assert.deepEqual(moved.localAddresses, ["10.0.0.2"]);
  generation = 8;
  await source.read();
  assert.deepEqual(
    reads.slice(3),
    ["node-ns dispatch", "node-ns dispatch"],
    "a new generation is read again",
  );
  const live = await readLiveNftables("node-ns", { part: "all" }, kernel);
  assert.deepEqual(live.reading.foreign, ["table inet filter"]);
  assert.deepEqual(
    live.reading.tables.map((t) => t.family),
    ["ip"],
  );
});

test("trace --proxy-mode nftables -f/--manifests renders the tables itself, as explain does", async () => {
  const seed = new URL("../../../examples/seed-nginx", import.meta.url).pathname;
  const flags = { proxyMode: "nftables", hostnameOverride: "node-1", src: "10.244.0.5:40000" };
  const text = await traceCommand({ ...flags, manifests: seed, dst: "10.1.125.152:80" }, noKernel);
  assert.match(text, /^ruleset: rendered from .*seed-nginx \(IPv4\)/);
  assert.match(text, /50% ACCEPT, DNAT → 10\.244\.0\.10:80/);
  assert.match(text, /50% ACCEPT, DNAT → 10\.244\.0\.9:80/);
  const json = JSON.parse(
    await traceCommand({ ...flags, filename: [seed], dst: "10.1.125.152:80", output: "json" }, noKernel),
  ) as { outcomes: { dnat?: string }[] };
  assert.deepEqual(json.outcomes.map((o) => o.dnat).sort(), ["10.244.0.10:80", "10.244.0.9:80"]);
  await assert.rejects(
    traceCommand({ ...flags, manifests: seed, ruleset: "x", dst: "10.1.125.152:80" }, noKernel),
    /give either a dump/,
  );
});
