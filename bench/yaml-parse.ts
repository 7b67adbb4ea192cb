/**
 * `node --import tsx bench/yaml-parse.ts [services] [endpoints]`: the standalone mode's manifest
 * parsing. Times parseYamlSubset (src/source/yaml-subset.ts) against yaml's parseAllDocuments +
 * toJS, and JSON.parse for scale, on the synthetic cluster written as multi-document YAML in both
 * styles: `yaml.stringify`'s (indented sequences) and kubectl's (sequences at the key's indent).
 * Defaults: 1,000 Services + 1,000 EndpointSlices of 10 endpoints, about 2.4 MB.
 */
import { isDeepStrictEqual } from "node:util";
import { parseAllDocuments, stringify } from "yaml";
import { parseYamlSubset } from "../src/source/yaml-subset.ts";
import { syntheticManifestObjects } from "./synthetic.ts";

/** The objects as one multi-document YAML file. */
export function manifestYaml(objects: readonly unknown[], kubectlStyle: boolean): string {
  return objects.map((o) => stringify(o, { indentSeq: !kubectlStyle })).join("---\n");
}

/** Best of `runs` timings in milliseconds, and the last result. */
function time<T>(runs: number, f: () => T): { ms: number; result: T } {
  let best = Infinity;
  let result = f();
  for (let r = 0; r < runs; r++) {
    const t0 = performance.now();
    result = f();
    best = Math.min(best, performance.now() - t0);
  }
  return { ms: best, result };
}

function main(): void {
  const services = Number(process.argv[2] ?? 1000);
  const endpoints = Number(process.argv[3] ?? 10);
  const objects = syntheticManifestObjects(services, endpoints);
  const json = JSON.stringify(objects);
  console.log(`${services} Services + ${services} EndpointSlices, ${endpoints} endpoints each`);
  console.log(
    "| style | MB | parseYamlSubset ms | yaml parseAllDocuments+toJS ms | JSON.parse ms | speed-up |",
  );
  console.log("|---|---|---|---|---|---|");
  for (const kubectlStyle of [false, true]) {
    const text = manifestYaml(objects, kubectlStyle);
    const fast = time(5, () => parseYamlSubset(text));
    const full = time(1, () => parseAllDocuments(text).map((d) => d.toJS() as unknown));
    const parsed = time(5, () => JSON.parse(json) as unknown);
    if (fast.result === null) throw new Error("parseYamlSubset fell back on the synthetic manifests");
    if (
      !isDeepStrictEqual(
        fast.result.map((d) => d.value),
        full.result,
      )
    )
      throw new Error("results differ");
    const mb = (Buffer.byteLength(text) / 1e6).toFixed(2);
    const row = [fast.ms, full.ms, parsed.ms].map((ms) => ms.toFixed(1));
    const speedup = (full.ms / fast.ms).toFixed(0);
    console.log(
      `| ${kubectlStyle ? "kubectl" : "yaml.stringify"} | ${mb} | ${row.join(" | ")} | ${speedup}x |`,
    );
  }
}

if (import.meta.url === `file://${process.argv[1]}`) main();
