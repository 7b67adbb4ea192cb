/**
 * The metrics server (upstream `serveMetrics` in cmd/kube-proxy/app/server.go,
 * `--metrics-bind-address`, default 127.0.0.1:10249): /metrics, /healthz, /proxyMode, /configz.
 */
import type { Registry } from "prom-client";
import type { HttpHandler, HttpListener, HttpResponse } from "./httpserver.ts";
import { listenHttp, notFound, parseHostPort } from "./httpserver.ts";
import { debugResponse, type DebugSource } from "./debug.ts";

export const defaultMetricsBindAddress = "127.0.0.1:10249";

/** The configz name kube-proxy registers its KubeProxyConfiguration under. */
export const configzName = "kubeproxy.config.k8s.io";

export interface MetricsServerDeps {
  readonly registry: Registry;
  /** The mode actually in use, e.g. "iptables". */
  readonly proxyMode: string;
  /** The effective KubeProxyConfiguration (external form), served by /configz. */
  readonly config: unknown;
  /** The daemon's /debug/kube-proxy-ts/ endpoints (docs/drift.md). */
  readonly debug?: DebugSource;
}

const textHeaders = { "Content-Type": "text/plain; charset=utf-8", "X-Content-Type-Options": "nosniff" };

export function metricsServerHandler(deps: MetricsServerDeps): HttpHandler {
  return async (req): Promise<HttpResponse> => {
    switch (req.path) {
      case "/metrics":
        return {
          status: 200,
          headers: { "Content-Type": deps.registry.contentType },
          body: await deps.registry.metrics(),
        };
      // component-base healthz with only the default ping check: always "ok".
      case "/healthz":
      case "/healthz/ping":
        return { status: 200, headers: textHeaders, body: "ok" };
      case "/proxyMode":
        return { status: 200, headers: textHeaders, body: deps.proxyMode };
      case "/configz":
        return {
          status: 200,
          headers: { "Content-Type": "application/json", "X-Content-Type-Options": "nosniff" },
          body: JSON.stringify({ [configzName]: deps.config }),
        };
      default:
        return (deps.debug === undefined ? null : await debugResponse(deps.debug, req.path)) ?? notFound();
    }
  };
}

export function serveMetrics(
  deps: MetricsServerDeps,
  bindAddress: string = defaultMetricsBindAddress,
): Promise<HttpListener> {
  const { host, port } = parseHostPort(bindAddress);
  return listenHttp(host, port, metricsServerHandler(deps));
}
