/*
 * What the VM itself must give before any mode runs in it: IPVS in the kernel, an IPVS virtual
 * server that balances real TCP between the bench's namespaces, and the compiled daemon serving
 * the seed's Service in iptables mode (the harness end to end, whatever the ipvs backend's state).
 */
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { test } from "node:test";
import { Daemon, cleanup, copySeed, exec, kubeLeftovers, repeat, tally, waitFor } from "../lab.ts";
import { SEED_PODS, world } from "../world.ts";

test("the VM kernel has IPVS", () => {
  assert.match(readFileSync("/proc/net/ip_vs", "utf8"), /IP Virtual Server version/);
});

test(
  "a virtual server made with ipvsadm balances TCP from a client namespace over two pods",
  { timeout: 120_000 },
  async (t) => {
    const lab = world();
    const vip = "10.96.77.1";
    await exec(["ip", "link", "add", "vm-vip0", "type", "dummy"]);
    try {
      await exec(["ip", "addr", "add", `${vip}/32`, "dev", "vm-vip0"]);
      await exec(["ipvsadm", "-A", "-t", `${vip}:80`, "-s", "rr"]);
      for (const p of SEED_PODS) await exec(["ipvsadm", "-a", "-t", `${vip}:80`, "-r", `${p.ip}:80`, "-m"]);
      const counts = tally(await repeat(6, () => lab.client("ext").agent.tcp(vip, 80)));
      assert.deepEqual(counts, Object.fromEntries(SEED_PODS.map((p) => [p.name, 3])));
      // The kernel folds its per-CPU counters into what ipvsadm reads every 2 s (the estimator).
      const stats = await waitFor(
        "ipvsadm --stats to count 3 connections per real server",
        async () => {
          const text = (await exec(["ipvsadm", "-Ln", "--stats", "-t", `${vip}:80`])).stdout;
          return SEED_PODS.every((p) => new RegExp(`-> ${p.ip.replace(/\./g, "\\.")}:80\\s+3\\s`).test(text))
            ? text
            : undefined;
        },
        15_000,
        async () => `\n${(await exec(["ipvsadm", "-Ln", "--stats"])).stdout}`,
      );
      t.diagnostic(stats.trim());
    } finally {
      await exec(["ipvsadm", "-D", "-t", `${vip}:80`], { allowFail: true });
      await exec(["ip", "link", "del", "vm-vip0"], { allowFail: true });
    }
  },
);

test(
  "the compiled daemon serves the seed's nginx Service in iptables mode in the VM",
  { timeout: 600_000 },
  async (t) => {
    const lab = world();
    const daemon = new Daemon("iptables");
    try {
      copySeed(daemon.dir);
      const started = Date.now();
      await daemon.start();
      t.diagnostic(`iptables mode: first sync ${Date.now() - started} ms after start`);
      const ext = lab.client("ext").agent;
      const clusterIP = tally(await repeat(6, () => ext.tcp("10.1.125.152", 80)));
      const nodePort = tally(await repeat(6, () => ext.tcp("192.168.50.1", 30978)));
      for (const counts of [clusterIP, nodePort]) {
        assert.deepEqual(
          Object.keys(counts).sort(),
          SEED_PODS.map((p) => p.name).sort(),
          `${JSON.stringify(counts)}${daemon.logTail()}`,
        );
      }
    } finally {
      await daemon.dispose();
      const r = await cleanup("iptables");
      assert.equal(r.code, 0, `--cleanup: ${r.stderr}`);
    }
    assert.deepEqual(await kubeLeftovers("iptables-save"), [], "what iptables mode's --cleanup left");
  },
);
