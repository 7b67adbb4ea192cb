/**
 * `render --proxy-mode ipvs` on the seed example: the virtual servers as the `ipvsadm -R` batch a
 * first sync sends, kube-ipvs0's addresses, the ipsets, the iptables payload and the names; and
 * the output, read back as a dump, traces and explains the Service.
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import { explainIpvsService, readIpvsDump, traceIpvs } from "../../../src/backends/ipvs/inspect.ts";
import { renderCommand } from "../../../src/cli/render.ts";
import { packetFromFlags } from "../../../src/netfilter/tracer.ts";

const FLAGS = { proxyMode: "ipvs", hostnameOverride: "node-1", clusterCidr: "10.244.0.0/16" };

function section(out: string, title: string): string[] {
  const lines = out.split("\n");
  const start = lines.indexOf(`# ${title}`);
  assert.ok(start >= 0, `no section ${title}`);
  const end = lines.findIndex(
    (l, i) => i > start && /^# (ipvsadm|kube-ipvs0|ipset|iptables|virtual)/.test(l),
  );
  return lines.slice(start + 1, end < 0 ? undefined : end).filter((l) => l !== "");
}

test("render --proxy-mode ipvs prints the virtual servers, kube-ipvs0's addresses, the ipsets, the payload, the names", async () => {
  const out = await renderCommand(FLAGS);
  assert.deepEqual(section(out, "ipvsadm -R"), [
    "-A -t 10.1.125.152:80 -s rr",
    "-a -t 10.1.125.152:80 -r 10.244.0.10:80 -m -w 1",
    "-a -t 10.1.125.152:80 -r 10.244.0.9:80 -m -w 1",
    "-A -t 192.168.50.1:30978 -s rr",
    "-a -t 192.168.50.1:30978 -r 10.244.0.10:80 -m -w 1",
    "-a -t 192.168.50.1:30978 -r 10.244.0.9:80 -m -w 1",
  ]);
  assert.deepEqual(section(out, "kube-ipvs0 addresses"), ["10.1.125.152"]);
  const sets = section(out, "ipset -exist restore");
  assert.equal(sets.filter((l) => l.startsWith("create ")).length, 17, "the 17 sets of ipvs mode");
  for (const entry of [
    "add KUBE-CLUSTER-IP 10.1.125.152,tcp:80",
    "add KUBE-NODE-PORT-TCP 30978",
    "add KUBE-LOOP-BACK 10.244.0.9,tcp:80,10.244.0.9",
    "add KUBE-IPVS-IPS 10.1.125.152",
  ])
    assert.ok(sets.includes(entry), entry);
  const payload = section(out, "iptables-restore --noflush");
  assert.ok(
    payload.includes(
      '-A KUBE-SERVICES -m comment --comment "Kubernetes service cluster ip + port for masquerade purpose" -m set --match-set KUBE-CLUSTER-IP dst,dst ! -s 10.244.0.0/16 -j KUBE-MARK-MASQ',
    ),
    payload.join("\n"),
  );
  assert.deepEqual(section(out, "virtual servers by service port"), [
    "default/nginx ClusterIP TCP:10.1.125.152:80",
    "default/nginx NodePort TCP:192.168.50.1:30978",
  ]);
});

test("render's output is a dump: IPVS shares traced, with a warning that the payload alone has no jumps; explained", async () => {
  const reading = readIpvsDump({ text: await renderCommand(FLAGS), origin: "render" });
  const { packet, origin } = packetFromFlags({
    src: "192.168.50.100:40000",
    dst: "10.1.125.152:80",
    from: "external",
  });
  const { result, warnings } = traceIpvs(reading, packet, { origin, source: "render" });
  // Without nat PREROUTING's jump to KUBE-SERVICES nothing marks the packet for masquerade.
  assert.deepEqual(
    result.outcomes.map((o) => `${o.verdict} ${o.dnat} ${o.probability} masq=${o.masquerade}`).sort(),
    ["ACCEPT 10.244.0.10:80 0.5 masq=false", "ACCEPT 10.244.0.9:80 0.5 masq=false"],
  );
  assert.match(
    warnings.join("\n"),
    /does not jump to KUBE-SERVICES: the iptables part is not a whole node's/,
  );
  const ex = explainIpvsService(reading, { namespace: "default", name: "nginx" }, "render");
  assert.deepEqual(
    ex?.view.frontends.map((f) => `${f.kind} ${f.destination} ${f.action}`),
    [
      "cluster IP 10.1.125.152:80 (tcp) load-balance",
      "node port node port 30978 (tcp) on 192.168.50.1 load-balance",
    ],
  );
});
