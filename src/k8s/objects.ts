/**
 * The subset of Kubernetes API objects kube-proxy reads (Service core/v1, EndpointSlice
 * discovery.k8s.io/v1, Node core/v1) and their decoders. Decoders are lenient about fields we do
 * not use (real objects carry many) and strict about the ones we do: anything that could end up
 * in a rule (names, ports, protocols) is validated here, so nothing unvalidated reaches the
 * kernel. Addresses are kept as strings: upstream drops unparseable IPs silently at use time
 * instead of rejecting the object, and so do we (src/proxy/serviceport.ts, endpoints.ts).
 */
import {
  array,
  boolean,
  checked,
  DecodeFailure,
  type Decoder,
  failAt,
  integer,
  isRecord,
  matching,
  object,
  oneOf,
  optional,
  refine,
  string,
  stringMap,
} from "./decode.ts";
import { InvalidObjectError } from "../errors.ts";
import { familyOf, formatCIDR, parseCIDRSloppy, parseIPSloppy, parseNetwork } from "../ip.ts";
import type { IPFamily } from "../ip.ts";
import type { Protocol } from "../proxy/types.ts";

export interface ObjectMeta {
  readonly name: string;
  /** "" for cluster-scoped objects (Node). */
  readonly namespace: string;
  readonly uid: string;
  readonly resourceVersion: string;
  readonly labels: Readonly<Record<string, string>>;
  readonly annotations: Readonly<Record<string, string>>;
  readonly deletionTimestamp: string | null;
}

/** `spec.type`; "" when absent (never from an API server, which defaults it to ClusterIP). */
export type ServiceType = "ClusterIP" | "NodePort" | "LoadBalancer" | "ExternalName" | "";
export type TrafficPolicy = "Cluster" | "Local";
export type LoadBalancerIPMode = "VIP" | "Proxy";

export interface ServiceSpecPort {
  /** "" for an unnamed port. */
  readonly name: string;
  readonly protocol: Protocol;
  readonly port: number;
  /** 0 = none. */
  readonly nodePort: number;
}

export interface LoadBalancerIngress {
  readonly ip: string;
  readonly hostname: string;
  readonly ipMode: LoadBalancerIPMode | null;
}

export interface ServiceSpec {
  readonly type: ServiceType;
  readonly clusterIP: string;
  readonly clusterIPs: readonly string[];
  readonly ipFamilies: readonly IPFamily[];
  readonly ports: readonly ServiceSpecPort[];
  readonly externalIPs: readonly string[];
  readonly loadBalancerSourceRanges: readonly string[];
  readonly sessionAffinity: "None" | "ClientIP";
  /** `sessionAffinityConfig.clientIP.timeoutSeconds`; null when absent. */
  readonly sessionAffinityTimeoutSeconds: number | null;
  /** null when absent. */
  readonly externalTrafficPolicy: TrafficPolicy | null;
  /** null when absent. */
  readonly internalTrafficPolicy: TrafficPolicy | null;
  /** 0 = none. */
  readonly healthCheckNodePort: number;
}

export interface Service {
  readonly kind: "Service";
  readonly metadata: ObjectMeta;
  readonly spec: ServiceSpec;
  readonly status: { readonly loadBalancerIngress: readonly LoadBalancerIngress[] };
}

export type EndpointSliceAddressType = "IPv4" | "IPv6" | "FQDN";

export interface EndpointSliceEndpoint {
  readonly addresses: readonly string[];
  readonly ready: boolean | null;
  readonly serving: boolean | null;
  readonly terminating: boolean | null;
  readonly nodeName: string | null;
  readonly zone: string | null;
  /** `hints.forZones[].name`; null when absent. */
  readonly zoneHints: readonly string[] | null;
  /** `hints.forNodes[].name`; null when absent. */
  readonly nodeHints: readonly string[] | null;
}

