import assert from "node:assert/strict";
import { test } from "node:test";
import { joinDump, readIpvsDump } from "../../../src/backends/ipvs/inspect.ts";
import { parseIpvsadmList } from "../../../src/kernel/ipvs.ts";
import { parseIpsetSave } from "../../../src/kernel/ipset.ts";
import { snapshotOf } from "../../../src/server/web.ts";

const IPVSADM = `IP Virtual Server version 1.2.1 (size=4096)
Prot LocalAddress:Port Scheduler Flags
  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn
TCP  10.96.0.10:80 rr persistent 600
  -> 10.244.0.9:80                Masq    1      2          1
  -> 10.244.0.10:80               Masq    0      1          0
UDP  [fd00::a]:53 sh (sh-port)
FWM  7 rr
  -> 10.1.1.1:0                   Route   1      0          0
`;
const IPSET = `create KUBE-CLUSTER-IP hash:ip,port family inet hashsize 1024 maxelem 65536 bucketsize 12 initval 0x1
add KUBE-CLUSTER-IP 10.96.0.10,tcp:80
create KUBE-NODE-PORT-TCP bitmap:port range 0-65535
`;
const IPTABLES = `*nat
:KUBE-SERVICES - [0:0]
[3:180] -A KUBE-SERVICES -m set --match-set KUBE-CLUSTER-IP dst,dst -j ACCEPT
COMMIT
`;

test("ipvsadm -Ln parses virtual servers, persistence, flags and real servers; firewall-mark services are skipped", () => {
  const list = parseIpvsadmList(IPVSADM);
  assert.equal(list.length, 2);
  assert.deepEqual(list[0], {
    protocol: "TCP",
    address: "10.96.0.10",
    port: 80,
    scheduler: "rr",
    persistence: 600,
    schedFlags: [],
    realServers: [
      { address: "10.244.0.9", port: 80, forward: "Masq", weight: 1, activeConn: 2, inactiveConn: 1 },
      { address: "10.244.0.10", port: 80, forward: "Masq", weight: 0, activeConn: 1, inactiveConn: 0 },
    ],
  });
  assert.deepEqual(list[1]?.schedFlags, ["sh-port"]);
  assert.equal(list[1]?.address, "fd00::a");
});

test("ipset save parses sets and entries", () => {
  const sets = parseIpsetSave(IPSET);
  assert.deepEqual(
    sets.map((s) => [s.name, s.type, s.entries]),
    [
      ["KUBE-CLUSTER-IP", "hash:ip,port", ["10.96.0.10,tcp:80"]],
      ["KUBE-NODE-PORT-TCP", "bitmap:port", []],
    ],
  );
});

test("the dump carries all three parts and still reads as an iptables-save dump for the web view", () => {
  const dump = joinDump({ ipvsadm: IPVSADM, ipset: IPSET, iptables: IPTABLES });
  const reading = readIpvsDump({ text: dump, origin: "test" });
  assert.deepEqual(reading.virtualServers, parseIpvsadmList(IPVSADM));
  assert.deepEqual(reading.ipsets.get("KUBE-CLUSTER-IP")?.entries, ["10.96.0.10,tcp:80"]);
  assert.equal(reading.iptables.get("dump"), IPTABLES);
  const snap = snapshotOf([dump], [], 0);
  assert.equal(snap.mode.rules("", 100).rows.filter((r) => r.chain === "KUBE-SERVICES").length, 1);
});

test("the tools' outputs concatenated without prefixes read the same as the prefixed dump", () => {
  const raw = readIpvsDump({ text: `${IPVSADM}${IPSET}${IPTABLES}`, origin: "raw" });
  const prefixed = readIpvsDump({
    text: joinDump({ ipvsadm: IPVSADM, ipset: IPSET, iptables: IPTABLES }),
    origin: "p",
  });
  assert.deepEqual(raw.virtualServers, prefixed.virtualServers);
  assert.deepEqual([...raw.ipsets], [...prefixed.ipsets]);
  assert.equal(raw.iptables.get("dump"), prefixed.iptables.get("dump"));
});
