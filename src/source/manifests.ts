/**
 * Kubernetes objects from manifest files: YAML or JSON, multi-document, `kind: List` and typed
 * lists (`ServiceList`: its items carry no kind) — i.e. what
 * `kubectl get svc,endpointslices,nodes,servicecidrs -A -o yaml` prints. Kinds kube-proxy does not read are
 * skipped; an object it reads but cannot use is reported (never thrown); a file that is not
 * YAML at all is an InputError naming the file and line.
 */
import { readFile, readdir, stat } from "node:fs/promises";
import { join } from "node:path";
import { InputError, InvalidObjectError } from "../errors.ts";
import { decodeEndpointSlice, decodeNode, decodeService, decodeServiceCIDR } from "../k8s/objects.ts";
import type { EndpointSlice, Node, Service, ServiceCIDR } from "../k8s/objects.ts";
import { yaml } from "../yaml.ts";
import { eachYamlSubsetDocument, type SubsetDocument } from "./yaml-subset.ts";

export interface ManifestObjects {
  services: Service[];
  endpointSlices: EndpointSlice[];
  nodes: Node[];
  serviceCIDRs: ServiceCIDR[];
  problems: InvalidObjectError[];
}

const MANIFEST_EXTENSIONS = [".yaml", ".yml", ".json"];

/**
 * The largest manifests file read: room for a `kubectl get -o yaml` of thousands of objects,
 * while a runaway file is refused before it is read and parsed (YAML parsing costs about 1.3 s
 * per MB here: a 7.5 MB file took 10 s). Larger sets can be split over several files.
 */
export const MAX_MANIFEST_FILE_BYTES = 8 * 1024 * 1024;

/** The error for a manifests file over {@link MAX_MANIFEST_FILE_BYTES}; null when it fits. */
export function oversizedManifest(path: string, bytes: number): InputError | null {
  return bytes <= MAX_MANIFEST_FILE_BYTES
    ? null
    : new InputError(
        path,
        `${bytes} bytes, over the ${MAX_MANIFEST_FILE_BYTES}-byte limit of a manifests file`,
      );
}

/** Whether a folder entry is read as a manifest: by its extension (`x.yaml~`, `x.swp` are not). */
export function isManifestFile(name: string): boolean {
  return MANIFEST_EXTENSIONS.some((ext) => name.endsWith(ext));
}

function emptyObjects(): ManifestObjects {
  return { services: [], endpointSlices: [], nodes: [], serviceCIDRs: [], problems: [] };
}

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

/** Every document of `text` with the line it starts on, by the full parser (errors name the line). */
function parseWithYaml(text: string, source: string): SubsetDocument[] {
  const { LineCounter, parseAllDocuments } = yaml();
  const lineCounter = new LineCounter();
  const docs = parseAllDocuments(text, { lineCounter });
  if (!Array.isArray(docs)) return [];
  for (const doc of docs) {
    const err = doc.errors[0];
    if (err !== undefined) {
      const line = err.linePos?.[0].line ?? lineCounter.linePos(err.pos[0]).line;
      throw new InputError(source, `line ${line}: ${err.message.split("\n")[0] ?? err.code}`);
    }
  }
  return docs.map((doc) => {
    try {
      return {
        value: doc.toJS() as unknown,
        line: lineCounter.linePos(doc.contents?.range[0] ?? doc.range[0]).line,
      };
    } catch (cause) {
      // Only alias bombs and similar reach here; the syntax was checked above.
      const line = lineCounter.linePos(doc.range[0]).line;
      throw new InputError(source, `line ${line}: ${(cause as Error).message}`, { cause });
    }
  });
}

/** A JSON text (`kubectl get -o json`) as its one document; null when it is not JSON. */
function parseJson(text: string): SubsetDocument[] | null {
  const start = text.search(/\S/);
  if (start < 0 || (text[start] !== "{" && text[start] !== "[")) return null;
  try {
    return [
      { value: JSON.parse(text) as unknown, line: 1 + (text.slice(0, start).match(/\n/g)?.length ?? 0) },
    ];
  } catch {
    return null;
  }
}

