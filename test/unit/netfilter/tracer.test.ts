import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { parseIptablesSave } from "../../../src/netfilter/iptables-save.ts";
import { formatTrace, packetFromFlags, tracePacket, traceToJson } from "../../../src/netfilter/tracer.ts";
import type { TraceOptions, TracePacket, TraceResult } from "../../../src/netfilter/tracer.ts";
import type { Ruleset } from "../../../src/netfilter/model.ts";
import { InputError } from "../../../src/errors.ts";

const here = new URL(".", import.meta.url).pathname;
const flowText = readFileSync(`${here}fixtures/packet-flow.rules.txt`, "utf8");
const flows = parseIptablesSave(flowText);
const netns = parseIptablesSave(readFileSync(`${here}fixtures/iptables-save-c.netns.txt`, "utf8"));

// Upstream's fake node: node IPs on eth0, plus loopback (always local).
const nodeIPs = ["192.168.0.2", "192.168.1.2", "192.168.99.11"];

function trace(
  rs: Ruleset,
  packet: Partial<TracePacket> & Pick<TracePacket, "src" | "dst" | "dstPort">,
  origin: TraceOptions["origin"],
  extra: Partial<TraceOptions> = {},
): TraceResult {
  return tracePacket(rs, { protocol: "tcp", ...packet }, { localAddresses: nodeIPs, origin, ...extra });
}

/** Compact view like upstream's tracePacket output: verdict or DNAT target, masquerade flag, share. */
function summary(r: TraceResult): string[] {
  return r.outcomes
    .map(
      (o) =>
        `${o.verdict === "ACCEPT" ? (o.dnat ?? `ACCEPT ${o.destination}`) : o.verdict} masq=${o.masquerade} p=${o.probability.toFixed(4)}`,
    )
    .sort();
}

test("pod → ClusterIP with one endpoint: DNAT, no masquerade (pod source is inside the cluster CIDR)", () => {
  const r = trace(flows, { src: "10.0.0.2", dst: "172.30.0.41", dstPort: 80 }, "pod");
  assert.deepEqual(summary(r), ["10.180.0.1:80 masq=false p=1.0000"]);
  assert.equal(r.outcomes[0]?.delivery, "forwarded");
});

test("node → ClusterIP: OUTPUT path, KUBE-MARK-MASQ sets the mark and KUBE-POSTROUTING masquerades and clears it", () => {
  const r = trace(flows, { src: "192.168.0.2", dst: "172.30.0.41", dstPort: 80 }, "node");
  assert.deepEqual(summary(r), ["10.180.0.1:80 masq=true p=1.0000"]);
  const o = r.outcomes[0];
  assert.equal(o?.mark, 0, "--xor-mark removed the masquerade bit again");
  const hooks = [
    ...new Set(o?.path.filter((s) => s.kind === "chain" && s.depth === 0).map((s) => `${s.hook}/${s.table}`)),
  ];
  assert.deepEqual(hooks, ["OUTPUT/nat", "OUTPUT/filter", "POSTROUTING/nat"]);
  const markStep = o?.path.find((s) => s.chain === "KUBE-MARK-MASQ" && s.kind === "rule");
  assert.match(markStep?.effect ?? "", /mark 0x0 → 0x4000/);
});

test("pod → ClusterIP with 2 endpoints: 50% / 50%, with every step of both paths", () => {
  const r = trace(flows, { src: "10.0.0.2", dst: "172.30.0.44", dstPort: 80 }, "pod");
  assert.deepEqual(summary(r), ["10.180.0.4:80 masq=false p=0.5000", "10.180.0.5:80 masq=false p=0.5000"]);
  const statistic = r.steps.filter((s) => s.chain === "KUBE-SVC-4SW47YFZTEDKD3PK" && s.ruleNumber === 2);
  assert.equal(statistic.length, 2, "the statistic rule appears once as taken and once as not taken");
  assert.deepEqual(statistic.map((s) => s.branch?.matched).sort(), [false, true]);
});

