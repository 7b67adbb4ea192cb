import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, it } from "node:test";
import type { DriftReport } from "../../../src/inspect/drift.ts";
import { WEB, webManifests, withDaemonSandbox } from "../../support/daemon-sandbox.ts";
import { daemonArgv, endpointSlice, service, waitFor } from "../../support/daemon.ts";

/*
 * Seeing inside a live iptables-mode node (docs/drift.md): the daemon programs the Service `web`
 * (two endpoints); then the ruleset is tampered with as an operator or another tool would: one
 * rule of ours deleted, a rule added to one of our chains, a chain and a rule of someone else's.
 * `kube-proxy-ts diff` (text and -o json) against the live kernel and the daemon's own
 * /debug/kube-proxy-ts/ endpoints must report exactly the two differences, per Service, and the
 * foreign chain and rule as foreign; SIGUSR1 writes the same into a file; the next full sync
 * repairs the drift and counts it in kubeproxy_ts_sync_proxy_rules_drift_total{outcome}; a
 * transaction the kernel refuses is served at /debug/kube-proxy-ts/last-failure. The cases run
 * in order on one daemon.
 */

const NODE = WEB.node;
const SYNC_PERIOD_S = 2;
const ENDPOINT_B = `${WEB.pods["web-b"]}:80`;
/** The rule added to KUBE-SERVICES: ours by its chain, written by nobody. */
const EXTRA_RULE = ["-d", "10.1.0.99/32", "-p", "tcp", "-m", "tcp", "--dport", "80", "-j", "RETURN"];
const FOREIGN_CHAIN = "FOREIGN-AUDIT";

interface DiffJson {
  readonly schema: string;
  readonly reports: readonly DriftReport[];
}

