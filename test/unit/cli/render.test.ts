import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { test } from "node:test";
import { renderCommand } from "../../../src/cli/render.ts";
import { InputError } from "../../../src/errors.ts";
import { sortIPTablesRules } from "../../support/iptables-normalise.ts";

const golden = new URL("../../golden/iptables/SyncProxyRulesRepeated/", import.meta.url);

test("render with no -f shows the seed's nginx Service: 50% statistic rule and two DNAT endpoints", async () => {
  const out = await renderCommand({});
  assert.match(
    out,
    /-A KUBE-SERVICES -m comment --comment "default\/nginx cluster IP" -m tcp -p tcp -d 10\.1\.125\.152 --dport 80 -j KUBE-SVC-/,
  );
  assert.match(out, /-m statistic --mode random --probability 0\.5000000000 -j KUBE-SEP-/);
  const dnat = out.split("\n").filter((l) => l.includes("-j DNAT"));
  assert.deepEqual(dnat.map((l) => l.replace(/.*--to-destination /, "")).sort(), [
    "10.244.0.10:80",
    "10.244.0.9:80",
  ]);
  assert.equal(new Set(dnat.map((l) => l.split(" ")[1])).size, 2, "two distinct KUBE-SEP chains");
  assert.match(
    out,
    /-A KUBE-NODEPORTS -m comment --comment default\/nginx -m tcp -p tcp --dport 30978 -j KUBE-EXT-/,
  );
  assert.ok(out.endsWith("COMMIT\n"));
});

test("render --upstream-test-settings reproduces upstream's first TestSyncProxyRulesRepeated sync", async () => {
  const out = await renderCommand({
    filename: [new URL("1-initial.yaml", golden).pathname],
    upstreamTestSettings: true,
  });
  const expected = readFileSync(new URL("1-initial.expected.txt", golden), "utf8")
    .replace(/^(#.*\n)+/, "")
    .trimStart();
  assert.equal(sortIPTablesRules(out), expected);
});

test("render refuses invalid objects, naming object and field, and prints nothing", async () => {
  const bad = new URL("./fixtures/bad-service.yaml", import.meta.url).pathname;
  await assert.rejects(renderCommand({ filename: [bad] }), (err: unknown) => {
    assert.ok(err instanceof InputError);
    assert.match(err.message, /spec\.ports\[0\]\.port/);
    return true;
  });
});

test("render --skip-invalid renders the valid objects only", async () => {
  const bad = new URL("./fixtures/bad-service.yaml", import.meta.url).pathname;
  const out = await renderCommand({ filename: [bad], skipInvalid: true, hostnameOverride: "n" });
  assert.match(out, /ns1\/good:p80 cluster IP/);
  assert.doesNotMatch(out, /ns1\/bad/);
});

test("render rejects an unreadable path and an unknown --ip-family", async () => {
  await assert.rejects(renderCommand({ filename: ["/nonexistent/kpt"] }), InputError);
  await assert.rejects(renderCommand({ ipFamily: "IPv5" }), /--ip-family/);
});

test("render of a dual-stack Service prints one payload per family", async () => {
  const dual = new URL("./fixtures/dual-stack.yaml", import.meta.url).pathname;
  const out = await renderCommand({ filename: [dual], hostnameOverride: "n" });
  const sections = out.split(/^# /m).filter((s) => s !== "");
  assert.equal(sections.length, 2);
  assert.match(sections[0]!, /^iptables-restore payload \(IPv4\)[\s\S]*-d 10\.96\.0\.10 /);
  assert.match(sections[1]!, /^ip6tables-restore payload \(IPv6\)[\s\S]*-d fd00:10:96::a /);
  assert.doesNotMatch(sections[1]!, /KUBE-FIREWALL -m comment/, "no localhost NodePort rule on IPv6");
});
