import { test } from "node:test";
import assert from "node:assert/strict";
import { FakeClock } from "../../../src/proxy/clock.ts";
import {
  ProxyHealth,
  ServiceHealth,
  formatGoTime,
  healthTimeoutForSyncPeriod,
  proxyHealthJSON,
} from "../../../src/proxy/health.ts";

const syncPeriod = 30_000;
const start = Date.UTC(2024, 0, 2, 3, 4, 5, 123);

function setup(): { clock: FakeClock; health: ProxyHealth } {
  const clock = new FakeClock(start);
  return { clock, health: new ProxyHealth(healthTimeoutForSyncPeriod(syncPeriod), clock) };
}

test("formatGoTime prints Go's RFC3339Nano JSON form", () => {
  assert.equal(formatGoTime(null), "0001-01-01T00:00:00Z");
  assert.equal(formatGoTime(Date.UTC(2024, 0, 2, 3, 4, 5)), "2024-01-02T03:04:05Z");
  assert.equal(formatGoTime(Date.UTC(2024, 0, 2, 3, 4, 5, 120)), "2024-01-02T03:04:05.12Z");
  assert.equal(formatGoTime(Date.UTC(2024, 0, 2, 3, 4, 5, 7)), "2024-01-02T03:04:05.007Z");
  assert.equal(formatGoTime(Date.UTC(2024, 0, 2, 3, 4, 5, 123) + 0.456), "2024-01-02T03:04:05.123456Z");
});

test("healthTimeout is twice the sync period", () => {
  assert.equal(healthTimeoutForSyncPeriod(30_000), 60_000);
});

test("a family is unhealthy only once a queued update is pending for >= healthTimeout", async () => {
  const { clock, health } = setup();
  // Before the first Updated(): nothing judged, healthy.
  assert.equal(health.isHealthy(), true);
  health.queuedUpdate("IPv4");
  await clock.advance(120_000);
  assert.equal(health.isHealthy(), true, "a family never updated is still starting up");

  health.updated("IPv4"); // t=120s
  health.queuedUpdate("IPv4");
  await clock.advance(59_999); // t=179.999s, pending for 59.999s
  assert.equal(health.isHealthy(), true);
  health.queuedUpdate("IPv4"); // later queued updates do not move the oldest one
  await clock.advance(1); // t=180s, pending for exactly healthTimeout
  assert.equal(health.isHealthy(), false);

  health.updated("IPv4");
  assert.equal(health.isHealthy(), true, "Updated clears the pending update");
});

test("one late family makes the whole proxy unhealthy; status reports each family", async () => {
  const { clock, health } = setup();
  health.updated("IPv6"); // t=0
  health.updated("IPv4");
  await clock.advance(1000);
  health.queuedUpdate("IPv6"); // t=1s
  health.updated("IPv4");
  await clock.advance(60_000); // t=61s
  const report = health.health();
  assert.equal(report.healthy, false);
  assert.equal(report.lastUpdated, start + 1000);
  assert.deepEqual(report.status.get("IPv4"), { lastUpdated: start + 1000, healthy: true });
  assert.deepEqual(report.status.get("IPv6"), { lastUpdated: start, healthy: false });
});

test("node eligibility: unknown, deleting or tainted nodes are not eligible", () => {
  const { health } = setup();
  assert.equal(health.nodeEligible(), false, "unknown Node");
  health.setNode({ deleting: false, toBeDeletedTaint: false });
  assert.equal(health.nodeEligible(), true);
  health.setNode({ deleting: true, toBeDeletedTaint: false });
  assert.equal(health.nodeEligible(), false);
  health.setNode({ deleting: false, toBeDeletedTaint: true });
  assert.equal(health.nodeEligible(), false);
  health.setNode(null);
  assert.equal(health.nodeEligible(), false);
});

test("proxyHealthJSON has upstream's field order, omitempty status and sorted family keys", async () => {
  const { clock, health } = setup();
  assert.equal(
    proxyHealthJSON(health.health()),
    '{"lastUpdated":"0001-01-01T00:00:00Z","currentTime":"2024-01-02T03:04:05.123Z","healthy":true}',
  );
  health.updated("IPv6");
  await clock.advance(1);
  health.updated("IPv4");
  assert.equal(
    proxyHealthJSON(health.health(), false),
    '{"lastUpdated":"2024-01-02T03:04:05.124Z","currentTime":"2024-01-02T03:04:05.124Z","nodeEligible":false,' +
      '"healthy":true,"status":{"IPv4":{"lastUpdated":"2024-01-02T03:04:05.124Z","healthy":true},' +
      '"IPv6":{"lastUpdated":"2024-01-02T03:04:05.123Z","healthy":true}}}',
  );
});

test("ServiceHealth: open/close diff, failed opens retried, endpoint counts", () => {
  const sh = new ServiceHealth();
  const a = { namespace: "ns", name: "a", port: 30001 };
  const b = { namespace: "ns", name: "b", port: 30002 };
  let changes = sh.syncServices([a, b]);
  assert.deepEqual(changes, { open: [a, b], close: [] });
  sh.opened(a); // b failed to listen

  changes = sh.syncServices([a, b]);
  assert.deepEqual(changes, { open: [b], close: [] }, "b is retried, a left alone");
  sh.opened(b);

  sh.syncEndpoints(new Map([["ns/a", 2]]));
  assert.equal(sh.localEndpoints("ns/a"), 2);
  assert.equal(sh.localEndpoints("ns/b"), 0, "not listed → 0");
  assert.equal(sh.localEndpoints("ns/c"), undefined);

  const aMoved = { ...a, port: 30003 };
  changes = sh.syncServices([aMoved]);
  assert.deepEqual(changes, { open: [aMoved], close: [a, b] });
  assert.deepEqual(sh.list(), []);
  sh.opened(aMoved);
  assert.equal(sh.localEndpoints("ns/a"), 0, "a reopened health check starts at 0");
  assert.deepEqual(sh.list(), [aMoved]);
});
