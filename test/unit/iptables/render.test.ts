import { test } from "node:test";
import assert from "node:assert/strict";
import { RenderInputError, renderIptables } from "../../../src/backends/iptables/render.ts";
import type { RenderRequest } from "../../../src/backends/iptables/types.ts";
import { endpoint, FAKE_PROXIER_SETTINGS, proxyState, servicePort } from "../../support/iptables-builders.ts";

const svc1 = servicePort({ namespace: "ns1", name: "svc1", portName: "p80", clusterIP: "172.30.0.41" });
const svc3 = servicePort({ namespace: "ns3", name: "svc3", portName: "p80", clusterIP: "172.30.0.43" });

function request(partial: Partial<RenderRequest> & Pick<RenderRequest, "state">): RenderRequest {
  return {
    settings: FAKE_PROXIER_SETTINGS,
    fullSync: true,
    changedServices: new Set(),
    existingNatChains: [],
    ...partial,
  };
}

test("raw layout is exactly docs/iptables.md §4.2's example (SyncProxyRulesRepeated step 3, deterministic order)", () => {
  const state = proxyState([
    [svc1, [endpoint("10.0.1.1", 80)]],
    [svc3, [endpoint("10.0.3.1", 80)]],
  ]);
  const result = renderIptables(
    request({
      state,
      fullSync: false,
      changedServices: new Set(["ns2/svc2"]),
      existingNatChains: [
        "KUBE-SERVICES",
        "KUBE-SEP-SNQ3ZNILQDEJNDQO",
        "KUBE-SVC-XPGD46QRK7WJZT7O",
        "KUBE-SVC-2VJB64SDSIJUP5T6",
        "KUBE-SEP-UHEGFW77JX3KXTOV",
        "KUBE-SVC-X27LE4BHSL4DOUIK",
        "KUBE-SEP-BSWRHOQ77KEXZLNL",
      ],
    }),
  );
  const expected = [
    "*filter",
    ":KUBE-SERVICES - [0:0]",
    ":KUBE-EXTERNAL-SERVICES - [0:0]",
    ":KUBE-FORWARD - [0:0]",
    ":KUBE-NODEPORTS - [0:0]",
    ":KUBE-PROXY-FIREWALL - [0:0]",
    ":KUBE-FIREWALL - [0:0]",
    '-A KUBE-FIREWALL -m comment --comment "block incoming localnet connections" -d 127.0.0.0/8 ! -s 127.0.0.0/8 -m conntrack ! --ctstate RELATED,ESTABLISHED,DNAT -j DROP',
    "-A KUBE-FORWARD -m conntrack --ctstate INVALID -m nfacct --nfacct-name ct_state_invalid_dropped_pkts -j DROP",
    '-A KUBE-FORWARD -m comment --comment "kubernetes forwarding rules" -m mark --mark 0x4000/0x4000 -j ACCEPT',
    '-A KUBE-FORWARD -m comment --comment "kubernetes forwarding conntrack rule" -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT',
    "COMMIT",
    "*nat",
    ":KUBE-SERVICES - [0:0]",
    ":KUBE-NODEPORTS - [0:0]",
    ":KUBE-POSTROUTING - [0:0]",
    ":KUBE-MARK-MASQ - [0:0]",
    ":KUBE-SEP-UHEGFW77JX3KXTOV - [0:0]",
    ":KUBE-SVC-2VJB64SDSIJUP5T6 - [0:0]",
    "-A KUBE-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN",
    "-A KUBE-POSTROUTING -j MARK --xor-mark 0x4000",
    '-A KUBE-POSTROUTING -m comment --comment "kubernetes service traffic requiring SNAT" -j MASQUERADE',
    "-A KUBE-MARK-MASQ -j MARK --or-mark 0x4000",
    '-A KUBE-SERVICES -m comment --comment "ns1/svc1:p80 cluster IP" -m tcp -p tcp -d 172.30.0.41 --dport 80 -j KUBE-SVC-XPGD46QRK7WJZT7O',
    '-A KUBE-SERVICES -m comment --comment "ns3/svc3:p80 cluster IP" -m tcp -p tcp -d 172.30.0.43 --dport 80 -j KUBE-SVC-X27LE4BHSL4DOUIK',
    "-X KUBE-SEP-UHEGFW77JX3KXTOV",
    "-X KUBE-SVC-2VJB64SDSIJUP5T6",
    '-A KUBE-SERVICES -m comment --comment "kubernetes service nodeports; NOTE: this must be the last rule in this chain" -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS',
    "COMMIT",
    "",
  ].join("\n");
  assert.equal(result.payload, expected);
  assert.equal(result.payloadParts.join(""), expected, "the pieces a writer sends are the same text");
  assert.deepEqual(result.nat.deletedChains, ["KUBE-SEP-UHEGFW77JX3KXTOV", "KUBE-SVC-2VJB64SDSIJUP5T6"]);
  assert.equal(result.counts.natRulesWritten, 7);
  assert.equal(result.counts.natRulesTotal, 15);
  assert.equal(result.counts.filterRules, 4);
  assert.deepEqual(result.nat.serviceBlocks, []);
  assert.deepEqual([...result.activeNatChains].sort(), [
    "KUBE-SEP-BSWRHOQ77KEXZLNL",
    "KUBE-SEP-SNQ3ZNILQDEJNDQO",
    "KUBE-SVC-X27LE4BHSL4DOUIK",
    "KUBE-SVC-XPGD46QRK7WJZT7O",
  ]);
});

