import { test } from "node:test";
import assert from "node:assert/strict";
import fc from "fast-check";
import { InvalidObjectError } from "../../../src/errors.ts";
import { decodeEndpointSlice, decodeNode, decodeService } from "../../../src/k8s/objects.ts";

function baseService(
  spec: Record<string, unknown>,
  metadata: Record<string, unknown> = {},
): Record<string, unknown> {
  return {
    apiVersion: "v1",
    kind: "Service",
    metadata: { name: "svc1", namespace: "ns1", ...metadata },
    spec: { type: "ClusterIP", clusterIP: "172.30.0.41", ports: [{ name: "p80", port: 80 }], ...spec },
  };
}

function rejects(fn: () => unknown, object: string, field: string): void {
  assert.throws(fn, (err: unknown) => {
    assert.ok(err instanceof InvalidObjectError, String(err));
    assert.equal(err.code, "KPT_INVALID_OBJECT");
    assert.equal(err.object, object);
    assert.equal(err.field, field);
    return true;
  });
}

test("a real kubectl-shaped Service decodes with API defaults and unknown fields ignored", () => {
  const s = decodeService(
    {
      apiVersion: "v1",
      kind: "Service",
      metadata: {
        name: "kube-dns",
        namespace: "kube-system",
        uid: "0b1c",
        resourceVersion: "42",
        labels: { "k8s-app": "kube-dns" },
        annotations: { "prometheus.io/port": "9153" },
        creationTimestamp: "2024-01-01T00:00:00Z",
        managedFields: [{ manager: "kubeadm" }],
      },
      spec: {
        clusterIP: "10.96.0.10",
        clusterIPs: ["10.96.0.10"],
        ipFamilies: ["IPv4"],
        ipFamilyPolicy: "SingleStack",
        internalTrafficPolicy: "Cluster",
        ports: [
          { name: "dns", port: 53, protocol: "UDP", targetPort: 53 },
          { name: "dns-tcp", port: 53, protocol: "TCP", targetPort: "dns-tcp" },
        ],
        selector: { "k8s-app": "kube-dns" },
        sessionAffinity: "None",
        type: "ClusterIP",
      },
      status: { loadBalancer: {} },
    },
    "dump.yaml",
  );
  assert.equal(s.metadata.uid, "0b1c");
  assert.equal(s.metadata.resourceVersion, "42");
  assert.equal(s.metadata.deletionTimestamp, null);
  assert.deepEqual(s.spec.ports, [
    { name: "dns", protocol: "UDP", port: 53, nodePort: 0 },
    { name: "dns-tcp", protocol: "TCP", port: 53, nodePort: 0 },
  ]);
  assert.equal(s.spec.internalTrafficPolicy, "Cluster");
  assert.equal(s.spec.externalTrafficPolicy, null);
  assert.deepEqual(s.status.loadBalancerIngress, []);
});

test("JSON null is treated as absent, as Go does", () => {
  const s = decodeService(
    baseService({ externalIPs: null, ports: [{ name: null, port: 80, protocol: null, nodePort: null }] }),
    "x",
  );
  assert.deepEqual(s.spec.externalIPs, []);
  assert.deepEqual(s.spec.ports, [{ name: "", protocol: "TCP", port: 80, nodePort: 0 }]);
});

test("Service validation names the object and the field", () => {
  rejects(
    () => decodeService(baseService({ ports: [{ name: "a", port: 0 }] }), "f"),
    "Service ns1/svc1",
    "spec.ports[0].port",
  );
  rejects(
    () =>
      decodeService(
        baseService({
          ports: [
            { name: "a", port: 80 },
            { name: "b", port: 65536 },
          ],
        }),
        "f",
      ),
    "Service ns1/svc1",
    "spec.ports[1].port",
  );
  rejects(
    () => decodeService(baseService({ ports: [{ name: "a", port: 80, nodePort: 70000 }] }), "f"),
    "Service ns1/svc1",
    "spec.ports[0].nodePort",
  );
  rejects(
    () => decodeService(baseService({ ports: [{ name: "a", port: 80, protocol: "ICMP" }] }), "f"),
    "Service ns1/svc1",
    "spec.ports[0].protocol",
  );
  rejects(
    () => decodeService(baseService({ ports: [{ name: "Bad Name", port: 80 }] }), "f"),
    "Service ns1/svc1",
    "spec.ports[0].name",
  );
  rejects(
    () => decodeService(baseService({ ports: [{ port: 80 }, { name: "b", port: 81 }] }), "f"),
    "Service ns1/svc1",
    "spec.ports[0].name",
  );
  rejects(
    () =>
      decodeService(
        baseService({
          ports: [
            { name: "a", port: 80 },
            { name: "a", port: 81 },
          ],
        }),
        "f",
      ),
    "Service ns1/svc1",
    "spec.ports[1].name",
  );
  rejects(
    () =>
      decodeService(
        baseService({
          sessionAffinity: "ClientIP",
          sessionAffinityConfig: { clientIP: { timeoutSeconds: 86401 } },
        }),
        "f",
      ),
    "Service ns1/svc1",
    "spec.sessionAffinityConfig.clientIP.timeoutSeconds",
  );
  rejects(
    () => decodeService(baseService({ clusterIP: "172.30.0.x" }), "f"),
    "Service ns1/svc1",
    "spec.clusterIP",
  );
  rejects(() => decodeService(baseService({ type: "Weird" }), "f"), "Service ns1/svc1", "spec.type");
  rejects(
    () => decodeService(baseService({ externalTrafficPolicy: "Global" }), "f"),
    "Service ns1/svc1",
    "spec.externalTrafficPolicy",
  );
});

