/**
 * The patch formats the apiserver accepts. JSON merge patch (RFC 7386) and JSON patch (RFC 6902)
 * are complete. Strategic merge patch is approximated: directives ($patch, $setElementOrder,
 * $deleteFromPrimitiveList, $retainKeys) are honoured, lists are merged by key only where
 * MERGE_KEYS names the key (the lists of these resource types that upstream merges), every other
 * list is replaced, which is what upstream does for atomic lists such as EndpointSlice endpoints.
 */

type Json = null | boolean | number | string | Json[] | { [key: string]: Json };
type JsonObject = { [key: string]: Json };

export class PatchError extends Error {}

function isObject(v: unknown): v is JsonObject {
  return v !== null && typeof v === "object" && !Array.isArray(v);
}

export function mergePatch(target: Json, patch: Json): Json {
  if (!isObject(patch)) return structuredClone(patch);
  const result: JsonObject = isObject(target) ? { ...target } : {};
  for (const [key, value] of Object.entries(patch)) {
    if (value === null) delete result[key];
    else result[key] = mergePatch(result[key] ?? null, value);
  }
  return result;
}

/** Dotted path (list indices dropped) → the key that identifies list elements. */
const MERGE_KEYS: Readonly<Record<string, string>> = {
  "spec.ports": "port",
  "metadata.ownerReferences": "uid",
  "status.conditions": "type",
  "status.addresses": "type",
  "spec.taints": "key",
};

function strategicList(path: string, target: Json, patch: Json[], order: Json[] | undefined): Json[] {
  const key = MERGE_KEYS[path];
  if (key === undefined || !Array.isArray(target)) {
    return patch.filter((e) => !(isObject(e) && e["$patch"] === "delete")).map((e) => strip(e));
  }
  const result: Json[] = target.map((e) => structuredClone(e));
  for (const element of patch) {
    if (!isObject(element)) throw new PatchError(`${path}: element without merge key ${key}`);
    const index = result.findIndex((e) => isObject(e) && e[key] === element[key]);
    if (element["$patch"] === "delete") {
      if (index >= 0) result.splice(index, 1);
    } else if (index >= 0) {
      result[index] = strategicMerge(`${path}`, result[index] ?? null, element);
    } else {
      result.push(strip(element));
    }
  }
  if (order === undefined) return result;
  const rank = (e: Json): number => {
    const i = order.findIndex((o) => isObject(o) && isObject(e) && o[key] === e[key]);
    return i < 0 ? order.length : i;
  };
  return result.sort((a, b) => rank(a) - rank(b));
}

function strip(value: Json): Json {
  if (Array.isArray(value)) return value.map(strip);
  if (!isObject(value)) return value;
  const out: JsonObject = {};
  for (const [k, v] of Object.entries(value)) if (!k.startsWith("$")) out[k] = strip(v);
  return out;
}

export function strategicMerge(path: string, target: Json, patch: Json): Json {
  if (!isObject(patch)) return structuredClone(patch);
  if (patch["$patch"] === "replace") return strip(patch);
  if (patch["$patch"] === "delete") return null;
  const result: JsonObject = isObject(target) ? { ...target } : {};
  const prefix = path === "" ? "" : `${path}.`;
  for (const [key, value] of Object.entries(patch)) {
    if (key.startsWith("$setElementOrder/") || key === "$retainKeys" || key === "$patch") continue;
    if (key.startsWith("$deleteFromPrimitiveList/")) {
      const field = key.slice("$deleteFromPrimitiveList/".length);
      const current = result[field];
      if (Array.isArray(current) && Array.isArray(value)) {
        result[field] = current.filter((e) => !value.includes(e));
      }
      continue;
    }
    if (value === null || (isObject(value) && value["$patch"] === "delete")) {
      delete result[key];
    } else if (Array.isArray(value)) {
      const order = patch[`$setElementOrder/${key}`];
      result[key] = strategicList(
        `${prefix}${key}`,
        result[key] ?? null,
        value,
        Array.isArray(order) ? order : undefined,
      );
    } else {
      result[key] = strategicMerge(`${prefix}${key}`, result[key] ?? null, value);
    }
  }
  return result;
}

function pointer(path: string): string[] {
  if (path === "") return [];
  if (!path.startsWith("/")) throw new PatchError(`invalid JSON pointer ${JSON.stringify(path)}`);
  return path
    .slice(1)
    .split("/")
    .map((p) => p.replaceAll("~1", "/").replaceAll("~0", "~"));
}

function parentOf(doc: Json, parts: string[]): { parent: Json; last: string } {
  let cur: Json = doc;
  for (const part of parts.slice(0, -1)) {
    const next: Json | undefined = Array.isArray(cur)
      ? cur[Number(part)]
      : isObject(cur)
        ? cur[part]
        : undefined;
    if (next === undefined) throw new PatchError(`path /${parts.join("/")} does not exist`);
    cur = next;
  }
  const last = parts.at(-1);
  if (last === undefined) throw new PatchError("operation on the document root is not supported");
  return { parent: cur, last };
}

function getAt(doc: Json, path: string): Json {
  const { parent, last } = parentOf(doc, pointer(path));
  const v = Array.isArray(parent) ? parent[Number(last)] : isObject(parent) ? parent[last] : undefined;
  if (v === undefined) throw new PatchError(`path ${path} does not exist`);
  return v;
}

function removeAt(doc: Json, path: string): Json {
  const { parent, last } = parentOf(doc, pointer(path));
  const old = getAt(doc, path);
  if (Array.isArray(parent)) parent.splice(Number(last), 1);
  else if (isObject(parent)) delete parent[last];
  return old;
}

function addAt(doc: Json, path: string, value: Json): void {
  const { parent, last } = parentOf(doc, pointer(path));
  if (Array.isArray(parent)) {
    const index = last === "-" ? parent.length : Number(last);
    if (!Number.isInteger(index) || index < 0 || index > parent.length) {
      throw new PatchError(`index ${last} out of range at ${path}`);
    }
    parent.splice(index, 0, value);
  } else if (isObject(parent)) {
    parent[last] = value;
  } else {
    throw new PatchError(`path ${path} does not exist`);
  }
}

export function jsonPatch(doc: Json, ops: Json): Json {
  if (!Array.isArray(ops)) throw new PatchError("a JSON patch must be an array of operations");
  const result = structuredClone(doc);
  for (const op of ops) {
    if (!isObject(op) || typeof op["path"] !== "string") throw new PatchError("operation without path");
    const path = op["path"];
    const from = typeof op["from"] === "string" ? op["from"] : "";
    switch (op["op"]) {
      case "add":
        addAt(result, path, structuredClone(op["value"] ?? null));
        break;
      case "remove":
        removeAt(result, path);
        break;
      case "replace":
        removeAt(result, path);
        addAt(result, path, structuredClone(op["value"] ?? null));
        break;
      case "move":
        addAt(result, path, removeAt(result, from));
        break;
      case "copy":
        addAt(result, path, structuredClone(getAt(result, from)));
        break;
      case "test":
        if (JSON.stringify(getAt(result, path)) !== JSON.stringify(op["value"])) {
          throw new PatchError(`test operation failed at ${path}`);
        }
        break;
      default:
        throw new PatchError(`unsupported JSON patch operation ${JSON.stringify(op["op"])}`);
    }
  }
  return result;
}

export type { Json, JsonObject };
