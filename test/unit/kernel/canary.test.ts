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

/** A monitor on a clock that only sleeps move, logging its info lines. */
function clockedMonitor(ipt: FakeIptables) {
  const infos: string[] = [];
  const state = { now: 0, flushes: 0, flushedAt: [] as number[] };
  const monitor = startCanaryMonitor({
    ipt,
    tables: TABLES,
    intervalMs: 1000,
    onFlush: () => {
      state.flushes++;
      state.flushedAt.push(state.now);
    },
    sleep: (ms, signal) => {
      state.now += ms;
      return signal.aborted ? Promise.resolve() : new Promise<void>((r) => setImmediate(r));
    },
    now: () => state.now,
    log: { info: (_f, m) => void infos.push(m), error: () => undefined, debug: () => undefined },
  });
  return { monitor, infos, state };
}

test("every table is polled: a flush of nat alone reloads once, after the settle time, not the flush timeout", async () => {
  const ipt = new FakeIptables();
  const { monitor, infos, state } = clockedMonitor(ipt);
  await until(() => ipt.calls.filter((c) => c.op === "-S").length >= 6, "polling");
  assert.deepEqual(
    new Set(ipt.calls.filter((c) => c.op === "-S").map((c) => c.table)),
    new Set(TABLES),
    "every table's canary is checked",
  );
  // `iptables -t nat -F; iptables -t nat -X`
  await ipt.restore("*nat\nCOMMIT\n", { noflush: false });
  const flushedFrom = state.now;
  await until(() => state.flushes === 1, "onFlush");
  const waited = (state.flushedAt[0] ?? Infinity) - flushedFrom;
  assert.ok(waited <= 1000 + 600, `reloaded ${waited} ms after the flush: one poll and the settle time`);
  assert.deepEqual(infos, ["Inconsistent iptables state detected"]);
  await until(() => ipt.calls.filter((c) => c.op === "-N" && c.table === "nat").length >= 2, "re-create");
  assert.ok(await ipt.chainExists("nat", "KUBE-PROXY-CANARY"));
  await monitor.stop();
  assert.equal(state.flushes, 1);
});

test("a reload that flushes the tables one after another is waited for and reloads once", async () => {
  const ipt = new FakeIptables();
  const { monitor, infos, state } = clockedMonitor(ipt);
  await until(() => ipt.calls.filter((c) => c.op === "-S").length >= 3, "polling");
  await ipt.deleteChain("mangle", "KUBE-PROXY-CANARY");
  // The other tables go 300 ms apart, each within the settle time of the one before.
  const polls = () => ipt.calls.filter((c) => c.op === "-S").length;
  for (const table of ["nat", "filter"] as const) {
    const at = state.now + 300;
    await until(() => state.now >= at || state.flushes > 0, `${table} flush time`);
    assert.equal(state.flushes, 0, `no reload before ${table} is flushed`);
    await ipt.deleteChain(table, "KUBE-PROXY-CANARY");
    const seen = polls();
    await until(() => polls() > seen, "a poll after the flush");
  }
  await until(() => state.flushes === 1, "onFlush");
  assert.deepEqual(infos, [], "every canary went: a consistent flush");
  await monitor.stop();
  assert.equal(state.flushes, 1);
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
