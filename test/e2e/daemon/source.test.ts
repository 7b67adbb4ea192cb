import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { pino } from "pino";
import { Registry } from "prom-client";
import { KubeClient } from "../../../src/k8s/client.ts";
import { buildRestConfig } from "../../../src/k8s/kubeconfig.ts";
import type { EndpointSlice, Node, Service } from "../../../src/k8s/objects.ts";
import { ApiServerSource } from "../../../src/source/apiserver.ts";
import { TestApiServer } from "../../support/apiserver.ts";
import { endpointSlice, nodeObject, service } from "../../support/daemon.ts";
import { waitFor } from "../../support/apiserver-fixtures.ts";

/*
 * ApiServerSource against the in-process test apiserver (no kernel): what reaches the proxy's
 * handlers, when the first sync is declared, and what API trouble leaves in logs and metrics.
 */

interface Seen {
  services: Map<string, Service>;
  slices: Map<string, EndpointSlice>;
  node: Node | null;
  synced: boolean;
  events: string[];
  /** Every onServiceCIDRs call, in order. */
  serviceCIDRs: (readonly string[] | null)[];
}

function recorder(): Seen & { handlers: Parameters<ApiServerSource["start"]>[0] } {
  const seen: Seen = {
    services: new Map(),
    slices: new Map(),
    node: null,
    synced: false,
    events: [],
    serviceCIDRs: [],
  };
  const track = <T extends { metadata: { namespace?: string | null; name: string } }>(
    map: Map<string, T>,
    kind: string,
    previous: T | null,
    current: T | null,
  ) => {
    const obj = (current ?? previous)!;
    const key = `${obj.metadata.namespace}/${obj.metadata.name}`;
    const op = previous === null ? "add" : current === null ? "delete" : "update";
    seen.events.push(`${op} ${kind} ${key}`);
    if (op !== "add")
      assert.deepEqual(map.get(key), previous, `${op} ${key}: previous is what was delivered`);
    if (current === null) map.delete(key);
    else map.set(key, current);
  };
  return Object.assign(seen, {
    handlers: {
      onService: (a: Service | null, b: Service | null) => track(seen.services, "Service", a, b),
      onEndpointSlice: (a: EndpointSlice | null, b: EndpointSlice | null) =>
        track(seen.slices, "EndpointSlice", a, b),
      onNode: (n: Node | null) => {
        seen.node = n;
        seen.events.push(`node ${n?.metadata.name ?? "deleted"}`);
      },
      onServiceCIDRs: (cidrs: readonly string[] | null) => void seen.serviceCIDRs.push(cidrs),
      onSynced: () => {
        seen.synced = true;
        seen.events.push("synced");
      },
    },
  });
}

