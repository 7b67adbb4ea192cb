/**
 * Generators of adversarial inputs for the fuzz campaign (test/fuzz/campaign.ts): valid
 * Services / EndpointSlices / Nodes as an API server would store them, then mutated at random
 * places (wrong types, absurd numbers, impossible or oddly spelled IPs, huge or unicode strings,
 * quotes, newlines and spaces, missing and extra fields, deep junk), and random YAML texts.
 */
import fc from "fast-check";

/** IP-like spellings: valid, canonical or not, and impossible ones. */
export const IP_SPELLINGS = [
  "10.0.0.1",
  "10.0.0.2",
  "172.30.0.10",
  "192.168.0.2",
  "2001:db8::1",
  "fd00:10:96::a",
  "::ffff:10.0.0.1",
  "::ffff:172.30.0.10",
  "010.000.000.001",
  "172.30.0.041",
  "1.2.3.256",
  "1.2.3",
  "1.2.3.4.5",
  "-1.2.3.4",
  "0x0a.0.0.1",
  "1e3.0.0.1",
  "[::1]",
  "fe80::1%eth0",
  "1.2.3.4%eth0",
  "::",
  "0.0.0.0",
  "255.255.255.255",
  "127.0.0.1",
  "::1",
  "2001:db8:::1",
  "2001:db8::g",
  " 10.0.0.1",
  "10.0.0.1 ",
  "10.0.0.1\n-j ACCEPT",
  '10.0.0.1" -j ACCEPT "',
  "10.0.0.1 -j ACCEPT",
  "10.0.0.1; flush ruleset",
  "10.0.0.1 } ; flush ruleset ; {",
  "10.0.0.1#",
  "１０.0.0.1",
  "",
];

export const CIDR_SPELLINGS = [
  "10.0.0.0/8",
  "203.0.113.0/25",
  "203.0.113.000/025",
  "10.0.0.1/32",
  "0.0.0.0/0",
  "::/0",
  "2001:db8::/64",
  "::ffff:10.0.0.0/104",
  "10.0.0.0/33",
  "10.0.0.0/-1",
  "10.0.0.0/",
  "10.0.0.0/8/8",
  "10.0.0.0/08",
  "10.0.0.0/ 8",
  "2001:db8::/129",
  "10.0.0.0/8 -j ACCEPT",
  "10.0.0.0/8\n*filter",
  "10.0.0.0/8 } drop ; {",
  "10.0.0.0/abc",
  "",
];

const DNS_NAMES = ["svc1", "a", "ns1", "kube-system", "x-y-z", "a".repeat(63), "p80", "udp-53"];

/** Strings that must never reach rule text outside a quoted comment. */
export const NASTY_STRINGS = [
  " ",
  "a b",
  '"',
  "'",
  "\\",
  '\\"',
  "\n",
  "\r\n",
  "\t",
  "\u0000",
  "\u2028",
  "ünïcödé",
  "名前",
  "🙂",
  "A-UPPER",
  "-j ACCEPT",
  '" -j ACCEPT -m comment --comment "',
  "x\n-A KUBE-SERVICES -j ACCEPT",
  "x\nadd rule ip kube-proxy services accept",
  "} ; flush ruleset ; {",
  "#comment",
  "$(reboot)",
  "`reboot`",
  "${x}",
  "%s%n",
  "a".repeat(64),
  "a".repeat(254),
  "b".repeat(5000),
  "-leading",
  "trailing-",
  "dot.ted",
  "under_score",
  "col:on",
  "sl/ash",
  "0",
  "true",
  "null",
  "~",
  "&anchor",
  "*alias",
  "!!str",
  "- item",
  "key: value",
  "---",
  "...",
];

const NUMBERS: unknown[] = [
  0,
  -1,
  1,
  65535,
  65536,
  -65535,
  2 ** 31,
  2 ** 53,
  2 ** 64,
  Number.MAX_VALUE,
  Number.MIN_VALUE,
  -0,
  0.5,
  80.0001,
  NaN,
  Infinity,
  -Infinity,
  86400,
  86401,
  "80",
  "0x50",
  "1e2",
  " 80",
];

function deepJunk(depth: number): unknown {
  let v: unknown = "bottom";
  for (let i = 0; i < depth; i++) v = i % 2 === 0 ? { a: v } : [v];
  return v;
}

