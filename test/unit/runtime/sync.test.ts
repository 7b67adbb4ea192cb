import assert from "node:assert/strict";
import { test } from "node:test";
import { pino } from "pino";
import { Registry } from "prom-client";
import { ProxyStateStore } from "../../../src/proxy/changetracker.ts";
import { FakeClock } from "../../../src/proxy/clock.ts";
import { ProxyHealth } from "../../../src/proxy/health.ts";
import { createProxyMetrics } from "../../../src/proxy/metrics.ts";
import { FamilyProxier, type FamilyWriter, type WriteRequest } from "../../../src/proxy/sync.ts";
import type { ProxyState } from "../../../src/proxy/types.ts";
import { slice, svc } from "../model/builders.ts";

/** A writer that records what it was asked and fails while `failing` is set. */
class ScriptedWriter implements FamilyWriter<string> {
  readonly family = "IPv4" as const;
  skipPeriodicFullSync = false;
  failing = false;
  invalidated = 0;
  readonly requests: WriteRequest[] = [];

  write(request: WriteRequest) {
    this.requests.push(request);
    if (this.failing) return Promise.reject(new Error("kernel said no"));
    request.onTransaction();
    return Promise.resolve({ noLocalEndpoints: { internal: 0, external: 0 }, details: "written" });
  }

  invalidate(): void {
    this.invalidated++;
  }
}

function setup() {
  const clock = new FakeClock(Date.parse("2026-01-01T00:00:00Z"));
  const store = new ProxyStateStore({ family: "IPv4", nodeName: "node-1", clock: () => clock.now() });
  const writer = new ScriptedWriter();
  const registry = new Registry();
  const metrics = createProxyMetrics(registry, { mode: "iptables" });
  const cleaned: ProxyState[] = [];
  const proxier = new FamilyProxier({
    writer,
    store,
    clock,
    log: pino({ level: "silent" }),
    health: new ProxyHealth(60_000, clock),
    metrics,
    retryIntervalMs: 30_000,
    reconcileConntrack: (state) => {
      cleaned.push(state);
      return Promise.resolve({ deleted: 0 });
    },
  });
  proxier.setInitialized();
  return { clock, store, writer, registry, proxier, cleaned };
}

const latencyCount = async (registry: Registry) =>
  (await registry.getSingleMetric("kubeproxy_network_programming_duration_seconds")!.get()).values.find((v) =>
    (v as { metricName?: string }).metricName?.endsWith("_count"),
  )?.value ?? 0;

test("a failed write commits nothing: the retry is full and carries the latency and conntrack work", async () => {
  const { clock, store, writer, registry, proxier, cleaned } = setup();
  const first = await proxier.syncProxyRules();
  assert.equal(first?.fullSync, true);
  assert.equal(writer.requests[0]?.fullSync, true);

  const dns = svc("ns", "dns", {
    clusterIP: "10.1.0.10",
    ports: [{ name: "dns", port: 53, protocol: "UDP" }],
  });
  store.serviceChanges.update(null, dns);
  store.endpointsChanges.endpointSliceUpdate(
    slice(
      "ns",
      "dns-1",
      "dns",
      "IPv4",
      [{ addresses: ["10.0.0.1"] }],
      [{ name: "dns", port: 53, protocol: "UDP" }],
      {
        annotations: { "endpoints.kubernetes.io/last-change-trigger-time": "2026-01-01T00:00:01Z" },
      },
    ),
    false,
  );
  await clock.advance(2_000);
  writer.failing = true;
  await assert.rejects(proxier.syncProxyRules(), /kernel said no/);
  assert.equal(writer.requests[1]?.fullSync, false, "the change alone asked for a partial sync");
  assert.equal(writer.invalidated, 1);
  assert.equal(cleaned.length, 0, "no conntrack clean-up for rules the kernel refused");
  assert.equal(await latencyCount(registry), 0, "no latency for a change that is not programmed");

  writer.failing = false;
  await clock.advance(1_000);
  const retry = await proxier.syncProxyRules();
  assert.equal(retry?.fullSync, true, "after a failure the next sync is a full one");
  assert.equal(retry?.details, "written");
  assert.equal(cleaned.length, 1, "the clean-up the failed sync needed happens now");
  assert.equal(await latencyCount(registry), 1, "the change's latency is observed once it is programmed");

  await proxier.syncProxyRules();
  assert.equal(writer.requests[3]?.fullSync, false);
  assert.equal(cleaned.length, 1, "and only once");
});

test("the hourly full sync is skipped while the writer says so (iptables' large-cluster mode)", async () => {
  const { clock, writer, proxier } = setup();
  await proxier.syncProxyRules();
  await clock.advance(3_600_001);
  writer.skipPeriodicFullSync = true;
  assert.equal((await proxier.syncProxyRules())?.fullSync, false);
  writer.skipPeriodicFullSync = false;
  assert.equal((await proxier.syncProxyRules())?.fullSync, true);
  proxier.forceFullSync();
  assert.equal(writer.invalidated, 1);
  assert.equal((await proxier.syncProxyRules())?.fullSync, true);
});
