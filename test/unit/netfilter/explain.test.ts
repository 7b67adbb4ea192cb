import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { parseIptablesSave } from "../../../src/netfilter/iptables-save.ts";
import { explainService, explanationToJson, formatExplanation } from "../../../src/netfilter/explain.ts";
import { COLUMN_HEADER, formatRuleColumns, humanCount } from "../../../src/netfilter/format.ts";
import { InputError } from "../../../src/errors.ts";

const here = new URL(".", import.meta.url).pathname;
const flows = parseIptablesSave(readFileSync(`${here}fixtures/packet-flow.rules.txt`, "utf8"));
const netns = parseIptablesSave(readFileSync(`${here}fixtures/iptables-save-c.netns.txt`, "utf8"));

test("explain: KUBE-SERVICES → KUBE-SVC (statistic shares) → KUBE-SEP → DNAT, with counters", () => {
  const ex = explainService(netns, { namespace: "ns3", name: "svc3" });
  assert.deepEqual(ex.servicePortNames, ["ns3/svc3:p80"]);
  assert.deepEqual(
    ex.entries.map((e) => [e.chain, e.ruleNumber, e.role]),
    [["KUBE-SERVICES", 2, "cluster IP"]],
  );
  assert.deepEqual(
    ex.chains.map((c) => [c.name, c.kind]),
    [
      ["KUBE-SVC-X27LE4BHSL4DOUIK", "SVC"],
      ["KUBE-SEP-DKCFIS26GWF2WLWC", "SEP"],
      ["KUBE-SEP-JVVZVJ7BSEPPRNBS", "SEP"],
    ],
  );
  assert.deepEqual(
    ex.endpoints.map((e) => [e.endpoint, e.probability, e.counters?.packets]),
    [
      ["10.0.3.2:80", 0.5, 1],
      ["10.0.3.3:80", 0.5, 0],
    ],
  );
  assert.deepEqual(
    ex.chains[0]?.rules.map((r) => r.role),
    ["masquerade", "endpoint", "endpoint"],
  );
  assert.equal(ex.chains[1]?.rules[0]?.role, "hairpin masquerade");
  assert.deepEqual(
    ex.masquerade.map((r) => [r.chain, r.ruleNumber, r.counters?.packets]),
    [
      ["KUBE-MARK-MASQ", 1, 2],
      ["KUBE-POSTROUTING", 1, 0],
      ["KUBE-POSTROUTING", 2, 2],
      ["KUBE-POSTROUTING", 3, 2],
    ],
  );
  const text = formatExplanation(ex, netns.family);
  assert.match(text, /^Service ns3\/svc3 \(ns3\/svc3:p80\)/);
  assert.match(text, /10\.0\.3\.2:80 \(KUBE-SEP-DKCFIS26GWF2WLWC\) 50%, 1 pkts 60 bytes/);
  assert.ok(text.includes(COLUMN_HEADER));
});

test("explain: LoadBalancer with source ranges, NodePort and affinity; filter rules listed", () => {
  const ex = explainService(flows, { namespace: "ns5", name: "svc5", port: "p80" });
  assert.deepEqual(
    ex.entries.map((e) => [e.chain, e.role]),
    [
      ["KUBE-SERVICES", "cluster IP"],
      ["KUBE-SERVICES", "loadbalancer IP"],
      ["KUBE-NODEPORTS", "node port"],
    ],
  );
  assert.deepEqual(
    ex.filter.map((e) => [e.chain, e.role]),
    [["KUBE-PROXY-FIREWALL", "firewall drop"]],
  );
  assert.deepEqual(
    ex.chains.map((c) => c.kind),
    ["SVC", "FW", "EXT", "SEP"],
  );
  assert.deepEqual(
    ex.chains[0]?.rules.map((r) => r.role),
    ["masquerade", "affinity", "endpoint"],
  );
  assert.deepEqual(
    ex.endpoints.map((e) => [e.endpoint, e.probability]),
    [["10.180.0.3:80", 1]],
  );
});

