import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { probe } from "../../../src/sandbox/client.ts";
import type { ProbeReport, ProbeStep } from "../../../src/sandbox/client.ts";
import { buildSeedTopology, SEED, seedManifests, seedPod } from "../../../src/sandbox/seed.ts";
import type { SeedTopology } from "../../../src/sandbox/seed.ts";
import { Sandbox } from "../../../src/sandbox/topology.ts";
import { addNodeDefaultRoute, endpointSlice, ProxyDaemon, service } from "../../support/daemon.ts";
import type { EndpointSpec } from "../../support/daemon.ts";

/*
 * One node, the seed's two nginx pods, two external clients on the LAN (different source IPs),
 * and the real daemon fed with Services of every kind. Each case is what a client experiences:
 * who answers, which source address the pod saw, refused versus silently dropped.
 */

const NODE = SEED.node.name;
const CLIENT = SEED.external.name;
const CLIENT2 = "client-2";
const CLIENT2_IP = "192.168.50.3";
/** Routed to the node from the LAN: where externalIPs and load-balancer IPs live. */
const VIP_CIDR = "192.168.60.0/24";
const EXTERNAL_IP = "192.168.60.10";
const LB_IP = "192.168.60.20";
const OK_MS = 3_000;
const DROP_MS = 1_500;

const podA = seedPod(0);
const podB = seedPod(1);
const onNode = (pod: typeof podA, node: string = NODE): EndpointSpec => ({
  ip: pod.ipv4,
  node,
  pod: pod.name,
});
const port80 = [{ port: 80 }];

function manifests(): Record<string, string | Record<string, unknown>[]> {
  const both = [onNode(podA), onNode(podB)];
  const pair = (name: string, svc: Parameters<typeof service>[0], endpoints: EndpointSpec[]) => ({
    [`${name}.yaml`]: [service(svc), endpointSlice({ service: svc.name, endpoints, ports: port80 })],
  });
  return {
    ...seedManifests([podA, podB]),
    ...pair(
      "ext",
      {
        name: "web-ext",
        clusterIP: "10.1.0.20",
        ports: [{ port: 8080, targetPort: 80 }],
        externalIPs: [EXTERNAL_IP],
      },
      both,
    ),
    ...pair(
      "lb",
      {
        name: "web-lb",
        type: "LoadBalancer",
        clusterIP: "10.1.0.21",
        ports: [{ port: 80, nodePort: 31001 }],
        loadBalancerIP: LB_IP,
        loadBalancerSourceRanges: [`${SEED.external.ipv4}/32`],
      },
      both,
    ),
    ...pair(
      "affinity",
      { name: "web-affinity", clusterIP: "10.1.0.22", ports: port80, sessionAffinity: "ClientIP" },
      both,
    ),
    ...pair(
      "local",
      {
        name: "web-local",
        // A LoadBalancer whose cloud has not assigned an IP yet: its NodePort and health check port work.
        type: "LoadBalancer",
        clusterIP: "10.1.0.23",
        ports: [{ port: 80, nodePort: 31002 }],
        externalTrafficPolicy: "Local",
        healthCheckNodePort: 32002,
      },
      [onNode(podA)],
    ),
    ...pair(
      "remote",
      {
        name: "web-remote",
        type: "LoadBalancer",
        clusterIP: "10.1.0.24",
        ports: [{ port: 80, nodePort: 31003 }],
        externalTrafficPolicy: "Local",
        healthCheckNodePort: 32003,
      },
      // The pod lives on this node, but the slice says node-2: for the proxy it is remote.
      [onNode(podB, "node-2")],
    ),
    ...pair(
      "itp",
      { name: "web-itp", clusterIP: "10.1.0.25", ports: port80, internalTrafficPolicy: "Local" },
      [onNode(podA), onNode(podB, "node-2")],
    ),
    ...pair("hairpin", { name: "web-hairpin", clusterIP: "10.1.0.26", ports: port80 }, [onNode(podA)]),
    "empty.yaml": [
      service({
        name: "web-empty",
        type: "NodePort",
        clusterIP: "10.1.0.27",
        ports: [{ port: 80, nodePort: 31004 }],
      }),
    ],
  };
}

function tcp(host: string, port: number, count: number, timeoutMs = OK_MS): ProbeStep {
  return { protocol: "tcp", host, port, count, timeoutMs };
}

function only(reports: ProbeReport[], index: number): ProbeReport {
  const report = reports[index];
  assert.ok(report !== undefined, `no report ${index}`);
  return report;
}

describe("the daemon serves every kind of Service to real clients", () => {
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
    sandbox = await Sandbox.create({ prefix: "kptpxsvc" });
    seed = await buildSeedTopology(sandbox);
    await sandbox.addExternal(CLIENT2, {
      ipv4: CLIENT2_IP,
      gateway: NODE,
      routes: [SEED.serviceCIDR, VIP_CIDR],
    });
    await sandbox.exec(CLIENT, ["ip", "route", "add", VIP_CIDR, "via", SEED.node.ipv4]);
    await addNodeDefaultRoute(sandbox, NODE, "192.168.50.254");
    daemon = await ProxyDaemon.start(sandbox, {
      node: NODE,
      manifests: manifests(),
      args: ["--cluster-cidr", "10.244.0.0/16"],
    });
  });

  after(async () => {
    try {
      await daemon?.dispose();
    } finally {
      await sandbox.dispose();
    }
  });

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

  it("serves the NodePort to an external client and on the node, including 127.0.0.1", async () => {
    const external = only(await probe(sandbox, CLIENT, [tcp(SEED.node.ipv4, SEED.nodePort, 20)]), 0);
    const local = await probe(sandbox, NODE, [
      tcp(SEED.node.ipv4, SEED.nodePort, 20),
      tcp("127.0.0.1", SEED.nodePort, 20),
    ]);
    for (const report of [external, only(local, 0), only(local, 1)]) {
      noErrors(report);
      assert.deepEqual(
        Object.keys(report.byPod).sort(),
        [podA.name, podB.name].sort(),
        `${report.host}: ${JSON.stringify(report.byPod)}`,
      );
    }
    const routeLocalnet = await sandbox.exec(NODE, ["sysctl", "-n", "net.ipv4.conf.all.route_localnet"]);
    assert.equal(routeLocalnet.stdout.trim(), "1");
  });

  it("serves externalIPs routed to the node", async () => {
    const report = only(await probe(sandbox, CLIENT, [tcp(EXTERNAL_IP, 8080, 20)]), 0);
    noErrors(report);
    assert.equal(Object.keys(report.byPod).length, 2, JSON.stringify(report.byPod));
  });

  it("lets only loadBalancerSourceRanges reach the load-balancer IP (the NodePort stays open)", async () => {
    const allowed = only(await probe(sandbox, CLIENT, [tcp(LB_IP, 80, 5)]), 0);
    noErrors(allowed);
    const other = await probe(sandbox, CLIENT2, [tcp(LB_IP, 80, 2, DROP_MS), tcp(SEED.node.ipv4, 31001, 3)]);
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
