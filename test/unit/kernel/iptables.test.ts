import { test } from "node:test";
import assert from "node:assert/strict";
import fc from "fast-check";
import { ensureJumpRules, jumpRows } from "../../support/jumprules.ts";
import {
  Iptables,
  RestoreError,
  chainsFromSave,
  iptablesBinaries,
  jumpRuleArgs,
  parseIptablesVersion,
  parseRestoreErrorLine,
  quoteRuleArg,
  restoreErrorFor,
  restoreWaitFlagsFor,
  splitRuleArgs,
  waitFlagsFor,
} from "../../../src/kernel/iptables.ts";
import { FakeIptables } from "../../../src/kernel/fake.ts";
import { ScriptRunner } from "./script-runner.ts";

// Messages captured from iptables 1.8.9 inside a network namespace.
const LEGACY_PARSE = `iptables-restore v1.8.9 (legacy): unknown option "--bogus"
Error occurred at line: 6
Try \`iptables-restore -h' or 'iptables-restore --help' for more information.
`;
const LEGACY_COMMIT = "Ignoring deprecated --wait-interval option.\niptables-restore: line 5 failed\n";
const NFT_KERNEL = `iptables-nft-restore v1.8.9 (nf_tables): 
line 3: RULE_APPEND failed (Invalid argument): rule in chain KUBE-A
`;

test("parseRestoreErrorLine reads the legacy and nft message forms", () => {
  assert.equal(parseRestoreErrorLine(LEGACY_PARSE), 6);
  assert.equal(parseRestoreErrorLine(LEGACY_COMMIT), 5);
  assert.equal(parseRestoreErrorLine(NFT_KERNEL), 3);
  assert.equal(parseRestoreErrorLine("ip6tables-restore: line 12 failed"), 12);
  assert.equal(parseRestoreErrorLine("iptables-restore: unable to initialize table 'nat'"), null);
});

test("restoreErrorFor names the failing line and its neighbours", () => {
  const payload = [
    "*nat",
    ":A - [0:0]",
    "-A A -j B",
    "-A A -j C",
    "-A A -j D",
    "-A A -j E",
    "COMMIT",
    "",
  ].join("\n");
  const err = restoreErrorFor(["iptables-restore"], 2, LEGACY_PARSE, payload);
  assert.ok(err instanceof RestoreError);
  assert.equal(err.code, "KPT_IPTABLES_RESTORE");
  assert.equal(err.line, 6);
  assert.equal(err.lineText, "-A A -j E");
  assert.deepEqual(
    err.context.map((c) => c.line),
    [3, 4, 5, 6, 7, 8],
  );
  assert.match(err.message, /line 6: -A A -j E/);
  const unknown = restoreErrorFor(["iptables-restore"], 1, "boom", payload);
  assert.equal(unknown.line, null);
  assert.deepEqual(unknown.context, []);
});

test("version parsing and wait flags follow upstream thresholds", () => {
  assert.deepEqual(parseIptablesVersion("iptables v1.8.9 (nf_tables)\n"), [1, 8, 9]);
  assert.deepEqual(parseIptablesVersion("iptables-restore v1.6.2"), [1, 6, 2]);
  assert.equal(parseIptablesVersion("garbage"), null);
  assert.deepEqual(waitFlagsFor([1, 8, 9]), ["-w", "5", "-W", "100000"]);
  assert.deepEqual(waitFlagsFor([1, 6, 0]), ["-w", "5"]);
  assert.deepEqual(waitFlagsFor([1, 4, 21]), ["-w"]);
  assert.deepEqual(waitFlagsFor([1, 4, 19]), []);
  assert.deepEqual(restoreWaitFlagsFor([1, 6, 2], null), ["-w", "5", "-W", "100000"]);
  assert.deepEqual(restoreWaitFlagsFor([1, 6, 1], "iptables-restore v1.6.1"), ["-w"]);
  assert.deepEqual(restoreWaitFlagsFor([1, 6, 1], null), []);
});

test("binary names per family and backend", () => {
  assert.deepEqual(iptablesBinaries("IPv4", "nft"), {
    iptables: "iptables-nft",
    save: "iptables-nft-save",
    restore: "iptables-nft-restore",
  });
  assert.equal(iptablesBinaries("IPv6", "legacy").restore, "ip6tables-legacy-restore");
  assert.equal(iptablesBinaries("IPv6", "default").save, "ip6tables-save");
});

test("quoteRuleArg and splitRuleArgs round-trip any argv", () => {
  fc.assert(
    fc.property(fc.array(fc.string({ maxLength: 12 }), { maxLength: 8 }), (args) => {
      assert.deepEqual(splitRuleArgs(args.map(quoteRuleArg).join(" ")), args);
    }),
  );
  assert.deepEqual(splitRuleArgs('-m comment --comment "ns1/svc1:p80 cluster IP" -j KUBE-SVC-X'), [
    "-m",
    "comment",
    "--comment",
    "ns1/svc1:p80 cluster IP",
    "-j",
    "KUBE-SVC-X",
  ]);
});

