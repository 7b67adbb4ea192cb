import { describe, test } from "node:test";
import assert from "node:assert/strict";
import { jsonPatch, mergePatch, strategicMerge } from "../../support/apiserver-patch.ts";
import type { Json } from "../../support/apiserver-patch.ts";
import { parseFieldSelector, parseLabelSelector } from "../../support/apiserver-selectors.ts";

const withLabels = (labels: Record<string, string>): Record<string, unknown> => ({ metadata: { labels } });

describe("test apiserver selectors", () => {
  test("label selector: exists, !exists, =, ==, !=, in, notin", () => {
    const m = parseLabelSelector("!service.kubernetes.io/service-proxy-name,!service.kubernetes.io/headless");
    assert.ok(m(withLabels({ app: "x" })));
    assert.ok(!m(withLabels({ "service.kubernetes.io/headless": "" })));
    assert.ok(!m(withLabels({ "service.kubernetes.io/service-proxy-name": "other" })));
    assert.ok(parseLabelSelector("app")(withLabels({ app: "" })));
    assert.ok(parseLabelSelector("app==web,tier!=db")(withLabels({ app: "web" })));
    assert.ok(!parseLabelSelector("app=web,tier!=db")(withLabels({ app: "web", tier: "db" })));
    assert.ok(parseLabelSelector("env in (a, b),x notin (y)")(withLabels({ env: "b" })));
    assert.ok(!parseLabelSelector("env in (a,b)")(withLabels({})));
    assert.throws(() => parseLabelSelector("a=b=c"));
  });

  test("field selector: supported fields only, = and !=", () => {
    const svc = { metadata: { name: "web", namespace: "ns" }, spec: { clusterIP: "None" } };
    assert.ok(!parseFieldSelector("services", "spec.clusterIP!=None")(svc));
    assert.ok(parseFieldSelector("services", "metadata.name=web,metadata.namespace==ns")(svc));
    assert.throws(() => parseFieldSelector("services", "spec.selector=x"), /field label not supported/);
  });
});

describe("test apiserver patches", () => {
  const svc: Json = {
    metadata: { labels: { a: "1", b: "2" } },
    spec: {
      ports: [
        { name: "http", port: 80, targetPort: 8080, protocol: "TCP" },
        { name: "dns", port: 53, protocol: "UDP" },
      ],
      externalIPs: ["192.0.2.1", "192.0.2.2"],
    },
  };

  test("merge patch: null deletes, objects merge, lists replace", () => {
    assert.deepEqual(
      mergePatch(svc, { metadata: { labels: { a: null, c: "3" } }, spec: { externalIPs: ["x"] } }),
      {
        metadata: { labels: { b: "2", c: "3" } },
        spec: { ports: (svc as { spec: { ports: Json } }).spec.ports, externalIPs: ["x"] },
      },
    );
  });

  test("strategic merge: ports merge by port, $patch delete, $setElementOrder, $deleteFromPrimitiveList", () => {
    const out = strategicMerge("", svc, {
      spec: {
        "$setElementOrder/ports": [{ port: 53 }, { port: 80 }, { port: 443 }],
        ports: [
          { port: 80, targetPort: 8081 },
          { port: 443, name: "https" },
        ],
        "$deleteFromPrimitiveList/externalIPs": ["192.0.2.1"],
      },
      metadata: { labels: { $patch: "replace", z: "9" } },
    }) as {
      spec: { ports: { port: number; targetPort?: number; name: string }[]; externalIPs: string[] };
      metadata: Json;
    };
    assert.deepEqual(
      out.spec.ports.map((p) => [p.port, p.name, p.targetPort]),
      [
        [53, "dns", undefined],
        [80, "http", 8081],
        [443, "https", undefined],
      ],
    );
    assert.deepEqual(out.spec.externalIPs, ["192.0.2.2"]);
    assert.deepEqual(out.metadata, { labels: { z: "9" } });
    const removed = strategicMerge("", svc, { spec: { ports: [{ port: 53, $patch: "delete" }] } }) as {
      spec: { ports: { port: number }[] };
    };
    assert.deepEqual(
      removed.spec.ports.map((p) => p.port),
      [80],
    );
  });

  test("JSON patch: add, remove, replace, move, copy, test", () => {
    const out = jsonPatch(svc, [
      { op: "test", path: "/spec/ports/0/port", value: 80 },
      { op: "replace", path: "/spec/ports/0/port", value: 81 },
      { op: "add", path: "/metadata/labels/c", value: "3" },
      { op: "remove", path: "/metadata/labels/a" },
      { op: "copy", from: "/metadata/labels/b", path: "/metadata/labels/d" },
      { op: "move", from: "/spec/externalIPs/1", path: "/spec/externalIPs/0" },
      { op: "add", path: "/spec/externalIPs/-", value: "192.0.2.3" },
    ]) as { metadata: Json; spec: { ports: { port: number }[]; externalIPs: string[] } };
    assert.equal(out.spec.ports[0]?.port, 81);
    assert.deepEqual(out.metadata, { labels: { b: "2", c: "3", d: "2" } });
    assert.deepEqual(out.spec.externalIPs, ["192.0.2.2", "192.0.2.1", "192.0.2.3"]);
    assert.throws(
      () => jsonPatch(svc, [{ op: "test", path: "/spec/ports/0/port", value: 1 }]),
      /test operation failed/,
    );
    assert.throws(() => jsonPatch(svc, [{ op: "remove", path: "/nope/x" }]), /does not exist/);
  });
});
