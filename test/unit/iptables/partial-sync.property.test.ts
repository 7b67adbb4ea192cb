/**
 * Partial syncs edit the top-level chains in place; whatever the sequence of changes, the kernel
 * must then hold exactly what upstream's single full payload of the same state produces: the
 * same rules in the same order in every chain (KUBE-NODEPORTS' localhost rule above the general
 * one, the nodeport tail last), no chain more or less. The real proxier runs against the
 * stateful fake kernel, which checks `-D` matches, `-I` positions and jumps as iptables does.
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import fc from "fast-check";
import { JUMP_CHAINS } from "../../../src/backends/iptables/chains.ts";
import { renderIptables } from "../../../src/backends/iptables/render.ts";
import { decodeEndpointSlice, decodeService } from "../../../src/k8s/objects.ts";
import { FakeIptables } from "../../../src/kernel/fake.ts";
import { ProxyStateStore } from "../../../src/proxy/changetracker.ts";
import { FAKE_PROXIER_SETTINGS } from "../../support/iptables-builders.ts";
import { ensureJumpRules } from "../../support/jumprules.ts";
import { testProxier } from "../../support/proxier.ts";

const NAMES = ["a", "b", "c", "d", "e"] as const;
type Name = (typeof NAMES)[number];

interface ServiceVariant {
  readonly type: "ClusterIP" | "NodePort" | "LoadBalancer";
  readonly ports: 1 | 2;
  /** Repeats and either order: upstream writes a rule per entry, in order. */
  readonly externalIPs: readonly string[];
  readonly local: boolean;
  readonly sourceRanges: boolean;
}

interface EndpointVariant {
  readonly host: number;
  readonly local: boolean;
}

type Op =
  | { readonly kind: "service"; readonly name: Name; readonly variant: ServiceVariant | null }
  | { readonly kind: "endpoints"; readonly name: Name; readonly endpoints: readonly EndpointVariant[] | null }
  | { readonly kind: "sync" };

const nameArb = fc.constantFrom(...NAMES);
const serviceArb: fc.Arbitrary<ServiceVariant> = fc.record({
  type: fc.constantFrom("ClusterIP" as const, "NodePort" as const, "LoadBalancer" as const),
  ports: fc.constantFrom(1 as const, 2 as const),
  externalIPs: fc.array(fc.constantFrom("192.168.99.11", "192.168.99.22"), { maxLength: 2 }),
  local: fc.boolean(),
  sourceRanges: fc.boolean(),
});
const endpointsArb = fc.uniqueArray(
  fc.record({ host: fc.integer({ min: 1, max: 4 }), local: fc.boolean() }),
  {
    maxLength: 3,
    selector: (e) => e.host,
  },
);
const opArb: fc.Arbitrary<Op> = fc.oneof(
  fc.record({
    kind: fc.constant("service" as const),
    name: nameArb,
    variant: fc.option(serviceArb, { nil: null }),
  }),
  fc.record({
    kind: fc.constant("endpoints" as const),
    name: nameArb,
    endpoints: fc.option(endpointsArb, { nil: null }),
  }),
  fc.constant({ kind: "sync" as const }),
);

const portNames = (variant: ServiceVariant) => (variant.ports === 1 ? ["p1"] : ["p1", "p2"]);

function serviceObject(name: Name, variant: ServiceVariant) {
  const n = NAMES.indexOf(name);
  const external = variant.type !== "ClusterIP";
  const lb = variant.type === "LoadBalancer";
  return decodeService(
    {
      apiVersion: "v1",
      kind: "Service",
      metadata: { name, namespace: "ns" },
      spec: {
        type: variant.type,
        clusterIP: `172.30.0.${n + 1}`,
        externalIPs: [...variant.externalIPs],
        ...(external ? { externalTrafficPolicy: variant.local ? "Local" : "Cluster" } : {}),
        ...(lb && variant.local ? { healthCheckNodePort: 32000 + n } : {}),
        ...(lb && variant.sourceRanges ? { loadBalancerSourceRanges: ["203.0.113.0/25"] } : {}),
        ports: portNames(variant).map((port, p) => ({
          name: port,
          port: 80 + p,
          protocol: "TCP",
          ...(external ? { nodePort: 30000 + 10 * n + p } : {}),
        })),
      },
      ...(lb ? { status: { loadBalancer: { ingress: [{ ip: `5.6.7.${n + 1}` }] } } } : {}),
    },
    "test",
  );
}

