/**
 * Golden-test plumbing for the iptables renderer: Kubernetes YAML → ProxyState through the real
 * model layer, and the set of Services that changed between two states (what upstream's change
 * trackers report as UpdatedServices).
 */
import { parseAllDocuments } from "yaml";
import type { IptablesSettings } from "../../src/backends/iptables/types.ts";
import { decodeEndpointSlice, decodeNode, decodeService } from "../../src/k8s/objects.ts";
import type { EndpointSlice, Node, Service } from "../../src/k8s/objects.ts";
import { buildProxyState } from "../../src/proxy/state.ts";
import type { FeatureGates } from "../../src/proxy/serviceport.ts";
import type { ProxyState } from "../../src/proxy/types.ts";

export class GoldenInputError extends Error {
  readonly code = "KPT_TEST_GOLDEN_INPUT";
}

/** Decode every document of a multi-document YAML file and build the model for `settings`. */
export function loadProxyState(
  yamlText: string,
  source: string,
  settings: IptablesSettings,
  featureGates?: Partial<FeatureGates>,
): ProxyState {
  const services: Service[] = [];
  const endpointSlices: EndpointSlice[] = [];
  let node: Node | null = null;
  for (const doc of parseAllDocuments(yamlText)) {
    if (doc.errors.length > 0) throw new GoldenInputError(`${source}: ${doc.errors[0]?.message}`);
    const raw = doc.toJS() as { kind?: unknown } | null;
    if (raw === null) continue;
    if (raw.kind === "Service") services.push(decodeService(raw, source));
    else if (raw.kind === "EndpointSlice") endpointSlices.push(decodeEndpointSlice(raw, source));
    else if (raw.kind === "Node") node = decodeNode(raw, source);
    else throw new GoldenInputError(`${source}: unexpected kind ${String(raw.kind)}`);
  }
  const { state, problems } = buildProxyState(
    { services, endpointSlices, node },
    { family: settings.family, nodeName: settings.nodeName, ...(featureGates ? { featureGates } : {}) },
  );
  if (problems.length > 0)
    throw new GoldenInputError(`${source}: ${problems.map((p) => p.message).join("; ")}`);
  return state;
}

function stable(value: unknown): string {
  return JSON.stringify(value, (_k, v: unknown) => (v instanceof Set ? [...(v as Set<string>)].sort() : v));
}

/** `ns/name` of each Service whose ServicePorts or endpoints differ between the two states. */
export function changedServiceNames(before: ProxyState, after: ProxyState): Set<string> {
  const signature = (state: ProxyState): Map<string, string> => {
    const parts = new Map<string, string[]>();
    const add = (key: string, text: string): void => {
      const [ns = "", rest = ""] = key.split("/");
      const service = `${ns}/${rest.split(":")[0] ?? ""}`;
      parts.set(service, [...(parts.get(service) ?? []), `${key}=${text}`]);
    };
    for (const [key, sp] of state.services) add(key, stable(sp));
    for (const [key, eps] of state.endpoints) add(key, stable(eps));
    return new Map([...parts].map(([s, p]) => [s, p.sort().join("\n")]));
  };
  const a = signature(before);
  const b = signature(after);
  const changed = new Set<string>();
  for (const name of new Set([...a.keys(), ...b.keys()])) if (a.get(name) !== b.get(name)) changed.add(name);
  return changed;
}
