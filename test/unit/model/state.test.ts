import { test } from "node:test";
import assert from "node:assert/strict";
import fc from "fast-check";
import { buildProxyState, isForThisProxy, localReadyEndpoints } from "../../../src/proxy/state.ts";
import type { EndpointSlice, Service } from "../../../src/k8s/objects.ts";
import { BAD_IPS_SERVICE_SPEC, BAD_IPS_SERVICE_STATUS } from "../../support/bad-ips.ts";
import { node, slice, svc } from "./builders.ts";

const p80 = [{ name: "p80", port: 80, protocol: "TCP" }];
const opts = { family: "IPv4" as const, nodeName: "test-node" };

test("TestBadIPs through the whole model", () => {
  const { state, problems, warnings } = buildProxyState(
    {
      services: [svc("ns1", "svc1", BAD_IPS_SERVICE_SPEC, BAD_IPS_SERVICE_STATUS)],
      endpointSlices: [slice("ns1", "svc1-1", "svc1", "IPv4", [{ addresses: ["10.180.00.001"] }], p80)],
      node: null,
    },
    opts,
  );
  assert.deepEqual(problems, []);
  assert.deepEqual(warnings, []);
  const sp = state.services.get("ns1/svc1:p80/TCP")!;
  assert.equal(sp.clusterIP, "172.30.0.41");
  assert.deepEqual(sp.loadBalancerVIPs, ["1.2.3.4"]);
  assert.deepEqual(sp.externalIPs, ["192.168.99.22"]);
  assert.deepEqual(sp.loadBalancerSourceRanges, ["203.0.113.0/25"]);
  assert.deepEqual(
    state.endpoints.get("ns1/svc1:p80/TCP")!.map((e) => e.endpoint),
    ["10.180.0.1:80"],
  );
  assert.deepEqual(state.nodeLabels, {});
  assert.equal(state.family, "IPv4");
});

test("service-proxy-name and headless labels exclude objects (unless the proxy carries that name)", () => {
  const input = {
    services: [
      svc("ns", "mine", { clusterIP: "10.0.0.1", ports: p80 }),
      svc("ns", "other", { clusterIP: "10.0.0.2", ports: p80 }, undefined, {
        "service.kubernetes.io/service-proxy-name": "kpt",
      }),
      svc("ns", "hl", { clusterIP: "10.0.0.3", ports: p80 }, undefined, {
        "service.kubernetes.io/headless": "",
      }),
    ],
    endpointSlices: [
      slice("ns", "mine-1", "mine", "IPv4", [{ addresses: ["10.1.0.1"] }], p80),
      slice("ns", "other-1", "other", "IPv4", [{ addresses: ["10.1.0.2"] }], p80, {
        labels: { "service.kubernetes.io/service-proxy-name": "kpt" },
      }),
    ],
    node: node("test-node", { "topology.kubernetes.io/zone": "z1" }),
  };
  const plain = buildProxyState(input, opts).state;
  assert.deepEqual([...plain.services.keys()], ["ns/mine:p80/TCP"]);
  assert.deepEqual([...plain.endpoints.keys()], ["ns/mine:p80/TCP"]);
  assert.deepEqual(plain.nodeLabels, { "topology.kubernetes.io/zone": "z1" });
  const named = buildProxyState(input, { ...opts, serviceProxyName: "kpt" }).state;
  assert.deepEqual([...named.services.keys()].sort(), ["ns/mine:p80/TCP", "ns/other:p80/TCP"]);
  assert.deepEqual([...named.endpoints.keys()].sort(), ["ns/mine:p80/TCP", "ns/other:p80/TCP"]);
  assert.equal(isForThisProxy(input.services[2]!.metadata, "kpt"), false, "headless is never ours");
});

test("unusable objects are reported in problems, never thrown; dropped values in warnings", () => {
  const { state, problems, warnings } = buildProxyState(
    {
      services: [
        svc("ns", "a", { clusterIP: "10.0.0.1", ports: p80, externalIPs: ["nope"] }),
        svc("ns", "a", { clusterIP: "10.0.0.9", ports: p80 }),
      ],
      endpointSlices: [
        slice("ns", "nolabel", "", "IPv4", [{ addresses: ["10.1.0.1"] }], p80),
        slice("ns", "a-1", "a", "IPv4", [{ addresses: ["10.1.0.1"] }], p80),
        slice("ns", "a-1", "a", "IPv4", [{ addresses: ["10.1.0.2"] }], p80),
      ],
      node: null,
    },
    opts,
  );
  assert.deepEqual(
    problems.map((p) => `${p.object} | ${p.field}`),
    [
      "Service ns/a | metadata.name",
      'EndpointSlice ns/nolabel | metadata.labels["kubernetes.io/service-name"]',
      "EndpointSlice ns/a-1 | metadata.name",
    ],
  );
  assert.deepEqual(
    warnings.map((p) => `${p.object} | ${p.field}`),
    ["Service ns/a | spec.externalIPs[0]"],
  );
  assert.equal(state.services.get("ns/a:p80/TCP")!.clusterIP, "10.0.0.1", "first one wins");
  assert.deepEqual(
    state.endpoints.get("ns/a:p80/TCP")!.map((e) => e.ip),
    ["10.1.0.1"],
  );
});

