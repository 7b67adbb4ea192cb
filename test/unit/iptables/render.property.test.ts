import { test } from "node:test";
import assert from "node:assert/strict";
import fc from "fast-check";
import { renderIptables } from "../../../src/backends/iptables/render.ts";
import type { IptablesSettings, RenderRequest } from "../../../src/backends/iptables/types.ts";
import type { LocalDetector } from "../../../src/proxy/node.ts";
import type { Endpoint, ServicePort } from "../../../src/proxy/types.ts";
import { endpoint, FAKE_PROXIER_SETTINGS, proxyState, servicePort } from "../../support/iptables-builders.ts";
import { checkIPTablesRuleJumps, parseIPTablesDump } from "../../support/iptables-normalise.ts";
import { changedServiceNames } from "../../support/iptables-golden.ts";
import { SimulatedIptables } from "../../support/iptables-restore-sim.ts";

const octet = fc.integer({ min: 0, max: 255 });
const ipv4 = fc.tuple(octet, octet).map(([a, b]) => `10.${a}.${b}.1`);
const dnsLabel = fc.stringMatching(/^[a-z]([a-z0-9-]{0,8}[a-z0-9])?$/);
const port = fc.integer({ min: 1, max: 65535 });

const endpointArb: fc.Arbitrary<Endpoint> = fc
  .record({
    ip: ipv4,
    port,
    ready: fc.boolean(),
    serving: fc.boolean(),
    terminating: fc.boolean(),
    isLocal: fc.boolean(),
    zone: fc.option(fc.constantFrom("zone-a", "zone-b"), { nil: undefined }),
    node: fc.option(fc.constantFrom("test-node", "other-node"), { nil: undefined }),
  })
  .map((e) =>
    endpoint(e.ip, e.port, {
      ready: e.ready,
      serving: e.serving,
      terminating: e.terminating,
      isLocal: e.isLocal,
      ...(e.zone === undefined ? {} : { zoneHints: [e.zone] }),
      ...(e.node === undefined ? {} : { nodeHints: [e.node] }),
    }),
  );

const servicePortArb: fc.Arbitrary<ServicePort> = fc
  .record({
    namespace: dnsLabel,
    name: dnsLabel,
    portName: fc.oneof(fc.constant(""), dnsLabel),
    protocol: fc.constantFrom("TCP" as const, "UDP" as const, "SCTP" as const),
    clusterIP: fc.tuple(octet, octet).map(([a, b]) => `172.30.${a}.${b}`),
    port,
    nodePort: fc.oneof(fc.constant(0), fc.integer({ min: 30000, max: 32767 })),
    externalIPs: fc.array(fc.constantFrom("192.168.99.11", "192.168.99.22"), { maxLength: 2 }),
    loadBalancerVIPs: fc.array(fc.constantFrom("1.2.3.4", "5.6.7.8"), { maxLength: 2 }),
    loadBalancerSourceRanges: fc.array(fc.constantFrom("203.0.113.0/25", "192.168.0.0/24"), { maxLength: 2 }),
    affinity: fc.option(fc.integer({ min: 1, max: 86400 }), { nil: null }),
    externalPolicyLocal: fc.boolean(),
    internalPolicyLocal: fc.boolean(),
    healthCheckNodePort: fc.oneof(fc.constant(0), fc.integer({ min: 30000, max: 32767 })),
  })
  .map((r) =>
    servicePort({
      ...r,
      sessionAffinity: r.affinity === null ? null : { type: "ClientIP", maxAgeSeconds: r.affinity },
    }),
  );

const detectorArb: fc.Arbitrary<LocalDetector> = fc.constantFrom<LocalDetector>(
  { mode: "None" },
  { mode: "ClusterCIDR", cidr: "10.0.0.0/8" },
  { mode: "BridgeInterface", interfaceName: "cbr0" },
  { mode: "InterfaceNamePrefix", prefix: "veth" },
);

const settingsArb: fc.Arbitrary<IptablesSettings> = fc
  .record({
    masqueradeAll: fc.boolean(),
    localDetector: detectorArb,
    localhostNodePorts: fc.boolean(),
    nodePortAddresses: fc.constantFrom([], ["192.168.0.0/24"], ["192.168.0.0/24", "127.0.0.1/32"]),
    conntrackTCPLiberal: fc.boolean(),
    hasRandomFully: fc.boolean(),
    largeClusterEndpointsThreshold: fc.constantFrom(1000, 2),
  })
  .map((s) => ({ ...FAKE_PROXIER_SETTINGS, ...s }));

