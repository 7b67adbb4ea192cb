import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtemp, mkdir, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import {
  ROUTE_LOCALNET,
  ensureSysctl,
  readSysctl,
  sysctlPath,
  SysctlError,
  writeSysctl,
} from "../../../src/kernel/sysctl.ts";
import { ensureNfacctCounter, parseNfacctList, readNfacctCounters } from "../../../src/kernel/nfacct.ts";
import { ScriptRunner } from "./script-runner.ts";
import { applyOomScoreAdj } from "../../../src/kernel/oom.ts";

test("sysctlPath accepts dotted and slash names", () => {
  assert.equal(sysctlPath("net.ipv4.conf.all.route_localnet"), "net/ipv4/conf/all/route_localnet");
  assert.equal(
    sysctlPath("/net/netfilter/nf_conntrack_tcp_be_liberal"),
    "net/netfilter/nf_conntrack_tcp_be_liberal",
  );
});

test("file-based read/write/ensure under a fake /proc/sys", async () => {
  const root = await mkdtemp(join(tmpdir(), "kpt-sysctl-"));
  try {
    await mkdir(join(root, "net/ipv4/conf/all"), { recursive: true });
    await writeFile(join(root, ROUTE_LOCALNET), "0\n");
    assert.equal(await readSysctl(ROUTE_LOCALNET, { procSysRoot: root }), "0");
    assert.equal(await ensureSysctl(ROUTE_LOCALNET, 1, { procSysRoot: root }), true);
    assert.equal(await readFile(join(root, ROUTE_LOCALNET), "utf8"), "1\n");
    assert.equal(await ensureSysctl("net.ipv4.conf.all.route_localnet", 1, { procSysRoot: root }), false);
    await writeSysctl(ROUTE_LOCALNET, 0, { procSysRoot: root });
    assert.equal(await readSysctl(ROUTE_LOCALNET, { procSysRoot: root }), "0");
  } finally {
    await rm(root, { recursive: true, force: true });
  }
});

test("netns variant goes through sysctl argv", async () => {
  const runner = new ScriptRunner((argv) => (argv[1] === "-n" ? { stdout: "0\n" } : {}));
  assert.equal(await ensureSysctl(ROUTE_LOCALNET, 1, { netns: "kpt-s", runner }), true);
  assert.deepEqual(
    runner.calls.map((c) => [c.argv.join(" "), c.options.netns]),
    [
      ["sysctl -n net/ipv4/conf/all/route_localnet", "kpt-s"],
      ["sysctl -w net/ipv4/conf/all/route_localnet=1", "kpt-s"],
    ],
  );
  await assert.rejects(readSysctl(ROUTE_LOCALNET, { netns: "kpt-s" }), /runner/);
});

test("nfacct: add ok, EBUSY means exists, other failures mark unavailable", async () => {
  let reply: { exitCode?: number; stderr?: string; spawnError?: boolean } = {};
  const runner = new ScriptRunner(() => reply);
  assert.equal(await ensureNfacctCounter(runner, "ct_state_invalid_dropped_pkts"), true);
  assert.deepEqual(runner.calls[0]?.argv, ["nfacct", "add", "ct_state_invalid_dropped_pkts"]);
  reply = { exitCode: 1, stderr: "nfacct v1.0.2: error: Device or resource busy\n" };
  assert.equal(await ensureNfacctCounter(runner, "x"), true);
  reply = { exitCode: 1, stderr: "nfacct v1.0.2: error: Operation not supported\n" };
  assert.equal(await ensureNfacctCounter(runner, "x"), false);
  const calls = runner.calls.length;
  assert.equal(await ensureNfacctCounter(runner, "n".repeat(32)), false, "too long for the kernel");
  assert.equal(runner.calls.length, calls);
  reply = { spawnError: true };
  assert.equal(await ensureNfacctCounter(runner, "x"), false);
  assert.equal(await readNfacctCounters(runner), null);
});

test("parseNfacctList reads captured output", async () => {
  const out =
    "{ pkts = 00000000000000000003, bytes = 00000000000000000252 } = ct_state_invalid_dropped_pkts;\n{ pkts = 00000000000000000000, bytes = 00000000000000000000 } = foo;\n";
  assert.deepEqual(parseNfacctList(out), [
    { name: "ct_state_invalid_dropped_pkts", packets: 3n, bytes: 252n },
    { name: "foo", packets: 0n, bytes: 0n },
  ]);
  const runner = new ScriptRunner(() => ({ stdout: out }));
  assert.equal((await readNfacctCounters(runner, { netns: "kpt-n" }))?.length, 2);
  assert.deepEqual(runner.calls[0]?.argv, ["nfacct", "list"]);
});

test("--oom-score-adj is written as upstream's oom.ApplyOOMScoreAdj does", async () => {
  const dir = await mkdtemp(join(tmpdir(), "kpt-oom-"));
  try {
    const path = join(dir, "oom_score_adj");
    await writeFile(path, "0\n");
    await applyOomScoreAdj(-999, path);
    assert.equal(await readFile(path, "utf8"), "-999\n");
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test("a sysctl that cannot be written is a SysctlError naming it, the value and the reason", async () => {
  const root = await mkdtemp(join(tmpdir(), "kpt-sysctl-"));
  try {
    // No such knob: the unreadable value counts as different (as upstream), the write fails.
    await assert.rejects(
      ensureSysctl("net/netfilter/nf_conntrack_udp_timeout", 30, { procSysRoot: root }),
      (err: unknown) =>
        err instanceof SysctlError &&
        err.code === "KPT_SYSCTL" &&
        /^failed to set sysctl net\/netfilter\/nf_conntrack_udp_timeout to 30: ENOENT/.test(err.message),
    );
  } finally {
    await rm(root, { recursive: true, force: true });
  }
});
