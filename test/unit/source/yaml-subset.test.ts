import assert from "node:assert/strict";
import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { test } from "node:test";
import fc from "fast-check";
import { LineCounter, parseAllDocuments, stringify } from "yaml";
import type { ToStringOptions } from "yaml";
import { parseYamlSubset } from "../../../src/source/yaml-subset.ts";
import type { SubsetDocument } from "../../../src/source/yaml-subset.ts";
import { manifestYaml } from "../../../bench/yaml-parse.ts";
import { syntheticManifestObjects } from "../../../bench/synthetic.ts";

const ROOT = join(import.meta.dirname, "../../..");

/** What the daemon would get from yaml: the non-null documents and their lines, or "error". */
function reference(text: string): SubsetDocument[] | "error" {
  const lineCounter = new LineCounter();
  const docs = parseAllDocuments(text, { lineCounter });
  if (!Array.isArray(docs)) return [];
  if (docs.some((d) => d.errors.length > 0)) return "error";
  return docs
    .map((d) => ({
      value: d.toJS() as unknown,
      line: lineCounter.linePos(d.contents?.range[0] ?? d.range[0]).line,
    }))
    .filter((d) => d.value !== null && d.value !== undefined);
}

/** parseYamlSubset's answer, checked against yaml's whenever it is not null. */
function checked(text: string): SubsetDocument[] | null {
  const fast = parseYamlSubset(text);
  if (fast === null) return null;
  const nonNull = fast.filter((d) => d.value !== null && d.value !== undefined);
  assert.deepStrictEqual(nonNull, reference(text), `for ${JSON.stringify(text)}`);
  return fast;
}

function values(text: string): unknown[] | null {
  return checked(text)?.map((d) => d.value) ?? null;
}

