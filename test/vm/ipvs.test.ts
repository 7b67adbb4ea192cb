/*
 * `npm run test:ipvs`: the ipvs-mode suite, which needs a kernel with IPVS and therefore a VM (the
 * development and CI kernel has none). Builds the image (cached: scripts/vm/build-image.sh), boots
 * it once, and turns every result the guest's one node:test runner printed on the serial console
 * into a test here, with the guest's own names, nesting, skips and failure messages. A boot that
 * hangs or dies fails within bounded time, naming the stage and showing the last console lines.
 *
 * KPT_VM_ONLY=<pattern> runs only the guest tests whose names match (node's --test-name-pattern);
 * KPT_VM_ACCEL=tcg|kvm overrides the accelerator choice; KPT_VM_RECORD=<dir> writes the files the
 * guest recorded (`record NAME` diagnostics: the node dumps of test/fixtures/ipvs/) into that folder.
 */
import assert from "node:assert/strict";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { test } from "node:test";
import type { TestContext } from "node:test";
import { bootFailure, recordOf, resultTree } from "./console.ts";
import type { ResultTree } from "./console.ts";
import { boot, buildImage, preferredAccel } from "./qemu.ts";
import type { Accel, Limits, VmImage, VmRun } from "./qemu.ts";

const LIMITS: Limits = {
  buildMs: 20 * 60_000,
  bootMs: 180_000,
  silenceMs: 300_000,
  totalMs: Number(process.env.KPT_VM_TIMEOUT_S ?? 1500) * 1000,
};

const only = process.env.KPT_VM_ONLY;
if (only !== undefined && !/^[^\s"]+$/.test(only))
  throw new Error("KPT_VM_ONLY: a pattern without spaces or quotes");
const cmdline = only === undefined ? [] : [`KPT_VM_ONLY=${only}`];
const recordDir = process.env.KPT_VM_RECORD;

let image: VmImage | undefined;
let buildError: unknown;
try {
  image = await buildImage(LIMITS);
} catch (error) {
  buildError = error;
}

let run: VmRun | undefined;
if (image !== undefined) {
  const chosen = (process.env.KPT_VM_ACCEL as Accel | undefined) ?? preferredAccel();
  run = await boot(image, chosen, cmdline, LIMITS);
  // A KVM that is only emulated in software pauses or dies on real guests: fall back to TCG.
  if (chosen === "kvm" && run.state.bootedAt === undefined) run = await boot(image, "tcg", cmdline, LIMITS);
}

function consoleTail(r: VmRun): string {
  return `\n--- last console lines (${r.accel}) ---\n${r.tail.join("\n")}`;
}

test("ipvs VM: the image builds from Debian packages", (t) => {
  if (buildError !== undefined) throw buildError;
  assert.ok(image);
  t.diagnostic(`image ready in ${image.buildMs} ms: ${image.vmlinux}, ${image.initrd}`);
});

test("ipvs VM: boots, loads its modules and runs the guest suite to the end", (t) => {
  if (run === undefined) return t.skip("no image");
  const failure = bootFailure(run.state, run.exit);
  if (failure !== undefined)
    assert.fail(`${failure}${run.exit.why === undefined ? "" : `: ${run.exit.why}`}${consoleTail(run)}`);
  assert.deepEqual(run.state.modulesFailed, [], "modules that failed to load");
  assert.deepEqual(run.state.garbled, [], "console marker lines that did not parse");
  const failed = run.state.results.some((r) => r.status === "fail");
  assert.ok(
    run.state.done?.rc === 0 || failed,
    `the guest runner exited ${run.state.done?.rc} with no failing test${consoleTail(run)}`,
  );
  assert.ok(run.state.results.length > 0, `the guest reported no test${consoleTail(run)}`);
  const s = run.state;
  t.diagnostic(
    `${run.accel}: wall ${run.wallMs} ms; guest uptime at init ${s.bootedAt} s, modules loaded ${s.modulesLoadedAt} s, suite done ${s.done?.uptime} s`,
  );
});

async function mirror(t: TestContext, node: ResultTree): Promise<void> {
  const key = JSON.stringify(node.result.path);
  for (const d of run?.state.diagnostics ?? []) {
    if (JSON.stringify(d.path) !== key) continue;
    const record = recordOf(d.message);
    if (record === undefined) {
      t.diagnostic(d.message);
      continue;
    }
    const lines = record.text.split("\n").length - 1;
    if (recordDir === undefined) {
      t.diagnostic(`recorded ${record.name}: ${lines} lines (KPT_VM_RECORD=DIR writes it)`);
    } else {
      writeFileSync(join(recordDir, record.name), record.text);
      t.diagnostic(`recorded ${record.name}: ${lines} lines, written to ${join(recordDir, record.name)}`);
    }
  }
  for (const child of node.children) {
    await t.test(child.result.path.at(-1)!, (c) => mirror(c, child));
  }
  const r = node.result;
  if (r.status === "skip") return t.skip(r.reason ?? "skipped in the guest");
  if (r.status === "todo") return t.todo(r.reason ?? "todo in the guest");
  if (r.status === "fail") {
    assert.fail(`(in the VM, ${r.ms} ms) ${r.error ?? "failed"}`);
  }
}

for (const root of run === undefined ? [] : resultTree(run.state.results)) {
  test(`ipvs VM › ${root.result.path.join(" › ")}`, (t) => mirror(t, root));
}
