import { test } from "node:test";
import assert from "node:assert/strict";
import { chainsFromSave, Iptables, RestoreError } from "../../../src/kernel/iptables.ts";
import { ensureJumpRules, jumpRows } from "../../support/jumprules.ts";
import type { IptablesBackend } from "../../../src/kernel/iptables.ts";
import { cleanupLeftovers } from "../../../src/backends/iptables/cleanup.ts";
import { startCanaryMonitor } from "../../../src/kernel/canary.ts";
import { runner, stripComments, withNetns } from "../../support/netns.ts";

const BACKENDS: readonly IptablesBackend[] = ["nft", "legacy"];

const PAYLOAD = `*nat
:KUBE-SERVICES - [0:0]
:KUBE-SVC-A - [0:0]
:KUBE-SEP-A - [0:0]
-A KUBE-SERVICES -d 10.96.0.10/32 -p udp -m comment --comment "ns/dns:p cluster IP" -m udp --dport 53 -j KUBE-SVC-A
-A KUBE-SVC-A -j KUBE-SEP-A
-A KUBE-SEP-A -p udp -m udp -j DNAT --to-destination 10.1.0.1:5353
COMMIT
`;

const ROWS = jumpRows(
  "filter INPUT>KUBE-EXTERNAL-SERVICES",
  "filter INPUT>KUBE-NODEPORTS",
  "nat OUTPUT>KUBE-SERVICES",
  "nat POSTROUTING>KUBE-POSTROUTING",
  "filter INPUT>KUBE-FIREWALL",
);

for (const backend of BACKENDS) {
  test(`${backend}: restore then save round-trips; noflush keeps foreign rules; version`, async () => {
    await withNetns(async (netns) => {
      const ipt = new Iptables({ runner, family: "IPv4", backend, netns });
      const version = await ipt.version();
      assert.equal(version.hasRandomFully, true);
      assert.deepEqual(version.restoreWaitFlags, ["-w", "5", "-W", "100000"]);
      await ipt.restore(PAYLOAD);
      const saved = await ipt.save("nat");
      assert.match(saved, /^-A KUBE-SEP-A -p udp -m udp -j DNAT --to-destination 10\.1\.0\.1:5353$/m);
      assert.match(
        saved,
        /^-A KUBE-SERVICES -d 10\.96\.0\.10\/32 -p udp -m comment --comment "ns\/dns:p cluster IP" -m udp --dport 53 -j KUBE-SVC-A$/m,
      );
      assert.deepEqual(
        new Set(chainsFromSave(await ipt.save("nat"), "nat")),
        new Set([
          "PREROUTING",
          "INPUT",
          "OUTPUT",
          "POSTROUTING",
          "KUBE-SEP-A",
          "KUBE-SERVICES",
          "KUBE-SVC-A",
        ]),
      );
      // A foreign chain and a foreign rule in a built-in chain.
      await ipt.ensureChain("nat", "FOREIGN");
      await ipt.ensureRule("append", "nat", "FOREIGN", ["-j", "RETURN"]);
      await ipt.ensureRule("append", "nat", "PREROUTING", ["-j", "FOREIGN"]);
      await ipt.restore("*nat\n:KUBE-SERVICES - [0:0]\n-A KUBE-SERVICES -j RETURN\nCOMMIT\n");
      const after = await ipt.save("nat");
      assert.match(after, /^-A PREROUTING -j FOREIGN$/m);
      assert.match(after, /^-A FOREIGN -j RETURN$/m);
      assert.match(after, /^-A KUBE-SVC-A -j KUBE-SEP-A$/m, "chains absent from the payload are untouched");
      assert.doesNotMatch(after, /-A KUBE-SERVICES -d 10\.96/, "chains named in ':' lines are flushed");
    });
  });

  test(`${backend}: a bad line yields a RestoreError naming it, and nothing is applied`, async () => {
    await withNetns(async (netns) => {
      const ipt = new Iptables({ runner, family: "IPv4", backend, netns });
      await ipt.restore(PAYLOAD);
      const before = stripComments(await ipt.save());
      const bad =
        "*nat\n:KUBE-NEW - [0:0]\n-A KUBE-NEW -j RETURN\n-A KUBE-NEW -p tcp --bogus 1 -j RETURN\nCOMMIT\n";
      await assert.rejects(ipt.restore(bad), (err: unknown) => {
        assert.ok(err instanceof RestoreError, String(err));
        assert.equal(err.line, 4);
        assert.equal(err.lineText, "-A KUBE-NEW -p tcp --bogus 1 -j RETURN");
        assert.ok(err.context.length >= 4);
        assert.equal(err.argv.at(-1), "--counters");
        return true;
      });
      assert.equal(stripComments(await ipt.save()), before);
    });
  });

  test(`${backend}: -X of a chain referenced by a foreign rule fails atomically`, async () => {
    await withNetns(async (netns) => {
      const ipt = new Iptables({ runner, family: "IPv4", backend, netns });
      await ipt.restore(PAYLOAD);
      await ipt.ensureRule("append", "nat", "OUTPUT", ["-j", "KUBE-SEP-A"]);
      const before = stripComments(await ipt.save());
      const payload =
        "*nat\n:KUBE-OTHER - [0:0]\n:KUBE-SVC-A - [0:0]\n:KUBE-SEP-A - [0:0]\n-A KUBE-OTHER -j RETURN\n-X KUBE-SEP-A\nCOMMIT\n";
      await assert.rejects(ipt.restore(payload), (err: unknown) => {
        assert.ok(err instanceof RestoreError);
        // legacy blames the COMMIT line (it applies there), nft the -X line.
        assert.ok(err.line === 6 || err.line === 7, `line ${err.line}: ${err.stderr}`);
        return true;
      });
      assert.equal(stripComments(await ipt.save()), before, "kernel unchanged");
      assert.equal(await ipt.chainExists("nat", "KUBE-OTHER"), false);
    });
  });

  test(`${backend}: ensureChain/ensureRule idempotent, jump rules installed then cleaned up`, async () => {
    await withNetns(async (netns) => {
      const ipt = new Iptables({ runner, family: "IPv6", backend, netns });
      assert.equal(await ipt.ensureChain("filter", "KUBE-FORWARD"), false);
      assert.equal(await ipt.ensureChain("filter", "KUBE-FORWARD"), true);
      await ipt.ensureRule("append", "filter", "INPUT", ["-j", "ACCEPT"]);
      await ensureJumpRules(ipt, ROWS);
      await ensureJumpRules(ipt, ROWS);
      const input = (await ipt.save("filter")).split("\n").filter((l) => l.startsWith("-A INPUT"));
      assert.deepEqual(input, [
        "-A INPUT -j KUBE-FIREWALL",
        '-A INPUT -m comment --comment "kubernetes health check service ports" -j KUBE-NODEPORTS',
        '-A INPUT -m conntrack --ctstate NEW -m comment --comment "kubernetes externally-visible service portals" -j KUBE-EXTERNAL-SERVICES',
        "-A INPUT -j ACCEPT",
      ]);
      await ipt.restore("*nat\n:KUBE-SVC-A - [0:0]\n-A KUBE-SERVICES -j KUBE-SVC-A\nCOMMIT\n");
      await ipt.ensureChain("mangle", "KUBE-PROXY-CANARY");
      const result = await cleanupLeftovers(ipt, ROWS);
      assert.deepEqual(result.errors, []);
      const nat = await ipt.save("nat");
      assert.doesNotMatch(nat, /KUBE-/);
      const filter = await ipt.save("filter");
      assert.match(filter, /^-A INPUT -j KUBE-FIREWALL$/m, "kubelet's KUBE-FIREWALL jump stays");
      assert.match(filter, /^-A INPUT -j ACCEPT$/m, "foreign rule stays");
      assert.doesNotMatch(filter, /KUBE-NODEPORTS|KUBE-EXTERNAL-SERVICES|KUBE-FORWARD/);
      assert.equal(await ipt.chainExists("mangle", "KUBE-PROXY-CANARY"), false);
    });
  });
}

