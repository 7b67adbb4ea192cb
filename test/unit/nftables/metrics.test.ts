/**
 * nftables mode's own metrics, upstream's names and labels (pkg/proxy/metrics, registered for
 * ProxyModeNFTables only): `kubeproxy_sync_proxy_rules_nftables_sync_failures_total` counts refused
 * sync transactions, `…_cleanup_failures_total` refused stale-chain deletions, per `ip_family`.
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import { pino } from "pino";
import { Registry } from "prom-client";
import { NftablesWriter } from "../../../src/backends/nftables/proxier.ts";
import { upstreamTestSettings } from "../../../src/backends/nftables/settings.ts";
import { FakeClock } from "../../../src/proxy/clock.ts";
import { createProxyMetrics } from "../../../src/proxy/metrics.ts";
import type { ProxyState } from "../../../src/proxy/types.ts";
import { FakeNft } from "../../support/nftables-fake.ts";
import { endpoint, proxyState, servicePort } from "../../support/iptables-builders.ts";

const SYNC = "kubeproxy_sync_proxy_rules_nftables_sync_failures_total";
const CLEANUP = "kubeproxy_sync_proxy_rules_nftables_cleanup_failures_total";

async function sample(registry: Registry, name: string): Promise<string[]> {
  return (await registry.metrics()).split("\n").filter((l) => l.startsWith(`${name}{`));
}

test("nftables mode registers its two counters and none of iptables mode's", async () => {
  const registry = new Registry();
  createProxyMetrics(registry, { mode: "nftables" });
  const text = await registry.metrics();
  assert.match(text, new RegExp(`# TYPE ${SYNC} counter`));
  assert.match(text, new RegExp(`# TYPE ${CLEANUP} counter`));
  assert.doesNotMatch(text, /iptables/);
  const iptables = new Registry();
  createProxyMetrics(iptables, { mode: "iptables" });
  assert.doesNotMatch(await iptables.metrics(), /nftables/);
});

test("a refused sync and a refused stale-chain deletion are counted for the writer's family", async () => {
  const registry = new Registry();
  const metrics = createProxyMetrics(registry, { mode: "nftables" }).nftables!;
  const kernel = new FakeNft();
  const clock = new FakeClock();
  let refuse: RegExp | null = null;
  const writer = new NftablesWriter({
    kernel: {
      apply: async (t) => {
        if (refuse?.test(t.payload)) throw new Error("refused");
        kernel.apply(t.payload);
      },
      read: async () => ({ dump: kernel.tableDump("ip6", "kube-proxy"), ifIndex: () => 1 }),
    },
    settings: upstreamTestSettings("IPv6"),
    clock,
    log: pino({ level: "silent" }),
    metrics,
  });
  assert.deepEqual(await sample(registry, SYNC), [`${SYNC}{ip_family="IPv6"} 0`]);
  assert.deepEqual(await sample(registry, CLEANUP), [`${CLEANUP}{ip_family="IPv6"} 0`]);

  const sp = servicePort({ namespace: "ns1", name: "svc1", clusterIP: "fd00:10:96::41" });
  const withService = proxyState([[sp, [endpoint("fd00:10:180::1", 80)]]], { family: "IPv6" });
  const empty: ProxyState = { ...withService, services: new Map(), endpoints: new Map() };
  const write = (state: ProxyState, fullSync: boolean) =>
    writer.write({ state, fullSync, changedServices: new Set(["ns1/svc1"]), onTransaction: () => undefined });

  await write(withService, true);
  refuse = /add table/;
  await assert.rejects(write(withService, true), /refused/);
  assert.deepEqual(await sample(registry, SYNC), [`${SYNC}{ip_family="IPv6"} 1`]);

  refuse = null;
  await write(withService, true);
  await write(empty, false);
  assert.ok(writer.pendingStaleChains.size > 0, "the Service's chains are stale now");
  await clock.advance(2_000);
  refuse = /^delete chain/m;
  await write(empty, false);
  assert.deepEqual(await sample(registry, CLEANUP), [`${CLEANUP}{ip_family="IPv6"} 1`]);
  assert.deepEqual(await sample(registry, SYNC), [`${SYNC}{ip_family="IPv6"} 1`], "not a sync failure");
});