/** A value to put somewhere it does not belong (or where it does, with odd content). */
export const junkArb: fc.Arbitrary<unknown> = fc.oneof(
  { weight: 4, arbitrary: fc.constantFrom(...NASTY_STRINGS) },
  { weight: 3, arbitrary: fc.constantFrom(...IP_SPELLINGS) },
  { weight: 2, arbitrary: fc.constantFrom(...CIDR_SPELLINGS) },
  { weight: 3, arbitrary: fc.constantFrom(...NUMBERS) },
  { weight: 1, arbitrary: fc.constantFrom(true, false, null, undefined) },
  { weight: 2, arbitrary: fc.string({ unit: "grapheme", maxLength: 40 }) },
  { weight: 1, arbitrary: fc.string({ unit: "binary", maxLength: 20 }) },
  { weight: 1, arbitrary: fc.constantFrom<unknown>([], {}, [[]], [{}], [null], { "": "" }) },
  { weight: 1, arbitrary: fc.integer({ min: 1, max: 3000 }).map(deepJunk) },
  {
    weight: 1,
    arbitrary: fc.constantFrom<unknown>(
      { __proto__: { polluted: 1 } },
      JSON.parse('{"__proto__": {"polluted": 1}}') as unknown,
      { constructor: { prototype: { polluted: 1 } } },
      { toString: "x", valueOf: 1, hasOwnProperty: "x" },
    ),
  },
  { weight: 1, arbitrary: fc.array(fc.constantFrom(...IP_SPELLINGS), { maxLength: 5 }) },
  { weight: 1, arbitrary: fc.array(fc.constantFrom(...NASTY_STRINGS), { maxLength: 3 }) },
  {
    weight: 1,
    arbitrary: fc.dictionary(fc.constantFrom(...NASTY_STRINGS), fc.constantFrom(...NASTY_STRINGS), {
      maxKeys: 3,
    }),
  },
);

const nameArb = fc.constantFrom(...DNS_NAMES);
const smallName = fc.constantFrom("svc1", "svc2", "svc3");
const nsArb = fc.constantFrom("ns1", "ns2", "a".repeat(63));
const protocolArb = fc.constantFrom("TCP", "UDP", "SCTP");
const validIPv4 = fc.constantFrom(
  "172.30.0.10",
  "172.30.0.11",
  "10.0.0.1",
  "10.0.0.2",
  "10.180.0.1",
  "192.168.99.11",
);
const validIPv6 = fc.constantFrom("fd00:10:96::a", "2001:db8::1", "fd00:10::2");
const anyIP = fc.oneof(
  { weight: 6, arbitrary: fc.oneof(validIPv4, validIPv6) },
  fc.constantFrom(...IP_SPELLINGS),
);
const anyCIDR = fc.constantFrom(...CIDR_SPELLINGS);
const labelsArb = fc.dictionary(
  fc.constantFrom(
    "app",
    "topology.kubernetes.io/zone",
    "service.kubernetes.io/headless",
    "x".repeat(300),
    "ü",
    "a b",
  ),
  fc.constantFrom("zone-a", "zone-b", "", "v", "a b", "x".repeat(300)),
  { maxKeys: 3 },
);

