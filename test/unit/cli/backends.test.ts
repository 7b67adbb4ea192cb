import assert from "node:assert/strict";
import { test } from "node:test";
import { pino } from "pino";
import {
  availableModes,
  backendFor,
  cleanupModes,
  MODES,
  modesToCleanAtStart,
} from "../../../src/backends/index.ts";
import { ourTables } from "../../../src/backends/nftables/cleanup.ts";
import { defaultConfiguration } from "../../../src/config/types.ts";
import type { ExecOptions, ExecResult, Runner } from "../../../src/kernel/exec.ts";
import { ExecError } from "../../../src/kernel/exec.ts";
import { parseTableList } from "../../../src/kernel/nft.ts";

test("the registry knows every --proxy-mode and says which it can run", async () => {
  assert.deepEqual(MODES, ["iptables", "nftables", "ipvs"]);
  assert.deepEqual(availableModes(), ["iptables", "nftables", "ipvs"]);
  assert.equal((await backendFor("iptables")).mode, "iptables");
  assert.equal((await backendFor("nftables")).mode, "nftables");
  assert.equal((await backendFor("ipvs")).mode, "ipvs");
});

test("start-up cleanup follows upstream's platformCleanup", () => {
  assert.deepEqual(modesToCleanAtStart("iptables"), ["nftables"]);
  assert.deepEqual(modesToCleanAtStart("ipvs"), ["nftables"]);
  assert.deepEqual(modesToCleanAtStart("nftables"), ["iptables", "ipvs"]);
});

test("nftables cleanup deletes only ip/ip6 kube-proxy tables", async () => {
  const listing =
    "table ip nat\ntable ip kube-proxy\ntable inet kube-proxy\ntable ip6 kube-proxy\ntable ip kube-proxy-x\n";
  assert.deepEqual(ourTables(parseTableList(listing)), [
    { family: "ip", name: "kube-proxy" },
    { family: "ip6", name: "kube-proxy" },
  ]);
  const calls: string[] = [];
  const runner: Runner = {
    run(argv: readonly string[], _options?: ExecOptions): Promise<ExecResult> {
      calls.push(argv.join(" "));
      if (argv.includes("ip6"))
        return Promise.reject(new ExecError([...argv], 1, "Operation not permitted", "exit"));
      return Promise.resolve({
        argv,
        exitCode: 0,
        stdout: argv[1] === "list" ? listing : "",
        stderr: "",
        durationMs: 1,
      });
    },
  };
  const [report] = await cleanupModes(["nftables"], {
    config: defaultConfiguration(),
    runner,
    log: pino({ level: "silent" }),
  });
  assert.deepEqual(calls, [
    "nft list tables",
    "nft delete table ip kube-proxy",
    "nft delete table ip6 kube-proxy",
  ]);
  assert.equal(report?.errors.length, 1, "the failed delete is reported, the rest goes on");
});

test("nftables cleanup on a node without nft finds nothing to do", async () => {
  const runner: Runner = {
    run: (argv) => Promise.reject(new ExecError([...argv], null, "", "spawn")),
  };
  const reports = await cleanupModes(["nftables", "ipvs"], {
    config: defaultConfiguration(),
    runner,
    log: pino({ level: "silent" }),
  });
  assert.deepEqual(reports, [
    { mode: "nftables", errors: [] },
    { mode: "ipvs", errors: [] },
  ]);
});
