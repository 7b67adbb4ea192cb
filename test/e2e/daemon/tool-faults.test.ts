import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, afterEach, before, describe, it } from "node:test";
import { probe } from "../../../src/sandbox/client.ts";
import type { Sandbox } from "../../../src/sandbox/topology.ts";
import {
  daemonArgv,
  disposeProxyNode,
  endpointSlice,
  nodeObject,
  ProxyDaemon,
  service,
  startProxyNode,
  waitFor,
} from "../../support/daemon.ts";
import { IP6TABLES_TOOLS, shadowTools } from "../../support/shadow-tools.ts";
import type { ShadowTools } from "../../support/shadow-tools.ts";

/*
 * The node's kernel tools missing or failing, as on a host where a package is not installed or
 * a tool is broken: the daemon gets a PATH (test/support/shadow-tools.ts) in which the tool is
 * absent or a script that fails. Each case gets upstream's answer: a family without its tools is
 * left out (single-stack, logged), a missing nfacct or conntrack is logged and the rest works
 * (degraded), and a node without iptables at all is a clear fatal error: exit 1, nothing left
 * listening. A Service must answer whenever the daemon runs.
 */

const NODE = "node-1";
const NODE_IP = "192.168.50.1";
const CLIENT = "client";
const VIP = "10.1.0.80";
const UDP_VIP = "10.1.0.53";
const PODS = { "web-a": "10.244.0.30", "web-b": "10.244.0.31" } as const;

const manifests = {
  "node.yaml": nodeObject({ name: NODE, ips: [NODE_IP], podCIDRs: ["10.244.0.0/24"] }),
  "web.yaml": [
    service({ name: "web", clusterIP: VIP, ports: [{ name: "http", port: 80 }] }),
    endpointSlice({
      service: "web",
      endpoints: Object.entries(PODS).map(([pod, ip]) => ({ ip, node: NODE, pod })),
      ports: [{ name: "http", port: 80 }],
    }),
  ],
};

