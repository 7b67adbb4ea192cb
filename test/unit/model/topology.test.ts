import { test } from "node:test";
import assert from "node:assert/strict";
import { categorizeEndpoints, topologyMode } from "../../../src/proxy/topology.ts";
import type { Endpoint, ServicePort } from "../../../src/proxy/types.ts";

interface EpOpts {
  ready?: boolean;
  serving?: boolean;
  terminating?: boolean;
  local?: boolean;
  zones?: string[];
  nodes?: string[];
}

function ep(ip: string, o: EpOpts = {}): Endpoint {
  const ready = o.ready ?? true;
  return {
    ip,
    port: 80,
    endpoint: `${ip}:80`,
    ready,
    serving: o.serving ?? ready,
    terminating: o.terminating ?? false,
    isLocal: o.local ?? false,
    zoneHints: o.zones === undefined ? null : new Set(o.zones),
    nodeHints: o.nodes === undefined ? null : new Set(o.nodes),
    nodeName: null,
    zone: null,
  };
}

function port(o: { itp?: boolean; etp?: boolean; nodePort?: number } = {}): ServicePort {
  return {
    name: { namespace: "ns1", name: "svc1", port: "p80", protocol: "TCP" },
    clusterIP: "172.30.0.41",
    port: 80,
    protocol: "TCP",
    nodePort: o.nodePort ?? 0,
    externalIPs: [],
    loadBalancerVIPs: [],
    loadBalancerSourceRanges: [],
    sessionAffinity: null,
    externalPolicyLocal: o.etp ?? false,
    internalPolicyLocal: o.itp ?? false,
    healthCheckNodePort: 0,
  };
}

const names = (eps: readonly Endpoint[]) => eps.map((e) => e.ip).sort();
const zoneA = { "topology.kubernetes.io/zone": "zone-a" };

interface Case {
  name: string;
  sp: ServicePort;
  eps: Endpoint[];
  labels?: Record<string, string>;
  gateNodes?: boolean;
  cluster: string[];
  local: string[];
  reachable: string[];
  hasAny: boolean;
}

