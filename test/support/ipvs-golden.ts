/** Golden-test plumbing for ipvs mode: Kubernetes YAML → ProxyState through the real model layer. */
import type { IPFamily } from "../../src/ip.ts";
import { buildProxyState } from "../../src/proxy/state.ts";
import type { ProxyState } from "../../src/proxy/types.ts";
import { parseManifests } from "../../src/source/manifests.ts";
import { GoldenInputError } from "./iptables-golden.ts";

export function loadIpvsState(
  yamlText: string,
  source: string,
  family: IPFamily,
  nodeName: string,
): ProxyState {
  const objects = parseManifests(yamlText, source);
  const node = objects.nodes.find((n) => n.metadata.name === nodeName) ?? null;
  const { state, problems } = buildProxyState(
    { services: objects.services, endpointSlices: objects.endpointSlices, node },
    { family, nodeName },
  );
  const all = [...objects.problems, ...problems];
  if (all.length > 0) throw new GoldenInputError(`${source}: ${all.map((p) => p.message).join("; ")}`);
  return state;
}
