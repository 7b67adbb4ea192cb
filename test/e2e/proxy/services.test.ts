import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { probe } from "../../../src/sandbox/client.ts";
import type { ProbeReport } from "../../../src/sandbox/client.ts";
import { SEED } from "../../../src/sandbox/seed.ts";
import type { SeedTopology } from "../../../src/sandbox/seed.ts";
import type { Sandbox } from "../../../src/sandbox/topology.ts";
import type { ProxyDaemon } from "../../support/daemon.ts";
import {
  CLIENT,
  CLIENT2,
  DROP_MS,
  EXTERNAL_IP,
  LB_IP,
  NODE,
  onNode,
  podA,
  podB,
  port80,
  serviceMatrixManifests,
  servicePair,
  startServiceMatrix,
  stopServiceMatrix,
  tcp,
  TRAFFIC_MODES,
} from "../../support/service-matrix.ts";
import type { Manifests, ServiceMatrix } from "../../support/service-matrix.ts";

/*
 * One node, the seed's two nginx pods, two external clients on the LAN (different source IPs),
 * and the real daemon fed with Services of every kind. Each case is what a client experiences:
 * who answers, which source address the pod saw, refused versus silently dropped. Every case
 * runs in iptables mode and in nftables mode; where upstream's nftables mode differs, the case
 * says so (docs/nftables-mode.md).
 */

function manifests(): Manifests {
  return serviceMatrixManifests({
    localType: "LoadBalancer",
    extra: servicePair(
      "itp",
      { name: "web-itp", clusterIP: "10.1.0.25", ports: port80, internalTrafficPolicy: "Local" },
      [onNode(podA), onNode(podB, "node-2")],
    ),
  });
}

function only(reports: ProbeReport[], index: number): ProbeReport {
  const report = reports[index];
  assert.ok(report !== undefined, `no report ${index}`);
  return report;
}

