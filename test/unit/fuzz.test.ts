/**
 * A bounded run of the fuzz campaign (test/fuzz/, `npm run fuzz` for the full one): a few
 * thousand adversarial objects and texts through the decoders, the manifests parser, the model
 * and both renderers. Any crash (a throw that is not a KubeProxyError), hang (one call over 2 s),
 * injection into rule text, refusal that does not name its object and field, model
 * inconsistency or YAML subset-parser disagreement fails it. The seed is fixed so that a failure
 * reproduces; KPT_FUZZ_SEED picks another.
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import { runCampaign } from "../fuzz/campaign.ts";
import { iptablesLineProblems, leakedStrings, nftLineProblems } from "../fuzz/checks.ts";

const SEED = Number(process.env["KPT_FUZZ_SEED"] ?? 20261203);
const RUNS = 5000;

test("the injection checks find what they look for", () => {
  const good = [
    '-A KUBE-SERVICES -m comment --comment "ns1/svc1:p80 cluster IP" -m tcp -p tcp -d 172.30.0.41 --dport 80 -j KUBE-SVC-XPGD46QRK7WJZT7O',
    "-A KUBE-SEP-SXIVWICOYRO3J4NJ -m comment --comment ns1/svc1:p80 -m tcp -p tcp -j DNAT --to-destination 10.180.0.1:80",
    ":KUBE-SERVICES - [0:0]",
  ];
  for (const line of good) assert.deepEqual(iptablesLineProblems(line), [], line);
  const bad = [
    '-A KUBE-SERVICES -m comment --comment "a"b" -j ACCEPT',
    "-A KUBE-SERVICES -d 10.0.0.1; -j ACCEPT",
    "-A KUBE-SERVICES -d 10.0.0.1 -x y",
    '-A KUBE-SERVICES -m comment --comment "a\\" -j ACCEPT',
    "-F",
    "-A KUBE-SERVICES -j ACCEPT junk",
    "-A KUBE-SEP-X -m comment --comment ns1/svc1 -j ACCEPT -m tcp -p tcp -j DNAT --to-destination 10.0.0.1:80",
  ];
  for (const line of bad) assert.notDeepEqual(iptablesLineProblems(line), [], line);
  assert.deepEqual(
    nftLineProblems(
      'add element ip kube-proxy no-endpoint-services { 172.30.0.41 . tcp . 80 comment "ns1/svc1:p80" : goto reject-chain }',
    ),
    [],
  );
  for (const line of [
    "flush ruleset",
    "add rule ip kube-proxy services ip daddr 10.0.0.1 # accept",
    'add rule ip kube-proxy services ip daddr "10.0.0.1" accept',
    `add element ip kube-proxy m { 1.2.3.4 . tcp . 80 comment "${"a".repeat(129)}" : drop }`,
  ])
    assert.notDeepEqual(nftLineProblems(line), [], line);
  assert.deepEqual(leakedStrings("-A X -d 10.0.0.1 -j ACCEPT --dport 80 -j Y", ["10.0.0.1 -j ACCEPT"]), [
    "10.0.0.1 -j ACCEPT",
  ]);
  assert.deepEqual(leakedStrings('-A X -m comment --comment "a b" -j Y', ["a b"]), []);
});

test(
  `${RUNS} adversarial objects: no crash, hang, injection, unnamed refusal or model inconsistency`,
  { timeout: 120_000 },
  () => {
    const report = runCampaign({ runs: RUNS, seed: SEED, hangMs: 2000 });
    const summary = {
      seed: report.seed,
      objects: report.objects,
      decoded: report.decodedObjects,
      refused: report.refusedObjects,
      renders: report.iptablesRenders + report.nftablesRenders,
      ...report.counts,
      seconds: Math.round(report.durationMs / 1000),
    };
    console.log(`fuzz: ${JSON.stringify(summary)}`);
    assert.ok(report.objects >= RUNS);
    assert.ok(report.decodedObjects > 0 && report.refusedObjects > 0, "both accepted and refused objects");
    assert.ok(report.iptablesRenders > 0 && report.nftablesRenders > 0, "rendered in both modes");
    assert.deepEqual(
      report.findings.map(({ wholeInput: _, ...shown }) => shown),
      [],
      `findings (seed ${report.seed}):\n${JSON.stringify(
        report.findings.map(({ wholeInput: _, ...shown }) => shown),
        null,
        2,
      )}`,
    );
    assert.deepEqual(
      Object.values(report.counts).reduce((a, b) => a + b, 0),
      0,
    );
  },
);