const requestArb: fc.Arbitrary<RenderRequest> = fc
  .record({
    ports: fc.uniqueArray(fc.tuple(servicePortArb, fc.array(endpointArb, { maxLength: 5 })), {
      maxLength: 8,
      selector: ([sp]) => `${sp.name.namespace}/${sp.name.name}:${sp.name.port}/${sp.protocol}`,
    }),
    settings: settingsArb,
    fullSync: fc.boolean(),
    changed: fc.array(dnsLabel, { maxLength: 3 }),
    existing: fc.array(fc.constantFrom("KUBE-SVC-AAAAAAAAAAAAAAAA", "KUBE-SEP-BBBBBBBBBBBBBBBB", "DOCKER"), {
      maxLength: 3,
    }),
  })
  .map((r) => ({
    state: proxyState(
      r.ports.map(([sp, eps]) => [sp, [...new Map(eps.map((e) => [e.endpoint, e])).values()]] as const),
    ),
    settings: r.settings,
    fullSync: r.fullSync,
    changedServices: new Set(r.changed.map((n) => `${n}/${n}`)),
    existingNatChains: r.existing,
  }));

test("rendering any valid state never throws and is deterministic", () => {
  fc.assert(
    fc.property(requestArb, (req) => {
      const a = renderIptables(req);
      const b = renderIptables(req);
      assert.equal(a.payload, b.payload);
      assert.deepEqual(a.counts, b.counts);
    }),
    { numRuns: 200 },
  );
});

test("full syncs are self-consistent: every jumped-to chain exists and has rules", () => {
  fc.assert(
    fc.property(requestArb, (req) => {
      const result = renderIptables({ ...req, fullSync: true });
      assert.deepEqual(checkIPTablesRuleJumps(result.payload), []);
    }),
    { numRuns: 200 },
  );
});

test("payload lines are single-line, quote-balanced and parseable", () => {
  fc.assert(
    fc.property(requestArb, (req) => {
      const { payload, counts } = renderIptables(req);
      assert.ok(payload.endsWith("COMMIT\n"));
      for (const line of payload.slice(0, -1).split("\n")) {
        assert.notEqual(line, "");
        assert.ok(!/[\r\0]/.test(line), line);
        assert.equal((line.match(/"/g) ?? []).length % 2, 0, line);
        assert.equal(line, line.trim());
        assert.ok(!line.includes("  "), line);
      }
      const tables = parseIPTablesDump(payload);
      assert.deepEqual(
        tables.map((t) => t.name),
        ["filter", "nat"],
      );
      const natRules = payload
        .split("*nat\n")[1]!
        .split("\n")
        .filter((l) => l.startsWith("-A ")).length;
      assert.equal(counts.natRulesWritten, natRules);
      assert.ok(counts.natRulesTotal >= counts.natRulesWritten);
    }),
    { numRuns: 200 },
  );
});

test("a partial sync leaves the kernel exactly as a full sync would", () => {
  const entryArb = fc.record({
    sp: servicePortArb,
    before: fc.array(endpointArb, { maxLength: 4 }),
    after: fc.option(fc.array(endpointArb, { maxLength: 4 }), { nil: null }),
    inBefore: fc.boolean(),
    inAfter: fc.boolean(),
  });
  const dedup = (eps: readonly Endpoint[]): Endpoint[] => [
    ...new Map(eps.map((e) => [e.endpoint, e])).values(),
  ];
  fc.assert(
    fc.property(
      fc.uniqueArray(entryArb, {
        maxLength: 8,
        selector: (e) => `${e.sp.name.namespace}/${e.sp.name.name}`,
      }),
      settingsArb,
      (entries, settings) => {
        const s1 = proxyState(entries.filter((e) => e.inBefore).map((e) => [e.sp, dedup(e.before)] as const));
        const s2 = proxyState(
          entries.filter((e) => e.inAfter).map((e) => [e.sp, dedup(e.after ?? e.before)] as const),
        );
        const incremental = new SimulatedIptables();
        const base = {
          settings: { ...settings, largeClusterEndpointsThreshold: 1000 },
          changedServices: new Set<string>(),
        };
        incremental.restore(
          renderIptables({ ...base, state: s1, fullSync: true, existingNatChains: [] }).payload,
        );
        incremental.restore(
          renderIptables({
            ...base,
            state: s2,
            fullSync: false,
            changedServices: changedServiceNames(s1, s2),
            existingNatChains: incremental.chains("nat"),
          }).payload,
        );
        const fresh = new SimulatedIptables();
        fresh.restore(renderIptables({ ...base, state: s2, fullSync: true, existingNatChains: [] }).payload);
        const dump = (k: SimulatedIptables): string[] =>
          k
            .chains("nat")
            .sort()
            .map((c) => `${c}\n${k.rules("nat", c).join("\n")}`);
        assert.deepEqual(dump(incremental), dump(fresh));
      },
    ),
    { numRuns: 150 },
  );
});
