/**
 * ipvs mode's writer against stateful fakes of IPVS, ipset, the interfaces and iptables: first
 * sync, graceful termination (weight 0, deleted once drained; UDP at once; an endpoint that
 * comes back), stale virtual servers and --ipvs-exclude-cidrs, partial syncs, failures.
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import pino from "pino";
import { IpvsWriter, GRACEFUL_CHECK_INTERVAL_MS } from "../../../src/backends/ipvs/proxier.ts";
import { upstreamTestSettings } from "../../../src/backends/ipvs/settings.ts";
import type { IPFamily } from "../../../src/ip.ts";
import { FakeClock } from "../../../src/proxy/clock.ts";
import type { ProxyState } from "../../../src/proxy/types.ts";
import { loadIpvsState } from "../../support/ipvs-golden.ts";
import { fakeIpvsNode } from "../../support/ipvs-kernel.ts";

function service(name: string, ip: string, protocol = "TCP", extra = ""): string {
  return `---
apiVersion: v1
kind: Service
metadata: {namespace: ns1, name: ${name}}
spec:
  type: NodePort
  clusterIP: ${ip}
  clusterIPs: [${ip}]
  ports:
  - {name: p80, port: 80, protocol: ${protocol}, targetPort: 80, nodePort: 30080}
${extra}
`;
}

function slice(name: string, ips: readonly string[], protocol = "TCP"): string {
  return `---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {namespace: ns1, name: ${name}-1, labels: {kubernetes.io/service-name: ${name}}}
addressType: IPv4
ports:
- {name: p80, port: 80, protocol: ${protocol}}
endpoints:
${ips.length === 0 ? "[]" : ips.map((ip) => `- {addresses: [${ip}], nodeName: test-node}`).join("\n")}
`;
}

const state = (yamlText: string, family: IPFamily = "IPv4"): ProxyState =>
  loadIpvsState(yamlText, "test", family, "test-node");

function setup(options: { excludeCIDRs?: string[] } = {}) {
  const node = fakeIpvsNode({ lo: ["127.0.0.1", "::1"], eth0: ["192.168.0.2", "fe80::1"] });
  const clock = new FakeClock();
  const writer = new IpvsWriter({
    kernel: node.kernel,
    settings: upstreamTestSettings("IPv4"),
    excludeCIDRs: options.excludeCIDRs ?? [],
    clock,
    log: pino({ level: "silent" }),
  });
  let transactions = 0;
  const sync = (s: ProxyState, fullSync = false, changed: string[] = []) =>
    writer.write({
      state: s,
      fullSync,
      changedServices: new Set(changed),
      onTransaction: () => transactions++,
    });
  return { node, clock, writer, sync, transactions: () => transactions };
}

const realServers = (node: ReturnType<typeof fakeIpvsNode>, vs: string) =>
  node.ipvs
    .list()
    .find((e) => `${e.protocol}:${e.address}:${e.port}` === vs)
    ?.realServers.map((r) => `${r.address}:${r.port}/${r.weight}`)
    .sort();

test("a first sync programs virtual servers on the ClusterIP and the node IP, kube-ipvs0, ipsets and iptables", async () => {
  const { node, sync } = setup();
  const out = await sync(
    state(service("svc1", "10.0.0.10") + slice("svc1", ["10.180.0.1", "10.180.0.2"])),
    true,
  );
  assert.equal(out.details.fullSync, true);
  assert.deepEqual(realServers(node, "TCP:10.0.0.10:80"), ["10.180.0.1:80/1", "10.180.0.2:80/1"]);
  assert.deepEqual(realServers(node, "TCP:192.168.0.2:30080"), ["10.180.0.1:80/1", "10.180.0.2:80/1"]);
  assert.equal(node.ipvs.list().length, 2, "no NodePort on loopback or link-local addresses");
  assert.deepEqual(node.interfaces.byName.get("kube-ipvs0"), ["10.0.0.10"]);
  assert.deepEqual(node.ipsets.entries("KUBE-CLUSTER-IP"), ["10.0.0.10,tcp:80"]);
  assert.deepEqual(node.ipsets.entries("KUBE-NODE-PORT-TCP"), ["30080"]);
  assert.deepEqual(node.ipsets.entries("KUBE-IPVS-IPS"), ["10.0.0.10"]);
  assert.equal(node.ipsets.save().length, 17);
  const nat = await node.ipt.save("nat");
  assert.match(nat, /-A PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES/);
  assert.match(nat, /-A KUBE-SERVICES -m addrtype --dst-type LOCAL -j KUBE-NODE-PORT/);
  const filter = await node.ipt.save("filter");
  assert.match(filter, /-A INPUT -m comment --comment "kubernetes ipvs access filter" -j KUBE-IPVS-FILTER/);
  assert.match(
    filter,
    /-A OUTPUT -m comment --comment "kubernetes ipvs access filter" -j KUBE-IPVS-OUT-FILTER/,
  );
});

test("a TCP endpoint with connections drains at weight 0 and is deleted once they end, checked once a minute", async () => {
  const { node, clock, writer, sync } = setup();
  const svc = service("svc1", "10.0.0.10");
  await sync(state(svc + slice("svc1", ["10.180.0.1", "10.180.0.2"])), true);
  node.ipvs.setConnections("TCP:10.0.0.10:80", "10.180.0.2:80", 3, 1);
  await clock.advance(GRACEFUL_CHECK_INTERVAL_MS);
  const out = await sync(state(svc + slice("svc1", ["10.180.0.1"])), false, ["ns1/svc1"]);
  assert.deepEqual(realServers(node, "TCP:10.0.0.10:80"), ["10.180.0.1:80/1", "10.180.0.2:80/0"]);
  assert.deepEqual(
    realServers(node, "TCP:192.168.0.2:30080"),
    ["10.180.0.1:80/1"],
    "no connections there: deleted at once",
  );
  assert.deepEqual(out.details.draining, ["TCP:10.0.0.10:80/10.180.0.2:80"]);
  assert.deepEqual(writer.drainingRealServers, ["TCP:10.0.0.10:80/10.180.0.2:80"]);

  await clock.advance(GRACEFUL_CHECK_INTERVAL_MS);
  await sync(state(svc + slice("svc1", ["10.180.0.1"])));
  assert.deepEqual(
    realServers(node, "TCP:10.0.0.10:80"),
    ["10.180.0.1:80/1", "10.180.0.2:80/0"],
    "still busy",
  );

  node.ipvs.setConnections("TCP:10.0.0.10:80", "10.180.0.2:80", 0, 0);
  await clock.advance(GRACEFUL_CHECK_INTERVAL_MS / 2);
  await sync(state(svc + slice("svc1", ["10.180.0.1"])));
  assert.deepEqual(
    realServers(node, "TCP:10.0.0.10:80"),
    ["10.180.0.1:80/1", "10.180.0.2:80/0"],
    "not a minute yet",
  );
  await clock.advance(GRACEFUL_CHECK_INTERVAL_MS / 2);
  const done = await sync(state(svc + slice("svc1", ["10.180.0.1"])));
  assert.deepEqual(done.details.drained, ["TCP:10.0.0.10:80/10.180.0.2:80"]);
  assert.deepEqual(realServers(node, "TCP:10.0.0.10:80"), ["10.180.0.1:80/1"]);
  assert.deepEqual(writer.drainingRealServers, []);
});

test("drain() deletes a drained real server without any sync (syncs may be an hour apart), once a minute", async () => {
  const { node, clock, writer, sync } = setup();
  const svc = service("svc1", "10.0.0.10");
  await sync(state(svc + slice("svc1", ["10.180.0.1", "10.180.0.2"])), true);
  node.ipvs.setConnections("TCP:10.0.0.10:80", "10.180.0.2:80", 1, 0);
  await sync(state(svc + slice("svc1", ["10.180.0.1"])), false, ["ns1/svc1"]);
  assert.deepEqual(realServers(node, "TCP:10.0.0.10:80"), ["10.180.0.1:80/1", "10.180.0.2:80/0"]);
  node.ipvs.setConnections("TCP:10.0.0.10:80", "10.180.0.2:80", 0, 0);
  assert.deepEqual(await writer.drain(), [], "checked at the removal's sync: not a minute yet");
  await clock.advance(GRACEFUL_CHECK_INTERVAL_MS);
  assert.deepEqual(await writer.drain(), ["TCP:10.0.0.10:80/10.180.0.2:80"]);
  assert.deepEqual(realServers(node, "TCP:10.0.0.10:80"), ["10.180.0.1:80/1"]);
  assert.deepEqual(writer.drainingRealServers, []);
});

test("a UDP endpoint is deleted at once, connections or not", async () => {
  const { node, sync } = setup();
  const svc = service("dns", "10.0.0.53", "UDP");
  await sync(state(svc + slice("dns", ["10.180.0.1", "10.180.0.2"], "UDP")), true);
  node.ipvs.setConnections("UDP:10.0.0.53:80", "10.180.0.2:80", 0, 5);
  const out = await sync(state(svc + slice("dns", ["10.180.0.1"], "UDP")), false, ["ns1/dns"]);
  assert.deepEqual(realServers(node, "UDP:10.0.0.53:80"), ["10.180.0.1:80/1"]);
  assert.deepEqual(out.details.draining, []);
});

test("an endpoint that comes back while draining is deleted from the list and re-added at weight 1", async () => {
  const { node, writer, sync } = setup();
  const svc = service("svc1", "10.0.0.10");
  await sync(state(svc + slice("svc1", ["10.180.0.1", "10.180.0.2"])), true);
  node.ipvs.setConnections("TCP:10.0.0.10:80", "10.180.0.2:80", 1, 0);
  await sync(state(svc + slice("svc1", ["10.180.0.1"])), false, ["ns1/svc1"]);
  assert.deepEqual(writer.drainingRealServers, ["TCP:10.0.0.10:80/10.180.0.2:80"]);
  await sync(state(svc + slice("svc1", ["10.180.0.1", "10.180.0.2"])), false, ["ns1/svc1"]);
  assert.deepEqual(realServers(node, "TCP:10.0.0.10:80"), ["10.180.0.1:80/1", "10.180.0.2:80/1"]);
  assert.deepEqual(writer.drainingRealServers, []);
});

test("a removed Service's virtual servers and address go; --ipvs-exclude-cidrs and the other family are left alone", async () => {
  const { node, sync } = setup({ excludeCIDRs: ["203.0.113.0/24"] });
  node.ipvs.restore([
    "-A -t 203.0.113.7:443 -s wrr",
    "-A -t [2001:db8::7]:443 -s rr",
    "-A -t 198.51.100.9:80 -s rr",
  ]);
  await sync(state(service("svc1", "10.0.0.10") + service("svc2", "10.0.0.11")), true);
  assert.deepEqual(node.interfaces.byName.get("kube-ipvs0")?.sort(), ["10.0.0.10", "10.0.0.11"]);
  const out = await sync(state(service("svc1", "10.0.0.10")), false, ["ns1/svc2"]);
  const keys = node.ipvs
    .list()
    .map((e) => `${e.protocol}:${e.address}:${e.port}`)
    .sort();
  assert.deepEqual(keys, [
    "TCP:10.0.0.10:80",
    "TCP:192.168.0.2:30080",
    "TCP:2001:db8::7:443",
    "TCP:203.0.113.7:443",
  ]);
  assert.deepEqual(out.details.addressesDeleted, ["10.0.0.11"]);
  assert.deepEqual(node.interfaces.byName.get("kube-ipvs0"), ["10.0.0.10"]);
});

test("a partial sync with nothing changed reads and writes nothing", async () => {
  const { node, sync, transactions } = setup();
  const s = state(service("svc1", "10.0.0.10") + slice("svc1", ["10.180.0.1"]));
  await sync(s, true);
  const batches = node.ipvs.batches.length + node.ipsets.batches.length;
  const before = transactions();
  const out = await sync(s);
  assert.equal(out.details.fullSync, false);
  assert.equal(out.details.iptablesRestored, false);
  assert.equal(out.details.ipvsCommands, 0);
  assert.equal(node.ipvs.batches.length + node.ipsets.batches.length, batches);
  assert.equal(transactions(), before);
});

test("a full sync puts back what someone else removed; the first sync resets weights it did not set", async () => {
  const { node, sync } = setup();
  node.ipvs.restore(["-A -t 10.0.0.10:80 -s rr", "-a -t 10.0.0.10:80 -r 10.180.0.1:80 -m -w 0"]);
  const s = state(service("svc1", "10.0.0.10") + slice("svc1", ["10.180.0.1"]));
  await sync(s, true);
  assert.deepEqual(realServers(node, "TCP:10.0.0.10:80"), ["10.180.0.1:80/1"]);
  node.ipsets.destroy("KUBE-CLUSTER-IP");
  node.ipvs.restore(["-D -t 10.0.0.10:80"]);
  await sync(s, true);
  assert.deepEqual(node.ipsets.entries("KUBE-CLUSTER-IP"), ["10.0.0.10,tcp:80"]);
  assert.deepEqual(realServers(node, "TCP:10.0.0.10:80"), ["10.180.0.1:80/1"]);
});

test("a kernel failure fails the sync and makes the next one full", async () => {
  const { node, sync, writer } = setup();
  const s = state(service("svc1", "10.0.0.10") + slice("svc1", ["10.180.0.1"]));
  await sync(s, true);
  // Someone deleted the virtual server: the writer's cached view says it exists, so adding a
  // real server to it fails, as ipvsadm would.
  node.ipvs.restore(["-D -t 10.0.0.10:80"]);
  await assert.rejects(
    sync(state(service("svc1", "10.0.0.10") + slice("svc1", ["10.180.0.1", "10.180.0.2"])), false, [
      "ns1/svc1",
    ]),
  );
  // The refused input, for the daemon's last-failure dump: the ipvsadm lines on their way.
  assert.match(
    writer.refusedTransaction() ?? "",
    /^# ipvsadm --restore\n-a -t 10\.0\.0\.10:80 -r 10\.180\.0\.2:80/m,
  );
  const out = await sync(state(service("svc1", "10.0.0.10") + slice("svc1", ["10.180.0.1", "10.180.0.2"])));
  assert.equal(out.details.fullSync, true);
  assert.equal(writer.refusedTransaction(), null, "a sync that succeeds clears it");
  assert.deepEqual(realServers(node, "TCP:10.0.0.10:80"), ["10.180.0.1:80/1", "10.180.0.2:80/1"]);
});

test("session affinity is IPVS persistence with the affinity timeout", async () => {
  const { node, sync } = setup();
  const svc = service(
    "svc1",
    "10.0.0.10",
    "TCP",
    "  sessionAffinity: ClientIP\n  sessionAffinityConfig: {clientIP: {timeoutSeconds: 600}}",
  );
  await sync(state(svc + slice("svc1", ["10.180.0.1"])), true);
  assert.ok(node.ipvs.list().every((e) => e.persistence === 600));
});

test("the drift check: a synced node is in sync; a real server and an address someone deleted are drift, a full sync repairs them", async () => {
  const { node, writer, sync } = setup();
  const s = state(service("svc1", "10.20.30.41") + slice("svc1", ["10.180.0.1", "10.180.0.2"]));
  await sync(s, true);
  const clean = await writer.inspect(s);
  assert.equal(clean.drift.inSync, true, JSON.stringify(clean.drift, null, 2));
  assert.equal(clean.drift.mode, "ipvs");
  assert.match(clean.intended, /# ipvsadm -R\n-A -t 10\.20\.30\.41:80 -s rr\n/);

  await node.kernel.restoreIpvs(["-d -t 10.20.30.41:80 -r 10.180.0.2:80"]);
  await node.kernel.deleteAddress("10.20.30.41");
  const drifted = await writer.inspect(s);
  assert.deepEqual(
    drifted.drift.services.map((x) => [x.service, x.objects.map((o) => `${o.kind} ${o.name} -${o.missing}`)]),
    [
      [
        "ns1/svc1",
        [
          "virtual-server TCP:10.20.30.41:80 --a -t 10.20.30.41:80 -r 10.180.0.2:80 -m -w 1",
          "interface kube-ipvs0 -10.20.30.41",
        ],
      ],
    ],
  );
  await sync(s, true);
  assert.equal((await writer.inspect(s)).drift.inSync, true);
});