/**
 * The objects of one manifests text. JSON goes through JSON.parse, the block YAML that kubectl
 * and most tools write through the subset parser (20-30x faster than the full one: parsing
 * dominated start-up from a large folder), anything else, errors included, through the full
 * parser.
 */
export function parseManifests(text: string, source: string): ManifestObjects {
  const json = parseJson(text);
  if (json !== null) return collectDocuments(json, source, (doc) => doc);
  // Each document is decoded as soon as it is parsed (see eachYamlSubsetDocument).
  const subset = emptyObjects();
  const detach = stringDetacher();
  if (eachYamlSubsetDocument(text, (doc) => collectDocument(detach(doc), source, subset))) return subset;
  return collectDocuments(parseWithYaml(text, source), source, stringDetacher());
}

function collectDocuments(
  docs: readonly SubsetDocument[],
  source: string,
  detach: (doc: SubsetDocument) => SubsetDocument,
): ManifestObjects {
  const out = emptyObjects();
  for (const doc of docs) collectDocument(detach(doc), source, out);
  return out;
}

function collectDocument({ value, line }: SubsetDocument, source: string, out: ManifestObjects): void {
  if (value === null || value === undefined) return;
  const where = `${source}:${line}`;
  if (!isRecord(value)) {
    out.problems.push(new InvalidObjectError(where, "(document)", "not a Kubernetes object"));
    return;
  }
  collect(value, null, where, out);
}

/** Below this length V8 copies a substring instead of pointing into its parent. */
const SLICE_MIN_LENGTH = 13;

/**
 * The YAML parsers' strings are slices of the manifest's text, and a slice keeps its whole parent
 * alive: the objects of a 24 MB folder held every file's text (and 100,000 copies of the same
 * node and zone names) for as long as the daemon ran. This replaces every string value with a
 * flat copy, one per distinct value of the file. A JSON round trip makes a flat string of its
 * own for any value (a substring of a fresh string, `(" " + s).slice(1)`, is a slice again:
 * twice the memory of a flat copy for a short value such as an IP address); the walk skips what
 * it has seen (aliases can make cycles). One detacher serves one file, document by document.
 */
function stringDetacher(): (doc: SubsetDocument) => SubsetDocument {
  const copies = new Map<string, string>();
  const detach = (s: string): string => {
    let copy = copies.get(s);
    if (copy === undefined) {
      copy = s.length < SLICE_MIN_LENGTH ? s : (JSON.parse(JSON.stringify(s)) as string);
      copies.set(copy, copy);
    }
    return copy;
  };
  // Aliases stay inside their document, so the objects seen are a document's (and die with it).
  const walk = (value: unknown, seen: Set<object>): unknown => {
    if (typeof value === "string") return detach(value);
    if (typeof value !== "object" || value === null || seen.has(value)) return value;
    seen.add(value);
    if (Array.isArray(value)) {
      for (let i = 0; i < value.length; i++) value[i] = walk(value[i], seen);
    } else {
      const record = value as Record<string, unknown>;
      for (const key of Object.keys(record)) record[key] = walk(record[key], seen);
    }
    return value;
  };
  return (d) => ({ value: walk(d.value, new Set()), line: d.line });
}

