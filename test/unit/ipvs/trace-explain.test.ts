/**
 * ipvs mode's trace and explain on a node recorded in the VM (test/fixtures/ipvs/node.dump:
 * `ipvsadm -Ln --exact`, `ipvsadm -Ln --exact --stats`, `ipset save` and `iptables-save -c` as
 * the daemon left them, see test/fixtures/README.md).
 */
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { test } from "node:test";
import { fileURLToPath } from "node:url";
import { explainIpvsService, readIpvsDump, traceIpvs } from "../../../src/backends/ipvs/inspect.ts";
import { explainCommand } from "../../../src/cli/explain.ts";
import { traceCommand } from "../../../src/cli/trace.ts";
import { whyNoTraffic } from "../../../src/inspect/model.ts";
import { packetFromFlags } from "../../../src/netfilter/tracer.ts";

const DUMP = fileURLToPath(new URL("../../fixtures/ipvs/node.dump", import.meta.url));
const reading = readIpvsDump({ text: readFileSync(DUMP, "utf8"), origin: "node.dump" });
const NODE = ["192.168.50.1", "192.168.60.1", "10.244.0.1"];
const CLIENT = "192.168.50.100";

function traced(src: string, dst: string, from: "pod" | "node" | "external") {
  const { packet, origin } = packetFromFlags({ src, dst, from });
  return traceIpvs(reading, packet, { origin, localAddresses: NODE, source: "test" }).result;
}

const summary = (r: ReturnType<typeof traced>) =>
  r.outcomes
    .map(
      (o) => `${o.verdict} ${o.dnat ?? "-"} ${o.probability} masq=${o.masquerade} by=${o.decidedBy?.table}`,
    )
    .sort();

test("the recorded node reads: virtual servers with real servers and counters, the ipsets, the rules", () => {
  assert.ok(reading.virtualServers.some((v) => v.address === "10.1.0.100" && v.realServers.length === 2));
  assert.ok(reading.stats.get("TCP 10.1.0.100:80"), "ipvsadm --stats read");
  assert.ok(reading.ipsets.get("KUBE-CLUSTER-IP")?.entries.includes("10.1.0.100,tcp:80"));
  assert.match(reading.iptables.get("dump") ?? "", /-A KUBE-SERVICES/);
});

test("a ClusterIP from an external client: both real servers at 50%, masqueraded, decided by IPVS", () => {
  assert.deepEqual(summary(traced(`${CLIENT}:40000`, "10.1.0.100:80", "external")), [
    "ACCEPT 10.244.0.11:80 0.5 masq=true by=ipvs",
    "ACCEPT 10.244.0.12:80 0.5 masq=true by=ipvs",
  ]);
});

test("a NodePort with externalTrafficPolicy Local: its local endpoint, the client address kept", () => {
  assert.deepEqual(summary(traced(`${CLIENT}:40000`, "192.168.50.1:30310", "external")), [
    "ACCEPT 10.244.0.13:80 1 masq=false by=ipvs",
  ]);
});

test("no endpoints: IPVS refuses with ICMP port unreachable; an undefined port of a VIP: KUBE-IPVS-FILTER", () => {
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
  assert.deepEqual(summary(traced("10.244.0.11:40000", "10.1.0.100:80", "pod")), [
    "ACCEPT 10.244.0.11:80 0.5 masq=true by=ipvs",
    "ACCEPT 10.244.0.12:80 0.5 masq=false by=ipvs",
  ]);
});

test("the node's own connection: IPVS in LOCAL_OUT, then POSTROUTING", () => {
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
      /KUBE-CLUSTER-IP dst,dst ! -s 10\.244\.0\.0\/16 -j KUBE-MARK-MASQ/.test(m.where),
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
