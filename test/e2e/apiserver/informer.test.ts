import { after, afterEach, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import fc from "fast-check";
import { KubeClient, NODES, SERVICES } from "../../../src/k8s/client.ts";
import { Informer, PROXY_LABEL_SELECTOR, SERVICE_FIELD_SELECTOR } from "../../../src/k8s/informer.ts";
import type { InformerNotice, KubeObject } from "../../../src/k8s/informer.ts";
import { loadKubeconfig } from "../../../src/k8s/kubeconfig.ts";
import { node, service, startSecureServer, waitFor } from "../../support/apiserver-fixtures.ts";
import type { SecureServer } from "../../support/apiserver-fixtures.ts";

const FAST_BACKOFF = { initialMs: 50, maxMs: 200, factor: 2, jitter: 0.5, resetAfterMs: 10_000 };

/** Replays handler calls into a map, the way a consumer would, and records the call log. */
class Recorder {
  readonly view = new Map<string, string>();
  readonly calls: string[] = [];
  synced = 0;
  readonly handlers = {
    onAdd: (o: KubeObject) => {
      assert.ok(!this.view.has(o.meta.name), `add of known ${o.meta.name}`);
      this.view.set(o.meta.name, o.meta.resourceVersion);
      this.calls.push(`add ${o.meta.name}`);
    },
    onUpdate: (old: KubeObject, o: KubeObject) => {
      assert.equal(this.view.get(old.meta.name), old.meta.resourceVersion, "update names the object we had");
      this.view.set(o.meta.name, o.meta.resourceVersion);
      this.calls.push(`update ${o.meta.name}`);
    },
    onDelete: (o: KubeObject) => {
      assert.ok(this.view.delete(o.meta.name), `delete of unknown ${o.meta.name}`);
      this.calls.push(`delete ${o.meta.name}`);
    },
    onSynced: () => {
      this.synced++;
    },
  };
}

function serverView(s: SecureServer, names: string[]): Map<string, string> {
  const out = new Map<string, string>();
  for (const n of names) {
    const obj = s.server.get("Service", "default", n) as
      { metadata: { resourceVersion: string } } | undefined;
    if (obj) out.set(n, obj.metadata.resourceVersion);
  }
  return out;
}

describe("Informer against the test apiserver", () => {
  let s: SecureServer;
  let client: KubeClient;
  let abort: AbortController;
  let running: Promise<void> | undefined;
  const notices: InformerNotice[] = [];

  before(async () => {
    s = await startSecureServer({ bookmarkIntervalMs: 200 });
    client = new KubeClient(await loadKubeconfig(s.kubeconfig), { qps: 0 });
  });
  after(async () => {
    client.close();
    await s.close();
  });
  afterEach(async () => {
    abort.abort();
    await running;
    for (const n of ["a", "b", "c", "d", "e", "f", "headless"]) s.server.remove("Service", "default", n);
    notices.length = 0;
  });

  function start(rec: Recorder, extra: { idleTimeoutMs?: number; pageSize?: number } = {}): Informer {
    abort = new AbortController();
    const informer = new Informer(client, SERVICES, rec.handlers, {
      labelSelector: PROXY_LABEL_SELECTOR,
      fieldSelector: SERVICE_FIELD_SELECTOR,
      backoff: FAST_BACKOFF,
      onNotice: (n) => notices.push(n),
      ...extra,
    });
    running = informer.run(abort.signal);
    return informer;
  }

  test("lists in pages, reports synced once, then follows adds, updates and deletes", async () => {
    s.server.put(service("a"));
    s.server.put(service("b"));
    s.server.put(service("c"));
    s.server.put(service("headless", { clusterIP: "None" }));
    const rec = new Recorder();
    const informer = start(rec, { pageSize: 2 });
    await waitFor("sync", () => informer.hasSynced);
    assert.equal(rec.synced, 1);
    assert.deepEqual([...rec.view.keys()].sort(), ["a", "b", "c"]);
    s.server.put(service("d"));
    s.server.put(service("a", { labels: { x: "y" } }));
    s.server.remove("Service", "default", "b");
    s.server.put(service("e", { labels: { "service.kubernetes.io/service-proxy-name": "other" } }));
    await waitFor("watch events", () => rec.calls.length === 6);
    assert.deepEqual(rec.calls.slice(3), ["add d", "update a", "delete b"]);
    assert.deepEqual(rec.view, serverView(s, ["a", "b", "c", "d"]), "e is another proxy's service");
    const watch = s.server.requests.find((r) => r.query.get("watch") === "true");
    assert.equal(watch?.query.get("allowWatchBookmarks"), "true");
    const timeout = Number(watch?.query.get("timeoutSeconds"));
    assert.ok(timeout >= 300 && timeout < 600, `watch timeout ${timeout}s within client-go's 5–10 min`);
  });

  test("410 Gone relists and converges without losing deletes made while disconnected", async () => {
    for (const n of ["a", "b", "c"]) s.server.put(service(n));
    const mark = s.server.requests.length;
    const rec = new Recorder();
    const informer = start(rec);
    await waitFor("sync", () => informer.hasSynced);
    s.server.stallWatches();
    s.server.remove("Service", "default", "a");
    s.server.put(service("b", { labels: { changed: "yes" } }));
    s.server.put(service("d"));
    s.server.expireResourceVersions();
    s.server.dropWatches();
    await waitFor("relist", () => notices.some((n) => n.kind === "relist"));
    await waitFor("converged", () => rec.view.size === 3 && !rec.view.has("a"));
    assert.deepEqual(rec.view, serverView(s, ["a", "b", "c", "d"]));
    assert.ok(rec.calls.includes("delete a"), "the delete was seen through the relist");
    assert.equal(rec.synced, 1, "synced is reported once");
    const lists = s.server.requests
      .slice(mark)
      .filter((r) => r.path === "/api/v1/services" && !r.query.has("watch"));
    assert.equal(lists.length, 2);
    assert.equal(lists[1]?.query.get("resourceVersion"), null, "the relist is a consistent read");
  });

  test("a dropped watch reconnects from the last resourceVersion without a relist", async () => {
    s.server.put(service("a"));
    const mark = s.server.requests.length;
    const rec = new Recorder();
    const informer = start(rec);
    await waitFor("sync", () => informer.hasSynced);
    await waitFor("watching", () => s.server.activeWatches === 1);
    const rvBefore = informer.resourceVersion;
    assert.equal(s.server.dropWatches(), 1);
    s.server.put(service("b"));
    await waitFor("event after reconnect", () => rec.view.has("b"));
    const watches = s.server.requests.slice(mark).filter((r) => r.query.get("watch") === "true");
    assert.ok(watches.length >= 2);
    assert.equal(watches[1]?.query.get("resourceVersion"), rvBefore);
    assert.ok(notices.some((n) => n.kind === "watch-failed"));
    assert.ok(!notices.some((n) => n.kind === "relist"));
  });

  test("a stalled watch is detected by silence and replaced; bookmarks keep a healthy one alive", async () => {
    s.server.put(service("a"));
    const rec = new Recorder();
    const informer = start(rec, { idleTimeoutMs: 1000 });
    await waitFor("sync", () => informer.hasSynced);
    await new Promise((r) => setTimeout(r, 1500));
    assert.ok(
      !notices.some((n) => n.kind === "watch-failed"),
      "200 ms bookmarks keep a 1 s idle limit happy",
    );
    assert.ok(
      Number(informer.resourceVersion) >= Number(s.server.resourceVersion),
      "bookmarks advance the version",
    );
    s.server.stallWatches();
    s.server.put(service("b"));
    await waitFor("stall noticed", () => notices.some((n) => n.kind === "watch-failed"), 3000);
    await waitFor("event after re-watch", () => rec.view.has("b"), 3000);
  });

  test("500s on list back off with jitter and recover; 429 Retry-After is honoured", async () => {
    s.server.put(service("a"));
    s.server.failRequests(3, 500, { pathIncludes: "/services", when: (r) => !r.query.has("watch") });
    const rec = new Recorder();
    const started = Date.now();
    const informer = start(rec);
    await waitFor("sync after failures", () => informer.hasSynced, 5000);
    const delays = notices.flatMap((n) => (n.kind === "list-failed" ? [n.retryInMs] : []));
    assert.equal(delays.length, 3);
    assert.ok(
      delays.every((d, i) => d >= 50 * 2 ** i && d <= 50 * 2 ** i * 1.5),
      `delays ${delays.join(",")}`,
    );
    assert.ok(Date.now() - started >= 50 + 100 + 200);
    s.server.failRequests(1, 429, { retryAfterSeconds: 1, when: (r) => r.query.get("watch") === "true" });
    s.server.dropWatches();
    s.server.put(service("b"));
    const t = Date.now();
    await waitFor("recovered", () => rec.view.has("b"), 5000);
    assert.ok(Date.now() - t >= 900, "waited for Retry-After");
  });

  test("property: any mix of changes, dropped/stalled watches, compaction and 500s converges", async () => {
    const names = ["a", "b", "c", "d"];
    const op = fc.oneof(
      fc.record({ kind: fc.constant("put" as const), name: fc.constantFrom(...names), v: fc.nat(3) }),
      fc.record({ kind: fc.constant("remove" as const), name: fc.constantFrom(...names) }),
      fc.constant({ kind: "drop" as const }),
      fc.constant({ kind: "stall" as const }),
      fc.constant({ kind: "expire" as const }),
      fc.constant({ kind: "fail" as const }),
    );
    await fc.assert(
      fc.asyncProperty(fc.array(op, { maxLength: 16 }), async (ops) => {
        for (const n of names) s.server.put(service(n));
        const rec = new Recorder();
        const informer = start(rec, { idleTimeoutMs: 400, pageSize: 2 });
        try {
          await waitFor("sync", () => informer.hasSynced);
          for (const o of ops) {
            if (o.kind === "put") s.server.put(service(o.name, { labels: { v: String(o.v) } }));
            else if (o.kind === "remove") s.server.remove("Service", "default", o.name);
            else if (o.kind === "drop") s.server.dropWatches();
            else if (o.kind === "stall") s.server.stallWatches();
            else if (o.kind === "expire") s.server.expireResourceVersions();
            else s.server.failRequests(1, 500, { pathIncludes: "/services" });
            await new Promise((r) => setTimeout(r, 5));
          }
          await waitFor(
            "convergence",
            () => JSON.stringify([...rec.view].sort()) === JSON.stringify([...serverView(s, names)].sort()),
            8000,
          );
        } finally {
          abort.abort();
          await running;
          for (const n of names) s.server.remove("Service", "default", n);
        }
      }),
      { numRuns: 20 },
    );
  });

  test("the own Node by field selector", async () => {
    s.server.put(node("node-a", { zone: "z1" }));
    s.server.put(node("node-b"));
    const seen: string[] = [];
    abort = new AbortController();
    const informer = new Informer(
      client,
      NODES,
      {
        onAdd: (o) => void seen.push(`add ${o.meta.name}`),
        onUpdate: (_o, n) => void seen.push(`update ${n.meta.name}`),
        onDelete: (o) => void seen.push(`delete ${o.meta.name}`),
        onSynced: () => undefined,
      },
      { fieldSelector: "metadata.name=node-a", backoff: FAST_BACKOFF },
    );
    running = informer.run(abort.signal);
    await waitFor("sync", () => informer.hasSynced);
    s.server.put(node("node-b", { zone: "z2" }));
    s.server.put(node("node-a", { zone: "z2" }));
    await waitFor("update", () => seen.length === 2);
    assert.deepEqual(seen, ["add node-a", "update node-a"]);
    s.server.remove("Node", undefined, "node-a");
    s.server.remove("Node", undefined, "node-b");
    await waitFor("delete", () => seen.length === 3);
    assert.equal(seen[2], "delete node-a");
  });
});