function collect(
  obj: Record<string, unknown>,
  impliedKind: string | null,
  where: string,
  out: ManifestObjects,
): void {
  const kind = typeof obj["kind"] === "string" ? obj["kind"] : impliedKind;
  if (kind === null) {
    out.problems.push(new InvalidObjectError(where, "kind", "missing"));
    return;
  }
  if (kind === "List" || kind.endsWith("List")) {
    const items = obj["items"];
    if (items === null || items === undefined) return;
    if (!Array.isArray(items)) {
      out.problems.push(new InvalidObjectError(where, "items", "must be a list"));
      return;
    }
    const itemKind = kind === "List" ? null : kind.slice(0, -"List".length);
    items.forEach((item: unknown, i) => {
      const itemWhere = `${where} items[${i}]`;
      if (!isRecord(item)) {
        out.problems.push(new InvalidObjectError(itemWhere, "(item)", "not a Kubernetes object"));
        return;
      }
      collect(item, itemKind, itemWhere, out);
    });
    return;
  }
  try {
    switch (kind) {
      case "Service": {
        const service = decodeService(obj, where);
        const problem = incompleteService(obj, describeService(service));
        if (problem !== null) out.problems.push(problem);
        else out.services.push(service);
        return;
      }
      case "EndpointSlice":
        if (obj["apiVersion"] !== undefined && obj["apiVersion"] !== "discovery.k8s.io/v1") {
          out.problems.push(
            new InvalidObjectError(
              where,
              "apiVersion",
              "only discovery.k8s.io/v1 EndpointSlices are supported",
            ),
          );
          return;
        }
        out.endpointSlices.push(decodeEndpointSlice(obj, where));
        return;
      case "Node":
        out.nodes.push(decodeNode(obj, where));
        return;
      case "ServiceCIDR":
        if (obj["apiVersion"] !== undefined && obj["apiVersion"] !== "networking.k8s.io/v1") {
          out.problems.push(
            new InvalidObjectError(
              where,
              "apiVersion",
              "only networking.k8s.io/v1 ServiceCIDRs are supported",
            ),
          );
          return;
        }
        out.serviceCIDRs.push(decodeServiceCIDR(obj, where));
        return;
      default:
        // Pods, Deployments, … share manifest files with Services; kube-proxy never reads them.
        return;
    }
  } catch (err) {
    if (err instanceof InvalidObjectError) out.problems.push(err);
    else throw err;
  }
}

function describeService(service: Service): string {
  return `Service ${service.metadata.namespace}/${service.metadata.name}`;
}

/**
 * What `kubectl get -o yaml` always prints but a file cut short (an editor or a copy caught
 * mid-write) lacks: a Service whose `spec:` is the last line decodes as one without ports or
 * cluster IP, which would silently delete its rules.
 */
function incompleteService(raw: Record<string, unknown>, object: string): InvalidObjectError | null {
  const spec = raw["spec"];
  if (!isRecord(spec)) return new InvalidObjectError(object, "spec", "missing (is the file complete?)");
  if (spec["type"] !== "ExternalName" && (spec["clusterIP"] === undefined || spec["clusterIP"] === null))
    return new InvalidObjectError(object, "spec.clusterIP", "missing (is the file complete?)");
  return null;
}

function merge(into: ManifestObjects, from: ManifestObjects): void {
  into.services.push(...from.services);
  into.endpointSlices.push(...from.endpointSlices);
  into.nodes.push(...from.nodes);
  into.serviceCIDRs.push(...from.serviceCIDRs);
  into.problems.push(...from.problems);
}

async function readStdin(): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const chunk of process.stdin) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks).toString("utf8");
}

async function readText(path: string): Promise<string> {
  let text: string;
  try {
    if (path !== "-") {
      const tooBig = oversizedManifest(path, (await stat(path)).size);
      if (tooBig !== null) throw tooBig;
    }
    text = path === "-" ? await readStdin() : await readFile(path, "utf8");
  } catch (cause) {
    if (cause instanceof InputError) throw cause;
    throw new InputError(path, `cannot read: ${(cause as Error).message}`, { cause });
  }
  const tooBig = oversizedManifest(path === "-" ? "<stdin>" : path, Buffer.byteLength(text));
  if (tooBig !== null) throw tooBig;
  return text;
}

/** Files and directories (their *.yaml, *.yml, *.json, not recursive, by name), "-" = stdin. */
export async function readManifestPaths(paths: readonly string[]): Promise<ManifestObjects> {
  const out = emptyObjects();
  for (const path of paths) {
    let files = [path];
    if (path !== "-") {
      let isDir: boolean;
      try {
        isDir = (await stat(path)).isDirectory();
      } catch (cause) {
        throw new InputError(path, `cannot read: ${(cause as Error).message}`, { cause });
      }
      if (isDir) {
        const names = (await readdir(path)).filter(isManifestFile);
        names.sort();
        files = names.map((n) => join(path, n));
      }
    }
    for (const file of files)
      merge(out, parseManifests(await readText(file), file === "-" ? "<stdin>" : file));
  }
  return out;
}
