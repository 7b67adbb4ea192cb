import { test } from "node:test";
import assert from "node:assert/strict";
import fc from "fast-check";
import { ProxyStateStore, deepEqual, programmingLatencies } from "../../../src/proxy/changetracker.ts";
import { buildProxyState } from "../../../src/proxy/state.ts";
import type { EndpointSlice, Service } from "../../../src/k8s/objects.ts";
import { node, slice, svc } from "./builders.ts";

const p80 = [{ name: "p80", port: 80, protocol: "TCP" }];
const T0 = Date.parse("2026-01-01T00:00:00Z");

function store(clock = () => T0) {
  return new ProxyStateStore({ family: "IPv4", nodeName: "test-node", clock });
}

test("service add, no-op update, delete: pending and updatedServices as upstream", () => {
  const s = store();
  const v1 = svc("ns1", "svc1", { clusterIP: "172.30.0.41", ports: p80 });
  assert.equal(s.serviceChanges.update(null, v1), true);
  assert.equal(s.serviceChanges.pendingCount, 1);
  const r1 = s.applyPending();
  assert.deepEqual([...r1.updatedServices], ["ns1/svc1"]);
  assert.deepEqual([...r1.state.services.keys()], ["ns1/svc1:p80/TCP"]);
  assert.equal(s.serviceChanges.pendingCount, 0);

  // Metadata-only change (resourceVersion, annotations) yields the same ServicePorts: dropped.
  const v2 = svc("ns1", "svc1", { clusterIP: "172.30.0.41", ports: p80, selector: { app: "x" } });
  assert.equal(s.serviceChanges.update(v1, v2), false);
  assert.equal(s.applyPending().updatedServices.size, 0);

  assert.equal(s.serviceChanges.update(v2, null), true);
  const r3 = s.applyPending();
  assert.deepEqual([...r3.updatedServices], ["ns1/svc1"]);
  assert.equal(r3.state.services.size, 0);
  assert.equal(r1.state.services.size, 1, "an earlier snapshot is not mutated by later applies");
});

test("add then delete before a sync cancels out", () => {
  const s = store();
  const v1 = svc("ns1", "svc1", { clusterIP: "172.30.0.41", ports: p80 });
  assert.equal(s.serviceChanges.update(null, v1), true);
  assert.equal(s.serviceChanges.update(v1, null), false);
  const sl = slice("ns1", "svc1-1", "svc1", "IPv4", [{ addresses: ["10.0.0.1"] }], p80);
  assert.equal(s.endpointsChanges.endpointSliceUpdate(sl, false), true);
  assert.equal(s.endpointsChanges.endpointSliceUpdate(sl, true), true, "still pending (as upstream)");
  const r = s.applyPending();
  assert.equal(r.state.services.size, 0);
  assert.equal(r.state.endpoints.size, 0);
});

test("endpoint slice changes: identical updates are not pending; removal of unknown is not pending", () => {
  const s = store();
  const a = slice("ns1", "svc1-1", "svc1", "IPv4", [{ addresses: ["10.0.0.1"] }], p80);
  assert.equal(s.endpointsChanges.endpointSliceUpdate(a, true), false);
  assert.equal(s.endpointsChanges.endpointSliceUpdate(a, false), true);
  assert.equal(s.endpointsChanges.pendingCount, 1);
  s.applyPending();
  assert.equal(s.endpointsChanges.endpointSliceUpdate(a, false), false);
  const fqdn = slice("ns1", "svc1-f", "svc1", "FQDN", [{ addresses: ["x.example"] }], p80);
  assert.equal(s.endpointsChanges.endpointSliceUpdate(fqdn, false), false);
  const b = slice("ns1", "svc1-1", "svc1", "IPv4", [{ addresses: ["10.0.0.2"] }], p80);
  assert.equal(s.endpointsChanges.endpointSliceUpdate(b, false), true);
  const r = s.applyPending();
  assert.deepEqual([...r.updatedServices], ["ns1/svc1"]);
  assert.deepEqual(
    r.state.endpoints.get("ns1/svc1:p80/TCP")!.map((e) => e.endpoint),
    ["10.0.0.2:80"],
  );
  assert.equal(r.conntrackCleanupRequired, false);
});

