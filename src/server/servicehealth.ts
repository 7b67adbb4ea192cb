/**
 * Per-Service health checks for eTP=Local LoadBalancers (upstream `ServiceHealthServer`): one
 * HTTP server per `healthCheckNodePort` on each node address, answering any path with 200 iff
 * the Service has local endpoints and kube-proxy is healthy, so the cloud LB only sends traffic
 * to nodes that can serve it locally.
 */
import type { Logger } from "pino";
import type { HealthCheckService } from "../proxy/health.ts";
import { ServiceHealth, namespacedName } from "../proxy/health.ts";
import type { HttpListener, HttpResponse } from "./httpserver.ts";
import { joinHostPort, listenHttp } from "./httpserver.ts";

/**
 * Upstream's body: a tab-indented JSON document (built from a dedented template, so the
 * layout is fixed, not json.MarshalIndent's).
 */
export function serviceHealthResponse(
  service: { readonly namespace: string; readonly name: string },
  localEndpoints: number,
  serviceProxyHealthy: boolean,
): HttpResponse {
  const body = [
    "{",
    '\t"service": {',
    `\t\t"namespace": ${JSON.stringify(service.namespace)},`,
    `\t\t"name": ${JSON.stringify(service.name)}`,
    "\t},",
    `\t"localEndpoints": ${localEndpoints},`,
    `\t"serviceProxyHealthy": ${serviceProxyHealthy}`,
    "}",
  ].join("\n");
  return {
    status: localEndpoints !== 0 && serviceProxyHealthy ? 200 : 503,
    headers: {
      "Content-Type": "application/json",
      "X-Content-Type-Options": "nosniff",
      "X-Load-Balancing-Endpoint-Weight": String(localEndpoints),
    },
    body,
  };
}

export interface ServiceHealthServerOptions {
  /** The proxy's own health (`ProxyHealth`). */
  readonly proxyHealth: { isHealthy(): boolean };
  /**
   * Addresses to listen on; default all addresses (dual-stack), as upstream does unless
   * nodePortAddresses narrows it to the node's matching IPs.
   */
  readonly nodeIPs?: readonly string[];
  /** Used in the failure message, as upstream's event does. */
  readonly hostname?: string;
  readonly log?: Logger;
  /** A health check that could not be opened (upstream records a FailedToStartServiceHealthcheck event). */
  readonly onListenError?: (service: HealthCheckService, message: string, err: unknown) => void;
}

export class ServiceHealthServer {
  readonly state = new ServiceHealth();
  private readonly listeners = new Map<string, HttpListener[]>();
  private queue: Promise<void> = Promise.resolve();

  constructor(private readonly options: ServiceHealthServerOptions) {}

  /**
   * Makes the given Services the open set: closes health checks no longer wanted (or moved to
   * another port), opens new ones. A failure to listen is logged and reported, never thrown;
   * the Service is tried again on the next sync.
   */
  sync(services: readonly HealthCheckService[]): Promise<void> {
    const next = this.queue.then(() => this.doSync(services));
    this.queue = next;
    return next;
  }

  /** Local ready endpoint counts by `namespace/name`; open Services not listed get 0. */
  syncEndpoints(counts: ReadonlyMap<string, number>): void {
    this.state.syncEndpoints(counts);
  }

  /** Where a Service's health check is listening (empty if it is not open). */
  addresses(service: { readonly namespace: string; readonly name: string }): string[] {
    return (this.listeners.get(namespacedName(service)) ?? []).map((l) =>
      joinHostPort(l.address.host, l.address.port),
    );
  }

  /** Closes every health check. */
  close(): Promise<void> {
    return this.sync([]);
  }

  private async doSync(services: readonly HealthCheckService[]): Promise<void> {
    const log = this.options.log;
    const { open, close } = this.state.syncServices(services);
    for (const svc of close) {
      const nsn = namespacedName(svc);
      log?.info({ service: nsn, port: svc.port }, "Closing healthcheck");
      await Promise.all((this.listeners.get(nsn) ?? []).map((l) => l.close()));
      this.listeners.delete(nsn);
    }
    for (const svc of open) {
      const nsn = namespacedName(svc);
      log?.info({ service: nsn, port: svc.port }, "Opening healthcheck");
      try {
        this.listeners.set(nsn, await this.listenAll(svc));
        this.state.opened(svc);
      } catch (err) {
        const hostname = this.options.hostname ?? "";
        const reason = err instanceof Error ? err.message : String(err);
        const message = `node ${hostname} failed to start healthcheck "${nsn}" on port ${svc.port}: ${reason}`;
        log?.error({ err, node: hostname, service: nsn, port: svc.port }, "Failed to start healthcheck");
        this.options.onListenError?.(svc, message, err);
      }
    }
  }

  /** All addresses or none: what was opened is closed again so a retry can take the port. */
  private async listenAll(svc: HealthCheckService): Promise<HttpListener[]> {
    const nsn = namespacedName(svc);
    const opened: HttpListener[] = [];
    try {
      for (const ip of this.options.nodeIPs ?? [""]) {
        opened.push(await listenHttp(ip, svc.port, () => this.respond(svc)));
      }
    } catch (err) {
      await Promise.all(opened.map((l) => l.close()));
      throw err;
    }
    this.options.log?.debug({ service: nsn }, "Serving healthcheck");
    return opened;
  }

  private respond(svc: HealthCheckService): HttpResponse {
    const count = this.state.localEndpoints(namespacedName(svc)) ?? 0;
    return serviceHealthResponse(svc, count, this.options.proxyHealth.isHealthy());
  }
}