export interface EndpointSlicePort {
  /** null when absent (such ports are ignored, as upstream). */
  readonly name: string | null;
  /** null when absent. */
  readonly port: number | null;
  readonly protocol: Protocol;
}

export interface EndpointSlice {
  readonly kind: "EndpointSlice";
  readonly metadata: ObjectMeta;
  readonly addressType: EndpointSliceAddressType;
  readonly endpoints: readonly EndpointSliceEndpoint[];
  readonly ports: readonly EndpointSlicePort[];
}

export interface Taint {
  readonly key: string;
  readonly value: string;
  readonly effect: string;
}

export interface NodeAddress {
  readonly type: string;
  readonly address: string;
}

export interface Node {
  readonly kind: "Node";
  readonly metadata: ObjectMeta;
  readonly spec: {
    readonly podCIDRs: readonly string[];
    readonly taints: readonly Taint[];
  };
  readonly status: { readonly addresses: readonly NodeAddress[] };
}

/**
 * networking.k8s.io/v1 ServiceCIDR: ranges ClusterIPs are allocated from (one per family). Only
 * `spec.cidrs` matters to a proxy; each is normalised to its network address.
 */
export interface ServiceCIDR {
  readonly kind: "ServiceCIDR";
  readonly metadata: ObjectMeta;
  readonly spec: { readonly cidrs: readonly string[] };
}

export type KubeObject = Service | EndpointSlice | Node | ServiceCIDR;

export const LABEL_SERVICE_NAME = "kubernetes.io/service-name";
export const LABEL_SERVICE_PROXY_NAME = "service.kubernetes.io/service-proxy-name";
export const LABEL_HEADLESS = "service.kubernetes.io/headless";
export const LABEL_TOPOLOGY_ZONE = "topology.kubernetes.io/zone";
export const ANNOTATION_LAST_CHANGE_TRIGGER_TIME = "endpoints.kubernetes.io/last-change-trigger-time";

const DNS_LABEL = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;
const DNS_SUBDOMAIN = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;

const dnsLabel = matching(63, DNS_LABEL, "must be a DNS-1123 label (lower case alphanumerics and '-')");
const dnsSubdomain = matching(
  253,
  DNS_SUBDOMAIN,
  "must be a DNS-1123 subdomain (lower case alphanumerics, '-' and '.')",
);
const portName: Decoder<string> = (v) => (v === "" ? "" : dnsLabel(v));
const protocol = oneOf(["TCP", "UDP", "SCTP"]);
const trafficPolicy = oneOf(["Cluster", "Local"]);
/** An integer field with its real range in the message. */
export const intInRange = integer;

const port = intInRange(1, 65535);
const optionalPort = intInRange(0, 65535);
const ipFamily = oneOf(["IPv4", "IPv6"]);

const stringMapField = optional(stringMap);

function metadataDecoder(name: Decoder<string>, namespaced: boolean) {
  return object({
    name,
    namespace: namespaced ? dnsLabel : optional(string),
    uid: optional(string),
    resourceVersion: optional(string),
    labels: stringMapField,
    annotations: stringMapField,
    deletionTimestamp: optional(string),
  });
}

type RawMeta = ReturnType<ReturnType<typeof metadataDecoder>>;

function toMeta(m: RawMeta): ObjectMeta {
  return {
    name: m.name,
    namespace: m.namespace ?? "",
    uid: m.uid ?? "",
    resourceVersion: m.resourceVersion ?? "",
    labels: m.labels ?? {},
    annotations: m.annotations ?? {},
    deletionTimestamp: m.deletionTimestamp ?? null,
  };
}

/** "" and "None" are the API's "no ClusterIP"; anything else must be an address. */
const clusterIP = refine(
  string,
  (s) => s === "" || s === "None" || parseIPSloppy(s) !== null,
  "must be a valid IP address or None",
);

