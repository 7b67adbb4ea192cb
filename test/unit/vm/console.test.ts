import assert from "node:assert/strict";
import { test } from "node:test";
import { EMPTY_CONSOLE, bootFailure, consumeLine, recordOf, resultTree } from "../../vm/console.ts";
import type { ConsoleState } from "../../vm/console.ts";

const fold = (lines: readonly string[]): ConsoleState => lines.reduce(consumeLine, EMPTY_CONSOLE);
const exited = { code: 0, signal: null, timedOut: false };

test("a whole run: milestones, results nested by path, the end marker", () => {
  const state = fold([
    "[    0.000000] Linux version 6.1.0",
    "KPT-VM booted uptime=11.20\r",
    "KPT-VM modules-loaded uptime=13.05",
    'KPT-VM start {"path":["seed"]}',
    'KPT-VM start {"path":["seed","ClusterIP"]}',
    'KPT-VM diag {"message":"ipvsadm -Ln"}',
    'KPT-VM test {"path":["seed","ClusterIP"],"status":"pass","ms":812}',
    'KPT-VM diag {"message":"after the child"}',
    'KPT-VM test {"path":["seed"],"status":"fail","ms":900,"error":"AssertionError: 1 !== 2"}',
    'KPT-VM test {"path":["affinity"],"status":"skip","ms":0,"reason":"no ipvs mode"}',
    'KPT-VM diag {"message":"tests 3"}',
    "KPT-VM done rc=1 uptime=40.5",
  ]);
  assert.equal(state.bootedAt, 11.2);
  assert.equal(state.modulesLoadedAt, 13.05);
  assert.deepEqual(state.done, { rc: 1, uptime: 40.5 });
  assert.deepEqual(state.diagnostics.at(-1), { message: "tests 3" });
  assert.deepEqual(state.garbled, []);
  assert.equal(state.running, undefined);
  assert.deepEqual(state.diagnostics.slice(0, 2), [
    { path: ["seed", "ClusterIP"], message: "ipvsadm -Ln" },
    { path: ["seed"], message: "after the child" },
  ]);
  const tree = resultTree(state.results);
  assert.deepEqual(
    tree.map((n) => [n.result.path, n.result.status, n.children.map((c) => c.result.path.at(-1))]),
    [
      [["seed"], "fail", ["ClusterIP"]],
      [["affinity"], "skip", []],
    ],
  );
  assert.equal(tree[0]?.result.error, "AssertionError: 1 !== 2");
  assert.equal(tree[1]?.result.reason, "no ipvs mode");
  assert.equal(bootFailure(state, exited), undefined);
});

test("a marker in the middle of kernel output still counts; a broken one is reported", () => {
  const state = fold([
    '[   12.1] random: crng init done KPT-VM test {"path":["a"],"status":"pass","ms":1}',
    'KPT-VM test {"path":["b"],"sta',
  ]);
  assert.deepEqual(
    state.results.map((r) => r.path),
    [["a"]],
  );
  assert.deepEqual(state.garbled, ['KPT-VM test {"path":["b"],"sta']);
});

test("a hang says at which stage, and which test was running", () => {
  const limit = { code: null, signal: "SIGKILL", timedOut: true };
  assert.match(bootFailure(fold(["SeaBIOS"]), limit) ?? "", /before its init ran/);
  assert.match(bootFailure(fold(["KPT-VM booted uptime=3"]), limit) ?? "", /while loading kernel modules/);
  const hung = fold([
    "KPT-VM booted uptime=3",
    "KPT-VM modules-loaded uptime=4",
    'KPT-VM start {"path":["churn","under load"]}',
  ]);
  assert.match(
    bootFailure(hung, limit) ?? "",
    /stopped at its time limit before the test runner finished during "churn › under load"/,
  );
  assert.match(bootFailure(hung, { code: 1, signal: null, timedOut: false }) ?? "", /exited \(code 1/);
});

test("a subtest whose parent never finished is a root of its own", () => {
  const state = fold(['KPT-VM test {"path":["p","c"],"status":"pass","ms":1}']);
  assert.deepEqual(
    resultTree(state.results).map((n) => n.result.path),
    [["p", "c"]],
  );
});

test("a recorded file travels as a diagnostic: its name on the first line, its text after", () => {
  const line = `KPT-VM diag ${JSON.stringify({ message: "record node.dump\nTCP  10.1.0.100:80 rr\n" })}`;
  const state = consumeLine({ ...EMPTY_CONSOLE, running: ["t"] }, line);
  assert.deepEqual(recordOf(state.diagnostics[0]!.message), {
    name: "node.dump",
    text: "TCP  10.1.0.100:80 rr\n",
  });
  assert.equal(recordOf("recorded: ipset save\nx"), undefined);
  assert.equal(recordOf("record ../escape\nx"), undefined, "a name with a directory is refused");
});
