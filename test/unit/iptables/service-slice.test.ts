import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { iptablesRulesets } from "../../../src/backends/iptables/inspect.ts";
import { explainService, explanationToJson } from "../../../src/netfilter/explain.ts";
import { parseIptablesSave } from "../../../src/netfilter/iptables-save.ts";
import { sliceServiceDump } from "../../../src/netfilter/slice.ts";

const fixtures = new URL("../netfilter/fixtures/", import.meta.url);
const DUMPS = ["packet-flow.rules.txt", "iptables-save-c.netns.txt"].map((f) => ({
  name: f,
  text: readFileSync(new URL(f, fixtures), "utf8"),
}));

/** Every `ns/name` a dump's comments name. */
function servicesOf(text: string): string[] {
  return [...new Set([...text.matchAll(/--comment "?([a-z0-9-]+\/[a-z0-9-]+)/g)].map((m) => m[1] as string))];
}

test("explaining one Service from its slice of the dump gives exactly the explanation of the whole dump", () => {
  for (const { name, text } of DUMPS) {
    const whole = parseIptablesSave(text);
    const services = servicesOf(text);
    assert.ok(services.length >= 3, `${name}: ${services.length} Services`);
    for (const svc of services) {
      const [namespace = "", service = ""] = svc.split("/");
      const ref = { namespace, name: service };
      const sliced = iptablesRulesets.parseForService!(text, name, ref);
      assert.deepEqual(
        explanationToJson(explainService(sliced, ref)),
        explanationToJson(explainService(whole, ref)),
        `${name} ${svc}`,
      );
    }
  }
});

test("a slice keeps the dump's line and rule numbers and drops the other Services' rules", () => {
  const { text } = DUMPS[0]!;
  const slice = sliceServiceDump(text, "ns4", "svc4");
  const lines = slice.text.split("\n");
  assert.equal(lines.length, slice.options.lineNumbers.length);
  assert.ok(lines.length < text.split("\n").length, `${lines.length} lines kept`);
  assert.doesNotMatch(slice.text, /ns2\/svc2/);
  assert.match(slice.text, /ns4\/svc4:p80 cluster IP/);
  assert.match(slice.text, /^-A PREROUTING .*-j KUBE-SERVICES$/m, "built-in chains stay whole");
  const whole = text.split("\n");
  lines.forEach((line, i) => {
    if (line.startsWith(":")) return;
    assert.equal(whole[slice.options.lineNumbers[i]! - 1], line, `line ${slice.options.lineNumbers[i]}`);
  });
  const sliced = parseIptablesSave(slice.text, slice.options);
  const all = parseIptablesSave(text);
  for (const table of sliced.tables.values())
    for (const chain of table.chains.values())
      for (const rule of chain.rules) {
        const same = all.tables.get(table.name)?.chains.get(chain.name)?.rules[rule.index - 1];
        assert.equal(same?.text, rule.text, `${table.name} ${chain.name} rule ${rule.index}`);
        assert.equal(same?.line, rule.line);
      }
});

test("a chain reached only by a jump from a chain later in the dump is found by another pass", () => {
  const text = [
    "*nat",
    ":KUBE-SERVICES - [0:0]",
    ":KUBE-SVC-AAAAAAAAAAAAAAAA - [0:0]",
    ":KUBE-SEP-BBBBBBBBBBBBBBBB - [0:0]",
    "-A KUBE-SEP-BBBBBBBBBBBBBBBB -p tcp -j DNAT --to-destination 10.0.0.9:80",
    "-A KUBE-SVC-AAAAAAAAAAAAAAAA -j KUBE-SEP-BBBBBBBBBBBBBBBB",
    '-A KUBE-SERVICES -d 10.1.0.1/32 -p tcp -m comment --comment "other/svc:p cluster IP" -j KUBE-SVC-CCCCCCCCCCCCCCCC',
    '-A KUBE-SERVICES -d 10.1.0.2/32 -p tcp -m comment --comment "ns/svc:p cluster IP" -m tcp --dport 80 -j KUBE-SVC-AAAAAAAAAAAAAAAA',
    "COMMIT",
    "",
  ].join("\n");
  const ref = { namespace: "ns", name: "svc" };
  const ex = explainService(iptablesRulesets.parseForService!(text, "test", ref), ref);
  assert.deepEqual(
    ex.endpoints.map((e) => [e.endpoint, e.sepChain]),
    [["10.0.0.9:80", "KUBE-SEP-BBBBBBBBBBBBBBBB"]],
  );
  assert.equal(ex.entries[0]?.ruleNumber, 2);
  assert.equal(ex.entries[0]?.line, 8);
});
