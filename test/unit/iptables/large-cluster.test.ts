/**
 * Upstream TestSyncProxyRulesLargeClusterMode as a sequence on one simulated kernel (docs/iptables.md §4.3,
 * §4.5, §6.3): crossing 1000 endpoints drops comments only from rules that are rewritten, a full
 * sync drops them everywhere, and stale chains are deleted only when the caller asks for it.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { renderIptables } from "../../../src/backends/iptables/render.ts";
import type { RenderRequest } from "../../../src/backends/iptables/types.ts";
import type { Endpoint, ServicePort } from "../../../src/proxy/types.ts";
import { endpoint, FAKE_PROXIER_SETTINGS, proxyState, servicePort } from "../../support/iptables-builders.ts";
import { checkIPTablesRuleJumps } from "../../support/iptables-normalise.ts";
import { SimulatedIptables } from "../../support/iptables-restore-sim.ts";

function manyEndpoints(prefix: string, count: number, port: number): Endpoint[] {
  return Array.from({ length: count }, (_, i) => endpoint(`${prefix}.${i >> 8}.${i & 255}`, port));
}

const svc1 = servicePort({ namespace: "ns1", name: "svc1", portName: "p80", clusterIP: "172.30.0.41" });
const svc2 = servicePort({
  namespace: "ns2",
  name: "svc2",
  portName: "p8080",
  clusterIP: "172.30.0.42",
  port: 8080,
});
const svc3 = servicePort({
  namespace: "ns3",
  name: "svc3",
  portName: "p8081",
  clusterIP: "172.30.0.43",
  port: 8081,
});
const svc4 = servicePort({
  namespace: "ns4",
  name: "svc4",
  portName: "p8082",
  clusterIP: "172.30.0.44",
  port: 8082,
});
const eps1 = manyEndpoints("10.0", 499, 80);
const eps2 = manyEndpoints("10.1", 499, 8080);
const eps3 = [endpoint("203.0.113.4", 8081), endpoint("203.0.113.5", 8081), endpoint("203.0.113.6", 8081)];
const eps4 = [endpoint("10.4.0.1", 8082)];

test("large cluster mode follows upstream's sequence", () => {
  const kernel = new SimulatedIptables();
  const sync = (
    entries: (readonly [ServicePort, readonly Endpoint[]])[],
    partial: Partial<RenderRequest>,
  ): ReturnType<typeof renderIptables> => {
    const result = renderIptables({
      state: proxyState(entries),
      settings: FAKE_PROXIER_SETTINGS,
      fullSync: true,
      changedServices: new Set(),
      existingNatChains: kernel.chains("nat"),
      ...partial,
    });
    kernel.restore(result.payload);
    return result;
  };

  const first = sync(
    [
      [svc1, eps1],
      [svc2, eps2],
    ],
    {},
  );
  assert.equal(first.largeClusterMode, false);
  assert.ok(
    first.payload.includes(
      "-A KUBE-SEP-DKGQUZGBKLTPAR56 -m comment --comment ns1/svc1:p80 -m tcp -p tcp -j DNAT --to-destination 10.0.0.0:80\n",
    ),
  );
  assert.deepEqual(checkIPTablesRuleJumps(first.payload), []);

  const crossing = sync(
    [
      [svc1, eps1],
      [svc2, eps2],
      [svc3, eps3],
    ],
    { fullSync: false, changedServices: new Set(["ns3/svc3"]) },
  );
  assert.equal(crossing.largeClusterMode, true);
  assert.ok(
    crossing.payload.includes(
      "-A KUBE-SEP-RUVVH7YV3PHQBDOS -m tcp -p tcp -j DNAT --to-destination 203.0.113.4:8081\n",
    ),
  );
  assert.ok(!crossing.payload.includes("KUBE-SEP-DKGQUZGBKLTPAR56 -"));
  assert.ok(
    kernel.rules("nat", "KUBE-SEP-DKGQUZGBKLTPAR56").some((r) => r.includes("--comment ns1/svc1:p80")),
  );

  const full = sync(
    [
      [svc1, eps1],
      [svc2, eps2],
      [svc3, eps3],
    ],
    {},
  );
  assert.ok(
    full.payload.includes(
      "-A KUBE-SEP-DKGQUZGBKLTPAR56 -m tcp -p tcp -j DNAT --to-destination 10.0.0.0:80\n",
    ),
  );
  assert.ok(!/-A KUBE-SEP-\S+ -m comment/.test(full.payload));
  assert.deepEqual(checkIPTablesRuleJumps(full.payload), []);

  sync(
    [
      [svc1, eps1],
      [svc2, eps2],
      [svc3, eps3],
      [svc4, eps4],
    ],
    { fullSync: false, changedServices: new Set(["ns4/svc4"]) },
  );
  assert.ok(kernel.chains("nat").includes("KUBE-SVC-EBDQOQU5SJFXRIL3"));
  // Deleted while the last cleanup is recent: the proxier passes no chain list, so no -X.
  const recent = sync(
    [
      [svc1, eps1],
      [svc2, eps2],
      [svc3, eps3],
    ],
    { fullSync: false, changedServices: new Set(["ns4/svc4"]), existingNatChains: null },
  );
  assert.ok(!recent.payload.includes("-X "));
  assert.ok(kernel.chains("nat").includes("KUBE-SEP-SU5STNODRYEWJAUF"));
  const later = sync(
    [
      [svc1, eps1],
      [svc2, eps2],
      [svc3, eps3],
    ],
    { fullSync: false },
  );
  assert.deepEqual(later.nat.deletedChains, ["KUBE-SEP-SU5STNODRYEWJAUF", "KUBE-SVC-EBDQOQU5SJFXRIL3"]);
  assert.ok(later.payload.includes("-X KUBE-SEP-SU5STNODRYEWJAUF\n-X KUBE-SVC-EBDQOQU5SJFXRIL3\n"));
  assert.ok(!kernel.chains("nat").includes("KUBE-SVC-EBDQOQU5SJFXRIL3"));
  assert.ok(!kernel.chains("nat").includes("KUBE-SEP-SU5STNODRYEWJAUF"));
});