describe("kernel tools missing or failing", () => {
  let sandbox: Sandbox;
  let daemon: ProxyDaemon | undefined;
  let tools: ShadowTools | undefined;

  before(async () => {
    sandbox = await startProxyNode("kptdtools", {
      node: { name: NODE, ipv4: NODE_IP, podCIDR: "10.244.0.0/24", defaultGateways: ["192.168.50.254"] },
      client: { name: CLIENT, ipv4: "192.168.50.2", routes: ["10.1.0.0/16"] },
      pods: PODS,
      podServer: { udpPort: null, readyTimeoutMs: 30_000 },
    });
  });

  /** Each case starts from a node without kube-proxy rules (the real tools remove them). */
  afterEach(async () => {
    try {
      await daemon?.dispose();
      daemon = undefined;
      await sandbox.exec(NODE, [...daemonArgv(), "--cleanup", "--hostname-override", NODE], {
        timeoutMs: 60_000,
      });
    } finally {
      tools?.dispose();
      tools = undefined;
    }
  });

  after(() => disposeProxyNode(daemon, sandbox));

  const answered = async () => {
    const [report] = await probe(sandbox, CLIENT, [
      { protocol: "tcp", host: VIP, port: 80, count: 5, timeoutMs: 2_000 },
    ]);
    return report;
  };

  async function start(faults: { missing?: readonly string[]; failing?: readonly string[] }) {
    tools = shadowTools(faults);
    daemon = await ProxyDaemon.start(sandbox, {
      node: NODE,
      env: tools.env,
      args: ["--cluster-cidr", "10.244.0.0/16"],
      manifests,
    });
    return daemon;
  }

  for (const how of ["missing", "failing"] as const) {
    it(`ip6tables ${how}: single-stack IPv4, logged, the Service answers`, async () => {
      const d = await start({ [how]: IP6TABLES_TOOLS });
      assert.match(d.log, /IPv6 iptables not usable: running single-stack IPv4/);
      assert.match(d.log, /"families":\["IPv4"\],"msg":"kube-proxy-ts started"/);
      assert.deepEqual((await answered())?.errors, {}, d.logTail());
      // (--cleanup between cases leaves filter's KUBE-FIREWALL chain, so only nat is looked at.)
      assert.doesNotMatch(await d.save("IPv6", "nat"), /KUBE-/, "no IPv6 rules were written");
      assert.match(
        await d.metrics(),
        /kubeproxy_sync_proxy_rules_last_timestamp_seconds\{ip_family="IPv4"\}/,
      );
      assert.ok(d.running);
    });

    it(`nfacct ${how}: each counter's failure logged once, rules without -m nfacct, the Service answers`, async () => {
      const d = await start({ [how]: ["nfacct"] });
      for (const counter of ["ct_state_invalid_dropped_pkts", "localhost_nps_accepted_pkts"]) {
        const lines = d.log
          .split("\n")
          .filter(
            (l) => l.includes("Failed to create nfacct counter") && l.includes(`"counter":"${counter}"`),
          );
        assert.equal(lines.length, 1, `one log line for ${counter}${d.logTail()}`);
        assert.match(lines[0] ?? "", how === "missing" ? /ENOENT/ : /injected failure/);
      }
      const save = await d.save("IPv4");
      assert.match(save, /-m conntrack --ctstate INVALID -j DROP/, "the INVALID drop rule is there");
      assert.doesNotMatch(save, /-m nfacct/);
      assert.deepEqual((await answered())?.errors, {}, d.logTail());
    });

    it(`conntrack ${how}: the stale-UDP clean-up fails and is logged, syncs go on`, async () => {
      const d = await start({ [how]: ["conntrack"] });
      const dns = (endpoints: readonly string[]) => [
        service({ name: "dns", clusterIP: UDP_VIP, ports: [{ name: "dns", port: 53, protocol: "UDP" }] }),
        endpointSlice({
          service: "dns",
          endpoints: endpoints.map((ip) => ({ ip, node: NODE })),
          ports: [{ name: "dns", port: 53, protocol: "UDP" }],
        }),
      ];
      await d.apply(() => d.write("dns.yaml", dns([PODS["web-a"], PODS["web-b"]])));
      // An endpoint of a UDP Service goes away: upstream deletes its conntrack entries.
      await d.apply(() => d.write("dns.yaml", dns([PODS["web-a"]])));
      await waitFor(
        "the failed conntrack clean-up in the log",
        async () => (/Failed to reconcile conntrack entries/.test(d.log) ? true : undefined),
        10_000,
        () => d.logTail(),
      );
      const line = d.log.split("\n").find((l) => l.includes("Failed to reconcile conntrack entries")) ?? "";
      assert.match(line, how === "missing" ? /conntrack .*ENOENT/ : /conntrack .*injected failure/);
      const save = await d.save("IPv4");
      assert.match(save, /-j DNAT --to-destination 10\.244\.0\.30:53/);
      assert.doesNotMatch(save, /-j DNAT --to-destination 10\.244\.0\.31:53/, "the removed endpoint is gone");
      await d.apply(() => d.remove("dns.yaml"));
      assert.doesNotMatch(await d.save("IPv4"), new RegExp(UDP_VIP.replaceAll(".", "\\.")));
      assert.deepEqual((await answered())?.errors, {}, d.logTail());
      assert.ok(d.running);
    });
  }

  it("iptables missing altogether: exit 1 with the package to install, nothing left running", async () => {
    tools = shadowTools({
      missing: [
        "iptables",
        "iptables-save",
        "iptables-restore",
        "iptables-nft",
        "iptables-nft-save",
        "iptables-nft-restore",
        "iptables-legacy",
        "iptables-legacy-save",
        "iptables-legacy-restore",
        ...IP6TABLES_TOOLS,
      ],
    });
    const dir = mkdtempSync(join(tmpdir(), "kpt-tools-manifests-"));
    try {
      const started = Date.now();
      const result = await sandbox.exec(
        NODE,
        [
          ...daemonArgv(),
          "--manifests",
          dir,
          "--hostname-override",
          NODE,
          "--metrics-bind-address",
          "127.0.0.1:10249",
        ],
        { env: tools.env, okExitCodes: [0, 1, 70], timeoutMs: 60_000 },
      );
      assert.equal(result.exitCode, 1, result.stderr);
      assert.match(result.stderr, /not found: install the iptables package/);
      assert.ok(Date.now() - started < 30_000, "it exits by itself");
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