test("nft: canary monitor notices a flush of the real tables", async () => {
  await withNetns(async (netns) => {
    const ipt = new Iptables({ runner, family: "IPv4", backend: "nft", netns });
    let flushes = 0;
    const monitor = startCanaryMonitor({
      ipt,
      tables: ["mangle", "nat", "filter"],
      intervalMs: 50,
      onFlush: () => void flushes++,
    });
    try {
      for (let i = 0; i < 100 && !(await ipt.chainExists("filter", "KUBE-PROXY-CANARY")); i++) {
        await new Promise((r) => setTimeout(r, 20));
      }
      assert.ok(await ipt.chainExists("mangle", "KUBE-PROXY-CANARY"));
      for (const t of ["mangle", "nat", "filter"]) {
        await runner.run(["iptables-nft", "-t", t, "-X", "KUBE-PROXY-CANARY"], { netns, timeoutMs: 5000 });
      }
      for (let i = 0; i < 200 && flushes === 0; i++) await new Promise((r) => setTimeout(r, 20));
      assert.equal(flushes, 1);
      for (let i = 0; i < 100 && !(await ipt.chainExists("mangle", "KUBE-PROXY-CANARY")); i++) {
        await new Promise((r) => setTimeout(r, 20));
      }
      assert.ok(await ipt.chainExists("mangle", "KUBE-PROXY-CANARY"), "canary re-created");
    } finally {
      await monitor.stop();
    }
    assert.equal(await ipt.chainExists("nat", "KUBE-PROXY-CANARY"), false, "stop removes the canaries");
  });
});