test("a Service's slices: endpoints merged across slices, each slice's warnings reported once", () => {
  const s = store();
  const a = slice("ns", "web-a", "web", "IPv4", [{ addresses: ["10.0.0.2"] }, { addresses: ["bad"] }], p80);
  const b1 = slice("ns", "web-b", "web", "IPv4", [{ addresses: ["10.0.0.1"] }], p80);
  s.endpointsChanges.endpointSliceUpdate(a, false);
  s.endpointsChanges.endpointSliceUpdate(b1, false);
  const r1 = s.applyPending();
  assert.deepEqual(
    r1.state.endpoints.get("ns/web:p80/TCP")!.map((e) => e.endpoint),
    ["10.0.0.1:80", "10.0.0.2:80"],
  );
  assert.deepEqual(
    r1.warnings.map((w) => `${w.object} ${w.field}`),
    ["EndpointSlice ns/web-a endpoints[1].addresses[0]"],
  );
  // Only web-b changes: web-a's endpoints stay, and its warning is not repeated.
  const b2 = slice("ns", "web-b", "web", "IPv4", [{ addresses: ["10.0.0.3"] }], p80);
  s.endpointsChanges.endpointSliceUpdate(b2, false);
  const r2 = s.applyPending();
  assert.deepEqual(
    r2.state.endpoints.get("ns/web:p80/TCP")!.map((e) => e.endpoint),
    ["10.0.0.2:80", "10.0.0.3:80"],
  );
  assert.deepEqual(r2.warnings, []);
  s.endpointsChanges.endpointSliceUpdate(a, true);
  assert.deepEqual(
    s
      .applyPending()
      .state.endpoints.get("ns/web:p80/TCP")!
      .map((e) => e.endpoint),
    ["10.0.0.3:80"],
  );
});

test("a slice without the service-name label is a problem, not a change", () => {
  const s = store();
  assert.equal(s.endpointsChanges.endpointSliceUpdate(slice("ns", "x", "", "IPv4", [], p80), false), false);
  assert.deepEqual(
    s.applyPending().problems.map((p) => p.object),
    ["EndpointSlice ns/x"],
  );
});

test("UDP endpoint changes require conntrack cleanup", () => {
  const s = store();
  const udp = slice(
    "ns",
    "dns-1",
    "dns",
    "IPv4",
    [{ addresses: ["10.0.0.1"] }],
    [{ name: "dns", port: 53, protocol: "UDP" }],
  );
  s.endpointsChanges.endpointSliceUpdate(udp, false);
  assert.equal(s.applyPending().conntrackCleanupRequired, true);
  s.endpointsChanges.endpointSliceUpdate(udp, true);
  assert.equal(s.applyPending().conntrackCleanupRequired, true, "removal too (UDP before the change)");
});

test("network programming latency: trigger times after tracker start only, deletions ignored", () => {
  let now = T0;
  const s = store(() => now);
  const at = (iso: string) => ({ annotations: { "endpoints.kubernetes.io/last-change-trigger-time": iso } });
  s.endpointsChanges.endpointSliceUpdate(
    slice("ns", "old-1", "old", "IPv4", [{ addresses: ["10.0.0.1"] }], p80, at("2025-12-31T23:59:00Z")),
    false,
  );
  s.endpointsChanges.endpointSliceUpdate(
    slice("ns", "new-1", "new", "IPv4", [{ addresses: ["10.0.0.2"] }], p80, at("2026-01-01T00:00:01.5Z")),
    false,
  );
  s.endpointsChanges.endpointSliceUpdate(
    slice("ns", "bad-1", "bad", "IPv4", [{ addresses: ["10.0.0.3"] }], p80, at("yesterday")),
    false,
  );
  now = T0 + 4000;
  const r = s.applyPending();
  assert.deepEqual([...r.lastChangeTriggerTimes.keys()], ["ns/new"]);
  assert.deepEqual(programmingLatencies(r, now), [2.5]);
  s.endpointsChanges.endpointSliceUpdate(
    slice("ns", "new-1", "new", "IPv4", [{ addresses: ["10.0.0.2"] }], p80, at("2026-01-01T00:00:03Z")),
    true,
  );
  assert.equal(s.applyPending().lastChangeTriggerTimes.size, 0);
});

test("node topology label change is flagged once", () => {
  const s = store();
  assert.equal(s.nodeUpdate(node("test-node", { "topology.kubernetes.io/zone": "a" })), true);
  const r = s.applyPending();
  assert.equal(r.topologyChanged, true);
  assert.deepEqual(r.state.nodeLabels, { "topology.kubernetes.io/zone": "a" });
  assert.equal(s.nodeUpdate(node("test-node", { "topology.kubernetes.io/zone": "a", other: "x" })), false);
  assert.equal(s.applyPending().topologyChanged, false);
  assert.equal(s.nodeUpdate(node("test-node", { "topology.kubernetes.io/zone": "b" })), true);
  assert.equal(s.applyPending().topologyChanged, true);
});