test("hairpin: an endpoint reaching its own Service is masqueraded only when it picks itself", () => {
  const r = trace(flows, { src: "10.180.0.4", dst: "172.30.0.44", dstPort: 80 }, "pod");
  assert.deepEqual(summary(r), ["10.180.0.4:80 masq=true p=0.5000", "10.180.0.5:80 masq=false p=0.5000"]);
});

test("the real netns dump (kernel-normalised MARK targets): 50/50 and masquerade computed from the mark", () => {
  assert.deepEqual(summary(trace(netns, { src: "10.0.0.9", dst: "172.30.0.43", dstPort: 80 }, "pod")), [
    "10.0.3.2:80 masq=false p=0.5000",
    "10.0.3.3:80 masq=false p=0.5000",
  ]);
  assert.deepEqual(summary(trace(netns, { src: "192.168.0.2", dst: "172.30.0.43", dstPort: 80 }, "node")), [
    "10.0.3.2:80 masq=true p=0.5000",
    "10.0.3.3:80 masq=true p=0.5000",
  ]);
});

test("external → NodePort: DNAT and masquerade, delivered by FORWARD", () => {
  const r = trace(flows, { src: "203.0.113.1", dst: "192.168.0.2", dstPort: 3003 }, "external");
  assert.deepEqual(summary(r), ["10.180.0.3:80 masq=true p=1.0000"]);
  assert.ok(
    r.steps.some(
      (s) => s.chain === "KUBE-SERVICES" && s.kind === "rule" && /must be the last rule/.test(s.rule ?? ""),
    ),
  );
});

test("external → unknown port on a node address: not captured, delivered locally", () => {
  const r = trace(flows, { src: "203.0.113.1", dst: "192.168.0.2", dstPort: 22 }, "external");
  assert.deepEqual(summary(r), ["ACCEPT 192.168.0.2:22 masq=false p=1.0000"]);
  assert.equal(r.outcomes[0]?.delivery, "local");
});

test("Service without endpoints: REJECT from filter KUBE-SERVICES", () => {
  const r = trace(flows, { src: "10.0.0.2", dst: "172.30.0.46", dstPort: 80 }, "pod");
  assert.deepEqual(summary(r), ["REJECT masq=false p=1.0000"]);
  const last = r.outcomes[0]?.path.at(-1);
  assert.equal(last?.table, "filter");
  assert.equal(last?.chain, "KUBE-SERVICES");
  assert.equal(last?.ruleNumber, 1);
});

test("LoadBalancer source ranges: allowed range reaches the endpoint, other sources are dropped by KUBE-PROXY-FIREWALL", () => {
  const allowed = trace(flows, { src: "203.0.113.1", dst: "5.6.7.8", dstPort: 80 }, "external", {
    recent: "new-client",
  });
  assert.deepEqual(summary(allowed), ["10.180.0.3:80 masq=true p=1.0000"]);
  const denied = trace(flows, { src: "203.0.113.200", dst: "5.6.7.8", dstPort: 80 }, "external", {
    recent: "new-client",
  });
  assert.deepEqual(summary(denied), ["DROP masq=false p=1.0000"]);
  const drop = denied.outcomes[0]?.path.at(-1);
  assert.equal(drop?.chain, "KUBE-PROXY-FIREWALL");
  assert.ok(
    denied.steps.some((s) => s.chain === "KUBE-FW-NUKIZ6OKUXPJNT4C" && /no target/.test(s.effect)),
    "the counting-only FW rule is shown",
  );
  // NodePort traffic is not subject to source ranges.
  assert.deepEqual(
    summary(
      trace(flows, { src: "203.0.113.200", dst: "192.168.0.2", dstPort: 3002 }, "external", {
        recent: "new-client",
      }),
    ),
    ["10.180.0.3:80 masq=true p=1.0000"],
  );
});

