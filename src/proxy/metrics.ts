/**
 * Every kube-proxy metric in one place (upstream `pkg/proxy/metrics/metrics.go`): names, help
 * texts, labels and buckets as upstream has them, registered on the registry the caller gives
 * (never prom-client's global one, so tests and proxiers don't share counters).
 */
import { Counter, Gauge, Histogram } from "prom-client";
import type { CounterConfiguration, MetricObjectWithValues, MetricValue, Registry } from "prom-client";

export type ProxyMode = "iptables" | "nftables" | "ipvs";

/** Upstream nfacct counter names (`pkg/proxy/metrics`, `pkg/proxy/iptables`). */
export const ctStateInvalidDroppedNFAcctCounter = "ct_state_invalid_dropped_pkts";
export const localhostNodePortsAcceptedNFAcctCounter = "localhost_nps_accepted_pkts";

/** Reads one nfacct packet counter at scrape time; null when it cannot be read. */
export type NFAcctReader = () => number | null | Promise<number | null>;

export interface ProxyMetricsOptions {
  readonly mode?: ProxyMode;
  /** iptables mode: sources of the two nfacct-backed metrics; absent ones emit no sample. */
  readonly nfacct?: {
    readonly ctStateInvalidDropped?: NFAcctReader;
    readonly localhostNodePortsAccepted?: NFAcctReader;
  };
  /** Called when an nfacct reader throws; the scrape goes on without that sample. */
  readonly onCollectError?: (metric: string, err: unknown) => void;
}

/** Go's `prometheus.ExponentialBuckets`. */
export function exponentialBuckets(start: number, factor: number, count: number): number[] {
  return Array.from({ length: count }, (_, i) => start * factor ** i);
}

/** Go's `prometheus.LinearBuckets`. */
export function linearBuckets(start: number, width: number, count: number): number[] {
  return Array.from({ length: count }, (_, i) => start + width * i);
}

/** component-base `metrics.MergeBuckets`: note that it starts the list with a 0 bucket. */
export function mergeBuckets(...lists: number[][]): number[] {
  return [0, ...lists.flat()];
}

const syncBuckets = exponentialBuckets(0.001, 2, 15);

/** Upstream `NetworkProgrammingLatency` buckets: 0, 0.25s, 0.5s, 1..59s, 60..115s, 120..300s. */
export const networkProgrammingBuckets = mergeBuckets(
  linearBuckets(0.25, 0.25, 2),
  linearBuckets(1, 1, 59),
  linearBuckets(60, 5, 12),
  linearBuckets(120, 30, 7),
);

/**
 * A counter whose value is read at scrape time (upstream's custom nfacct collectors send a
 * const metric only when the read succeeds, so a failed read yields no sample, not 0).
 */
class CollectedCounter extends Counter {
  constructor(
    config: CounterConfiguration<string>,
    private readonly read: NFAcctReader,
    private readonly onError: (err: unknown) => void,
  ) {
    super(config);
  }

  override async get(): Promise<MetricObjectWithValues<MetricValue<string>>> {
    const base = await super.get();
    let value: number | null;
    try {
      value = await this.read();
    } catch (err) {
      this.onError(err);
      value = null;
    }
    return { ...base, values: value === null ? [] : [{ value, labels: {} }] };
  }
}

