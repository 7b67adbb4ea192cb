/**
 * Server-side printing (meta.k8s.io/v1 Table), which kubectl asks for on `get`: the same columns
 * the real apiserver prints for services, endpointslices, nodes and servicecidrs.
 */
import type { JsonObject } from "./apiserver-patch.ts";

interface Column {
  readonly name: string;
  readonly type: string;
  readonly format: string;
  readonly priority: number;
  readonly description: string;
}

const col = (name: string, priority = 0, format = "", type = "string"): Column => ({
  name,
  type,
  format,
  priority,
  description: name,
});

const COLUMNS: Readonly<Record<string, readonly Column[]>> = {
  services: [
    col("Name", 0, "name"),
    col("Type"),
    col("Cluster-IP"),
    col("External-IP"),
    col("Port(s)"),
    col("Age"),
    col("Selector", 1),
  ],
  endpointslices: [col("Name", 0, "name"), col("AddressType"), col("Ports"), col("Endpoints"), col("Age")],
  servicecidrs: [col("Name", 0, "name"), col("CIDRs"), col("Age")],
  nodes: [
    col("Name", 0, "name"),
    col("Status"),
    col("Roles"),
    col("Age"),
    col("Version"),
    col("Internal-IP", 1),
  ],
};

/** kubectl's HumanDuration, abridged to the ranges tests can reach and a little beyond. */
function age(obj: JsonObject): string {
  const created = Date.parse(
    String((obj["metadata"] as JsonObject | undefined)?.["creationTimestamp"] ?? ""),
  );
  if (Number.isNaN(created)) return "<unknown>";
  const s = Math.max(0, Math.floor((Date.now() - created) / 1000));
  if (s < 120) return `${s}s`;
  const m = Math.floor(s / 60);
  if (m < 10) return s % 60 === 0 ? `${m}m` : `${m}m${s % 60}s`;
  if (m < 180) return `${m}m`;
  const h = Math.floor(m / 60);
  if (h < 48) return `${h}h`;
  return `${Math.floor(h / 24)}d`;
}

function obj(v: unknown): JsonObject {
  return v !== null && typeof v === "object" && !Array.isArray(v) ? (v as JsonObject) : {};
}

function list(v: unknown): unknown[] {
  return Array.isArray(v) ? v : [];
}

function serviceCells(o: JsonObject): unknown[] {
  const spec = obj(o["spec"]);
  const type = String(spec["type"] ?? "ClusterIP");
  const ingress = list(obj(obj(o["status"])["loadBalancer"])["ingress"]).map(
    (i) => obj(i)["ip"] ?? obj(i)["hostname"],
  );
  const external = [...list(spec["externalIPs"]), ...ingress].map(String);
  const externalCell =
    type === "ExternalName"
      ? String(spec["externalName"] ?? "")
      : external.length > 0
        ? external.join(",")
        : type === "LoadBalancer"
          ? "<pending>"
          : "<none>";
  const ports = list(spec["ports"])
    .map((p) => {
      const port = obj(p);
      const node = port["nodePort"] ? `:${String(port["nodePort"])}` : "";
      return `${String(port["port"])}${node}/${String(port["protocol"] ?? "TCP")}`;
    })
    .join(",");
  const selector = Object.entries(obj(spec["selector"]))
    .map(([k, v]) => `${k}=${String(v)}`)
    .join(",");
  return [
    obj(o["metadata"])["name"],
    type,
    String(spec["clusterIP"] ?? "<none>") || "<none>",
    externalCell,
    ports || "<none>",
    age(o),
    selector || "<none>",
  ];
}

function endpointSliceCells(o: JsonObject): unknown[] {
  const ports = list(o["ports"]).map((p) =>
    obj(p)["port"] === undefined ? "<unset>" : String(obj(p)["port"]),
  );
  const addresses = list(o["endpoints"]).flatMap((e) => list(obj(e)["addresses"]).map(String));
  const shown = addresses.slice(0, 3).join(",");
  const endpoints =
    addresses.length === 0
      ? "<unset>"
      : addresses.length > 3
        ? `${shown} + ${addresses.length - 3} more...`
        : shown;
  return [
    obj(o["metadata"])["name"],
    o["addressType"] ?? "",
    ports.join(",") || "<unset>",
    endpoints,
    age(o),
  ];
}

function nodeCells(o: JsonObject): unknown[] {
  const status = obj(o["status"]);
  const ready = list(status["conditions"]).find((c) => obj(c)["type"] === "Ready");
  const state = ready === undefined ? "Unknown" : obj(ready)["status"] === "True" ? "Ready" : "NotReady";
  const labels = obj(obj(o["metadata"])["labels"]);
  const roles = Object.keys(labels)
    .filter((k) => k.startsWith("node-role.kubernetes.io/"))
    .map((k) => k.slice("node-role.kubernetes.io/".length));
  const internal = list(status["addresses"]).find((a) => obj(a)["type"] === "InternalIP");
  return [
    obj(o["metadata"])["name"],
    state,
    roles.join(",") || "<none>",
    age(o),
    String(obj(status["nodeInfo"])["kubeletVersion"] ?? ""),
    internal === undefined ? "<none>" : String(obj(internal)["address"]),
  ];
}

/** The apiserver's ServiceCIDR printer: the CIDRs comma-separated. */
function serviceCIDRCells(o: JsonObject): unknown[] {
  const cidrs = list(obj(o["spec"])["cidrs"]).map(String);
  return [obj(o["metadata"])["name"], cidrs.length === 0 ? "<none>" : cidrs.join(","), age(o)];
}

const CELLS: Readonly<Record<string, (o: JsonObject) => unknown[]>> = {
  services: serviceCells,
  servicecidrs: serviceCIDRCells,
  endpointslices: endpointSliceCells,
  nodes: nodeCells,
};

/** True when the Accept header asks for a meta.k8s.io/v1 Table. */
export function wantsTable(accept: string): boolean {
  return accept
    .split(",")
    .some((part) => /as=Table/.test(part) && /g=meta\.k8s\.io/.test(part) && /v=v1(;|$)/.test(part));
}

/** The Table for these objects; `includeObject` as in the API (None, Object, PartialObjectMetadata). */
export function toTable(
  plural: string,
  objects: readonly JsonObject[],
  listMeta: JsonObject,
  includeObject: string | null,
  withColumns = true,
): JsonObject {
  const cells = CELLS[plural];
  const columns = COLUMNS[plural];
  if (cells === undefined || columns === undefined) throw new Error(`no table printer for ${plural}`);
  return {
    kind: "Table",
    apiVersion: "meta.k8s.io/v1",
    metadata: listMeta,
    ...(withColumns ? { columnDefinitions: columns as unknown as JsonObject[] } : {}),
    rows: objects.map((o) => ({
      cells: cells(o) as JsonObject[],
      ...(includeObject === "None"
        ? {}
        : includeObject === "Object"
          ? { object: o }
          : {
              object: {
                kind: "PartialObjectMetadata",
                apiVersion: "meta.k8s.io/v1",
                metadata: obj(o["metadata"]),
              },
            }),
    })),
  };
}