const cases: Case[] = [
  {
    name: "no endpoints",
    sp: port(),
    eps: [],
    cluster: [],
    local: [],
    reachable: [],
    hasAny: false,
  },
  {
    name: "zone hints: only endpoints hinted for this node's zone",
    sp: port(),
    labels: zoneA,
    eps: [
      ep("10.1.2.3", { zones: ["zone-a"] }),
      ep("10.1.2.4", { zones: ["zone-b"] }),
      ep("10.1.2.5", { zones: ["zone-c"] }),
      ep("10.1.2.6", { zones: ["zone-a"] }),
    ],
    cluster: ["10.1.2.3", "10.1.2.6"],
    local: [],
    reachable: ["10.1.2.3", "10.1.2.6"],
    hasAny: true,
  },
  {
    name: "empty node labels: hints ignored",
    sp: port(),
    labels: {},
    eps: [ep("10.1.2.3", { zones: ["zone-a"] }), ep("10.1.2.4", { zones: ["zone-b"] })],
    cluster: ["10.1.2.3", "10.1.2.4"],
    local: [],
    reachable: ["10.1.2.3", "10.1.2.4"],
    hasAny: true,
  },
  {
    name: "node in a zone nobody is hinted for: no filtering",
    sp: port(),
    labels: { "topology.kubernetes.io/zone": "zone-z" },
    eps: [ep("10.1.2.3", { zones: ["zone-a"] }), ep("10.1.2.4", { zones: ["zone-b"] })],
    cluster: ["10.1.2.3", "10.1.2.4"],
    local: [],
    reachable: ["10.1.2.3", "10.1.2.4"],
    hasAny: true,
  },
  {
    name: "one ready endpoint without hints: hints ignored",
    sp: port(),
    labels: zoneA,
    eps: [ep("10.1.2.3", { zones: ["zone-a"] }), ep("10.1.2.4")],
    cluster: ["10.1.2.3", "10.1.2.4"],
    local: [],
    reachable: ["10.1.2.3", "10.1.2.4"],
    hasAny: true,
  },
  {
    name: "unready endpoints do not count for the topology decision",
    sp: port(),
    labels: zoneA,
    eps: [
      ep("10.1.2.3", { ready: false, zones: ["zone-a"] }),
      ep("10.1.2.4", { zones: ["zone-b"] }),
      ep("10.1.2.5", { zones: ["zone-c"] }),
      ep("10.1.2.6", { ready: false }),
    ],
    cluster: ["10.1.2.4", "10.1.2.5"],
    local: [],
    reachable: ["10.1.2.4", "10.1.2.5"],
    hasAny: true,
  },
  {
    name: "node hints win over zone hints (PreferSameNode)",
    sp: port(),
    labels: zoneA,
    eps: [
      ep("10.1.2.3", { zones: ["zone-a"], nodes: ["node-a"] }),
      ep("10.1.2.4", { zones: ["zone-a"], nodes: ["test-node"] }),
      ep("10.1.2.5", { zones: ["zone-b"], nodes: ["node-b"] }),
    ],
    cluster: ["10.1.2.4"],
    local: [],
    reachable: ["10.1.2.4"],
    hasAny: true,
  },
  {
    name: "node hints ignored when the gate is off (zone hints used)",
    sp: port(),
    labels: zoneA,
    gateNodes: false,
    eps: [
      ep("10.1.2.3", { zones: ["zone-a"], nodes: ["node-a"] }),
      ep("10.1.2.4", { zones: ["zone-a"], nodes: ["test-node"] }),
      ep("10.1.2.5", { zones: ["zone-b"], nodes: ["node-b"] }),
    ],
    cluster: ["10.1.2.3", "10.1.2.4"],
    local: [],
    reachable: ["10.1.2.3", "10.1.2.4"],
    hasAny: true,
  },
  {
    name: "iTP Local: topology ignored, only local ready endpoints",
    sp: port({ itp: true }),
    labels: zoneA,
    eps: [ep("10.1.2.3", { zones: ["zone-a"] }), ep("10.1.2.4", { zones: ["zone-b"], local: true })],
    cluster: [],
    local: ["10.1.2.4"],
    reachable: ["10.1.2.4"],
    hasAny: true,
  },
  {
    name: "iTP Local, all endpoints remote: endpoints exist but none usable here",
    sp: port({ itp: true }),
    eps: [ep("10.0.0.0"), ep("10.0.0.1")],
    cluster: [],
    local: [],
    reachable: [],
    hasAny: true,
  },
  {
    name: "iTP Local, only unready endpoints: nothing at all",
    sp: port({ itp: true }),
    eps: [ep("10.0.0.0", { ready: false, local: true })],
    cluster: [],
    local: [],
    reachable: [],
    hasAny: false,
  },
  {
    name: "Cluster policy, no ready endpoints: serving+terminating fallback",
    sp: port(),
    eps: [
      ep("10.0.0.0", { ready: false, serving: true, terminating: true }),
      ep("10.0.0.1", { ready: false, serving: false, terminating: true }),
      ep("10.0.0.2", { ready: false, serving: false, terminating: false }),
    ],
    cluster: ["10.0.0.0"],
    local: [],
    reachable: ["10.0.0.0"],
    hasAny: true,
  },
  {
    name: "Cluster policy, some ready: terminating ones are not used",
    sp: port(),
    eps: [ep("10.0.0.0"), ep("10.0.0.1", { ready: false, serving: true, terminating: true })],
    cluster: ["10.0.0.0"],
    local: [],
    reachable: ["10.0.0.0"],
    hasAny: true,
  },
  {
    name: "eTP Local NodePort, some local ready: reachable = cluster",
    sp: port({ etp: true, nodePort: 30001 }),
    eps: [ep("10.0.0.0", { local: true }), ep("10.0.0.1"), ep("10.0.0.2", { local: true, ready: false })],
    cluster: ["10.0.0.0", "10.0.0.1"],
    local: ["10.0.0.0"],
    reachable: ["10.0.0.0", "10.0.0.1"],
    hasAny: true,
  },
  {
    name: "eTP Local NodePort, all remote",
    sp: port({ etp: true, nodePort: 30001 }),
    eps: [ep("10.0.0.0"), ep("10.0.0.1")],
    cluster: ["10.0.0.0", "10.0.0.1"],
    local: [],
    reachable: ["10.0.0.0", "10.0.0.1"],
    hasAny: true,
  },
  {
    name: "eTP Local NodePort, local only serving+terminating while remote ready: union",
    sp: port({ etp: true, nodePort: 30001 }),
    eps: [
      ep("10.0.0.0", { local: true, ready: false, serving: true, terminating: true }),
      ep("10.0.0.1"),
      ep("10.0.0.2", { local: true, ready: false, serving: false, terminating: true }),
    ],
    cluster: ["10.0.0.1"],
    local: ["10.0.0.0"],
    reachable: ["10.0.0.0", "10.0.0.1"],
    hasAny: true,
  },
  {
    name: "eTP Local NodePort, all terminating: both use serving+terminating",
    sp: port({ etp: true, nodePort: 30001 }),
    eps: [
      ep("10.0.0.0", { local: true, ready: false, serving: true, terminating: true }),
      ep("10.0.0.1", { ready: false, serving: true, terminating: true }),
    ],
    cluster: ["10.0.0.0", "10.0.0.1"],
    local: ["10.0.0.0"],
    reachable: ["10.0.0.0", "10.0.0.1"],
    hasAny: true,
  },
  {
    name: "eTP Local but not externally accessible: plain cluster",
    sp: port({ etp: true }),
    eps: [ep("10.0.0.0", { local: true }), ep("10.0.0.1")],
    cluster: ["10.0.0.0", "10.0.0.1"],
    local: [],
    reachable: ["10.0.0.0", "10.0.0.1"],
    hasAny: true,
  },
  {
    name: "zone topology + eTP Local: local endpoint outside the zone is still reachable",
    sp: port({ etp: true, nodePort: 30001 }),
    labels: zoneA,
    eps: [ep("10.0.0.0", { zones: ["zone-a"] }), ep("10.0.0.1", { zones: ["zone-b"], local: true })],
    cluster: ["10.0.0.0"],
    local: ["10.0.0.1"],
    reachable: ["10.0.0.0", "10.0.0.1"],
    hasAny: true,
  },
];

