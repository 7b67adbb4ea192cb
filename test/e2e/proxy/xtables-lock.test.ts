import assert from "node:assert/strict";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, it } from "node:test";
import type { BackgroundProcess } from "../../../src/kernel/spawn.ts";
import { nodeManifest, WEB, webObjects, withDaemonSandbox } from "../../support/daemon-sandbox.ts";
import { waitFor } from "../../support/daemon.ts";

/*
 * Another program holds the xtables lock (iptables-legacy serialises every writer with flock on
 * the lock file; `iptables -w` waits for it) while a change arrives. The daemon's restore waits a
 * bounded time (upstream's `-w 5 -W 100000`), fails, says so ("Sync failed", the tool's message),
 * and retries after the sync period; the rules already programmed keep working meanwhile, and
 * the change lands once the lock is free.
 *
 * The lock is a private file (XTABLES_LOCKFILE for the daemon and for the holder), never the
 * host's /run/xtables.lock, which other programs on the machine use. The node namespace gets a
 * kubelet hint chain in iptables-legacy so that the daemon picks the legacy backend (the nft
 * backend takes no lock: nf_tables transactions are atomic by themselves).
 */

const NODE = WEB.node;
const VIP = WEB.vip;
const VIP2 = "10.1.0.81";
const SYNC_PERIOD_S = 4;
/** iptables-restore's -w: how long one attempt waits for the lock. */
const LOCK_WAIT_MS = 5_000;
const HOLD_MS = 9_000;

describe("another process holds the xtables lock", () => {
  const dir = mkdtempSync(join(tmpdir(), "kpt-xtables-lock-"));
  const lockFile = join(dir, "xtables.lock");
  writeFileSync(lockFile, "");
  let holder: BackgroundProcess | undefined;
  const env = withDaemonSandbox({
    prefix: "kptpxlock",
    async prepare(sandbox) {
      await sandbox.exec(NODE, ["iptables-legacy", "-w", "5", "-t", "mangle", "-N", "KUBE-KUBELET-CANARY"], {
        env: { XTABLES_LOCKFILE: lockFile },
      });
    },
    daemon: {
      env: { XTABLES_LOCKFILE: lockFile },
      args: ["--iptables-sync-period", `${SYNC_PERIOD_S}s`],
      manifests: { ...nodeManifest(), "web.yaml": webObjects("web", VIP) },
    },
    async teardown() {
      try {
        await holder?.stop(5_000);
      } finally {
        rmSync(dir, { recursive: true, force: true });
      }
    },
  });

  const answered = (host: string) => env.served(4, host);

  const legacySave = async () =>
    (
      await env.sandbox.exec(NODE, ["iptables-legacy-save", "-t", "nat"], {
        env: { XTABLES_LOCKFILE: lockFile },
      })
    ).stdout;

  it("the sync waits, fails with the tool's message, keeps the old rules and retries until the lock is free", async (t) => {
    const { sandbox, daemon } = env;
    assert.match(daemon.log, /"backend":"legacy"/, "the daemon runs on iptables-legacy");
    assert.deepEqual((await answered(VIP)).errors, {}, daemon.logTail());
    const before = await legacySave();
    assert.match(before, new RegExp(`-d ${VIP}/32 .*-j KUBE-SVC-`));

    holder = sandbox.spawn(NODE, ["flock", "--exclusive", lockFile, "sleep", String(HOLD_MS / 1000)]);
    await waitFor(
      "the holder to take the lock",
      async () => {
        const r = await sandbox.exec(NODE, ["flock", "--nonblock", lockFile, "true"], {
          okExitCodes: [0, 1],
        });
        return r.exitCode === 1 ? true : undefined;
      },
      5_000,
    );
    const lockedAt = Date.now();
    daemon.write("web2.yaml", webObjects("web2", VIP2));

    const failedLine = await waitFor(
      "the daemon to report the failed sync",
      async () => daemon.log.split("\n").find((l) => l.includes('"msg":"Sync failed"')),
      LOCK_WAIT_MS + 10_000,
      () => daemon.logTail(),
    );
    const failedAfterMs = Date.now() - lockedAt;
    assert.match(failedLine, /xtables lock/, "the tool's own reason is in the log");
    assert.ok(failedAfterMs >= LOCK_WAIT_MS - 1_000, `it waited for the lock first (${failedAfterMs} ms)`);
    assert.ok(holder.running, "the lock is still held");

    // Meanwhile the rules programmed before are intact and serve.
    assert.equal(await legacySave().then((s) => s.includes(`-d ${VIP}/32`)), true);
    assert.deepEqual((await answered(VIP)).errors, {}, daemon.logTail());
    assert.ok(daemon.running, "still running");

    await waitFor("the holder to let go", async () => (holder!.running ? undefined : true), HOLD_MS + 5_000);
    const releasedAt = Date.now();
    await waitFor(
      "the change to land after the lock is released",
      async () => ((await legacySave()).includes(`-d ${VIP2}/32`) ? true : undefined),
      SYNC_PERIOD_S * 1000 + LOCK_WAIT_MS + 5_000,
      () => daemon.logTail(),
    );
    t.diagnostic(
      `sync failed ${failedAfterMs} ms after the lock was taken; the change landed ${Date.now() - releasedAt} ms after it was released`,
    );
    assert.deepEqual((await answered(VIP2)).errors, {}, daemon.logTail());
    assert.deepEqual((await answered(VIP)).errors, {}, daemon.logTail());
  });
});