test("supported constructs parse as yaml does", () => {
  const cases: Array<[string, unknown[]]> = [
    ["", []],
    ["# only a comment\n\n", []],
    ["a: 1\nb: x\n", [{ a: 1, b: "x" }]],
    ["a:\n  b:\n    c: d\n  e: f\ng: h\n", [{ a: { b: { c: "d" }, e: "f" }, g: "h" }]],
    [
      "ports:\n- name: x\n  port: 80\n- name: y\nnext: 1\n",
      [{ ports: [{ name: "x", port: 80 }, { name: "y" }], next: 1 }],
    ],
    ["ports:\n  - name: x\n    port: 80\n", [{ ports: [{ name: "x", port: 80 }] }]],
    ["-   a: 1\n    b: 2\n- c\n", [[{ a: 1, b: 2 }, "c"]]],
    ["-\n  a: 1\n-\n- x\n", [[{ a: 1 }, null, "x"]]],
    ["- - a\n  - b\n- - c\n", [[["a", "b"], ["c"]]]],
    ["- a:\n  - x\n  b: 1\n", [[{ a: ["x"], b: 1 }]]],
    ["- a:\n  b: 1\n- a:\n- b\n", [[{ a: null, b: 1 }, { a: null }, "b"]]],
    ["a: {}\nb: []\nc: [] # c\n", [{ a: {}, b: [], c: [] }]],
    [
      "a: 'it''s'\nb: \"q\\\"\\\\\\/\\n\\t\\r\\b\\f\\0\\u00e9\\ud83d\\ude00\"\n",
      [{ a: "it's", b: 'q"\\/\n\t\r\b\f\0é😀' }],
    ],
    ["'a b': 1\n\"c: d\": 2\n'': 3\n", [{ "a b": 1, "c: d": 2, "": 3 }]],
    [
      "a: x # comment\nb: x#y\nc: 'v' # c\nd: # nothing\ne: #\n  f: 1\n",
      [{ a: "x", b: "x#y", c: "v", d: null, e: { f: 1 } }],
    ],
    [
      "a:   spaced   \nb: -x\nc: ::1\nd: ?x\ne: a,b]\nf: fd00::1\ng: a:b\n",
      [{ a: "spaced", b: "-x", c: "::1", d: "?x", e: "a,b]", f: "fd00::1", g: "a:b" }],
    ],
    [
      "kubernetes.io/service-name: x\napp.kubernetes.io/name: y\n_a-b.c/d: z\n",
      [{ "kubernetes.io/service-name": "x", "app.kubernetes.io/name": "y", "_a-b.c/d": "z" }],
    ],
    ["a: ~\nb: null\nc: Null\nd: NULL\ne:\n", [{ a: null, b: null, c: null, d: null, e: null }]],
    ["a: true\nb: True\nc: FALSE\nd: tRUE\ne: yes\n", [{ a: true, b: true, c: false, d: "tRUE", e: "yes" }]],
    [
      "a: 80\nb: -1\nc: +7\nd: 007\ne: 12345678901234567890\nf: -0\n",
      [{ a: 80, b: -1, c: 7, d: 7, e: Number("12345678901234567890"), f: -0 }],
    ],
    [
      "a: 0x1F\nb: 0o17\nc: 0o8\nd: 0X1F\ne: 1e3\nf: .5\ng: 5.\nh: -1.5e-3\ni: 1_000\n",
      [{ a: 31, b: 15, c: "0o8", d: "0X1F", e: 1000, f: 0.5, g: 5, h: -0.0015, i: "1_000" }],
    ],
    [
      "a: .inf\nb: -.Inf\nc: .nan\nd: .NaN\ne: -.nan\nf: inf\n",
      [{ a: Infinity, b: -Infinity, c: NaN, d: NaN, e: "-.nan", f: "inf" }],
    ],
    ["__proto__: 1\nconstructor: 2\n", [JSON.parse('{"__proto__": 1, "constructor": 2}')]],
    ["a: 1\r\nb:\r\n- 2\r\n", [{ a: 1, b: [2] }]],
    ["  a: 1\n  b: 2\n", [{ a: 1, b: 2 }]],
    ["hello\n", ["hello"]],
    ["a :1\n", ["a :1"]],
    ["---\n'x'\n---\n- 1\n", ["x", [1]]],
    ["{}\n", [{}]],
    ["- true\n- null\n- False\n", [[true, null, false]]],
  ];
  for (const [text, expected] of cases) assert.deepStrictEqual(values(text), expected, JSON.stringify(text));
});

test("documents: separators, empty documents and the line of each document's first token", () => {
  const text = "# head\n---\n\n# c\na: 1\n---\n---\n# nothing\n---\n  - x\n---\nb: 2";
  assert.deepStrictEqual(checked(text), [
    { value: { a: 1 }, line: 5 },
    { value: ["x"], line: 10 },
    { value: { b: 2 }, line: 12 },
  ]);
});

