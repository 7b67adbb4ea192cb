/**
 * Upstream's nftables packet-flow tests (every `runPacketFlowTests` case of
 * pkg/proxy/nftables/proxier_test.go, transcribed under test/fixtures/nftables/packet-flow/):
 * each case's objects are rendered by our renderer, the full-sync payload is read back by the
 * dump parser, and every flow is traced through it. The tracer's answer is put in upstream's
 * words (the DNAT destinations in order, or DROP / REJECT, or "" when nothing happened to the
 * packet; masq when the source is masqueraded) and must equal upstream's expectation.
 */
import assert from "node:assert/strict";
import { readdirSync, readFileSync } from "node:fs";
import { describe, test } from "node:test";
import { parse, stringify } from "yaml";
import { renderNftables } from "../../../src/backends/nftables/render.ts";
import { upstreamTestSettings } from "../../../src/backends/nftables/settings.ts";
import { planFullSync } from "../../../src/backends/nftables/transactions.ts";
import type { NftablesSettings } from "../../../src/backends/nftables/types.ts";
import type { IPFamily } from "../../../src/ip.ts";
import { parseNftDump } from "../../../src/netfilter/nft/parse.ts";
import { traceNftPacket } from "../../../src/netfilter/nft/tracer.ts";
import { loadNftablesState } from "../../support/nftables-golden.ts";

const DIR = new URL("../../fixtures/nftables/packet-flow/", import.meta.url);

/** upstream `testNodeIPs`: what `fib … type local` treats as the node's own addresses. */
const NODE_IPS = ["192.168.0.2", "192.168.1.2", "192.168.99.11", "2001:db8::1", "2001:db8:1::2"];

interface Flow {
  name: string;
  src: string;
  proto?: string;
  dst: string;
  port: number;
  output: string;
  masq?: boolean;
}

interface Case {
  name: string;
  settings?: {
    family?: IPFamily;
    nodePortAddresses?: string[];
    masqueradeAll?: boolean;
    localDetector?: "None";
  };
  objects: unknown[];
  flows: Flow[];
  overrides?: Record<string, { output?: string; masq?: boolean }>;
}

function settingsOf(c: Case): NftablesSettings {
  const s = c.settings ?? {};
  const base = upstreamTestSettings(s.family ?? "IPv4");
  return {
    ...base,
    ...(s.nodePortAddresses === undefined ? {} : { nodePortAddresses: s.nodePortAddresses }),
    ...(s.masqueradeAll === undefined ? {} : { masqueradeAll: s.masqueradeAll }),
    ...(s.localDetector === "None" ? { localDetector: { mode: "None" as const } } : {}),
  };
}

/** The table our renderer writes for the case, as the dump parser reads it back. */
function tableOf(c: Case, file: string) {
  const settings = settingsOf(c);
  const yamlText = c.objects.map((o) => stringify(o)).join("---\n");
  const state = loadNftablesState(yamlText, `${file} ${c.name}`, settings);
  const ruleset = renderNftables({ state, settings, featureGates: {} });
  const payload = planFullSync(ruleset, null, { resetBaseChains: false }).payload;
  const family = settings.family === "IPv4" ? "ip" : "ip6";
  const table = parseNftDump(payload).tables.find((t) => t.family === family && t.name === "kube-proxy");
  assert.ok(table !== undefined, "the payload has our table");
  return table;
}

/** The tracer's outcomes in the words of upstream's `tracePacket`. */
function upstreamWords(table: ReturnType<typeof tableOf>, f: Flow): { output: string; masq: boolean } {
  const result = traceNftPacket(
    table,
    {
      protocol: (f.proto ?? "tcp").toLowerCase() as "tcp",
      src: f.src,
      dst: f.dst,
      dstPort: f.port,
      state: "NEW",
    },
    { localAddresses: NODE_IPS, origin: "pod" },
  );
  const lost = result.outcomes.filter((o) => o.verdict === "NOT UNDERSTOOD");
  assert.deepEqual(
    lost.map((o) => o.notUnderstood),
    [],
    "every rule on the way is understood",
  );
  const verdicts = new Set(result.outcomes.map((o) => o.verdict));
  assert.equal(verdicts.size, 1, `one verdict for every path, got ${[...verdicts].join(", ")}`);
  const [verdict] = verdicts;
  const output =
    verdict === "ACCEPT"
      ? result.outcomes.flatMap((o) => (o.dnat === undefined ? [] : [o.dnat])).join(", ")
      : String(verdict);
  const total = result.outcomes.reduce((sum, o) => sum + o.probability, 0);
  assert.ok(Math.abs(total - 1) < 1e-9, `the paths' probabilities add up to 1, got ${total}`);
  return { output, masq: result.outcomes.some((o) => o.masquerade) };
}

const files = readdirSync(DIR)
  .filter((f) => f.endsWith(".yaml"))
  .sort();

test("every upstream packet-flow test is transcribed", () => {
  assert.deepEqual(files, [
    "TestClusterIPGeneral.yaml",
    "TestExternalTrafficPolicy.yaml",
    "TestInternalExternalMasquerade.yaml",
    "TestInternalTrafficPolicy.yaml",
    "TestLoadBalancer.yaml",
    "TestNoEndpointsReject.yaml",
    "TestNodePorts.yaml",
    "TestTerminatingEndpoints.yaml",
  ]);
});

for (const file of files) {
  const doc = parse(readFileSync(new URL(file, DIR), "utf8"), { maxAliasCount: -1 }) as { cases: Case[] };
  describe(file.replace(/\.yaml$/, ""), () => {
    for (const c of doc.cases) {
      test(c.name, () => {
        const table = tableOf(c, file);
        const overrides = c.overrides ?? {};
        const unused = Object.keys(overrides).filter((n) => !c.flows.some((f) => f.name === n));
        assert.deepEqual(unused, [], "every override names a flow");
        for (const f of c.flows) {
          const o = overrides[f.name] ?? {};
          const want = { output: o.output ?? f.output, masq: o.masq ?? f.masq ?? false };
          assert.deepEqual(upstreamWords(table, f), want, `${f.name}: ${f.src} → ${f.dst}:${f.port}`);
        }
      });
    }
  });
}
