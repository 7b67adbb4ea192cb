import assert from "node:assert/strict";
import { test } from "node:test";
import { parseIP, type Address } from "../../../src/ip.ts";
import {
  findVirtualServer,
  realServerShares,
  setContains,
  type IpvsVirtualServerModel,
} from "../../../src/netfilter/ipvs.ts";
import { parseIpvsadmStats } from "../../../src/kernel/ipvs.ts";

const ip = (text: string): Address => parseIP(text)!;

const rs = (address: string, weight: number) => ({
  address,
  port: 80,
  weight,
  forward: "Masq",
  activeConn: 0,
  inactiveConn: 0,
});

const vs = (scheduler: string, ...realServers: ReturnType<typeof rs>[]): IpvsVirtualServerModel => ({
  protocol: "TCP",
  address: "10.1.0.1",
  port: 80,
  scheduler,
  persistence: 0,
  realServers,
});

test("rr shares equally among real servers of weight above 0; weight 0 (draining) gets nothing", () => {
  const { shares, note } = realServerShares(
    vs("rr", rs("10.0.0.1", 1), rs("10.0.0.2", 3), rs("10.0.0.3", 0)),
  );
  assert.deepEqual(
    shares.map((s) => [s.rs.address, s.share]),
    [
      ["10.0.0.1", 0.5],
      ["10.0.0.2", 0.5],
      ["10.0.0.3", 0],
    ],
  );
  assert.equal(note, undefined);
});

test("wrr follows the weights; a load-based scheduler does too and says it is an assumption", () => {
  assert.deepEqual(
    realServerShares(vs("wrr", rs("10.0.0.1", 1), rs("10.0.0.2", 3))).shares.map((s) => s.share),
    [0.25, 0.75],
  );
  const lc = realServerShares(vs("lc", rs("10.0.0.1", 1), rs("10.0.0.2", 1)));
  assert.deepEqual(
    lc.shares.map((s) => s.share),
    [0.5, 0.5],
  );
  assert.match(lc.note ?? "", /scheduler lc picks by load/);
});

test("no real server, or only draining ones: no share at all", () => {
  assert.deepEqual(realServerShares(vs("rr")).shares, []);
  assert.deepEqual(
    realServerShares(vs("rr", rs("10.0.0.1", 0))).shares.map((s) => s.share),
    [0],
  );
});

test("a virtual server is found by protocol, address and port", () => {
  const model = { virtualServers: [vs("rr", rs("10.0.0.1", 1))] };
  assert.ok(findVirtualServer(model, "tcp", ip("10.1.0.1"), 80));
  assert.equal(findVirtualServer(model, "udp", ip("10.1.0.1"), 80), undefined);
  assert.equal(findVirtualServer(model, "tcp", ip("10.1.0.1"), 81), undefined);
});

test("ipset membership for the types ipvs mode creates, each field from the side the flags name", () => {
  const p = { protocol: "tcp", src: ip("10.244.0.9"), srcPort: 40000, dst: ip("10.1.0.1"), dstPort: 80 };
  const set = (type: string, ...entries: string[]) => ({ name: "S", type, entries });
  assert.equal(setContains(set("hash:ip,port", "10.1.0.1,tcp:80"), ["dst", "dst"], p), true);
  assert.equal(setContains(set("hash:ip,port", "10.1.0.1,udp:80"), ["dst", "dst"], p), false);
  assert.equal(setContains(set("hash:ip,port", "10.1.0.1,tcp:80"), ["src", "dst"], p), false);
  assert.equal(setContains(set("hash:ip", "10.1.0.1"), ["dst"], p), true);
  assert.equal(setContains(set("bitmap:port", "79", "80"), ["dst"], p), true);
  assert.equal(setContains(set("bitmap:port", "30000-30100"), ["dst"], p), false);
  assert.equal(
    setContains(set("hash:ip,port,ip", "10.1.0.1,tcp:80,10.244.0.9"), ["dst", "dst", "src"], p),
    true,
  );
  assert.equal(
    setContains(set("hash:ip,port,net", "10.1.0.1,tcp:80,10.244.0.0/16"), ["dst", "dst", "src"], p),
    true,
  );
  assert.equal(
    setContains(set("hash:ip,port,net", "10.1.0.1,tcp:80,192.168.0.0/16"), ["dst", "dst", "src"], p),
    false,
  );
  assert.equal(setContains(set("list:set", "A"), ["dst"], p), undefined);
});

test("net types: the most specific entry that holds the packet decides, and a nomatch entry means not in", () => {
  const p = { protocol: "tcp", src: ip("10.1.2.3"), srcPort: 40000, dst: ip("10.96.0.1"), dstPort: 443 };
  const nets = { name: "N", type: "hash:net", entries: ["10.0.0.0/8", "10.1.0.0/16", "10.1.2.0/24"] };
  assert.equal(setContains(nets, ["src"], p), true);
  assert.equal(
    setContains({ ...nets, nomatch: ["10.1.0.0/16"] }, ["src"], p),
    true,
    "a /24 inside the exception",
  );
  assert.equal(
    setContains({ ...nets, nomatch: ["10.1.2.0/24"] }, ["src"], p),
    false,
    "the most specific is nomatch",
  );
  assert.equal(setContains({ ...nets, nomatch: ["10.0.0.0/8"] }, ["src"], p), true);
  assert.equal(setContains(nets, ["dst"], p), true);
  assert.equal(setContains({ ...nets, entries: ["192.168.0.0/16"] }, ["src"], p), false);
  const netPort = {
    name: "NP",
    type: "hash:net,port",
    entries: ["10.1.0.0/16,tcp:40000", "10.0.0.0/8,udp:40000"],
  };
  assert.equal(setContains(netPort, ["src", "src"], p), true);
  assert.equal(
    setContains(netPort, ["src", "dst"], p),
    false,
    "the port is taken from the side the flag names",
  );
  assert.equal(setContains({ ...netPort, nomatch: ["10.1.0.0/16,tcp:40000"] }, ["src", "src"], p), false);
  const sourceCidr = {
    name: "KUBE-LOAD-BALANCER-SOURCE-CIDR",
    type: "hash:ip,port,net",
    entries: ["10.96.0.1,tcp:443,10.0.0.0/8", "10.96.0.1,tcp:443,10.1.2.0/24"],
    nomatch: ["10.96.0.1,tcp:443,10.1.2.0/24"],
  };
  assert.equal(setContains(sourceCidr, ["dst", "dst", "src"], p), false);
  assert.equal(setContains({ ...sourceCidr, nomatch: [] }, ["dst", "dst", "src"], p), true);
});

test("ipvsadm --stats: connections, packets and bytes per virtual and real server, --exact or not", () => {
  const stats = parseIpvsadmStats(`IP Virtual Server version 1.2.1 (size=4096)
Prot LocalAddress:Port               Conns   InPkts  OutPkts  InBytes OutBytes
  -> RemoteAddress:Port
TCP  10.1.125.152:80                     8       48       32     3072     2432
  -> 10.244.0.9:80                       4       24       16     1536     1216
  -> 10.244.0.10:80                      4       24       16       2K     1216
FWM  7                                   1        1        1       60       60
  -> 10.1.1.1:0                          1        1        1       60       60
`);
  assert.equal(stats.length, 1);
  assert.deepEqual(stats[0]?.stats, { conns: 8, inPkts: 48, outPkts: 32, inBytes: 3072, outBytes: 2432 });
  assert.equal(stats[0]?.realServers.get("10.244.0.9:80")?.inPkts, 24);
  assert.equal(stats[0]?.realServers.get("10.244.0.10:80")?.inBytes, 2000);
});
