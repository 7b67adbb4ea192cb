/**
 * The three forms of one table (test/fixtures/nftables/dumps/: our `nft -f` payload for the seed
 * example, and what `nft list table` and `nft -j list table` printed after the kernel took it)
 * read into the same model, and the tracer gives the same answer on each.
 */
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { test } from "node:test";
import type { NftTable } from "../../../src/netfilter/nft/model.ts";
import { NftDumpParseError, parseNftDump, parsePriority } from "../../../src/netfilter/nft/parse.ts";
import { traceNftPacket } from "../../../src/netfilter/nft/tracer.ts";

const DIR = new URL("../../fixtures/nftables/dumps/", import.meta.url);
const read = (name: string): string => readFileSync(new URL(name, DIR), "utf8");

function ours(text: string): NftTable {
  const t = parseNftDump(text).tables.find((x) => x.family === "ip" && x.name === "kube-proxy");
  assert.ok(t !== undefined);
  return t;
}

/** Chains (hook, priority, statements) and sets (type, elements): what the tracer depends on. */
function shape(t: NftTable, chainComments = true): unknown {
  return {
    chains: [...t.chains.values()]
      .map((c) => ({
        name: c.name,
        base: c.base,
        statements: c.rules.map((r) => r.statements),
        ...(chainComments ? { comment: c.comment } : {}),
      }))
      .sort((a, b) => (a.name < b.name ? -1 : 1)),
    sets: [...t.sets.values()]
      .map((s) => ({ kind: s.kind, name: s.name, type: s.type, elements: s.elements, comment: s.comment }))
      .sort((a, b) => (a.name < b.name ? -1 : 1)),
  };
}

const payload = ours(read("seed.payload.nft"));
const listed = ours(read("seed.list.txt"));
const json = ours(read("seed.json"));

test("the nft -f payload, the nft listing and the JSON listing read into the same table", () => {
  assert.deepEqual(shape(listed), shape(payload));
  // nft 1.0.6 leaves table and chain comments out of its JSON.
  assert.deepEqual(shape(json, false), shape(payload, false));
  assert.equal(payload.comment, "rules for kube-proxy");
  assert.equal(listed.comment, "rules for kube-proxy");
});

test("the renderer's deleted nodeport-ips set is gone, its elements and base chains are read", () => {
  assert.equal(payload.sets.has("nodeport-ips"), false);
  assert.deepEqual(payload.sets.get("service-nodeports")?.elements, [
    { key: ["tcp", "30978"], value: { kind: "goto", target: "external-ECO34HEO-default/nginx/tcp/" } },
  ]);
  assert.deepEqual(listed.chains.get("filter-prerouting-pre-dnat")?.base, {
    type: "filter",
    hook: "prerouting",
    priority: -110,
    policy: "accept",
  });
});

test("every rule of our table is understood in all three forms", () => {
  for (const t of [payload, listed, json])
    for (const c of t.chains.values())
      for (const r of c.rules)
        assert.ok(!r.statements.some((s) => s.kind === "unknown"), `${c.name}: ${r.text}`);
});

test("the same trace from each form: a pod to the seed's cluster IP reaches both endpoints", () => {
  const answers = [payload, listed, json].map((t) =>
    traceNftPacket(
      t,
      { protocol: "tcp", src: "10.244.0.20", dst: "10.1.125.152", dstPort: 80, state: "NEW" },
      { localAddresses: ["10.0.0.1"], origin: "pod" },
    ).outcomes.map((o) => [o.verdict, o.dnat, o.probability]),
  );
  assert.deepEqual(answers[0], [
    ["ACCEPT", "10.244.0.10:80", 0.5],
    ["ACCEPT", "10.244.0.9:80", 0.5],
  ]);
  assert.deepEqual(answers[1], answers[0]);
  assert.deepEqual(answers[2], answers[0]);
});

test("a foreign rule shape is kept as unknown and stops the trace out loud", () => {
  const t = ours(
    [
      'add table ip kube-proxy { comment "rules for kube-proxy" ; }',
      "add chain ip kube-proxy nat-prerouting { type nat hook prerouting priority -100 ; }",
      "add rule ip kube-proxy nat-prerouting tcp flags syn limit rate 10/second accept",
    ].join("\n"),
  );
  const r = traceNftPacket(
    t,
    { protocol: "tcp", src: "10.0.0.2", dst: "10.0.0.3", dstPort: 80, state: "NEW" },
    { localAddresses: [], origin: "pod" },
  );
  assert.deepEqual(
    r.outcomes.map((o) => o.verdict),
    ["NOT UNDERSTOOD"],
  );
  assert.match(r.outcomes[0]!.notUnderstood ?? "", /tcp flags syn limit rate/);
});

test("priorities by name and bad input", () => {
  assert.equal(parsePriority("dstnat - 10"), -110);
  assert.equal(parsePriority("srcnat"), 100);
  assert.equal(parsePriority("-110"), -110);
  assert.throws(() => parseNftDump("add frob ip kube-proxy x"), NftDumpParseError);
  assert.throws(() => parseNftDump('{"nftables": 3}'), NftDumpParseError);
  assert.throws(() => parseNftDump("table ip kube-proxy {\n  chain x {\n"), /ends inside a block/);
});
