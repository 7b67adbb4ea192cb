/** Label and field selectors as the apiserver parses them (the subset kube-proxy and kubectl send). */

type LabelRequirement =
  | { readonly op: "exists" | "!exists"; readonly key: string }
  | { readonly op: "in" | "notin"; readonly key: string; readonly values: readonly string[] };

export type Matcher = (obj: Record<string, unknown>) => boolean;

export class SelectorError extends Error {}

function splitTopLevel(text: string): string[] {
  const parts: string[] = [];
  let depth = 0;
  let current = "";
  for (const ch of text) {
    if (ch === "(") depth++;
    if (ch === ")") depth--;
    if (ch === "," && depth === 0) {
      parts.push(current);
      current = "";
    } else {
      current += ch;
    }
  }
  parts.push(current);
  return parts.map((p) => p.trim()).filter((p) => p !== "");
}

const LABEL_VALUE = /^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$/;

function checkValues(text: string, values: readonly string[]): readonly string[] {
  const bad = values.find((v) => !LABEL_VALUE.test(v));
  if (bad !== undefined)
    throw new SelectorError(`invalid label value ${JSON.stringify(bad)} in ${JSON.stringify(text)}`);
  return values;
}

function parseLabelRequirement(text: string): LabelRequirement {
  const setMatch = /^(\S+)\s+(in|notin)\s*\(([^)]*)\)$/.exec(text);
  if (setMatch) {
    const values = (setMatch[3] ?? "").split(",").map((v) => v.trim());
    return { op: setMatch[2] as "in" | "notin", key: setMatch[1] ?? "", values: checkValues(text, values) };
  }
  const opMatch = /^([^=!\s]+)\s*(==|!=|=)\s*(\S*)$/.exec(text);
  if (opMatch) {
    const op = opMatch[2] === "!=" ? "notin" : "in";
    return { op, key: opMatch[1] ?? "", values: checkValues(text, [opMatch[3] ?? ""]) };
  }
  if (/^![^=!\s(),]+$/.test(text)) return { op: "!exists", key: text.slice(1) };
  if (/^[^=!\s(),]+$/.test(text)) return { op: "exists", key: text };
  throw new SelectorError(`unable to parse requirement: ${JSON.stringify(text)}`);
}

function labelsOf(obj: Record<string, unknown>): Record<string, string> {
  const meta = obj["metadata"] as { labels?: Record<string, string> } | undefined;
  return meta?.labels ?? {};
}

export function parseLabelSelector(text: string): Matcher {
  const reqs = splitTopLevel(text).map(parseLabelRequirement);
  return (obj) => {
    const labels = labelsOf(obj);
    return reqs.every((r) => {
      const has = Object.hasOwn(labels, r.key);
      switch (r.op) {
        case "exists":
          return has;
        case "!exists":
          return !has;
        case "in":
          return has && r.values.includes(labels[r.key] ?? "");
        case "notin":
          return !has || !r.values.includes(labels[r.key] ?? "");
      }
    });
  };
}

function fieldValue(obj: Record<string, unknown>, path: string): string {
  let cur: unknown = obj;
  for (const part of path.split(".")) {
    if (cur === null || typeof cur !== "object") return "";
    cur = (cur as Record<string, unknown>)[part];
  }
  return cur === undefined || cur === null ? "" : String(cur);
}

/** Fields each resource supports in field selectors, like the real apiserver's field label conversion. */
const SUPPORTED_FIELDS: Readonly<Record<string, readonly string[]>> = {
  services: ["metadata.name", "metadata.namespace", "spec.clusterIP", "spec.type"],
  nodes: ["metadata.name", "spec.unschedulable"],
  endpointslices: ["metadata.name", "metadata.namespace", "addressType"],
};

export function parseFieldSelector(resource: string, text: string): Matcher {
  const reqs = splitTopLevel(text).map((part) => {
    const m = /^([^=!\s]+)\s*(==|!=|=)\s*(\S*)$/.exec(part);
    if (!m) throw new SelectorError(`invalid field selector: ${JSON.stringify(part)}`);
    const field = m[1] ?? "";
    if (!(SUPPORTED_FIELDS[resource] ?? []).includes(field)) {
      throw new SelectorError(`field label not supported: ${field}`);
    }
    return { field, negate: m[2] === "!=", value: m[3] ?? "" };
  });
  return (obj) => reqs.every((r) => (fieldValue(obj, r.field) === r.value) !== r.negate);
}
