import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, describe, it } from "node:test";
import { WEB, webManifests, withDaemonSandbox } from "../../support/daemon-sandbox.ts";
import { daemonArgv, endpointSlice, service, waitFor } from "../../support/daemon.ts";
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

const NODE = WEB.node;
const UDP_VIP = "10.1.0.53";
const PODS = WEB.pods;

describe("kernel tools missing or failing", () => {
  // Each case starts from a node without kube-proxy rules (the real tools remove them).
  const env = withDaemonSandbox({ prefix: "kptdtools", cleanEachCase: true });
  let tools: ShadowTools | undefined;

  afterEach(() => {
    tools?.dispose();
    tools = undefined;
  });

  const answered = () => env.served(5);

  async function start(faults: { missing?: readonly string[]; failing?: readonly string[] }) {
    tools = shadowTools(faults);
    return env.start({ env: tools.env, manifests: webManifests() });
  }

  for (const how of ["missing", "failing"] as const) {
    it(`ip6tables ${how}: single-stack IPv4, logged, the Service answers`, async () => {
      const d = await start({ [how]: IP6TABLES_TOOLS });
      assert.match(d.log, /IPv6 iptables not usable: running single-stack IPv4/);
      assert.match(d.log, /"families":\["IPv4"\],"msg":"kube-proxy-ts started"/);
      assert.deepEqual((await answered()).errors, {}, d.logTail());
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
      assert.deepEqual((await answered()).errors, {}, d.logTail());
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
      assert.deepEqual((await answered()).errors, {}, d.logTail());
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
      const result = await env.sandbox.exec(
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
