/**
 * Issue 14's drift items in ipvs mode, on the proxier the daemon runs (the fake IPVS, ipset,
 * interfaces and iptables of test/support/ipvs-kernel.ts): the drift check before a full sync
 * and its metric, and the debug endpoints that serve it.
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import { pino } from "pino";
import { Registry } from "prom-client";
import { ipvsProxier } from "../../../src/backends/ipvs/proxier.ts";
import { upstreamTestSettings } from "../../../src/backends/ipvs/settings.ts";
import { ProxyStateStore } from "../../../src/proxy/changetracker.ts";
import { FakeClock } from "../../../src/proxy/clock.ts";
import { ProxyHealth } from "../../../src/proxy/health.ts";
import { createProxyMetrics } from "../../../src/proxy/metrics.ts";
import { metricsServerHandler } from "../../../src/server/metrics.ts";
import { fakeIpvsNode } from "../../support/ipvs-kernel.ts";
import { numberedService, numberedSlice } from "../../support/numbered-services.ts";
import { driftCounter, ipv4DebugSource } from "../../support/drift-daemon.ts";

function setup() {
  const node = fakeIpvsNode({ lo: ["127.0.0.1"], eth0: ["192.168.0.2"] });
  const settings = upstreamTestSettings("IPv4");
  const store = new ProxyStateStore({ family: "IPv4", nodeName: settings.nodeName });
  for (let n = 1; n <= 3; n++) {
    store.serviceChanges.update(null, numberedService(n));
    store.endpointsChanges.endpointSliceUpdate(numberedSlice(n, [`10.0.${n}.1`, `10.0.${n}.2`]), false);
  }
  const clock = new FakeClock();
  const registry = new Registry();
  const metrics = createProxyMetrics(registry, {});
  const proxier = ipvsProxier({
    kernel: node.kernel,
    settings,
    excludeCIDRs: [],
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
  return { node, proxier, drift, debug, registry };
}

test("ipvs daemon drift: a deleted real server, an ipset member and a virtual server someone added are found before a full sync, and repaired", async () => {
  const { node, proxier, drift, debug, registry } = setup();
  await proxier.syncProxyRules();
  const clean = await proxier.inspect();
  assert.equal(clean?.drift.inSync, true, JSON.stringify(clean?.drift, null, 2));
  const vs = node.ipvs.list().find((e) => e.realServers.length === 2)!;
  const rs = vs.realServers[0]!;
  await node.kernel.restoreIpvs([
    `-d -t ${vs.address}:${vs.port} -r ${rs.address}:${rs.port}`,
    "-A -t 10.9.9.9:443 -s rr",
  ]);
  const cluster = (await node.kernel.saveIpsets()).find((s) => s.name === "KUBE-CLUSTER-IP")!;
  await node.kernel.restoreIpsets([`del KUBE-CLUSTER-IP ${cluster.entries[0]!}`]);
  const seen = await proxier.inspect();
  assert.equal(seen?.drift.differences, 3, JSON.stringify(seen?.drift, null, 2));
  proxier.forceFullSync();
  await proxier.syncProxyRules();
  assert.deepEqual([await drift("found"), await drift("repaired")], [3, 3]);
  assert.equal((await proxier.inspect())?.drift.inSync, true);

  const handler = metricsServerHandler({ registry, proxyMode: "ipvs", config: {}, debug });
  assert.match(
    (await handler({ method: "GET", path: "/debug/kube-proxy-ts/intended" })).body,
    /# ipvsadm -R\n-A -t /,
  );
  assert.match(
    (await handler({ method: "GET", path: "/debug/kube-proxy-ts/diff" })).body,
    /ipvs IPv4: in sync/,
  );
});
