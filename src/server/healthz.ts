/**
 * The proxy health server (upstream `ProxyHealthServer.Run`, `--healthz-bind-address`, default
 * 0.0.0.0:10256): /healthz and /livez over the `ProxyHealth` state.
 */
import type { Counter } from "prom-client";
import type { ProxyHealth } from "../proxy/health.ts";
import { proxyHealthJSON } from "../proxy/health.ts";
import type { HttpHandler, HttpListener, HttpResponse } from "./httpserver.ts";
import { listenHttp, notFound, parseHostPort } from "./httpserver.ts";

export const defaultHealthzBindAddress = "0.0.0.0:10256";

export interface ProxyHealthServerDeps {
  readonly health: ProxyHealth;
  /** `kubeproxy_proxy_healthz_total` / `kubeproxy_proxy_livez_total` from createProxyMetrics. */
  readonly metrics?: {
    readonly proxyHealthzTotal: Counter<"code">;
    readonly proxyLivezTotal: Counter<"code">;
  };
}

function jsonResponse(healthy: boolean, body: string): HttpResponse {
  return {
    status: healthy ? 200 : 503,
    headers: { "Content-Type": "application/json", "X-Content-Type-Options": "nosniff" },
    body,
  };
}

/**
 * /healthz: unhealthy if any proxier is late or this Node is not eligible (unknown, being
 * deleted, or tainted for deletion). When healthy, `lastUpdated` reports the current time, as
 * older releases did (upstream keeps that for compatibility).
 */
export function healthzResponse(deps: ProxyHealthServerDeps): HttpResponse {
  const report = deps.health.health();
  const nodeEligible = deps.health.nodeEligible();
  const healthy = report.healthy && nodeEligible;
  deps.metrics?.proxyHealthzTotal.inc({ code: healthy ? "200" : "503" });
  const shown = healthy ? { ...report, lastUpdated: report.currentTime } : report;
  return jsonResponse(healthy, proxyHealthJSON(shown, nodeEligible));
}

/** /livez: only the proxiers' health; the Node's state does not matter. */
export function livezResponse(deps: ProxyHealthServerDeps): HttpResponse {
  const report = deps.health.health();
  deps.metrics?.proxyLivezTotal.inc({ code: report.healthy ? "200" : "503" });
  const shown = report.healthy ? { ...report, lastUpdated: report.currentTime } : report;
  return jsonResponse(report.healthy, proxyHealthJSON(shown));
}

export function proxyHealthHandler(deps: ProxyHealthServerDeps): HttpHandler {
  return (req) => {
    if (req.path === "/healthz") return healthzResponse(deps);
    if (req.path === "/livez") return livezResponse(deps);
    return notFound();
  };
}

/** Binds `bindAddress` (`host:port`); rejects with ListenError when the address is taken. */
export function serveProxyHealth(
  deps: ProxyHealthServerDeps,
  bindAddress: string = defaultHealthzBindAddress,
): Promise<HttpListener> {
  const { host, port } = parseHostPort(bindAddress);
  return listenHttp(host, port, proxyHealthHandler(deps));
}
