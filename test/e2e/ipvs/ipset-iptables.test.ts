/**
 * ipvs mode's writer on this host's real ipset and iptables, inside a network namespace. The
 * host kernel has no IPVS and no dummy device, so those two stay fakes here (the VM suite runs
 * them for real); what this proves is that the ipset commands and the iptables payload the mode
 * writes are accepted by the kernel, converge, and are removed by the mode's cleanup. The source
 * ranges include the node IP: the KUBE-IPVS-OUT-FILTER rule written otherwise uses `-m ipvs`,
 * which this kernel (no ip_vs) rejects.
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import pino from "pino";
import { cleanupIptables } from "../../../src/backends/ipvs/cleanup.ts";
import { allIpsetNames, DUMMY_DEVICE } from "../../../src/backends/ipvs/names.ts";
import { IpvsWriter } from "../../../src/backends/ipvs/proxier.ts";
import { upstreamTestSettings } from "../../../src/backends/ipvs/settings.ts";
import { FakeInterfaces, FakeIpvs } from "../../../src/kernel/fake-ipvs.ts";
import { Iptables } from "../../../src/kernel/iptables.ts";
import { Ipset } from "../../../src/kernel/ipset.ts";
import { FakeClock } from "../../../src/proxy/clock.ts";
import { loadIpvsState } from "../../support/ipvs-golden.ts";
import { runner, withNetns } from "../../support/netns.ts";

const objects = (withLB: boolean) => `
apiVersion: v1
kind: Service
metadata: {namespace: ns1, name: web}
spec:
  type: ${withLB ? "LoadBalancer" : "NodePort"}
  clusterIP: 10.96.0.10
  clusterIPs: [10.96.0.10]
  externalIPs: [203.0.113.9]
  ${withLB ? "loadBalancerSourceRanges: [10.0.0.0/8, 192.168.0.0/16]" : ""}
  ports: [{name: http, port: 80, protocol: TCP, targetPort: 80, nodePort: 30080}]
${withLB ? "status: {loadBalancer: {ingress: [{ip: 198.51.100.20}]}}" : ""}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {namespace: ns1, name: web-1, labels: {kubernetes.io/service-name: web}}
addressType: IPv4
ports: [{name: http, port: 80, protocol: TCP}]
endpoints:
- {addresses: [10.244.0.9], nodeName: test-node}
`;

test("the ipset commands and iptables payload are accepted by the kernel, converge, and clean up", async () => {
  await withNetns(async (netns) => {
    const ipset = new Ipset(runner, netns);
    const ipt = new Iptables({ runner, family: "IPv4", backend: "nft", netns });
    const ipvs = new FakeIpvs();
    const ifs = new FakeInterfaces({ lo: ["127.0.0.1"], eth0: ["192.168.0.2"] });
    const writer = new IpvsWriter({
      kernel: {
        listIpvs: async () => ipvs.list(),
        restoreIpvs: async (lines) => ipvs.restore(lines),
        saveIpsets: () => ipset.save(),
        restoreIpsets: (lines) => ipset.restore(lines),
        ensureDummyDevice: async () => ifs.ensureDummy(DUMMY_DEVICE),
        addressesByInterface: async () => new Map(ifs.byName),
        addAddress: async (ip) => ifs.add(DUMMY_DEVICE, ip),
        deleteAddress: async (ip) => ifs.delete(DUMMY_DEVICE, ip),
        ipt,
      },
      settings: { ...upstreamTestSettings("IPv4"), nodeIP: "192.168.0.2" },
      excludeCIDRs: [],
      clock: new FakeClock(),
      log: pino({ level: "silent" }),
    });
    const sync = (withLB: boolean, fullSync: boolean) =>
      writer.write({
        state: loadIpvsState(objects(withLB), "e2e", "IPv4", "test-node"),
        fullSync,
        changedServices: new Set(["ns1/web"]),
        onTransaction: () => undefined,
      });

    await sync(true, true);
    const sets = new Map((await ipset.save()).map((s) => [s.name, s.entries]));
    assert.equal(sets.size, 17);
    assert.deepEqual([...(sets.get("KUBE-LOAD-BALANCER-SOURCE-CIDR") ?? [])].sort(), [
      "198.51.100.20,tcp:80,10.0.0.0/8",
      "198.51.100.20,tcp:80,192.168.0.0/16",
    ]);
    assert.deepEqual(sets.get("KUBE-LOAD-BALANCER-SOURCE-IP"), ["198.51.100.20,tcp:80,198.51.100.20"]);
    assert.deepEqual(sets.get("KUBE-LOOP-BACK"), ["10.244.0.9,tcp:80,10.244.0.9"]);
    assert.deepEqual(sets.get("KUBE-NODE-PORT-TCP"), ["30080"]);
    const filter = await ipt.save("filter");
    assert.match(
      filter,
      /-A KUBE-SOURCE-RANGES-FIREWALL -m comment --comment ".*" -m set --match-set KUBE-LOAD-BALANCER-SOURCE-IP dst,dst,src -j RETURN/,
    );
    assert.match(
      filter,
      /-A KUBE-IPVS-FILTER -m conntrack --ctstate NEW -m set --match-set KUBE-IPVS-IPS dst -j REJECT/,
    );
    assert.match(
      await ipt.save("nat"),
      /-A KUBE-SERVICES -m comment --comment "Kubernetes service lb portal" -m set --match-set KUBE-LOAD-BALANCER dst,dst -j KUBE-LOAD-BALANCER/,
    );

    // The LB goes: its entries leave the sets, its rules leave the chains; a second full sync is a no-op for the sets.
    await sync(false, false);
    const after = new Map((await ipset.save()).map((s) => [s.name, s.entries]));
    assert.deepEqual(after.get("KUBE-LOAD-BALANCER"), []);
    assert.deepEqual(after.get("KUBE-LOAD-BALANCER-SOURCE-CIDR"), []);
    assert.doesNotMatch(await ipt.save("filter"), /KUBE-LOAD-BALANCER-SOURCE-IP/);
    const out = await sync(false, true);
    assert.equal(out.details.ipsetCommands, 17, "only the create lines: every entry already there");

    assert.deepEqual(await cleanupIptables(ipt), []);
    for (const name of allIpsetNames()) await ipset.destroy(name);
    assert.deepEqual(await ipset.save(), []);
    assert.doesNotMatch(await ipt.save(), /KUBE-/);
  });
});
