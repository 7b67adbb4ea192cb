import { test } from "node:test";
import assert from "node:assert/strict";
import net from "node:net";
import { Registry } from "prom-client";
import { FakeClock } from "../../../src/proxy/clock.ts";
import { ProxyHealth } from "../../../src/proxy/health.ts";
import { createProxyMetrics } from "../../../src/proxy/metrics.ts";
import {
  healthzResponse,
  livezResponse,
  proxyHealthHandler,
  serveProxyHealth,
} from "../../../src/server/healthz.ts";
import { ListenError, keepServing, listenHost, parseHostPort } from "../../../src/server/httpserver.ts";
import type { HttpListener } from "../../../src/server/httpserver.ts";
import { metricsServerHandler, serveMetrics } from "../../../src/server/metrics.ts";
import { ServiceHealthServer, serviceHealthResponse } from "../../../src/server/servicehealth.ts";

const t0 = Date.UTC(2024, 0, 2, 3, 4, 5);
const jsonHeaders = { "Content-Type": "application/json", "X-Content-Type-Options": "nosniff" };

function setup(): { clock: FakeClock; health: ProxyHealth; registry: Registry } {
  const clock = new FakeClock(t0);
  const registry = new Registry();
  return { clock, health: new ProxyHealth(60_000, clock), registry };
}

test("/healthz and /livez: healthy bodies report now as lastUpdated", async () => {
  const { clock, health, registry } = setup();
  const metrics = createProxyMetrics(registry);
  health.setNode({ deleting: false, toBeDeletedTaint: false });
  health.updated("IPv4"); // t=0
  await clock.advance(1500); // t=1.5s

  const hz = healthzResponse({ health, metrics });
  assert.equal(hz.status, 200);
  assert.deepEqual(hz.headers, jsonHeaders);
  assert.equal(
    hz.body,
    '{"lastUpdated":"2024-01-02T03:04:06.5Z","currentTime":"2024-01-02T03:04:06.5Z","nodeEligible":true,' +
      '"healthy":true,"status":{"IPv4":{"lastUpdated":"2024-01-02T03:04:05Z","healthy":true}}}',
  );

  const lz = livezResponse({ health, metrics });
  assert.equal(lz.status, 200);
  assert.equal(
    lz.body,
    '{"lastUpdated":"2024-01-02T03:04:06.5Z","currentTime":"2024-01-02T03:04:06.5Z",' +
      '"healthy":true,"status":{"IPv4":{"lastUpdated":"2024-01-02T03:04:05Z","healthy":true}}}',
  );
});

test("/healthz is 503 for an ineligible node while /livez stays 200; late updates make both 503", async () => {
  const { clock, health, registry } = setup();
  const metrics = createProxyMetrics(registry);
  health.updated("IPv4"); // t=0, Node still unknown
  let hz = healthzResponse({ health, metrics });
  assert.equal(hz.status, 503);
  assert.equal(
    hz.body,
    '{"lastUpdated":"2024-01-02T03:04:05Z","currentTime":"2024-01-02T03:04:05Z","nodeEligible":false,' +
      '"healthy":true,"status":{"IPv4":{"lastUpdated":"2024-01-02T03:04:05Z","healthy":true}}}',
  );
  assert.equal(livezResponse({ health, metrics }).status, 200);

  health.setNode({ deleting: false, toBeDeletedTaint: false });
  health.queuedUpdate("IPv4"); // t=0
  await clock.advance(60_000); // t=60s: pending for healthTimeout
  hz = healthzResponse({ health, metrics });
  assert.equal(hz.status, 503);
  const lz = livezResponse({ health, metrics });
  assert.equal(lz.status, 503);
  assert.equal(
    lz.body,
    '{"lastUpdated":"2024-01-02T03:04:05Z","currentTime":"2024-01-02T03:05:05Z",' +
      '"healthy":false,"status":{"IPv4":{"lastUpdated":"2024-01-02T03:04:05Z","healthy":false}}}',
  );

  const text = await registry.metrics();
  assert.match(text, /^kubeproxy_proxy_healthz_total\{code="503"\} 2$/m);
  assert.match(text, /^kubeproxy_proxy_livez_total\{code="200"\} 1$/m);
  assert.match(text, /^kubeproxy_proxy_livez_total\{code="503"\} 1$/m);
});

test("proxy health handler routes only /healthz and /livez", async () => {
  const { health } = setup();
  const handler = proxyHealthHandler({ health });
  const nf = await handler({ method: "GET", path: "/metrics" });
  assert.equal(nf.status, 404);
  assert.equal(nf.body, "404 page not found\n");
});