function sliceObject(name: Name, endpoints: readonly EndpointVariant[]) {
  const n = NAMES.indexOf(name);
  return decodeEndpointSlice(
    {
      apiVersion: "discovery.k8s.io/v1",
      kind: "EndpointSlice",
      metadata: { name: `${name}-1`, namespace: "ns", labels: { "kubernetes.io/service-name": name } },
      addressType: "IPv4",
      endpoints: endpoints.map((e) => ({
        addresses: [`10.0.${n}.${e.host}`],
        nodeName: e.local ? FAKE_PROXIER_SETTINGS.nodeName : "other-node",
      })),
      ports: ["p1", "p2"].map((port, p) => ({ name: port, port: 8080 + p, protocol: "TCP" })),
    },
    "test",
  );
}

/** The proxier with its store, fed by ops, remembering each object's last version. */
function harness(maxServicesPerTransaction: number) {
  const ipt = new FakeIptables();
  const store = new ProxyStateStore({ family: "IPv4", nodeName: FAKE_PROXIER_SETTINGS.nodeName });
  const proxier = testProxier({ ipt, store, maxServicesPerTransaction });
  const services = new Map<Name, ReturnType<typeof serviceObject>>();
  const slices = new Map<Name, ReturnType<typeof sliceObject>>();
  const apply = (op: Exclude<Op, { kind: "sync" }>): void => {
    if (op.kind === "service") {
      const next = op.variant === null ? null : serviceObject(op.name, op.variant);
      store.serviceChanges.update(services.get(op.name) ?? null, next);
      if (next === null) services.delete(op.name);
      else services.set(op.name, next);
      return;
    }
    const previous = slices.get(op.name);
    if (op.endpoints === null) {
      if (previous !== undefined) store.endpointsChanges.endpointSliceUpdate(previous, true);
      slices.delete(op.name);
      return;
    }
    const next = sliceObject(op.name, op.endpoints);
    store.endpointsChanges.endpointSliceUpdate(next, false);
    slices.set(op.name, next);
  };
  return { ipt, store, proxier, apply };
}

/** Every table of a fresh fake given the jump rules and upstream's single full payload of `store`'s state. */
async function fullPayloadKernel(store: ProxyStateStore): Promise<string> {
  const fresh = new FakeIptables();
  await ensureJumpRules(fresh, JUMP_CHAINS);
  const { payload } = renderIptables({
    state: store.state,
    settings: FAKE_PROXIER_SETTINGS,
    fullSync: true,
    changedServices: new Set(),
    existingNatChains: [],
  });
  await fresh.restore(payload, { noflush: true, counters: true });
  return fresh.save();
}

test("after any sequence of partial syncs the kernel holds exactly what the full payload of the same state would", async () => {
  let positionedInserts = 0;
  await fc.assert(
    fc.asyncProperty(
      fc.constantFrom(2, 250),
      fc.array(opArb, { minLength: 1, maxLength: 8 }),
      fc.array(opArb, { minLength: 1, maxLength: 30 }),
      async (maxServicesPerTransaction, initial, ops) => {
        const { ipt, store, proxier, apply } = harness(maxServicesPerTransaction);
        for (const op of initial) if (op.kind !== "sync") apply(op);
        assert.equal((await proxier.syncProxyRules())?.fullSync, true);
        for (const [i, op] of [...ops, { kind: "sync" as const }].entries()) {
          if (op.kind !== "sync") {
            apply(op);
            continue;
          }
          const restores = ipt.calls.length;
          const report = await proxier.syncProxyRules();
          assert.equal(report?.fullSync, false, `sync after op ${i} is partial`);
          for (const call of ipt.calls.slice(restores)) {
            positionedInserts += (call.payload ?? "").match(/^-I KUBE-\S+ (?!1 )\d+ /gm)?.length ?? 0;
          }
          assert.equal(
            await ipt.save(),
            await fullPayloadKernel(store),
            `kernel after the sync after op ${i}`,
          );
        }
      },
    ),
    { numRuns: 300 },
  );
  assert.ok(positionedInserts > 0, "the runs edited chains in place at positions below the first");
});
