import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { iptablesDrift } from "../../../src/backends/iptables/drift.ts";
import { diffCommand } from "../../../src/cli/diff.ts";
import { renderCommand } from "../../../src/cli/render.ts";
import { formatDrift, type DriftReport } from "../../../src/inspect/drift.ts";

const SEED = fileURLToPath(new URL("../../../examples/seed-nginx", import.meta.url));
const NODE = { hostnameOverride: "node-1", clusterCidr: "10.244.0.0/16" };
const SVC = "KUBE-SVC-2CMXP7HKUVJN7L6M";

const intended = await renderCommand({ ...NODE, nodeRuleset: true });

/** `intended` with a regex replaced; fails when it does not match, so no edit goes unnoticed. */
function edited(pattern: RegExp, by: string): string {
  assert.match(intended, pattern);
  return intended.replace(pattern, by);
}

const drift = (kernel: string): DriftReport => iptablesDrift(intended, kernel, "IPv4");

test("the same ruleset in the kernel's own spelling is in sync", () => {
  // What iptables-save prints for the rules the proxy wrote: /32, options reordered, MARK as
  // --set-xmark, probabilities with 11 digits.
  let kernel = edited(
    /^-A KUBE-SERVICES -m comment --comment "default\/nginx cluster IP" -m tcp -p tcp -d 10\.1\.125\.152 --dport 80 -j (\S+)$/m,
    '-A KUBE-SERVICES -d 10.1.125.152/32 -p tcp -m comment --comment "default/nginx cluster IP" -m tcp --dport 80 -j $1',
  );
  kernel = kernel.replace("-j MARK --or-mark 0x00004000", "-j MARK --set-xmark 0x4000/0x4000");
  kernel = kernel.replace("--probability 0.5000000000 ", "--probability 0.50000000000 ");
  assert.notEqual(kernel, intended);
  const report = drift(kernel);
  assert.deepEqual([report.inSync, report.differences, report.foreign], [true, 0, []]);
  assert.match(formatDrift(report), /^iptables IPv4: in sync/);
});