/** Port names: required when there are several, and unique (the API server's validation). */
function checkPortNames(spec: { readonly ports?: readonly { readonly name?: string }[] | undefined }): void {
  const ports = spec.ports ?? [];
  const seen = new Set<string>();
  ports.forEach((p, i) => {
    const name = p.name ?? "";
    if (ports.length > 1 && name === "")
      failAt(["ports", i, "name"], "required when a Service has more than one port");
    if (seen.has(name)) failAt(["ports", i, "name"], `duplicate port name "${name}"`);
    seen.add(name);
  });
}

const serviceDecoder = object({
  metadata: metadataDecoder(dnsLabel, true),
  spec: checked(
    object({
      type: optional(oneOf(["ClusterIP", "NodePort", "LoadBalancer", "ExternalName"])),
      clusterIP: optional(clusterIP),
      clusterIPs: optional(array(clusterIP, 2)),
      ipFamilies: optional(array(ipFamily, 2)),
      ports: optional(
        array(
          object({
            name: optional(portName),
            protocol: optional(protocol),
            port,
            nodePort: optional(optionalPort),
          }),
        ),
      ),
      externalIPs: optional(array(string)),
      loadBalancerSourceRanges: optional(array(string)),
      sessionAffinity: optional(oneOf(["None", "ClientIP"])),
      sessionAffinityConfig: optional(
        object({
          clientIP: optional(object({ timeoutSeconds: optional(intInRange(1, 86400)) })),
        }),
      ),
      externalTrafficPolicy: optional(trafficPolicy),
      internalTrafficPolicy: optional(trafficPolicy),
      healthCheckNodePort: optional(optionalPort),
    }),
    checkPortNames,
  ),
  status: optional(
    object({
      loadBalancer: optional(
        object({
          ingress: optional(
            array(
              object({
                ip: optional(string),
                hostname: optional(string),
                ipMode: optional(oneOf(["VIP", "Proxy"])),
              }),
            ),
          ),
        }),
      ),
    }),
  ),
});

const endpointSliceDecoder = object({
  metadata: metadataDecoder(dnsSubdomain, true),
  addressType: oneOf(["IPv4", "IPv6", "FQDN"]),
  endpoints: optional(
    array(
      object({
        addresses: optional(array(string)),
        conditions: optional(
          object({
            ready: optional(boolean),
            serving: optional(boolean),
            terminating: optional(boolean),
          }),
        ),
        nodeName: optional(string),
        zone: optional(string),
        hints: optional(
          object({
            forZones: optional(array(object({ name: string }))),
            forNodes: optional(array(object({ name: string }))),
          }),
        ),
      }),
    ),
  ),
  ports: optional(
    array(
      object({
        name: optional(portName),
        port: optional(optionalPort),
        protocol: optional(protocol),
      }),
    ),
  ),
});

/**
 * A pod CIDR ends up in the NodeCIDR local detector's `-s` match: the API server only stores ones
 * that parse (ValidateNode), so one that does not is refused here rather than reaching a rule.
 */
const podCIDR = refine(
  string,
  (s) => parseCIDRSloppy(s) !== null,
  "must be a CIDR (IP address/prefix length)",
);

const nodeDecoder = object({
  metadata: metadataDecoder(dnsSubdomain, false),
  spec: optional(
    object({
      podCIDR: optional<string>((v) => (v === "" ? "" : podCIDR(v))),
      podCIDRs: optional(array(podCIDR)),
      taints: optional(array(object({ key: string, value: optional(string), effect: string }))),
    }),
  ),
  status: optional(
    object({
      addresses: optional(array(object({ type: string, address: string }))),
    }),
  ),
});

/** `["spec","ports",1,"port"]` → `spec.ports[1].port`. */
function jsonPath(path: readonly PropertyKey[]): string {
  let out = "";
  for (const p of path) {
    if (typeof p === "number") out += `[${p}]`;
    else out += out === "" ? String(p) : `.${String(p)}`;
  }
  return out === "" ? "(object)" : out;
}

