/**
 * Golden-test plumbing for nftables mode: Kubernetes YAML → ProxyState through the real model
 * layer, and upstream's way of comparing nftables output (`sortNFTablesTransaction` in
 * pkg/proxy/nftables/helpers_test.go): blank lines and comments dropped, object declarations
 * and elements sorted, rules grouped by chain keeping their order within the chain.
 */
import type { NftablesSettings } from "../../src/backends/nftables/types.ts";
import { buildProxyState } from "../../src/proxy/state.ts";
import type { ProxyState } from "../../src/proxy/types.ts";
import { parseManifests } from "../../src/source/manifests.ts";
import { GoldenInputError } from "./iptables-golden.ts";

export function loadNftablesState(yamlText: string, source: string, settings: NftablesSettings): ProxyState {
  const objects = parseManifests(yamlText, source);
  const node = objects.nodes.find((n) => n.metadata.name === settings.nodeName) ?? null;
  const { state, problems } = buildProxyState(
    { services: objects.services, endpointSlices: objects.endpointSlices, node },
    { family: settings.family, nodeName: settings.nodeName },
  );
  const all = [...objects.problems, ...problems];
  if (all.length > 0) throw new GoldenInputError(`${source}: ${all.map((p) => p.message).join("; ")}`);
  return state;
}

const ORDER = ["table", "set", "map", "chain", "rule", "element"];

/**
 * A dump or transaction in a canonical order, one command per line: declarations and elements
 * sorted, rules by chain name with each chain's rules in their original order.
 */
export function sortNFTablesDump(text: string): string {
  const objects: string[] = [];
  const elements: string[] = [];
  const rules = new Map<string, string[]>();
  for (const raw of text.split("\n")) {
    const line = raw.trim().replace(/\s+/g, " ");
    if (line === "" || line.startsWith("#")) continue;
    const m = /^add (table|set|map|chain|rule|element) (\S+) (\S+)(?: (\S+))?/.exec(line);
    if (m === null) throw new Error(`not a dump line: ${line}`);
    if (m[1] === "rule") rules.set(m[4]!, [...(rules.get(m[4]!) ?? []), line]);
    else if (m[1] === "element") elements.push(line);
    else objects.push(line);
  }
  const rank = (line: string): number => ORDER.indexOf(line.split(" ")[1]!);
  objects.sort((a, b) => rank(a) - rank(b) || (a < b ? -1 : a > b ? 1 : 0));
  const ruleLines = [...rules.keys()].sort().flatMap((chain) => rules.get(chain)!);
  return [...objects, ...ruleLines, ...elements.sort()].join("\n") + "\n";
}
