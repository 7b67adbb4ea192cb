/**
 * Health state read by the health servers (upstream `pkg/proxy/healthcheck`):
 * `ProxyHealth` is `ProxyHealthServer` without its listener, and `ServiceHealth` is the
 * bookkeeping of `ServiceHealthServer` (which Services have a healthCheckNodePort and how many
 * local endpoints each has). The servers in src/server only format this state.
 */
import type { Clock } from "./clock.ts";
import type { IPFamily } from "../ip.ts";

/** The taint the Cluster Autoscaler puts on a Node it is about to delete. */
export const toBeDeletedTaint = "ToBeDeletedByClusterAutoscaler";

/** Upstream passes `2 × syncPeriod` as the health timeout (cmd/kube-proxy/app/server.go). */
export function healthTimeoutForSyncPeriod(syncPeriodMs: number): number {
  return 2 * syncPeriodMs;
}

/** What /healthz needs to know about this node's Node object. */
export interface NodeEligibilityInfo {
  /** metadata.deletionTimestamp is set. */
  readonly deleting: boolean;
  /** spec.taints has a taint with key `ToBeDeletedByClusterAutoscaler`. */
  readonly toBeDeletedTaint: boolean;
}

/** Times are epoch milliseconds; `null` is Go's zero time. */
export interface ProxierHealth {
  readonly lastUpdated: number;
  readonly healthy: boolean;
}

export interface ProxyHealthReport {
  /** Latest `updated()` across families; null before any. */
  readonly lastUpdated: number | null;
  readonly currentTime: number;
  readonly healthy: boolean;
  readonly status: ReadonlyMap<IPFamily, ProxierHealth>;
}

export class ProxyHealth {
  private readonly lastUpdatedByFamily = new Map<IPFamily, number>();
  private readonly oldestPendingQueued = new Map<IPFamily, number>();
  private node: NodeEligibilityInfo | null = null;

  constructor(
    /** Milliseconds a queued update may stay pending before the proxy counts as unhealthy. */
    readonly healthTimeout: number,
    private readonly clock: Clock,
  ) {}

  /** The proxier of `family` has programmed the current state. */
  updated(family: IPFamily): void {
    this.oldestPendingQueued.delete(family);
    this.lastUpdatedByFamily.set(family, this.clock.now());
  }

  /** The proxier of `family` has a change it has not programmed yet; the oldest one counts. */
  queuedUpdate(family: IPFamily): void {
    if (!this.oldestPendingQueued.has(family)) {
      this.oldestPendingQueued.set(family, this.clock.now());
    }
  }

  /**
   * Only families that have been `updated` at least once are judged (upstream iterates
   * lastUpdatedMap), so a proxier that is still starting up counts as healthy.
   */
  health(): ProxyHealthReport {
    const currentTime = this.clock.now();
    let lastUpdated: number | null = null;
    let healthy = true;
    const status = new Map<IPFamily, ProxierHealth>();
    for (const [family, familyLastUpdated] of this.lastUpdatedByFamily) {
      if (lastUpdated === null || familyLastUpdated > lastUpdated) lastUpdated = familyLastUpdated;
      const queued = this.oldestPendingQueued.get(family);
      const late = queued !== undefined && currentTime - queued >= this.healthTimeout;
      if (late) healthy = false;
      status.set(family, { lastUpdated: familyLastUpdated, healthy: !late });
    }
    return { lastUpdated, currentTime, healthy, status };
  }

  isHealthy(): boolean {
    return this.health().healthy;
  }

  /** The current Node object of this node, or null while it is unknown. */
  setNode(node: NodeEligibilityInfo | null): void {
    this.node = node;
  }

  /** Upstream `NodeEligible`: known, not being deleted, not tainted for deletion. */
  nodeEligible(): boolean {
    return this.node !== null && !this.node.deleting && !this.node.toBeDeletedTaint;
  }
}

/**
 * Go's `time.Time` JSON form (RFC 3339 with up to nine fractional digits, trailing zeros
 * dropped), in UTC; `null` prints as Go's zero time.
 */
