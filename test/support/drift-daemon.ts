import type { Registry } from "prom-client";
import type { SyncFailure, WriterInspection } from "../../src/proxy/sync.ts";
import type { DebugSource } from "../../src/server/debug.ts";

/** The daemon's drift counter (`kubeproxy_ts_sync_proxy_rules_drift_total`) for one outcome. */
export function driftCounter(registry: Registry): (outcome: string) => Promise<number> {
  return async (outcome) => {
    const values = (await registry.getSingleMetric("kubeproxy_ts_sync_proxy_rules_drift_total")!.get())
      .values;
    return values.find((v) => v.labels["outcome"] === outcome)?.value ?? 0;
  };
}

/** The debug endpoints' source of a daemon with one IPv4 proxier. */
export function ipv4DebugSource(proxier: {
  inspect(): Promise<WriterInspection | null>;
  readonly lastFailure: SyncFailure | null;
}): DebugSource {
  return {
    inspect: async () => [{ family: "IPv4", inspection: await proxier.inspect() }],
    failures: () => (proxier.lastFailure === null ? [] : [proxier.lastFailure]),
  };
}
