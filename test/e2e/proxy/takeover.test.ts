import assert from "node:assert/strict";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, it } from "node:test";
import { stringify } from "yaml";
import { JUMP_CHAINS } from "../../../src/backends/iptables/chains.ts";
import { ProcessRunner } from "../../../src/kernel/exec.ts";
import { Iptables } from "../../../src/kernel/iptables.ts";
import type { Sandbox } from "../../../src/sandbox/topology.ts";
import { nodeManifest, WEB, webObjects, withDaemonSandbox } from "../../support/daemon-sandbox.ts";
import { daemonArgv, sleep } from "../../support/daemon.ts";
import type { KubeObject } from "../../support/daemon.ts";
import { ensureJumpRules } from "../../support/jumprules.ts";
import { startEchoServer, TrafficClient } from "../../support/traffic.ts";
import type { TrafficSummary } from "../../support/traffic.ts";

/*
 * Taking over a node from upstream kube-proxy, and switching a running node between modes, with
 * traffic through a Service all along: one long-lived TCP connection (established before the
 * change, through the old rules' DNAT) and new HTTP connections back to back.
 *
 * The node first holds what upstream kube-proxy (iptables mode) leaves on a node when it is
 * replaced: its jump rules, KUBE-PROXY-CANARY in mangle, nat and filter, the nfacct counters, and
 * the chains of its last full sync, which is our `render` payload (byte-for-byte upstream's,
 * test/golden/iptables) of the Service `web` and of a Service `old` that was deleted after that
 * sync, so its KUBE-SVC/KUBE-SEP chains are stale. kube-proxy-ts starts on that node (a manifests
 * folder that no longer has `old`), syncs, deletes the stale chains, and not one connection fails.
 *
 * Then iptables → nftables → iptables, as an operator changes `mode:` in the ConfigMap: the old
 * process stops (SIGTERM leaves its rules), the new one removes the other mode's objects at
 * start-up as upstream's platformCleanup does, then does its first sync. Established connections
 * keep their conntrack NAT binding and survive. New connections opened between that clean-up and
 * the first sync meet no Service rule at all, and a SYN sent then leaves a conntrack entry without
 * NAT that its retransmissions keep using: those fail. That window is upstream's too (the same
 * order); the test measures it and requires every failure to fall inside the switch.
 */

const NODE = WEB.node;
const CLIENT = WEB.client;
const VIP = WEB.vip;
const OLD_VIP = "10.1.0.81";
const ECHO_PORT = 7777;
const CLUSTER_CIDR = ["--cluster-cidr", WEB.clusterCIDR];
/** New connections' timeout: while nothing fails, generous for a loaded machine. */
const REQUEST_TIMEOUT_MS = 2_000;
/**
 * During a mode switch: short, so that the failed requests measure the window (a request that
 * starts in it gives up after this, and the next one starts 20 ms later).
 */
const SWITCH_TIMEOUT_MS = 1_000;

function objects(name: string, clusterIP: string): KubeObject[] {
  return webObjects(name, clusterIP, [
    { name: "http", port: 80 },
    { name: "echo", port: ECHO_PORT },
  ]);
}

const MANIFESTS = { ...nodeManifest(), "web.yaml": objects("web", VIP) };

/** Traffic during `during`: what the long-lived and the new connections saw, and when it ran. */
async function withTraffic(
  sandbox: Sandbox,
  requestTimeoutMs: number,
  during: () => Promise<void>,
): Promise<{
  held: TrafficSummary;
  fresh: TrafficSummary;
  startedAt: number;
  changeAt: number;
  doneAt: number;
}> {
  const startedAt = Date.now();
  let summaries: [TrafficSummary, TrafficSummary];
  const held = await TrafficClient.start(sandbox, CLIENT, "hold", {
    host: VIP,
    port: ECHO_PORT,
    intervalMs: 50,
    timeoutMs: 3_000,
  });
  let fresh: TrafficClient;
  try {
    fresh = await TrafficClient.start(sandbox, CLIENT, "load", {
      host: VIP,
      port: 80,
      intervalMs: 20,
      timeoutMs: requestTimeoutMs,
    });
  } catch (error) {
    await held.stop();
    throw error;
  }
  let changeAt = 0;
  let doneAt = 0;
  try {
    await sleep(500);
    changeAt = Date.now();
    await during();
    doneAt = Date.now();
    await sleep(1_000);
  } finally {
    summaries = [await fresh.stop(), await held.stop()];
  }
  return { fresh: summaries[0], held: summaries[1], startedAt, changeAt, doneAt };
}

