/** Test builders: raw API-shaped objects run through the real decoders. */
import { decodeEndpointSlice, decodeNode, decodeService } from "../../../src/k8s/objects.ts";
import type { EndpointSlice, Node, Service } from "../../../src/k8s/objects.ts";

type Raw = Record<string, unknown>;

export function svc(
  namespace: string,
  name: string,
  spec: Raw,
  status?: Raw,
  labels?: Record<string, string>,
): Service {
  return decodeService(
    { apiVersion: "v1", kind: "Service", metadata: { namespace, name, labels }, spec, status },
    "test",
  );
}

export interface EpSpec {
  addresses: string[];
  ready?: boolean;
  serving?: boolean;
  terminating?: boolean;
  nodeName?: string;
  zone?: string;
  zoneHints?: string[];
  nodeHints?: string[];
}

export function slice(
  namespace: string,
  name: string,
  service: string,
  addressType: "IPv4" | "IPv6" | "FQDN",
  endpoints: EpSpec[],
  ports: Raw[],
  extra: { labels?: Record<string, string>; annotations?: Record<string, string> } = {},
): EndpointSlice {
  return decodeEndpointSlice(
    {
      apiVersion: "discovery.k8s.io/v1",
      kind: "EndpointSlice",
      metadata: {
        namespace,
        name,
        labels: { "kubernetes.io/service-name": service, ...extra.labels },
        annotations: extra.annotations,
      },
      addressType,
      endpoints: endpoints.map((e) => ({
        addresses: e.addresses,
        conditions: { ready: e.ready, serving: e.serving, terminating: e.terminating },
        nodeName: e.nodeName,
        zone: e.zone,
        hints:
          e.zoneHints === undefined && e.nodeHints === undefined
            ? undefined
            : {
                forZones: e.zoneHints?.map((z) => ({ name: z })),
                forNodes: e.nodeHints?.map((n) => ({ name: n })),
              },
      })),
      ports,
    },
    "test",
  );
}

export function node(name: string, labels: Record<string, string> = {}): Node {
  return decodeNode({ apiVersion: "v1", kind: "Node", metadata: { name, labels } }, "test");
}
