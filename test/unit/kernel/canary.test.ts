import { test } from "node:test";
import assert from "node:assert/strict";
import { startCanaryMonitor } from "../../../src/kernel/canary.ts";
import { ExecError } from "../../../src/kernel/exec.ts";
import { FakeIptables } from "../../../src/kernel/fake.ts";

const TABLES = ["mangle", "nat", "filter"] as const;

/** A sleep that yields to the event loop without waiting, counting calls to bound the loop. */
function tickSleep(limit: number) {
  let n = 0;
  return {
    sleep: (_ms: number, signal: AbortSignal) => {
      n++;
      if (n > limit) throw new Error("monitor loop ran away");
      return signal.aborted ? Promise.resolve() : new Promise<void>((r) => setImmediate(r));
    },
    count: () => n,
  };
}

async function until(cond: () => boolean, what: string): Promise<void> {
  for (let i = 0; i < 500; i++) {
    if (cond()) return;
    await new Promise((r) => setImmediate(r));
  }
  throw new Error(`timed out waiting for ${what}`);
}

test("creates canaries, reloads once when a flush removes them, re-creates, cleans up on stop", async () => {
  const ipt = new FakeIptables();
  const ticks = tickSleep(10_000);
  let flushes = 0;
  const monitor = startCanaryMonitor({
    ipt,
    tables: TABLES,
    intervalMs: 1000,
    onFlush: () => void flushes++,
    sleep: ticks.sleep,
  });
  await until(() => ipt.calls.filter((c) => c.op === "-S").length > 2, "polling");
  for (const t of TABLES) assert.ok(await ipt.chainExists(t, "KUBE-PROXY-CANARY"));
  assert.equal(flushes, 0);
  // A firewall reload: every table is flushed.
  for (const t of TABLES) await ipt.restore(`*${t}\nCOMMIT\n`, { noflush: false });
  await until(() => flushes === 1, "onFlush");
  await until(
    () => TABLES.every((t) => ipt.calls.filter((c) => c.op === "-N" && c.table === t).length >= 2),
    "re-create",
  );
  assert.ok(await ipt.chainExists("nat", "KUBE-PROXY-CANARY"));
  await monitor.stop();
  for (const t of TABLES) assert.equal(await ipt.chainExists(t, "KUBE-PROXY-CANARY"), false);
  assert.equal(flushes, 1);
});

test("only the first table is polled until it vanishes; inconsistent state is logged after the timeout", async () => {
  const ipt = new FakeIptables();
  const infos: string[] = [];
  let now = 0;
  let flushes = 0;
  const monitor = startCanaryMonitor({
    ipt,
    tables: TABLES,
    intervalMs: 1000,
    onFlush: () => void flushes++,
    sleep: (ms, signal) => {
      now += ms;
      return signal.aborted ? Promise.resolve() : new Promise<void>((r) => setImmediate(r));
    },
    now: () => now,
    log: { info: (_f, m) => void infos.push(m), error: () => undefined, debug: () => undefined },
  });
  await until(() => ipt.calls.filter((c) => c.op === "-S").length >= 3, "polling");
  assert.ok(ipt.calls.filter((c) => c.op === "-S").every((c) => c.table === "mangle"));
  await ipt.deleteChain("mangle", "KUBE-PROXY-CANARY");
  await until(() => flushes === 1, "onFlush");
  assert.deepEqual(infos, ["Inconsistent iptables state detected"]);
  await monitor.stop();
});

test("exit status 4 (xtables lock) is not taken as a flush; an aborted signal stops the loop", async () => {
  const ipt = new FakeIptables();
  let lockBusy = true;
  const original = ipt.chainExists.bind(ipt);
  ipt.chainExists = async (table, chain) => {
    if (lockBusy)
      throw new ExecError(["iptables"], 4, "Another app is currently holding the xtables lock", "exit");
    return original(table, chain);
  };
  const controller = new AbortController();
  let flushes = 0;
  const ticks = tickSleep(10_000);
  const monitor = startCanaryMonitor({
    ipt,
    tables: TABLES,
    intervalMs: 1,
    onFlush: () => void flushes++,
    sleep: ticks.sleep,
    signal: controller.signal,
  });
  const start = ticks.count();
  await until(() => ticks.count() > start + 20, "polls under lock contention");
  assert.equal(flushes, 0);
  lockBusy = false;
  controller.abort();
  await monitor.done;
  assert.equal(await ipt.chainExists("mangle", "KUBE-PROXY-CANARY"), false);
});
