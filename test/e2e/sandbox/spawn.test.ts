import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { ExecError } from "../../../src/kernel/exec.ts";
import { spawnBackground } from "../../../src/kernel/spawn.ts";

function nodeChild(code: string) {
  return spawnBackground([process.execPath, "-e", code]);
}

describe("background processes", () => {
  it("waits for a matching stdout line, then stops the child", async () => {
    const child = nodeChild(
      `console.log("warming"); setTimeout(() => console.log('{"listening":1}'), 100); setInterval(() => {}, 1000);`,
    );
    assert.equal(await child.waitForLine(/"listening"/, 10_000), '{"listening":1}');
    assert.ok(child.stdout.startsWith("warming\n"));
    await child.stop();
    assert.equal(child.running, false);
    await child.stop();
  });

  it("rejects with the child's status and stderr when it exits before the line", async () => {
    const child = nodeChild(`console.error("port 80 in use"); process.exit(3);`);
    const error = await child.waitForLine(/"listening"/, 10_000).then(
      () => assert.fail("resolved"),
      (caught: unknown) => caught,
    );
    assert.ok(error instanceof ExecError);
    assert.equal(error.exitCode, 3);
    assert.equal(error.reason, "exit");
    assert.match(error.message, /port 80 in use/);
  });

  it("rejects as a timeout when the line never comes, and SIGKILLs a child that ignores SIGTERM", async () => {
    const child = nodeChild(
      `process.on("SIGTERM", () => {}); console.log("up"); setInterval(() => {}, 1000);`,
    );
    await child.waitForLine(/^up$/, 10_000);
    await assert.rejects(child.waitForLine(/"listening"/, 200), (error: unknown) => {
      return error instanceof ExecError && error.reason === "timeout";
    });
    const started = Date.now();
    await child.stop(300);
    assert.equal(child.running, false);
    assert.ok(Date.now() - started < 5_000);
  });

  it("reports a binary that cannot be started", async () => {
    const child = spawnBackground(["/nonexistent/kpt-binary"]);
    await assert.rejects(child.waitForLine(/x/, 5_000), (error: unknown) => {
      return error instanceof ExecError && error.reason === "spawn";
    });
  });
});
