import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { explainCommand, parseServiceRef } from "../../../src/cli/explain.ts";
import { iptablesServiceView } from "../../../src/backends/iptables/view.ts";
import { whyNoTraffic } from "../../../src/inspect/model.ts";
import { addressList, traceCommand } from "../../../src/cli/trace.ts";
import { InputError } from "../../../src/errors.ts";
import { parseConntrackList } from "../../../src/kernel/conntrack.ts";
import { countFlowsByEndpoint, flowCount } from "../../../src/kernel/conntrack-count.ts";
import type { ExecOptions, ExecResult, Runner } from "../../../src/kernel/exec.ts";
import { explainService } from "../../../src/netfilter/explain.ts";
import { parseIptablesSave } from "../../../src/netfilter/iptables-save.ts";
import { TestApiServer } from "../../support/apiserver.ts";
import { endpointSlice, nodeObject, service } from "../../support/daemon.ts";

const fixtures = fileURLToPath(new URL("../netfilter/fixtures/", import.meta.url));
const FLOWS = join(fixtures, "packet-flow.rules.txt");
const NETNS_V4 = readFileSync(join(fixtures, "iptables-save-c.netns.txt"), "utf8");
const NETNS_V6 = readFileSync(join(fixtures, "ip6tables-save-c.netns.txt"), "utf8");
const SEED_EXAMPLE = fileURLToPath(new URL("../../../examples/seed-nginx", import.meta.url));

/** Answers by argv[0]; records every call so tests see what the CLI asked the kernel. */
/** `iptables -t TABLE -S CHAIN -v` of a chain in a save dump, as the tool prints it; null when it is not there. */
function listChainOf(save: string, table: string, chain: string): string | null {
  const section = save.split(/^\*/m).find((s) => s.startsWith(`${table}\n`));
  const declared =
    section === undefined ? null : new RegExp(`^:${chain} (\\S+) \\[(\\d+):(\\d+)\\]$`, "m").exec(section);
  if (section === undefined || declared === null) return null;
  const head =
    declared[1] === "-" ? `-N ${chain}` : `-P ${chain} ${declared[1]} -c ${declared[2]} ${declared[3]}`;
  const rules = section
    .split("\n")
    .map((l) => /^\[(\d+):(\d+)\] (-A (\S+) .*)$/.exec(l))
    .filter((m) => m !== null && m[4] === chain)
    .map((m) => `${m![3]} -c ${m![1]} ${m![2]}`);
  return [head, ...rules].join("\n") + "\n";
}

class ScriptedRunner implements Runner {
  readonly calls: string[][] = [];
  constructor(private readonly answers: Readonly<Record<string, string>>) {}
  run(argv: readonly string[], _options?: ExecOptions): Promise<ExecResult> {
    this.calls.push([...argv]);
    const tool = argv[0] ?? "";
    if (/^ip6?tables-(nft|legacy)$/.test(tool) && argv.includes("--version"))
      return Promise.resolve({ argv, exitCode: 0, stdout: "iptables v1.8.9\n", stderr: "", durationMs: 0 });
    const list = argv.indexOf("-S");
    if (/^ip6?tables-(nft|legacy)$/.test(tool) && list >= 0) {
      const listed = listChainOf(
        this.answers[`${tool}-save`] ?? "",
        argv[argv.indexOf("-t") + 1] ?? "",
        argv[list + 1] ?? "",
      );
      return Promise.resolve({
        argv,
        exitCode: listed === null ? 1 : 0,
        stdout: listed ?? "",
        stderr: "",
        durationMs: 0,
      });
    }
    const stdout = this.answers[argv[0] ?? ""];
    if (stdout === undefined) return Promise.reject(new Error(`unexpected command ${argv.join(" ")}`));
    // Like the real tools, a save without -c prints rule lines without their counters.
    const printed =
      argv[0]?.endsWith("-save") === true && !argv.includes("-c")
        ? stdout.replace(/^\[\d+:\d+\] /gm, "")
        : stdout;
    return Promise.resolve({ argv, exitCode: 0, stdout: printed, stderr: "", durationMs: 0 });
  }
}