export const serviceArb: fc.Arbitrary<Record<string, unknown>> = fc
  .record({
    name: fc.oneof({ weight: 4, arbitrary: smallName }, nameArb),
    namespace: nsArb,
    type: fc.constantFrom(
      "ClusterIP",
      "NodePort",
      "LoadBalancer",
      "ClusterIP",
      "NodePort",
      "LoadBalancer",
      "ExternalName",
      undefined,
    ),
    clusterIP: fc.oneof(
      { weight: 8, arbitrary: validIPv4 },
      { weight: 3, arbitrary: validIPv6 },
      { weight: 1, arbitrary: fc.constantFrom("None", "") },
    ),
    secondIP: fc.option(validIPv6),
    ports: fc.uniqueArray(
      fc.record({
        name: fc.constantFrom("p80", "p443", "dns", "a".repeat(63), "x-y"),
        protocol: protocolArb,
        port: fc.integer({ min: 1, max: 65535 }),
        nodePort: fc.option(fc.integer({ min: 30000, max: 32767 }), { nil: undefined }),
        targetPort: fc.oneof(fc.integer({ min: 1, max: 65535 }), fc.constant("http")),
      }),
      { minLength: 1, maxLength: 3, selector: (p) => p.name },
    ),
    externalIPs: fc.array(anyIP, { maxLength: 3 }),
    sourceRanges: fc.array(anyCIDR, { maxLength: 3 }),
    ingress: fc.array(fc.record({ ip: anyIP, ipMode: fc.constantFrom("VIP", "Proxy", undefined) }), {
      maxLength: 2,
    }),
    affinity: fc.constantFrom("None", "ClientIP", undefined),
    timeout: fc.option(fc.integer({ min: 1, max: 86400 }), { nil: undefined }),
    etp: fc.constantFrom("Cluster", "Local", undefined),
    itp: fc.constantFrom("Cluster", "Local", undefined),
    hcnp: fc.option(fc.integer({ min: 30000, max: 32767 }), { nil: undefined }),
    labels: labelsArb,
  })
  .map((s) => ({
    apiVersion: "v1",
    kind: "Service",
    metadata: { name: s.name, namespace: s.namespace, uid: "uid-1", resourceVersion: "1", labels: s.labels },
    spec: {
      type: s.type,
      clusterIP: s.clusterIP,
      clusterIPs: s.secondIP === null || !/^\d/.test(s.clusterIP) ? [s.clusterIP] : [s.clusterIP, s.secondIP],
      ports: s.ports.map((p) => ({ ...p, name: s.ports.length === 1 && p.name === "x-y" ? "" : p.name })),
      externalIPs: s.externalIPs,
      loadBalancerSourceRanges: s.sourceRanges,
      sessionAffinity: s.affinity,
      sessionAffinityConfig:
        s.timeout === undefined ? undefined : { clientIP: { timeoutSeconds: s.timeout } },
      externalTrafficPolicy: s.etp,
      internalTrafficPolicy: s.itp,
      healthCheckNodePort: s.hcnp,
    },
    status: { loadBalancer: { ingress: s.ingress } },
  }));

export const endpointSliceArb: fc.Arbitrary<Record<string, unknown>> = fc
  .record({
    service: smallName,
    namespace: nsArb,
    suffix: fc.constantFrom("abc", "def", "x".repeat(200)),
    addressType: fc.constantFrom("IPv4", "IPv6", "FQDN"),
    endpoints: fc.array(
      fc.record({
        addresses: fc.array(anyIP, { minLength: 1, maxLength: 2 }),
        ready: fc.constantFrom(true, false, undefined, null),
        serving: fc.constantFrom(true, false, undefined),
        terminating: fc.constantFrom(true, false, undefined),
        nodeName: fc.constantFrom("test-node", "other-node", undefined, "a b", "x".repeat(300)),
        zone: fc.constantFrom("zone-a", "zone-b", undefined, "ü"),
        zoneHints: fc.option(fc.array(fc.constantFrom("zone-a", "zone-b", "\n"), { maxLength: 2 }), {
          nil: undefined,
        }),
      }),
      { maxLength: 4 },
    ),
    ports: fc.array(
      fc.record({
        name: fc.constantFrom("p80", "p443", "dns", "a".repeat(63), "x-y", ""),
        port: fc.option(fc.integer({ min: 0, max: 65535 }), { nil: undefined }),
        protocol: fc.constantFrom("TCP", "UDP", "SCTP", undefined),
      }),
      { maxLength: 3 },
    ),
  })
  .map((s) => ({
    apiVersion: "discovery.k8s.io/v1",
    kind: "EndpointSlice",
    metadata: {
      name: `${s.service}-${s.suffix}`,
      namespace: s.namespace,
      labels: { "kubernetes.io/service-name": s.service },
      annotations: { "endpoints.kubernetes.io/last-change-trigger-time": "2026-01-01T00:00:00Z" },
    },
    addressType: s.addressType,
    endpoints: s.endpoints.map((e) => ({
      addresses: e.addresses,
      conditions: { ready: e.ready, serving: e.serving, terminating: e.terminating },
      nodeName: e.nodeName,
      zone: e.zone,
      hints: e.zoneHints === undefined ? undefined : { forZones: e.zoneHints.map((name) => ({ name })) },
    })),
    ports: s.ports,
  }));

export const nodeArb: fc.Arbitrary<Record<string, unknown>> = fc
  .record({
    name: fc.constantFrom("test-node", "other-node", "a.b.c"),
    podCIDRs: fc.array(anyCIDR, { maxLength: 2 }),
    labels: labelsArb,
    addresses: fc.array(fc.record({ type: fc.constantFrom("InternalIP", "Hostname", "x"), address: anyIP }), {
      maxLength: 2,
    }),
  })
  .map((n) => ({
    apiVersion: "v1",
    kind: "Node",
    metadata: { name: n.name, labels: n.labels },
    spec: { podCIDR: n.podCIDRs[0], podCIDRs: n.podCIDRs, taints: [{ key: "k", effect: "NoSchedule" }] },
    status: { addresses: n.addresses },
  }));

