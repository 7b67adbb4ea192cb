import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { probe } from "../../../src/sandbox/client.ts";
import { buildSeedTopology, SEED } from "../../../src/sandbox/seed.ts";
import type { SeedTopology } from "../../../src/sandbox/seed.ts";
import { Sandbox } from "../../../src/sandbox/topology.ts";

/*
 * The sandbox exists to carry kube-proxy's data path, in either mode. These rules are a
 * hand-written miniature of what kube-proxy writes for the seed's Service, loaded into the node
 * namespace only: iptables (KUBE-SERVICES → KUBE-SVC → KUBE-SEP → DNAT, masquerade by mark) or
 * nftables (services → service → endpoint chains by `numgen`, the same mark). They check the
 * topology, not the renderer: the node namespace must see pod, hairpin and external traffic in
 * its nat hooks.
 */
function seedRules(topology: SeedTopology): string {
  const [a, b] = topology.pods;
  assert.ok(a !== undefined && b !== undefined);
  const svc = `-d ${SEED.clusterIP}/32 -p tcp -m tcp --dport ${SEED.port}`;
  return [
    "*nat",
    ":KUBE-SERVICES - [0:0]",
    ":KUBE-NODEPORTS - [0:0]",
    ":KUBE-POSTROUTING - [0:0]",
    ":KUBE-MARK-MASQ - [0:0]",
    ":KUBE-SVC-SEED - [0:0]",
    ":KUBE-SEP-A - [0:0]",
    ":KUBE-SEP-B - [0:0]",
    "-A PREROUTING -j KUBE-SERVICES",
    "-A OUTPUT -j KUBE-SERVICES",
    "-A POSTROUTING -j KUBE-POSTROUTING",
    "-A KUBE-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN",
    "-A KUBE-POSTROUTING -j MARK --xor-mark 0x4000",
    "-A KUBE-POSTROUTING -j MASQUERADE",
    "-A KUBE-MARK-MASQ -j MARK --or-mark 0x4000",
    `-A KUBE-SERVICES ${svc} -j KUBE-SVC-SEED`,
    "-A KUBE-SERVICES -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS",
    `-A KUBE-NODEPORTS -p tcp -m tcp --dport ${SEED.nodePort} -j KUBE-MARK-MASQ`,
    `-A KUBE-NODEPORTS -p tcp -m tcp --dport ${SEED.nodePort} -j KUBE-SVC-SEED`,
    `-A KUBE-SVC-SEED ! -s 10.244.0.0/16 ${svc} -j KUBE-MARK-MASQ`,
    "-A KUBE-SVC-SEED -m statistic --mode random --probability 0.50000000000 -j KUBE-SEP-A",
    "-A KUBE-SVC-SEED -j KUBE-SEP-B",
    `-A KUBE-SEP-A -s ${a.ipv4}/32 -j KUBE-MARK-MASQ`,
    `-A KUBE-SEP-A -p tcp -m tcp -j DNAT --to-destination ${a.ipv4}:${SEED.port}`,
    `-A KUBE-SEP-B -s ${b.ipv4}/32 -j KUBE-MARK-MASQ`,
    `-A KUBE-SEP-B -p tcp -m tcp -j DNAT --to-destination ${b.ipv4}:${SEED.port}`,
    "COMMIT",
    "",
  ].join("\n");
}

/** The same miniature as one nftables table of its own (not nftables mode's layout or names). */
function seedTable(topology: SeedTopology): string {
  const [a, b] = topology.pods;
  assert.ok(a !== undefined && b !== undefined);
  const svc = `ip daddr ${SEED.clusterIP} tcp dport ${SEED.port}`;
  const endpoint = (name: string, ip: string) =>
    `  chain ${name} { ip saddr ${ip} jump mark-for-masquerade; meta l4proto tcp dnat to ${ip}:${SEED.port}; }`;
  return [
    "table ip kpt-seed {",
    "  chain nat-prerouting { type nat hook prerouting priority dstnat; policy accept; jump services; }",
    "  chain nat-output { type nat hook output priority -100; policy accept; jump services; }",
    "  chain nat-postrouting { type nat hook postrouting priority srcnat; policy accept; jump masquerading; }",
    "  chain masquerading { mark and 0x4000 == 0 return; mark set mark xor 0x4000; masquerade fully-random; }",
    "  chain mark-for-masquerade { mark set mark or 0x4000; }",
    `  chain services { ${svc} goto service; fib daddr type local tcp dport ${SEED.nodePort} goto external; }`,
    "  chain external { jump mark-for-masquerade; goto service; }",
    `  chain service { ${svc} ip saddr != 10.244.0.0/16 jump mark-for-masquerade; numgen random mod 2 vmap { 0 : goto endpoint-a, 1 : goto endpoint-b }; }`,
    endpoint("endpoint-a", a.ipv4),
    endpoint("endpoint-b", b.ipv4),
    "}",
    "",
  ].join("\n");
}

for (const mode of ["iptables", "nftables"] as const)
  describe(`the seed topology carries a kube-proxy-shaped service path (${mode} rules)`, () => {
    let sandbox: Sandbox;
    let seed: SeedTopology;

    before(async () => {
      sandbox = await Sandbox.create({ prefix: mode === "iptables" ? "kptsbxsvc" : "kptsbxsvcn" });
      seed = await buildSeedTopology(sandbox);
      if (mode === "iptables")
        await sandbox.exec(SEED.node.name, ["iptables-restore"], { stdin: seedRules(seed) });
      else await sandbox.exec(SEED.node.name, ["nft", "-f", "-"], { stdin: seedTable(seed) });
    });

    after(() => sandbox.dispose());

    it("balances a pod's ClusterIP requests over both pods, masquerading only the hairpin", async () => {
      const [a, b] = seed.pods;
      assert.ok(a !== undefined && b !== undefined);
      const [report] = await probe(sandbox, a.name, [
        { protocol: "tcp", host: SEED.clusterIP, port: SEED.port, count: 20 },
      ]);
      assert.ok(report !== undefined);
      assert.deepEqual(report.errors, {}, JSON.stringify(report.results));
      assert.deepEqual(Object.keys(report.byPod).sort(), [a.name, b.name].sort());
      for (const outcome of report.results) {
        if (!outcome.ok) assert.fail(outcome.detail);
        const expectedClient: string = outcome.pod === a.name ? seed.node.podGatewayIPv4 : a.ipv4;
        assert.equal(outcome.client, expectedClient, `${outcome.pod} saw ${outcome.client}`);
      }
    });

    it("serves the NodePort and the routed ClusterIP to the external client, masqueraded", async () => {
      const reports = await probe(sandbox, SEED.external.name, [
        { protocol: "tcp", host: SEED.node.ipv4, port: SEED.nodePort, count: 20 },
        { protocol: "tcp", host: SEED.clusterIP, port: SEED.port, count: 20 },
      ]);
      for (const report of reports) {
        assert.deepEqual(report.errors, {}, JSON.stringify(report.results));
        assert.deepEqual(Object.keys(report.byPod).sort(), seed.pods.map((pod) => pod.name).sort());
        assert.deepEqual(report.byClient, { [seed.node.podGatewayIPv4]: 20 });
      }
    });
  });