test("anything outside the subset returns null", () => {
  const outside = [
    // document markers and directives
    "--- a: 1\n",
    "--- # c\na: 1\n",
    "---x\n",
    "a: 1\n...\n",
    "%YAML 1.2\n---\na: 1\n",
    "%TAG ! tag:x,2000:\n---\na: 1\n",
    // tabs, control characters, BOM
    "a:\tb\n",
    "a:\n\tb: 1\n",
    "a: x\u0001\n",
    "\ufeffa: 1\n",
    "a: 1\rb: 2\n",
    "a: \u0085\n",
    // flow collections other than {} and []
    "a: {b: 1}\n",
    "a: [1, 2]\n",
    "a: [ ]\n",
    "- {b: 1}\n",
    "a: {}x\n",
    // multi-line scalars and continuations
    "a: x\n  y\n",
    "a: x\n  # c\n  y\n",
    "- x\n  y\n",
    "a:\n  x\n  y\n",
    "a: 'x\n  y'\n",
    'a: "x\n  y"\n',
    "hello\nworld\n",
    "a: |\n  x\n",
    "a: >-\n  x\n",
    // anchors, aliases, tags, complex keys, merge keys, reserved indicators
    "a: &x 1\nb: *x\n",
    "a: !!str 1\n",
    "!x a: 1\n",
    "? a\n: 1\n",
    "<<: {}\n",
    "a: @x\n",
    "a: `x\n",
    "a: %x\n",
    "a: ,x\n",
    "a: ]x\n",
    // plain scalars that are not one simple value
    "a: b: c\n",
    "a: b:\n",
    "a: - b\n",
    "a: -\n",
    "a: ? b\n",
    "a: : b\n",
    // keys outside the subset
    "a b: 1\n",
    "1: x\n",
    "true: x\n",
    "null: x\n",
    "-a: 1\n",
    "a : 1\n",
    '"a" : 1\n',
    `${"k".repeat(1100)}: 1\n`,
    // duplicate keys
    "a: 1\na: 2\n",
    "a: 1\n'a': 2\n",
    // escapes outside the common ones
    'a: "\\x41"\n',
    'a: "\\e"\n',
    'a: "\\U0001F600"\n',
    'a: "\\u12"\n',
    'a: "x\\\n',
    // quoted scalars followed by something
    "a: 'x' y\n",
    "a: 'x'#c\n",
    // indentation errors
    "a:\n  b: 1\n c: 2\n",
    "a:\n    - x\n  - y\n",
    "- a: 1\n b: 2\n",
    "- a: 1\n   b: 2\n",
    "a: 1\n- x\n",
    "- x\na: 1\n",
    "  a: 1\nb: 2\n",
  ];
  for (const text of outside) assert.equal(parseYamlSubset(text), null, JSON.stringify(text));
});

function yamlFiles(dir: string): string[] {
  return readdirSync(join(ROOT, dir), { recursive: true, encoding: "utf8" })
    .filter((f) => f.endsWith(".yaml") || f.endsWith(".yml"))
    .map((f) => join(dir, f));
}

test("the repository's YAML files: null or yaml's result; the k8s examples take the fast path", () => {
  const examples = yamlFiles("examples");
  assert.ok(examples.length > 0);
  for (const file of examples) assert.notEqual(checked(readFileSync(join(ROOT, file), "utf8")), null, file);
  const tests = yamlFiles("test");
  assert.ok(tests.length > 0);
  for (const file of tests) checked(readFileSync(join(ROOT, file), "utf8"));
});

test("the benchmark's synthetic manifests take the fast path in both styles", () => {
  const objects = syntheticManifestObjects(20, 3);
  for (const kubectlStyle of [false, true]) {
    const docs = checked(manifestYaml(objects, kubectlStyle));
    assert.deepStrictEqual(
      docs?.map((d) => d.value),
      objects,
    );
  }
});

// --- Property tests ---------------------------------------------------------------------------

