import assert from "node:assert/strict";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { describe, it } from "node:test";
import { stringify } from "yaml";
import { WEB, webManifests, withDaemonSandbox } from "../../support/daemon-sandbox.ts";
import { daemonArgv, service } from "../../support/daemon.ts";

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

const NODE = WEB.node;
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

const manifests = webManifests();

describe("mount faults", () => {
  const dir = mkdtempSync(join(tmpdir(), "kpt-mount-faults-"));
  // Each case starts from a node without kube-proxy rules.
  const env = withDaemonSandbox({
    prefix: "kptdmount",
    cleanEachCase: true,
    teardown: () => rmSync(dir, { recursive: true, force: true }),
  });
  const sandbox = () => env.sandbox;

  const sysctl = async (name: string) => (await sandbox().exec(NODE, ["sysctl", "-n", name])).stdout.trim();
  const setSysctl = (name: string, value: string) =>
    sandbox().exec(NODE, ["sysctl", "-q", "-w", `${name}=${value}`]);

  /** The daemon started (and expected to stop by itself) in the node, with `wrap` around it. */
  async function runToExit(wrap: readonly string[], args: readonly string[]) {
    const folder = mkdtempSync(join(dir, "manifests-"));
    for (const [name, objects] of Object.entries(manifests))
      writeFileSync(
        join(folder, name),
        (Array.isArray(objects) ? objects : [objects]).map((o) => stringify(o)).join("---\n"),
      );
    return sandbox().exec(
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
    (await sandbox().exec(NODE, ["iptables-save", "-t", "nat"])).stdout.includes("KUBE-SERVICES");

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
    const daemon = await env.start({ wrap: inMounts("ro-proc-sys"), manifests });
    assert.deepEqual((await env.served(4)).errors, {}, daemon.logTail());
    assert.doesNotMatch(daemon.log, /Failed to set|EROFS/);
  });

  it("a full TMPDIR: the daemon writes nothing there and serves; --write-config-to there fails clearly", async () => {
    const full = mkdtempSync(join(dir, "full-"));
    const daemon = await env.start({ wrap: inMounts("full", full, "64k"), env: { TMPDIR: full }, manifests });
    assert.deepEqual((await env.served(4)).errors, {}, daemon.logTail());
    await daemon.apply(() =>
      daemon.write("web2.yaml", service({ name: "web2", clusterIP: "10.1.0.81", ports: [{ port: 80 }] })),
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
