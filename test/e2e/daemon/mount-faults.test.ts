import assert from "node:assert/strict";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
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
} from "../../support/daemon.ts";
import { stringify } from "yaml";

/*
 * Mount faults, each in a private mount namespace of the daemon's own (`unshare --mount`, see
 * test/support/with-fault.sh), so that nothing outside it changes:
 * - a read-only /proc/sys: as upstream, a sysctl that must change and cannot is a fatal start-up
 *   error naming it (and the setting that leaves it alone), before any rule is written; with the
 *   values already right (or the settings at 0) the daemon runs;
 * - a full temporary directory (ENOSPC: a filled tmpfs as its TMPDIR): the daemon writes
 *   nothing there, so it runs and follows changes; `--write-config-to` on the full file system
 *   fails with a clear message and exit 1.
 */

const NODE = "node-1";
const NODE_IP = "192.168.50.1";
const CLIENT = "client";
const VIP = "10.1.0.80";
const PODS = { "web-a": "10.244.0.30", "web-b": "10.244.0.31" } as const;
const IN_MOUNTS = fileURLToPath(new URL("../../support/with-fault.sh", import.meta.url));

const inMounts = (...mode: string[]) => [
  "unshare",
  "--mount",
  "--propagation",
  "private",
  "sh",
  IN_MOUNTS,
  ...mode,
  "--",
];

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

describe("mount faults", () => {
  let sandbox: Sandbox;
  let daemon: ProxyDaemon | undefined;
  let dir: string;

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), "kpt-mount-faults-"));
    sandbox = await startProxyNode("kptdmount", {
      node: { name: NODE, ipv4: NODE_IP, podCIDR: "10.244.0.0/24", defaultGateways: ["192.168.50.254"] },
      client: { name: CLIENT, ipv4: "192.168.50.2", routes: ["10.1.0.0/16"] },
      pods: PODS,
      podServer: { udpPort: null, readyTimeoutMs: 30_000 },
    });
  });

  afterEach(async () => {
    await daemon?.dispose();
    daemon = undefined;
    await sandbox.exec(NODE, [...daemonArgv(), "--cleanup", "--hostname-override", NODE], {
      timeoutMs: 60_000,
    });
  });

  after(async () => {
    try {
      await disposeProxyNode(daemon, sandbox);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  const sysctl = async (name: string) => (await sandbox.exec(NODE, ["sysctl", "-n", name])).stdout.trim();
  const setSysctl = (name: string, value: string) =>
    sandbox.exec(NODE, ["sysctl", "-q", "-w", `${name}=${value}`]);

  /** The daemon started (and expected to stop by itself) in the node, with `wrap` around it. */
  async function runToExit(wrap: readonly string[], args: readonly string[]) {
    const folder = mkdtempSync(join(dir, "manifests-"));
    for (const [name, objects] of Object.entries(manifests))
      writeFileSync(
        join(folder, name),
        (Array.isArray(objects) ? objects : [objects]).map((o) => stringify(o)).join("---\n"),
      );
    return sandbox.exec(
      NODE,
      [
        ...wrap,
        ...daemonArgv(),
        "--manifests",
        folder,
        "--hostname-override",
        NODE,
        "--metrics-bind-address",
        "127.0.0.1:10249",
        ...args,
      ],
      { okExitCodes: [0, 1, 70], timeoutMs: 60_000 },
    );
  }

  const kubeRules = async () =>
    (await sandbox.exec(NODE, ["iptables-save", "-t", "nat"])).stdout.includes("KUBE-SERVICES");

  it("read-only /proc/sys, a conntrack timeout to change: exit 1 naming the sysctl and the remedy, no rules", async () => {
    await setSysctl("net.netfilter.nf_conntrack_tcp_timeout_established", "432000");
    const result = await runToExit(inMounts("ro-proc-sys"), []);
    assert.equal(result.exitCode, 1, result.stderr);
    assert.match(
      result.stderr,
      /failed to set sysctl net\/netfilter\/nf_conntrack_tcp_timeout_established to 86400: EROFS: read-only file system.*conntrack\.tcpEstablishedTimeout \(--conntrack-tcp-timeout-established\) to 0/,
    );
    assert.equal(await kubeRules(), false, "nothing was programmed");
    assert.equal(await sysctl("net.netfilter.nf_conntrack_tcp_timeout_established"), "432000");
  });

  it("read-only /proc/sys, route_localnet to change: exit 1 naming it and how to do without", async () => {
    await setSysctl("net.ipv4.conf.all.route_localnet", "0");
    const result = await runToExit(inMounts("ro-proc-sys"), [
      "--conntrack-tcp-timeout-established",
      "0",
      "--conntrack-tcp-timeout-close-wait",
      "0",
    ]);
    assert.equal(result.exitCode, 1, result.stderr);
    assert.match(
      result.stderr,
      /failed to set sysctl net\/ipv4\/conf\/all\/route_localnet to 1: EROFS.*--iptables-localhost-nodeports=false/,
    );
    assert.equal(await kubeRules(), false, "nothing was programmed");
  });

  it("read-only /proc/sys with every value already right: the daemon runs and serves", async () => {
    await setSysctl("net.ipv4.conf.all.route_localnet", "1");
    await setSysctl("net.netfilter.nf_conntrack_tcp_timeout_established", "86400");
    await setSysctl("net.netfilter.nf_conntrack_tcp_timeout_close_wait", "3600");
    daemon = await ProxyDaemon.start(sandbox, {
      node: NODE,
      wrap: inMounts("ro-proc-sys"),
      args: ["--cluster-cidr", "10.244.0.0/16"],
      manifests,
    });
    const [report] = await probe(sandbox, CLIENT, [
      { protocol: "tcp", host: VIP, port: 80, count: 4, timeoutMs: 2_000 },
    ]);
    assert.deepEqual(report?.errors, {}, daemon.logTail());
    assert.doesNotMatch(daemon.log, /Failed to set|EROFS/);
  });

  it("a full TMPDIR: the daemon writes nothing there and serves; --write-config-to there fails clearly", async () => {
    const full = mkdtempSync(join(dir, "full-"));
    daemon = await ProxyDaemon.start(sandbox, {
      node: NODE,
      wrap: inMounts("full", full, "64k"),
      env: { TMPDIR: full },
      args: ["--cluster-cidr", "10.244.0.0/16"],
      manifests,
    });
    const [report] = await probe(sandbox, CLIENT, [
      { protocol: "tcp", host: VIP, port: 80, count: 4, timeoutMs: 2_000 },
    ]);
    assert.deepEqual(report?.errors, {}, daemon.logTail());
    await daemon.apply(() =>
      daemon!.write("web2.yaml", service({ name: "web2", clusterIP: "10.1.0.81", ports: [{ port: 80 }] })),
    );
    assert.match(await daemon.save("IPv4"), /-d 10\.1\.0\.81\/32 .*has no endpoints/);

    const result = await runToExit(inMounts("full", full, "64k"), [
      "--write-config-to",
      join(full, "config.yaml"),
    ]);
    assert.equal(result.exitCode, 1, result.stderr);
    assert.match(result.stderr, /ENOSPC: no space left on device, write/);
    assert.doesNotMatch(result.stderr, /internal error/);
  });
});
