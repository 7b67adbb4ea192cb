import { udpConntrackModel } from "../../../src/proxy/conntrack.ts";
import { test } from "node:test";
import assert from "node:assert/strict";
import {
  deleteUdpFlow,
  joinHostPort,
  listUdpEntries,
  parseConntrackList,
  parseDeletedCount,
  reconcileUdpConntrack,
  staleUdpEntries,
  staleUdpFilters,
} from "../../../src/kernel/conntrack.ts";
import type { ConntrackEntry, UdpConntrackModel } from "../../../src/kernel/conntrack.ts";
import type { Endpoint, ProxyState, ServicePort } from "../../../src/proxy/types.ts";
import { ScriptRunner } from "./script-runner.ts";

// Captured from conntrack v1.4.7 inside a network namespace (default and -o extended output).
const CAPTURED = `udp      17 29 src=10.0.0.1 dst=10.96.0.10 sport=33884 dport=53 [UNREPLIED] src=10.0.0.1 dst=10.0.0.1 sport=5353 dport=33884 mark=0 use=1
ipv6     10 udp      17 29 src=fd00::1 dst=fd00::1 sport=39013 dport=9999 [UNREPLIED] src=fd00::1 dst=fd00::1 sport=9999 dport=39013 mark=0 use=1
tcp      6 431999 ESTABLISHED src=10.0.0.2 dst=10.96.0.1 sport=40000 dport=443 src=10.1.0.5 dst=10.0.0.2 sport=6443 dport=40000 [ASSURED] mark=0 use=1
icmp     1 29 src=10.0.0.1 dst=10.0.0.2 type=8 code=0 id=1 src=10.0.0.2 dst=10.0.0.1 type=0 code=0 id=1 mark=0 use=1
conntrack v1.4.7 (conntrack-tools): 4 flow entries have been shown.
`;

test("parseConntrackList reads original and reply tuples from captured output", () => {
  const entries = parseConntrackList(CAPTURED);
  assert.equal(entries.length, 3, "the icmp entry has no ports and is skipped");
  assert.deepEqual(entries[0], {
    protocol: "udp",
    origSrc: "10.0.0.1",
    origDst: "10.96.0.10",
    origSport: 33884,
    origDport: 53,
    replySrc: "10.0.0.1",
    replyDst: "10.0.0.1",
    replySport: 5353,
    replyDport: 33884,
  });
  assert.equal(entries[1]?.protocol, "udp");
  assert.equal(entries[1]?.origDst, "fd00::1");
  assert.equal(entries[1]?.replySport, 9999);
  assert.equal(entries[2]?.protocol, "tcp");
  assert.equal(entries[2]?.replySrc, "10.1.0.5");
});

test("parseDeletedCount", () => {
  assert.equal(
    parseDeletedCount("conntrack v1.4.7 (conntrack-tools): 3 flow entries have been deleted.\n"),
    3,
  );
  assert.equal(
    parseDeletedCount("conntrack v1.4.7 (conntrack-tools): 0 flow entries have been deleted.\n"),
    0,
  );
  assert.equal(parseDeletedCount("nothing"), 0);
});

function flow(origDst: string, origDport: number, replySrc: string, replySport: number): ConntrackEntry {
  return {
    protocol: "udp",
    origSrc: "10.0.0.9",
    origDst,
    origSport: 5000,
    origDport,
    replySrc,
    replyDst: "10.0.0.9",
    replySport,
    replyDport: 5000,
  };
}

test("staleUdpEntries: frontend flows to non-serving backends are stale; nodePort flows likewise", () => {
  const model: UdpConntrackModel = {
    frontends: new Map([
      ["10.96.0.10:53", new Set(["10.1.0.1:5353"])],
      ["[fd00::10]:53", new Set(["[fd00:1::1]:5353"])],
    ]),
    nodePorts: new Map([[30053, new Set(["10.1.0.1:5353"])]]),
  };
  const keep = flow("10.96.0.10", 53, "10.1.0.1", 5353);
  const gone = flow("10.96.0.10", 53, "10.1.0.2", 5353);
  const unknownService = flow("10.96.0.99", 53, "10.1.0.2", 5353);
  const nodePortGone = flow("192.168.1.5", 30053, "10.1.0.7", 5353);
  const nodePortKeep = flow("192.168.1.5", 30053, "10.1.0.1", 5353);
  const v6gone = flow("fd00::10", 53, "fd00:1::2", 5353);
  const tcp = { ...gone, protocol: "tcp" };
  assert.deepEqual(
    staleUdpEntries([keep, gone, unknownService, nodePortGone, nodePortKeep, v6gone, tcp], model),
    [gone, nodePortGone, v6gone],
  );
});

test("a frontend match decides alone even if the port is also a nodePort", () => {
  const model: UdpConntrackModel = {
    frontends: new Map([["10.96.0.10:30053", new Set(["10.1.0.1:5353"])]]),
    nodePorts: new Map([[30053, new Set(["10.1.0.9:5353"])]]),
  };
  assert.deepEqual(staleUdpEntries([flow("10.96.0.10", 30053, "10.1.0.1", 5353)], model), []);
});

