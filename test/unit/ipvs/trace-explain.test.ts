/**
 * ipvs mode's trace and explain on a node recorded in the VM (test/fixtures/ipvs/node.dump:
 * `ipvsadm -Ln --exact`, `ipvsadm -Ln --exact --stats`, `ipset save`, the node's addresses and
 * `iptables-save -c` as the daemon left them after the VM scenario "trace and explain predict what
 * IPVS does with real traffic"; node.ipset-list is `ipset list` of the same moment; see
 * test/fixtures/README.md). The expectations are what the kernel did in that run: the scenario
 * checked each against real connections, and the counters in the dump count them.
 */
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { test } from "node:test";
import { fileURLToPath } from "node:url";
import {
  explainIpvsService,
  ipvsWebSnapshot,
  readIpvsDump,
  traceIpvs,
} from "../../../src/backends/ipvs/inspect.ts";
import { explainCommand } from "../../../src/cli/explain.ts";
import { traceCommand } from "../../../src/cli/trace.ts";
import { whyNoTraffic } from "../../../src/inspect/model.ts";
import { parseIpsetList, parseIpsetSave } from "../../../src/kernel/ipset.ts";
import { parseIptablesSave } from "../../../src/netfilter/iptables-save.ts";
import { packetFromFlags } from "../../../src/netfilter/tracer.ts";

const DUMP = fileURLToPath(new URL("../../fixtures/ipvs/node.dump", import.meta.url));
const TEXT = readFileSync(DUMP, "utf8");
const LISTED = readFileSync(
  fileURLToPath(new URL("../../fixtures/ipvs/node.ipset-list", import.meta.url)),
  "utf8",
);
const reading = readIpvsDump({ text: TEXT, origin: "node.dump" });
const CLIENT = "192.168.50.100";

/** Traced with the node's own addresses, as the dump's `#address` lines give them. */
function traced(src: string, dst: string, from: "pod" | "node" | "external", r = reading) {
  const { packet, origin } = packetFromFlags({ src, dst, from });
  return traceIpvs(r, packet, { origin, source: "test" }).result;
}

/** A rule's counters in the dump, by table, chain and a piece of its text. */
function counted(table: string, chain: string, text: string): number {
  const rules = parseIptablesSave(reading.iptables.get("dump")!).tables.get(table)!.chains.get(chain)!.rules;
  const rule = rules.find((r) => r.text.includes(text));
  assert.ok(rule, `${table} ${chain}: no rule with ${text}`);
  return rule.counters!.packets;
}

const summary = (r: ReturnType<typeof traced>) =>
  r.outcomes
    .map(
      (o) => `${o.verdict} ${o.dnat ?? "-"} ${o.probability} masq=${o.masquerade} by=${o.decidedBy?.table}`,
    )
    .sort();

test("the recorded node reads: virtual servers with real servers and counters, the ipsets, the addresses, the rules", () => {
  // Four Services (the seed's nginx, traced, traced-local, traced-empty): a ClusterIP each and
  // three NodePorts on each of the node's three addresses (192.168.50.1, .60.1, 10.244.0.1).
  assert.equal(reading.virtualServers.length, 13);
  assert.deepEqual(
    reading.virtualServers
      .find((v) => v.address === "10.1.0.100")
      ?.realServers.map((r) => `${r.address} ${r.inactiveConn}`),
    ["10.244.0.11 4", "10.244.0.12 4"],
  );
  assert.deepEqual(reading.stats.get("TCP 10.1.0.100:80")?.stats, {
    conns: 8,
    inPkts: 40,
    outPkts: 29,
    inBytes: 2144,
    outBytes: 1708,
  });
  assert.equal(reading.ipsets.size, 34, "17 sets per family");
  assert.deepEqual([...(reading.ipsets.get("KUBE-CLUSTER-IP")?.entries ?? [])].sort(), [
    "10.1.0.100,tcp:80",
    "10.1.0.101,tcp:80",
    "10.1.0.102,tcp:80",
    "10.1.125.152,tcp:80",
  ]);
  assert.ok(reading.localAddresses.includes("192.168.50.1") && reading.localAddresses.includes("10.244.0.1"));
  assert.match(reading.iptables.get("dump") ?? "", /-A KUBE-SERVICES/);
});

