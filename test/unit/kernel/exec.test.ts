import assert from "node:assert/strict";
import { test } from "node:test";
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { setImmediate as nextTurn } from "node:timers/promises";
import { ProcessRunner } from "../../../src/kernel/exec.ts";

const runner = new ProcessRunner();

test("stdin from an async iterable is written piece by piece, with backpressure", async () => {
  const piece = "x".repeat(64 * 1024 - 1) + "\n";
  let produced = 0;
  async function* input() {
    for (let i = 0; i < 32; i++) {
      produced++;
      if (i % 4 === 0) await nextTurn();
      yield piece;
    }
  }
  const result = await runner.run(["cat"], { stdin: input(), timeoutMs: 10_000 });
  assert.equal(produced, 32);
  assert.equal(result.stdout, piece.repeat(32), "2 MiB through a 64 KiB pipe, in order");
});

test("an iterable that throws kills the child before stdin is closed and rejects with its error", async () => {
  const marker = join(mkdtempSync(join(tmpdir(), "kpt-exec-")), "eof-reached");
  async function* input() {
    yield "first line\n";
    await nextTurn();
    throw new Error("render failed at Service 5");
  }
  // The child writes the marker only once its stdin ends: a kill must come first.
  const script = `import sys; sys.stdin.read(); open(${JSON.stringify(marker)}, "w").write("x")`;
  await assert.rejects(runner.run(["python3", "-c", script], { stdin: input(), timeoutMs: 10_000 }), {
    message: "render failed at Service 5",
  });
  await new Promise((resolve) => setTimeout(resolve, 200));
  assert.equal(existsSync(marker), false, "the child never saw the end of its input");
  rmSync(dirname(marker), { recursive: true, force: true });
});

test("a child that exits early stops the writer without hanging", async () => {
  async function* endless() {
    for (let i = 0; i < 10_000; i++) yield "y".repeat(4096);
  }
  await assert.rejects(runner.run(["sh", "-c", "head -c 10 >/dev/null; exit 3"], { stdin: endless() }), {
    exitCode: 3,
  });
});