const TRICKY_STRINGS = [
  "80",
  "0x1F",
  "0o17",
  "1e3",
  "1.5",
  ".5",
  "-0",
  "007",
  "+1",
  ".inf",
  ".nan",
  "1_000",
  "true",
  "True",
  "FALSE",
  "yes",
  "no",
  "on",
  "null",
  "Null",
  "~",
  "",
  " ",
  "  x",
  "x  ",
  "a: b",
  "a:",
  ":a",
  "::1",
  "fd00:10:96::a",
  "a #b",
  "a#b",
  "#x",
  "-",
  "- x",
  "-x",
  "--",
  "---",
  "...",
  "? x",
  "?x",
  "'",
  "''",
  '"',
  "it's",
  'say "hi"',
  "\\",
  "a\\nb",
  "{}",
  "[]",
  "{a}",
  "[a]",
  "a,b",
  "&a",
  "*a",
  "!a",
  "|",
  ">",
  "%",
  "@x",
  "`x",
  "<<",
  "é",
  "日本語",
  "😀",
  "a\nb",
  "a\n",
  "\t",
  "x\u0085",
  "\u00a0",
  "ﾠ",
  "__proto__",
];
const K8S_STRINGS = [
  "v1",
  "discovery.k8s.io/v1",
  "Service",
  "EndpointSlice",
  "ClusterIP",
  "NodePort",
  "LoadBalancer",
  "TCP",
  "UDP",
  "SCTP",
  "http",
  "dns-tcp",
  "None",
  "Cluster",
  "Local",
  "IPv4",
  "IPv6",
  "SingleStack",
  "PreferDualStack",
  "10.96.0.1",
  "10.244.1.5",
  "192.168.0.0/24",
  "fd00:10:96::a",
  "2001:db8::1/64",
  "kube-system",
  "default",
  "node-1",
  "zone-a",
  "nginx-6799fc88d8-rmfs8",
  "endpointslice-controller.k8s.io",
  "00000000-0000-4000-8000-000000000001",
  "2024-01-01T00:00:00Z",
  "1",
  "80",
];
const KEYS = [
  "name",
  "namespace",
  "app",
  "kind",
  "apiVersion",
  "metadata",
  "spec",
  "ports",
  "port",
  "a",
  "b",
  "kubernetes.io/service-name",
  "app.kubernetes.io/name",
  "_x",
  "x-y",
  "x.y",
  "a1",
  "80",
  "0x1F",
  "true",
  "null",
  "Null",
  "",
  "a b",
  "a: b",
  "#k",
  "-k",
  "k:",
  "é",
  "__proto__",
  "constructor",
];

const tricky = fc.oneof(
  { weight: 3, arbitrary: fc.constantFrom(...TRICKY_STRINGS) },
  { weight: 2, arbitrary: fc.string() },
  { weight: 1, arbitrary: fc.string({ unit: "grapheme" }) },
  { weight: 1, arbitrary: fc.string({ unit: "binary" }) },
  {
    weight: 2,
    arbitrary: fc
      .array(fc.constantFrom(...TRICKY_STRINGS, ...K8S_STRINGS), { maxLength: 3 })
      .map((parts) => parts.join(" ")),
  },
);
const anyKey = fc.oneof(fc.constantFrom(...KEYS), tricky);
const anyScalar = fc.oneof(
  tricky,
  fc.constantFrom(...K8S_STRINGS),
  fc.integer(),
  fc.double(),
  fc.constantFrom(-0, 1e21, 2 ** 53 + 2, 0.1, -1.5e-7, Infinity, -Infinity, NaN),
  fc.boolean(),
  fc.constant(null),
);
const { value: anyValue } = fc.letrec<{ value: unknown }>((tie) => ({
  value: fc.oneof(
    { depthSize: "small", withCrossShrink: true },
    anyScalar,
    fc.array(tie("value"), { maxLength: 4 }),
    fc.dictionary(anyKey, tie("value"), { maxKeys: 5 }),
  ),
}));

/** k8s-shaped objects with ordinary strings: what manifest folders hold. */
const k8sValue = fc.letrec<{ value: unknown; object: Record<string, unknown> }>((tie) => ({
  value: fc.oneof(
    { depthSize: "small" },
    fc.constantFrom(...K8S_STRINGS),
    fc.stringMatching(/^[a-z0-9]([-a-z0-9.]{0,20}[a-z0-9])?$/),
    fc.ipV4(),
    fc.ipV6(),
    fc.integer({ min: 0, max: 65535 }),
    fc.boolean(),
    fc.array(tie("value"), { maxLength: 3 }),
    tie("object"),
  ),
  object: fc.dictionary(fc.constantFrom(...KEYS.slice(0, 17)), tie("value"), { maxKeys: 5 }),
})).object;