export function formatGoTime(ms: number | null): string {
  if (ms === null) return "0001-01-01T00:00:00Z";
  // Microseconds: finer digits of an epoch-milliseconds double are rounding noise.
  const micros = Math.round(ms * 1000);
  const iso = new Date(Math.floor(micros / 1000)).toISOString();
  const nanos = (((micros % 1_000_000) + 1_000_000) % 1_000_000) * 1000;
  const fraction = nanos === 0 ? "" : "." + String(nanos).padStart(9, "0").replace(/0+$/, "");
  return `${iso.slice(0, 19)}${fraction}Z`;
}

/**
 * The JSON body of /healthz (with `nodeEligible`) and /livez (without), field for field as
 * upstream's `json.Marshal(ProxyHealth)`; `status` is left out when empty (omitempty) and its
 * keys are sorted as Go sorts map keys.
 */
export function proxyHealthJSON(report: ProxyHealthReport, nodeEligible?: boolean): string {
  const status: Record<string, { lastUpdated: string; healthy: boolean }> = {};
  for (const family of [...report.status.keys()].sort()) {
    const h = report.status.get(family);
    if (h !== undefined) status[family] = { lastUpdated: formatGoTime(h.lastUpdated), healthy: h.healthy };
  }
  return JSON.stringify({
    lastUpdated: formatGoTime(report.lastUpdated),
    currentTime: formatGoTime(report.currentTime),
    ...(nodeEligible === undefined ? {} : { nodeEligible }),
    healthy: report.healthy,
    ...(report.status.size === 0 ? {} : { status }),
  });
}

/** A Service with a healthCheckNodePort (eTP=Local LoadBalancer). */
export interface HealthCheckService {
  readonly namespace: string;
  readonly name: string;
  readonly port: number;
}

export function namespacedName(svc: { readonly namespace: string; readonly name: string }): string {
  return `${svc.namespace}/${svc.name}`;
}

export interface ServiceHealthChanges {
  /** Services whose health check must be opened (new, or moved to another port). */
  readonly open: readonly HealthCheckService[];
  /** Services whose health check must be closed (gone, or moved to another port). */
  readonly close: readonly HealthCheckService[];
}

interface ServiceHealthEntry {
  readonly service: HealthCheckService;
  localEndpoints: number;
}

/**
 * Upstream `ServiceHealthServer` state: one entry per open health check, keyed by
 * `namespace/name`, with the Service's local ready endpoint count.
 */
export class ServiceHealth {
  private readonly services = new Map<string, ServiceHealthEntry>();

  /**
   * Replaces the wanted set. Returns what to close and what to open; an entry is only
   * recorded once `opened` confirms its listeners are up, so a failed open is retried by the
   * next sync, as upstream does.
   */
  syncServices(wanted: readonly HealthCheckService[]): ServiceHealthChanges {
    const wantedByName = new Map(wanted.map((s) => [namespacedName(s), s]));
    const close: HealthCheckService[] = [];
    for (const [nsn, entry] of this.services) {
      const next = wantedByName.get(nsn);
      if (next === undefined || next.port !== entry.service.port) {
        close.push(entry.service);
        this.services.delete(nsn);
      }
    }
    const open = [...wantedByName.entries()].filter(([nsn]) => !this.services.has(nsn)).map(([, s]) => s);
    return { open, close };
  }

  /** Records a health check whose listeners are serving. */
  opened(service: HealthCheckService): void {
    this.services.set(namespacedName(service), { service, localEndpoints: 0 });
  }

  /** Sets local endpoint counts by `namespace/name`; open Services not listed get 0. */
  syncEndpoints(counts: ReadonlyMap<string, number>): void {
    for (const [nsn, entry] of this.services) {
      entry.localEndpoints = counts.get(nsn) ?? 0;
    }
  }

  /** Local endpoint count of an open health check, or undefined if it is not open. */
  localEndpoints(nsn: string): number | undefined {
    return this.services.get(nsn)?.localEndpoints;
  }

  list(): HealthCheckService[] {
    return [...this.services.values()].map((e) => e.service);
  }
}