test("existingNatChains null skips stale-chain deletion", () => {
  const state = proxyState([[svc1, [endpoint("10.0.1.1", 80)]]]);
  const result = renderIptables(request({ state, existingNatChains: null }));
  assert.deepEqual(result.nat.deletedChains, []);
  assert.ok(!result.payload.includes("-X "));
});

test("a partial sync writes only changed services' chains, in the structured result too", () => {
  const state = proxyState([
    [svc1, [endpoint("10.0.1.1", 80)]],
    [svc3, [endpoint("10.0.3.1", 80), endpoint("10.0.3.2", 80)]],
  ]);
  const result = renderIptables(request({ state, fullSync: false, changedServices: new Set(["ns3/svc3"]) }));
  assert.deepEqual(
    result.nat.serviceBlocks?.map((b) => b.service),
    ["ns3/svc3"],
  );
  assert.ok(!result.payload.includes(":KUBE-SVC-XPGD46QRK7WJZT7O"));
  assert.ok(result.payload.includes(":KUBE-SVC-X27LE4BHSL4DOUIK"));
  assert.equal(result.nat.captureRuleLines.length, 2);
  // svc1 keeps 4 rules in the kernel; svc3 writes masq + 2 SVC->SEP + 2x2 SEP rules.
  assert.equal(result.counts.natRulesWritten, 4 + 2 + 7 + 1);
  assert.equal(result.counts.natRulesTotal, result.counts.natRulesWritten + 4);
});

test("a full sync after syncs of the same state writes what the first full sync wrote (the memo keeps no rule text)", () => {
  const state = proxyState([
    [svc1, [endpoint("10.0.1.1", 80)]],
    [svc3, [endpoint("10.0.3.1", 80), endpoint("10.0.3.2", 80)]],
  ]);
  const first = renderIptables(request({ state })).payload;
  assert.ok(first.includes("-j DNAT --to-destination 10.0.3.2:80"));
  // The same state objects: every service port is a memo hit from here on.
  const partial = renderIptables(request({ state, fullSync: false, changedServices: new Set(["ns3/svc3"]) }));
  assert.deepEqual(
    partial.nat.serviceBlocks?.map((b) => b.service),
    ["ns3/svc3"],
  );
  assert.ok(partial.payload.includes("-j DNAT --to-destination 10.0.3.2:80"));
  assert.equal(renderIptables(request({ state })).payload, first);
});
test("large-cluster mode strips comments only from rewritten SEP and SVC->SEP rules", () => {
  const eps = [endpoint("10.0.3.1", 80), endpoint("10.0.3.2", 80), endpoint("10.0.3.3", 80)];
  const state = proxyState([[svc3, eps]]);
  const settings = { ...FAKE_PROXIER_SETTINGS, largeClusterEndpointsThreshold: 2 };
  const large = renderIptables(request({ state, settings }));
  assert.equal(large.largeClusterMode, true);
  assert.ok(
    large.payload.includes('-A KUBE-SVC-X27LE4BHSL4DOUIK -m comment --comment "ns3/svc3:p80 cluster IP"'),
  );
  assert.ok(!/-A KUBE-SEP-\S+ -m comment/.test(large.payload));
  assert.ok(!large.payload.includes("->"));
  const normal = renderIptables(
    request({ state, settings: { ...settings, largeClusterEndpointsThreshold: 3 } }),
  );
  assert.equal(normal.largeClusterMode, false);
  assert.ok(normal.payload.includes('"ns3/svc3:p80 -> 10.0.3.1:80"'));
});