export function createProxyMetrics(registry: Registry, options: ProxyMetricsOptions = {}) {
  const mode = options.mode ?? "iptables";
  const registers = [registry];
  const histogram = <L extends string>(name: string, help: string, labelNames: L[], buckets = syncBuckets) =>
    new Histogram<L>({ name: `kubeproxy_${name}`, help, labelNames, buckets, registers });
  const gauge = <L extends string>(name: string, help: string, labelNames: L[]) =>
    new Gauge<L>({ name: `kubeproxy_${name}`, help, labelNames, registers });
  const counter = <L extends string>(name: string, help: string, labelNames: L[]) =>
    new Counter<L>({ name: `kubeproxy_${name}`, help, labelNames, registers });

  const common = {
    syncProxyRulesLatency: histogram(
      "sync_proxy_rules_duration_seconds",
      "SyncProxyRules latency in seconds",
      ["ip_family"],
    ),
    syncProxyRulesLastQueuedTimestamp: gauge(
      "sync_proxy_rules_last_queued_timestamp_seconds",
      "The last time a sync of proxy rules was queued",
      ["ip_family"],
    ),
    // kube-proxy-ts's own (upstream has no drift metric): docs/drift.md.
    syncProxyRulesDriftTotal: counter(
      "ts_sync_proxy_rules_drift_total",
      "Differences between the kernel and what the proxy last wrote, found before a full sync (outcome=found) and gone after it (outcome=repaired)",
      ["ip_family", "outcome"],
    ),
    syncProxyRulesLastTimestamp: gauge(
      "sync_proxy_rules_last_timestamp_seconds",
      "The last time proxy rules were successfully synced",
      ["ip_family"],
    ),
    endpointChangesPending: gauge(
      "sync_proxy_rules_endpoint_changes_pending",
      "Pending proxy rules Endpoint changes",
      [],
    ),
    endpointChangesTotal: counter(
      "sync_proxy_rules_endpoint_changes_total",
      "Cumulative proxy rules Endpoint changes",
      [],
    ),
    serviceChangesPending: gauge(
      "sync_proxy_rules_service_changes_pending",
      "Pending proxy rules Service changes",
      [],
    ),
    serviceChangesTotal: counter(
      "sync_proxy_rules_service_changes_total",
      "Cumulative proxy rules Service changes",
      [],
    ),
    proxyHealthzTotal: counter("proxy_healthz_total", "Cumulative proxy healthz HTTP status", ["code"]),
    proxyLivezTotal: counter("proxy_livez_total", "Cumulative proxy livez HTTP status", ["code"]),
    networkProgrammingLatency: histogram(
      "network_programming_duration_seconds",
      "In Cluster Network Programming Latency in seconds",
      ["ip_family"],
      networkProgrammingBuckets,
    ),
    syncProxyRulesNoLocalEndpointsTotal: gauge(
      "sync_proxy_rules_no_local_endpoints_total",
      "Number of services with a Local traffic policy and no endpoints",
      ["traffic_policy", "ip_family"],
    ),
    reconcileConntrackFlowsLatency: histogram(
      "conntrack_reconciler_sync_duration_seconds",
      "ReconcileConntrackFlowsLatency latency in seconds",
      ["ip_family"],
    ),
    reconcileConntrackFlowsDeletedEntriesTotal: counter(
      "conntrack_reconciler_deleted_entries_total",
      "Cumulative conntrack flows deleted by conntrack reconciler",
      ["ip_family"],
    ),
  };

  const iptablesRestoreFailures = (): Counter<"ip_family"> =>
    counter(
      "sync_proxy_rules_iptables_restore_failures_total",
      "Cumulative proxy iptables restore failures",
      ["ip_family"],
    );

  const iptables =
    mode === "iptables"
      ? {
          syncFullProxyRulesLatency: histogram(
            "sync_full_proxy_rules_duration_seconds",
            "SyncProxyRules latency in seconds for full resyncs",
            ["ip_family"],
          ),
          syncPartialProxyRulesLatency: histogram(
            "sync_partial_proxy_rules_duration_seconds",
            "SyncProxyRules latency in seconds for partial resyncs",
            ["ip_family"],
          ),
          iptablesRestoreFailuresTotal: iptablesRestoreFailures(),
          iptablesPartialRestoreFailuresTotal: counter(
            "sync_proxy_rules_iptables_partial_restore_failures_total",
            "Cumulative proxy iptables partial restore failures",
            ["ip_family"],
          ),
          iptablesRulesTotal: gauge(
            "sync_proxy_rules_iptables_total",
            "Total number of iptables rules owned by kube-proxy",
            ["table", "ip_family"],
          ),
          iptablesRulesLastSync: gauge(
            "sync_proxy_rules_iptables_last",
            "Number of iptables rules written by kube-proxy in last sync",
            ["table", "ip_family"],
          ),
        }
      : null;

  if (mode === "iptables") {
    const onError = (metric: string) => (err: unknown) => options.onCollectError?.(metric, err);
    const nfacctCounters: Array<[string, string, NFAcctReader | undefined]> = [
      [
        "kubeproxy_iptables_ct_state_invalid_dropped_packets_total",
        "packets dropped by iptables to work around conntrack problems",
        options.nfacct?.ctStateInvalidDropped,
      ],
      [
        "kubeproxy_iptables_localhost_nodeports_accepted_packets_total",
        "Number of packets accepted on nodeports of loopback interface",
        options.nfacct?.localhostNodePortsAccepted,
      ],
    ];
    for (const [name, help, read] of nfacctCounters) {
      new CollectedCounter({ name, help, registers }, read ?? (() => null), onError(name));
    }
  }

  const ipvs = mode === "ipvs" ? { iptablesRestoreFailuresTotal: iptablesRestoreFailures() } : null;

  const nftables =
    mode === "nftables"
      ? {
          nftablesSyncFailuresTotal: counter(
            "sync_proxy_rules_nftables_sync_failures_total",
            "Cumulative proxy nftables sync failures",
            ["ip_family"],
          ),
          nftablesCleanupFailuresTotal: counter(
            "sync_proxy_rules_nftables_cleanup_failures_total",
            "Cumulative proxy nftables cleanup failures",
            ["ip_family"],
          ),
        }
      : null;

  return { mode, ...common, iptables, ipvs, nftables };
}

export type ProxyMetrics = ReturnType<typeof createProxyMetrics>;
/** The iptables mode's own metrics (null in other modes). */
export type IptablesMetrics = NonNullable<ProxyMetrics["iptables"]>;
export type NftablesMetrics = NonNullable<ProxyMetrics["nftables"]>;
