import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import {
  ApiError,
  ENDPOINT_SLICES,
  KubeClient,
  NODES,
  SERVICES,
  WatchStalledError,
} from "../../../src/k8s/client.ts";
import type { WatchEvent } from "../../../src/k8s/client.ts";
import { loadKubeconfig } from "../../../src/k8s/kubeconfig.ts";
import { PROXY_LABEL_SELECTOR, SERVICE_FIELD_SELECTOR } from "../../../src/k8s/informer.ts";
import { endpointSlice, node, service, startSecureServer } from "../../support/apiserver-fixtures.ts";
import type { SecureServer } from "../../support/apiserver-fixtures.ts";

function names(items: unknown[]): string[] {
  return items.map((i) => (i as { metadata: { name: string } }).metadata.name);
}

async function take(events: AsyncGenerator<WatchEvent>, n: number): Promise<WatchEvent[]> {
  const out: WatchEvent[] = [];
  for await (const e of events) {
    out.push(e);
    if (out.length === n) break;
  }
  return out;
}

describe("KubeClient against the test apiserver", () => {
  let s: SecureServer;
  let client: KubeClient;

  before(async () => {
    s = await startSecureServer();
    client = new KubeClient(await loadKubeconfig(s.kubeconfig), { qps: 0 });
  });
  after(async () => {
    client.close();
    await s.close();
  });

  test("lists every page with limit/continue and returns the list resourceVersion", async () => {
    for (let i = 0; i < 7; i++) s.server.put(service(`svc-${i}`));
    const first = await client.list(SERVICES, { namespace: "default", limit: 3 });
    assert.equal(first.items.length, 3);
    assert.ok(first.continue);
    const all = await client.listAll(SERVICES, { limit: 3 });
    assert.deepEqual(names(all.items), ["svc-0", "svc-1", "svc-2", "svc-3", "svc-4", "svc-5", "svc-6"]);
    assert.equal(all.resourceVersion, s.server.resourceVersion);
    const pages = s.server.requests
      .filter((r) => r.path === "/api/v1/services")
      .map((r) => r.query.get("limit"));
    assert.deepEqual(pages, ["3", "3", "3"]);
    assert.equal(s.server.requests.at(-1)?.user, "kube-proxy", "authenticated by client certificate");
    for (let i = 0; i < 7; i++) s.server.remove("Service", "default", `svc-${i}`);
  });

  test("an expired continue token falls back to one unpaginated list", async () => {
    for (let i = 0; i < 4; i++) s.server.put(service(`page-${i}`));
    const first = await client.list(SERVICES, { limit: 2 });
    s.server.put(service("page-4"));
    s.server.remove("Service", "default", "page-4");
    s.server.expireResourceVersions();
    await assert.rejects(
      client.list(SERVICES, { limit: 2, continue: first.continue ?? "" }),
      (err: unknown) => {
        return err instanceof ApiError && err.status === 410 && err.isExpired;
      },
    );
    s.server.failRequests(1, 410, { when: (r) => r.query.has("continue") });
    const before = s.server.requests.length;
    const all = await client.listAll(SERVICES, { limit: 2 });
    assert.deepEqual(names(all.items), ["page-0", "page-1", "page-2", "page-3"]);
    const sent = s.server.requests.slice(before).map((r) => [r.query.get("limit"), r.query.has("continue")]);
    assert.deepEqual(
      sent,
      [
        ["2", false],
        ["2", true],
        [null, false],
      ],
      "page, expired page, full list",
    );
    for (let i = 0; i < 4; i++) s.server.remove("Service", "default", `page-${i}`);
  });

  test("upstream's label and field selectors filter services", async () => {
    s.server.put(service("plain"));
    s.server.put(service("headless-label", { labels: { "service.kubernetes.io/headless": "" } }));
    s.server.put(service("other-proxy", { labels: { "service.kubernetes.io/service-proxy-name": "foo" } }));
    s.server.put(service("headless", { clusterIP: "None" }));
    const page = await client.list(SERVICES, {
      labelSelector: PROXY_LABEL_SELECTOR,
      fieldSelector: SERVICE_FIELD_SELECTOR,
    });
    assert.deepEqual(names(page.items), ["plain"]);
    const last = s.server.requests.at(-1);
    assert.equal(last?.query.get("labelSelector"), PROXY_LABEL_SELECTOR);
    assert.equal(last?.query.get("fieldSelector"), SERVICE_FIELD_SELECTOR);
    for (const n of ["plain", "headless-label", "other-proxy", "headless"])
      s.server.remove("Service", "default", n);
  });

  test("own node by field selector, endpoint slices in their group", async () => {
    s.server.put(node("node-a"));
    s.server.put(node("node-b"));
    s.server.put(endpointSlice("web-1", "web", ["10.1.0.1"]));
    const nodes = await client.list(NODES, { fieldSelector: "metadata.name=node-b" });
    assert.deepEqual(names(nodes.items), ["node-b"]);
    const slices = await client.list(ENDPOINT_SLICES, {});
    assert.deepEqual(names(slices.items), ["web-1"]);
    assert.equal(s.server.requests.at(-1)?.path, "/apis/discovery.k8s.io/v1/endpointslices");
  });

  test("watch from a resourceVersion streams changes and bookmarks", async () => {
    const start = (await client.list(SERVICES, {})).resourceVersion;
    const abort = new AbortController();
    const events = client.watch(SERVICES, {
      resourceVersion: start,
      allowWatchBookmarks: true,
      idleTimeoutMs: 5000,
      signal: abort.signal,
    });
    const got = take(events, 4);
    const waitForWatch = async (): Promise<void> => {
      for (let i = 0; i < 100 && s.server.activeWatches === 0; i++)
        await new Promise((r) => setTimeout(r, 10));
    };
    await waitForWatch();
    s.server.put(service("w1"));
    s.server.put({
      ...(service("w1") as object),
      metadata: { name: "w1", namespace: "default", labels: { a: "b" } },
    });
    s.server.remove("Service", "default", "w1");
    s.server.sendBookmarks();
    const seen = await got;
    abort.abort();
    assert.deepEqual(
      seen.map((e) => e.type),
      ["ADDED", "MODIFIED", "DELETED", "BOOKMARK"],
    );
    const bookmark = seen[3] as { object: { metadata: { resourceVersion: string } } };
    assert.equal(bookmark.object.metadata.resourceVersion, s.server.resourceVersion);
    const req = s.server.requests.find((r) => r.query.get("watch") === "true");
    assert.equal(req?.query.get("allowWatchBookmarks"), "true");
    assert.equal(req?.query.get("resourceVersion"), start);
  });

  test("a watch from a compacted resourceVersion yields a 410 Expired ERROR event", async () => {
    const old = s.server.resourceVersion;
    s.server.put(service("bump"));
    s.server.expireResourceVersions();
    const seen = await take(client.watch(SERVICES, { resourceVersion: old, idleTimeoutMs: 5000 }), 1);
    const event = seen[0];
    assert.equal(event?.type, "ERROR");
    assert.ok(event?.type === "ERROR" && event.error.isExpired && event.error.status === 410);
    s.server.remove("Service", "default", "bump");
  });

  test("a silent watch fails with WatchStalledError after the idle limit", async () => {
    const rv = s.server.resourceVersion;
    const started = Date.now();
    const events = client.watch(SERVICES, {
      resourceVersion: rv,
      idleTimeoutMs: 300,
      allowWatchBookmarks: false,
    });
    await assert.rejects(take(events, 1), WatchStalledError);
    assert.ok(Date.now() - started < 3000);
  });

  test("the server's timeoutSeconds ends a watch cleanly", async () => {
    const events = client.watch(SERVICES, {
      resourceVersion: s.server.resourceVersion,
      timeoutSeconds: 1,
      idleTimeoutMs: 5000,
    });
    const started = Date.now();
    assert.deepEqual(await take(events, 1), []);
    assert.ok(Date.now() - started >= 900);
  });

  test("429 and 503 with Retry-After are retried after the delay; 500 without it is not", async () => {
    s.server.failRequests(2, 429, { retryAfterSeconds: 1, pathIncludes: "/nodes" });
    const started = Date.now();
    const nodes = await client.list(NODES, {});
    assert.equal(nodes.items.length, 2);
    assert.ok(Date.now() - started >= 1900, "waited Retry-After twice");
    s.server.failRequests(1, 503, { retryAfterSeconds: 0, pathIncludes: "/nodes" });
    assert.equal((await client.list(NODES, {})).items.length, 2);
    s.server.failRequests(1, 500, { pathIncludes: "/nodes" });
    await assert.rejects(
      client.list(NODES, {}),
      (err: unknown) => err instanceof ApiError && err.status === 500,
    );
    const limited = new KubeClient(client.config, { qps: 0, maxRetries: 1 });
    s.server.failRequests(3, 429, { retryAfterSeconds: 0, pathIncludes: "/nodes" });
    await assert.rejects(
      limited.list(NODES, {}),
      (err: unknown) => err instanceof ApiError && err.reason === "TooManyRequests",
    );
    limited.close();
    assert.equal((await client.list(NODES, {})).items.length, 2);
  });

  test("API errors carry the Status reason and message", async () => {
    await assert.rejects(
      client.request("GET", "/api/v1/namespaces/default/services/nope"),
      (err: unknown) => {
        assert.ok(err instanceof ApiError);
        assert.equal(err.status, 404);
        assert.equal(err.reason, "NotFound");
        assert.match(err.message, /services "nope" not found/);
        return true;
      },
    );
  });
});
