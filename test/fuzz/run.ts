/**
 * `npm run fuzz [-- --runs N --seed S --kernel-samples K --hang-ms MS --json FILE]`: the fuzz
 * campaign (./campaign.ts) over the decoders, the manifests parser, the model and both
 * renderers, then (as root, K > 0) a sample of the rendered payloads through the real
 * iptables-restore --test / nft -c in a throwaway network namespace. Exits 1 on any finding.
 * The `--json` report holds each kept finding's whole input (`wholeInput`), to replay it.
 */
import { execFileSync } from "node:child_process";
import { writeFileSync } from "node:fs";
import { parseArgs } from "node:util";
import { runCampaign } from "./campaign.ts";
import { checkInKernel } from "./kernel.ts";

const { values } = parseArgs({
  options: {
    runs: { type: "string", default: "100000" },
    seed: { type: "string" },
    "kernel-samples": { type: "string", default: "20" },
    "hang-ms": { type: "string", default: "2000" },
    json: { type: "string" },
  },
});
const runs = Number(values.runs);
const seed = values.seed === undefined ? Math.floor(Math.random() * 2 ** 31) : Number(values.seed);
const kernelSamples = process.getuid?.() === 0 ? Number(values["kernel-samples"]) : 0;
if (!Number.isInteger(runs) || runs <= 0 || !Number.isInteger(seed)) {
  console.error(
    "usage: npm run fuzz -- [--runs N] [--seed S] [--kernel-samples K] [--hang-ms MS] [--json FILE]",
  );
  process.exit(2);
}
let commit = "unknown";
try {
  commit = execFileSync("git", ["rev-parse", "--short", "HEAD"], { encoding: "utf8" }).trim();
} catch {
  // not a checkout
}

console.log(`fuzz: ${runs} objects, seed ${seed}, commit ${commit}, ${new Date().toISOString()}`);
let lastPrint = Date.now();
const report = runCampaign({
  runs,
  seed,
  hangMs: Number(values["hang-ms"]),
  kernelSamples,
  onProgress: (done, current) => {
    if (Date.now() - lastPrint < 15_000) return;
    lastPrint = Date.now();
    const r = current();
    console.log(
      `  ${done} objects, ${Math.round(r.durationMs / 1000)} s, findings ${JSON.stringify(r.counts)}`,
    );
  },
});

let kernelRefused = 0;
let kernelChecked = 0;
const kernelFindings: string[] = [];
if (kernelSamples > 0) {
  const { netns, verdicts } = checkInKernel(report.kernelSamples);
  kernelChecked = verdicts.length;
  for (const v of verdicts) {
    if (v.accepted) continue;
    kernelRefused++;
    kernelFindings.push(`${v.sample.mode} ${v.sample.family}: ${v.output}`);
  }
  console.log(`kernel: ${kernelChecked} payloads checked in ${netns} (deleted), ${kernelRefused} refused`);
}

const summary = {
  date: new Date().toISOString(),
  commit,
  seed: report.seed,
  objects: report.objects,
  cases: report.cases,
  texts: report.texts,
  decodedObjects: report.decodedObjects,
  refusedObjects: report.refusedObjects,
  manifestProblems: report.manifestProblems,
  iptablesRenders: report.iptablesRenders,
  nftablesRenders: report.nftablesRenders,
  renderRefusals: report.renderRefusals,
  renderedLines: report.renderedLines,
  rendersWithEndpoints: report.rendersWithEndpoints,
  ...report.counts,
  kernelChecked,
  kernelRefused,
  slowestCallMs: report.slowestCallMs,
  durationSeconds: Math.round(report.durationMs / 100) / 10,
};
console.log(JSON.stringify(summary, null, 2));
for (const f of report.findings)
  console.log(`\n[${f.category}] ${f.stage}: ${f.detail}\n  input: ${f.input}`);
for (const k of kernelFindings) console.log(`\n[kernel] ${k}`);
if (values.json !== undefined)
  writeFileSync(values.json, JSON.stringify({ summary, findings: report.findings, kernelFindings }, null, 2));
const bad = Object.values(report.counts).reduce((a, b) => a + b, 0) + kernelRefused;
process.exit(bad === 0 ? 0 : 1);