test("session affinity: --rcheck is unknown by default (both branches, labelled) or explicitly a new client", () => {
  const unknown = trace(flows, { src: "10.0.0.2", dst: "172.30.0.45", dstPort: 80 }, "pod");
  assert.equal(unknown.outcomes.length, 2);
  assert.deepEqual(
    unknown.outcomes.map((o) => o.dnat),
    ["10.180.0.3:80", "10.180.0.3:80"],
  );
  const labels = unknown.outcomes.map((o) => o.assumptions.join(" | "));
  assert.match(labels[0] ?? "", /assumed to match: recent --rcheck --name KUBE-SEP-I77PXRDZVX7PMWMN/);
  assert.match(labels[1] ?? "", /assumed not to match: recent --rcheck/);
  const fresh = trace(flows, { src: "10.0.0.2", dst: "172.30.0.45", dstPort: 80 }, "pod", {
    recent: "new-client",
  });
  assert.equal(fresh.outcomes.length, 1);
  assert.deepEqual(fresh.outcomes[0]?.assumptions, []);
  assert.ok(
    fresh.steps.some((s) =>
      /no recent entry "KUBE-SEP-I77PXRDZVX7PMWMN" for a new client \(assumed\)/.test(s.effect),
    ),
  );
});

test("externalTrafficPolicy Local without local endpoints: external traffic DROPs, pods and the node are short-circuited", () => {
  assert.deepEqual(summary(trace(flows, { src: "203.0.113.1", dst: "1.2.3.4", dstPort: 80 }, "external")), [
    "DROP masq=false p=1.0000",
  ]);
  assert.deepEqual(
    summary(trace(flows, { src: "203.0.113.1", dst: "192.168.99.22", dstPort: 80 }, "external")),
    ["DROP masq=false p=1.0000"],
  );
  assert.deepEqual(
    summary(trace(flows, { src: "203.0.113.1", dst: "192.168.0.2", dstPort: 3001 }, "external")),
    ["DROP masq=false p=1.0000"],
  );
  assert.deepEqual(summary(trace(flows, { src: "10.0.0.2", dst: "1.2.3.4", dstPort: 80 }, "pod")), [
    "10.180.0.2:80 masq=false p=1.0000",
  ]);
  assert.deepEqual(summary(trace(flows, { src: "192.168.0.2", dst: "1.2.3.4", dstPort: 80 }, "node")), [
    "10.180.0.2:80 masq=true p=1.0000",
  ]);
});

test("health check node port is accepted locally", () => {
  const r = trace(flows, { src: "203.0.113.1", dst: "192.168.0.2", dstPort: 30000 }, "external");
  assert.deepEqual(summary(r), ["ACCEPT 192.168.0.2:30000 masq=false p=1.0000"]);
  assert.ok(
    r.steps.some((s) => s.chain === "KUBE-NODEPORTS" && s.table === "filter" && /→ ACCEPT/.test(s.effect)),
  );
});

test("localhost NodePort from the node: the nfacct rule matches, DNAT and masquerade", () => {
  const r = trace(flows, { src: "127.0.0.1", dst: "127.0.0.1", dstPort: 3003 }, "node");
  assert.deepEqual(summary(r), ["10.180.0.3:80 masq=true p=1.0000"]);
});

test("an unknown match is reported with both branches and never guessed", () => {
  const text = flowText.replace(
    '-A FORWARD -m conntrack --ctstate NEW -m comment --comment "kubernetes load balancer firewall"',
    '-A FORWARD -m owner --uid-owner 1000 -j DROP\n-A FORWARD -m conntrack --ctstate NEW -m comment --comment "kubernetes load balancer firewall"',
  );
  const r = trace(parseIptablesSave(text), { src: "10.0.0.2", dst: "172.30.0.41", dstPort: 80 }, "pod");
  assert.deepEqual(summary(r), ["10.180.0.1:80 masq=false p=1.0000", "DROP masq=false p=1.0000"]);
  const drop = r.outcomes.find((o) => o.verdict === "DROP");
  assert.match(
    drop?.assumptions[0] ?? "",
    /^filter\/FORWARD rule 1: unknown — assumed to match: -m owner --uid-owner 1000: match not modelled$/,
  );
  const pass = r.outcomes.find((o) => o.verdict === "ACCEPT");
  assert.match(pass?.assumptions[0] ?? "", /assumed not to match: -m owner/);
  assert.match(formatTrace(r), /assumes filter\/FORWARD rule 1: unknown — assumed to match/);
});

