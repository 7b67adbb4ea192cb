/**
 * nftables mode on a real kernel, in the sandbox's own namespaces: the seed's nginx Service
 * (ClusterIP + NodePort, two pods) programmed by the daemon with --proxy-mode nftables, real TCP
 * through the ClusterIP (from a pod and from the node) and the NodePort (from the external
 * client), traffic following an endpoint's removal, upstream's nftables metrics on /metrics, and
 * nftables tables of other components left alone by the syncs and by --cleanup. The node ran
 * iptables mode first: nftables mode's start-up removes its chains (upstream's platformCleanup)
 * and keeps another component's iptables rules.
 */
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { probe, type ProbeReport } from "../../../src/sandbox/client.ts";
import { buildSeedTopology, SEED, seedManifests, type SeedTopology } from "../../../src/sandbox/seed.ts";
import { Sandbox } from "../../../src/sandbox/topology.ts";
import { addNodeDefaultRoute, daemonArgv, ProxyDaemon, waitFor } from "../../support/daemon.ts";

const NODE = SEED.node.name;
const CLIENT = SEED.external.name;
const FOREIGN = [
  "table inet foreign-firewall {",
  "  chain input { type filter hook input priority 10 ; policy accept ; tcp dport 9999 counter accept ; }",
  "}",
  "table inet kube-proxy {",
  "  chain c { type filter hook forward priority 5 ; policy accept ; }",
  "}",
  "",
].join("\n");

/** Another component's iptables rules, which no mode's clean-up may touch. */
const FOREIGN_IPTABLES = [
  "*nat",
  ":FOREIGN-NAT - [0:0]",
  "-A POSTROUTING -s 10.99.0.0/16 -j FOREIGN-NAT",
  "-A FOREIGN-NAT -j MASQUERADE",
  "COMMIT",
  "",
].join("\n");

const tcp = (host: string, port: number, count: number) =>
  ({ protocol: "tcp", host, port, count, timeoutMs: 3_000 }) as const;

function answeredBy(report: ProbeReport | undefined): string[] {
  assert.ok(report !== undefined);
  assert.deepEqual(
    report.errors,
    {},
    `${report.host}:${report.port}: ${JSON.stringify(report.results.slice(0, 5))}`,
  );
  return Object.keys(report.byPod).sort();
}