describe("taking over a node from upstream kube-proxy, and switching modes, without dropping traffic", () => {
  const runner = new ProcessRunner();
  const renderDir = mkdtempSync(join(tmpdir(), "kpt-takeover-"));
  const env = withDaemonSandbox({
    prefix: "kpttakeover",
    // The daemon starts in the cases, with its own flags.
    clusterCIDR: "",
    onPod: (box, pod) => startEchoServer(box, pod, ECHO_PORT),
    async prepare(sandbox) {
      writeFileSync(
        join(renderDir, "cluster.yaml"),
        [MANIFESTS["node.yaml"], ...objects("web", VIP), ...objects("old", OLD_VIP)]
          .map((o) => stringify(o))
          .join("---\n"),
      );
      // What upstream kube-proxy left: counters, jump rules, canaries, its last full sync.
      const { stdout: payload } = await runner.run(
        [...daemonArgv(), "render", "-f", renderDir, "--hostname-override", NODE, ...CLUSTER_CIDR],
        { timeoutMs: 30_000 },
      );
      for (const counter of ["ct_state_invalid_dropped_pkts", "localhost_nps_accepted_pkts"])
        await sandbox.exec(NODE, ["nfacct", "add", counter]);
      const ipt = new Iptables({
        runner,
        family: "IPv4",
        backend: "default",
        netns: sandbox.node(NODE).netns,
      });
      await ensureJumpRules(ipt, JUMP_CHAINS);
      for (const table of ["mangle", "nat", "filter"])
        await sandbox.exec(NODE, ["iptables", "-w", "5", "-t", table, "-N", "KUBE-PROXY-CANARY"]);
      await ipt.restore(payload, { noflush: true, counters: false });
    },
    teardown: () => rmSync(renderDir, { recursive: true, force: true }),
  });
  const sandbox = (): Sandbox => env.sandbox;

  const nat = async () => (await sandbox().exec(NODE, ["iptables-save", "-t", "nat"])).stdout;
  const nftTables = async () => (await sandbox().exec(NODE, ["nft", "list", "tables"])).stdout;
  const kubeChains = async () => {
    const out: string[] = [];
    for (const table of ["filter", "nat", "mangle"]) {
      const { stdout } = await sandbox().exec(NODE, ["iptables-save", "-t", table]);
      out.push(...(stdout.match(/^:KUBE-[^ ]+/gm) ?? []));
    }
    return out;
  };

  it("serves the Service through upstream's rules, stale chains of `old` included", async () => {
    const rules = await nat();
    assert.match(rules, /default\/old:http cluster IP/);
    assert.match(rules, /default\/web:http cluster IP/);
    const probe = await sandbox().exec(CLIENT, ["curl", "-sS", "--max-time", "3", `http://${VIP}/`]);
    assert.match(probe.stdout, /web-[ab]/);
  });

  it("takes over: syncs, removes the stale chains, keeps the canary, and no connection fails", async () => {
    const before = await nat();
    const stale = before.match(/^:KUBE-(?:SVC|SEP)-[A-Z0-9]+/gm)!.filter((chain) => {
      const name = chain.slice(1);
      return before.split("\n").some((l) => l.startsWith(`-A ${name} `) && l.includes("default/old:"));
    });
    assert.ok(stale.length >= 4, `stale chains of old: ${stale.join(" ")}`);
    const traffic = await withTraffic(sandbox(), REQUEST_TIMEOUT_MS, async () => {
      await env.start({ args: CLUSTER_CIDR, manifests: MANIFESTS });
    });
    const after = await nat();
    for (const chain of stale) assert.ok(!after.includes(`${chain} `), `${chain} is still there`);
    assert.doesNotMatch(after, /default\/old:/);
    assert.match(after, /default\/web:http cluster IP/);
    assert.ok(
      (await kubeChains()).filter((c) => c === ":KUBE-PROXY-CANARY").length === 3,
      "canary in 3 tables",
    );
    assert.deepEqual(
      traffic.held.failures,
      [],
      `established: ${JSON.stringify(traffic.held)}${env.daemon.logTail(15)}`,
    );
    assert.deepEqual(
      traffic.fresh.failures,
      [],
      `new: ${JSON.stringify(traffic.fresh)}${env.daemon.logTail(15)}`,
    );
    assert.ok(traffic.fresh.answers > 20, JSON.stringify(traffic.fresh));
    process.stdout.write(
      `# take-over: ${traffic.fresh.answers} new connections and ${traffic.held.answers} echoes on one ` +
        `established connection, 0 failed; first sync ${traffic.doneAt - traffic.changeAt} ms after start\n`,
    );
  });

  for (const [from, to] of [
    ["iptables", "nftables"],
    ["nftables", "iptables"],
  ] as const) {
    it(`switches a running node from ${from} to ${to} mode: leftovers cleaned, established connections kept`, async () => {
      let stoppedAt = 0;
      const traffic = await withTraffic(sandbox(), SWITCH_TIMEOUT_MS, async () => {
        await env.stop();
        stoppedAt = Date.now();
        await env.start({ args: [...CLUSTER_CIDR, "--proxy-mode", to], manifests: MANIFESTS });
      });
      const chains = await kubeChains();
      const tables = await nftTables();
      if (to === "nftables") {
        // KUBE-FIREWALL is kubelet's chain too: upstream's clean-up leaves it and its jumps.
        assert.deepEqual(chains, [":KUBE-FIREWALL"], `iptables mode's chains left: ${chains.join(" ")}`);
        assert.match(tables, /table ip kube-proxy/);
      } else {
        assert.doesNotMatch(tables, /kube-proxy/, tables);
        assert.match(await nat(), /default\/web:http cluster IP/);
      }
      assert.deepEqual(
        traffic.held.failures,
        [],
        `established: ${JSON.stringify(traffic.held)}${env.daemon.logTail(15)}`,
      );
      // A failure is reported when its request gives up (SWITCH_TIMEOUT_MS after it started);
      // the agent's clock starts between startedAt and its first answer.
      const failedAt = traffic.fresh.failures.map((f) => traffic.startedAt + f.atMs);
      const slack = traffic.changeAt - traffic.startedAt;
      for (const at of failedAt) {
        assert.ok(
          at >= stoppedAt - slack && at <= traffic.doneAt + SWITCH_TIMEOUT_MS + slack,
          `a new connection failed outside the switch: ${JSON.stringify(traffic.fresh.failures)}`,
        );
      }
      const first = Math.min(...traffic.fresh.failures.map((f) => f.atMs));
      const last = Math.max(...traffic.fresh.failures.map((f) => f.atMs));
      process.stdout.write(
        `# ${from} → ${to}: ${traffic.held.answers} echoes on the established connection, 0 failed; ` +
          `${traffic.fresh.failures.length} of ${traffic.fresh.answers + traffic.fresh.failures.length} new ` +
          `connections failed` +
          (failedAt.length === 0
            ? ""
            : `: a window of about ${last - first + SWITCH_TIMEOUT_MS} ms (failed requests started ` +
              `${first - SWITCH_TIMEOUT_MS}–${last - SWITCH_TIMEOUT_MS} ms into the run)`) +
          `; old process stopped → new first sync ${traffic.doneAt - stoppedAt} ms\n`,
      );
    });
  }
});
