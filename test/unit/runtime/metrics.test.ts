import { test } from "node:test";
import assert from "node:assert/strict";
import { Registry } from "prom-client";
import {
  createProxyMetrics,
  exponentialBuckets,
  networkProgrammingBuckets,
} from "../../../src/proxy/metrics.ts";

/** Metric families in a text exposition: name → {help, type}. */
function families(text: string): Map<string, { help: string; type: string }> {
  const out = new Map<string, { help: string; type: string }>();
  for (const line of text.split("\n")) {
    const help = /^# HELP (\S+) (.*)$/.exec(line);
    if (help?.[1] !== undefined && help[2] !== undefined) out.set(help[1], { help: help[2], type: "" });
    const type = /^# TYPE (\S+) (\S+)$/.exec(line);
    if (type?.[1] !== undefined && type[2] !== undefined) {
      const f = out.get(type[1]);
      if (f !== undefined) f.type = type[2];
    }
  }
  return out;
}

const iptablesModeFamilies: Record<string, [string, string]> = {
  kubeproxy_sync_proxy_rules_duration_seconds: ["histogram", "SyncProxyRules latency in seconds"],
  kubeproxy_sync_full_proxy_rules_duration_seconds: [
    "histogram",
    "SyncProxyRules latency in seconds for full resyncs",
  ],
  kubeproxy_sync_partial_proxy_rules_duration_seconds: [
    "histogram",
    "SyncProxyRules latency in seconds for partial resyncs",
  ],
  kubeproxy_sync_proxy_rules_last_timestamp_seconds: [
    "gauge",
    "The last time proxy rules were successfully synced",
  ],
  kubeproxy_sync_proxy_rules_last_queued_timestamp_seconds: [
    "gauge",
    "The last time a sync of proxy rules was queued",
  ],
  kubeproxy_network_programming_duration_seconds: [
    "histogram",
    "In Cluster Network Programming Latency in seconds",
  ],
  kubeproxy_sync_proxy_rules_endpoint_changes_pending: ["gauge", "Pending proxy rules Endpoint changes"],
  kubeproxy_sync_proxy_rules_endpoint_changes_total: ["counter", "Cumulative proxy rules Endpoint changes"],
  kubeproxy_sync_proxy_rules_service_changes_pending: ["gauge", "Pending proxy rules Service changes"],
  kubeproxy_sync_proxy_rules_service_changes_total: ["counter", "Cumulative proxy rules Service changes"],
  kubeproxy_sync_proxy_rules_iptables_total: ["gauge", "Total number of iptables rules owned by kube-proxy"],
  kubeproxy_sync_proxy_rules_iptables_last: [
    "gauge",
    "Number of iptables rules written by kube-proxy in last sync",
  ],
  kubeproxy_sync_proxy_rules_iptables_restore_failures_total: [
    "counter",
    "Cumulative proxy iptables restore failures",
  ],
  kubeproxy_sync_proxy_rules_iptables_partial_restore_failures_total: [
    "counter",
    "Cumulative proxy iptables partial restore failures",
  ],
  kubeproxy_sync_proxy_rules_no_local_endpoints_total: [
    "gauge",
    "Number of services with a Local traffic policy and no endpoints",
  ],
  kubeproxy_iptables_ct_state_invalid_dropped_packets_total: [
    "counter",
    "packets dropped by iptables to work around conntrack problems",
  ],
  kubeproxy_iptables_localhost_nodeports_accepted_packets_total: [
    "counter",
    "Number of packets accepted on nodeports of loopback interface",
  ],
  kubeproxy_conntrack_reconciler_sync_duration_seconds: [
    "histogram",
    "ReconcileConntrackFlowsLatency latency in seconds",
  ],
  kubeproxy_conntrack_reconciler_deleted_entries_total: [
    "counter",
    "Cumulative conntrack flows deleted by conntrack reconciler",
  ],
  kubeproxy_proxy_healthz_total: ["counter", "Cumulative proxy healthz HTTP status"],
  kubeproxy_proxy_livez_total: ["counter", "Cumulative proxy livez HTTP status"],
};