test("ipset list of the same moment reads as ipset save did, and the traces do not change with it", () => {
  const listed = parseIpsetList(LISTED);
  const saved = parseIpsetSave(TEXT);
  assert.equal(listed.length, 34);
  assert.deepEqual(listed, saved);
  const start = TEXT.indexOf("create ");
  const end = TEXT.indexOf("#address");
  const withList = readIpvsDump({ text: TEXT.slice(0, start) + LISTED + TEXT.slice(end), origin: "list" });
  assert.deepEqual([...withList.ipsets], [...reading.ipsets]);
  for (const [src, dst, from] of [
    [`${CLIENT}:40000`, "10.1.0.100:80", "external"],
    [`${CLIENT}:40000`, "192.168.50.1:30310", "external"],
    ["10.244.0.11:40000", "10.1.0.100:80", "pod"],
  ] as const)
    assert.deepEqual(traced(src, dst, from, withList).outcomes, traced(src, dst, from).outcomes);
});

test("a ClusterIP from an external client: both real servers at 50%, masqueraded, decided by IPVS", () => {
  const r = traced(`${CLIENT}:40000`, "10.1.0.100:80", "external");
  // The kernel: 8 connections, 4 on each pod (InActConn above), none of which saw the client's address.
  assert.deepEqual(summary(r), [
    "ACCEPT 10.244.0.11:80 0.5 masq=true by=ipvs",
    "ACCEPT 10.244.0.12:80 0.5 masq=true by=ipvs",
  ]);
  assert.deepEqual(
    r.outcomes.flatMap((o) => o.assumptions),
    [],
    "every set match decided",
  );
  // The mark comes from KUBE-CLUSTER-IP's rule: 9 first packets there, these 8 and traced-empty's 1.
  assert.equal(counted("nat", "KUBE-SERVICES", "KUBE-CLUSTER-IP dst,dst -j KUBE-MARK-MASQ"), 9);
});

test("a NodePort: both real servers, masqueraded by KUBE-NODE-PORT-TCP (bitmap:port)", () => {
  assert.deepEqual(summary(traced(`${CLIENT}:40000`, "192.168.50.1:30300", "external")), [
    "ACCEPT 10.244.0.11:80 0.5 masq=true by=ipvs",
    "ACCEPT 10.244.0.12:80 0.5 masq=true by=ipvs",
  ]);
  // The kernel: 8 connections to 30300 went through that rule (and 16 through MASQUERADE in all).
  assert.equal(counted("nat", "KUBE-NODE-PORT", "KUBE-NODE-PORT-TCP dst -j KUBE-MARK-MASQ"), 8);
  assert.equal(counted("nat", "KUBE-POSTROUTING", "MASQUERADE --random-fully"), 16);
});

test("a NodePort with externalTrafficPolicy Local: its local endpoint, the client address kept", () => {
  // The kernel: one connection, answered by pod-5 (10.244.0.13) with the client's own address;
  // KUBE-NODE-PORT-LOCAL-TCP's RETURN counted its first packet.
  assert.deepEqual(summary(traced(`${CLIENT}:40000`, "192.168.50.1:30310", "external")), [
    "ACCEPT 10.244.0.13:80 1 masq=false by=ipvs",
  ]);
  assert.equal(counted("nat", "KUBE-NODE-PORT", "KUBE-NODE-PORT-LOCAL-TCP dst -j RETURN"), 1);
});

