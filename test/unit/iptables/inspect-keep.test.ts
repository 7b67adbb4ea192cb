/**
 * The web view's iptables reader keeps a reading (iptables-save -c costs seconds at 10,000
 * Services, and the page's event stream asks every second): while it is young, the nf_tables
 * generation (iptables-nft) and the node's addresses are the same.
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import { iptablesInspectionSource, WEB_READING_MAX_AGE_MS } from "../../../src/backends/iptables/inspect.ts";
import type { ExecOptions, ExecResult, Runner } from "../../../src/kernel/exec.ts";
import { FakeClock } from "../../../src/proxy/clock.ts";

function fakeNode() {
  const state = { saves: 0, address: "10.1.2.3", generation: 7, generations: 0 };
  const runner: Runner = {
    run(argv: readonly string[], _options: ExecOptions = {}): Promise<ExecResult> {
      const stdout = JSON.stringify([{ addr_info: [{ local: state.address, prefixlen: 24 }] }]);
      return Promise.resolve({ argv, exitCode: 0, stdout, stderr: "", durationMs: 1 });
    },
  };
  const ipt = {
    save(): Promise<string> {
      state.saves++;
      return Promise.resolve(`save ${state.saves}`);
    },
  };
  const generation = (): Promise<number> => {
    state.generations++;
    return Promise.resolve(state.generation);
  };
  return { state, runner, ipt, generation };
}

test("iptables-nft: a reading is kept while the generation stays; a commit or its age ends it", async () => {
  const { state, runner, ipt, generation } = fakeNode();
  const clock = new FakeClock(0);
  const source = iptablesInspectionSource(runner, [ipt], undefined, { clock, generation });
  const dumps = async () => (await source.read()).dumps.join();
  assert.equal(await dumps(), "save 1");
  clock.advance(1000);
  assert.equal(await dumps(), "save 1", "same generation: not read again");
  assert.equal(state.generations, 2, "the generation is asked each time");
  state.generation = 8;
  assert.equal(await dumps(), "save 2", "a commit: read again at once");
  assert.equal(await dumps(), "save 2");
  clock.advance(WEB_READING_MAX_AGE_MS);
  assert.equal(await dumps(), "save 3", "too old: counters move without a commit");
  state.address = "10.1.2.4";
  const read = await source.read();
  assert.deepEqual(read, { mode: "iptables", dumps: ["save 4"], localAddresses: ["10.1.2.4"] });
});

test("legacy iptables (no generation): a reading is kept only a short while", async () => {
  const { state, runner, ipt } = fakeNode();
  const clock = new FakeClock(0);
  const source = iptablesInspectionSource(runner, [ipt], undefined, { clock, maxAgeMs: 2000 });
  await source.read();
  clock.advance(1999);
  await source.read();
  assert.equal(state.saves, 1);
  clock.advance(1);
  await source.read();
  assert.equal(state.saves, 2);
});

test("without keeping (trace, explain, the benchmarks) every read saves", async () => {
  const { state, runner, ipt } = fakeNode();
  const source = iptablesInspectionSource(runner, [ipt]);
  await source.read();
  await source.read();
  assert.equal(state.saves, 2);
});