test("-m set without the ipset's contents is unknown, and evaluated against them when given", () => {
  const text = flowText.replace(
    '-A FORWARD -m conntrack --ctstate NEW -m comment --comment "kubernetes load balancer firewall"',
    '-A FORWARD -m set --match-set blocked src -j DROP\n-A FORWARD -m conntrack --ctstate NEW -m comment --comment "kubernetes load balancer firewall"',
  );
  const rs = parseIptablesSave(text);
  const unknown = trace(rs, { src: "10.0.0.2", dst: "172.30.0.41", dstPort: 80 }, "pod");
  assert.match(
    unknown.outcomes.find((o) => o.verdict === "DROP")?.assumptions[0] ?? "",
    /ipset blocked is not known$/,
  );
  const sets = (entries: string[]) => new Map([["blocked", { name: "blocked", type: "hash:net", entries }]]);
  const packet = { protocol: "tcp" as const, src: "10.0.0.2", dst: "172.30.0.41", dstPort: 80 };
  const blocked = tracePacket(rs, packet, {
    localAddresses: [],
    origin: "pod",
    ipsets: sets(["10.0.0.0/24"]),
  });
  assert.deepEqual(summary(blocked), ["DROP masq=false p=1.0000"]);
  const free = tracePacket(rs, packet, { localAddresses: [], origin: "pod", ipsets: sets(["10.9.0.0/16"]) });
  assert.deepEqual(summary(free), ["10.180.0.1:80 masq=false p=1.0000"]);
});

test("input interface: unknown when not given, evaluated (with + wildcard) when given", () => {
  const text = flowText.replace(
    '-A FORWARD -m conntrack --ctstate NEW -m comment --comment "kubernetes load balancer firewall"',
    '-A FORWARD -i cni+ -j ACCEPT\n-A FORWARD -m conntrack --ctstate NEW -m comment --comment "kubernetes load balancer firewall"',
  );
  const rs = parseIptablesSave(text);
  assert.equal(trace(rs, { src: "10.0.0.2", dst: "172.30.0.46", dstPort: 80 }, "pod").outcomes.length, 2);
  assert.deepEqual(
    summary(trace(rs, { src: "10.0.0.2", dst: "172.30.0.46", dstPort: 80, inInterface: "cni0" }, "pod")),
    ["ACCEPT 172.30.0.46:80 masq=false p=1.0000"],
  );
  assert.deepEqual(
    summary(trace(rs, { src: "10.0.0.2", dst: "172.30.0.46", dstPort: 80, inInterface: "eth0" }, "pod")),
    ["REJECT masq=false p=1.0000"],
  );
});

test("established flow: conntrack short-cut instead of nat, accepted by the KUBE-FORWARD conntrack rule", () => {
  const r = trace(
    flows,
    { src: "203.0.113.1", dst: "192.168.0.2", dstPort: 3003, state: "ESTABLISHED" },
    "external",
  );
  assert.deepEqual(summary(r), ["10.180.0.3:80 masq=true p=1.0000"]);
  const path = r.outcomes[0]?.path ?? [];
  assert.ok(!path.some((s) => s.table === "nat" && s.kind === "rule"), "no nat rule is traversed");
  assert.ok(
    path.some((s) =>
      /conntrack short-cut: established flow, nat PREROUTING not traversed.*10\.180\.0\.3:80/.test(s.effect),
    ),
  );
  assert.ok(path.some((s) => s.chain === "KUBE-FORWARD" && s.ruleNumber === 3 && /ACCEPT/.test(s.effect)));
});

