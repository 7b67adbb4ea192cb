import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import {
  checkIPTablesRuleJumps,
  parseIPTablesDump,
  ruleComment,
  sortIPTablesRules,
} from "../../support/iptables-normalise.ts";

const FIXTURES = new URL("../../fixtures/iptables/", import.meta.url);
const read = (name: string): string => readFileSync(new URL(name, FIXTURES), "utf8");

test("sortIPTablesRules reproduces upstream's basic test vector", () => {
  const input = read("SortIPTablesRules-basic.input.txt");
  const expected = read("SortIPTablesRules-basic.expected.txt").replace(/^[ \t\n]+/, "");
  assert.equal(sortIPTablesRules(input), expected);
});

test("sortIPTablesRules is idempotent on its own output", () => {
  const once = sortIPTablesRules(read("SortIPTablesRules-basic.input.txt"));
  assert.equal(sortIPTablesRules(once), once);
});

test("ruleComment reads quoted and bare comments", () => {
  assert.equal(
    ruleComment('-A X -m comment --comment "ns1/svc1:p80 cluster IP" -j Y'),
    "ns1/svc1:p80 cluster IP",
  );
  assert.equal(ruleComment("-A X -m comment --comment ns1/svc1:p80 -j Y"), "ns1/svc1:p80");
  assert.equal(ruleComment("-A X -j Y"), null);
});

test("parseIPTablesDump rejects rules in undeclared chains and rules in deleted chains", () => {
  assert.throws(() => parseIPTablesDump("*nat\n-A KUBE-X -j DROP\nCOMMIT\n"), /not declared/);
  assert.throws(
    () => parseIPTablesDump("*nat\n:KUBE-X - [0:0]\n-X KUBE-X\n-A KUBE-X -j DROP\nCOMMIT\n"),
    /deleted/,
  );
  assert.throws(() => parseIPTablesDump("*nat\n:KUBE-X - [0:0]\n"), /COMMIT/);
});

test("checkIPTablesRuleJumps finds missing, empty and unused chains", () => {
  assert.deepEqual(
    checkIPTablesRuleJumps("*nat\n:KUBE-SERVICES - [0:0]\n-A KUBE-SERVICES -j KUBE-SVC-A\nCOMMIT\n"),
    [
      "nat: chains used but were not created: KUBE-SVC-A",
      "nat: chains jumped to but have no rules: KUBE-SVC-A",
    ],
  );
  assert.deepEqual(
    checkIPTablesRuleJumps(
      "*nat\n:KUBE-SEP-A - [0:0]\n-A KUBE-SEP-A -j DNAT --to-destination 1.2.3.4:80\nCOMMIT\n",
    ),
    ["nat: chains created but not used: KUBE-SEP-A"],
  );
  assert.deepEqual(
    checkIPTablesRuleJumps(
      "*nat\n:KUBE-SERVICES - [0:0]\n:KUBE-NODEPORTS - [0:0]\n-A KUBE-SERVICES -j KUBE-NODEPORTS\nCOMMIT\n",
    ),
    [],
  );
});
