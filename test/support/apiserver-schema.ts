/**
 * Known fields of the served kinds, for server-side field validation (the fieldValidation query
 * parameter kubectl sends once the OpenAPI document says the server supports it). Only field
 * names are checked, not types or values: the real apiserver's decoding errors are wider.
 */

/** "any": an opaque subtree; "map": free-form keys (labels); otherwise the known fields. */
type Schema =
  "any" | "map" | { readonly fields: Readonly<Record<string, Schema>> } | { readonly items: Schema };

const obj = (fields: Record<string, Schema>): Schema => ({ fields });
const list = (items: Schema): Schema => ({ items });

const META = obj({
  name: "any",
  generateName: "any",
  namespace: "any",
  selfLink: "any",
  uid: "any",
  resourceVersion: "any",
  generation: "any",
  creationTimestamp: "any",
  deletionTimestamp: "any",
  deletionGracePeriodSeconds: "any",
  labels: "map",
  annotations: "map",
  ownerReferences: "any",
  finalizers: "any",
  managedFields: "any",
});

const SCHEMAS: Readonly<Record<string, Schema>> = {
  Service: obj({
    apiVersion: "any",
    kind: "any",
    metadata: META,
    spec: obj({
      type: "any",
      selector: "map",
      ports: list(
        obj({
          name: "any",
          protocol: "any",
          appProtocol: "any",
          port: "any",
          targetPort: "any",
          nodePort: "any",
        }),
      ),
      clusterIP: "any",
      clusterIPs: "any",
      externalIPs: "any",
      sessionAffinity: "any",
      sessionAffinityConfig: "any",
      loadBalancerIP: "any",
      loadBalancerSourceRanges: "any",
      loadBalancerClass: "any",
      allocateLoadBalancerNodePorts: "any",
      externalName: "any",
      externalTrafficPolicy: "any",
      internalTrafficPolicy: "any",
      healthCheckNodePort: "any",
      publishNotReadyAddresses: "any",
      ipFamilies: "any",
      ipFamilyPolicy: "any",
      trafficDistribution: "any",
    }),
    status: "any",
  }),
  EndpointSlice: obj({
    apiVersion: "any",
    kind: "any",
    metadata: META,
    addressType: "any",
    endpoints: list(
      obj({
        addresses: "any",
        conditions: obj({ ready: "any", serving: "any", terminating: "any" }),
        hostname: "any",
        targetRef: "any",
        nodeName: "any",
        zone: "any",
        hints: "any",
        deprecatedTopology: "any",
      }),
    ),
    ports: list(obj({ name: "any", protocol: "any", port: "any", appProtocol: "any" })),
  }),
  Node: obj({ apiVersion: "any", kind: "any", metadata: META, spec: "any", status: "any" }),
};

function walk(value: unknown, schema: Schema, path: string, out: string[]): void {
  if (schema === "any" || schema === "map" || value === null || typeof value !== "object") return;
  if ("items" in schema) {
    if (Array.isArray(value)) value.forEach((v, i) => walk(v, schema.items, `${path}[${i}]`, out));
    return;
  }
  if (Array.isArray(value)) return;
  for (const [key, v] of Object.entries(value)) {
    const child = schema.fields[key];
    const at = path === "" ? key : `${path}.${key}`;
    if (child === undefined) out.push(at);
    else walk(v, child, at, out);
  }
}

/** Paths of fields the kind does not have, in the apiserver's notation: "spec.ports[0].nme". */
export function unknownFields(kind: string, object: unknown): string[] {
  const schema = SCHEMAS[kind];
  if (schema === undefined) return [];
  const out: string[] = [];
  walk(object, schema, "", out);
  return out;
}
