import assert from "node:assert/strict";
import { test } from "node:test";
import { ExecError, type ExecOptions, type ExecResult, type Runner } from "../../../src/kernel/exec.ts";
import { DummyDevice } from "../../../src/kernel/ip.ts";

/** `ip -j addr show` lists no kube-ipvs0; `ip link add` fails with the given stderr. */
function runner(addStderr: string): Runner {
  return {
    run(argv: readonly string[], _options?: ExecOptions): Promise<ExecResult> {
      if (argv.includes("addr"))
        return Promise.resolve({ argv, exitCode: 0, stdout: "[]", stderr: "", durationMs: 0 });
      return Promise.reject(new ExecError(argv, 2, addStderr, "exit"));
    },
  };
}

test("ensure: a device the other family's writer created in between is no error", async () => {
  assert.equal(await new DummyDevice(runner("RTNETLINK answers: File exists"), "kube-ipvs0").ensure(), true);
  await assert.rejects(
    new DummyDevice(runner("RTNETLINK answers: Operation not permitted"), "kube-ipvs0").ensure(),
    ExecError,
  );
});
