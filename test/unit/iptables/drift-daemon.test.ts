import assert from "node:assert/strict";
import { test } from "node:test";
import { pino } from "pino";
import { Registry } from "prom-client";
import { iptablesProxier } from "../../../src/backends/iptables/proxier.ts";
import { FakeIptables } from "../../../src/kernel/fake.ts";
import { ProxyStateStore } from "../../../src/proxy/changetracker.ts";
import { FakeClock } from "../../../src/proxy/clock.ts";
import { ProxyHealth } from "../../../src/proxy/health.ts";
import { createProxyMetrics } from "../../../src/proxy/metrics.ts";
import { debugDump, debugResponse } from "../../../src/server/debug.ts";
import { metricsServerHandler } from "../../../src/server/metrics.ts";
import { FAKE_PROXIER_SETTINGS } from "../../support/iptables-builders.ts";
import { numberedService, numberedSlice } from "../../support/numbered-services.ts";
import { driftCounter, ipv4DebugSource } from "../../support/drift-daemon.ts";

async function setup() {
  const ipt = new FakeIptables();
  const store = new ProxyStateStore({ family: "IPv4", nodeName: FAKE_PROXIER_SETTINGS.nodeName });
  for (let n = 1; n <= 3; n++) {
    store.serviceChanges.update(null, numberedService(n));
    store.endpointsChanges.endpointSliceUpdate(numberedSlice(n, [`10.0.${n}.1`, `10.0.${n}.2`]), false);
  }
  const clock = new FakeClock();
  const registry = new Registry();
  const metrics = createProxyMetrics(registry, {});
  const proxier = iptablesProxier({
    ipt,
    settings: FAKE_PROXIER_SETTINGS,
    store,
    clock,
    log: pino({ level: "silent" }),
    health: new ProxyHealth(60_000, clock),
    metrics,
    syncPeriodMs: 30_000,
  });
  proxier.setInitialized();
  const drift = driftCounter(registry);
  const debug = ipv4DebugSource(proxier);
  return { ipt, store, proxier, clock, drift, debug, registry };
}

test("daemon drift: before a full sync, what someone changed in our chains is found, and the sync repairs it", async () => {
  const { ipt, proxier, drift } = await setup();
  assert.equal(await proxier.inspect(), null, "nothing to compare before the first sync");
  await proxier.syncProxyRules();
  const first = await proxier.inspect();
  assert.deepEqual([first?.drift.inSync, first?.drift.differences], [true, 0]);
  assert.match(
    first?.intended ?? "",
    /^-A PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES$/m,
  );

  // Someone flushes one endpoint chain and adds a rule of their own to INPUT.
  const sep = ipt.save("nat").then((d) => /^:(KUBE-SEP-\S+)/m.exec(d)?.[1] ?? "");
  const chain = await sep;
  await ipt.flushChain("nat", chain);
  await ipt.ensureRule("append", "filter", "INPUT", ["-j", "ACCEPT"]);
  const seen = await proxier.inspect();
  assert.equal(seen?.drift.differences, 2, "the endpoint chain's two rules");
  assert.deepEqual(
    seen?.drift.foreign.map((f) => f.rule),
    ["-A INPUT -j ACCEPT"],
  );

  proxier.forceFullSync();
  await proxier.syncProxyRules();
  assert.deepEqual([await drift("found"), await drift("repaired")], [2, 2]);
  assert.equal((await proxier.inspect())?.drift.inSync, true);
  assert.deepEqual(await ipt.rules("filter", "INPUT").includes("-j ACCEPT"), true, "the foreign rule stays");

  // A full sync with nothing drifted counts nothing.
  proxier.forceFullSync();
  await proxier.syncProxyRules();
  assert.deepEqual([await drift("found"), await drift("repaired")], [2, 2]);
});

test("daemon: the refused transaction is kept, captured at most once a minute, and served", async () => {
  const { ipt, proxier, clock, debug } = await setup();
  await proxier.syncProxyRules();
  proxier.forceFullSync();
  ipt.failNextRestoreAtLine = 3;
  await assert.rejects(proxier.syncProxyRules());
  const failure = proxier.lastFailure;
  assert.equal(failure?.fullSync, true);
  assert.match(failure?.error ?? "", /injected failure/);
  assert.match(failure?.transaction ?? "", /^\*filter|^\*nat/m);
  ipt.failNextRestoreAtLine = 3;
  await assert.rejects(proxier.syncProxyRules());
  assert.equal(proxier.lastFailure?.notCaptured, 1);
  assert.equal(proxier.lastFailure?.at, failure?.at, "the first capture of the minute is kept");
  await clock.advance(60_000);
  ipt.failNextRestoreAtLine = 3;
  await assert.rejects(proxier.syncProxyRules());
  assert.deepEqual([proxier.lastFailure?.notCaptured, proxier.lastFailure!.at > failure!.at], [0, true]);

  const served = await debugResponse(debug, "/debug/kube-proxy-ts/last-failure");
  const body = JSON.parse(served?.body ?? "{}") as { failures: { transaction: string }[] };
  assert.match(body.failures[0]?.transaction ?? "", /COMMIT/);
  assert.equal(await debugResponse(debug, "/debug/kube-proxy-ts/nothing"), null);
});

test("daemon debug endpoints on the metrics address, and the SIGUSR1 dump", async () => {
  const { proxier, debug, registry } = await setup();
  await proxier.syncProxyRules();
  const handler = metricsServerHandler({ registry, proxyMode: "iptables", config: {}, debug });
  const diff = await handler({ method: "GET", path: "/debug/kube-proxy-ts/diff" });
  assert.equal(diff.status, 200);
  assert.match(diff.body, /^iptables IPv4: in sync/);
  const json = JSON.parse(
    (await handler({ method: "GET", path: "/debug/kube-proxy-ts/diff.json" })).body,
  ) as {
    schema: string;
    reports: { inSync: boolean }[];
  };
  assert.deepEqual([json.schema, json.reports.map((r) => r.inSync)], ["kube-proxy-ts/diff/v1", [true]]);
  const intended = await handler({ method: "GET", path: "/debug/kube-proxy-ts/intended" });
  assert.match(intended.body, /^# IPv4\n# Generated by kube-proxy-ts render --node-ruleset/);
  assert.equal((await handler({ method: "GET", path: "/debug/other" })).status, 404);
  const dump = await debugDump(debug);
  assert.match(dump, /=== drift .*\niptables IPv4: in sync/);
  assert.match(dump, /=== last refused transaction\nno sync has failed/);
  assert.match(dump, /=== intended ruleset\n# IPv4\n/);
});