test("no endpoints: IPVS refuses with ICMP port unreachable; an undefined port of a VIP: KUBE-IPVS-FILTER", () => {
  // The kernel: the connection to traced-empty was refused (ECONNREFUSED). The undefined port was
  // not tried on this node; the VM's set scenario saw KUBE-IPVS-FILTER refuse one on another VIP.
  assert.deepEqual(summary(traced(`${CLIENT}:40000`, "10.1.0.102:80", "external")), [
    "REJECT - 1 masq=false by=ipvs",
  ]);
  const other = traced(`${CLIENT}:40000`, "10.1.0.100:81", "external");
  assert.deepEqual(
    other.outcomes.map((o) => `${o.verdict} ${o.decidedBy?.chain}`),
    ["REJECT KUBE-IPVS-FILTER"],
  );
});

test("a pod reaching itself through its Service is masqueraded (KUBE-LOOP-BACK), the other endpoint is not", () => {
  // Not tried on this node (KUBE-LOOP-BACK's MASQUERADE counted 0); the VM's set scenario saw it on
  // another Service: the pod reached itself and saw the node's address, another pod kept its own.
  assert.equal(counted("nat", "KUBE-POSTROUTING", "KUBE-LOOP-BACK dst,dst,src -j MASQUERADE"), 0);
  assert.deepEqual(summary(traced("10.244.0.11:40000", "10.1.0.100:80", "pod")), [
    "ACCEPT 10.244.0.11:80 0.5 masq=true by=ipvs",
    "ACCEPT 10.244.0.12:80 0.5 masq=false by=ipvs",
  ]);
});

test("the node's own connection: IPVS in LOCAL_OUT, then POSTROUTING", () => {
  // Not tried on this node; the VM's KUBE-IPVS-OUT-FILTER scenario connects from the node to a ClusterIP.
  const r = traced("192.168.50.1", "10.1.0.100:80", "node");
  assert.deepEqual(r.outcomes.map((o) => `${o.verdict} ${o.dnat} ${o.decidedBy?.hook}`).sort(), [
    "ACCEPT 10.244.0.11:80 OUTPUT",
    "ACCEPT 10.244.0.12:80 OUTPUT",
  ]);
});

test("explain: frontends, real servers with shares and --stats counters, masquerade rules", () => {
  const named = {
    ...reading,
    servicePorts: [
      {
        servicePort: "default/traced",
        kind: "ClusterIP",
        protocol: "TCP" as const,
        address: "10.1.0.100",
        port: 80,
      },
      {
        servicePort: "default/traced",
        kind: "NodePort",
        protocol: "TCP" as const,
        address: "192.168.50.1",
        port: 30300,
      },
      {
        servicePort: "default/traced-empty",
        kind: "ClusterIP",
        protocol: "TCP" as const,
        address: "10.1.0.102",
        port: 80,
      },
    ],
  };
  const ex = explainIpvsService(named, { namespace: "default", name: "traced" }, "test");
  assert.ok(ex !== null);
  assert.deepEqual(
    ex.view.frontends.map((f) => `${f.kind} ${f.action}`),
    ["cluster IP load-balance", "node port load-balance"],
  );
  assert.deepEqual(
    ex.view.endpoints.map((e) => `${e.endpoint} ${e.share}`),
    ["10.244.0.11:80 0.5", "10.244.0.12:80 0.5", "10.244.0.11:80 0.5", "10.244.0.12:80 0.5"],
  );
  assert.ok(
    ex.view.endpoints.some((e) => (e.counters?.packets ?? 0) > 0),
    "counters from --stats",
  );
  assert.ok(
    ex.view.masquerade.some((m) =>
      /! -s 10\.244\.0\.0\/16 .*KUBE-CLUSTER-IP dst,dst -j KUBE-MARK-MASQ/.test(m.where),
    ),
    JSON.stringify(ex.view.masquerade),
  );
  assert.ok(ex.view.masquerade.some((m) => /KUBE-NODE-PORT-TCP/.test(m.where)));
  const empty = explainIpvsService(named, { namespace: "default", name: "traced-empty" }, "test");
  assert.deepEqual(whyNoTraffic(empty!.view).length, 1);
  assert.match(
    whyNoTraffic(empty!.view)[0]!,
    /has no endpoints: packets to 10\.1\.0\.102:80 \(tcp\) are REJECTed in IPVS/,
  );
  assert.equal(explainIpvsService(named, { namespace: "default", name: "absent" }, "test"), null);
});

