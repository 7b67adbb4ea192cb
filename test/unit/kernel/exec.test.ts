import assert from "node:assert/strict";
import { test } from "node:test";
import { ExecError, ProcessRunner } from "../../../src/kernel/exec.ts";

const runner = new ProcessRunner();

/** ~3 MB in 3,000 pieces: many write groups, more than a pipe holds, so some writes wait for it. */
const pieces = Array.from({ length: 3000 }, (_, i) => `-A KUBE-SEP-${i} ${"x".repeat(1000)}\n`);

test("stdin given as pieces reaches the child as their concatenation, in order", async () => {
  const result = await runner.run(["cat"], { stdin: pieces, timeoutMs: 20_000 });
  assert.equal(result.stdout, pieces.join(""));
  assert.equal((await runner.run(["cat"], { stdin: [], timeoutMs: 5_000 })).stdout, "");
  assert.equal((await runner.run(["cat"], { stdin: ["a", "", "b\n"], timeoutMs: 5_000 })).stdout, "ab\n");
});

test("a child that stops reading early ends the write; its exit status decides", async () => {
  const head = await runner.run(["head", "-c", "10"], { stdin: pieces, timeoutMs: 20_000 });
  assert.equal(head.stdout, pieces.join("").slice(0, 10));
  assert.equal((await runner.run(["true"], { stdin: pieces, timeoutMs: 20_000 })).exitCode, 0);
  await assert.rejects(
    runner.run(
      [
        process.execPath,
        "-e",
        "process.stdin.once('data', () => { process.stderr.write('refused'); process.exit(3); })",
      ],
      { stdin: pieces, timeoutMs: 20_000 },
    ),
    (err: unknown) => err instanceof ExecError && err.exitCode === 3 && /refused/.test(err.stderr),
  );
});

test("a child that never reads its stdin is still killed by the timeout", async () => {
  await assert.rejects(
    runner.run(["sleep", "30"], { stdin: pieces, timeoutMs: 300 }),
    (err: unknown) => err instanceof ExecError && err.reason === "timeout",
  );
});