describe("drift on a live iptables node: diff, the debug endpoints, SIGUSR1, the drift metric", () => {
  const dumpDir = mkdtempSync(join(tmpdir(), "kpt-debug-dump-"));
  const env = withDaemonSandbox({
    prefix: "kptdrift",
    daemon: {
      // The canary monitor polls at the sync period; no sync runs without a change.
      args: ["--iptables-sync-period", `${SYNC_PERIOD_S}s`],
      env: { KUBE_PROXY_TS_DEBUG_DIR: dumpDir },
      manifests: webManifests(),
    },
    teardown: () => rmSync(dumpDir, { recursive: true, force: true }),
  });

  const exec = async (argv: readonly string[]) => (await env.sandbox.exec(NODE, [...argv])).stdout;
  const iptables = (...args: string[]) => exec(["iptables", "-w", "5", ...args]);
  const diffCli = (...args: string[]) =>
    exec([
      ...daemonArgv(),
      "diff",
      "--manifests",
      env.daemon.dir,
      "--hostname-override",
      NODE,
      "--cluster-cidr",
      WEB.clusterCIDR,
      ...args,
    ]);
  const diffJson = async (): Promise<DiffJson> => JSON.parse(await diffCli("-o", "json")) as DiffJson;
  const debug = (path: string) =>
    exec([
      "curl",
      "-sS",
      "--fail",
      "--max-time",
      "10",
      `http://${env.daemon.metricsAddress}/debug/kube-proxy-ts/${path}`,
    ]);
  const debugJson = async <T>(path: string): Promise<T> => JSON.parse(await debug(path)) as T;
  const driftCount = async (outcome: "found" | "repaired"): Promise<number | undefined> => {
    const m = new RegExp(
      `^kubeproxy_ts_sync_proxy_rules_drift_total\\{ip_family="IPv4",outcome="${outcome}"\\} (\\d+)$`,
      "m",
    ).exec(await env.daemon.metrics());
    return m === null ? undefined : Number(m[1]);
  };
  /** The KUBE-SEP chain of web's second endpoint and its DNAT rule, as iptables-save prints it. */
  const endpointChain = async (): Promise<{ chain: string; rule: string }> => {
    const save = await env.daemon.save("IPv4", "nat");
    const rule = save.split("\n").find((l) => l.includes(`-j DNAT --to-destination ${ENDPOINT_B}`));
    assert.ok(rule !== undefined, save);
    return { chain: rule.split(" ")[1] ?? "", rule };
  };

  let tampered: { chain: string; rule: string } | undefined;

  it("an untouched node: diff and the daemon's diff say in sync; intended is the node's ruleset", async () => {
    const cli = await diffJson();
    assert.equal(cli.schema, "kube-proxy-ts/diff/v1");
    assert.equal(cli.reports.length, 1);
    const [report] = cli.reports;
    assert.deepEqual(
      {
        mode: report?.mode,
        family: report?.family,
        inSync: report?.inSync,
        differences: report?.differences,
      },
      { mode: "iptables", family: "IPv4", inSync: true, differences: 0 },
      JSON.stringify(report?.services, null, 2),
    );
    const text = await diffCli();
    assert.match(text, /^kernel: live \(iptables-(nft-|legacy-)?save; /m, text);
    assert.match(text, /^iptables IPv4: in sync \(the kernel holds what the proxy would write\)$/m, text);
    // The daemon runs both families (the node has ip6tables); the objects here are IPv4 only.
    const daemonDiff = await debugJson<DiffJson>("diff.json");
    assert.deepEqual(
      daemonDiff.reports.map((r) => [r.family, r.inSync, r.differences]),
      [
        ["IPv4", true, 0],
        ["IPv6", true, 0],
      ],
      JSON.stringify(daemonDiff, null, 2),
    );
    assert.match(await debug("diff"), /^iptables IPv4: in sync/m);
    const intended = await debug("intended");
    assert.match(intended, /^# IPv4$/m);
    assert.match(intended, /^-A PREROUTING .*-j KUBE-SERVICES$/m, "the jump rules are part of it");
    assert.match(
      intended,
      new RegExp(`^-A KUBE-SERVICES .*-d ${WEB.vip.replaceAll(".", "\\.")} .*-j KUBE-SVC-`, "m"),
    );
    assert.ok(intended.includes(`--to-destination ${ENDPOINT_B}`), intended);
    assert.deepEqual(await debugJson("last-failure"), { failures: [] });
  });

  it("tampered: a deleted rule, an extra rule in KUBE-SERVICES, a foreign chain and rule; both diffs report them alike", async () => {
    tampered = await endpointChain();
    await iptables("-t", "nat", "-D", tampered.chain, ...dnatArgs(tampered.rule));
    await iptables("-t", "nat", "-A", "KUBE-SERVICES", ...EXTRA_RULE);
    await iptables("-t", "nat", "-N", FOREIGN_CHAIN);
    await iptables("-t", "nat", "-A", FOREIGN_CHAIN, "-j", "RETURN");
    await iptables("-t", "nat", "-A", "PREROUTING", "-s", "198.51.100.0/24", "-j", FOREIGN_CHAIN);

    const [report] = (await diffJson()).reports;
    assert.ok(report !== undefined);
    assert.equal(report.inSync, false);
    assert.equal(report.differences, 2, JSON.stringify(report.services, null, 2));
    const objects = report.services.flatMap((s) =>
      s.objects.map((o) => ({
        service: s.service,
        name: o.name,
        change: o.change,
        missing: o.missing,
        extra: o.extra,
      })),
    );
    assert.deepEqual(
      objects.map((o) => [o.service, o.name, o.change, o.missing, o.extra.length]),
      [
        [null, "KUBE-SERVICES", "changed", [], 1],
        ["default/web", tampered.chain, "changed", objects[1]?.missing ?? [], 0],
      ],
      JSON.stringify(objects, null, 2),
    );
    assert.match(objects[0]?.extra[0] ?? "", /^-A KUBE-SERVICES -d 10\.1\.0\.99\/32 .*-j RETURN$/);
    // A missing rule is spelled as the proxy writes it (the kernel's own order differs).
    assert.equal(objects[1]?.missing.length, 1);
    assert.match(objects[1]?.missing[0] ?? "", missingDnat(tampered.chain));
    const byKind = (a: { kind: string }, b: { kind: string }) => a.kind.localeCompare(b.kind);
    assert.deepEqual(
      report.foreign.filter((f) => f.name === FOREIGN_CHAIN || f.rule?.includes(FOREIGN_CHAIN)).sort(byKind),
      [
        { kind: "chain", table: "nat", name: FOREIGN_CHAIN },
        {
          kind: "rule",
          table: "nat",
          name: "PREROUTING",
          rule: `-A PREROUTING -s 198.51.100.0/24 -j ${FOREIGN_CHAIN}`,
        },
      ],
      JSON.stringify(report.foreign),
    );

    const text = await diffCli();
    assert.match(text, /^iptables IPv4: 2 difference\(s\) in 2 place\(s\)$/m, text);
    assert.match(
      text,
      new RegExp(`^ {6}- missing: ${missingDnat(tampered.chain).source.slice(1)}`, "m"),
      text,
    );
    assert.match(text, /^ {6}\+ extra: {3}-A KUBE-SERVICES -d 10\.1\.0\.99\/32 .*-j RETURN$/m, text);
    assert.match(text, /^ {2}Service default\/web:$/m, text);
    assert.match(text, new RegExp(`^ {4}chain nat ${FOREIGN_CHAIN}$`, "m"), text);

    // The daemon compares the kernel with its own state: the same report.
    const own = (await debugJson<DiffJson>("diff.json")).reports.find((r) => r.family === "IPv4");
    assert.deepEqual(own?.services, report.services);
    assert.deepEqual(own?.foreign, report.foreign);
    assert.match(
      await debug("diff"),
      new RegExp(`- missing: ${missingDnat(tampered.chain).source.slice(1)}`, "m"),
    );
    // Nothing has been counted: the daemon compares only before a full sync.
    assert.equal((await driftCount("found")) ?? 0, 0);
  });

  it("SIGUSR1 writes the drift, the last failure and the intended ruleset into one file", async () => {
    const pid = env.daemon.pid;
    assert.ok(pid !== undefined);
    process.kill(pid, "SIGUSR1");
    const line = await waitFor(
      "the daemon to write its debug dump",
      async () => env.daemon.log.split("\n").find((l) => l.includes("Wrote the debug dump (SIGUSR1)")),
      10_000,
      () => env.daemon.logTail(),
    );
    const path = (JSON.parse(line) as { path: string }).path;
    assert.equal(path, join(dumpDir, `kube-proxy-ts-debug.${pid}.txt`));
    const dump = readFileSync(path, "utf8");
    const sections = dump.split(/^=== /m).map((s) => s.split("\n")[0]);
    assert.deepEqual(sections.slice(1), [
      "drift (the kernel against what the proxy would write now)",
      "last refused transaction",
      "intended ruleset",
    ]);
    assert.match(
      dump,
      new RegExp(`- missing: ${missingDnat(tampered?.chain ?? "?").source.slice(1)}`, "m"),
      dump,
    );
    assert.match(dump, /^no sync has failed$/m);
    assert.match(
      dump,
      new RegExp(`^-A KUBE-SERVICES .*-d ${WEB.vip.replaceAll(".", "\\.")} .*-j KUBE-SVC-`, "m"),
    );
  });

  it("the next full sync (the canary gone) repairs the drift and counts it found and repaired; the foreign chain stays", async () => {
    await iptables("-t", "mangle", "-X", "KUBE-PROXY-CANARY");
    await waitFor(
      "the drift to be counted found and repaired",
      async () => ((await driftCount("repaired")) === 2 ? true : undefined),
      SYNC_PERIOD_S * 1000 + 10_000,
      () => env.daemon.logTail(),
    );
    assert.equal(await driftCount("found"), 2);
    assert.match(
      env.daemon.log,
      /"differences":2,"services":\["\(node\)","default\/web"\].*Kernel rules drifted/,
    );
    const report = (await debugJson<DiffJson>("diff.json")).reports.find((r) => r.family === "IPv4");
    assert.equal(report?.inSync, true, JSON.stringify(report?.services));
    assert.ok(report.foreign.some((f) => f.kind === "chain" && f.name === FOREIGN_CHAIN));
    const nat = await env.daemon.save("IPv4", "nat");
    assert.ok(nat.includes(tampered?.rule ?? "?"), "the deleted rule is back");
    assert.doesNotMatch(nat, /10\.1\.0\.99/, "the extra rule is gone");
    assert.match(nat, new RegExp(`^-A PREROUTING -s 198\\.51\\.100\\.0/24 -j ${FOREIGN_CHAIN}$`, "m"));
    assert.equal((await diffJson()).reports[0]?.inSync, true);
    const served = await env.served(4);
    assert.deepEqual(served.errors, {}, env.daemon.logTail());
  });

  it("last-failure: a transaction the kernel refuses is served with its error and payload, until a sync succeeds", async () => {
    const { chain } = await endpointChain();
    // Someone else's rule jumps to web-b's endpoint chain: the sync that deletes it is refused.
    await iptables("-t", "nat", "-A", FOREIGN_CHAIN, "-d", "203.0.113.9/32", "-j", chain);
    const onlyA = [
      service({ name: "web", clusterIP: WEB.vip, ports: [{ name: "http", port: 80 }] }),
      endpointSlice({
        service: "web",
        endpoints: [{ ip: WEB.pods["web-a"], node: NODE, pod: "web-a" }],
        ports: [{ name: "http", port: 80 }],
      }),
    ];
    env.daemon.write("web.yaml", onlyA);
    interface Failure {
      family: string;
      fullSync: boolean;
      error: string;
      transaction: string | null;
      notCaptured: number;
    }
    const failures = await waitFor(
      "the refused sync at /debug/kube-proxy-ts/last-failure",
      async () => {
        const { failures } = await debugJson<{ failures: Failure[] }>("last-failure");
        return failures.length > 0 ? failures : undefined;
      },
      15_000,
      () => env.daemon.logTail(),
    );
    assert.equal(failures.length, 1);
    const [failure] = failures;
    assert.equal(failure?.family, "IPv4");
    assert.match(failure?.transaction ?? "", new RegExp(`^-X ${chain}$`, "m"), failure?.transaction ?? "");
    assert.match(failure?.transaction ?? "", /^\*nat$/m);
    assert.ok((failure?.error ?? "").length > 0);
    assert.ok(env.daemon.running, "a refused sync is not fatal");
    const dumpAfter = await debug("diff");
    assert.match(dumpAfter, /^iptables IPv4:/m);

    await iptables("-t", "nat", "-D", FOREIGN_CHAIN, "-d", "203.0.113.9/32", "-j", chain);
    await env.daemon.waitForRules(
      "the retried sync to delete web-b's endpoint chain",
      (save) => !save.includes(`:${chain} `),
      { timeoutMs: SYNC_PERIOD_S * 1000 + 15_000 },
    );
    const served = await env.served(4);
    assert.deepEqual(served.errors, {});
    assert.deepEqual(Object.keys(served.byPod), ["web-a"]);
    // The capture is kept for the operator after the recovery (it is the *last* failure).
    const { failures: kept } = await debugJson<{ failures: Failure[] }>("last-failure");
    assert.equal(kept.length, 1);
  });
});

/** The DNAT rule of `chain` to web-b, as the proxy writes it. */
function missingDnat(chain: string): RegExp {
  return new RegExp(`^-A ${chain} .*-j DNAT --to-destination ${ENDPOINT_B.replaceAll(".", "\\.")}$`);
}

/** The matches and target of an iptables-save `-A CHAIN …` line, as `iptables -D CHAIN` takes them. */
function dnatArgs(rule: string): string[] {
  const words = rule.split(" ").slice(2);
  const out: string[] = [];
  for (let i = 0; i < words.length; i++) {
    const word = words[i] ?? "";
    if (word.startsWith('"')) {
      let quoted = word;
      while (!quoted.endsWith('"') && i + 1 < words.length) quoted += ` ${words[++i] ?? ""}`;
      out.push(quoted.slice(1, -1));
    } else out.push(word);
  }
  return out;
}