const IP_ADDR = JSON.stringify([
  { ifname: "lo", addr_info: [{ local: "127.0.0.1", prefixlen: 8 }] },
  { ifname: "eth0", addr_info: [{ local: "192.168.0.2", prefixlen: 24 }] },
]);

test("trace --ruleset: both endpoints of a 2-endpoint ClusterIP with 50% each, text and JSON", async () => {
  const text = await traceCommand({ ruleset: FLOWS, src: "10.0.0.2", dst: "172.30.0.44:80" });
  assert.match(text, /^ruleset: dump .*packet-flow\.rules\.txt\nlocal addresses: loopback only \(none given/);
  assert.match(text, /1\. 50% ACCEPT, DNAT → 10\.180\.0\.4:80 .*masquerade: no/);
  assert.match(text, /2\. 50% ACCEPT, DNAT → 10\.180\.0\.5:80 .*masquerade: no/);
  const json = JSON.parse(
    await traceCommand({ ruleset: FLOWS, src: "10.0.0.2", dst: "172.30.0.44:80", output: "json" }),
  ) as {
    outcomes: { probability: number; dnat: string; path: { rule?: string }[] }[];
  };
  assert.deepEqual(json.outcomes.map((o) => [o.dnat, o.probability]).sort(), [
    ["10.180.0.4:80", 0.5],
    ["10.180.0.5:80", 0.5],
  ]);
  assert.ok(json.outcomes.every((o) => o.path.some((s) => s.rule?.includes("--probability") === true)));
});

test("trace --ruleset: NodePort needs the node's addresses; with them it is captured and masqueraded", async () => {
  const flags = {
    ruleset: FLOWS,
    src: "203.0.113.9",
    dst: "192.168.0.2:3003",
    from: "external",
    output: "json",
  };
  const without = JSON.parse(await traceCommand(flags)) as { outcomes: { dnat?: string }[] };
  assert.ok(
    without.outcomes.every((o) => o.dnat === undefined),
    "node IP unknown: not addrtype LOCAL",
  );
  const withLocal = JSON.parse(
    await traceCommand({ ...flags, localAddresses: "192.168.0.2/24, 127.0.0.1" }),
  ) as {
    outcomes: { dnat?: string; masquerade: boolean }[];
  };
  assert.deepEqual(
    withLocal.outcomes.map((o) => [o.dnat, o.masquerade]),
    [["10.180.0.3:80", true]],
  );
});

test("trace: a dump that cannot be parsed is an error naming its file and line", async () => {
  const dir = mkdtempSync(join(tmpdir(), "kpt-trace-unit-"));
  try {
    const bad = join(dir, "bad.txt");
    writeFileSync(bad, "*nat\n:PREROUTING ACCEPT [0:0]\n-A KUBE-NOPE -j ACCEPT\nCOMMIT\n");
    await assert.rejects(
      traceCommand({ ruleset: bad, src: "10.0.0.2", dst: "10.0.0.3:80" }),
      (e: unknown) =>
        e instanceof InputError &&
        e.message === `--ruleset ${bad}: line 3: chain KUBE-NOPE was not declared: -A KUBE-NOPE -j ACCEPT`,
    );
    await assert.rejects(
      traceCommand({ ruleset: join(dir, "missing.txt"), src: "10.0.0.2", dst: "10.0.0.3:80" }),
      /--ruleset: cannot read/,
    );
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test("trace: bad flags are input errors", async () => {
  await assert.rejects(
    traceCommand({ ruleset: FLOWS, src: "10.0.0.2", dst: "10.0.0.3" }),
    /--dst: needs a port/,
  );
  await assert.rejects(
    traceCommand({ ruleset: FLOWS, src: "10.0.0.2", dst: "10.0.0.3:80", output: "yaml" }),
    /--output/,
  );
  await assert.rejects(
    traceCommand({ ruleset: FLOWS, src: "10.0.0.2", dst: "10.0.0.3:80", affinity: "x" }),
    /--affinity/,
  );
  assert.throws(() => addressList("10.0.0.1,nope"), /--local-addresses: not an IP address: nope/);
  assert.deepEqual(addressList("10.0.0.1/24, ,fd00::1/64"), ["10.0.0.1", "fd00::1"]);
});

/** What the CLI read after backend detection: detection's own saves carry no `-c`, its hint listings are of mangle. */
const afterDetection = (calls: readonly string[][]): string[][] =>
  calls.filter(
    (c) =>
      !(c[0]?.endsWith("-save") === true && !c.includes("-c")) && !(c.includes("mangle") && c.includes("-S")),
  );

/** The other backend holds only an empty table, as on a host whose `iptables` alternative points elsewhere. */
const EMPTY = "*filter\n:INPUT ACCEPT [0:0]\nCOMMIT\n";

test("trace, live: the detected backend's save -c per family (nft here), node addresses from ip addr", async () => {
  const runner = new ScriptedRunner({
    "iptables-nft-save": NETNS_V4,
    "ip6tables-nft-save": NETNS_V6,
    "iptables-legacy-save": EMPTY,
    "iptables-save": EMPTY,
    ip: IP_ADDR,
  });
  const text = await traceCommand({ src: "10.0.0.2", dst: "172.30.0.43:80" }, runner);
  assert.match(
    text,
    /^ruleset: live kernel \(iptables-nft-save -c; iptables-legacy holds no rules\)\nlocal addresses: 127\.0\.0\.1, 192\.168\.0\.2 \(this network namespace/,
  );
  assert.match(text, /DNAT → 10\.0\.3\.2:80/);
  assert.deepEqual(afterDetection(runner.calls), [
    ["iptables-nft-save", "-c"],
    ["ip", "-j", "addr", "show"],
  ]);
  runner.calls.length = 0;
  const v6 = await traceCommand({ src: "[fd00::2]:4000", dst: "[fd00:30::41]:80", from: "node" }, runner);
  assert.deepEqual(afterDetection(runner.calls)[0], ["ip6tables-nft-save", "-c"]);
  assert.match(v6, /100% REJECT/);
});

test("trace, live: legacy detected, so iptables-legacy-save -c is read, never the unsuffixed iptables-save", async () => {
  const runner = new ScriptedRunner({
    "iptables-legacy-save": NETNS_V4,
    "iptables-nft-save": EMPTY,
    "iptables-save": EMPTY,
    ip: IP_ADDR,
  });
  const text = await traceCommand({ src: "10.0.0.2", dst: "172.30.0.43:80" }, runner);
  assert.match(text, /^ruleset: live kernel \(iptables-legacy-save -c; iptables-legacy has more rules/);
  assert.match(text, /DNAT → 10\.0\.3\.2:80/);
  assert.deepEqual(afterDetection(runner.calls), [
    ["iptables-legacy-save", "-c"],
    ["ip", "-j", "addr", "show"],
  ]);
  assert.ok(!runner.calls.some((c) => c[0] === "iptables-save"));
});

test("trace, live: a kubelet hint in nft wins even when legacy holds more rules", async () => {
  const hint = "*mangle\n:PREROUTING ACCEPT [0:0]\n:KUBE-IPTABLES-HINT - [0:0]\nCOMMIT\n";
  const runner = new ScriptedRunner({
    "iptables-nft-save": hint + NETNS_V4,
    "iptables-legacy-save": NETNS_V4 + NETNS_V4,
    ip: IP_ADDR,
  });
  const json = JSON.parse(
    await traceCommand({ src: "10.0.0.2", dst: "172.30.0.43:80", output: "json" }, runner),
  ) as { outcomes: { dnat?: string }[] };
  assert.ok(json.outcomes.some((o) => o.dnat === "10.0.3.2:80"));
  assert.deepEqual(afterDetection(runner.calls)[0], ["iptables-nft-save", "-c"]);
});

test("explain --ruleset: why no traffic — no endpoints, no local endpoints, source ranges", async () => {
  const none = await explainCommand("ns6/svc6", { ruleset: FLOWS });
  assert.match(
    none,
    /why no traffic:\n {2}ns6\/svc6:p80 has no endpoints: packets to 172\.30\.0\.46:80 \(tcp\) are REJECTed in filter KUBE-SERVICES rule 1\n$/,
  );
  const flows = parseIptablesSave(readFileSync(FLOWS, "utf8"));
  assert.deepEqual(
    whyNoTraffic(iptablesServiceView(explainService(flows, { namespace: "ns2", name: "svc2" }))),
    [
      "ns2/svc2:p80 has no local endpoints on this node: packets to 192.168.99.22:80 (tcp) are DROPped in filter KUBE-EXTERNAL-SERVICES rule 1 (traffic policy Local: endpoints on other nodes are not used)",
      "ns2/svc2:p80 has no local endpoints on this node: packets to 1.2.3.4:80 (tcp) are DROPped in filter KUBE-EXTERNAL-SERVICES rule 2 (traffic policy Local: endpoints on other nodes are not used)",
      "ns2/svc2:p80 has no local endpoints on this node: packets to node port 3001 (tcp) on any local address are DROPped in filter KUBE-EXTERNAL-SERVICES rule 3 (traffic policy Local: endpoints on other nodes are not used)",
    ],
  );
  assert.deepEqual(
    whyNoTraffic(iptablesServiceView(explainService(flows, { namespace: "ns5", name: "svc5" }))),
    [
      "ns5/svc5:p80: load-balancer IP 5.6.7.8:80 (tcp) accepts only sources in 203.0.113.0/25 (nat KUBE-FW-NUKIZ6OKUXPJNT4C); packets from any other source are DROPped in filter KUBE-PROXY-FIREWALL rule 1",
    ],
  );
  assert.deepEqual(
    whyNoTraffic(iptablesServiceView(explainService(flows, { namespace: "ns4", name: "svc4" }))),
    [],
  );
  await assert.rejects(explainCommand("ns9/svc9", { ruleset: FLOWS }), /no rules for Service ns9\/svc9/);
});

const CONNTRACK = [
  // Two flows to svc3's cluster IP answered by 10.0.3.2, one by 10.0.3.3.
  "tcp      6 117 TIME_WAIT src=10.0.0.2 dst=172.30.0.43 sport=40000 dport=80 src=10.0.3.2 dst=10.0.0.2 sport=80 dport=40000 [ASSURED] mark=0 use=1",
  "tcp      6 117 TIME_WAIT src=10.0.0.2 dst=172.30.0.43 sport=40001 dport=80 src=10.0.3.2 dst=10.0.0.2 sport=80 dport=40001 [ASSURED] mark=0 use=1",
  "tcp      6 117 TIME_WAIT src=10.0.0.2 dst=172.30.0.43 sport=40002 dport=80 src=10.0.3.3 dst=10.0.0.2 sport=80 dport=40002 [ASSURED] mark=0 use=1",
  // Same pod, but dialled directly (no DNAT) and through another Service's address: not svc3's.
  "tcp      6 117 TIME_WAIT src=10.0.0.2 dst=10.0.3.2 sport=40003 dport=80 src=10.0.3.2 dst=10.0.0.2 sport=80 dport=40003 [ASSURED] mark=0 use=1",
  "tcp      6 117 TIME_WAIT src=10.0.0.2 dst=172.30.0.99 sport=40004 dport=80 src=10.0.3.2 dst=10.0.0.2 sport=80 dport=40004 [ASSURED] mark=0 use=1",
  // Same endpoint address and port, other protocol.
  "udp      17 20 src=10.0.0.2 dst=172.30.0.43 sport=40005 dport=80 src=10.0.3.2 dst=10.0.0.2 sport=80 dport=40005 mark=0 use=1",
].join("\n");

test("explain, live: counters in iptables -vnL columns and conntrack flows per endpoint of this Service only", async () => {
  const runner = new ScriptedRunner({ "iptables-legacy-save": NETNS_V4, conntrack: CONNTRACK });
  const text = await explainCommand("ns3/svc3", {}, runner);
  const read = afterDetection(runner.calls).map((c) => c.join(" "));
  assert.ok(
    !read.some((c) => c.includes("-save")),
    "no save of the whole table: the Service's chains, one by one",
  );
  assert.ok(read.includes("iptables-legacy -w 5 -W 100000 -t nat -S KUBE-SERVICES -v"));
  assert.ok(
    read.some((c) => / -t nat -S KUBE-SEP-\S+ -v$/.test(c)),
    "the Service's endpoint chains",
  );
  assert.equal(read.at(-1), "conntrack -L -f ipv4");
  assert.match(
    text,
    /^source: live kernel \(iptables-legacy -t TABLE -S CHAIN -v, chain by chain, conntrack -L; iptables-legacy has more rules/,
  );
  assert.match(text, / num {3}pkts bytes target/);
  assert.match(
    text,
    /conntrack entries per endpoint:\n {2}ns3\/svc3:p80 10\.0\.3\.2:80\/tcp: 2\n {2}ns3\/svc3:p80 10\.0\.3\.3:80\/tcp: 1\n/,
  );
  const json = JSON.parse(await explainCommand("ns3/svc3", { output: "json" }, runner)) as {
    conntrack: { endpoint: string; flows: number }[];
    endpoints: { endpoint: string; counters: { packets: number } }[];
  };
  assert.deepEqual(
    json.conntrack.map((c) => [c.endpoint, c.flows]),
    [
      ["10.0.3.2:80", 2],
      ["10.0.3.3:80", 1],
    ],
  );
  assert.deepEqual(
    json.endpoints.map((e) => [e.endpoint, e.counters.packets]),
    [
      ["10.0.3.2:80", 1],
      ["10.0.3.3:80", 0],
    ],
  );
  const quiet = new ScriptedRunner({ "iptables-legacy-save": NETNS_V4 });
  assert.doesNotMatch(await explainCommand("ns3/svc3", { conntrack: false }, quiet), /conntrack entries/);
});

test("explain, live: a Service found only in ip6tables is explained from there", async () => {
  const runner = new ScriptedRunner({
    "iptables-nft-save": "*nat\n:PREROUTING ACCEPT [0:0]\nCOMMIT\n",
    "ip6tables-nft-save": NETNS_V6,
    conntrack: "",
  });
  const text = await explainCommand("ns1/svc1", {}, runner);
  const read = afterDetection(runner.calls).map((c) => c.join(" "));
  assert.ok(read.includes("iptables-nft -w 5 -W 100000 -t nat -S PREROUTING -v"), "IPv4 first");
  assert.ok(read.includes("ip6tables-nft -w 5 -W 100000 -t filter -S KUBE-SERVICES -v"), "then IPv6");
  assert.equal(read.at(-1), "conntrack -L -f ipv6");
  assert.match(
    text,
    /^source: live kernel \(ip6tables-nft -t TABLE -S CHAIN -v, chain by chain, conntrack -L; /,
  );
  assert.match(text, /ns1\/svc1:p80 has no endpoints: packets to \[fd00:30::41\]:80 \(tcp\) are REJECTed/);
});

test("explain --manifests: the seed's walk from rendered rules, no kernel", async () => {
  const text = await explainCommand("default/nginx", {
    manifests: SEED_EXAMPLE,
    hostnameOverride: "node-1",
    clusterCidr: "10.244.0.0/16",
  });
  assert.match(text, /^source: rendered from .*seed-nginx for node node-1: iptables-save of a fresh node/);
  assert.match(text, /KUBE-SVC-2CMXP7HKUVJN7L6M .*10\.1\.125\.152 .*cluster IP/);
  assert.match(text, /10\.244\.0\.9:80 \(KUBE-SEP-[A-Z0-9]+\) 50%/);
  assert.match(text, /10\.244\.0\.10:80 \(KUBE-SEP-[A-Z0-9]+\) 50%/);
  assert.doesNotMatch(text, /conntrack entries/);
});

test("explain: NAMESPACE/SERVICE[:PORT] parsing", () => {
  assert.deepEqual(parseServiceRef("default/nginx"), { namespace: "default", name: "nginx" });
  assert.deepEqual(parseServiceRef("ns5/svc5:p80"), { namespace: "ns5", name: "svc5", port: "p80" });
  assert.throws(() => parseServiceRef("nginx"), /expected NAMESPACE\/SERVICE/);
  assert.throws(() => parseServiceRef("a/B"), /expected NAMESPACE\/SERVICE/);
});

test("conntrack flows count only DNATed flows sent to one of the given frontends", () => {
  const entries = parseConntrackList(CONNTRACK);
  const endpoints = [{ protocol: "tcp", endpoint: "10.0.3.2:80" }];
  const viaClusterIP = countFlowsByEndpoint(entries, endpoints, [
    { protocol: "tcp", ip: "172.30.0.43", port: 80 },
  ]);
  assert.equal(flowCount(viaClusterIP, endpoints[0] as (typeof endpoints)[0]), 2);
  // A node port frontend (any address) counts every DNATed flow to that port.
  const anyAddress = countFlowsByEndpoint(entries, endpoints, [{ protocol: "tcp", port: 80 }]);
  assert.equal(flowCount(anyAddress, endpoints[0] as (typeof endpoints)[0]), 3);
  assert.equal(flowCount(anyAddress, { protocol: "udp", endpoint: "10.0.3.2:80" }), 0);
});

test("explain --api: the Service, its slices and the node from the API server, rendered", async () => {
  const server = await TestApiServer.start({ allowAnonymous: true });
  try {
    server.put(service({ name: "web", clusterIP: "10.1.0.40", ports: [{ port: 80 }] }));
    server.put(
      endpointSlice({
        service: "web",
        endpoints: [
          { ip: "10.244.0.9", node: "node-1" },
          { ip: "10.244.0.10", node: "node-1" },
        ],
        ports: [{ port: 80 }],
      }),
    );
    server.put(nodeObject({ name: "node-1", ips: ["192.168.50.1"], podCIDRs: ["10.244.0.0/24"] }));
    server.put(service({ name: "other", clusterIP: "10.1.0.41", ports: [{ port: 80 }] }));
    const options = {
      api: true,
      master: server.url,
      hostnameOverride: "node-1",
      clusterCidr: "10.244.0.0/16",
    };
    const text = await explainCommand("default/web", options);
    assert.match(text, /^source: the API server's objects, rendered for node node-1/);
    assert.match(text, /10\.244\.0\.9:80 \(KUBE-SEP-[A-Z0-9]+\) 50%/);
    assert.match(text, /10\.244\.0\.10:80 \(KUBE-SEP-[A-Z0-9]+\) 50%/);
    const empty = await explainCommand("default/other", options);
    assert.match(empty, /default\/other has no endpoints: packets to 10\.1\.0\.41:80 \(tcp\) are REJECTed/);
    await assert.rejects(explainCommand("default/missing", options), /not found on the API server/);
  } finally {
    await server.stop();
  }
});

test("the mode-neutral view of an iptables Service: frontends with their action, endpoint shares, masquerade", () => {
  const flows = parseIptablesSave(readFileSync(FLOWS, "utf8"));
  const view = iptablesServiceView(explainService(flows, { namespace: "ns4", name: "svc4" }));
  assert.equal(view.mode, "iptables");
  assert.ok(view.frontends.length > 0);
  assert.ok(view.frontends.every((f) => f.action === "load-balance" && f.reason === undefined));
  assert.ok(
    view.frontends.some((f) => f.kind === "cluster IP" && /^nat KUBE-SERVICES rule \d+$/.test(f.where)),
  );
  assert.ok(view.endpoints.length > 0);
  const perPort = new Map<string, number>();
  for (const e of view.endpoints)
    perPort.set(e.servicePortName, (perPort.get(e.servicePortName) ?? 0) + e.share);
  for (const [port, total] of perPort)
    assert.ok(Math.abs(total - 1) < 1e-9, `${port}: shares add up to ${total}`);
  assert.ok(view.endpoints.every((e) => e.via.length === 2 && e.via[1]!.startsWith("nat KUBE-SEP-")));
  assert.ok(view.masquerade.some((m) => m.where.startsWith("nat KUBE-POSTROUTING")));

  const none = iptablesServiceView(explainService(flows, { namespace: "ns6", name: "svc6" }));
  assert.deepEqual(
    none.frontends.map((f) => [f.kind, f.action, f.reason]),
    [["cluster IP", "reject", "no endpoints"]],
  );
  assert.deepEqual(none.endpoints, []);
});