test("iptables mode registers every upstream metric with upstream help text and type", async () => {
  const registry = new Registry();
  createProxyMetrics(registry);
  const got = families(await registry.metrics());
  for (const [name, [type, help]] of Object.entries(iptablesModeFamilies)) {
    assert.deepEqual(got.get(name), { help, type }, name);
  }
  // kube-proxy-ts's own series carry their own prefix (docs/drift.md).
  assert.deepEqual(
    [...got.keys()].filter((n) => !(n in iptablesModeFamilies)),
    ["kubeproxy_ts_sync_proxy_rules_drift_total"],
    "no metric that upstream does not have, except ours under kubeproxy_ts_",
  );
});

test("nftables and ipvs modes register their own failure counters only", async () => {
  const nft = new Registry();
  createProxyMetrics(nft, { mode: "nftables" });
  const nftNames = [...families(await nft.metrics()).keys()];
  assert.ok(nftNames.includes("kubeproxy_sync_proxy_rules_nftables_sync_failures_total"));
  assert.ok(nftNames.includes("kubeproxy_sync_proxy_rules_nftables_cleanup_failures_total"));
  assert.ok(!nftNames.some((n) => n.includes("iptables")));

  const ipvs = new Registry();
  createProxyMetrics(ipvs, { mode: "ipvs" });
  const ipvsNames = [...families(await ipvs.metrics()).keys()];
  assert.ok(ipvsNames.includes("kubeproxy_sync_proxy_rules_iptables_restore_failures_total"));
  assert.ok(!ipvsNames.includes("kubeproxy_sync_full_proxy_rules_duration_seconds"));
});

test("registries are independent (no global state)", async () => {
  const a = new Registry();
  const b = new Registry();
  const ma = createProxyMetrics(a);
  createProxyMetrics(b);
  ma.proxyHealthzTotal.inc({ code: "200" });
  assert.match(await a.metrics(), /^kubeproxy_proxy_healthz_total\{code="200"\} 1$/m);
  assert.doesNotMatch(await b.metrics(), /kubeproxy_proxy_healthz_total\{/);
});

test("buckets: exponential for sync durations, upstream's merged list for network programming", async () => {
  assert.deepEqual(exponentialBuckets(0.001, 2, 3), [0.001, 0.002, 0.004]);
  assert.equal(networkProgrammingBuckets.length, 1 + 2 + 59 + 12 + 7);
  assert.deepEqual(networkProgrammingBuckets.slice(0, 5), [0, 0.25, 0.5, 1, 2]);
  assert.deepEqual(networkProgrammingBuckets.slice(-3), [240, 270, 300]);

  const registry = new Registry();
  const m = createProxyMetrics(registry);
  m.syncProxyRulesLatency.observe({ ip_family: "IPv4" }, 0.003);
  m.networkProgrammingLatency.observe({ ip_family: "IPv4" }, 0.1);
  const text = await registry.metrics();
  assert.match(
    text,
    /^kubeproxy_sync_proxy_rules_duration_seconds_bucket\{le="16.384",ip_family="IPv4"\} 1$/m,
  );
  assert.match(
    text,
    /^kubeproxy_sync_proxy_rules_duration_seconds_bucket\{le="0.002",ip_family="IPv4"\} 0$/m,
  );
  assert.match(text, /^kubeproxy_network_programming_duration_seconds_bucket\{le="0",ip_family="IPv4"\} 0$/m);
  assert.match(
    text,
    /^kubeproxy_network_programming_duration_seconds_bucket\{le="0.25",ip_family="IPv4"\} 1$/m,
  );
});

test("nfacct counters are read at scrape time; unreadable ones yield no sample", async () => {
  const registry = new Registry();
  let packets: number | null = 7;
  const errors: string[] = [];
  createProxyMetrics(registry, {
    nfacct: {
      ctStateInvalidDropped: () => packets,
      localhostNodePortsAccepted: async () => {
        throw new Error("nfacct: no such counter");
      },
    },
    onCollectError: (metric) => errors.push(metric),
  });
  let text = await registry.metrics();
  assert.match(text, /^kubeproxy_iptables_ct_state_invalid_dropped_packets_total 7$/m);
  assert.doesNotMatch(text, /^kubeproxy_iptables_localhost_nodeports_accepted_packets_total /m);
  assert.deepEqual(errors, ["kubeproxy_iptables_localhost_nodeports_accepted_packets_total"]);

  packets = 9;
  text = await registry.metrics();
  assert.match(text, /^kubeproxy_iptables_ct_state_invalid_dropped_packets_total 9$/m);
  packets = null;
  text = await registry.metrics();
  assert.doesNotMatch(text, /^kubeproxy_iptables_ct_state_invalid_dropped_packets_total /m);
});