describe("nftables mode serves the seed Service on a real kernel", () => {
  let sandbox: Sandbox | undefined;
  let seed: SeedTopology;
  let daemon: ProxyDaemon | undefined;
  let foreignBefore = "";
  let iptablesModeLeft = "";
  const iptablesSave = async () => (await sandbox!.exec(NODE, ["iptables-save"])).stdout;
  const nft = async (...args: string[]) => (await sandbox!.exec(NODE, ["nft", ...args])).stdout;
  const foreignTables = async () =>
    (await nft("list", "table", "inet", "foreign-firewall")) +
    (await nft("list", "table", "inet", "kube-proxy"));

  before(async () => {
    sandbox = await Sandbox.create({ prefix: "kptnft" });
    seed = await buildSeedTopology(sandbox);
    // The node's own connections to a ClusterIP need a route to leave by before nat output rewrites them.
    await addNodeDefaultRoute(sandbox, NODE, "192.168.50.254");
    await sandbox.exec(NODE, ["nft", "-f", "-"], { stdin: FOREIGN });
    foreignBefore = await foreignTables();
    await sandbox.exec(NODE, ["iptables-restore", "--noflush"], { stdin: FOREIGN_IPTABLES });
    const manifests = seedManifests(seed.pods.map((p) => ({ name: p.name, ipv4: p.ipv4 })));
    // iptables mode first, stopped with its rules in place (SIGTERM leaves them, as upstream).
    const previous = await ProxyDaemon.start(sandbox, {
      node: NODE,
      manifests,
      args: ["--proxy-mode", "iptables", "--cluster-cidr", "10.244.0.0/16"],
    });
    await previous.dispose();
    iptablesModeLeft = await iptablesSave();
    daemon = await ProxyDaemon.start(sandbox, {
      node: NODE,
      manifests,
      // A short sync period: the monitor looks for our table this often.
      args: ["--proxy-mode", "nftables", "--cluster-cidr", "10.244.0.0/16", "--iptables-sync-period", "2s"],
    });
  });

  after(async () => {
    try {
      await daemon?.dispose();
    } finally {
      await sandbox?.dispose();
    }
  });

  it("removed iptables mode's chains at start-up and kept another component's iptables rules", async () => {
    assert.match(iptablesModeLeft, /^:KUBE-SERVICES /m, "iptables mode left its chains");
    assert.match(iptablesModeLeft, /^-A KUBE-SVC-/m);
    const now = await iptablesSave();
    assert.doesNotMatch(now, /KUBE-(SERVICES|SVC-|SEP-|NODEPORTS|POSTROUTING|MARK-MASQ|PROXY-CANARY)/, now);
    assert.match(now, /^:FOREIGN-NAT /m);
    assert.match(now, /^-A POSTROUTING -s 10\.99\.0\.0\/16 -j FOREIGN-NAT$/m);
    assert.match(now, /^-A FOREIGN-NAT -j MASQUERADE$/m);
  });

  it("writes table ip kube-proxy with the Service's chains", async () => {
    const table = await nft("list", "table", "ip", "kube-proxy");
    assert.match(table, /chain service-[A-Z2-7]{8}-default\/nginx\/tcp\/ \{/);
    assert.match(
      table,
      new RegExp(`${SEED.clusterIP.replaceAll(".", "\\.")} \\. tcp \\. 80 : goto service-`),
    );
    assert.match(table, /tcp \. 30978 : goto external-/);
    assert.match(table, /elements = \{ 192\.168\.50\.1 \}/, "nodeport-ips holds the primary node IP");
  });

  it("exports upstream's nftables metrics on /metrics, and none of iptables mode's", async () => {
    const text = await daemon!.metrics();
    for (const name of [
      "kubeproxy_sync_proxy_rules_nftables_sync_failures_total",
      "kubeproxy_sync_proxy_rules_nftables_cleanup_failures_total",
    ]) {
      assert.match(text, new RegExp(`^# TYPE ${name} counter$`, "m"));
      assert.match(text, new RegExp(`^${name}\\{ip_family="IPv4"\\} 0$`, "m"));
    }
    assert.match(text, /^kubeproxy_sync_proxy_rules_last_timestamp_seconds\{ip_family="IPv4"\} [1-9]/m);
    assert.doesNotMatch(text, /^kubeproxy_sync_proxy_rules_iptables/m);
  });

  it("balances the ClusterIP over both pods, from a pod and from the node", async () => {
    const pods = seed.pods.map((p) => p.name).sort();
    const [fromPod] = await probe(sandbox!, pods[1]!, [tcp(SEED.clusterIP, SEED.port, 40)]);
    const [fromNode] = await probe(sandbox!, NODE, [tcp(SEED.clusterIP, SEED.port, 40)]);
    assert.deepEqual(answeredBy(fromPod), pods, JSON.stringify(fromPod?.byPod));
    assert.deepEqual(answeredBy(fromNode), pods, JSON.stringify(fromNode?.byPod));
  });

  it("drops traffic to unallocated ClusterIPs of a ServiceCIDR from the manifests folder, in each family's table", async () => {
    // nft lists a one-element anonymous set without its braces.
    const drop = (cidr: string) => new RegExp(`daddr (\\{ )?${cidr.replaceAll(".", "\\.")}( \\})? drop`);
    assert.doesNotMatch(await nft("list", "chain", "ip", "kube-proxy", "cluster-ips-check"), /drop/);
    await daemon!.apply(() =>
      daemon!.write(
        "servicecidr.yaml",
        [
          "apiVersion: networking.k8s.io/v1",
          "kind: ServiceCIDR",
          "metadata: { name: kubernetes }",
          `spec: { cidrs: ["${SEED.serviceCIDR}", "${SEED.ipv6.serviceCIDR}"] }`,
          "",
        ].join("\n"),
      ),
    );
    await waitFor(
      "both tables to carry their family's drop rule",
      async () =>
        drop(SEED.serviceCIDR).test(await nft("list", "chain", "ip", "kube-proxy", "cluster-ips-check")) &&
        drop(SEED.ipv6.serviceCIDR).test(await nft("list", "chain", "ip6", "kube-proxy", "cluster-ips-check"))
          ? true
          : undefined,
      15_000,
      () => daemon!.logTail(),
    );
    const [fromPod] = await probe(sandbox!, seed.pods[1]!.name, [tcp(SEED.clusterIP, SEED.port, 10)]);
    assert.equal(answeredBy(fromPod).length, 2, "the Service itself still answers");
  });

  it("serves the NodePort to the external client through both pods", async () => {
    const [report] = await probe(sandbox!, CLIENT, [tcp(SEED.node.ipv4, SEED.nodePort, 40)]);
    assert.deepEqual(answeredBy(report), seed.pods.map((p) => p.name).sort(), JSON.stringify(report?.byPod));
  });

  it("follows an endpoint's removal: only the remaining pod answers, on both addresses", async () => {
    const remaining = seed.pods[0]!;
    const manifests = seedManifests([{ name: remaining.name, ipv4: remaining.ipv4 }]);
    await daemon!.apply(() => {
      for (const [name, text] of Object.entries(manifests)) daemon!.write(name, text);
    });
    const [cluster] = await probe(sandbox!, CLIENT, [tcp(SEED.node.ipv4, SEED.nodePort, 20)]);
    const [fromNode] = await probe(sandbox!, NODE, [tcp(SEED.clusterIP, SEED.port, 20)]);
    assert.deepEqual(answeredBy(cluster), [remaining.name]);
    assert.deepEqual(answeredBy(fromNode), [remaining.name]);
    // The removed endpoint's chain is flushed now and deleted by a sync at least a second later.
    const removed = seed.pods[1]!;
    const table = await nft("list", "table", "ip", "kube-proxy");
    assert.doesNotMatch(table, new RegExp(`dnat to ${removed.ipv4.replaceAll(".", "\\.")}:80`));
    assert.match(table, new RegExp(`dnat to ${remaining.ipv4.replaceAll(".", "\\.")}:80`));
  });

  it("rebuilds its table within a sync period when someone deletes it", async () => {
    await nft("delete", "table", "ip", "kube-proxy");
    await waitFor(
      "the monitor to notice and a full sync to rebuild the table",
      async () => ((await nft("list", "tables")).includes("table ip kube-proxy") ? true : undefined),
      15_000,
      () => daemon!.logTail(),
    );
    const [report] = await probe(sandbox!, CLIENT, [tcp(SEED.node.ipv4, SEED.nodePort, 10)]);
    assert.deepEqual(answeredBy(report), [seed.pods[0]!.name]);
  });

  it("restarts over its own table and keeps serving", async () => {
    await daemon!.restart();
    const [report] = await probe(sandbox!, NODE, [tcp(SEED.clusterIP, SEED.port, 10)]);
    assert.deepEqual(answeredBy(report), [seed.pods[0]!.name]);
  });

  it("--cleanup deletes both of its tables and leaves other components' nftables tables alone", async () => {
    assert.equal(await foreignTables(), foreignBefore);
    const before = await nft("list", "tables");
    assert.match(before, /^table ip kube-proxy$/m, before);
    assert.match(before, /^table ip6 kube-proxy$/m, "the IPv6 table exists before --cleanup");
    await daemon!.stop();
    await sandbox!.exec(NODE, [...daemonArgv(), "--cleanup", "--proxy-mode", "nftables"], {
      timeoutMs: 60_000,
    });
    const tables = await waitFor(
      "--cleanup to remove our tables",
      async () => {
        const list = await nft("list", "tables");
        return /table ip kube-proxy$/m.test(list) ? undefined : list;
      },
      10_000,
    );
    assert.doesNotMatch(tables, /table ip6? kube-proxy$/m);
    assert.equal(await foreignTables(), foreignBefore);
  });
});
