/**
 * The web view in nftables mode: the mode builds the view's data from `nft -j list table`
 * (here the seed's table as the kernel listed it, test/fixtures/nftables/dumps/seed.json) and
 * the handler serves it like iptables mode's: Services with their graph, the rules, a trace.
 */
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { test } from "node:test";
import { nftablesWebSnapshot, readNftablesDump } from "../../../src/backends/nftables/inspect.ts";
import { FakeClock } from "../../../src/proxy/clock.ts";
import { createWebHandler, SnapshotCache } from "../../../src/server/web.ts";

const json = readFileSync(new URL("../../fixtures/nftables/dumps/seed.json", import.meta.url), "utf8");
const LOCAL = ["192.168.50.1"];

function handler() {
  const reading = readNftablesDump({ text: json, origin: "seed.json" });
  const source = {
    read: () =>
      Promise.resolve({
        mode: "nftables" as const,
        dumps: [json],
        localAddresses: LOCAL,
        web: nftablesWebSnapshot(reading, LOCAL),
      }),
  };
  return createWebHandler(new SnapshotCache(source, new FakeClock(0)));
}

async function get(path: string, query = ""): Promise<{ status: number; body: Record<string, unknown> }> {
  const res = await handler()({ method: "GET", path, query: new URLSearchParams(query) });
  return { status: res.status, body: JSON.parse(res.body) as Record<string, unknown> };
}

test("services: the list names the seed Service and its frontends; its page has both endpoints at 50%, a graph and the walk with counter keys", async () => {
  const list = await get("/api/services");
  assert.equal(list.status, 200);
  const summaries = list.body["services"] as { family: number; service: string; frontends: string[] }[];
  assert.deepEqual(
    summaries.map((s) => [s.family, s.service]),
    [[4, "default/nginx"]],
  );
  assert.ok(
    summaries[0]!.frontends.some((f) => /^\d+\.\d+\.\d+\.\d+:80\/tcp$/.test(f)),
    summaries[0]!.frontends.join(", "),
  );
  assert.ok(
    summaries[0]!.frontends.some((f) => /^node port \d+\/tcp$/.test(f)),
    summaries[0]!.frontends.join(", "),
  );
  const { status, body } = await get("/api/service", "service=4/default/nginx");
  assert.equal(status, 200);
  const nginx = body as unknown as {
    service: string;
    endpoints: { endpoint: string; probability: number; sepChain: string; counterKey?: string }[];
    graph: { nodes: { kind: string; label: string }[]; edges: { label: string }[] };
    walk: { depth: number; text: string; counterKey?: string }[];
  };
  assert.equal(nginx.service, "default/nginx");
  assert.deepEqual(nginx.endpoints.map((e) => [e.endpoint, e.probability]).sort(), [
    ["10.244.0.10:80", 0.5],
    ["10.244.0.9:80", 0.5],
  ]);
  assert.ok(nginx.endpoints.every((e) => e.sepChain.startsWith("endpoint-")));
  const kinds = nginx.graph.nodes.map((n) => n.kind);
  assert.deepEqual([...new Set(kinds)], ["service", "entry", "chain", "endpoint"]);
  assert.deepEqual(
    nginx.graph.nodes
      .filter((n) => n.kind === "chain")
      .map((n) => n.label.split("-")[0])
      .sort(),
    ["external", "service"],
  );
  assert.equal(nginx.graph.edges.filter((e) => e.label === "50%").length, 2);
  const dnats = nginx.walk.filter((w) => w.text.includes("dnat to"));
  assert.equal(dnats.length, 2, nginx.walk.map((w) => w.text).join("\n"));
  assert.ok(dnats.every((w) => w.depth >= 3 && /^4\/kube-proxy\/endpoint-/.test(w.counterKey ?? "")));
  const rules = (await get("/api/rules")).body as { rules: { key: string }[] };
  const keys = new Set(rules.rules.map((r) => r.key));
  for (const e of nginx.endpoints) assert.ok(keys.has(e.counterKey ?? ""), `${e.counterKey} is a rule's key`);
  assert.equal((await get("/api/service", "service=4/default/nope")).status, 404);
});

test("rules: every rule of our table, searchable by text", async () => {
  const all = (await get("/api/rules")).body;
  assert.deepEqual(all["columns"], ["num", "pkts", "bytes", "rule"]);
  assert.equal(all["total"], 29);
  const dnat = (await get("/api/rules", "q=dnat to")).body as { rules: { chain: string; rule: string }[] };
  assert.deepEqual(dnat.rules.map((r) => r.rule).sort(), [
    "meta l4proto tcp dnat to 10.244.0.10:80",
    "meta l4proto tcp dnat to 10.244.0.9:80",
  ]);
});

test("trace: the page's trace runs the nftables tracer", async () => {
  const { status, body } = await get("/api/trace", "src=192.168.50.2&dst=192.168.50.1:30978&from=external");
  assert.equal(status, 200);
  const outcomes = body["outcomes"] as {
    verdict: string;
    dnat: string;
    masquerade: boolean;
    path: { kind: string }[];
  }[];
  assert.deepEqual(
    outcomes.map((o) => [o.verdict, o.dnat, o.masquerade]),
    [
      ["ACCEPT", "10.244.0.10:80", true],
      ["ACCEPT", "10.244.0.9:80", true],
    ],
  );
  assert.ok(outcomes[0]!.path.some((s) => s.kind === "rule"));
  const bad = await get("/api/trace", "src=10.0.0.1&dst=fd00::1:80");
  assert.equal(bad.status, 400);
});