test("service health response: upstream's tab-indented body, weight header, 200 only with endpoints and healthy", () => {
  const ok = serviceHealthResponse({ namespace: "ns1", name: "svc1" }, 2, true);
  assert.equal(ok.status, 200);
  assert.deepEqual(ok.headers, { ...jsonHeaders, "X-Load-Balancing-Endpoint-Weight": "2" });
  assert.equal(
    ok.body,
    '{\n\t"service": {\n\t\t"namespace": "ns1",\n\t\t"name": "svc1"\n\t},\n\t"localEndpoints": 2,\n\t"serviceProxyHealthy": true\n}',
  );
  assert.equal(serviceHealthResponse({ namespace: "ns1", name: "svc1" }, 0, true).status, 503);
  const unhealthy = serviceHealthResponse({ namespace: "ns1", name: "svc1" }, 3, false);
  assert.equal(unhealthy.status, 503);
  assert.equal(unhealthy.headers["X-Load-Balancing-Endpoint-Weight"], "3");
  assert.match(unhealthy.body, /"serviceProxyHealthy": false\n}$/);
});

test("metrics server handler: /metrics, /healthz, /proxyMode, /configz, 404", async () => {
  const registry = new Registry();
  createProxyMetrics(registry);
  const handler = metricsServerHandler({ registry, proxyMode: "iptables", config: { mode: "iptables" } });
  const m = await handler({ method: "GET", path: "/metrics" });
  assert.equal(m.status, 200);
  assert.equal(m.headers["Content-Type"], "text/plain; version=0.0.4; charset=utf-8");
  assert.match(m.body, /^# TYPE kubeproxy_sync_proxy_rules_duration_seconds histogram$/m);
  const h = await handler({ method: "GET", path: "/healthz" });
  assert.deepEqual([h.status, h.body], [200, "ok"]);
  const pm = await handler({ method: "GET", path: "/proxyMode" });
  assert.deepEqual(
    [pm.status, pm.body, pm.headers["Content-Type"]],
    [200, "iptables", "text/plain; charset=utf-8"],
  );
  const cz = await handler({ method: "GET", path: "/configz" });
  assert.deepEqual(cz.headers, jsonHeaders);
  assert.equal(cz.body, '{"kubeproxy.config.k8s.io":{"mode":"iptables"}}');
  assert.equal((await handler({ method: "GET", path: "/nope" })).status, 404);
});

test("wildcard bind addresses listen dual-stack, as Go does", () => {
  assert.equal(listenHost("0.0.0.0"), undefined);
  assert.equal(listenHost("::"), undefined);
  assert.equal(listenHost(""), undefined);
  assert.equal(listenHost("127.0.0.1"), "127.0.0.1");
  assert.equal(listenHost("::1"), "::1");
});

test("parseHostPort", () => {
  assert.deepEqual(parseHostPort("0.0.0.0:10256"), { host: "0.0.0.0", port: 10256 });
  assert.deepEqual(parseHostPort("[::1]:10249"), { host: "::1", port: 10249 });
  assert.throws(() => parseHostPort("10256"), ListenError);
  assert.throws(() => parseHostPort("h:99999"), ListenError);
});

test("real listen: health server and metrics server on 127.0.0.1:0", async () => {
  const { health, registry } = setup();
  const metrics = createProxyMetrics(registry);
  health.setNode({ deleting: false, toBeDeletedTaint: false });
  health.updated("IPv4");
  const hz = await serveProxyHealth({ health, metrics }, "127.0.0.1:0");
  const ms = await serveMetrics({ registry, proxyMode: "iptables", config: {} }, "127.0.0.1:0");
  try {
    const r = await fetch(`http://127.0.0.1:${hz.address.port}/healthz?verbose=1`);
    assert.equal(r.status, 200);
    assert.equal(r.headers.get("x-content-type-options"), "nosniff");
    assert.equal(r.headers.get("content-type"), "application/json");
    assert.equal(((await r.json()) as { nodeEligible: boolean }).nodeEligible, true);
    const l = await fetch(`http://127.0.0.1:${hz.address.port}/livez`);
    assert.equal(l.status, 200);
    await l.text();

    const m = await fetch(`http://127.0.0.1:${ms.address.port}/metrics`);
    assert.equal(m.status, 200);
    assert.match(await m.text(), /^kubeproxy_proxy_healthz_total\{code="200"\} 1$/m);
    const pm = await fetch(`http://127.0.0.1:${ms.address.port}/proxyMode`);
    assert.equal(await pm.text(), "iptables");

    await assert.rejects(serveProxyHealth({ health }, `127.0.0.1:${hz.address.port}`), ListenError);
  } finally {
    await hz.close();
    await ms.close();
  }
});

/** A free port on 127.0.0.1, found by binding and releasing it. */
async function freePort(): Promise<number> {
  const srv = net.createServer();
  await new Promise<void>((resolve) => srv.listen(0, "127.0.0.1", resolve));
  const port = (srv.address() as net.AddressInfo).port;
  await new Promise<void>((resolve) => srv.close(() => resolve()));
  return port;
}

test("real listen: service health checks open, answer, move and close; bind failures are reported", async () => {
  let healthy = true;
  const failures: string[] = [];
  const server = new ServiceHealthServer({
    proxyHealth: { isHealthy: () => healthy },
    nodeIPs: ["127.0.0.1"],
    hostname: "node-1",
    onListenError: (_svc, message) => failures.push(message),
  });
  const blocker = net.createServer();
  await new Promise<void>((resolve) => blocker.listen(0, "127.0.0.1", resolve));
  const takenPort = (blocker.address() as net.AddressInfo).port;
  try {
    const port = await freePort();
    const a = { namespace: "ns", name: "a", port };
    const b = { namespace: "ns", name: "b", port: takenPort };
    await server.sync([a, b]);
    assert.deepEqual(server.addresses(a), [`127.0.0.1:${port}`]);
    assert.deepEqual(server.addresses(b), []);
    assert.equal(failures.length, 1);
    assert.match(
      failures[0] ?? "",
      new RegExp(`^node node-1 failed to start healthcheck "ns/b" on port ${takenPort}: `),
    );

    let r = await fetch(`http://127.0.0.1:${port}/any/path`);
    assert.equal(r.status, 503, "no local endpoints yet");
    assert.equal(r.headers.get("x-load-balancing-endpoint-weight"), "0");
    await r.text();

    server.syncEndpoints(new Map([["ns/a", 2]]));
    r = await fetch(`http://127.0.0.1:${port}/`);
    assert.equal(r.status, 200);
    assert.equal(r.headers.get("x-load-balancing-endpoint-weight"), "2");
    assert.deepEqual(JSON.parse(await r.text()), {
      service: { namespace: "ns", name: "a" },
      localEndpoints: 2,
      serviceProxyHealthy: true,
    });

    healthy = false;
    r = await fetch(`http://127.0.0.1:${port}/`);
    assert.equal(r.status, 503, "kube-proxy unhealthy");
    await r.text();

    // The failed one is retried on the next sync, once its port is free.
    await new Promise<void>((resolve) => blocker.close(() => resolve()));
    await server.sync([a, b]);
    assert.deepEqual(server.addresses(b), [`127.0.0.1:${takenPort}`]);

    // Closing: the port stops answering.
    await server.sync([b]);
    assert.deepEqual(server.addresses(a), []);
    await assert.rejects(fetch(`http://127.0.0.1:${port}/`));
  } finally {
    await server.close();
    if (blocker.listening) await new Promise<void>((resolve) => blocker.close(() => resolve()));
  }
  assert.deepEqual(server.addresses({ namespace: "ns", name: "b" }), []);
});

test("keepServing retries a failed listen every 5s (fake clock) and closes on abort", async () => {
  const { clock, health } = setup();
  health.setNode({ deleting: false, toBeDeletedTaint: false });
  const blocker = net.createServer();
  await new Promise<void>((resolve) => blocker.listen(0, "127.0.0.1", resolve));
  const port = (blocker.address() as net.AddressInfo).port;
  const errors: unknown[] = [];
  let attempts = 0;
  let listening: (l: HttpListener) => void = () => {};
  const up = new Promise<HttpListener>((resolve) => (listening = resolve));
  let failed: () => void = () => {};
  let firstFailure = new Promise<void>((resolve) => (failed = resolve));
  const abort = new AbortController();
  const done = keepServing(
    () => {
      attempts++;
      return serveProxyHealth({ health }, `127.0.0.1:${port}`);
    },
    {
      clock,
      signal: abort.signal,
      onError: (err) => {
        errors.push(err);
        failed();
      },
      onListening: listening,
    },
  );
  try {
    await firstFailure;
    assert.equal(attempts, 1);
    assert.ok(errors[0] instanceof ListenError);
    assert.deepEqual(clock.pendingTimers(), [5000], "retry armed for 5s");

    // Still taken at the retry: fails again.
    firstFailure = new Promise<void>((resolve) => (failed = resolve));
    await clock.advance(5000); // t=5s
    await firstFailure;
    assert.equal(attempts, 2);

    // Port released: the next retry binds it.
    await new Promise<void>((resolve) => blocker.close(() => resolve()));
    await clock.advance(5000); // t=10s
    const listener = await up;
    assert.equal(attempts, 3);
    const r = await fetch(`http://127.0.0.1:${listener.address.port}/healthz`);
    assert.equal(r.status, 200);
    await r.text();
  } finally {
    abort.abort();
    await done;
    if (blocker.listening) await new Promise<void>((resolve) => blocker.close(() => resolve()));
  }
  await assert.rejects(fetch(`http://127.0.0.1:${port}/healthz`), "closed after abort");
});

test("keepServing with hardFail rejects on the first failure", async () => {
  const clock = new FakeClock();
  const abort = new AbortController();
  await assert.rejects(
    keepServing(() => Promise.reject(new ListenError("127.0.0.1:1", new Error("EADDRINUSE"))), {
      clock,
      signal: abort.signal,
      hardFail: true,
    }),
    ListenError,
  );
  assert.deepEqual(clock.pendingTimers(), []);
});
