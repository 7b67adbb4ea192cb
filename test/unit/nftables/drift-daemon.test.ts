/**
 * Issue 14's drift and dump items in nftables mode, on the proxier the daemon runs (a fake
 * kernel): the drift check before a full sync and its metric, the last refused transaction
 * (captured at most once a minute), and the debug endpoints and SIGUSR1 dump that serve them.
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import { pino } from "pino";
import { Registry } from "prom-client";
import { nftablesProxier } from "../../../src/backends/nftables/proxier.ts";
import { upstreamTestSettings } from "../../../src/backends/nftables/settings.ts";
import { ProxyStateStore } from "../../../src/proxy/changetracker.ts";
import { FakeClock } from "../../../src/proxy/clock.ts";
import { ProxyHealth } from "../../../src/proxy/health.ts";
import { createProxyMetrics } from "../../../src/proxy/metrics.ts";
import { debugDump, debugResponse } from "../../../src/server/debug.ts";
import { metricsServerHandler } from "../../../src/server/metrics.ts";
import { FakeNft } from "../../support/nftables-fake.ts";
import { numberedService, numberedSlice } from "../../support/numbered-services.ts";
import { driftCounter, ipv4DebugSource } from "../../support/drift-daemon.ts";

async function setup() {
  const kernel = new FakeNft();
  const settings = upstreamTestSettings("IPv4");
  const store = new ProxyStateStore({ family: "IPv4", nodeName: settings.nodeName });
  for (let n = 1; n <= 3; n++) {
    store.serviceChanges.update(null, numberedService(n));
    store.endpointsChanges.endpointSliceUpdate(numberedSlice(n, [`10.0.${n}.1`, `10.0.${n}.2`]), false);
  }
  const clock = new FakeClock();
  const registry = new Registry();
  const metrics = createProxyMetrics(registry, {});
  let refuse = false;
  const proxier = nftablesProxier({
    kernel: {
      apply: async (t) => {
        if (refuse) {
          refuse = false;
          throw new Error("injected refusal");
        }
        kernel.apply(t.payload);
      },
      read: async () => ({ dump: kernel.tableDump("ip", "kube-proxy"), ifIndex: () => 1 }),
    },
    settings,
    clock,
    log: pino({ level: "silent" }),
    store,
    health: new ProxyHealth(60_000, clock),
    metrics,
    syncPeriodMs: 30_000,
  });
  proxier.setInitialized();
  const drift = driftCounter(registry);
  const debug = ipv4DebugSource(proxier);
  return { kernel, proxier, clock, drift, debug, registry, refuseNext: () => (refuse = true) };
}

test("nftables daemon drift: a deleted element and a rule of someone else's in our chain are found before a full sync, and repaired", async () => {
  const { kernel, proxier, drift } = await setup();
  await proxier.syncProxyRules();
  assert.equal((await proxier.inspect())?.drift.inSync, true);
  assert.match((await proxier.inspect())?.intended ?? "", /^add table ip kube-proxy/m);
  const element = /^add element ip kube-proxy service-ips \{ (.+) \}$/m.exec(
    kernel.dump("ip", "kube-proxy"),
  )?.[1];
  assert.ok(element !== undefined, kernel.dump("ip", "kube-proxy"));
  kernel.apply(`delete element ip kube-proxy service-ips { ${element.replace(/ : .*$/, "")} }\n`);
  kernel.apply("add rule ip kube-proxy services ip daddr 10.9.9.9 drop\n");
  const seen = await proxier.inspect();
  assert.equal(seen?.drift.inSync, false);
  assert.ok((seen?.drift.differences ?? 0) >= 2, JSON.stringify(seen?.drift));
  const found = seen!.drift.differences;
  proxier.forceFullSync();
  await proxier.syncProxyRules();
  assert.deepEqual([await drift("found"), await drift("repaired")], [found, found]);
  assert.equal((await proxier.inspect())?.drift.inSync, true);
});

test("nftables daemon: the refused transaction (nft -f text) is kept, captured at most once a minute, and served", async () => {
  const { proxier, clock, debug, registry, refuseNext } = await setup();
  await proxier.syncProxyRules();
  proxier.forceFullSync();
  refuseNext();
  await assert.rejects(proxier.syncProxyRules(), /injected refusal/);
  const failure = proxier.lastFailure;
  assert.equal(failure?.fullSync, true);
  assert.match(failure?.error ?? "", /injected refusal/);
  assert.match(failure?.transaction ?? "", /^add table ip kube-proxy/m);
  refuseNext();
  await assert.rejects(proxier.syncProxyRules());
  assert.equal(proxier.lastFailure?.notCaptured, 1);
  await clock.advance(60_000);
  refuseNext();
  await assert.rejects(proxier.syncProxyRules());
  assert.deepEqual([proxier.lastFailure?.notCaptured, proxier.lastFailure!.at > failure!.at], [0, true]);

  const served = await debugResponse(debug, "/debug/kube-proxy-ts/last-failure");
  const body = JSON.parse(served?.body ?? "{}") as { failures: { transaction: string }[] };
  assert.match(body.failures[0]?.transaction ?? "", /^add table ip kube-proxy/m);
  const handler = metricsServerHandler({ registry, proxyMode: "nftables", config: {}, debug });
  assert.match(
    (await handler({ method: "GET", path: "/debug/kube-proxy-ts/intended" })).body,
    /add table ip kube-proxy/,
  );
  const json = JSON.parse(
    (await handler({ method: "GET", path: "/debug/kube-proxy-ts/diff.json" })).body,
  ) as {
    reports: { inSync: boolean }[];
  };
  assert.deepEqual(
    json.reports.map((r) => r.inSync),
    [true],
    "nothing changed: the refused syncs would have written what the kernel holds",
  );
  const dump = await debugDump(debug);
  assert.match(dump, /=== last refused transaction\n[^]*injected refusal[^]*add table ip kube-proxy/);
  assert.match(dump, /=== intended ruleset\n[^]*add table ip kube-proxy/);
});
