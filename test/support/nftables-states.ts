/** Random Service states for nftables property tests (unit and e2e), in either family. */
import fc from "fast-check";
import type { IPFamily } from "../../src/ip.ts";
import type { Endpoint, ProxyState, ServicePort } from "../../src/proxy/types.ts";
import { endpoint, proxyState, servicePort } from "./iptables-builders.ts";

export interface ServiceVariant {
  readonly nodePort: boolean;
  readonly externalIP: boolean;
  readonly lb: boolean;
  readonly sourceRanges: boolean;
  readonly affinity: boolean;
  readonly externalLocal: boolean;
  readonly internalLocal: boolean;
  readonly endpoints: readonly { readonly host: number; readonly local: boolean; readonly ready: boolean }[];
}

export const variantArb: fc.Arbitrary<ServiceVariant> = fc.record({
  nodePort: fc.boolean(),
  externalIP: fc.boolean(),
  lb: fc.boolean(),
  sourceRanges: fc.boolean(),
  affinity: fc.boolean(),
  externalLocal: fc.boolean(),
  internalLocal: fc.boolean(),
  endpoints: fc.uniqueArray(
    fc.record({ host: fc.integer({ min: 1, max: 5 }), local: fc.boolean(), ready: fc.boolean() }),
    {
      maxLength: 3,
      selector: (e) => e.host,
    },
  ),
});

/** Up to four Services, each present or not. */
export const stateArb = fc.array(fc.option(variantArb, { nil: null }), { minLength: 4, maxLength: 4 });

export function stateOf(variants: readonly (ServiceVariant | null)[], family: IPFamily = "IPv4"): ProxyState {
  const v6 = family === "IPv6";
  const entries: Array<[ServicePort, Endpoint[]]> = [];
  variants.forEach((v, i) => {
    if (v === null) return;
    const sp = servicePort({
      namespace: `ns${i}`,
      name: `svc${i}`,
      portName: "p80",
      clusterIP: v6 ? `fd00:10:96::${41 + i}` : `172.30.0.${41 + i}`,
      nodePort: v.nodePort || v.lb ? 3001 + i : 0,
      externalIPs: v.externalIP ? [v6 ? `2001:db8:99::${22 + i}` : `192.168.99.${22 + i}`] : [],
      loadBalancerVIPs: v.lb ? [v6 ? `2001:db8:1b::${4 + i}` : `1.2.3.${4 + i}`] : [],
      loadBalancerSourceRanges: v.lb && v.sourceRanges ? [v6 ? "2001:db8:f::/64" : "203.0.113.0/25"] : [],
      sessionAffinity: v.affinity ? { type: "ClientIP", maxAgeSeconds: 10800 } : null,
      externalPolicyLocal: v.externalLocal && (v.nodePort || v.lb || v.externalIP),
      internalPolicyLocal: v.internalLocal,
    });
    entries.push([
      sp,
      v.endpoints.map((e) =>
        endpoint(v6 ? `fd00:10::${i + 1}:${e.host}` : `10.180.${i}.${e.host}`, 80, {
          isLocal: e.local,
          ready: e.ready,
        }),
      ),
    ]);
  });
  return proxyState(entries, { family });
}
