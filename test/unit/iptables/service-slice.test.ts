import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { iptablesRulesets, serviceSlice } from "../../../src/backends/iptables/inspect.ts";
import { explainService, explanationToJson } from "../../../src/netfilter/explain.ts";
import { parseIptablesSave } from "../../../src/netfilter/iptables-save.ts";

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

test("a slice keeps line numbers and drops the other Services' rules", () => {
  const { text } = DUMPS[0]!;
  const slice = serviceSlice(text, "ns4", "svc4");
  assert.equal(slice.split("\n").length, text.split("\n").length);
  assert.doesNotMatch(slice, /ns2\/svc2/);
  assert.match(slice, /ns4\/svc4:p80 cluster IP/);
  assert.match(slice, /^-A PREROUTING .*-j KUBE-SERVICES$/m, "built-in chains stay whole");
});
