/**
 * The subset of Kubernetes API objects kube-proxy reads (Service core/v1, EndpointSlice
 * discovery.k8s.io/v1, Node core/v1) and their decoders. Decoders are lenient about fields we do
 * not use (real objects carry many) and strict about the ones we do: anything that could end up
 * in a rule (names, ports, protocols) is validated here, so nothing unvalidated reaches the
 * kernel. Addresses are kept as strings: upstream drops unparseable IPs silently at use time
 * instead of rejecting the object, and so do we (src/proxy/serviceport.ts, endpoints.ts).
 */
import { z } from "zod";
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

const dnsLabel = z
  .string()
  .max(63, "must be no more than 63 characters")
  .regex(DNS_LABEL, "must be a DNS-1123 label (lower case alphanumerics and '-')");
const dnsSubdomain = z
  .string()
  .max(253, "must be no more than 253 characters")
  .regex(DNS_SUBDOMAIN, "must be a DNS-1123 subdomain (lower case alphanumerics, '-' and '.')");
const portName = z.union([z.literal(""), dnsLabel]);
const protocol = z.enum(["TCP", "UDP", "SCTP"]);
/** An integer field with its real range in the message (zod's own says `<=9007199254740991`). */
export function intInRange(min: number, max: number, message = `must be an integer from ${min} to ${max}`) {
  const error = { error: message };
  return z.number(error).int(error).min(min, error).max(max, error);
}

const port = intInRange(1, 65535);
const optionalPort = intInRange(0, 65535);
const ipFamily = z.enum(["IPv4", "IPv6"]);

/** Accepts absent or JSON null (Go treats both as unset); readers use `??`. */
function opt<T extends z.ZodType>(schema: T) {
  return schema.nullish();
}

const stringMap = opt(z.record(z.string(), z.string()));

function metadataSchema(name: z.ZodType<string>, namespaced: boolean) {
  return z.object({
    name,
    namespace: namespaced ? dnsLabel : opt(z.string()),
    uid: opt(z.string()),
    resourceVersion: opt(z.string()),
    labels: stringMap,
    annotations: stringMap,
    deletionTimestamp: opt(z.string()),
  });
}

type RawMeta = z.infer<ReturnType<typeof metadataSchema>>;

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
const clusterIP = z
  .string()
  .refine((s) => s === "" || s === "None" || parseIPSloppy(s) !== null, "must be a valid IP address or None");

const serviceSchema = z.object({
  metadata: metadataSchema(dnsLabel, true),
  spec: z
    .object({
      type: opt(z.enum(["ClusterIP", "NodePort", "LoadBalancer", "ExternalName"])),
      clusterIP: opt(clusterIP),
      clusterIPs: opt(z.array(clusterIP).max(2)),
      ipFamilies: opt(z.array(ipFamily).max(2)),
      ports: opt(
        z.array(
          z.object({
            name: opt(portName),
            protocol: opt(protocol),
            port,
            nodePort: opt(optionalPort),
          }),
        ),
      ),
      externalIPs: opt(z.array(z.string())),
      loadBalancerSourceRanges: opt(z.array(z.string())),
      sessionAffinity: opt(z.enum(["None", "ClientIP"])),
      sessionAffinityConfig: opt(
        z.object({
          clientIP: opt(z.object({ timeoutSeconds: opt(intInRange(1, 86400)) })),
        }),
      ),
      externalTrafficPolicy: opt(z.enum(["Cluster", "Local"])),
      internalTrafficPolicy: opt(z.enum(["Cluster", "Local"])),
      healthCheckNodePort: opt(optionalPort),
    })
    .superRefine((spec, ctx) => {
      const ports = spec.ports ?? [];
      const seen = new Set<string>();
      ports.forEach((p, i) => {
        const name = p.name ?? "";
        if (ports.length > 1 && name === "") {
          ctx.addIssue({
            code: "custom",
            path: ["ports", i, "name"],
            message: "required when a Service has more than one port",
          });
        } else if (seen.has(name)) {
          ctx.addIssue({
            code: "custom",
            path: ["ports", i, "name"],
            message: `duplicate port name "${name}"`,
          });
        }
        seen.add(name);
      });
    }),
  status: opt(
    z.object({
      loadBalancer: opt(
        z.object({
          ingress: opt(
            z.array(
              z.object({
                ip: opt(z.string()),
                hostname: opt(z.string()),
                ipMode: opt(z.enum(["VIP", "Proxy"])),
              }),
            ),
          ),
        }),
      ),
    }),
  ),
});

const endpointSliceSchema = z.object({
  metadata: metadataSchema(dnsSubdomain, true),
  addressType: z.enum(["IPv4", "IPv6", "FQDN"]),
  endpoints: opt(
    z.array(
      z.object({
        addresses: opt(z.array(z.string())),
        conditions: opt(
          z.object({
            ready: opt(z.boolean()),
            serving: opt(z.boolean()),
            terminating: opt(z.boolean()),
          }),
        ),
        nodeName: opt(z.string()),
        zone: opt(z.string()),
        hints: opt(
          z.object({
            forZones: opt(z.array(z.object({ name: z.string() }))),
            forNodes: opt(z.array(z.object({ name: z.string() }))),
          }),
        ),
      }),
    ),
  ),
  ports: opt(
    z.array(
      z.object({
        name: opt(portName),
        port: opt(optionalPort),
        protocol: opt(protocol),
      }),
    ),
  ),
});

/**
 * A pod CIDR ends up in the NodeCIDR local detector's `-s` match: the API server only stores ones
 * that parse (ValidateNode), so one that does not is refused here rather than reaching a rule.
 */
const podCIDR = z
  .string()
  .refine((s) => parseCIDRSloppy(s) !== null, "must be a CIDR (IP address/prefix length)");

const nodeSchema = z.object({
  metadata: metadataSchema(dnsSubdomain, false),
  spec: opt(
    z.object({
      podCIDR: opt(z.union([z.literal(""), podCIDR])),
      podCIDRs: opt(z.array(podCIDR)),
      taints: opt(z.array(z.object({ key: z.string(), value: opt(z.string()), effect: z.string() }))),
    }),
  ),
  status: opt(
    z.object({
      addresses: opt(z.array(z.object({ type: z.string(), address: z.string() }))),
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

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
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

function decodeWith<S extends z.ZodType>(schema: S, kind: string, raw: unknown, source: string): z.infer<S> {
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
  const r = schema.safeParse(raw);
  if (r.success) return r.data;
  const issue = r.error.issues[0];
  throw new InvalidObjectError(
    describe(kind, raw, source),
    issue === undefined ? "(object)" : jsonPath(issue.path),
    issue?.message ?? "invalid",
  );
}

export function decodeService(raw: unknown, source: string): Service {
  const s = decodeWith(serviceSchema, "Service", raw, source);
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
  const s = decodeWith(endpointSliceSchema, "EndpointSlice", raw, source);
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
  const n = decodeWith(nodeSchema, "Node", raw, source);
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

const serviceCIDRSchema = z.object({
  metadata: metadataSchema(dnsSubdomain, false),
  spec: opt(
    z.object({
      cidrs: opt(
        z
          .array(
            z
              .string()
              .refine((s) => normaliseServiceCIDR(s) !== null, "must be a CIDR (IP address/prefix length)"),
          )
          .max(2, "at most one CIDR per IP family"),
      ),
    }),
  ),
});

export function decodeServiceCIDR(raw: unknown, source: string): ServiceCIDR {
  const o = decodeWith(serviceCIDRSchema, "ServiceCIDR", raw, source);
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