describe("ApiServerSource", () => {
  let server: TestApiServer;
  let client: KubeClient;
  const logLines: string[] = [];
  const log = pino({ level: "debug" }, { write: (line: string) => void logLines.push(line) });

  before(async () => {
    server = await TestApiServer.start({ allowAnonymous: true });
    client = new KubeClient(await buildRestConfig({ master: server.url }), { qps: 0 });
  });

  after(async () => {
    client.close();
    await server.stop();
  });

  it("delivers proxied Services and slices, skips headless, other proxies' and invalid objects, and waits for the Node", async () => {
    server.put(service({ name: "web", clusterIP: "10.1.0.10", ports: [{ port: 80 }] }));
    server.put(
      endpointSlice({
        service: "web",
        endpoints: [{ ip: "10.244.0.5", node: "node-1" }],
        ports: [{ port: 80 }],
      }),
    );
    const headless = service({ name: "headless", clusterIP: "None", ports: [{ port: 80 }] }) as {
      spec: Record<string, unknown>;
    };
    headless.spec["clusterIPs"] = ["None"];
    server.put(headless);
    const other = service({ name: "other", clusterIP: "10.1.0.11", ports: [{ port: 80 }] }) as {
      metadata: Record<string, unknown>;
    };
    other.metadata["labels"] = { "service.kubernetes.io/service-proxy-name": "someone-else" };
    server.put(other);
    const broken = service({ name: "broken", clusterIP: "10.1.0.12", ports: [{ port: 80 }] }) as {
      spec: { ports: Record<string, unknown>[] };
    };
    broken.spec.ports[0]!["port"] = "eighty";
    server.put(broken);

    const seen = recorder();
    const stop = new AbortController();
    const source = new ApiServerSource({
      client,
      nodeName: "node-1",
      log,
      nodeWaitMs: 10_000,
      registry: new Registry(),
    });
    const done = source.start(seen.handlers, stop.signal);
    try {
      await waitFor("the lists", () => seen.services.size === 1 && seen.slices.size === 1);
      await new Promise((r) => setTimeout(r, 300));
      assert.equal(seen.synced, false, "synced before the Node object existed");
      server.put(nodeObject({ name: "node-2", ips: ["192.168.50.2"], podCIDRs: ["10.244.1.0/24"] }));
      server.put(nodeObject({ name: "node-1", ips: ["192.168.50.1"], podCIDRs: ["10.244.0.0/24"] }));
      await waitFor("synced", () => seen.synced);
      assert.deepEqual([...seen.services.keys()], ["default/web"]);
      assert.equal(seen.node?.metadata.name, "node-1");
      assert.deepEqual(seen.node?.status.addresses[0], { type: "InternalIP", address: "192.168.50.1" });
      const skipped = logLines
        .map((l) => JSON.parse(l) as Record<string, unknown>)
        .find((l) => l["field"] !== undefined);
      assert.equal(skipped?.["field"], "spec.ports[0].port", JSON.stringify(skipped));
      assert.match(String(skipped?.["object"]), /default\/broken/);

      // A Service that becomes invalid is withdrawn; fixed, it comes back.
      const bad = service({ name: "web", clusterIP: "10.1.0.10", ports: [{ port: 80 }] }) as {
        spec: { ports: Record<string, unknown>[] };
      };
      bad.spec.ports[0]!["protocol"] = 7;
      server.put(bad);
      await waitFor("the invalid update to withdraw the Service", () => seen.services.size === 0);
      server.put(service({ name: "web", clusterIP: "10.1.0.10", ports: [{ port: 80 }] }));
      await waitFor("the Service to come back", () => seen.services.size === 1);
      server.remove("Node", undefined, "node-1");
      await waitFor("the Node deletion", () => seen.node === null);
    } finally {
      stop.abort();
      await done;
    }
  });

  it("counts relists and failures in its metric", async () => {
    const registry = new Registry();
    const seen = recorder();
    const stop = new AbortController();
    server.put(nodeObject({ name: "node-1", ips: ["192.168.50.1"], podCIDRs: ["10.244.0.0/24"] }));
    const source = new ApiServerSource({
      client,
      nodeName: "node-1",
      log,
      registry,
      informer: { backoff: { initialMs: 50, maxMs: 200, factor: 2, jitter: 0, resetAfterMs: 1_000 } },
    });
    const done = source.start(seen.handlers, stop.signal);
    try {
      await waitFor("synced", () => seen.synced);
      server.stallWatches();
      server.remove("Service", "default", "web");
      server.expireResourceVersions();
      server.failRequests(1, 500, { method: "GET", when: (r) => r.query.get("watch") === "true" });
      server.dropWatches();
      await waitFor("the lost delete to be found by the relist", () => seen.services.size === 0, 10_000);
      const text = await registry.metrics();
      assert.match(text, /kubeproxy_ts_informer_notices_total\{resource="services",kind="relist"\} [1-9]/);
      assert.match(
        text,
        /kubeproxy_ts_informer_notices_total\{resource="[a-z]+",kind="watch-failed"\} [1-9]/,
      );
      assert.deepEqual(
        seen.events.filter((e) => e.includes("default/web")).at(-1),
        "delete Service default/web",
      );
    } finally {
      stop.abort();
      await done;
    }
  });

  it("reports the ServiceCIDRs' union once listed and after each change, and null where the API has none", async () => {
    const serviceCIDR = (name: string, cidrs: string[]) => ({
      apiVersion: "networking.k8s.io/v1",
      kind: "ServiceCIDR",
      metadata: { name },
      spec: { cidrs },
    });
    server.put(serviceCIDR("kubernetes", ["10.96.0.0/16", "fd00:10:96::/112"]));
    const seen = recorder();
    const stop = new AbortController();
    const source = new ApiServerSource({ client, nodeName: "node-1", log, nodeWaitMs: 0 });
    const done = source.start(seen.handlers, stop.signal);
    try {
      await waitFor("the first CIDRs", () => seen.serviceCIDRs.length === 1);
      assert.deepEqual(seen.serviceCIDRs[0], ["10.96.0.0/16", "fd00:10:96::/112"]);
      server.put(serviceCIDR("extra", ["10.100.0.0/24"]));
      await waitFor("the added CIDR", () => seen.serviceCIDRs.length === 2);
      assert.deepEqual(seen.serviceCIDRs[1], ["10.100.0.0/24", "10.96.0.0/16", "fd00:10:96::/112"]);
      server.remove("ServiceCIDR", undefined, "kubernetes");
      await waitFor("the deletion", () => seen.serviceCIDRs.length === 3);
      assert.deepEqual(seen.serviceCIDRs[2], ["10.100.0.0/24"]);
    } finally {
      stop.abort();
      await done;
      server.remove("ServiceCIDR", undefined, "extra");
    }

    const old = await TestApiServer.start({ allowAnonymous: true, serviceCIDRs: false });
    const oldClient = new KubeClient(await buildRestConfig({ master: old.url }), { qps: 0 });
    const onOld = recorder();
    const stopOld = new AbortController();
    const doneOld = new ApiServerSource({ client: oldClient, nodeName: "node-1", log, nodeWaitMs: 0 }).start(
      onOld.handlers,
      stopOld.signal,
    );
    try {
      await waitFor("synced", () => onOld.synced && onOld.serviceCIDRs.length === 1);
      assert.deepEqual(onOld.serviceCIDRs, [null]);
      await new Promise((r) => setTimeout(r, 300));
      const cidrLists = old.requests.filter((r) => r.path.includes("servicecidrs"));
      assert.equal(cidrLists.length, 1, "a 404 is not retried");
    } finally {
      stopOld.abort();
      await doneOld;
      oldClient.close();
      await old.stop();
    }
  });
});
