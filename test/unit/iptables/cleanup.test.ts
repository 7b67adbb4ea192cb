import { test } from "node:test";
import assert from "node:assert/strict";
import { cleanupLeftovers, cleanupPayload } from "../../../src/backends/iptables/cleanup.ts";
import { isServiceChainName } from "../../../src/backends/iptables/chains.ts";
import { FakeIptables } from "../../../src/kernel/fake.ts";
import { chainsFromSave } from "../../../src/kernel/iptables.ts";
import { ensureJumpRules, jumpRows } from "../../support/jumprules.ts";

const ROWS = jumpRows(
  "filter INPUT>KUBE-EXTERNAL-SERVICES",
  "filter FORWARD>KUBE-FORWARD",
  "nat OUTPUT>KUBE-SERVICES",
  "nat POSTROUTING>KUBE-POSTROUTING",
  "filter INPUT>KUBE-FIREWALL",
);

test("isServiceChainName and cleanupPayload", () => {
  assert.ok(isServiceChainName("KUBE-SVC-ABC"));
  assert.ok(isServiceChainName("KUBE-SEP-ABC"));
  assert.ok(!isServiceChainName("KUBE-SERVICES"));
  assert.equal(
    cleanupPayload("nat", ["PREROUTING", "KUBE-SERVICES", "KUBE-SVC-A", "KUBE-MARK-MASQ", "DOCKER"]),
    "*nat\n:KUBE-SERVICES - [0:0]\n:KUBE-MARK-MASQ - [0:0]\n:KUBE-SVC-A - [0:0]\n-X KUBE-SERVICES\n-X KUBE-MARK-MASQ\n-X KUBE-SVC-A\nCOMMIT\n",
  );
  assert.equal(cleanupPayload("filter", ["INPUT", "DOCKER"]), null);
});

test("cleanupLeftovers removes kube-proxy's jumps and chains, keeps KUBE-FIREWALL and foreign state", async () => {
  const ipt = new FakeIptables();
  await ensureJumpRules(ipt, ROWS);
  for (const t of ["mangle", "nat", "filter"] as const) await ipt.ensureChain(t, "KUBE-PROXY-CANARY");
  await ipt.restore(`*nat
:KUBE-SERVICES - [0:0]
:KUBE-MARK-MASQ - [0:0]
:KUBE-SVC-A - [0:0]
:KUBE-SEP-A - [0:0]
:DOCKER - [0:0]
-A KUBE-SERVICES -j KUBE-SVC-A
-A KUBE-SVC-A -j KUBE-SEP-A
-A KUBE-SEP-A -j KUBE-MARK-MASQ
-A DOCKER -j RETURN
-A PREROUTING -j DOCKER
COMMIT
*filter
:KUBE-FIREWALL - [0:0]
-A KUBE-FIREWALL -j DROP
COMMIT
`);
  const result = await cleanupLeftovers(ipt, ROWS);
  assert.deepEqual(result.errors, []);
  assert.deepEqual(chainsFromSave(await ipt.save("nat"), "nat"), [
    "PREROUTING",
    "INPUT",
    "OUTPUT",
    "POSTROUTING",
    "DOCKER",
  ]);
  assert.deepEqual(chainsFromSave(await ipt.save("filter"), "filter"), [
    "INPUT",
    "FORWARD",
    "OUTPUT",
    "KUBE-FIREWALL",
  ]);
  assert.deepEqual(ipt.rules("filter", "INPUT"), ["-j KUBE-FIREWALL"]);
  assert.deepEqual(ipt.rules("nat", "PREROUTING"), ["-j DOCKER"]);
  assert.equal(await ipt.chainExists("mangle", "KUBE-PROXY-CANARY"), false);
});

test("a foreign jump into a kube-proxy chain makes that table's cleanup fail atomically, others still run", async () => {
  const ipt = new FakeIptables();
  await ensureJumpRules(ipt, ROWS);
  await ipt.ensureRule("append", "nat", "PREROUTING", ["-j", "KUBE-SERVICES"]);
  const result = await cleanupLeftovers(ipt, ROWS);
  assert.equal(result.errors.length, 1);
  assert.ok(await ipt.chainExists("nat", "KUBE-SERVICES"));
  assert.equal(await ipt.chainExists("nat", "KUBE-POSTROUTING"), true, "nat restore applied nothing");
  assert.equal(await ipt.chainExists("filter", "KUBE-FORWARD"), false, "filter cleanup still happened");
});