function svc(over: Partial<ServicePort>): ServicePort {
  return {
    name: { namespace: "ns", name: "dns", port: "p" },
    clusterIP: "10.96.0.10",
    port: 53,
    protocol: "UDP",
    nodePort: 0,
    externalIPs: [],
    loadBalancerVIPs: [],
    loadBalancerSourceRanges: [],
    sessionAffinity: null,
    externalPolicyLocal: false,
    internalPolicyLocal: false,
    healthCheckNodePort: 0,
    ...over,
  } as ServicePort;
}

function ep(ip: string, port: number, serving: boolean): Endpoint {
  return {
    ip,
    port,
    endpoint: joinHostPort(ip, port),
    ready: serving,
    serving,
    terminating: !serving,
    isLocal: false,
    zoneHints: null,
    nodeHints: null,
    nodeName: null,
    zone: null,
  };
}

test("udpConntrackModel keeps UDP ports with serving endpoints, all frontends and the nodePort", () => {
  const state: ProxyState = {
    family: "IPv4",
    nodeLabels: {},
    services: new Map([
      ["a", svc({ nodePort: 30053, externalIPs: ["192.0.2.1"], loadBalancerVIPs: ["198.51.100.1"] })],
      ["b", svc({ clusterIP: "10.96.0.11", protocol: "TCP" })],
      ["c", svc({ clusterIP: "10.96.0.12" })],
    ]),
    endpoints: new Map([
      ["a", [ep("10.1.0.1", 5353, true), ep("10.1.0.2", 5353, false)]],
      ["b", [ep("10.1.0.3", 80, true)]],
      ["c", [ep("10.1.0.4", 5353, false)]],
    ]),
  };
  const model = udpConntrackModel(state);
  assert.deepEqual([...model.frontends.keys()].sort(), ["10.96.0.10:53", "192.0.2.1:53", "198.51.100.1:53"]);
  assert.deepEqual([...(model.frontends.get("10.96.0.10:53") ?? [])], ["10.1.0.1:5353"]);
  assert.deepEqual([...model.nodePorts.keys()], [30053]);
});

test("staleUdpFilters deduplicates tuples of different clients", () => {
  const a = flow("10.96.0.10", 53, "10.1.0.2", 5353);
  const b = { ...a, origSrc: "10.0.0.77", origSport: 6000 };
  assert.deepEqual(staleUdpFilters([a, b]), [
    { origDst: "10.96.0.10", origDport: 53, replySrc: "10.1.0.2", replySport: 5353 },
  ]);
});

test("list/delete argv; exit 1 with 0 entries is not an error; other exit 1 is", async () => {
  let deleteReply = {
    exitCode: 1,
    stderr: "conntrack v1.4.7 (conntrack-tools): 0 flow entries have been deleted.\n",
  };
  const runner = new ScriptRunner((argv) => (argv[1] === "-L" ? { stdout: CAPTURED } : deleteReply));
  const entries = await listUdpEntries(runner, "IPv6", { netns: "kpt-c" });
  assert.deepEqual(runner.calls[0]?.argv, ["conntrack", "-L", "-p", "udp", "-f", "ipv6"]);
  assert.equal(runner.calls[0]?.options.netns, "kpt-c");
  assert.equal(entries.length, 2, "tcp filtered out");
  const filter = { origDst: "10.96.0.10", origDport: 53, replySrc: "10.1.0.2", replySport: 5353 };
  assert.equal(await deleteUdpFlow(runner, "IPv4", filter), 0);
  assert.deepEqual(runner.calls[1]?.argv, [
    "conntrack",
    "-D",
    "-p",
    "udp",
    "-f",
    "ipv4",
    "--orig-dst",
    "10.96.0.10",
    "--orig-port-dst",
    "53",
    "--reply-src",
    "10.1.0.2",
    "--reply-port-src",
    "5353",
  ]);
  deleteReply = {
    exitCode: 1,
    stderr: "conntrack v1.4.7 (conntrack-tools): Operation failed: invalid parameters\n",
  };
  await assert.rejects(deleteUdpFlow(runner, "IPv4", filter), /invalid parameters/);
  deleteReply = {
    exitCode: 0,
    stderr: "conntrack v1.4.7 (conntrack-tools): 2 flow entries have been deleted.\n",
  };
  assert.equal(await deleteUdpFlow(runner, "IPv4", filter), 2);
});

test("reconcileUdpConntrack deletes only stale flows and reports failures", async () => {
  const runner = new ScriptRunner((argv) =>
    argv[1] === "-L" ? { stdout: CAPTURED } : { stderr: "1 flow entries have been deleted.\n" },
  );
  const model: UdpConntrackModel = {
    frontends: new Map([["10.96.0.10:53", new Set(["10.1.0.1:53"])]]),
    nodePorts: new Map(),
  };
  const result = await reconcileUdpConntrack(runner, "IPv4", model);
  assert.equal(result.deleted, 1);
  assert.deepEqual(result.failures, []);
  assert.equal(runner.calls.filter((c) => c.argv[1] === "-D").length, 1);
});