test("names that could break a rule comment are rejected, and not echoed back", () => {
  for (const name of ["a b", 'a"b', "a\nb", "UPPER", "-a", "a_b", "", 7]) {
    rejects(
      () => decodeService(baseService({}, { name }), "file.yaml"),
      "Service in file.yaml",
      "metadata.name",
    );
  }
  const long = "x".repeat(64);
  rejects(
    () => decodeService(baseService({}, { name: long }), "file.yaml"),
    `Service ns1/${long}`,
    "metadata.name",
  );
  rejects(
    () => decodeService(baseService({}, { namespace: "n s" }), "file.yaml"),
    "Service svc1",
    "metadata.namespace",
  );
  rejects(
    () => decodeService({ kind: "Service", spec: {} }, "file.yaml"),
    "Service in file.yaml",
    "metadata",
  );
});

test("invalid IPs in externalIPs / source ranges / LB ingress are not object errors", () => {
  const s = decodeService(
    baseService(
      { externalIPs: ["bogus", " "], loadBalancerSourceRanges: ["nope"], type: "LoadBalancer" },
      {},
    ),
    "f",
  );
  assert.deepEqual(s.spec.externalIPs, ["bogus", " "]);
  const withStatus = decodeService(
    { ...baseService({}), status: { loadBalancer: { ingress: [{ ip: "x" }, { hostname: "lb.example" }] } } },
    "f",
  );
  assert.deepEqual(withStatus.status.loadBalancerIngress, [
    { ip: "x", hostname: "", ipMode: null },
    { ip: "", hostname: "lb.example", ipMode: null },
  ]);
});

test("EndpointSlice decoding: defaults, hints, validation", () => {
  const s = decodeEndpointSlice(
    {
      apiVersion: "discovery.k8s.io/v1",
      kind: "EndpointSlice",
      metadata: { name: "svc1-abcde", namespace: "ns1", labels: { "kubernetes.io/service-name": "svc1" } },
      addressType: "IPv4",
      endpoints: [
        {
          addresses: ["10.0.0.1"],
          conditions: { ready: true },
          nodeName: "node-a",
          zone: "zone-a",
          hints: { forZones: [{ name: "zone-a" }] },
          targetRef: { kind: "Pod", name: "p" },
        },
      ],
      ports: [{ name: "p80", port: 80, appProtocol: "http" }],
    },
    "f",
  );
  assert.deepEqual(s.endpoints[0], {
    addresses: ["10.0.0.1"],
    ready: true,
    serving: null,
    terminating: null,
    nodeName: "node-a",
    zone: "zone-a",
    zoneHints: ["zone-a"],
    nodeHints: null,
  });
  assert.deepEqual(s.ports, [{ name: "p80", port: 80, protocol: "TCP" }]);
  rejects(
    () =>
      decodeEndpointSlice(
        {
          metadata: { name: "s", namespace: "ns1" },
          addressType: "IPv4",
          ports: [{ name: "p", port: 99999 }],
        },
        "f",
      ),
    "EndpointSlice ns1/s",
    "ports[0].port",
  );
  rejects(
    () => decodeEndpointSlice({ metadata: { name: "s", namespace: "ns1" }, addressType: "IPv5" }, "f"),
    "EndpointSlice ns1/s",
    "addressType",
  );
  rejects(
    () =>
      decodeEndpointSlice(
        {
          metadata: { name: "s", namespace: "ns1" },
          addressType: "IPv4",
          endpoints: [{ addresses: ["1.1.1.1"], conditions: { ready: "yes" } }],
        },
        "f",
      ),
    "EndpointSlice ns1/s",
    "endpoints[0].conditions.ready",
  );
});

test("the service-name label of a slice must be a valid Service name", () => {
  const raw = (svcName: string) => ({
    metadata: { name: "s-1", namespace: "ns1", labels: { "kubernetes.io/service-name": svcName } },
    addressType: "IPv4",
  });
  assert.equal(decodeEndpointSlice(raw("web"), "f").metadata.labels["kubernetes.io/service-name"], "web");
  assert.equal(
    decodeEndpointSlice(raw(""), "f").metadata.name,
    "s-1",
    "empty is left for the tracker to report",
  );
  rejects(
    () => decodeEndpointSlice(raw('we"b -j ACCEPT'), "f"),
    "EndpointSlice ns1/s-1",
    'metadata.labels["kubernetes.io/service-name"]',
  );
});

