import { test } from "node:test";
import assert from "node:assert/strict";
import { parseIP } from "../../../src/ip.ts";
import type { Address } from "../../../src/ip.ts";
import { parseIptablesSave } from "../../../src/netfilter/iptables-save.ts";
import { evaluateRule } from "../../../src/netfilter/match.ts";
import type { MatchContext, PacketView } from "../../../src/netfilter/match.ts";
import type { Rule } from "../../../src/netfilter/model.ts";

function addr(text: string): Address {
  const a = parseIP(text);
  assert.ok(a, text);
  return a;
}

const ctx: MatchContext = { localAddresses: [addr("192.168.0.2")], recent: "unknown" };

function packet(over: Partial<PacketView> = {}): PacketView {
  return {
    protocol: "tcp",
    src: addr("10.0.0.2"),
    srcPort: 40000,
    dst: addr("172.30.0.41"),
    dstPort: 80,
    mark: 0,
    ctstates: new Set(["NEW"]),
    ...over,
  };
}

function ruleOf(text: string): Rule {
  const rs = parseIptablesSave(`*filter\n:INPUT ACCEPT [0:0]\n:X - [0:0]\n-A INPUT ${text}\nCOMMIT\n`);
  const r = rs.tables.get("filter")?.chains.get("INPUT")?.rules[0];
  assert.ok(r);
  return r;
}

function kind(text: string, p: PacketView = packet()): string {
  return evaluateRule(ruleOf(text), p, ctx).kind;
}

test("protocol, addresses, ports, multiport and negations", () => {
  assert.equal(kind("-p tcp -m tcp --dport 80 -j X"), "match");
  assert.equal(kind("-p 6 -j X"), "match");
  assert.equal(kind("-p udp -m udp --dport 80 -j X"), "nomatch");
  assert.equal(kind("! -p udp -j X"), "match");
  assert.equal(kind("-p tcp -m tcp --dport 81:90 -j X"), "nomatch");
  assert.equal(kind("-p tcp -m tcp --dport 70:90 -j X"), "match");
  assert.equal(kind("-p tcp -m tcp ! --dport 80 -j X"), "nomatch");
  assert.equal(kind("-p tcp -m multiport --dports 22,80,443 -j X"), "match");
  assert.equal(kind("-p tcp -m multiport --dports 22,443 -j X"), "nomatch");
  assert.equal(kind("-p tcp -m tcp --sport 40000 -j X"), "match");
  assert.equal(kind("-s 10.0.0.0/8 -d 172.30.0.41/32 -j X"), "match");
  assert.equal(kind("! -s 10.0.0.0/8 -j X"), "nomatch");
  assert.equal(kind("-d 172.30.0.42 -j X"), "nomatch");
});

test("mark with mask, conntrack/state, addrtype with the node's local addresses", () => {
  assert.equal(kind("-m mark --mark 0x4000/0x4000 -j X", packet({ mark: 0x4001 })), "match");
  assert.equal(kind("-m mark ! --mark 0x4000/0x4000 -j X", packet({ mark: 0x4001 })), "nomatch");
  assert.equal(kind("-m mark --mark 0x1 -j X", packet({ mark: 0x4001 })), "nomatch");
  assert.equal(kind("-m conntrack --ctstate RELATED,ESTABLISHED -j X"), "nomatch");
  assert.equal(kind("-m conntrack ! --ctstate RELATED,ESTABLISHED,DNAT -j X"), "match");
  assert.equal(
    kind(
      "-m conntrack ! --ctstate RELATED,ESTABLISHED,DNAT -j X",
      packet({ ctstates: new Set(["NEW", "DNAT"]) }),
    ),
    "nomatch",
  );
  assert.equal(kind("-m state --state NEW -j X"), "match");
  assert.equal(kind("-m addrtype --dst-type LOCAL -j X"), "nomatch");
  assert.equal(kind("-m addrtype --dst-type LOCAL -j X", packet({ dst: addr("192.168.0.2") })), "match");
  assert.equal(kind("-m addrtype --dst-type LOCAL -j X", packet({ dst: addr("127.0.0.1") })), "match");
  assert.equal(kind("-m addrtype ! --dst-type LOCAL -j X"), "match");
  assert.equal(kind("-m addrtype --src-type UNICAST -j X"), "match");
  assert.equal(kind("-m comment --comment anything -m nfacct --nfacct-name c -j X"), "match");
});

test("statistic splits, unknown modules and missing packet fields never guess", () => {
  const split = evaluateRule(ruleOf("-m statistic --mode random --probability 0.25 -j X"), packet(), ctx);
  assert.deepEqual(split, {
    kind: "branch",
    branches: [
      { matched: true, weight: 0.25 },
      { matched: false, weight: 0.75 },
    ],
  });
  const nth = evaluateRule(ruleOf("-m statistic --mode nth --every 2 --packet 0 -j X"), packet(), ctx);
  assert.equal(nth.kind, "branch");
  const unknown = evaluateRule(ruleOf("-m set --match-set foo src -j X"), packet(), ctx);
  assert.ok(unknown.kind === "branch");
  assert.deepEqual(
    unknown.branches.map((b) => [b.matched, b.assumption?.split(":")[0]]),
    [
      [true, "unknown — assumed to match"],
      [false, "unknown — assumed not to match"],
    ],
  );
  // A definite mismatch wins over an unknown match in the same rule.
  assert.equal(kind("-m set --match-set foo src -p udp -j X"), "nomatch");
  assert.equal(kind("-i eth0 -j X"), "branch");
  assert.equal(kind("-i eth+ -j X", packet({ inInterface: "eth1" })), "match");
  assert.equal(kind("! -i eth+ -j X", packet({ inInterface: "eth1" })), "nomatch");
  assert.equal(kind("-p tcp -m tcp --sport 1 -j X", packet({ srcPort: undefined })), "branch");
  assert.equal(kind("-m recent --name A --set -j X"), "match");
  assert.equal(kind("-m recent --name A --rcheck --seconds 10800 --reap -j X"), "branch");
  assert.equal(
    evaluateRule(ruleOf("-m recent --name A --rcheck -j X"), packet(), { ...ctx, recent: "new-client" }).kind,
    "nomatch",
  );
});