for (const c of cases) {
  test(`categorizeEndpoints: ${c.name}`, () => {
    const r = categorizeEndpoints(c.eps, c.sp, "test-node", c.labels ?? {}, {
      LoadBalancerIPMode: true,
      PreferSameTrafficDistribution: c.gateNodes ?? true,
    });
    assert.deepEqual(names(r.clusterEndpoints), c.cluster, "cluster");
    assert.deepEqual(names(r.localEndpoints), c.local, "local");
    assert.deepEqual(names(r.allReachableEndpoints), c.reachable, "reachable");
    assert.equal(r.hasAnyEndpoints, c.hasAny, "hasAnyEndpoints");
  });
}

test("topologyMode: no ready endpoints means no topology", () => {
  assert.equal(topologyMode([ep("10.0.0.1", { ready: false, zones: ["zone-a"] })], "n", "zone-a"), "");
  assert.equal(topologyMode([ep("10.0.0.1", { zones: ["zone-a"] })], "n", "zone-a"), "PreferSameZone");
  assert.equal(topologyMode([ep("10.0.0.1", { zones: [] })], "n", ""), "", "an empty hint set is no hint");
});

test("reachable union is sorted by endpoint string", () => {
  const r = categorizeEndpoints(
    [
      ep("10.0.0.2", { local: true, ready: false, serving: true, terminating: true }),
      ep("10.0.0.10"),
      ep("10.0.0.1"),
    ],
    port({ etp: true, nodePort: 30001 }),
    "test-node",
    {},
  );
  assert.deepEqual(
    r.allReachableEndpoints.map((e) => e.endpoint),
    ["10.0.0.10:80", "10.0.0.1:80", "10.0.0.2:80"],
  );
});
