/**
 * Golden-test plumbing for the iptables renderer: Kubernetes YAML → ProxyState through the real
 * model layer, and the set of Services that changed between two states (what upstream's change
 * trackers report as UpdatedServices).
 */
import type { IptablesSettings } from "../../src/backends/iptables/types.ts";
import { buildProxyState } from "../../src/proxy/state.ts";
import type { FeatureGates } from "../../src/proxy/serviceport.ts";
import type { ProxyState } from "../../src/proxy/types.ts";
import { parseManifests } from "../../src/source/manifests.ts";

export class GoldenInputError extends Error {
  readonly code = "KPT_TEST_GOLDEN_INPUT";
}

/**
 * Manifests → model for `settings`, exactly as the `render` path reads them. Golden inputs must
 * be clean: any skipped object is an error here, so a typo cannot silently shrink a golden.
 */
export function loadProxyState(
  yamlText: string,
  source: string,
  settings: IptablesSettings,
  featureGates?: Partial<FeatureGates>,
): ProxyState {
  const objects = parseManifests(yamlText, source);
  const node = objects.nodes.find((n) => n.metadata.name === settings.nodeName) ?? null;
  const { state, problems } = buildProxyState(
    { services: objects.services, endpointSlices: objects.endpointSlices, node },
    { family: settings.family, nodeName: settings.nodeName, ...(featureGates ? { featureGates } : {}) },
  );
  const all = [...objects.problems, ...problems];
  if (all.length > 0) throw new GoldenInputError(`${source}: ${all.map((p) => p.message).join("; ")}`);
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