test("a Service gaining a service-proxy-name label is removed", () => {
  const s = store();
  const v1 = svc("ns", "a", { clusterIP: "10.0.0.1", ports: p80 });
  s.serviceChanges.update(null, v1);
  s.applyPending();
  const v2 = svc("ns", "a", { clusterIP: "10.0.0.1", ports: p80 }, undefined, {
    "service.kubernetes.io/service-proxy-name": "other",
  });
  assert.equal(s.serviceChanges.update(v1, v2), true);
  assert.equal(s.applyPending().state.services.size, 0);
});

test("deepEqual", () => {
  assert.ok(deepEqual({ a: [1, { b: 2 }] }, { a: [1, { b: 2 }] }));
  assert.ok(!deepEqual({ a: [1] }, { a: [1, 2] }));
  assert.ok(!deepEqual({ a: undefined }, {}));
  assert.ok(deepEqual(new Map([["k", new Set([1])]]), new Map([["k", new Set([1])]])));
  assert.ok(!deepEqual(new Map([["k", 1]]), new Map([["k", 2]])));
  assert.ok(!deepEqual([1], { 0: 1 }));
});

test("property: any event sequence through the trackers ends in the same state as buildProxyState", () => {
  const svcName = fc.constantFrom("a", "b", "c");
  const op = fc.oneof(
    fc.record({
      kind: fc.constant("svc" as const),
      name: svcName,
      del: fc.boolean(),
      ip: fc.constantFrom("10.0.0.1", "10.0.0.2"),
      udp: fc.boolean(),
      ext: fc.constantFrom([], ["1.1.1.1"], ["junk"]),
    }),
    fc.record({
      kind: fc.constant("slice" as const),
      name: svcName,
      idx: fc.nat(2),
      del: fc.boolean(),
      addrs: fc.array(fc.constantFrom("10.1.0.1", "10.1.0.2", "10.1.0.3", "010.1.0.1", "bad"), {
        maxLength: 3,
      }),
      terminating: fc.boolean(),
      udp: fc.boolean(),
    }),
    fc.record({ kind: fc.constant("apply" as const) }),
  );
  fc.assert(
    fc.property(fc.array(op, { maxLength: 25 }), (ops) => {
      const s = store();
      const services = new Map<string, Service>();
      const slices = new Map<string, EndpointSlice>();
      for (const o of ops) {
        if (o.kind === "apply") {
          s.applyPending();
        } else if (o.kind === "svc") {
          const prev = services.get(o.name) ?? null;
          const next = o.del
            ? null
            : svc("ns", o.name, {
                type: "NodePort",
                clusterIP: o.ip,
                ports: [{ name: "p80", port: 80, protocol: o.udp ? "UDP" : "TCP", nodePort: 30080 }],
                externalIPs: o.ext,
              });
          if (next === null) services.delete(o.name);
          else services.set(o.name, next);
          s.serviceChanges.update(prev, next);
        } else {
          const name = `${o.name}-${o.idx}`;
          const sl = slice(
            "ns",
            name,
            o.name,
            "IPv4",
            o.addrs.map((a) => ({ addresses: [a], ready: !o.terminating, terminating: o.terminating })),
            [{ name: "p80", port: 8080, protocol: o.udp ? "UDP" : "TCP" }],
          );
          if (o.del) {
            const prev = slices.get(name);
            slices.delete(name);
            if (prev !== undefined) s.endpointsChanges.endpointSliceUpdate(prev, true);
          } else {
            slices.set(name, sl);
            s.endpointsChanges.endpointSliceUpdate(sl, false);
          }
        }
      }
      const incremental = s.applyPending().state;
      const whole = buildProxyState(
        { services: [...services.values()], endpointSlices: [...slices.values()], node: null },
        { family: "IPv4", nodeName: "test-node" },
      ).state;
      assert.deepStrictEqual(new Map([...incremental.services].sort()), new Map([...whole.services].sort()));
      assert.deepStrictEqual(
        new Map([...incremental.endpoints].sort()),
        new Map([...whole.endpoints].sort()),
      );
    }),
    { numRuns: 150 },
  );
});
