/**
 * Whatever the sequence of changes and however much time passes between syncs, after each
 * partial sync the fake kernel must hold what one full sync of the same state writes into an
 * empty kernel, apart from the stale chains still waiting (empty) for their deletion. The fake
 * refuses what the kernel refuses (a missing chain, a still-referenced chain, an element that
 * exists with another value), so a wrongly ordered or incomplete transaction fails here too.
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import fc from "fast-check";
import { upstreamTestSettings } from "../../../src/backends/nftables/settings.ts";
import type { Endpoint, ProxyState, ServicePort } from "../../../src/proxy/types.ts";
import { changedServiceNames } from "../../support/iptables-golden.ts";
import { endpoint, proxyState, servicePort } from "../../support/iptables-builders.ts";
import { sortNFTablesDump } from "../../support/nftables-golden.ts";
import { fakeNftablesNode } from "../../support/nftables-writer.ts";

const SETTINGS = upstreamTestSettings("IPv4");

interface ServiceVariant {
  readonly nodePort: boolean;
  readonly externalIP: boolean;
  readonly lb: boolean;
  readonly sourceRanges: boolean;
  readonly affinity: boolean;
  readonly externalLocal: boolean;
  readonly internalLocal: boolean;
  readonly endpoints: readonly { readonly host: number; readonly local: boolean; readonly ready: boolean }[];
}

const variantArb: fc.Arbitrary<ServiceVariant> = fc.record({
  nodePort: fc.boolean(),
  externalIP: fc.boolean(),
  lb: fc.boolean(),
  sourceRanges: fc.boolean(),
  affinity: fc.boolean(),
  externalLocal: fc.boolean(),
  internalLocal: fc.boolean(),
  endpoints: fc.uniqueArray(
    fc.record({ host: fc.integer({ min: 1, max: 5 }), local: fc.boolean(), ready: fc.boolean() }),
    {
      maxLength: 3,
      selector: (e) => e.host,
    },
  ),
});

/** Up to four Services, each present or not. */
const stateArb = fc.array(fc.option(variantArb, { nil: null }), { minLength: 4, maxLength: 4 });

function stateOf(variants: readonly (ServiceVariant | null)[]): ProxyState {
  const entries: Array<[ServicePort, Endpoint[]]> = [];
  variants.forEach((v, i) => {
    if (v === null) return;
    const sp = servicePort({
      namespace: `ns${i}`,
      name: `svc${i}`,
      portName: "p80",
      clusterIP: `172.30.0.${41 + i}`,
      nodePort: v.nodePort || v.lb ? 3001 + i : 0,
      externalIPs: v.externalIP ? [`192.168.99.${22 + i}`] : [],
      loadBalancerVIPs: v.lb ? [`1.2.3.${4 + i}`] : [],
      loadBalancerSourceRanges: v.lb && v.sourceRanges ? ["203.0.113.0/25"] : [],
      sessionAffinity: v.affinity ? { type: "ClientIP", maxAgeSeconds: 10800 } : null,
      externalPolicyLocal: v.externalLocal && (v.nodePort || v.lb || v.externalIP),
      internalPolicyLocal: v.internalLocal,
    });
    entries.push([
      sp,
      v.endpoints.map((e) => endpoint(`10.180.${i}.${e.host}`, 80, { isLocal: e.local, ready: e.ready })),
    ]);
  });
  return proxyState(entries);
}

/** The dump without the chains that wait, empty, for their deletion. */
function withoutStale(dump: string, stale: ReadonlySet<string>): string {
  return dump
    .split("\n")
    .filter((line) => {
      const m = /^add chain ip kube-proxy (\S+)$/.exec(line);
      return m === null || !stale.has(m[1]!);
    })
    .join("\n");
}

test("partial syncs leave the kernel as one full sync of the same state would", async () => {
  await fc.assert(
    fc.asyncProperty(
      fc.array(fc.record({ state: stateArb, wait: fc.constantFrom(0, 500, 2_000) }), {
        minLength: 1,
        maxLength: 8,
      }),
      async (steps) => {
        const node = fakeNftablesNode(SETTINGS);
        let previous: ProxyState | null = null;
        for (const [i, step] of steps.entries()) {
          const state = stateOf(step.state);
          await node.clock.advance(step.wait);
          await node.writer.write({
            state,
            fullSync: previous === null,
            changedServices: previous === null ? new Set() : changedServiceNames(previous, state),
            onTransaction: () => undefined,
          });
          previous = state;
          const fresh = fakeNftablesNode(SETTINGS);
          await fresh.writer.write({
            state,
            fullSync: true,
            changedServices: new Set(),
            onTransaction: () => undefined,
          });
          const stale = new Set(node.writer.pendingStaleChains.keys());
          assert.equal(
            sortNFTablesDump(withoutStale(node.dump(), stale)),
            sortNFTablesDump(fresh.dump()),
            `after step ${i + 1}`,
          );
        }
      },
    ),
    { numRuns: 150 },
  );
});