test("chainsFromSave lists one table's chains in order", () => {
  const dump = `# Generated
*mangle
:PREROUTING ACCEPT [0:0]
:KUBE-PROXY-CANARY - [0:0]
COMMIT
*nat
:PREROUTING ACCEPT [0:0]
:KUBE-SERVICES - [0:0]
:KUBE-SVC-ABC - [0:0]
-A PREROUTING -j KUBE-SERVICES
COMMIT
`;
  assert.deepEqual(chainsFromSave(dump, "nat"), ["PREROUTING", "KUBE-SERVICES", "KUBE-SVC-ABC"]);
  assert.deepEqual(chainsFromSave(dump, "mangle"), ["PREROUTING", "KUBE-PROXY-CANARY"]);
  assert.deepEqual(chainsFromSave(dump, "filter"), []);
});

function scripted(
  extra: (argv: readonly string[]) => { exitCode?: number; stderr?: string; stdout?: string } | null,
) {
  return new ScriptRunner((argv) => {
    if (argv[1] === "--version") return { stdout: "iptables v1.8.9 (nf_tables)\n" };
    return extra(argv) ?? {};
  });
}

test("restore runs as upstream: wait flags, --noflush --counters, payload on stdin, netns", async () => {
  const runner = scripted(() => null);
  const ipt = new Iptables({ runner, family: "IPv4", backend: "nft", netns: "kpt-x" });
  await ipt.restore("*nat\nCOMMIT\n");
  const call = runner.calls.at(-1);
  assert.deepEqual(call?.argv, [
    "iptables-nft-restore",
    "-w",
    "5",
    "-W",
    "100000",
    "--noflush",
    "--counters",
  ]);
  assert.equal(call?.options.stdin, "*nat\nCOMMIT\n");
  assert.equal(call?.options.netns, "kpt-x");
  assert.ok((call?.options.timeoutMs ?? 0) > 0);
  await ipt.restore("x", { noflush: false, counters: false });
  assert.deepEqual(runner.calls.at(-1)?.argv, ["iptables-nft-restore", "-w", "5", "-W", "100000"]);
  assert.equal(runner.calls.filter((c) => c.argv[1] === "--version").length, 1, "version is probed once");
});

test("save runs the backend's save tool, -c only when counters are asked for, no version probe", async () => {
  const runner = scripted((argv) => ({ stdout: `out of ${argv.join(" ")}` }));
  const legacy6 = new Iptables({ runner, family: "IPv6", backend: "legacy", netns: "kpt-x" });
  assert.equal(await legacy6.save(), "out of ip6tables-legacy-save");
  assert.equal(await legacy6.save("nat"), "out of ip6tables-legacy-save -t nat");
  assert.equal(await legacy6.save(undefined, { counters: true }), "out of ip6tables-legacy-save -c");
  const nft = new Iptables({ runner, family: "IPv4", backend: "nft" });
  assert.equal(await nft.save("filter", { counters: true }), "out of iptables-nft-save -c -t filter");
  assert.equal(await nft.save("filter", { counters: false }), "out of iptables-nft-save -t filter");
  assert.deepEqual(
    runner.calls.map((c) => c.options.netns),
    ["kpt-x", "kpt-x", "kpt-x", undefined, undefined],
  );
  assert.ok(!runner.calls.some((c) => c.argv[1] === "--version"));
});

test("restore failure becomes a RestoreError with the blamed line", async () => {
  const runner = scripted((argv) =>
    argv[0]?.endsWith("-restore") ? { exitCode: 1, stderr: LEGACY_COMMIT } : null,
  );
  const ipt = new Iptables({ runner, family: "IPv6", backend: "legacy" });
  const payload = "*filter\n:KUBE-A - [0:0]\n:KUBE-B - [0:0]\n-A KUBE-A -j KUBE-B\n-X KUBE-B\nCOMMIT\n";
  await assert.rejects(ipt.restore(payload), (err: unknown) => {
    assert.ok(err instanceof RestoreError);
    assert.equal(err.line, 5);
    assert.equal(err.lineText, "-X KUBE-B");
    assert.equal(err.exitCode, 1);
    assert.equal(err.argv[0], "ip6tables-legacy-restore");
    return true;
  });
});

