/**
 * The local-traffic detector's nftables matches, as upstream v1.35 emits them
 * (pkg/proxy/util/localdetector.go, `IfLocalNFT` / `IfNotLocalNFT`): interfaces are matched by
 * name (`iifname`), never by index (`iif`), which nft resolves when loading the rule and refuses
 * while the interface does not exist.
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import { renderNftables } from "../../../src/backends/nftables/render.ts";
import { upstreamTestSettings } from "../../../src/backends/nftables/settings.ts";
import { planFullSync } from "../../../src/backends/nftables/transactions.ts";
import type { LocalDetector } from "../../../src/proxy/node.ts";
import { endpoint, proxyState, servicePort } from "../../support/iptables-builders.ts";

const cases: ReadonlyArray<[LocalDetector, string]> = [
  [{ mode: "BridgeInterface", interfaceName: "cbr0" }, "iifname != cbr0 jump mark-for-masquerade"],
  [{ mode: "InterfaceNamePrefix", prefix: "veth" }, "iifname != veth* jump mark-for-masquerade"],
  [{ mode: "ClusterCIDR", cidr: "10.0.0.0/8" }, "ip saddr != 10.0.0.0/8 jump mark-for-masquerade"],
];

for (const [detector, expected] of cases) {
  test(`${detector.mode}: the ClusterIP masquerade rule matches as upstream (${expected})`, () => {
    const sp = servicePort({ namespace: "ns1", name: "svc1", portName: "p80", clusterIP: "172.30.0.41" });
    const settings = { ...upstreamTestSettings("IPv4"), localDetector: detector };
    const ruleset = renderNftables({ state: proxyState([[sp, [endpoint("10.180.0.1", 80)]]]), settings });
    const payload = planFullSync(ruleset, null, { resetBaseChains: false }).payload;
    const masq = payload
      .split("\n")
      .filter((l) => l.includes("jump mark-for-masquerade") && l.includes("service-"));
    assert.equal(masq.length, 1, payload);
    assert.ok(masq[0]!.endsWith(`ip daddr 172.30.0.41 ${expected}`), masq[0]);
    assert.doesNotMatch(payload, /\biif\b/);
  });
}
