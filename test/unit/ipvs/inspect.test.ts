import assert from "node:assert/strict";
import { test } from "node:test";
import { joinDump, readIpvsDump } from "../../../src/backends/ipvs/inspect.ts";
import { parseIpvsadmList } from "../../../src/kernel/ipvs.ts";
import { parseIpsetList, parseIpsetSave } from "../../../src/kernel/ipset.ts";
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

/** `ipset list` (ipset 7) of the sets in IPSET, plus a hash:net with extensions and a nomatch entry. */
const IPSET_LIST = `Name: KUBE-CLUSTER-IP
Type: hash:ip,port
Revision: 6
Header: family inet hashsize 1024 maxelem 65536 bucketsize 12 initval 0x1
Size in memory: 408
References: 2
Number of entries: 1
Members:
10.96.0.10,tcp:80

Name: KUBE-NODE-PORT-TCP
Type: bitmap:port
Revision: 3
Header: range 0-65535
Size in memory: 8264
References: 1
Number of entries: 0
Members:

Name: NETS
Type: hash:net
Revision: 7
Header: family inet hashsize 1024 maxelem 65536 comment bucketsize 12 initval 0x2
Size in memory: 600
References: 0
Number of entries: 2
Members:
10.0.0.0/8 comment "pods"
10.1.0.0/16 nomatch comment "carved out"
`;

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

test("ipset list parses to what ipset save says of the same sets; extensions are cut, nomatch kept", () => {
  const listed = parseIpsetList(IPSET_LIST);
  assert.deepEqual(listed.slice(0, 2), parseIpsetSave(IPSET));
  assert.deepEqual(listed[2], {
    name: "NETS",
    type: "hash:net",
    options: "family inet hashsize 1024 maxelem 65536 comment bucketsize 12 initval 0x2",
    entries: ["10.0.0.0/8", "10.1.0.0/16"],
    nomatch: ["10.1.0.0/16"],
  });
  assert.deepEqual(
    parseIpsetSave(
      'create N hash:net family inet\nadd N 10.0.0.0/8 comment "a b"\nadd N 10.1.0.0/16 nomatch\n',
    )[0],
    {
      name: "N",
      type: "hash:net",
      options: "family inet",
      entries: ["10.0.0.0/8", "10.1.0.0/16"],
      nomatch: ["10.1.0.0/16"],
    },
  );
});

test("a dump may hold ipset list instead of ipset save, between the other tools' outputs", () => {
  const saved = readIpvsDump({ text: `${IPVSADM}${IPSET}${IPTABLES}`, origin: "save" });
  const listed = readIpvsDump({ text: `${IPVSADM}${IPSET_LIST}${IPTABLES}`, origin: "list" });
  assert.deepEqual(listed.virtualServers, saved.virtualServers);
  assert.deepEqual([...listed.ipsets].slice(0, 2), [...saved.ipsets]);
  assert.deepEqual(listed.ipsets.get("NETS")?.nomatch, ["10.1.0.0/16"]);
  assert.equal(listed.iptables.get("dump"), saved.iptables.get("dump"), "the iptables part is intact");
  // The last set's members end where iptables-save starts, without a blank line between them.
  const tight = readIpvsDump({ text: `${IPSET_LIST.trimEnd()}\n${IPTABLES}`, origin: "tight" });
  assert.deepEqual(tight.ipsets.get("NETS")?.entries, ["10.0.0.0/8", "10.1.0.0/16"]);
  assert.equal(tight.iptables.get("dump"), IPTABLES);
  const both = readIpvsDump({ text: `${IPSET_LIST.trimEnd()}\n${IPSET}${IPTABLES}`, origin: "both" });
  assert.deepEqual(
    both.ipsets.get("NETS")?.entries,
    ["10.0.0.0/8", "10.1.0.0/16"],
    "ipset save's add lines are not members",
  );
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