test("missing, extra and changed chains and rules, per Service; foreign rules and chains apart", () => {
  let kernel = intended;
  // An endpoint chain gone (declaration and rules), a stale chain of another Service left over.
  const sep = /^:(KUBE-SEP-HFAMVOFHUCEZFNLA) - \[0:0\]\n/m;
  kernel = kernel.replace(sep, "").replace(/^-A KUBE-SEP-HFAMVOFHUCEZFNLA .*\n/gm, "");
  kernel = kernel.replace(
    /^(:KUBE-SERVICES - \[0:0\]\n)(?=:KUBE-SVC)/m,
    "$1:KUBE-SVC-STALESTALESTALE1 - [0:0]\n",
  );
  kernel = kernel.replace(
    /^(-A KUBE-SVC-2CMXP7HKUVJN7L6M -m comment --comment "default\/nginx -> 10\.244\.0\.9:80" .*\n)/m,
    '$1-A KUBE-SVC-STALESTALESTALE1 -m comment --comment "other/gone:http -> 10.244.9.9:80" -j ACCEPT\n',
  );
  // (as the kernel would: a chain still jumped to cannot go, so its jump went first)
  kernel = kernel.replace(/^-A KUBE-SVC-2CMXP7HKUVJN7L6M .*-j KUBE-SEP-HFAMVOFHUCEZFNLA\n/m, "");
  // A rule of the Service's chain changed, and the masquerade jump in POSTROUTING removed.
  kernel = kernel.replace("--probability 0.5000000000", "--probability 0.2500000000");
  kernel = kernel.replace(/^-A POSTROUTING .*-j KUBE-POSTROUTING\n/m, "");
  // Someone else's rule in a built-in chain and their own chain: foreign, not drift.
  kernel = kernel.replace(/^(\*filter\n(?::.*\n)*)/m, "$1:CALICO-INPUT - [0:0]\n-A INPUT -j CALICO-INPUT\n");
  const report = drift(kernel);
  assert.equal(report.inSync, false);
  const byService = new Map(report.services.map((s) => [s.service, s.objects]));
  assert.deepEqual([...byService.keys()], [null, "default/nginx", "other/gone"]);
  assert.deepEqual(
    byService.get(null)?.map((o) => [o.table, o.name, o.change, o.missing.length, o.extra.length]),
    [["nat", "POSTROUTING", "changed", 1, 0]],
  );
  const nginx = byService.get("default/nginx") ?? [];
  const sepDrift = nginx.find((o) => o.name === "KUBE-SEP-HFAMVOFHUCEZFNLA");
  assert.deepEqual([sepDrift?.change, sepDrift?.missing.length], ["missing", 2]);
  const svc = nginx.find((o) => o.name === SVC);
  assert.equal(svc?.change, "changed");
  assert.match(svc?.missing[0] ?? "", /--probability 0\.5000000000/);
  assert.match(svc?.missing[1] ?? "", /-j KUBE-SEP-HFAMVOFHUCEZFNLA$/);
  assert.match(svc?.extra[0] ?? "", /--probability 0\.2500000000/);
  const stale = byService.get("other/gone")?.[0];
  assert.deepEqual([stale?.name, stale?.change], ["KUBE-SVC-STALESTALESTALE1", "extra"]);
  assert.deepEqual(
    report.foreign.map((f) => [f.kind, f.table, f.name, f.rule]),
    [
      ["rule", "filter", "INPUT", "-A INPUT -j CALICO-INPUT"],
      ["chain", "filter", "CALICO-INPUT", undefined],
    ],
  );
  // missing chain (1) + extra chain (1) + SVC (2 missing: old probability, the jump; 1 extra) + POSTROUTING jump (1)
  assert.equal(report.differences, 6);
  const text = formatDrift(report);
  assert.match(text, /Service default\/nginx:\n/);
  assert.match(text, /chain nat KUBE-SEP-HFAMVOFHUCEZFNLA: missing from the kernel/);
  assert.match(text, /foreign \(not the proxy's, left alone; not drift\): 2/);
});

test("the same rules in another order are reported as reordered", () => {
  const a =
    /^(-A KUBE-SVC-2CMXP7HKUVJN7L6M .*default\/nginx -> 10\.244\.0\.10:80.*\n)(-A KUBE-SVC-2CMXP7HKUVJN7L6M .*\n)/m;
  const report = drift(edited(a, "$2$1"));
  const [only] = report.services.flatMap((s) => s.objects);
  assert.deepEqual(
    [only?.name, only?.change, only?.reordered, report.differences],
    [SVC, "changed", true, 1],
  );
});

test("kube-proxy-ts diff: text and -o json against a dump", async () => {
  const dir = mkdtempSync(join(tmpdir(), "kpt-diff-"));
  try {
    const dump = join(dir, "kernel.txt");
    writeFileSync(dump, intended.replace(/^-A KUBE-SEP-HFAMVOFHUCEZFNLA .*DNAT.*\n/m, ""));
    const options = { ...NODE, filename: [SEED], ruleset: dump, ipFamily: "IPv4" };
    const text = await diffCommand(options);
    assert.match(text, /^kernel: dump .*kernel\.txt\nintended: rendered from .*seed-nginx for node node-1\n/);
    assert.match(text, /- missing: -A KUBE-SEP-HFAMVOFHUCEZFNLA .*-j DNAT --to-destination 10\.244\.0\.9:80/);
    const json = JSON.parse(await diffCommand({ ...options, output: "json" })) as {
      schema: string;
      reports: DriftReport[];
    };
    assert.equal(json.schema, "kube-proxy-ts/diff/v1");
    assert.deepEqual(
      json.reports.map((r) => [r.family, r.inSync, r.differences, r.services[0]?.service]),
      [["IPv4", false, 1, "default/nginx"]],
    );
    await assert.rejects(diffCommand({ ruleset: dump }), /needs the objects/);
    await assert.rejects(diffCommand({ filename: [SEED], ruleset: dump, ipFamily: "dual" }), /one IP family/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
