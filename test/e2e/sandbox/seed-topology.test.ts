import assert from "node:assert/strict";
import { existsSync } from "node:fs";
import { after, before, describe, it } from "node:test";
import { ProcessRunner } from "../../../src/kernel/exec.ts";
import { probe, probeHttp } from "../../../src/sandbox/client.ts";
import { addSeedPod, buildSeedTopology, removeSeedPod, SEED, seedPod } from "../../../src/sandbox/seed.ts";
import { startPodServer } from "../../../src/sandbox/servers.ts";
import { Sandbox } from "../../../src/sandbox/topology.ts";
import type { SeedTopology } from "../../../src/sandbox/seed.ts";

const PREFIX = "kptsbxseed";
const runner = new ProcessRunner();

async function ownNamespaces(): Promise<string[]> {
  const { stdout } = await runner.run(["ip", "netns", "list"]);
  return stdout
    .split("\n")
    .map((line) => line.split(" ")[0] ?? "")
    .filter((name) => name.startsWith(`${PREFIX}-`))
    .sort();
}

describe("seed topology on the real kernel", () => {
  let sandbox: Sandbox;
  let seed: SeedTopology;
  let before_: string[];

  before(async () => {
    await Sandbox.sweep(PREFIX);
    before_ = await ownNamespaces();
    sandbox = await Sandbox.create({ prefix: PREFIX });
    seed = await buildSeedTopology(sandbox);
  });

  after(async () => {
    await sandbox.dispose();
    assert.deepEqual(await ownNamespaces(), before_, "every namespace of the run is gone");
  });

  it("creates one namespace per node, pod and client, plus the LAN", async () => {
    const names = await ownNamespaces();
    const expected = ["lan", SEED.node.name, SEED.external.name, seedPod(0).name, seedPod(1).name]
      .map((role) => sandbox.netnsOf(role))
      .sort();
    assert.deepEqual(names, expected);
    assert.deepEqual(
      seed.pods.map((pod) => pod.ipv4),
      ["10.244.0.9", "10.244.0.10"],
    );
    for (const netns of sandbox.netnsNames) assert.match(netns, new RegExp(`^${PREFIX}-${sandbox.id}-`));
  });

  it("keeps every interface name within the kernel's 15 characters", async () => {
    const { stdout } = await sandbox.exec(SEED.node.name, ["ip", "-o", "link", "show"]);
    const names = stdout.split("\n").flatMap((line) => /^\d+: ([^:@]+)/.exec(line)?.[1] ?? []);
    assert.equal(names.filter((name) => name.startsWith("veth")).length, 2, stdout);
    for (const name of names) assert.ok(name.length <= 15, name);
  });

  it("routes pod to pod through the node without NAT (the server sees the pod's own IP)", async () => {
    const [first, second] = seed.pods;
    assert.ok(first !== undefined && second !== undefined);
    const report = await probeHttp(sandbox, first.name, { host: second.ipv4, port: 80, count: 2 });
    assert.deepEqual(report.byPod, { [second.name]: 2 });
    assert.deepEqual(report.byClient, { [first.ipv4]: 2 });
    const { stdout } = await sandbox.exec(first.name, ["ip", "route", "get", second.ipv4]);
    assert.match(stdout, /via 10\.244\.0\.1 dev eth0/);
  });

  it("reaches each pod from the node over TCP and UDP, and tells a closed port (refused) apart", async () => {
    const [first, second] = seed.pods;
    assert.ok(first !== undefined && second !== undefined);
    const reports = await probe(sandbox, SEED.node.name, [
      { protocol: "tcp", host: first.ipv4, port: 80 },
      { protocol: "udp", host: first.ipv4, port: 80 },
      { protocol: "tcp", host: second.ipv4, port: 80 },
      { protocol: "udp", host: second.ipv4, port: 80 },
      { protocol: "tcp", host: first.ipv4, port: 81 },
      { protocol: "udp", host: first.ipv4, port: 81 },
    ]);
    const summary = reports.map((r) => [r.protocol, r.host, r.port, r.byPod, r.byClient, r.errors]);
    const gateway = seed.node.podGatewayIPv4;
    assert.deepEqual(summary, [
      ["tcp", first.ipv4, 80, { [first.name]: 1 }, { [gateway]: 1 }, {}],
      ["udp", first.ipv4, 80, { [first.name]: 1 }, { [gateway]: 1 }, {}],
      ["tcp", second.ipv4, 80, { [second.name]: 1 }, { [gateway]: 1 }, {}],
      ["udp", second.ipv4, 80, { [second.name]: 1 }, { [gateway]: 1 }, {}],
      ["tcp", first.ipv4, 81, {}, {}, { refused: 1 }],
      ["udp", first.ipv4, 81, {}, {}, { refused: 1 }],
    ]);
  });

  it("reaches the node's InternalIP from the external client, but not the ClusterIP without proxy rules", async () => {
    await startPodServer(sandbox, SEED.node.name, { httpPort: 8080, udpPort: null });
    const [node, clusterIP] = await probe(sandbox, SEED.external.name, [
      { protocol: "tcp", host: SEED.node.ipv4, port: 8080, count: 2 },
      { protocol: "tcp", host: SEED.clusterIP, port: SEED.port, timeoutMs: 500 },
    ]);
    assert.ok(node !== undefined && clusterIP !== undefined);
    assert.deepEqual(node.byPod, { [SEED.node.name]: 2 }, JSON.stringify(node.results));
    assert.deepEqual(node.byClient, { [SEED.external.ipv4]: 2 });
    assert.equal(clusterIP.results.length, 1);
    // The node has no route for the service CIDR, so it answers with ICMP unreachable.
    assert.deepEqual(clusterIP.errors, { unreachable: 1 }, JSON.stringify(clusterIP.results));
  });

  it("adds a third pod live and removes it again", async () => {
    const { pod, server } = await addSeedPod(sandbox);
    assert.equal(pod.ipv4, "10.244.0.11");
    assert.ok(server !== null && server.process.running);
    const reached = await probeHttp(sandbox, SEED.node.name, { host: pod.ipv4, port: 80 });
    assert.deepEqual(reached.byPod, { [pod.name]: 1 });

    await removeSeedPod(sandbox, pod.name);
    assert.equal(server.process.running, false);
    assert.ok(!(await ownNamespaces()).includes(pod.netns));
    const gone = await probeHttp(sandbox, SEED.node.name, { host: pod.ipv4, port: 80, timeoutMs: 500 });
    assert.deepEqual(gone.errors, { unreachable: 1 }, JSON.stringify(gone.results));
  });

  it("records the run so a later sweep can tell it is alive", async () => {
    assert.ok(existsSync(`/run/kpt-sandbox/${PREFIX}-${sandbox.id}.json`));
    assert.deepEqual(await Sandbox.sweep(PREFIX), [], "a live run is never swept");
  });
});

describe("dual-stack seed topology", () => {
  it("gives node, pods and client IPv6 addresses and routes pod traffic over IPv6", async () => {
    await using sandbox = await Sandbox.create({ prefix: PREFIX });
    const seed = await buildSeedTopology(sandbox, { dualStack: true, servers: false });
    const [first, second] = seed.pods;
    assert.ok(first !== undefined && second !== undefined);
    assert.deepEqual([first.ipv6, second.ipv6], ["fd00:10:244::9", "fd00:10:244::a"]);
    assert.equal(seed.node.podGatewayIPv6, "fd00:10:244::1");
    const { stdout } = await sandbox.exec(SEED.external.name, ["ip", "-6", "route", "show"]);
    assert.match(stdout, /fd00:10:96::\/112 via fd00:50::1/);
    await startPodServer(sandbox, second.name, { udpPort: null });
    const [report] = await probe(sandbox, first.name, [
      { protocol: "tcp", host: second.ipv6 ?? "", port: 80 },
    ]);
    assert.deepEqual(report?.byPod, { [second.name]: 1 }, JSON.stringify(report?.results));
    assert.deepEqual(report?.byClient, { [first.ipv6 ?? ""]: 1 });
  });
});