/**
 * `slice` made to belong to `service` (same namespace, Service label, port names and protocols,
 * an address family of its cluster IP): independent draws almost never match, and the
 * endpoint code paths only run for slices that do.
 */
export function linkSlice(
  slice: Record<string, unknown>,
  service: Record<string, unknown>,
): Record<string, unknown> {
  const meta = service["metadata"] as { name: string; namespace: string };
  const spec = service["spec"] as { clusterIP: string; ports: { name: string; protocol: string }[] };
  const sliceMeta = slice["metadata"] as Record<string, unknown>;
  const ports = (slice["ports"] as { port?: number }[]) ?? [];
  return {
    ...slice,
    addressType: slice["addressType"] === "FQDN" ? "FQDN" : spec.clusterIP.includes(":") ? "IPv6" : "IPv4",
    metadata: {
      ...sliceMeta,
      namespace: meta.namespace,
      name: `${meta.name}-${String(sliceMeta["name"]).split("-").pop()}`,
      labels: { "kubernetes.io/service-name": meta.name },
    },
    ports: spec.ports.map((p, i) => ({
      name: p.name,
      protocol: p.protocol,
      port: ports[i]?.port ?? 8080 + i,
    })),
  };
}

/** One mutation: where (an index into the object's paths, taken modulo) and what. */
export interface Mutation {
  readonly at: number;
  readonly action: "replace" | "delete" | "extra" | "wrap" | "stringify";
  readonly junk: unknown;
  readonly key: string;
}

const mutationArb: fc.Arbitrary<Mutation> = fc.record({
  at: fc.nat(),
  action: fc.constantFrom("replace", "replace", "replace", "delete", "extra", "wrap", "stringify"),
  junk: junkArb,
  key: fc.constantFrom("extra", "status", "spec", "metadata", "__proto__", "constructor", " ", "ü", "kind"),
});

type Container = Record<string, unknown> | unknown[];

/** Every (container, key) pair of a JSON tree, depth-first. */
function slots(root: Container): Array<[Container, string | number]> {
  const out: Array<[Container, string | number]> = [];
  const walk = (c: Container, depth: number): void => {
    if (depth > 12) return;
    const entries: Array<[string | number, unknown]> = Array.isArray(c)
      ? c.map((v, i) => [i, v])
      : Object.entries(c);
    for (const [k, v] of entries) {
      out.push([c, k]);
      if (typeof v === "object" && v !== null) walk(v as Container, depth + 1);
    }
  };
  walk(root, 0);
  return out;
}

/** A copy of a junk value; the deep ones (fresh from their generator each time) as they are. */
function cloneJunk(junk: unknown): unknown {
  try {
    return structuredClone(junk);
  } catch {
    return junk;
  }
}

/** `obj` (deep-copied) with the mutations applied. */
export function mutate(obj: Record<string, unknown>, mutations: readonly Mutation[]): unknown {
  const copy = structuredClone(obj) as Record<string, unknown>;
  for (let m of mutations) {
    const all = slots(copy);
    if (all.length === 0) break;
    const [c, k] = all[m.at % all.length]!;
    // fast-check hands out the same constant objects again: never let one be changed.
    m = { ...m, junk: cloneJunk(m.junk) };
    const rec = c as Record<string | number, unknown>;
    switch (m.action) {
      case "replace":
        rec[k] = m.junk;
        break;
      case "delete":
        if (Array.isArray(c) && typeof k === "number") c.splice(k, 1);
        else delete rec[k];
        break;
      case "extra":
        if (!Array.isArray(c))
          Object.defineProperty(c, m.key, {
            value: m.junk,
            enumerable: true,
            writable: true,
            configurable: true,
          });
        else c.push(m.junk);
        break;
      case "wrap":
        rec[k] = [rec[k]];
        break;
      case "stringify":
        rec[k] =
          typeof rec[k] === "string"
            ? `${rec[k] as string}${typeof m.junk === "string" ? m.junk : (JSON.stringify(m.junk) ?? "")}`
            : (JSON.stringify(rec[k]) ?? "undefined");
        break;
    }
  }
  return copy;
}