const STRINGIFY_OPTIONS: ToStringOptions[] = [
  {},
  { indentSeq: false },
  { indent: 4 },
  { indent: 3, indentSeq: false },
];
const documents = <T>(value: fc.Arbitrary<T>) =>
  fc.record({
    docs: fc.array(value, { minLength: 1, maxLength: 3 }),
    options: fc.constantFrom(...STRINGIFY_OPTIONS),
    leadingSeparator: fc.boolean(),
  });
const toText = ({
  docs,
  options,
  leadingSeparator,
}: {
  docs: unknown[];
  options: ToStringOptions;
  leadingSeparator: boolean;
}) => (leadingSeparator ? "---\n" : "") + docs.map((d) => stringify(d, options)).join("---\n");

test("property: random JSON-like documents give yaml's result or null", (t) => {
  let fast = 0;
  const numRuns = 3000;
  fc.assert(
    fc.property(documents(anyValue), (input) => {
      if (checked(toText(input)) !== null) fast++;
    }),
    { numRuns },
  );
  t.diagnostic(`fast path taken for ${fast} of ${numRuns} random inputs`);
  assert.ok(fast > numRuns * 0.2, `fast path only ${fast} of ${numRuns}`);
});

test("property: k8s-like documents take the fast path at least 90% of the time", (t) => {
  let fast = 0;
  const numRuns = 2000;
  fc.assert(
    fc.property(documents(k8sValue), (input) => {
      if (checked(toText(input)) !== null) fast++;
    }),
    { numRuns },
  );
  t.diagnostic(`fast path taken for ${fast} of ${numRuns} k8s-like inputs`);
  assert.ok(fast >= numRuns * 0.9, `fast path only ${fast} of ${numRuns}`);
});

/** One edit of a YAML text's lines, as people make them by hand (and get wrong). */
const lineEdit = fc.record({
  at: fc.nat(),
  kind: fc.constantFrom(
    "comment-line",
    "trailing-comment",
    "trailing-spaces",
    "blank-line",
    "indent",
    "dedent",
    "delete",
    "duplicate",
    "separator",
    "join",
    "no-space-after-colon",
    "dash",
  ),
  indent: fc.nat({ max: 6 }),
});

function applyEdit(
  lines: string[],
  { at, kind, indent }: { at: number; kind: string; indent: number },
): void {
  const i = at % (lines.length + 1);
  const line = lines[i] ?? "";
  const pad = " ".repeat(indent);
  const edits: Record<string, () => void> = {
    "comment-line": () => lines.splice(i, 0, `${pad}# c: d`),
    "trailing-comment": () => (lines[i] = `${line}${pad || " "}#x`),
    "trailing-spaces": () => (lines[i] = `${line}${pad || " "}`),
    "blank-line": () => lines.splice(i, 0, pad),
    indent: () => (lines[i] = `${pad || " "}${line}`),
    dedent: () => (lines[i] = line.slice(Math.min(indent || 1, line.length - line.trimStart().length))),
    delete: () => lines.splice(i, 1),
    duplicate: () => lines.splice(i, 0, line),
    separator: () => lines.splice(i, 0, "---"),
    join: () => lines.splice(i, 2, `${line} ${lines[i + 1] ?? ""}`),
    "no-space-after-colon": () => (lines[i] = line.replace(": ", ":")),
    dash: () => (lines[i] = `${pad}- ${line.trimStart()}`),
  };
  edits[kind]?.();
}

test("property: hand-edited YAML gives yaml's result or null", (t) => {
  let fast = 0;
  const numRuns = 3000;
  fc.assert(
    fc.property(
      documents(fc.oneof(k8sValue, anyValue)),
      fc.array(lineEdit, { minLength: 1, maxLength: 4 }),
      (input, edits) => {
        const lines = toText(input).split("\n");
        for (const edit of edits) applyEdit(lines, edit);
        if (checked(lines.join("\n")) !== null) fast++;
      },
    ),
    { numRuns },
  );
  t.diagnostic(`fast path taken for ${fast} of ${numRuns} edited inputs`);
});
