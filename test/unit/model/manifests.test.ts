import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtemp, rm, writeFile, mkdir } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { InputError } from "../../../src/errors.ts";
import { parseManifests, readManifestPaths } from "../../../src/source/manifests.ts";
import { stringify } from "yaml";

const kubectlList = `apiVersion: v1
kind: List
items:
- apiVersion: v1
  kind: Service
  metadata:
    name: web
    namespace: default
    resourceVersion: "123"
  spec:
    clusterIP: 10.96.0.20
    clusterIPs: [10.96.0.20]
    ipFamilies: [IPv4]
    ports:
    - name: http
      port: 80
      protocol: TCP
      targetPort: 8080
    type: ClusterIP
  status:
    loadBalancer: {}
- apiVersion: discovery.k8s.io/v1
  kind: EndpointSlice
  metadata:
    name: web-abcde
    namespace: default
    labels:
      kubernetes.io/service-name: web
  addressType: IPv4
  endpoints:
  - addresses: [10.244.1.5]
    conditions: {ready: true, serving: true, terminating: false}
    nodeName: node-1
  ports:
  - name: http
    port: 8080
    protocol: TCP
- apiVersion: v1
  kind: Node
  metadata:
    name: node-1
    labels: {topology.kubernetes.io/zone: z1}
  spec:
    podCIDRs: [10.244.1.0/24]
- apiVersion: v1
  kind: Pod
  metadata: {name: p, namespace: default}
metadata:
  resourceVersion: ""
`;

test("kubectl -o yaml List: Services, EndpointSlices and Nodes; other kinds ignored", () => {
  const r = parseManifests(kubectlList, "dump.yaml");
  assert.deepEqual(r.problems, []);
  assert.deepEqual(
    r.services.map((s) => s.metadata.name),
    ["web"],
  );
  assert.equal(r.services[0]!.spec.ports[0]!.port, 80);
  assert.deepEqual(
    r.endpointSlices.map((s) => s.metadata.name),
    ["web-abcde"],
  );
  assert.deepEqual(r.nodes[0]!.spec.podCIDRs, ["10.244.1.0/24"]);
});

test("multi-document YAML, typed lists without item kinds, JSON", () => {
  const yaml = `---
apiVersion: v1
kind: Service
metadata: {name: a, namespace: ns}
spec: {clusterIP: 10.0.0.1, ports: [{port: 80}]}
---
# empty document follows
---
apiVersion: v1
kind: ServiceList
items:
- metadata: {name: b, namespace: ns}
  spec: {clusterIP: 10.0.0.2, ports: [{port: 81}]}
`;
  const r = parseManifests(yaml, "multi.yaml");
  assert.deepEqual(
    r.services.map((s) => s.metadata.name),
    ["a", "b"],
  );
  const json = JSON.stringify({
    apiVersion: "discovery.k8s.io/v1",
    kind: "EndpointSliceList",
    items: [
      {
        metadata: { name: "a-1", namespace: "ns", labels: { "kubernetes.io/service-name": "a" } },
        addressType: "IPv4",
        endpoints: [{ addresses: ["10.1.0.1"] }],
        ports: [{ name: "", port: 80 }],
      },
    ],
  });
  assert.equal(parseManifests(json, "slices.json").endpointSlices.length, 1);
});

test("bad objects become problems naming object and field; good ones still load", () => {
  const yaml = `apiVersion: v1
kind: Service
metadata: {name: bad, namespace: ns}
spec: {clusterIP: 10.0.0.1, ports: [{name: a, port: 80}, {name: b, port: 99999}]}
---
apiVersion: v1
kind: Service
metadata: {name: good, namespace: ns}
spec: {clusterIP: 10.0.0.2, ports: [{port: 80}]}
---
- just a list
---
apiVersion: discovery.k8s.io/v1beta1
kind: EndpointSlice
metadata: {name: old, namespace: ns}
addressType: IPv4
---
metadata: {name: nokind}
`;
  const r = parseManifests(yaml, "mixed.yaml");
  assert.deepEqual(
    r.services.map((s) => s.metadata.name),
    ["good"],
  );
  assert.deepEqual(
    r.problems.map((p) => `${p.object} | ${p.field}`),
    [
      "Service ns/bad | spec.ports[1].port",
      "mixed.yaml:11 | (document)",
      "mixed.yaml:13 | apiVersion",
      "mixed.yaml:18 | kind",
    ],
  );
});

test("YAML syntax errors throw InputError naming source and line", () => {
  assert.throws(
    () => parseManifests("kind: Service\nmetadata: {name: a\n---\nb: [\n", "broken.yaml"),
    (err: unknown) => {
      assert.ok(err instanceof InputError);
      assert.equal(err.code, "KPT_INPUT");
      assert.equal(err.source, "broken.yaml");
      assert.match(err.message, /^broken\.yaml: line \d+: /);
      return true;
    },
  );
});

test("readManifestPaths: files and directories (yaml/yml/json, sorted, not recursive)", async () => {
  const dir = await mkdtemp(join(tmpdir(), "kpt-manifests-"));
  try {
    const svcDoc = (n: string, ip: string) =>
      `apiVersion: v1\nkind: Service\nmetadata: {name: ${n}, namespace: ns}\nspec: {clusterIP: ${ip}, ports: [{port: 80}]}\n`;
    await writeFile(join(dir, "b.yaml"), svcDoc("b", "10.0.0.2"));
    await writeFile(join(dir, "a.yml"), svcDoc("a", "10.0.0.1"));
    await writeFile(
      join(dir, "c.json"),
      JSON.stringify({ apiVersion: "v1", kind: "Node", metadata: { name: "n1" } }),
    );
    await writeFile(join(dir, "notes.txt"), "not: [valid");
    await mkdir(join(dir, "sub"));
    await writeFile(join(dir, "sub", "d.yaml"), svcDoc("d", "10.0.0.4"));
    const r = await readManifestPaths([dir, join(dir, "sub", "d.yaml")]);
    assert.deepEqual(
      r.services.map((s) => s.metadata.name),
      ["a", "b", "d"],
    );
    assert.equal(r.nodes.length, 1);
    await assert.rejects(readManifestPaths([join(dir, "missing.yaml")]), InputError);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test("parseManifests: JSON, block YAML and flow YAML of the same objects decode alike; JSON problems name the line it starts on", () => {
  const svc = {
    apiVersion: "v1",
    kind: "Service",
    metadata: { name: "web", namespace: "default" },
    spec: { clusterIP: "10.96.0.10", ports: [{ name: "http", port: 80, protocol: "TCP" }] },
  };
  const json = parseManifests(JSON.stringify(svc, null, 2), "a.json");
  const block = parseManifests(stringify(svc), "a.yaml");
  const flow = parseManifests(stringify(svc, { collectionStyle: "flow" }), "b.yaml");
  assert.equal(json.services.length, 1);
  assert.deepEqual(block.services, json.services);
  assert.deepEqual(flow.services, json.services);
  const bad = parseManifests("\n\n[1, 2]\n", "bad.json");
  assert.equal(bad.services.length, 0);
  assert.match(bad.problems[0]?.message ?? "", /bad\.json:3/);
});