test("ensureChain treats exit 1 as existing; ensureRule checks before inserting", async () => {
  const existing = new Set<string>();
  const runner = scripted((argv) => {
    const op = argv[5];
    if (op === "-N") return existing.has("chain") ? { exitCode: 1 } : (existing.add("chain"), {});
    if (op === "-C") return existing.has("rule") ? {} : { exitCode: 1 };
    if (op === "-I") return (existing.add("rule"), {});
    return null;
  });
  const ipt = new Iptables({ runner, family: "IPv4" });
  assert.equal(await ipt.ensureChain("nat", "KUBE-SERVICES"), false);
  assert.equal(await ipt.ensureChain("nat", "KUBE-SERVICES"), true);
  assert.deepEqual(runner.calls.at(-1)?.argv, [
    "iptables",
    "-w",
    "5",
    "-W",
    "100000",
    "-N",
    "KUBE-SERVICES",
    "-t",
    "nat",
  ]);
  const args = ["-m", "comment", "--comment", "kubernetes service portals", "-j", "KUBE-SERVICES"];
  assert.equal(await ipt.ensureRule("prepend", "nat", "OUTPUT", args), false);
  assert.deepEqual(runner.calls.at(-1)?.argv, [
    "iptables",
    "-w",
    "5",
    "-W",
    "100000",
    "-I",
    "OUTPUT",
    "-t",
    "nat",
    ...args,
  ]);
  const before = runner.calls.length;
  assert.equal(await ipt.ensureRule("prepend", "nat", "OUTPUT", args), true);
  assert.equal(runner.calls.length, before + 1, "only the -C check runs when the rule exists");
});

test("ensureRule propagates unexpected -C failures", async () => {
  const runner = scripted((argv) => (argv[5] === "-C" ? { exitCode: 2, stderr: "bad" } : null));
  const ipt = new Iptables({ runner, family: "IPv4" });
  await assert.rejects(ipt.ensureRule("append", "filter", "INPUT", ["-j", "ACCEPT"]), /bad/);
});

const ROWS = jumpRows(
  "filter INPUT>KUBE-EXTERNAL-SERVICES",
  "filter INPUT>KUBE-NODEPORTS",
  "filter INPUT>KUBE-FIREWALL",
  "nat OUTPUT>KUBE-SERVICES",
);

test("jumpRuleArgs builds extraArgs, comment, jump; no comment match when empty", () => {
  assert.deepEqual(jumpRuleArgs(jumpRows("filter INPUT>KUBE-EXTERNAL-SERVICES")[0]!), [
    "-m",
    "conntrack",
    "--ctstate",
    "NEW",
    "-m",
    "comment",
    "--comment",
    "kubernetes externally-visible service portals",
    "-j",
    "KUBE-EXTERNAL-SERVICES",
  ]);
  assert.deepEqual(jumpRuleArgs(jumpRows("filter INPUT>KUBE-FIREWALL")[0]!), ["-j", "KUBE-FIREWALL"]);
});

test("ensureJumpRules prepends in list order (reverse order at chain top) and is idempotent", async () => {
  const ipt = new FakeIptables();
  await ipt.ensureRule("append", "filter", "INPUT", ["-j", "ACCEPT"]);
  await ensureJumpRules(ipt, ROWS);
  await ensureJumpRules(ipt, ROWS);
  assert.deepEqual(ipt.rules("filter", "INPUT"), [
    "-j KUBE-FIREWALL",
    '-m comment --comment "kubernetes health check service ports" -j KUBE-NODEPORTS',
    '-m conntrack --ctstate NEW -m comment --comment "kubernetes externally-visible service portals" -j KUBE-EXTERNAL-SERVICES',
    "-j ACCEPT",
  ]);
  assert.deepEqual(ipt.rules("nat", "OUTPUT"), [
    '-m comment --comment "kubernetes service portals" -j KUBE-SERVICES',
  ]);
  assert.ok(await ipt.chainExists("filter", "KUBE-FIREWALL"));
});

test("ensureJumpRules: one save and one restore per table on a clean host, only saves afterwards", async () => {
  const ipt = new FakeIptables();
  await ensureJumpRules(ipt, ROWS);
  const ops = (from: number) =>
    ipt.calls.slice(from).map((c) => `${c.op}${c.table === undefined ? "" : ` ${c.table}`}`);
  const tables = [...new Set(ROWS.map((r) => r.table))];
  assert.deepEqual(
    ops(0),
    tables.flatMap((t) => [`save ${t}`, "restore"]),
    "no per-row commands on a clean host",
  );
  const before = ipt.calls.length;
  await ensureJumpRules(ipt, ROWS);
  assert.deepEqual(
    ops(before),
    tables.map((t) => `save ${t}`),
    "steady state: nothing to add",
  );
});

test("ensureJumpRules checks rule by rule when a target chain exists but its jump is not in the dump", async () => {
  const ipt = new FakeIptables();
  await ipt.ensureChain("filter", "KUBE-NODEPORTS");
  await ensureJumpRules(ipt, ROWS);
  await ensureJumpRules(ipt, ROWS);
  const jumps = ipt.rules("filter", "INPUT").filter((r) => r.endsWith("-j KUBE-NODEPORTS"));
  assert.equal(jumps.length, 1, "added once, never duplicated");
  assert.ok(
    ipt.calls.some((c) => c.op === "-C"),
    "the uncertain table went through -C checks",
  );
});