test("explain's walk: first match per chain (no KUBE-IPVS-FILTER REJECT after its RETURN), counters and keys on each line", () => {
  const named = {
    ...reading,
    servicePorts: [
      {
        servicePort: "default/traced",
        kind: "ClusterIP",
        protocol: "TCP" as const,
        address: "10.1.0.100",
        port: 80,
      },
    ],
  };
  const ex = explainIpvsService(named, { namespace: "default", name: "traced" }, "test")!;
  const filter = ex.walk.filter((w) => w.text.includes("KUBE-IPVS-FILTER"));
  // The port the Service defines RETURNs at KUBE-CLUSTER-IP; the REJECT (the VIP's other ports) is never met.
  assert.deepEqual(
    filter.map((w) => /-j (\S+)/.exec(w.text)?.[1]),
    ["RETURN"],
    filter.map((w) => w.text).join("\n"),
  );
  assert.ok(!ex.walk.some((w) => /-j REJECT/.test(w.text)));
  assert.equal(
    filter[0]!.counters?.packets,
    counted("filter", "KUBE-IPVS-FILTER", "KUBE-CLUSTER-IP dst,dst"),
  );
  assert.match(filter[0]!.counterKey!, /^4\/filter\/KUBE-IPVS-FILTER\/\d+$/);
  // The virtual server's line and its real servers' lines carry --stats' counters.
  const vs = ex.walk.find((w) => w.text.startsWith("IPVS virtual server"))!;
  assert.equal(vs.counterKey, "4/ipvs/TCP 10.1.0.100:80");
  assert.ok((vs.counters?.packets ?? 0) > 0);
  const rs = ex.walk.filter((w) => w.text.startsWith("  -> real server"));
  assert.equal(rs.length, 2);
  for (const w of rs) {
    assert.match(w.counterKey!, /^4\/ipvs\/TCP 10\.1\.0\.100:80\/[12]$/);
    assert.ok((w.counters?.packets ?? 0) > 0, w.text);
  }
  // The web view's walk (of a live reading: iptables-save per family) shows the same counters
  // under keys its counter map knows.
  const web = ipvsWebSnapshot({ ...named, iptables: new Map([["IPv4", reading.iptables.get("dump")!]]) });
  const entry = web.service(4, "default", "traced")!;
  const all = web.counters();
  const counted2 = entry.walk.filter((w) => w.counterKey !== undefined);
  assert.equal(counted2.length, ex.walk.filter((w) => w.counterKey !== undefined).length);
  for (const w of counted2) {
    assert.ok(all[w.counterKey!] !== undefined, `no live counter for ${w.counterKey}`);
    assert.equal(w.packets, all[w.counterKey!]![0], w.text);
  }
  assert.ok(!entry.walk.some((w) => /-j REJECT/.test(w.text)));
});

test("the commands: trace --proxy-mode ipvs --ruleset, explain named by #service-port lines or refused", async () => {
  const json = JSON.parse(
    await traceCommand({
      proxyMode: "ipvs",
      ruleset: DUMP,
      src: `${CLIENT}:40000`,
      dst: "10.1.0.100:80",
      from: "external",
      output: "json",
    }),
  ) as { outcomes: { dnat?: string; probability: number }[] };
  assert.deepEqual(json.outcomes.map((o) => [o.dnat, o.probability]).sort(), [
    ["10.244.0.11:80", 0.5],
    ["10.244.0.12:80", 0.5],
  ]);
  await assert.rejects(
    explainCommand("default/traced", { proxyMode: "ipvs", ruleset: DUMP }),
    /IPVS holds no Service names/,
  );
});