for (const mode of TRAFFIC_MODES)
  describe(`the daemon serves every kind of Service to real clients (${mode} mode)`, () => {
    let matrix: ServiceMatrix | undefined;
    let sandbox: Sandbox;
    let seed: SeedTopology;
    let daemon: ProxyDaemon;

    const noErrors = (report: ProbeReport): void =>
      assert.deepEqual(
        report.errors,
        {},
        `${report.host}:${report.port}: ${JSON.stringify(report.results.slice(0, 5))}${daemon.logTail(10)}`,
      );

    before(async () => {
      matrix = await startServiceMatrix(mode === "iptables" ? "kptpxsvc" : "kptpxsvn", manifests(), mode);
      ({ sandbox, seed, daemon } = matrix);
    });

    after(() => stopServiceMatrix(matrix));

    it("balances a ClusterIP over both pods, from a pod and from the node itself", async () => {
      const step = tcp(SEED.clusterIP, SEED.port, 60);
      const fromPod = only(await probe(sandbox, podB.name, [step]), 0);
      const fromNode = only(await probe(sandbox, NODE, [step]), 0);
      for (const report of [fromPod, fromNode]) {
        noErrors(report);
        for (const pod of [podA.name, podB.name]) {
          assert.ok(
            (report.byPod[pod] ?? 0) >= 15,
            `${pod} got ${report.byPod[pod] ?? 0} of 60: ${JSON.stringify(report.byPod)}`,
          );
        }
      }
    });

    it(
      mode === "iptables"
        ? "serves the NodePort to an external client and on the node, including 127.0.0.1"
        : "serves the NodePort to an external client and on the node's IP, never on 127.0.0.1 (as upstream)",
      async () => {
        const external = only(await probe(sandbox, CLIENT, [tcp(SEED.node.ipv4, SEED.nodePort, 20)]), 0);
        const local = await probe(sandbox, NODE, [
          tcp(SEED.node.ipv4, SEED.nodePort, 20),
          tcp(
            "127.0.0.1",
            SEED.nodePort,
            mode === "iptables" ? 20 : 1,
            mode === "iptables" ? undefined : 2_000,
          ),
        ]);
        const served =
          mode === "iptables" ? [external, only(local, 0), only(local, 1)] : [external, only(local, 0)];
        for (const report of served) {
          noErrors(report);
          assert.deepEqual(
            Object.keys(report.byPod).sort(),
            [podA.name, podB.name].sort(),
            `${report.host}: ${JSON.stringify(report.byPod)}`,
          );
        }
        const routeLocalnet = await sandbox.exec(NODE, ["sysctl", "-n", "net.ipv4.conf.all.route_localnet"]);
        if (mode === "iptables") {
          assert.equal(routeLocalnet.stdout.trim(), "1");
        } else {
          // nftables mode has no localhost NodePorts (upstream): nothing listens there, and it
          // leaves route_localnet alone.
          assert.deepEqual(Object.keys(only(local, 1).byPod), [], JSON.stringify(only(local, 1).results));
          assert.equal(routeLocalnet.stdout.trim(), "0");
        }
      },
    );

    it("serves externalIPs routed to the node", async () => {
      const report = only(await probe(sandbox, CLIENT, [tcp(EXTERNAL_IP, 8080, 20)]), 0);
      noErrors(report);
      assert.equal(Object.keys(report.byPod).length, 2, JSON.stringify(report.byPod));
    });

    it("lets only loadBalancerSourceRanges reach the load-balancer IP (the NodePort stays open)", async () => {
      const allowed = only(await probe(sandbox, CLIENT, [tcp(LB_IP, 80, 5)]), 0);
      noErrors(allowed);
      const other = await probe(sandbox, CLIENT2, [
        tcp(LB_IP, 80, 2, DROP_MS),
        tcp(SEED.node.ipv4, 31001, 3),
      ]);
      assert.deepEqual(only(other, 0).errors, { timeout: 2 }, JSON.stringify(only(other, 0).results));
      noErrors(only(other, 1));
    });

    it("keeps a client on one pod with sessionAffinity ClientIP", async () => {
      const report = only(await probe(sandbox, CLIENT, [tcp("10.1.0.22", 80, 20)]), 0);
      noErrors(report);
      assert.equal(Object.keys(report.byPod).length, 1, JSON.stringify(report.byPod));
    });

    it("preserves the client's source IP with externalTrafficPolicy Local, masquerades with Cluster", async () => {
      const [local, cluster] = await probe(sandbox, CLIENT, [
        tcp(SEED.node.ipv4, 31002, 5),
        tcp(SEED.node.ipv4, SEED.nodePort, 5),
      ]);
      assert.ok(local !== undefined && cluster !== undefined);
      noErrors(local);
      noErrors(cluster);
      assert.deepEqual(local.byPod, { [podA.name]: 5 });
      assert.deepEqual(local.byClient, { [SEED.external.ipv4]: 5 });
      assert.equal(
        cluster.byClient[SEED.external.ipv4],
        undefined,
        `Cluster policy must SNAT: ${JSON.stringify(cluster.byClient)}`,
      );
    });

    it("drops NodePort traffic with externalTrafficPolicy Local when no endpoint is local", async () => {
      const report = only(await probe(sandbox, CLIENT, [tcp(SEED.node.ipv4, 31003, 2, DROP_MS)]), 0);
      assert.deepEqual(report.errors, { timeout: 2 }, JSON.stringify(report.results));
      // The ClusterIP of the same Service still reaches the (remote) endpoint.
      noErrors(only(await probe(sandbox, podA.name, [tcp("10.1.0.24", 80, 3)]), 0));
    });

    it("sends internalTrafficPolicy Local traffic to local endpoints only", async () => {
      const report = only(await probe(sandbox, podB.name, [tcp("10.1.0.25", 80, 20)]), 0);
      noErrors(report);
      assert.deepEqual(report.byPod, { [podA.name]: 20 });
    });

    it("lets a pod reach itself through its Service (hairpin, masqueraded)", async () => {
      const report = only(await probe(sandbox, podA.name, [tcp("10.1.0.26", 80, 5)]), 0);
      noErrors(report);
      assert.deepEqual(report.byPod, { [podA.name]: 5 });
      assert.deepEqual(report.byClient, { [seed.node.podGatewayIPv4]: 5 });
    });

    it("rejects a Service without endpoints at once (connection refused, not a timeout)", async () => {
      const started = Date.now();
      const clusterIP = only(await probe(sandbox, podA.name, [tcp("10.1.0.27", 80, 1, 5_000)]), 0);
      // The node answers with ICMP errors at most once a second (icmp_ratelimit), hence one each.
      const nodePort = only(await probe(sandbox, CLIENT, [tcp(SEED.node.ipv4, 31004, 1, 5_000)]), 0);
      assert.deepEqual(clusterIP.errors, { refused: 1 }, JSON.stringify(clusterIP.results));
      assert.deepEqual(nodePort.errors, { refused: 1 }, JSON.stringify(nodePort.results));
      // Refusals take milliseconds; a drop would cost 5 s each.
      assert.ok(Date.now() - started < 9_000, `took ${Date.now() - started} ms`);
    });

    it("answers the health check node port of externalTrafficPolicy Local Services by local endpoints", async () => {
      const status = async (port: number): Promise<string> => {
        const { stdout } = await sandbox.exec(CLIENT, [
          "curl",
          "-s",
          "-o",
          "/dev/null",
          "-w",
          "%{http_code}",
          "--max-time",
          "3",
          `http://${SEED.node.ipv4}:${port}/healthz`,
        ]);
        return stdout;
      };
      assert.equal(await status(32002), "200", daemon.logTail(10));
      assert.equal(await status(32003), "503", daemon.logTail(10));
    });
  });