/** Names the object for messages without trusting it: only validated-looking names are shown. */
function describe(kind: string, raw: unknown, source: string): string {
  const meta = isRecord(raw) && isRecord(raw["metadata"]) ? raw["metadata"] : null;
  const name = meta?.["name"];
  const namespace = meta?.["namespace"];
  const safe = (v: unknown): v is string => typeof v === "string" && v.length <= 253 && DNS_SUBDOMAIN.test(v);
  if (!safe(name)) return `${kind} in ${source}`;
  return safe(namespace) ? `${kind} ${namespace}/${name}` : `${kind} ${name}`;
}

/**
 * etcd's limit on one stored object (the API server's --max-request-bytes is 3 MiB; etcd's
 * request limit, 1.5 MiB, is what an object can really reach). Anything bigger did not come from
 * a real cluster, and costs seconds per sync (a 4 MB Service with 500k externalIPs took 30 s).
 */
export const MAX_OBJECT_BYTES = 1.5 * 1024 * 1024;

/** JSON text of `raw`; null when it contains itself (a YAML alias inside the node it names). */
function encodedOrNull(raw: unknown): string | null {
  try {
    return JSON.stringify(raw) ?? "";
  } catch (err) {
    if (err instanceof TypeError) return null;
    throw err;
  }
}

function decodeWith<T>(decoder: Decoder<T>, kind: string, raw: unknown, source: string): T {
  const encoded = encodedOrNull(raw);
  if (encoded === null)
    throw new InvalidObjectError(
      describe(kind, raw, source),
      "(object)",
      "contains itself (a YAML alias inside the node it names); no API object can",
    );
  const bytes = Buffer.byteLength(encoded);
  if (bytes > MAX_OBJECT_BYTES)
    throw new InvalidObjectError(
      describe(kind, raw, source),
      "(object)",
      `${bytes} bytes encoded, over the ${MAX_OBJECT_BYTES}-byte (1.5 MiB) limit of an API object`,
    );
  try {
    return decoder(raw);
  } catch (err) {
    if (!(err instanceof DecodeFailure)) throw err;
    throw new InvalidObjectError(describe(kind, raw, source), jsonPath(err.path), err.reason);
  }
}

export function decodeService(raw: unknown, source: string): Service {
  const s = decodeWith(serviceDecoder, "Service", raw, source);
  const spec = s.spec;
  const ingress = s.status?.loadBalancer?.ingress ?? [];
  return {
    kind: "Service",
    metadata: toMeta(s.metadata),
    spec: {
      type: spec.type ?? "",
      clusterIP: spec.clusterIP ?? "",
      clusterIPs: spec.clusterIPs ?? [],
      ipFamilies: spec.ipFamilies ?? [],
      ports: (spec.ports ?? []).map((p) => ({
        name: p.name ?? "",
        protocol: p.protocol ?? "TCP",
        port: p.port,
        nodePort: p.nodePort ?? 0,
      })),
      externalIPs: spec.externalIPs ?? [],
      loadBalancerSourceRanges: spec.loadBalancerSourceRanges ?? [],
      sessionAffinity: spec.sessionAffinity ?? "None",
      sessionAffinityTimeoutSeconds: spec.sessionAffinityConfig?.clientIP?.timeoutSeconds ?? null,
      externalTrafficPolicy: spec.externalTrafficPolicy ?? null,
      internalTrafficPolicy: spec.internalTrafficPolicy ?? null,
      healthCheckNodePort: spec.healthCheckNodePort ?? 0,
    },
    status: {
      loadBalancerIngress: ingress.map((i) => ({
        ip: i.ip ?? "",
        hostname: i.hostname ?? "",
        ipMode: i.ipMode ?? null,
      })),
    },
  };
}