test("IPv6 proxier sees only the IPv6 side", () => {
  const { state } = buildProxyState(
    {
      services: [
        svc("ns", "ds", {
          clusterIP: "10.0.0.1",
          clusterIPs: ["10.0.0.1", "fd00::1"],
          ipFamilies: ["IPv4", "IPv6"],
          ports: p80,
        }),
      ],
      endpointSlices: [
        slice("ns", "ds-4", "ds", "IPv4", [{ addresses: ["10.1.0.1"] }], p80),
        slice("ns", "ds-6", "ds", "IPv6", [{ addresses: ["fd00:1::1"] }], p80),
      ],
      node: null,
    },
    { family: "IPv6", nodeName: "test-node" },
  );
  assert.equal(state.services.get("ns/ds:p80/TCP")!.clusterIP, "fd00::1");
  assert.deepEqual(
    state.endpoints.get("ns/ds:p80/TCP")!.map((e) => e.endpoint),
    ["[fd00:1::1]:80"],
  );
});

test("property: any mix of valid Services and slices builds without throwing", () => {
  const name = fc.constantFrom("a", "b", "c", "d");
  const arb = fc.record({
    services: fc.array(
      fc.record({
        name,
        ip: fc.ipV4(),
        type: fc.constantFrom("ClusterIP", "NodePort", "LoadBalancer"),
        etp: fc.constantFrom("Cluster", "Local"),
        ext: fc.array(fc.oneof(fc.ipV4(), fc.ipV6(), fc.string()), { maxLength: 2 }),
      }),
      { maxLength: 5 },
    ),
    slices: fc.array(
      fc.record({
        name,
        idx: fc.nat(3),
        addrs: fc.array(fc.oneof(fc.ipV4(), fc.ipV6(), fc.string()), { maxLength: 4 }),
        ready: fc.option(fc.boolean(), { nil: undefined }),
        local: fc.boolean(),
      }),
      { maxLength: 6 },
    ),
  });
  fc.assert(
    fc.property(arb, (input) => {
      const services: Service[] = input.services.map((s) =>
        svc("ns", s.name, {
          type: s.type,
          clusterIP: s.ip,
          ports: p80,
          externalTrafficPolicy: s.etp,
          externalIPs: s.ext,
        }),
      );
      const slices: EndpointSlice[] = input.slices.map((s) =>
        slice(
          "ns",
          `${s.name}-${s.idx}`,
          s.name,
          "IPv4",
          s.addrs.map((a) => ({ addresses: [a], ready: s.ready, nodeName: s.local ? "test-node" : "x" })),
          p80,
        ),
      );
      const r = buildProxyState({ services, endpointSlices: slices, node: null }, opts);
      for (const eps of r.state.endpoints.values()) {
        const strings = eps.map((e) => e.endpoint);
        assert.deepEqual(strings, [...new Set(strings)].sort(), "sorted and unique");
      }
    }),
    { numRuns: 100 },
  );
});

test("performance: 10,000 Services x 10 endpoints well under a second", () => {
  const services: Service[] = [];
  const slices: EndpointSlice[] = [];
  for (let i = 0; i < 10_000; i++) {
    const name = `svc${i}`;
    services.push(svc("ns", name, { clusterIP: `172.30.${i >> 8}.${i & 255}`, ports: p80 }));
    slices.push(
      slice(
        "ns",
        `${name}-abcde`,
        name,
        "IPv4",
        Array.from({ length: 10 }, (_, j) => ({
          addresses: [`10.${i >> 8}.${i & 255}.${j}`],
          nodeName: `node-${j}`,
        })),
        p80,
      ),
    );
  }
  // CPU time, not wall time: the test machine is shared and wall time mostly measures others.
  const cpu0 = process.cpuUsage();
  const { state } = buildProxyState({ services, endpointSlices: slices, node: null }, opts);
  const cpu = process.cpuUsage(cpu0);
  const ms = (cpu.user + cpu.system) / 1000;
  assert.equal(state.services.size, 10_000);
  assert.equal(state.endpoints.get("ns/svc9999:p80/TCP")!.length, 10);
  assert.ok(ms < 1000, `buildProxyState took ${ms.toFixed(0)} ms of CPU`);
});

test("localReadyEndpoints counts distinct local ready IPs per Service across ports", () => {
  const ports = [
    { name: "a", port: 80, protocol: "TCP" },
    { name: "b", port: 81, protocol: "UDP" },
  ];
  const { state } = buildProxyState(
    {
      services: [],
      endpointSlices: [
        slice(
          "ns",
          "web-1",
          "web",
          "IPv4",
          [
            { addresses: ["10.0.0.1"], nodeName: "test-node" },
            { addresses: ["10.0.0.2"], nodeName: "test-node", ready: false },
            { addresses: ["10.0.0.3"], nodeName: "elsewhere" },
          ],
          ports,
        ),
        slice(
          "ns",
          "db-1",
          "db",
          "IPv4",
          [{ addresses: ["10.0.1.1"], nodeName: "other" }],
          [{ port: 5432 }, ...p80],
        ),
      ],
      node: null,
    },
    opts,
  );
  assert.deepEqual(localReadyEndpoints(state), new Map([["ns/web", 1]]));
});