test("PreferSameNode node hints are honoured only with the feature gate", () => {
  const eps = [
    endpoint("10.0.1.1", 80, { nodeHints: ["test-node"], isLocal: true }),
    endpoint("10.0.1.2", 80, { nodeHints: ["other-node"] }),
  ];
  const state = proxyState([[svc1, eps]]);
  const on = renderIptables(request({ state }));
  assert.ok(on.payload.includes("10.0.1.1:80"));
  assert.ok(!on.payload.includes("10.0.1.2:80"));
  const off = renderIptables(request({ state, featureGates: { PreferSameTrafficDistribution: false } }));
  assert.ok(off.payload.includes("10.0.1.2:80"));
});

test("noLocalEndpoints counts ports with endpoints but none local, per policy", () => {
  const itp = servicePort({ namespace: "ns1", name: "a", internalPolicyLocal: true });
  const etp = servicePort({ namespace: "ns1", name: "b", nodePort: 30001, externalPolicyLocal: true });
  const none = servicePort({ namespace: "ns1", name: "c", internalPolicyLocal: true });
  const state = proxyState([
    [itp, [endpoint("10.0.0.1", 80)]],
    [etp, [endpoint("10.0.0.2", 80)]],
    [none, []],
  ]);
  assert.deepEqual(renderIptables(request({ state })).noLocalEndpoints, { internal: 1, external: 1 });
});

test("service iteration order is by ServicePortName string, then protocol", () => {
  const a = servicePort({
    namespace: "ns",
    name: "a",
    portName: "p",
    protocol: "UDP",
    clusterIP: "172.30.0.1",
  });
  const b = servicePort({
    namespace: "ns",
    name: "a",
    portName: "p",
    protocol: "TCP",
    clusterIP: "172.30.0.2",
  });
  const c = servicePort({ namespace: "ns", name: "a-b", clusterIP: "172.30.0.3" });
  const state = proxyState([
    [c, [endpoint("10.0.0.3", 80)]],
    [a, [endpoint("10.0.0.1", 80)]],
    [b, [endpoint("10.0.0.2", 80)]],
  ]);
  const order = renderIptables(request({ state })).nat.captureRuleLines.map((l) => /-d (\S+)/.exec(l)?.[1]);
  assert.deepEqual(order, ["172.30.0.3", "172.30.0.2", "172.30.0.1"]);
});

test("tokens that could change a rule's meaning are refused with a typed error", () => {
  const bad = [
    servicePort({ namespace: "ns1", name: "svc1", portName: 'p80" -j ACCEPT' }),
    servicePort({ namespace: "ns1", name: "svc1", clusterIP: "172.30.0.1\n-A X" }),
    servicePort({ namespace: "ns1", name: "svc1", externalIPs: ["1.2.3.4 -j ACCEPT"] }),
  ];
  for (const sp of bad) {
    assert.throws(
      () => renderIptables(request({ state: proxyState([[sp, [endpoint("10.0.0.1", 80)]]]) })),
      (err: unknown) => err instanceof RenderInputError && err.code === "KPT_RENDER_INPUT",
    );
  }
  const badEndpoint = proxyState([[svc1, [endpoint('10.0.0.1"', 80)]]]);
  assert.throws(() => renderIptables(request({ state: badEndpoint })), RenderInputError);
  const badDetector = {
    ...FAKE_PROXIER_SETTINGS,
    localDetector: { mode: "BridgeInterface" as const, interfaceName: "br 0" },
  };
  assert.throws(
    () => renderIptables(request({ state: proxyState([]), settings: badDetector })),
    RenderInputError,
  );
});