export function decodeEndpointSlice(raw: unknown, source: string): EndpointSlice {
  const s = decodeWith(endpointSliceDecoder, "EndpointSlice", raw, source);
  // The label names the Service, and so ends up in rule comments: hold it to the same rule.
  const svcName = s.metadata.labels?.[LABEL_SERVICE_NAME];
  if (svcName !== undefined && svcName !== "" && !(svcName.length <= 63 && DNS_LABEL.test(svcName))) {
    throw new InvalidObjectError(
      describe("EndpointSlice", raw, source),
      `metadata.labels["${LABEL_SERVICE_NAME}"]`,
      "must be a Service name (DNS-1123 label)",
    );
  }
  return {
    kind: "EndpointSlice",
    metadata: toMeta(s.metadata),
    addressType: s.addressType,
    endpoints: (s.endpoints ?? []).map((e) => ({
      addresses: e.addresses ?? [],
      ready: e.conditions?.ready ?? null,
      serving: e.conditions?.serving ?? null,
      terminating: e.conditions?.terminating ?? null,
      nodeName: e.nodeName ?? null,
      zone: e.zone ?? null,
      zoneHints: e.hints?.forZones?.map((h) => h.name) ?? null,
      nodeHints: e.hints?.forNodes?.map((h) => h.name) ?? null,
    })),
    ports: (s.ports ?? []).map((p) => ({
      name: p.name ?? null,
      port: p.port ?? null,
      protocol: p.protocol ?? "TCP",
    })),
  };
}

export function decodeNode(raw: unknown, source: string): Node {
  const n = decodeWith(nodeDecoder, "Node", raw, source);
  const single = n.spec?.podCIDR;
  const podCIDRs =
    n.spec?.podCIDRs ?? (single === undefined || single === null || single === "" ? [] : [single]);
  return {
    kind: "Node",
    metadata: toMeta(n.metadata),
    spec: {
      podCIDRs,
      taints: (n.spec?.taints ?? []).map((t) => ({ key: t.key, value: t.value ?? "", effect: t.effect })),
    },
    status: { addresses: n.status?.addresses ?? [] },
  };
}

/** `10.96.0.5/16` → `10.96.0.0/16`; null for anything that is not an address with a prefix length. */
export function normaliseServiceCIDR(text: string): string | null {
  const network = parseNetwork(text.trim());
  return network === undefined ? null : formatCIDR(network);
}

const serviceCIDRDecoder = object({
  metadata: metadataDecoder(dnsSubdomain, false),
  spec: optional(
    object({
      cidrs: optional(
        array(
          refine(
            string,
            (s) => normaliseServiceCIDR(s) !== null,
            "must be a CIDR (IP address/prefix length)",
          ),
          2,
          "at most one CIDR per IP family",
        ),
      ),
    }),
  ),
});

export function decodeServiceCIDR(raw: unknown, source: string): ServiceCIDR {
  const o = decodeWith(serviceCIDRDecoder, "ServiceCIDR", raw, source);
  const cidrs = (o.spec?.cidrs ?? []).map((c) => normaliseServiceCIDR(c)!);
  if (cidrs.length === 2 && familyOf(cidrs[0]!) === familyOf(cidrs[1]!))
    throw new InvalidObjectError(
      describe("ServiceCIDR", raw, source),
      "spec.cidrs",
      "at most one CIDR per IP family",
    );
  return { kind: "ServiceCIDR", metadata: toMeta(o.metadata), spec: { cidrs } };
}

/**
 * The union of the CIDRs of every ServiceCIDR object, sorted (upstream's ServiceCIDRConfig hands
 * the proxier the same set, unordered).
 */
export function serviceCIDRUnion(objects: Iterable<ServiceCIDR>): string[] {
  const all = new Set<string>();
  for (const o of objects) for (const c of o.spec.cidrs) all.add(c);
  return [...all].sort();
}

/** `ns/name` of a namespaced object (upstream `types.NamespacedName.String()`). */
export function namespacedName(meta: ObjectMeta): string {
  return `${meta.namespace}/${meta.name}`;
}