test("n endpoints give 1/n each; probabilities of all outcomes add up to 1", () => {
  const n = 7;
  const eps = Array.from({ length: n }, (_, i) => `10.1.0.${i + 1}`);
  const lines = [
    "*nat",
    ":PREROUTING ACCEPT [0:0]",
    ":KUBE-SVC-T - [0:0]",
    ...eps.map((_, i) => `:KUBE-SEP-${i} - [0:0]`),
    "-A PREROUTING -d 172.30.9.9/32 -p tcp -m tcp --dport 80 -j KUBE-SVC-T",
  ];
  eps.forEach((ep, i) => {
    const p = i < n - 1 ? ` -m statistic --mode random --probability ${(1 / (n - i)).toFixed(10)}` : "";
    lines.push(
      `-A KUBE-SVC-T${p} -j KUBE-SEP-${i}`,
      `-A KUBE-SEP-${i} -p tcp -m tcp -j DNAT --to-destination ${ep}:8080`,
    );
  });
  lines.push("COMMIT", "");
  const r = trace(
    parseIptablesSave(lines.join("\n")),
    { src: "10.0.0.2", dst: "172.30.9.9", dstPort: 80 },
    "pod",
  );
  assert.equal(r.outcomes.length, n);
  for (const o of r.outcomes) assert.ok(Math.abs(o.probability - 1 / n) < 1e-9, `${o.dnat} ${o.probability}`);
  assert.ok(Math.abs(r.outcomes.reduce((a, o) => a + o.probability, 0) - 1) < 1e-9);
  assert.deepEqual(r.outcomes.map((o) => o.destination).sort(), eps.map((e) => `${e}:8080`).sort());
});

