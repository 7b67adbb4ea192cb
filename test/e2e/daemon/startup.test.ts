import assert from "node:assert/strict";
import { appendFileSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { ExecError } from "../../../src/kernel/exec.ts";
import { startupProblem } from "../../../src/kernel/preflight.ts";
import { Sandbox } from "../../../src/sandbox/topology.ts";
import { daemonArgv, waitFor } from "../../support/daemon.ts";

/*
 * Start-up checks and the --config watch: a node that cannot run the proxy gets one clear line
 * (what is missing, what to do), and a changed configuration file ends the daemon so that its
 * supervisor restarts it with the new file, as upstream does.
 */

describe("start-up problems are named", () => {
  const exec = (stderr: string, reason: "exit" | "spawn" = "exit") =>
    new ExecError(["iptables-nft-save", "-t", "nat"], reason === "exit" ? 1 : null, stderr, reason);

  it("a missing iptables tool names the package", () => {
    assert.match(
      startupProblem(exec("", "spawn"))?.message ?? "",
      /iptables-nft-save not found: install the iptables package/,
    );
  });

  it("no permission asks for root or CAP_NET_ADMIN", () => {
    const problem = startupProblem(
      exec(
        "iptables-nft-save v1.8.9 (nf_tables): Could not fetch rule set generation id: Permission denied (you must be root)\n",
      ),
    );
    assert.match(problem?.message ?? "", /needs root or the CAP_NET_ADMIN capability/);
    assert.equal(problem?.code, "KPT_STARTUP_CHECK");
  });

  it("a kernel without the nat table names the modules", () => {
    const problem = startupProblem(
      exec(
        "iptables v1.8.9 (legacy): can't initialize iptables table `nat': Table does not exist (do you need to insmod?)\n",
      ),
    );
    assert.match(problem?.message ?? "", /load the nf_tables \(nft\) or iptable_nat \(legacy\) modules/);
  });

  it("other failures are left to the first sync", () => {
    assert.equal(startupProblem(exec("something else\n")), null);
    assert.equal(startupProblem(new Error("not an exec error")), null);
  });
});

describe("the daemon at start-up, in a node namespace", () => {
  const NODE = "node-1";
  let sandbox: Sandbox;
  let dir: string;

  before(async () => {
    sandbox = await Sandbox.create({ prefix: "kptdstart" });
    await sandbox.addNode(NODE, { ipv4: "192.168.50.1", podCIDR: "10.244.0.0/24" });
    dir = mkdtempSync(join(tmpdir(), "kpt-startup-"));
  });

  after(async () => {
    await sandbox?.dispose();
    rmSync(dir, { recursive: true, force: true });
  });

  it("exits with a clear message when it lacks the permission to program iptables", async () => {
    const result = await sandbox.exec(
      NODE,
      [
        // Still root, so it can read a checkout only root may read, but with no capability at all.
        "setpriv",
        "--inh-caps=-all",
        "--bounding-set=-all",
        ...daemonArgv(),
        "--manifests",
        dir,
        "--hostname-override",
        NODE,
      ],
      { okExitCodes: [0, 1, 70], timeoutMs: 60_000 },
    );
    assert.equal(result.exitCode, 1, result.stderr);
    assert.match(result.stderr, /needs root or the CAP_NET_ADMIN capability/, result.stderr);
  });

  it("with --bind-address-hard-fail, a healthz port taken by someone else stops the whole daemon, non-zero", async () => {
    const manifests = join(dir, "hard-fail");
    mkdirSync(manifests);
    const holder = sandbox.spawn(NODE, [
      process.execPath,
      "-e",
      "require('node:net').createServer().listen(10256, '127.0.0.1', () => console.log('listening'))",
    ]);
    try {
      await waitFor(
        "the port holder",
        async () => (/listening/.test(holder.stdout) ? true : undefined),
        10_000,
      );
      const result = await sandbox.exec(
        NODE,
        [
          ...daemonArgv(),
          "--manifests",
          manifests,
          "--hostname-override",
          NODE,
          "--bind-address-hard-fail",
          "--healthz-bind-address",
          "127.0.0.1:10256",
          "--metrics-bind-address",
          "127.0.0.1:10249",
        ],
        { okExitCodes: [0, 1, 70], timeoutMs: 60_000 },
      );
      assert.equal(result.exitCode, 1, result.stderr);
      assert.match(result.stderr, /Failed to start healthz server/);
      assert.match(result.stderr, /Fatal error: stopping/);
      assert.match(result.stderr, /EADDRINUSE/);
    } finally {
      await holder.stop(5_000);
    }
  });

  it("exits non-zero when its --config file changes", async () => {
    const config = join(dir, "config.yaml");
    const manifests = join(dir, "manifests");
    mkdirSync(manifests);
    writeFileSync(
      config,
      [
        "apiVersion: kubeproxy.config.k8s.io/v1alpha1",
        "kind: KubeProxyConfiguration",
        "mode: iptables",
        `hostnameOverride: ${NODE}`,
        'metricsBindAddress: "127.0.0.1:10249"',
        'healthzBindAddress: "127.0.0.1:10256"',
        "iptables:",
        "  minSyncPeriod: 0s",
        "",
      ].join("\n"),
    );
    const child = sandbox.spawn(NODE, [...daemonArgv(), "--config", config, "--manifests", manifests]);
    try {
      await waitFor(
        "the daemon to start",
        async () => {
          if (!child.running) throw new Error(`the daemon exited: ${child.stderr}`);
          return /kube-proxy-ts started/.test(child.stderr) ? true : undefined;
        },
        60_000,
      );
      appendFileSync(config, "# edited\n");
      await waitFor(
        "the daemon to exit",
        async () => (child.running ? undefined : true),
        15_000,
        () => child.stderr,
      );
      assert.match(child.stderr, /Configuration file changed/);
      assert.ok(
        child.stderr.includes(`kube-proxy-ts: --config: content of ${config} was updated`),
        child.stderr,
      );
    } finally {
      await child.stop(5_000);
    }
  });
});