test("explain: three endpoints get 1/3 each from 0.3333333333 and 0.5; a Service without endpoints shows its REJECT", () => {
  const rs = parseIptablesSave(
    [
      "*nat",
      ":KUBE-SERVICES - [0:0]",
      ":KUBE-SVC-A - [0:0]",
      ":KUBE-SEP-1 - [0:0]",
      ":KUBE-SEP-2 - [0:0]",
      ":KUBE-SEP-3 - [0:0]",
      '-A KUBE-SERVICES -m comment --comment "ns/a:http cluster IP" -m tcp -p tcp -d 172.30.1.1 --dport 80 -j KUBE-SVC-A',
      '-A KUBE-SVC-A -m comment --comment "ns/a:http -> 10.1.1.1:80" -m statistic --mode random --probability 0.3333333333 -j KUBE-SEP-1',
      '-A KUBE-SVC-A -m comment --comment "ns/a:http -> 10.1.1.2:80" -m statistic --mode random --probability 0.5000000000 -j KUBE-SEP-2',
      '-A KUBE-SVC-A -m comment --comment "ns/a:http -> 10.1.1.3:80" -j KUBE-SEP-3',
      "-A KUBE-SEP-1 -m comment --comment ns/a:http -m tcp -p tcp -j DNAT --to-destination 10.1.1.1:80",
      "-A KUBE-SEP-2 -m comment --comment ns/a:http -m tcp -p tcp -j DNAT --to-destination 10.1.1.2:80",
      "-A KUBE-SEP-3 -m comment --comment ns/a:http -m tcp -p tcp -j DNAT --to-destination 10.1.1.3:80",
      "COMMIT",
      "",
    ].join("\n"),
  );
  const shares = explainService(rs, { namespace: "ns", name: "a" }).endpoints.map((e) => e.probability);
  assert.equal(shares.length, 3);
  for (const s of shares) assert.ok(Math.abs(s - 1 / 3) < 1e-9, String(s));
  const none = explainService(flows, { namespace: "ns6", name: "svc6" });
  assert.deepEqual(
    none.filter.map((f) => [f.chain, f.role]),
    [["KUBE-SERVICES", "no endpoints"]],
  );
  assert.match(formatExplanation(none, flows.family), /\(none: new connections are not DNATed\)/);
  assert.throws(() => explainService(flows, { namespace: "ns9", name: "nope" }), InputError);
  assert.throws(() => explainService(flows, { namespace: "ns5", name: "svc5", port: "other" }), InputError);
});

test("iptables -vnL columns", () => {
  const rule = netns.tables.get("nat")?.chains.get("KUBE-SVC-X27LE4BHSL4DOUIK")?.rules[0];
  assert.ok(rule);
  assert.equal(
    formatRuleColumns(rule, "IPv4"),
    "   1      1    60 KUBE-MARK-MASQ             tcp  --  *      *       !10.0.0.0/8          172.30.0.43          /* ns3/svc3:p80 cluster IP */ tcp dpt:80",
  );
  const masq = netns.tables.get("nat")?.chains.get("KUBE-MARK-MASQ")?.rules[0];
  assert.ok(masq);
  assert.match(
    formatRuleColumns(masq, "IPv4"),
    /MARK +all +-- +\* +\* +0\.0\.0\.0\/0 +0\.0\.0\.0\/0 +MARK or 0x4000$/,
  );
  assert.deepEqual([0, 99999, 100000, 123456789, 5_000_000_000_000].map(humanCount), [
    "0",
    "99999",
    "100K",
    "123M",
    "5000G",
  ]);
});

test("explain JSON carries rule text and survives IPv6 (bigint) addresses", () => {
  const rs = parseIptablesSave(
    '*filter\n:KUBE-SERVICES - [0:0]\n[3:180] -A KUBE-SERVICES -d fd00:30::41/128 -p tcp -m comment --comment "ns1/svc1:p80 has no endpoints" -m tcp --dport 80 -j REJECT\nCOMMIT\n',
  );
  const json = JSON.parse(
    JSON.stringify(explanationToJson(explainService(rs, { namespace: "ns1", name: "svc1" }))),
  ) as {
    filter: { rule: string; role: string; target: string; counters: { packets: number } }[];
  };
  assert.deepEqual(json.filter[0], {
    table: "filter",
    chain: "KUBE-SERVICES",
    ruleNumber: 1,
    line: 3,
    role: "no endpoints",
    servicePortName: "ns1/svc1:p80",
    counters: { packets: 3, bytes: 180 },
    rule: '-A KUBE-SERVICES -d fd00:30::41/128 -p tcp -m comment --comment "ns1/svc1:p80 has no endpoints" -m tcp --dport 80 -j REJECT',
    target: "REJECT",
  });
});