/** Two in five objects stay valid, so that the model and renderers see plenty of real input. */
export const mutationsArb = fc.oneof(
  { weight: 2, arbitrary: fc.constant([]) },
  { weight: 3, arbitrary: fc.array(mutationArb, { minLength: 1, maxLength: 3 }) },
);

/** A text that looks like YAML often enough to reach deep into the parsers. */
export const yamlishTextArb: fc.Arbitrary<string> = fc.oneof(
  fc.string({
    unit: fc.constantFrom(
      "-",
      ":",
      " ",
      " ",
      "\n",
      "\n",
      "{",
      "}",
      "[",
      "]",
      "&",
      "*",
      "!",
      "|",
      ">",
      "'",
      '"',
      "#",
      "%",
      "@",
      "`",
      "a",
      "k",
      "1",
      "\t",
      "ü",
      "?",
      ",",
      "\\",
      "\r",
      "~",
      ".",
    ),
    maxLength: 300,
  }),
  fc
    .array(
      fc.tuple(
        fc.nat({ max: 6 }),
        fc.constantFrom(
          "kind: Service",
          "kind: List",
          "items:",
          "- ",
          "metadata:",
          "name: x",
          "spec:",
          "ports:",
          "- port: 80",
          "clusterIP: 10.0.0.1",
          "---",
          "&a [1, 2]",
          "*a",
          "!!binary x",
          "key: |",
          "  text",
          "\"q\": 'r'",
          "? complex",
          "{a: [b, {c: d}]}",
          "<<: *a",
          "%YAML 1.2",
        ),
        fc.constantFrom("", " #c", "\t", ":", " "),
      ),
      { maxLength: 30 },
    )
    .map((lines) => lines.map(([indent, body, tail]) => `${" ".repeat(indent)}${body}${tail}`).join("\n")),
);

/** YAML texts whose aliases sit inside the node they name: the parsed object contains itself. */
export const RECURSIVE_ALIAS_TEXTS = [
  "kind: Service\nmetadata: &m\n  name: web\n  namespace: default\n  self: *m\nspec:\n  clusterIP: 10.0.0.1\n  ports: [{port: 80}]\n",
  "kind: EndpointSlice\naddressType: IPv4\nmetadata: {name: s, namespace: default}\nendpoints: &e [{addresses: [10.0.0.2], more: *e}]\n",
  "kind: List\nitems: &i\n  - kind: Node\n    metadata: {name: n}\n    spec: {taints: *i}\n",
  "&doc\nkind: Service\nmetadata: {name: web, namespace: default}\nspec: *doc\n",
];

/** A YAML alias bomb (billion laughs) of `levels` levels. */
export function aliasBomb(levels: number): string {
  const lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"];
  for (let i = 1; i < levels; i++)
    lines.push(
      `a${i}: &a${i} [${Array(10)
        .fill(`*a${i - 1}`)
        .join(", ")}]`,
    );
  return lines.join("\n") + "\n";
}

/** Text mutations of a serialised manifest: cut, duplicate, insert, re-indent. */
export interface TextEdit {
  readonly at: number;
  readonly len: number;
  readonly op: "cut" | "dup" | "insert" | "indent" | "tab";
  readonly text: string;
}

export const textEditsArb: fc.Arbitrary<TextEdit[]> = fc.array(
  fc.record({
    at: fc.nat(),
    len: fc.nat({ max: 40 }),
    op: fc.constantFrom("cut", "dup", "insert", "indent", "tab"),
    text: fc.constantFrom(...NASTY_STRINGS, ": ", "- ", "\n  ", "&x ", "*x", "{", "[", "'", "\n---\n"),
  }),
  { maxLength: 3 },
);

export function editText(text: string, edits: readonly TextEdit[]): string {
  let t = text;
  for (const e of edits) {
    const at = t.length === 0 ? 0 : e.at % t.length;
    switch (e.op) {
      case "cut":
        t = t.slice(0, at) + t.slice(at + e.len);
        break;
      case "dup":
        t = t.slice(0, at + e.len) + t.slice(at, at + e.len) + t.slice(at + e.len);
        break;
      case "insert":
        t = t.slice(0, at) + e.text + t.slice(at);
        break;
      case "indent": {
        const nl = t.lastIndexOf("\n", at);
        t = t.slice(0, nl + 1) + " ".repeat(e.len % 5) + t.slice(nl + 1);
        break;
      }
      case "tab":
        t = t.slice(0, at) + "\t" + t.slice(at);
        break;
    }
  }
  return t;
}