test("Node decoding: podCIDR fallback, taints, addresses", () => {
  const n = decodeNode(
    {
      apiVersion: "v1",
      kind: "Node",
      metadata: {
        name: "node-a.example",
        labels: { "topology.kubernetes.io/zone": "z1" },
        deletionTimestamp: "2024-01-01T00:00:00Z",
      },
      spec: {
        podCIDR: "10.244.0.0/24",
        taints: [{ key: "ToBeDeletedByClusterAutoscaler", effect: "NoSchedule" }],
      },
      status: { addresses: [{ type: "InternalIP", address: "192.168.0.2" }] },
    },
    "f",
  );
  assert.deepEqual(n.spec.podCIDRs, ["10.244.0.0/24"]);
  assert.deepEqual(n.spec.taints, [
    { key: "ToBeDeletedByClusterAutoscaler", value: "", effect: "NoSchedule" },
  ]);
  assert.equal(n.metadata.deletionTimestamp, "2024-01-01T00:00:00Z");
  assert.equal(n.metadata.namespace, "");
  rejects(() => decodeNode({ metadata: { name: "Node A" } }, "f"), "Node in f", "metadata.name");
});

test("Node pod CIDRs must parse; the error names the Node and spec.podCIDRs[i]", () => {
  const node = (spec: Record<string, unknown>) => ({ kind: "Node", metadata: { name: "node-1" }, spec });
  for (const bad of ["10.0.0.0/8]X", "10.0.0.0/99", "10.0.0.1", "fd00::/129", "10.0.0.0/8 -j ACCEPT", ""]) {
    rejects(
      () => decodeNode(node({ podCIDRs: ["10.244.0.0/24", bad] }), "f"),
      "Node node-1",
      "spec.podCIDRs[1]",
    );
    if (bad !== "") rejects(() => decodeNode(node({ podCIDR: bad }), "f"), "Node node-1", "spec.podCIDR");
  }
  assert.throws(
    () => decodeNode(node({ podCIDRs: ["10.0.0.0/99"] }), "f"),
    /^InvalidObjectError: Node node-1: spec\.podCIDRs\[0\]: must be a CIDR/,
  );
  assert.deepEqual(decodeNode(node({ podCIDRs: ["10.244.0.0/24", "fd00:10::/64"] }), "f").spec.podCIDRs, [
    "10.244.0.0/24",
    "fd00:10::/64",
  ]);
  assert.deepEqual(decodeNode(node({ podCIDR: "" }), "f").spec.podCIDRs, []);
});

const dnsLabel = fc.stringMatching(/^[a-z]([a-z0-9-]{0,20}[a-z0-9])?$/);
const validService = fc.record({
  name: dnsLabel,
  namespace: dnsLabel,
  type: fc.constantFrom("ClusterIP", "NodePort", "LoadBalancer", "ExternalName", undefined),
  clusterIP: fc.oneof(fc.ipV4(), fc.ipV6(), fc.constantFrom("None", "")),
  ports: fc.uniqueArray(
    fc.record({
      name: dnsLabel,
      port: fc.integer({ min: 1, max: 65535 }),
      nodePort: fc.integer({ min: 0, max: 65535 }),
      protocol: fc.constantFrom("TCP", "UDP", "SCTP"),
    }),
    { selector: (p) => p.name, maxLength: 4 },
  ),
  externalIPs: fc.array(fc.string(), { maxLength: 3 }),
  etp: fc.constantFrom("Cluster", "Local", undefined),
  timeout: fc.integer({ min: 1, max: 86400 }),
});

test("property: arbitrary valid Services never throw", () => {
  fc.assert(
    fc.property(validService, (v) => {
      const s = decodeService(
        {
          metadata: { name: v.name, namespace: v.namespace },
          spec: {
            type: v.type,
            clusterIP: v.clusterIP,
            ports: v.ports,
            externalIPs: v.externalIPs,
            externalTrafficPolicy: v.etp,
            sessionAffinity: "ClientIP",
            sessionAffinityConfig: { clientIP: { timeoutSeconds: v.timeout } },
          },
        },
        "prop",
      );
      assert.equal(s.spec.ports.length, v.ports.length);
    }),
  );
});

test("property: decoding arbitrary junk throws nothing but InvalidObjectError", () => {
  const junk = fc.oneof(
    fc.anything(),
    fc.record({ metadata: fc.anything(), spec: fc.anything(), status: fc.anything() }),
    fc.record({
      metadata: fc.record({ name: fc.string(), namespace: fc.string(), labels: fc.anything() }),
      addressType: fc.constantFrom("IPv4", "IPv6", "FQDN", 3),
      endpoints: fc.array(fc.record({ addresses: fc.array(fc.string()), conditions: fc.anything() })),
      ports: fc.anything(),
    }),
  );
  fc.assert(
    fc.property(junk, (raw) => {
      for (const decode of [decodeService, decodeEndpointSlice, decodeNode]) {
        try {
          decode(raw, "junk");
        } catch (err) {
          assert.ok(err instanceof InvalidObjectError, String(err));
        }
      }
    }),
    { numRuns: 300 },
  );
});