test("formatTrace and JSON carry rule numbers, dump lines, counters and outcomes", () => {
  const r = trace(netns, { src: "10.0.0.9", dst: "172.30.0.43", dstPort: 80 }, "pod");
  const text = formatTrace(r);
  assert.match(text, /KUBE-SERVICES #2 \(line \d+\) \[1:60\]: -A KUBE-SERVICES -d 172\.30\.0\.43\/32/);
  assert.match(text, /50% ACCEPT, DNAT → 10\.0\.3\.2:80/);
  assert.match(text, /routing \(after PREROUTING\): 10\.0\.3\.2 is not local → FORWARD/);
  const json = JSON.parse(JSON.stringify(traceToJson(r))) as {
    outcomes: { probability: number; path: unknown[] }[];
  };
  assert.equal(json.outcomes.length, 2);
  assert.ok(json.outcomes.every((o) => o.path.length > 0));
});

test("bad input is a typed error", () => {
  assert.throws(() => trace(flows, { src: "nope", dst: "172.30.0.41", dstPort: 80 }, "pod"), InputError);
  assert.throws(
    () => trace(flows, { src: "fd00::1", dst: "fd00::2", dstPort: 80 }, "pod"),
    /IPv6 but the ruleset is IPv4/,
  );
});

test("IPv6 dump: node → ClusterIP without endpoints is REJECTed in filter OUTPUT", () => {
  const rs = parseIptablesSave(readFileSync(`${here}fixtures/ip6tables-save-c.netns.txt`, "utf8"));
  const r = tracePacket(
    rs,
    { protocol: "tcp", src: "2001:db8::1", dst: "fd00:30::41", dstPort: 80 },
    { localAddresses: ["2001:db8::1"], origin: "node" },
  );
  assert.deepEqual(summary(r), ["REJECT masq=false p=1.0000"]);
  assert.deepEqual(
    r.outcomes[0]?.path.filter((s) => s.kind === "rule").map((s) => `${s.table}/${s.chain}#${s.ruleNumber}`),
    ["filter/OUTPUT#1", "filter/KUBE-SERVICES#1"],
  );
});

test("trace flags become a packet; bad flags are typed errors naming the flag", () => {
  assert.deepEqual(packetFromFlags({ src: "10.0.0.2:40000", dst: "172.30.0.41:80" }), {
    packet: {
      protocol: "tcp",
      src: "10.0.0.2",
      srcPort: 40000,
      dst: "172.30.0.41",
      dstPort: 80,
      state: "NEW",
    },
    origin: "pod",
  });
  assert.deepEqual(
    packetFromFlags({
      src: "fd00::1",
      dst: "[fd00:30::41]:53",
      proto: "UDP",
      from: "node",
      state: "established",
    }),
    {
      packet: { protocol: "udp", src: "fd00::1", dst: "fd00:30::41", dstPort: 53, state: "ESTABLISHED" },
      origin: "node",
    },
  );
  assert.throws(() => packetFromFlags({ src: "10.0.0.2", dst: "172.30.0.41" }), /--dst: needs a port/);
  assert.throws(
    () => packetFromFlags({ src: "10.0.0.2", dst: "172.30.0.41:99999" }),
    /--dst: port out of range/,
  );
  assert.throws(() => packetFromFlags({ src: "x", dst: "172.30.0.41:80" }), InputError);
  assert.throws(() => packetFromFlags({ src: "10.0.0.2", dst: "172.30.0.41:80", proto: "icmp" }), /--proto/);
  assert.throws(() => packetFromFlags({ src: "10.0.0.2", dst: "172.30.0.41:80", from: "mars" }), /--from/);
});

test("goto: falling off the goto'd chain returns past the calling chain; jump returns to the next rule", () => {
  const dump = (how: "-j" | "-g") =>
    parseIptablesSave(
      [
        "*filter",
        ":FORWARD ACCEPT [0:0]",
        ":A - [0:0]",
        ":B - [0:0]",
        "-A FORWARD -j A",
        "-A FORWARD -j REJECT",
        `-A A ${how} B`,
        "-A A -j DROP",
        "-A B -p udp -j ACCEPT",
        "COMMIT",
        "",
      ].join("\n"),
    );
  assert.deepEqual(summary(trace(dump("-j"), { src: "10.0.0.2", dst: "10.1.0.1", dstPort: 80 }, "pod")), [
    "DROP masq=false p=1.0000",
  ]);
  assert.deepEqual(summary(trace(dump("-g"), { src: "10.0.0.2", dst: "10.1.0.1", dstPort: 80 }, "pod")), [
    "REJECT masq=false p=1.0000",
  ]);
  assert.deepEqual(
    summary(trace(dump("-g"), { protocol: "udp", src: "10.0.0.2", dst: "10.1.0.1", dstPort: 80 }, "pod")),
    ["ACCEPT 10.1.0.1:80 masq=false p=1.0000"],
  );
});

test("a DROP policy on a built-in chain applies when nothing accepts", () => {
  const rs = parseIptablesSave(
    "*filter\n:FORWARD DROP [5:300]\n:KUBE-FORWARD - [0:0]\n-A FORWARD -j KUBE-FORWARD\n-A KUBE-FORWARD -m mark --mark 0x4000/0x4000 -j ACCEPT\nCOMMIT\n",
  );
  const r = trace(rs, { src: "10.0.0.2", dst: "10.1.0.1", dstPort: 80 }, "pod");
  assert.deepEqual(summary(r), ["DROP masq=false p=1.0000"]);
  assert.equal(r.outcomes[0]?.path.at(-1)?.effect, "end of FORWARD: policy DROP");
  assert.deepEqual(
    summary(trace(rs, { src: "10.0.0.2", dst: "10.1.0.1", dstPort: 80, mark: 0x4000 }, "pod")),
    ["ACCEPT 10.1.0.1:80 masq=false p=1.0000"],
  );
});
